"""Cache keys: stable for unchanged input, different when anything that matters changes."""

import os

from archsupport.platform import Platform
from rootless.build.cachekey import FileHasher, base_key, content_digest, step_key
from rootless.build.dockerignore import ContextFilter
from rootless.build.fscopy import ContextFS
from rootless.build.instructions import parse_dockerfile
from rootless.build.plan import BaseState, PlanOptions, dispatch_stage, stage_graph
from rootless.build.config import RunConfig

AMD64 = Platform("linux", "amd64")


def steps(text, **kw):
    g = stage_graph(parse_dockerfile(text), PlanOptions(target_platform=AMD64, build_platform=AMD64, **kw))
    return dispatch_stage(g, 0, BaseState(RunConfig(env=("PATH=/bin",)))).steps


def keys(text, parent="p", **kw):
    out = []
    for s in steps(text, **kw):
        parent = step_key(parent, s, "linux/amd64")
        out.append(parent)
    return out


def test_same_input_same_keys():
    t = "FROM x\nRUN a\nWORKDIR /w\nRUN b\n"
    assert keys(t) == keys(t)
    assert len(set(keys(t))) == 3


def test_key_changes_with_what_matters():
    base = keys("FROM x\nRUN make\n")[0]
    assert keys("FROM x\nRUN make \n")[0] == base               # trailing blank is not part of the command
    assert keys("FROM x\nRUN make all\n")[0] != base
    assert keys("FROM x\nENV A=1\nRUN make\n")[0] != base        # env
    assert keys("FROM x\nUSER u\nRUN make\n")[0] != base         # user
    assert keys("FROM x\nARG V=1\nRUN make\n")[0] != base        # ARG in the env
    assert keys("FROM x\nARG V=1\nRUN make\n")[0] != keys("FROM x\nARG V=2\nRUN make\n")[0]
    assert keys("FROM x\nARG V\nRUN make\n", build_args=(("V", "a"),))[0] != \
        keys("FROM x\nARG V\nRUN make\n", build_args=(("V", "b"),))[0]
    assert keys("FROM x\nRUN make\n", build_args=(("http_proxy", "x"),))[0] == base   # proxy args are not
    assert keys("FROM x\nRUN --network=none make\n")[0] != base
    assert keys("FROM x\nLABEL a=b\nRUN make\n")[0] == base      # config-only instructions do not touch RUN
    assert keys("FROM x\nRUN make\n", parent="other")[0] != base


def test_parent_chain():
    a = keys("FROM x\nRUN one\nRUN two\n")
    b = keys("FROM x\nRUN ONE\nRUN two\n")
    assert a[1] != b[1], "a change invalidates every later step"


def test_copy_key_includes_flags_and_content(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.py").write_text("print(1)\n")
    (ctx / "src" / "b.py").write_text("print(2)\n")
    (ctx / "README").write_text("r")
    h = FileHasher()

    def digest(sources, ignore=()):
        fs = ContextFS(ctx, ContextFilter(ctx, list(ignore)).walk())
        return content_digest(fs, sources, h)

    d0 = digest(["src"])
    assert digest(["src"]) == d0
    os.utime(ctx / "src" / "a.py", (1, 1))
    assert digest(["src"]) == d0, "times do not matter"
    (ctx / "src" / "a.py").write_text("print(3)\n")
    d1 = digest(["src"])
    assert d1 != d0
    os.chmod(ctx / "src" / "a.py", 0o755)
    assert digest(["src"]) != d1, "modes matter"
    assert digest(["README"]) != digest(["src"])
    assert digest(["src/*.py"]) != digest(["src/a.py"])
    d2 = digest(["src"])
    assert digest(["src"], ignore=["src/b.py"]) != d2, ".dockerignore changes what is copied"
    (ctx / "unrelated").write_text("x")
    assert digest(["src"]) == d2, "files not copied do not matter"

    s1 = steps("FROM x\nCOPY src /app/\n")[0]
    s2 = steps("FROM x\nCOPY --chown=1:1 src /app/\n")[0]
    s3 = steps("FROM x\nCOPY --chmod=600 src /app/\n")[0]
    s4 = steps("FROM x\nCOPY src /other/\n")[0]
    ks = {step_key("p", s, "linux/amd64", d2) for s in (s1, s2, s3, s4)}
    assert len(ks) == 4
    assert step_key("p", s1, "linux/amd64", d2) != step_key("p", s1, "linux/amd64", d1)
    assert step_key("p", s1, "linux/amd64", d2) != step_key("p", s1, "linux/arm64", d2)


def test_base_keys():
    assert base_key("image", "sha256:a", "linux/amd64") != base_key("image", "sha256:b", "linux/amd64")
    assert base_key("image", "sha256:a", "linux/amd64") != base_key("image", "sha256:a", "linux/arm64")
    assert base_key("scratch", "", "linux/amd64") != base_key("scratch", "", "linux/arm64")
    assert base_key("stage", "k", "linux/amd64") == "k"


def test_tree_digest_of_a_bind_mount_source(tmp_path):
    from rootless.build.cachekey import tree_digest

    ctx = tmp_path / "ctx"
    (ctx / "data" / "sub").mkdir(parents=True)
    (ctx / "data" / "d.txt").write_text("one\n")
    (ctx / "data" / "sub" / "e.txt").write_text("e\n")
    h = FileHasher()

    def digest(rel, ignore=()):
        return tree_digest(ContextFS(ctx, ContextFilter(ctx, list(ignore)).walk()), rel, h)

    d0 = digest("data")
    assert digest("data") == d0
    (ctx / "other").write_text("x")
    assert digest("data") == d0, "files outside the source do not matter"
    (ctx / "data" / "sub" / "e.txt").write_text("E\n")
    d1 = digest("data")
    assert d1 != d0, "content deep in the tree matters"
    assert digest("data", ignore=["data/sub"]) != d1, ".dockerignore changes what is mounted"
    assert digest("") != d1 and digest("data/d.txt") != d1

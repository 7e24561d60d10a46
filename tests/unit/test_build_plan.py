"""The build plan: ARG/ENV scoping, expansion, stage graph, steps, config, history."""

import pytest

from archsupport.platform import Platform
from rootless.build.config import DEFAULT_PATH, RunConfig
from rootless.build.instructions import parse_dockerfile
from rootless.build.parser import DockerfileError
from rootless.build.plan import (BaseState, CopyStep, PlanOptions, RunStep, WorkdirStep, base_from_stage,
                                 dest_path, dispatch_stage, normalize_workdir, parse_ports, scratch_base, stage_graph,
                                 unused_build_args, valid_signal)
from rootless.errors import BuildError

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
ARMV7 = Platform("linux", "arm", "v7")


def opts(**kw):
    kw.setdefault("target_platform", AMD64)
    kw.setdefault("build_platform", AMD64)
    return PlanOptions(**kw)


def graph(text, **kw):
    return stage_graph(parse_dockerfile(text), opts(**kw))


IMAGE_BASE = BaseState(RunConfig(env=("PATH=/usr/bin:/bin", "LANG=C.UTF-8"), cmd=("sh",), working_dir="",
                                 user=""))


def build_all(g, images=None):
    """Dispatch every needed stage in order (image bases get IMAGE_BASE or images[ref])."""
    plans = {}
    for i in g.order:
        node = g.node(i)
        if node.base.kind == "scratch":
            base = scratch_base()
        elif node.base.kind == "stage":
            base = base_from_stage(plans[node.base.stage])
        else:
            base = (images or {}).get(node.base.ref, IMAGE_BASE)
        plans[i] = dispatch_stage(g, i, base)
    return plans


def final(text, **kw):
    g = graph(text, **kw)
    return build_all(g)[g.target]


# ---------------------------------------------------------------------------
# global ARGs and FROM

def test_meta_args_expand_from_and_build_arg_overrides():
    text = "ARG BASE=debian\nARG TAG=12\nFROM ${BASE}:${TAG} AS a\nFROM $BASE:${TAG:-x}-slim\n"
    g = graph(text)
    assert [n.base.ref for n in g.nodes] == ["debian:12", "debian:12-slim"]
    g = graph(text, build_args=(("TAG", "11"),))
    assert [n.base.ref for n in g.nodes] == ["debian:11", "debian:11-slim"]


def test_meta_arg_default_uses_earlier_meta_args_and_platform_args():
    g = graph("ARG A=x\nARG B=${A}-y\nARG C=img-$TARGETARCH\nFROM $C:$B\n", target_platform=ARM64)
    assert g.nodes[0].base.ref == "img-arm64:x-y"


def test_platform_args_values():
    g = graph("FROM x\n", target_platform=ARMV7, build_platform=AMD64)
    meta = dict(g.meta_args)
    assert meta["TARGETPLATFORM"] == "linux/arm/v7" and meta["TARGETARCH"] == "arm"
    assert meta["TARGETVARIANT"] == "v7" and meta["TARGETOS"] == "linux"
    assert meta["BUILDPLATFORM"] == "linux/amd64" and meta["BUILDARCH"] == "amd64" and meta["BUILDVARIANT"] == ""


def test_from_platform_and_stage_platform_inheritance():
    text = ("FROM --platform=$BUILDPLATFORM golang AS build\nFROM build AS b2\nFROM --platform=linux/arm64 x AS c\n"
            "FROM alpine\n")
    g = graph(text, target_platform=ARMV7)
    assert [str(n.platform) for n in g.nodes] == ["linux/amd64", "linux/amd64", "linux/arm64", "linux/arm/v7"]
    assert g.nodes[1].base.kind == "stage" and g.nodes[1].base.stage == 0


def test_from_errors():
    with pytest.raises(DockerfileError, match=r"Dockerfile:2: FROM: base name \(\$\{NOPE\}\) should not be blank"):
        graph("ARG X\nFROM ${NOPE}\n")
    with pytest.raises(DockerfileError, match="failed to parse platform linux/sparc"):
        graph("FROM --platform=linux/sparc x\n")
    with pytest.raises(DockerfileError, match="empty platform value"):
        graph("FROM --platform=$NOTHING x\n")
    with pytest.raises(DockerfileError, match="no stages to build"):
        stage_graph(parse_dockerfile("ARG ONLY=1\n"), opts())


def test_scratch_and_case():
    g = graph("FROM scratch\nFROM SCRATCH\n")
    assert [n.base.kind for n in g.nodes] == ["scratch", "scratch"]


# ---------------------------------------------------------------------------
# stage graph, --target, pruning

MULTI = """
FROM alpine AS base
RUN echo base
FROM base AS build
RUN make
FROM alpine AS unused
RUN echo never
FROM alpine AS tools
RUN echo tools
FROM scratch AS final
COPY --from=build /out /out
COPY --from=tools /t /t
COPY --from=busybox:latest /bin/busybox /bb
"""


def test_graph_pruning_and_deps():
    g = graph(MULTI)
    assert g.target == 4
    assert g.order == (0, 1, 3, 4)
    assert g.nodes[4].deps == (1, 3)
    assert g.nodes[4].images == ("busybox:latest",)
    g = graph(MULTI, target="BUILD")
    assert g.target == 1 and g.order == (0, 1)
    with pytest.raises(BuildError, match="target stage 'nope' could not be found") as ei:
        graph(MULTI, target="nope")
    assert "base, build, unused, tools, final" in ei.value.hint


def test_copy_from_index_and_later_stage():
    g = graph("FROM a\nRUN x\nFROM b\nCOPY --from=0 /x /x\n")
    assert g.nodes[1].deps == (0,)
    with pytest.raises(DockerfileError, match="cannot copy from stage 'later', it needs to be defined before current stage 'stage-0'"):
        graph("FROM a\nCOPY --from=later /x /x\nFROM b AS later\n")
    with pytest.raises(DockerfileError, match="cannot copy from stage"):
        graph("FROM a AS self\nCOPY --from=self /x /x\n")


@pytest.mark.parametrize("text", [
    "ARG SRC=build\nFROM a AS build\nFROM b\nCOPY --from=$SRC /x /x\n",     # a global ARG
    "FROM a AS build\nFROM b\nARG S=0\nCOPY --from=$S /x /x\n",             # a stage ARG
    "FROM a AS build\nFROM b\nRUN true\nCOPY --from=${NOPE:-build} /x /x\n",
])
def test_copy_from_takes_no_variables(text):
    """BuildKit (dockerfile2llb toCommand): "variable expansion is not supported for --from"."""
    with pytest.raises(DockerfileError) as ei:
        final(text)
    assert "variable expansion is not supported for --from" in str(ei.value) and ei.value.line == 4
    assert "Dockerfile:4" in str(ei.value)


def test_onbuild_copy_from_takes_no_variables():
    g = graph("FROM parent\n")
    with pytest.raises(DockerfileError, match="variable expansion is not supported for --from"):
        build_all(g, {"parent": BaseState(RunConfig(onbuild=("COPY --from=$X /a /b",)))})


# ---------------------------------------------------------------------------
# ARG / ENV scoping inside stages

def run_steps(plan):
    return [s for s in plan.steps if isinstance(s, RunStep)]


def test_global_arg_not_visible_without_redeclaration():
    p = final("ARG V=1\nFROM x\nRUN echo $V\nARG V\nRUN echo $V\n")
    r1, r2 = run_steps(p)
    assert "V=1" not in r1.env and "V=1" in r2.env
    assert r1.created_by == "RUN /bin/sh -c echo $V"
    assert r2.created_by == "RUN |1 V=1 /bin/sh -c echo $V"


def test_arg_default_build_arg_and_env_precedence():
    text = "FROM x\nARG A=default\nARG B\nENV C=$A-env\nRUN true\n"
    p = final(text)
    r = run_steps(p)[0]
    assert "A=default" in r.env and not any(e.startswith("B=") for e in r.env)
    assert "C=default-env" in p.config.env
    assert not any(e.startswith("A=") for e in p.config.env), "ARG values are not in the image config"
    p = final(text, build_args=(("A", "cli"), ("B", "b")))
    r = run_steps(p)[0]
    assert "A=cli" in r.env and "B=b" in r.env and "C=cli-env" in p.config.env
    assert r.created_by == "RUN |2 A=cli B=b /bin/sh -c true"


def test_env_pairs_see_the_old_environment():
    p = final("FROM x\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    env = dict(e.split("=", 1) for e in p.config.env)
    assert env["def"] == "hello" and env["ghi"] == "bye"
    p = final("FROM x\nARG A=1 B=$A\nRUN true\n")
    assert "B=1" in run_steps(p)[0].env


def test_env_then_arg_same_name():
    p = final("FROM x\nARG V=arg\nENV V=env\nRUN true\n")
    assert "V=env" in run_steps(p)[0].env


def test_arg_scope_is_per_stage_but_env_value_inherited_through_from_stage():
    text = "FROM x AS a\nARG A=1\nENV E=2\nFROM a\nRUN echo $A $E\n"
    g = graph(text)
    plans = build_all(g)
    r = run_steps(plans[1])[0]
    assert "E=2" in r.env
    assert "A=1" in r.env          # BuildKit keeps the state environment of the base stage
    assert r.created_by == "RUN /bin/sh -c echo $A $E"


def test_platform_args_need_declaration_in_stage():
    p = final("FROM x\nRUN echo $TARGETARCH\nARG TARGETARCH\nARG TARGETPLATFORM BUILDARCH\nRUN true\n",
              target_platform=ARM64)
    r1, r2 = run_steps(p)
    assert not any(e.startswith("TARGETARCH=") for e in r1.env)
    assert "TARGETARCH=arm64" in r2.env and "TARGETPLATFORM=linux/arm64" in r2.env and "BUILDARCH=amd64" in r2.env


def test_arg_default_expands_env():
    p = final("FROM x\nENV BASE=/opt\nARG DIR=$BASE/app\nWORKDIR $DIR\n")
    assert p.config.working_dir == "/opt/app"


def test_proxy_args_not_in_cache_or_history():
    p = final("FROM x\nRUN curl x\n", build_args=(("http_proxy", "http://p:3128"),))
    r = run_steps(p)[0]
    assert r.proxy_env == ("http_proxy=http://p:3128",)
    assert not any("proxy" in e for e in r.env) and "proxy" not in r.created_by


def test_unused_build_args():
    g = graph("ARG G\nFROM x\nARG USED\n")
    plans = build_all(g)
    g2 = stage_graph(g.dockerfile, opts(build_args=(("USED", "1"), ("G", "2"), ("EXTRA", "3"),
                                                     ("HTTP_PROXY", "x"))))
    assert unused_build_args(g2, list(plans.values())) == ["EXTRA"]


# ---------------------------------------------------------------------------
# expansion in each instruction, config

def test_config_instructions():
    text = r"""FROM x
ENV APP=/srv/app PORT=8080 NAME="my app"
WORKDIR $APP
WORKDIR sub
USER ${USERNAME:-www}:${GROUP:-www}
EXPOSE $PORT ${PORT}/udp 9000-9001
VOLUME ["$APP/data"]
VOLUME /logs
LABEL org.example.name="$NAME" version=1.0
STOPSIGNAL SIG${SIG:-QUIT}
HEALTHCHECK --interval=10s CMD curl -f http://localhost:$PORT/
SHELL ["/bin/bash", "-c"]
CMD echo $PORT
ONBUILD RUN echo child
MAINTAINER me@example.org
"""
    p = final(text)
    c = p.config
    assert "APP=/srv/app" in c.env and "NAME=my app" in c.env and c.env[0] == "PATH=/usr/bin:/bin"
    assert c.working_dir == "/srv/app/sub"
    assert c.user == "www:www"
    assert set(c.exposed_ports) == {"8080/tcp", "8080/udp", "9000/tcp", "9001/tcp"}
    assert set(c.volumes) == {"/srv/app/data", "/logs"}
    assert c.label_map() == {"org.example.name": "my app", "version": "1.0"}
    assert c.stop_signal == "SIGQUIT"
    assert c.healthcheck.test == ("CMD-SHELL", "curl -f http://localhost:$PORT/")
    assert c.shell == ("/bin/bash", "-c")
    assert c.cmd == ("/bin/bash", "-c", "echo $PORT")
    assert c.onbuild == ("RUN echo child",)
    assert p.author == "me@example.org"
    j = c.to_json()
    assert j["ExposedPorts"] == {"8080/tcp": {}, "8080/udp": {}, "9000/tcp": {}, "9001/tcp": {}}
    assert j["Volumes"] == {"/logs": {}, "/srv/app/data": {}}
    assert RunConfig.from_json(j) == c.replace(exposed_ports=tuple(sorted(c.exposed_ports)),
                                               volumes=tuple(sorted(c.volumes)),
                                               labels=tuple(sorted(c.labels)))


def test_entrypoint_resets_inherited_cmd_but_not_own():
    p = final("FROM x\nENTRYPOINT [\"/e\"]\n")
    assert p.config.entrypoint == ("/e",) and p.config.cmd is None
    p = final("FROM x\nCMD [\"c\"]\nENTRYPOINT /e arg\n")
    assert p.config.entrypoint == ("/bin/sh", "-c", "/e arg") and p.config.cmd == ("c",)


def test_scratch_defaults_and_path():
    p = final("FROM scratch\nCOPY a /\n")
    assert p.config.env == (f"PATH={DEFAULT_PATH}",) and p.config.working_dir == "/"
    g = graph("FROM x\nRUN true\n")
    p = build_all(g, {"x": BaseState(RunConfig(env=("A=1",)))})[0]
    assert p.config.env == ("A=1", f"PATH={DEFAULT_PATH}")


def test_expansion_errors_name_line():
    with pytest.raises(DockerfileError) as ei:
        final("FROM x\nENV A=1\nWORKDIR ${A:?must be set}${B:?B is required}\n")
    assert ei.value.line == 3 and "B: B is required" in str(ei.value)
    with pytest.raises(DockerfileError, match="Invalid signal: NOPE"):
        final("FROM x\nSTOPSIGNAL NOPE\n")
    with pytest.raises(DockerfileError, match="invalid containerPort: abc"):
        final("FROM x\nEXPOSE abc\n")
    with pytest.raises(DockerfileError, match="unexpected end of statement while looking for matching double-quote"):
        final('FROM x\nCOPY "a b" /c/\n')


def test_label_cli_applies_to_target_only():
    g = graph("FROM x AS a\nFROM a\n", labels=(("k", "v"),))
    plans = build_all(g)
    assert plans[1].config.label_map() == {"k": "v"} and plans[0].config.label_map() == {}


# ---------------------------------------------------------------------------
# steps

def test_run_step():
    p = final("FROM x\nUSER app\nWORKDIR /w\nENV X=1\nRUN --network=none make $X\n")
    r = run_steps(p)[0]
    assert r.argv == ("/bin/sh", "-c", "make $X") and r.user == "app" and r.workdir == "/w" and r.network == "none"
    assert r.env == ("PATH=/usr/bin:/bin", "LANG=C.UTF-8", "X=1")
    r = run_steps(final('FROM x\nRUN ["make", "$X"]\n'))[0]
    assert r.argv == ("make", "$X")


def test_run_heredocs():
    r = run_steps(final("FROM x\nRUN <<EOF\necho a\necho b\nEOF\n"))[0]
    assert r.argv == ("/bin/sh", "-c", "echo a\necho b\n") and r.script is None
    r = run_steps(final("FROM x\nRUN <<-EOF\n\techo a\n\tEOF\n"))[0]
    assert r.argv == ("/bin/sh", "-c", "echo a\n")
    r = run_steps(final("FROM x\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"))[0]
    assert r.argv == ("/bin/sh", "-c", "/dev/pipes/EOF")
    assert r.script.content == "#!/usr/bin/env python3\nprint(1)\n"
    r = run_steps(final("FROM x\nRUN cat <<A > /a && cat <<B > /b\nfirst\nA\nsecond\nB\n"))[0]
    assert r.argv == ("/bin/sh", "-c", "cat <<A > /a && cat <<B > /b\nfirst\nA\nsecond\nB")
    r = run_steps(final("FROM x\nSHELL [\"/bin/bash\", \"-c\"]\nRUN <<EOF\necho $0\nEOF\n"))[0]
    assert r.argv[:2] == ("/bin/bash", "-c")


def test_workdir_steps():
    p = final("FROM x\nWORKDIR /\nUSER 1000\nWORKDIR /app\nWORKDIR ../other/./x\n")
    ws = [s for s in p.steps if isinstance(s, WorkdirStep)]
    assert [(w.path, w.user) for w in ws] == [("/app", "1000"), ("/other/x", "1000")]
    assert [e.created_by for e in p.entries] == ["WORKDIR /", "USER 1000", "WORKDIR /app", "WORKDIR /other/x"]


def test_copy_steps():
    text = r"""FROM x AS build
FROM x
ARG OWNER=1000:1000
ENV DST=/opt
WORKDIR /w
COPY --chown=$OWNER --chmod=0755 ["a*", "b c", "$DST/"]
COPY f rel
COPY f .
COPY --from=build /out/ ./out/
ADD https://example.org/f.tgz /tmp/
COPY <<EOF <<'RAW' /etc/
value=$DST
EOF
raw=$DST
RAW
"""
    g = graph(text)
    plans = build_all(g)
    cs = [s for s in plans[1].steps if isinstance(s, CopyStep)]
    c = cs[0]
    assert (c.sources, c.dest, c.chown, c.chmod) == (("a*", "b c"), "/opt/", "1000:1000", "0755")
    assert c.created_by == "COPY --chown=1000:1000 --chmod=0755 a* b c /opt/ # buildkit"
    assert cs[1].dest == "/w/rel" and cs[2].dest == "/w/"
    assert cs[3].from_.kind == "stage" and cs[3].from_.stage == 0 and cs[3].dest == "/w/out/"
    assert cs[4].is_add and cs[4].sources == ("https://example.org/f.tgz",)
    assert [(x.path, x.data) for x in cs[5].contents] == [("EOF", "value=/opt\n"), ("RAW", "raw=$DST\n")]


@pytest.mark.parametrize("text,message", [
    ("COPY a b c", "when using COPY with more than one source file, the destination must be a directory and end with a /"),
    ("COPY http://x/y /z", "source can't be a URL for COPY"),
    ("COPY --chmod=u+z a /b", "invalid chmod parameter: 'u+z'"),
    ("COPY --chmod=0800 a /b", "invalid chmod parameter: '0800'. it should be octal string"),
    ("ADD --checksum=sha256:00 local /x", "checksum can only be specified for a single HTTP(S) source"),
])
def test_copy_errors(text, message):
    with pytest.raises(DockerfileError) as ei:
        final("FROM x\n" + text + "\n")
    assert message in str(ei.value) and ei.value.line == 2


def test_onbuild_triggers_run_first():
    g = graph("FROM parent\nRUN echo own\n")
    base = BaseState(RunConfig(env=("PATH=/bin",), onbuild=("ENV T=1", "RUN echo trigger $T")))
    p = build_all(g, {"parent": base})[0]
    rs = run_steps(p)
    assert [r.argv[-1] for r in rs] == ["echo trigger $T", "echo own"]
    assert "T=1" in p.config.env and p.config.onbuild == ()


def test_onbuild_bad_trigger():
    g = graph("FROM parent\n")
    with pytest.raises(DockerfileError, match="ONBUILD trigger"):
        build_all(g, {"parent": BaseState(RunConfig(onbuild=("BOGUS x",)))})


def test_history_lines():
    p = final('FROM x\nENV A=1 B=2\nLABEL l=v\nARG Z=9\nEXPOSE 80\nCMD ["a", "b"]\nENTRYPOINT e\nVOLUME /v\n'
              'USER u\nSTOPSIGNAL 9\nRUN true\n')
    assert [e.created_by for e in p.entries] == [
        "ENV A=1 B=2", "LABEL l=v", "ARG Z=9", "EXPOSE map[80/tcp:{}]", 'CMD ["a" "b"]',
        'ENTRYPOINT ["/bin/sh" "-c" "e"]', "VOLUME [/v]", "USER u", "STOPSIGNAL 9",
        "RUN |1 Z=9 /bin/sh -c true"]
    assert [e.step is not None for e in p.entries] == [False] * 9 + [True]


def test_history_lines_as_buildkit_onbuild_and_copy_from():
    """BuildKit: ONBUILD commits no history; a COPY's line leaves --from (and --link) out."""
    p = final("FROM x AS build\nFROM x\nONBUILD RUN echo hi\nCOPY --from=build --link --chmod=755 /a /b\n"
              "COPY --from=0 --chown=1:2 /c /d/\n")
    assert [e.created_by for e in p.entries if e.history] == [
        "COPY --chmod=755 /a /b # buildkit", "COPY --chown=1:2 /c /d/ # buildkit"]
    assert len(p.entries) == 3, "ONBUILD is still a step of the progress"


# ---------------------------------------------------------------------------
# helpers

@pytest.mark.parametrize("cur,req,out", [
    ("", "/a", "/a"), ("/a", "b", "/a/b"), ("/a/b", "../c", "/a/c"), ("/", "x/./y/", "/x/y"), ("", "rel", "/rel"),
    ("/a", "/", "/"), ("/a", "//b//c", "/b/c"),
])
def test_normalize_workdir(cur, req, out):
    assert normalize_workdir(cur, req) == out


@pytest.mark.parametrize("wd,dest,out", [
    ("/", "/x", "/x"), ("/w", "x", "/w/x"), ("/w", "x/", "/w/x/"), ("/w", ".", "/w/"), ("/w", "./", "/w/"),
    ("/w", "", "/w/"), ("/w", "/a/b/.", "/a/b/"), ("/w", "../up", "/up"), ("/", "..", "/"),
])
def test_dest_path(wd, dest, out):
    assert dest_path(wd, dest) == out


def test_ports_and_signals():
    assert parse_ports(["80", "53/UDP", "1-3/sctp"]) == ["80/tcp", "53/udp", "1/sctp", "2/sctp", "3/sctp"]
    for bad in ("x", "70000", "5-1", "80/icmp"):
        with pytest.raises(Exception):
            parse_ports([bad])
    assert valid_signal("SIGTERM") and valid_signal("term") and valid_signal("9") and valid_signal("SIGRTMIN+3")
    assert not valid_signal("0") and not valid_signal("SIGNOPE")

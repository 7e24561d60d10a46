"""Typed instructions: arguments, flags and errors as BuildKit's instructions package."""

import pytest

from rootless.build.instructions import (Add, Arg, Cmd, Copy, Entrypoint, Env, Expose, HealthConfig, Healthcheck,
                                         Label, Maintainer, Onbuild, Run, Shell, StopSignal, User, Volume, Workdir,
                                         parse_dockerfile, parse_duration, parse_mount)
from rootless.build.parser import DockerfileError


def one(text: str):
    df = parse_dockerfile("FROM x\n" + text)
    assert len(df.stages) == 1
    (inst,) = df.stages[0].instructions
    return inst


def err(text: str, filename: str = "Dockerfile") -> DockerfileError:
    with pytest.raises(DockerfileError) as ei:
        parse_dockerfile(text, filename)
    return ei.value


def test_stages_and_meta_args():
    df = parse_dockerfile("ARG A=1\nARG B\nFROM a AS One\nRUN x\nFROM --platform=linux/arm64 b\nFROM one AS two\n")
    assert [a.pairs for a in df.meta_args] == [(("A", "1"),), (("B", None),)]
    assert [(s.index, s.base, s.name, s.platform) for s in df.stages] == [
        (0, "a", "one", ""), (1, "b", "", "linux/arm64"), (2, "one", "two", "")]
    assert df.stage_index("ONE") == 0 and df.stage_index("nope") is None


def test_run_forms():
    r = one("RUN echo $HOME")
    assert isinstance(r, Run) and r.cmd.args == ("echo $HOME",) and r.cmd.shell_form
    r = one('RUN ["echo", "a b"]')
    assert r.cmd.args == ("echo", "a b") and not r.cmd.shell_form
    r = one("RUN --network=none --mount=type=cache,target=/root/.cache,id=pip make")
    assert r.network == "none" and r.mounts[0].type == "cache" and r.mounts[0].target == "/root/.cache"
    assert r.mounts[0].id == "pip"
    assert one("RUN --network=default true").network == ""


def test_cmd_entrypoint_shell():
    assert one("CMD echo hi").cmd.args == ("echo hi",)
    c = one('CMD ["a"]')
    assert isinstance(c, Cmd) and c.cmd.args == ("a",) and not c.cmd.shell_form
    e = one("ENTRYPOINT []")
    assert isinstance(e, Entrypoint) and e.cmd.args == () and not e.cmd.shell_form
    s = one('SHELL ["/bin/bash", "-o", "pipefail", "-c"]')
    assert isinstance(s, Shell) and s.shell == ("/bin/bash", "-o", "pipefail", "-c")


def test_kv_instructions():
    e = one('ENV A=1 B="x y"')
    assert isinstance(e, Env) and e.pairs == (("A", "1"), ("B", '"x y"'))
    e = one("ENV LEGACY some value here")
    assert e.pairs == (("LEGACY", "some value here"),)
    lab = one('LABEL "com.example.a"="1" b=2')
    assert isinstance(lab, Label) and lab.pairs == (('"com.example.a"', '"1"'), ("b", "2"))
    a = one("ARG X Y=2 Z=")
    assert isinstance(a, Arg) and a.pairs == (("X", None), ("Y", "2"), ("Z", ""))


def test_single_value_instructions():
    assert isinstance(one("WORKDIR /app"), Workdir)
    u = one("USER 1000:1000")
    assert isinstance(u, User) and u.user == "1000:1000"
    v = one('VOLUME ["/a", "/b"]')
    assert isinstance(v, Volume) and v.volumes == ("/a", "/b")
    s = one("STOPSIGNAL SIGQUIT")
    assert isinstance(s, StopSignal) and s.signal == "SIGQUIT"
    m = one("MAINTAINER me")
    assert isinstance(m, Maintainer) and m.maintainer == "me"
    x = one("EXPOSE 8080 80/udp")
    assert isinstance(x, Expose) and x.ports == ("80/udp", "8080")


def test_copy_and_add():
    c = one("COPY --from=build --chown=app:app --chmod=0640 --link --exclude=*.md a b /dst/")
    assert isinstance(c, Copy)
    assert (c.sources, c.dest, c.from_, c.chown, c.chmod, c.link, c.exclude) == (
        ("a", "b"), "/dst/", "build", "app:app", "0640", True, ("*.md",))
    a = one("ADD --checksum=sha256:abc https://example.org/x.tgz /tmp/")
    assert isinstance(a, Add) and a.checksum == "sha256:abc" and a.sources == ("https://example.org/x.tgz",)
    c = one("COPY <<A <<-B /dir/\nhello $X\nA\n\tworld\n\tB\n")
    assert c.sources == () and [(x.path, x.data, x.expand) for x in c.contents] == [
        ("A", "hello $X\n", True), ("B", "world\n", True)]
    c = one("COPY <<'A' /f\n$X\nA\n")
    assert c.contents[0].expand is False


def test_healthcheck():
    h = one("HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --retries=3 CMD curl -f x")
    assert isinstance(h, Healthcheck)
    assert h.health == HealthConfig(test=("CMD-SHELL", "curl -f x"), interval=90_000_000_000, timeout=500_000_000,
                                    start_period=2_000_000_000, retries=3)
    assert one('HEALTHCHECK CMD ["a", "b"]').health.test == ("CMD", "a", "b")
    assert one("HEALTHCHECK NONE").health.test == ("NONE",)


def test_healthcheck_zero_means_default():
    """BuildKit: a 0 duration and --retries=0 are the defaults, not errors."""
    h = one("HEALTHCHECK --interval=0 --timeout=0s --start-period=0ms --start-interval=0 --retries=0 CMD true")
    assert h.health == HealthConfig(test=("CMD-SHELL", "true"))


def test_onbuild():
    o = one("ONBUILD RUN echo hi")
    assert isinstance(o, Onbuild) and o.expression == "RUN echo hi"
    o = one("onbuild  copy a b")
    assert o.expression == "copy a b"


@pytest.mark.parametrize("text,message", [
    ("COPY onlyone", "COPY requires at least two arguments"),
    ("ADD x", "ADD requires at least two arguments"),
    ("COPY --chown a b", "COPY: missing a value on flag: --chown"),
    ("COPY --chownn=1 a b", "COPY: unknown flag: --chownn"),
    ("COPY --from=a --from=b x y", "COPY: duplicate flag specified: --from"),
    ("COPY --link=maybe a b", "COPY: expecting boolean value for flag --link, not: maybe"),
    ("COPY --link= a b", "COPY: missing a value on flag: --link"),
    ("COPY a <<EOF\nEOF", "COPY cannot accept a heredoc as a destination"),
    ("RUN --network=bridge x", "RUN: unsupported network mode 'bridge'"),
    ("RUN --mount=type=nfs,target=/x y", "RUN: unsupported mount type 'nfs'"),
    ("RUN --mount=type=cache y", "RUN: mount type=cache requires a target"),
    ("RUN --foo x", "RUN: unknown flag: --foo"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV a=1 b", "Syntax error - can't find = in 'b'"),
    ("LABEL single", "LABEL must have two arguments"),
    ("ENV =x", "ENV names can not be blank"),
    ("ARG", "ARG requires at least one argument"),
    ("ARG =x", "ARG names can not be blank"),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("USER", "USER requires exactly one argument"),
    ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("SHELL /bin/sh -c", "SHELL requires the arguments to be in JSON form"),
    ("SHELL []", "SHELL requires at least one argument"),
    ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK CONNECT TCP 7000", 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK --interval=0.1ms CMD x", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --interval=5 CMD x", 'missing unit in duration "5"'),
    ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
    ("HEALTHCHECK --interval=-5s CMD x", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --timeout=-1ms CMD x", 'Interval "timeout" cannot be less than 1ms'),
    ("HEALTHCHECK --grace=4s CMD x", "HEALTHCHECK: unknown flag: --grace"),
    ("ONBUILD", "ONBUILD requires at least one argument"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD MAINTAINER x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("RUNN echo", "unknown instruction: RUNN (did you mean RUN?)"),
    ("CPY a b", "unknown instruction: CPY (did you mean COPY?)"),
    ("WORKDIR --x=1 /a", "WORKDIR: unknown flag: --x"),
])
def test_instruction_errors(text, message):
    e = err("FROM x\n" + text + "\n")
    assert e.line == 2
    assert message in str(e), str(e)
    assert str(e).startswith("Dockerfile:2: ")


def test_from_errors():
    assert "FROM requires either one or three arguments" in str(err("FROM a b\n"))
    e = err("FROM a AS 1bad\n")
    assert "invalid name for build stage: '1bad'" in str(e)
    assert "FROM: unknown flag: --plat" in str(err("FROM --plat=x a\n"))
    e = err("RUN x\n", "sub/Dockerfile")
    assert str(e).startswith("sub/Dockerfile:1: ") and "first instruction must be FROM" in str(e)


def test_error_locations_multiline():
    e = err("FROM x\nCOPY \\\n  --bogus=1 \\\n  a b\n")
    assert e.line == 2 and e.end_line == 4 and e.instruction == "COPY"


@pytest.mark.parametrize("s,ns", [
    ("0", 0), ("1s", 10**9), ("1.5h", 5400 * 10**9), ("1m30s", 90 * 10**9), ("300ms", 3 * 10**8), ("2us", 2000),
    ("5ns", 5), ("-1s", -10**9), (".5s", 5 * 10**8),
])
def test_parse_duration(s, ns):
    assert parse_duration(s) == ns


@pytest.mark.parametrize("s", ["", "s", "1x", "1", "1.s.", "--1s"])
def test_parse_duration_bad(s):
    with pytest.raises(Exception):
        parse_duration(s)


def test_parse_mount():
    m = parse_mount("type=bind,from=build,source=/out,target=/in,rw")
    assert (m.type, m.from_, m.source, m.target, m.readonly) == ("bind", "build", "/out", "/in", False)
    m = parse_mount("type=tmpfs,dst=/tmp,size=64m")
    assert (m.type, m.target, m.size) == ("tmpfs", "/tmp", "64m")
    m = parse_mount("type=cache,target=/c,sharing=locked,mode=0700,uid=1000")
    assert (m.sharing, m.mode, m.uid) == ("locked", 0o700, 1000)
    m = parse_mount("target=/x")
    assert m.type == "bind"
    with pytest.raises(Exception, match="unexpected key 'bogus'"):
        parse_mount("type=bind,target=/x,bogus=1")

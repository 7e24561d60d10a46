"""The build plan: stage graph, ARG/ENV scoping, expansion, steps (pure).

Two pure phases, both unit-tested without any I/O:

1. ``stage_graph(dockerfile, options)``: the global ARGs (those before the
   first FROM, plus the predefined platform ARGs BUILDPLATFORM, BUILDOS,
   BUILDARCH, BUILDVARIANT, TARGETPLATFORM, TARGETOS, TARGETARCH,
   TARGETVARIANT) are resolved with ``--build-arg``; each FROM is expanded
   with them; its base is ``scratch``, an earlier stage, or an image; its
   platform is FROM --platform, else the base stage's, else the target
   platform.  ``--target`` picks a stage; only the stages it needs (base
   chain, COPY --from, RUN --mount from=) are kept, in build order.

2. ``dispatch_stage(node, base, ctx)``: walks one stage's instructions in
   order with the state BuildKit keeps (environment = the base's env +
   ARG values + ENV, the image config, WORKDIR, USER, SHELL), expands
   variables where Docker does (ADD, COPY, ENV, EXPOSE, FROM, LABEL,
   STOPSIGNAL, USER, VOLUME, WORKDIR, ARG defaults, COPY/ADD flags, heredoc
   sources of COPY/ADD with an unquoted delimiter), runs the base image's
   ONBUILD triggers first, and returns the filesystem steps (RUN, COPY,
   ADD, WORKDIR), the history and the final image config.

Scoping, as BuildKit: a global ARG is visible in FROM lines only, and in a
stage only after ``ARG NAME`` re-declares it (taking the global value when
it has no default); ``--build-arg`` overrides defaults; ARG values are in
the environment of later RUN steps (not in the image config) and change
their cache keys (the ``|N K=V`` prefix of the history line); ENV goes in
the config and the environment.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from archsupport.platform import Platform
from rootless.build.config import DEFAULT_PATH, DEFAULT_SHELL, RunConfig
from rootless.build.instructions import (Add, Arg, Cmd, Copy, Dockerfile, Entrypoint, Env, Expose,
                                         Healthcheck, Instruction, InstructionError, Label, Maintainer, Onbuild,
                                         Run, RunMount, Shell, SourceContent, Stage, StopSignal, User, Volume,
                                         Workdir, parse_instruction)
from rootless.build.lex import Lex, LexError
from rootless.build.parser import DockerfileError, Heredoc, go_quote, parse, parse_heredoc
from rootless.errors import BuildError

PLATFORM_ARGS = ("BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
                 "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT")
# usable without an ARG declaration, never in history or cache keys (Docker's predefined ARGs)
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
HISTORY_COMMENT = "buildkit.dockerfile.v0"


# ---------------------------------------------------------------------------
# inputs

@dataclass(frozen=True)
class PlanOptions:
    target_platform: Platform
    build_platform: Platform
    build_args: tuple[tuple[str, str], ...] = ()
    target: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def build_arg(self, key: str) -> str | None:
        val = None
        for k, v in self.build_args:
            if k == key:
                val = v
        return val

    def has_build_arg(self, key: str) -> bool:
        return any(k == key for k, _ in self.build_args)


def platform_args(target: Platform, build: Platform) -> list[tuple[str, str]]:
    return [("BUILDPLATFORM", str(build)), ("BUILDOS", build.os), ("BUILDARCH", build.architecture),
            ("BUILDVARIANT", build.variant),
            ("TARGETPLATFORM", str(target)), ("TARGETOS", target.os), ("TARGETARCH", target.architecture),
            ("TARGETVARIANT", target.variant)]


# ---------------------------------------------------------------------------
# phase 1: the stage graph

@dataclass(frozen=True)
class BaseRef:
    kind: str                 # "scratch" | "image" | "stage"
    ref: str = ""             # the image reference (kind "image")
    stage: int = -1           # the base stage (kind "stage")

    def __str__(self) -> str:
        return self.ref if self.kind == "image" else ("scratch" if self.kind == "scratch" else f"stage {self.stage}")


@dataclass(frozen=True)
class CopySource:
    """Where a COPY --from / RUN --mount from= reads: an earlier stage or an image."""

    kind: str                 # "stage" | "image"
    stage: int = -1
    ref: str = ""


@dataclass(frozen=True)
class StageNode:
    index: int
    name: str
    display: str              # the name, or "stage-N"
    base: BaseRef
    platform: Platform
    stage: Stage
    deps: tuple[int, ...] = ()            # stages whose filesystem this one reads
    images: tuple[str, ...] = ()          # images read by COPY --from=IMAGE


@dataclass(frozen=True)
class StageGraph:
    dockerfile: Dockerfile
    nodes: tuple[StageNode, ...]
    target: int
    order: tuple[int, ...]                # needed stages, dependencies first
    meta_args: tuple[tuple[str, str | None], ...]
    options: PlanOptions

    def node(self, index: int) -> StageNode:
        return self.nodes[index]

    def from_source(self, value: str) -> CopySource:
        return resolve_from(self, value)


def _err(df: Dockerfile, msg: str, line: int = 0, instruction: str = "", source: str = "") -> DockerfileError:
    return DockerfileError(msg, file=df.filename, line=line, instruction=instruction, source=source)


def _lex(df: Dockerfile) -> Lex:
    return Lex(df.escape_token)


def resolve_meta_args(df: Dockerfile, opts: PlanOptions) -> list[tuple[str, str | None]]:
    meta: list[tuple[str, str | None]] = []
    for k, v in platform_args(opts.target_platform, opts.build_platform):
        bv = opts.build_arg(k)
        meta.append((k, bv if bv is not None else v))
    lex = _lex(df)
    for cmd in df.meta_args:
        for key, default in cmd.pairs:
            if opts.has_build_arg(key):
                value: str | None = opts.build_arg(key)
            elif default is not None:
                try:
                    value = lex.process_word(default, _meta_map(meta))
                except LexError as e:
                    raise _err(df, str(e), cmd.line, "ARG", cmd.source) from None
            else:
                value = None
            meta.append((key, value))
    return meta


def _meta_map(meta) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in meta:
        out[k] = v if v is not None else ""
    return out


def _parse_platform(value: str) -> Platform:
    from archsupport.platform import parse as parse_platform

    return parse_platform(value)


def stage_graph(df: Dockerfile, opts: PlanOptions) -> StageGraph:
    if not df.stages:
        raise _err(df, "the Dockerfile has no stages to build: add a FROM instruction")
    meta = resolve_meta_args(df, opts)
    mm = _meta_map(meta)
    lex = _lex(df)
    nodes: list[StageNode] = []
    for st in df.stages:
        try:
            base = lex.process_word(st.base, mm)
        except LexError as e:
            raise _err(df, str(e), st.line, "FROM", st.source) from None
        if not base:
            raise _err(df, f"base name ({st.base}) should not be blank", st.line, "FROM", st.source)
        plat: Platform | None = None
        if st.platform:
            try:
                pv = lex.process_word(st.platform, mm)
            except LexError as e:
                raise _err(df, f"failed to process arguments for platform: {e}", st.line, "FROM", st.source) from None
            if not pv:
                raise _err(df, f"empty platform value from expression {st.platform}", st.line, "FROM", st.source)
            try:
                plat = _parse_platform(pv)
            except BuildError:
                raise
            except Exception as e:  # UsageError from archsupport
                raise _err(df, f"failed to parse platform {pv}: {getattr(e, 'message', e)}", st.line, "FROM",
                           st.source) from None
        ref: BaseRef
        low = base.lower()
        prev = next((n for n in nodes if n.name and n.name == low), None)
        if prev is not None:
            ref = BaseRef("stage", stage=prev.index)
            if plat is None:
                plat = prev.platform
        elif low == "scratch":
            ref = BaseRef("scratch")
        else:
            ref = BaseRef("image", ref=base)
        nodes.append(StageNode(index=st.index, name=st.name, display=st.name or f"stage-{st.index}", base=ref,
                               platform=plat or opts.target_platform, stage=st))
    # dependencies (COPY --from, RUN --mount from=) and their validation
    final: list[StageNode] = []
    for n in nodes:
        deps: set[int] = set()
        images: list[str] = []
        for inst in n.stage.instructions:
            froms: list[str] = []
            if isinstance(inst, Copy) and inst.from_:
                froms.append(inst.from_)
            if isinstance(inst, Run):
                froms += [m.from_ for m in inst.mounts if m.from_]
            for f in froms:
                if isinstance(inst, Copy):
                    _check_copy_from(df, lex, inst)
                try:
                    fv = lex.process_word(f, mm)
                except LexError as e:
                    raise _err(df, str(e), inst.line, inst.name, inst.source) from None
                src = _resolve_from_nodes(nodes, fv)
                if src.kind == "stage":
                    if src.stage >= n.index:
                        other = nodes[src.stage].display if src.stage < len(nodes) else fv
                        raise _err(df, f"cannot copy from stage {other!r}, it needs to be defined before current "
                                       f"stage {n.display!r}", inst.line, inst.name, inst.source)
                    deps.add(src.stage)
                else:
                    if not src.ref:
                        raise _err(df, f"invalid stage index {fv}", inst.line, inst.name, inst.source)
                    if src.ref not in images:
                        images.append(src.ref)
        final.append(StageNode(index=n.index, name=n.name, display=n.display, base=n.base, platform=n.platform,
                               stage=n.stage, deps=tuple(sorted(deps)), images=tuple(images)))
    if opts.target:
        t = next((n for n in final if n.name and n.name == opts.target.lower()), None)
        if t is None:
            names = ", ".join(n.name for n in final if n.name) or "none"
            raise BuildError(f"target stage {opts.target!r} could not be found in {df.filename}",
                             hint=f"named stages: {names}")
        target = t.index
    else:
        target = final[-1].index
    needed: set[int] = set()

    def visit(i: int) -> None:
        if i in needed:
            return
        needed.add(i)
        node = final[i]
        if node.base.kind == "stage":
            visit(node.base.stage)
        for d in node.deps:
            visit(d)

    visit(target)
    return StageGraph(dockerfile=df, nodes=tuple(final), target=target, order=tuple(sorted(needed)),
                      meta_args=tuple(meta), options=opts)


FROM_EXPANSION = ("variable expansion is not supported for --from, define a new stage with FROM using ARG from "
                  "global scope as a workaround")


def _check_copy_from(df: Dockerfile, lex: Lex, inst: Copy) -> None:
    """BuildKit takes COPY --from literally: a value that processing would change (a variable, even a
    global ARG's, quotes, escapes) is an error (dockerfile2llb ``toCommand``)."""
    try:
        same = lex.process_word(inst.from_, {}) == inst.from_
    except LexError:
        same = False
    if not same:
        raise _err(df, FROM_EXPANSION, inst.line, inst.name, inst.source)


def _resolve_from_nodes(nodes, value: str) -> CopySource:
    low = value.lower()
    for n in nodes:
        if n.name and n.name == low:
            return CopySource("stage", stage=n.index)
    if value.isdigit():
        i = int(value)
        if i < len(nodes):
            return CopySource("stage", stage=i)
        return CopySource("image", ref="")
    return CopySource("image", ref=value)


def resolve_from(graph: StageGraph, value: str) -> CopySource:
    return _resolve_from_nodes(graph.nodes, value)


# ---------------------------------------------------------------------------
# phase 2: steps of one stage

@dataclass(frozen=True, kw_only=True)
class Step:
    """A step that changes the filesystem (one layer, one cache key)."""

    line: int
    source: str                 # the instruction as written (for errors)
    created_by: str             # the history line


@dataclass(frozen=True, kw_only=True)
class RunStep(Step):
    argv: tuple[str, ...]
    env: tuple[str, ...]        # K=V, everything the command sees (ARG values included)
    proxy_env: tuple[str, ...] = ()  # predefined proxy ARGs: not in the cache key
    user: str = ""
    workdir: str = "/"
    network: str = ""           # "" default | none | host
    mounts: tuple[RunMount, ...] = ()
    script: Heredoc | None = None  # RUN <<EOF with a #! line: run this file
    display: str = ""           # the command as shown in progress lines


@dataclass(frozen=True, kw_only=True)
class CopyStep(Step):
    is_add: bool
    sources: tuple[str, ...]
    contents: tuple[SourceContent, ...]   # heredoc files (already expanded when allowed)
    dest: str                   # absolute; a trailing "/" means "into this directory"
    from_: CopySource | None = None       # None = the build context
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    checksum: str = ""
    keep_git_dir: bool = False
    unpack: bool | None = None
    workdir: str = "/"


@dataclass(frozen=True, kw_only=True)
class WorkdirStep(Step):
    path: str
    user: str = ""


@dataclass(frozen=True)
class Entry:
    """One history line; ``step`` is the filesystem step that made its layer (or None)."""

    created_by: str
    step: Step | None = None
    source: str = ""            # the instruction as written (progress lines)
    history: bool = True        # False: a step of the progress only, no history line (ONBUILD, as BuildKit)


@dataclass(frozen=True)
class StagePlan:
    index: int
    display: str
    platform: Platform
    base: BaseRef
    entries: tuple[Entry, ...]
    config: RunConfig
    env: tuple[tuple[str, str], ...]      # the state environment at the end (inherited by FROM <this stage>)
    author: str = ""
    used_args: frozenset[str] = frozenset()

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(e.step for e in self.entries if e.step is not None)


@dataclass
class _State:
    config: RunConfig
    env: dict[str, str]
    build_args: list[tuple[str, str | None]]
    author: str = ""
    cmd_set: bool = False
    entries: list[Entry] = field(default_factory=list)
    used_args: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class BaseState:
    """What a stage starts from: the base image's config, or the base stage's end state."""

    config: RunConfig
    env: tuple[tuple[str, str], ...] | None = None   # None: derived from config.env
    author: str = ""


def scratch_base() -> BaseState:
    return BaseState(RunConfig(env=(f"PATH={DEFAULT_PATH}",), working_dir="/"))


def base_from_stage(plan: StagePlan) -> BaseState:
    return BaseState(plan.config, plan.env, plan.author)


def dispatch_stage(graph: StageGraph, index: int, base: BaseState) -> StagePlan:
    node = graph.node(index)
    df = graph.dockerfile
    config = base.config
    if "PATH" not in config.env_map():
        config = config.with_env("PATH", DEFAULT_PATH)
    env = dict(base.env) if base.env is not None else config.env_map()
    for k, v in config.env_map().items():
        env.setdefault(k, v)
    st = _State(config=config, env=env, build_args=[], author=base.author)
    lex = _lex(df)
    triggers = config.onbuild
    st.config = st.config.replace(onbuild=())
    for trig in triggers:
        try:
            res = parse(trig, f"ONBUILD trigger of {node.base}")
            if len(res.nodes) != 1:
                raise BuildError(f"ONBUILD trigger of {node.base} should be a single instruction: {trig!r}")
            inst = parse_instruction(res.nodes[0])
        except InstructionError as e:
            raise _err(df, f"ONBUILD trigger {trig!r} of the base image {node.base}: {e}", node.stage.line, "FROM",
                       node.stage.source) from None
        except DockerfileError as e:
            raise _err(df, f"ONBUILD trigger of the base image {node.base}: {e.detail}", node.stage.line, "FROM",
                       node.stage.source) from None
        if isinstance(inst, tuple):
            raise _err(df, "FROM isn't allowed as an ONBUILD trigger", node.stage.line, "FROM", node.stage.source)
        inst = _relocate(inst, node.stage.line, f"{node.stage.source} (ONBUILD {trig.strip()})")
        _dispatch_one(graph, node, st, inst, lex)
    for inst in node.stage.instructions:
        _dispatch_one(graph, node, st, inst, lex)
    cfg = st.config
    if index == graph.target and graph.options.labels:
        cfg = cfg.with_labels(graph.options.labels)
    return StagePlan(index=index, display=node.display, platform=node.platform, base=node.base,
                     entries=tuple(st.entries), config=cfg, env=tuple(st.env.items()), author=st.author,
                     used_args=frozenset(st.used_args))


def _relocate(inst: Instruction, line: int, source: str) -> Instruction:
    import dataclasses

    return dataclasses.replace(inst, line=line, end_line=line, source=source)


def _expand(df: Dockerfile, lex: Lex, st: _State, inst: Instruction, word: str) -> str:
    try:
        return lex.process_word(word, st.env)
    except LexError as e:
        raise _err(df, str(e), inst.line, inst.name, inst.source) from None


def go_quote_list(items) -> str:
    """Go's ``fmt.Sprintf("%q", []string{...})``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(s) for s in items) + "]"


def with_shell(config: RunConfig, args: tuple[str, ...]) -> tuple[str, ...]:
    shell = config.shell or DEFAULT_SHELL
    return tuple(shell) + (" ".join(args),)


def normalize_workdir(current: str, requested: str) -> str:
    if not requested:
        raise BuildError("cannot normalize an empty WORKDIR")
    if not requested.startswith("/"):
        requested = posixpath.join("/", current or "/", requested)
    return "/" + posixpath.normpath(requested).lstrip("/")


def dest_path(workdir: str, dest: str) -> str:
    """COPY/ADD destination made absolute against WORKDIR; a trailing ``/`` (or ``/.``) is kept."""
    if not dest:
        return workdir if workdir.endswith("/") else workdir + "/"
    keep = dest.endswith("/") or dest.endswith("/.") or dest == "."
    p = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    p = "/" + posixpath.normpath(p).lstrip("/")
    if keep and not p.endswith("/"):
        p += "/"
    return p


_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?\Z")


def parse_ports(specs: list[str]) -> list[str]:
    out: list[str] = []
    for s in specs:
        m = _PORT.match(s)
        if not m:
            raise InstructionError(f"invalid containerPort: {s}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        proto = (m.group(3) or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InstructionError(f"invalid proto: {m.group(3)}")
        if lo > 65535 or hi > 65535 or hi < lo:
            raise InstructionError(f"invalid port range: {s}")
        for p in range(lo, hi + 1):
            k = f"{p}/{proto}"
            if k not in out:
                out.append(k)
    return out


def _signal_names() -> frozenset[str]:
    import signal as _signal

    names = {s.name[3:] for s in _signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
    names |= {"CLD", "IOT", "POLL", "RTMIN", "RTMAX"}
    names |= {f"RTMIN+{i}" for i in range(1, 16)} | {f"RTMAX-{i}" for i in range(1, 15)}
    return frozenset(names)


def valid_signal(s: str) -> bool:
    if s.isdigit():
        return int(s) > 0
    return s.upper().removeprefix("SIG") in _signal_names()


def _run_string(args: tuple[str, ...], st: _State) -> str:
    """BuildKit's history line of a RUN: ``|N K=V ... argv``."""
    pre: list[str] = []
    for k, v in st.build_args:
        val = st.env.get(k, v if v is not None else "")
        pre.append(f"{k}={val}")
    if pre:
        pre.insert(0, f"|{len(pre)}")
    return " ".join(pre + list(args))


def _dispatch_one(graph: StageGraph, node: StageNode, st: _State, inst: Instruction, lex: Lex) -> None:
    import dataclasses

    n = len(st.entries)
    _dispatch(graph, node, st, inst, lex)
    for i in range(n, len(st.entries)):
        st.entries[i] = dataclasses.replace(st.entries[i], source=inst.source)


def _dispatch(graph: StageGraph, node: StageNode, st: _State, inst: Instruction, lex: Lex) -> None:
    df = graph.dockerfile

    def x(word: str) -> str:
        return _expand(df, lex, st, inst, word)

    def fail(msg: str) -> DockerfileError:
        return _err(df, msg, inst.line, inst.name, inst.source)

    cfg = st.config
    if isinstance(inst, Env):
        # every pair is expanded with the environment from before this ENV (Docker:
        # "ENV abc=bye def=$abc" gives def the old abc)
        pairs = [(x(k), x(v)) for k, v in inst.pairs]
        parts = []
        for k, v in pairs:
            st.env[k] = v
            cfg = cfg.with_env(k, v)
            parts.append(f"{k}={v}")
        st.config = cfg
        st.entries.append(Entry("ENV " + " ".join(parts)))
    elif isinstance(inst, Label):
        pairs = [(x(k), x(v)) for k, v in inst.pairs]
        st.config = cfg.with_labels(pairs)
        st.entries.append(Entry("LABEL " + " ".join(f"{k}={v}" for k, v in pairs)))
    elif isinstance(inst, Maintainer):
        st.author = inst.maintainer
        st.entries.append(Entry(f"MAINTAINER {inst.maintainer}"))
    elif isinstance(inst, Arg):
        _dispatch_arg(graph, st, inst, lex)
    elif isinstance(inst, Workdir):
        wd = normalize_workdir(cfg.working_dir, x(inst.path))
        st.config = cfg.replace(working_dir=wd)
        step = None
        if wd != "/":
            step = WorkdirStep(line=inst.line, source=inst.source, created_by=f"WORKDIR {wd}", path=wd,
                               user=cfg.user)
        st.entries.append(Entry(f"WORKDIR {wd}", step))
    elif isinstance(inst, User):
        u = x(inst.user)
        st.config = cfg.replace(user=u)
        st.entries.append(Entry(f"USER {u}"))
    elif isinstance(inst, Volume):
        vols = [x(v) for v in inst.volumes]
        if any(not v for v in vols):
            raise fail("VOLUME specified can not be an empty string")
        merged = list(cfg.volumes) + [v for v in vols if v not in cfg.volumes]
        st.config = cfg.replace(volumes=tuple(merged))
        st.entries.append(Entry("VOLUME [" + " ".join(vols) + "]"))
    elif isinstance(inst, StopSignal):
        sig = x(inst.signal)
        if not valid_signal(sig):
            raise fail(f"Invalid signal: {sig}")
        st.config = cfg.replace(stop_signal=sig)
        st.entries.append(Entry(f"STOPSIGNAL {sig}"))
    elif isinstance(inst, Expose):
        words: list[str] = []
        for p in inst.ports:
            try:
                words += lex.process_words(p, st.env)
            except LexError as e:
                raise fail(str(e)) from None
        try:
            ports = parse_ports(words)
        except InstructionError as e:
            raise fail(str(e)) from None
        merged = list(cfg.exposed_ports) + [p for p in ports if p not in cfg.exposed_ports]
        st.config = cfg.replace(exposed_ports=tuple(merged))
        st.entries.append(Entry("EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(ports)) + "]"))
    elif isinstance(inst, Shell):
        st.config = cfg.replace(shell=inst.shell)
        st.entries.append(Entry("SHELL [" + " ".join(inst.shell) + "]"))
    elif isinstance(inst, Cmd):
        args = inst.cmd.args
        if inst.cmd.shell_form:
            args = with_shell(cfg, args)
        st.config = cfg.replace(cmd=tuple(args), args_escaped=True)
        st.cmd_set = True
        st.entries.append(Entry(f"CMD {go_quote_list(args)}"))
    elif isinstance(inst, Entrypoint):
        args: tuple[str, ...] | None = inst.cmd.args
        if inst.cmd.shell_form:
            args = with_shell(cfg, args)
        elif not args:
            args = None
        new = cfg.replace(entrypoint=args)
        if not st.cmd_set:
            new = new.replace(cmd=None)
        st.config = new
        st.entries.append(Entry(f"ENTRYPOINT {go_quote_list(args or ())}"))
    elif isinstance(inst, Healthcheck):
        st.config = cfg.replace(healthcheck=inst.health)
        st.entries.append(Entry(f"HEALTHCHECK {go_quote_list(inst.health.test)}"))
    elif isinstance(inst, Onbuild):
        st.config = cfg.replace(onbuild=cfg.onbuild + (inst.expression,))
        # BuildKit's dispatchOnbuild commits no history
        st.entries.append(Entry(f"ONBUILD {inst.expression}", history=False))
    elif isinstance(inst, Run):
        _dispatch_run(graph, st, inst, lex)
    elif isinstance(inst, (Copy, Add)):
        _dispatch_copy(graph, node, st, inst, lex)
    else:  # pragma: no cover - every parsed instruction is handled above
        raise fail(f"unsupported instruction {inst.name}")


def _dispatch_arg(graph: StageGraph, st: _State, inst: Arg, lex: Lex) -> None:
    opts = graph.options
    parts = []
    for key, default in inst.pairs:
        st.used_args.add(key)
        has_value = opts.has_build_arg(key)
        value = default
        if default is None and not has_value:
            for mk, mv in graph.meta_args:
                if mk == key:
                    value = mv
        if has_value:
            value = opts.build_arg(key)
        elif default is not None:
            try:
                value = lex.process_word(default, st.env)
            except LexError as e:
                raise _err(graph.dockerfile, str(e), inst.line, "ARG", inst.source) from None
        if value is not None:
            st.env[key] = value
        st.build_args.append((key, value))
        parts.append(key if value is None else f"{key}={value}")
    st.entries.append(Entry("ARG " + " ".join(parts)))


def _proxy_env(opts: PlanOptions, st: _State) -> tuple[str, ...]:
    out = []
    for k in PROXY_ARGS:
        if opts.has_build_arg(k) and k not in st.env:
            out.append(f"{k}={opts.build_arg(k)}")
    return tuple(out)


def _dispatch_run(graph: StageGraph, st: _State, inst: Run, lex: Lex) -> None:
    df = graph.dockerfile
    cfg = st.config
    args = inst.cmd.args
    script: Heredoc | None = None
    display = inst.source
    heredocs = inst.cmd.heredocs
    if heredocs:
        if len(args) != 1 or not inst.cmd.shell_form:
            raise _err(df, f"parsing produced an invalid run command: {list(args)}", inst.line, "RUN", inst.source)
        h = parse_heredoc(args[0])
        if h is not None:
            doc = heredocs[0]
            data = doc.text
            if doc.content.startswith("#!"):
                script = Heredoc(name=doc.name, content=data, expand=False, chomp=False)
                args = (f"/dev/pipes/{doc.name}",)
            else:
                args = (data,)
            first = doc.content.strip().splitlines()
            display = f"{inst.source} ({first[0] if first else ''}{'...' if len(first) > 1 else ''})"
        else:
            full = args[0]
            for d in heredocs:
                full += "\n" + d.content + d.name
            args = (full,)
    if inst.cmd.shell_form:
        args = with_shell(cfg, args)
    if not args:
        raise _err(df, "RUN requires a command", inst.line, "RUN", inst.source)
    mounts = []
    for m in inst.mounts:
        import dataclasses

        mounts.append(dataclasses.replace(
            m, target=_expand(df, lex, st, inst, m.target), source=_expand(df, lex, st, inst, m.source),
            from_=_expand(df, lex, st, inst, m.from_), id=_expand(df, lex, st, inst, m.id)))
    env = tuple(f"{k}={v}" for k, v in st.env.items())
    created = "RUN " + _run_string(args, st)
    st.entries.append(Entry(created, RunStep(
        line=inst.line, source=inst.source, created_by=created, argv=tuple(args), env=env,
        proxy_env=_proxy_env(graph.options, st), user=cfg.user, workdir=cfg.working_dir or "/",
        network=inst.network, mounts=tuple(mounts), script=script, display=display)))


def _dispatch_copy(graph: StageGraph, node: StageNode, st: _State, inst: Copy | Add, lex: Lex) -> None:
    df = graph.dockerfile
    cfg = st.config

    def x(w: str) -> str:
        return _expand(df, lex, st, inst, w)

    is_add = isinstance(inst, Add)
    sources = tuple(x(s) for s in inst.sources)
    raw_lex = Lex("\\", skip_process_quotes=True)
    contents = []
    for c in inst.contents:
        data = c.data
        if c.expand:
            try:
                data = raw_lex.process_word(data, st.env)
            except LexError as e:
                raise _err(df, str(e), inst.line, inst.name, inst.source) from None
        contents.append(SourceContent(path=c.path, data=data, expand=False))
    dest_raw = x(inst.dest)
    workdir = cfg.working_dir or "/"
    dest = dest_path(workdir, dest_raw)
    chown = x(inst.chown)
    chmod = x(inst.chmod)
    if chmod:
        from rootless.build.fscopy import CopyError, parse_chmod

        try:
            parse_chmod(chmod)
        except CopyError as e:
            raise _err(df, e.message, inst.line, inst.name, inst.source) from None
    if len(sources) + len(contents) > 1 and not dest.endswith("/"):
        raise _err(df, f"when using {inst.name} with more than one source file, the destination must be a "
                       f"directory and end with a /", inst.line, inst.name, inst.source)
    src: CopySource | None = None
    if isinstance(inst, Copy) and inst.from_:
        _check_copy_from(df, lex, inst)     # an ONBUILD trigger's too
        src = resolve_from(graph, inst.from_)
    for s in sources:
        if not is_add and (s.startswith("http://") or s.startswith("https://")):
            raise _err(df, "source can't be a URL for COPY (use ADD)", inst.line, inst.name, inst.source)
    exclude = tuple(x(e) for e in inst.exclude)
    parts = [inst.name]
    if isinstance(inst, Copy) and inst.parents:
        parts.append("--parents")
    if chown:
        parts.append(f"--chown={chown}")
    if chmod:
        parts.append(f"--chmod={chmod}")
    # BuildKit's history line (dispatchCopy): [--parents] [--chown] [--chmod] sources dest; no --from
    parts += list(sources) + [f"<<{c.path}" for c in contents] + [dest_raw]
    created = " ".join(parts) + " # buildkit"
    kw = {}
    if is_add:
        kw = {"checksum": x(inst.checksum), "keep_git_dir": inst.keep_git_dir, "unpack": inst.unpack}
        if kw["checksum"]:
            if len(sources) != 1 or not sources[0].startswith(("http://", "https://")):
                raise _err(df, "checksum can only be specified for a single HTTP(S) source", inst.line, "ADD",
                           inst.source)
    step = CopyStep(line=inst.line, source=inst.source, created_by=created, is_add=is_add, sources=sources,
                    contents=tuple(contents), dest=dest, from_=src, chown=chown, chmod=chmod, link=inst.link,
                    parents=isinstance(inst, Copy) and inst.parents, exclude=exclude, workdir=workdir, **kw)
    st.entries.append(Entry(created, step))


# ---------------------------------------------------------------------------
# whole-build helpers

def unused_build_args(graph: StageGraph, plans: list[StagePlan]) -> list[str]:
    """--build-arg keys no ARG declared (Docker warns: "were not consumed")."""
    used: set[str] = set(PLATFORM_ARGS) | set(PROXY_ARGS)
    for cmd in graph.dockerfile.meta_args:
        used |= {k for k, _ in cmd.pairs}
    for p in plans:
        used |= p.used_args
    out = []
    for k, _ in graph.options.build_args:
        if k not in used and k not in out:
            out.append(k)
    return out

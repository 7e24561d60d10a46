"""Typed Dockerfile instructions and stages (BuildKit's ``instructions`` package).

``parse_dockerfile(text, filename)`` -> :class:`Dockerfile`: the global ARGs
before the first FROM (``meta_args``) and the stages, each with its typed
instructions.  Every instruction keeps its location and source text so a
later error (expansion, a missing file, a failing RUN) can name them.

Flags are checked as BuildKit's BFlags does: unknown flags, duplicates,
missing values and bad booleans are errors naming the instruction and line.
Nothing is expanded here (see ``rootless.build.plan``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rootless.build.parser import (INSTRUCTIONS, DockerfileError, Heredoc, Node, ParseResult, parse,
                                   parse_heredoc)

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*\Z")

# Go's time.ParseDuration
_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)")


class InstructionError(Exception):
    """Internal: message only; parse_dockerfile adds file/line/instruction."""


def parse_duration(s: str) -> int:
    """Go duration ("1m30s", "500ms", "1.5h") -> nanoseconds."""
    orig = s
    if s in ("0", "+0", "-0"):
        return 0
    neg = s.startswith("-")
    if s[:1] in "+-":
        s = s[1:]
    if not s:
        raise InstructionError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m or m.group(1) in ("", "."):
            if m is None and re.match(r"[0-9.]+$", s[pos:]):
                raise InstructionError(f'time: missing unit in duration "{orig}"')
            raise InstructionError(f'time: invalid duration "{orig}"')
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return -int(total) if neg else int(total)


# ---------------------------------------------------------------------------
# flags

class _Flags:
    def __init__(self, args: tuple[str, ...]):
        self.args = args
        self.defs: dict[str, str] = {}      # name -> "bool" | "string" | "strings"
        self.values: dict[str, object] = {}
        self.used: set[str] = set()

    def add_bool(self, name: str, default: bool = False) -> None:
        self.defs[name] = "bool"
        self.values[name] = default

    def add_string(self, name: str, default: str = "") -> None:
        self.defs[name] = "string"
        self.values[name] = default

    def add_strings(self, name: str) -> None:
        self.defs[name] = "strings"
        self.values[name] = []

    def parse(self) -> None:
        for arg in self.args:
            if not arg.startswith("--"):
                raise InstructionError(f"Arg should start with -- : {arg}")
            if arg == "--":
                return
            a = arg[2:]
            value = ""
            has_eq = "=" in a
            if has_eq:
                a, value = a.split("=", 1)
            kind = self.defs.get(a)
            if kind is None:
                known = ", ".join("--" + k for k in self.defs) or "none"
                raise InstructionError(f"unknown flag: --{a} (flags of this instruction: {known})")
            if a in self.used and kind != "strings":
                raise InstructionError(f"duplicate flag specified: --{a}")
            self.used.add(a)
            if kind == "bool":
                if has_eq and value == "":
                    raise InstructionError(f"missing a value on flag: --{a}")
                low = value.lower()
                if low == "":
                    self.values[a] = True
                elif low in ("true", "false"):
                    self.values[a] = low == "true"
                else:
                    raise InstructionError(f"expecting boolean value for flag --{a}, not: {value}")
            else:
                if not has_eq:
                    raise InstructionError(f"missing a value on flag: --{a}")
                if kind == "string":
                    self.values[a] = value
                else:
                    self.values[a].append(value)  # type: ignore[union-attr]

    def str(self, name: str) -> str:
        return self.values[name]  # type: ignore[return-value]

    def bool(self, name: str) -> bool:
        return bool(self.values[name])

    def strs(self, name: str) -> tuple[str, ...]:
        return tuple(self.values[name])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# instructions

@dataclass(frozen=True, kw_only=True)
class Instruction:
    line: int = 0
    end_line: int = 0
    source: str = ""          # the logical line as written (continuations joined)

    @property
    def name(self) -> str:
        return type(self).__name__.upper()


@dataclass(frozen=True, kw_only=True)
class CommandLine:
    """RUN/CMD/ENTRYPOINT arguments: exec form (``json``) or one shell string."""

    args: tuple[str, ...] = ()
    shell_form: bool = True
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunMount:
    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool | None = None
    id: str = ""
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: str = ""
    env: str = ""


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    cmd: CommandLine
    mounts: tuple[RunMount, ...] = ()
    network: str = ""         # "" = default
    security: str = ""


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    cmd: CommandLine


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    cmd: CommandLine


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    pairs: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    maintainer: str


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SourceContent:
    """A heredoc used as a COPY/ADD source: a file named ``path`` with ``data``."""

    path: str
    data: str
    expand: bool


@dataclass(frozen=True, kw_only=True)
class Copy(Instruction):
    sources: tuple[str, ...]
    contents: tuple[SourceContent, ...] = ()
    dest: str
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Add(Instruction):
    sources: tuple[str, ...]
    contents: tuple[SourceContent, ...] = ()
    dest: str
    chown: str = ""
    chmod: str = ""
    link: bool = False
    checksum: str = ""
    keep_git_dir: bool = False
    exclude: tuple[str, ...] = ()
    unpack: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    path: str


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    user: str


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    volumes: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    signal: str


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    shell: tuple[str, ...]


@dataclass(frozen=True)
class HealthConfig:
    test: tuple[str, ...]
    interval: int = 0          # nanoseconds, as Docker's config JSON
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    health: HealthConfig


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    expression: str


@dataclass(frozen=True, kw_only=True)
class Stage:
    index: int
    base: str                   # as written (expanded later with the global ARGs)
    name: str = ""              # lower case, "" when not named
    platform: str = ""          # FROM --platform, as written
    instructions: tuple[Instruction, ...] = ()
    line: int = 0
    source: str = ""


@dataclass(frozen=True)
class Dockerfile:
    stages: tuple[Stage, ...]
    meta_args: tuple[Arg, ...] = ()
    escape_token: str = "\\"
    filename: str = "Dockerfile"
    syntax: str | None = None
    warnings: tuple[str, ...] = ()

    def stage_index(self, name: str) -> int | None:
        low = name.lower()
        for s in self.stages:
            if s.name and s.name == low:
                return s.index
        return None


# ---------------------------------------------------------------------------
# Node -> Instruction

def _loc(node: Node) -> dict:
    return {"line": node.start_line, "end_line": node.end_line, "source": node.original.strip()}


def _handle_json_args(args: tuple[str, ...], is_json: bool) -> tuple[str, ...]:
    if not args:
        return ()
    if is_json:
        return args
    return (" ".join(args),)


def _command_line(node: Node, empty_as_none: bool = False) -> CommandLine:
    return CommandLine(args=_handle_json_args(node.args, node.json), shell_form=not node.json,
                       heredocs=node.heredocs)


def _kvps(node: Node, name: str) -> tuple[tuple[str, str], ...]:
    args = node.args
    if not args:
        raise InstructionError(f"{name} requires at least one argument")
    if len(args) % 2:
        raise InstructionError(f"Bad input to {name}, too many arguments")
    out = []
    for i in range(0, len(args), 2):
        if not args[i]:
            raise InstructionError(f"{name} names can not be blank")
        out.append((args[i], args[i + 1]))
    return tuple(out)


def _sources_and_dest(node: Node, name: str) -> tuple[tuple[str, ...], tuple[SourceContent, ...], str]:
    srcs = node.args[:-1]
    dest = node.args[-1]
    if parse_heredoc(dest) is not None:
        raise InstructionError(f"{name} cannot accept a heredoc as a destination")
    lookup = {h.name: h for h in node.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for s in srcs:
        h = parse_heredoc(s)
        if h is not None:
            doc = lookup.get(h.name)
            data = doc.content if doc else ""
            if h.chomp:
                from rootless.build.parser import chomp_heredoc

                data = chomp_heredoc(data)
            contents.append(SourceContent(path=h.name, data=data, expand=h.expand))
        else:
            paths.append(s)
    return tuple(paths), tuple(contents), dest


def parse_mount(spec: str) -> RunMount:
    """``type=cache,target=/root/.cache,id=x`` -> RunMount (BuildKit's --mount syntax)."""
    import csv

    fields = next(csv.reader([spec]))
    kv: dict[str, object] = {}
    mtype = "bind"
    for f in fields:
        f = f.strip()
        if not f:
            continue
        if "=" in f:
            k, v = f.split("=", 1)
        else:
            k, v = f, None
        k = k.lower()
        if k == "type":
            if v not in ("bind", "cache", "tmpfs", "secret", "ssh"):
                raise InstructionError(f"unsupported mount type {v!r}")
            mtype = v
            continue
        kv[k] = v
    def b(key: str, v) -> bool:
        if v is None:
            return True
        low = str(v).lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise InstructionError(f"invalid value for {key}: {v}")
    args: dict = {"type": mtype}
    for k, v in kv.items():
        if k in ("target", "dst", "destination"):
            args["target"] = v or ""
        elif k in ("source", "src"):
            args["source"] = v or ""
        elif k == "from":
            args["from_"] = v or ""
        elif k in ("readonly", "ro"):
            args["readonly"] = b(k, v)
        elif k in ("readwrite", "rw"):
            args["readonly"] = not b(k, v)
        elif k == "id":
            args["id"] = v or ""
        elif k == "sharing":
            if v not in ("shared", "private", "locked"):
                raise InstructionError(f"unsupported sharing value {v!r}")
            args["sharing"] = v
        elif k == "mode":
            try:
                args["mode"] = int(str(v), 8)
            except ValueError:
                raise InstructionError(f"invalid mode {v!r}") from None
        elif k in ("uid", "gid"):
            try:
                args[k] = int(str(v))
            except ValueError:
                raise InstructionError(f"invalid {k} {v!r}") from None
        elif k == "required":
            args["required"] = b(k, v)
        elif k == "size":
            args["size"] = v or ""
        elif k == "env":
            args["env"] = v or ""
        else:
            raise InstructionError(f"unexpected key '{k}' in '{f}'")
    m = RunMount(**args)
    if m.type in ("bind", "cache", "tmpfs") and not m.target:
        raise InstructionError(f"mount type={m.type} requires a target (target=/path)")
    return m


def _parse_run(node: Node, fl: _Flags) -> Run:
    fl.add_strings("mount")
    fl.add_string("network", "")
    fl.add_string("security", "")
    fl.add_strings("device")
    fl.parse()
    net = fl.str("network")
    if net and net not in ("default", "none", "host"):
        raise InstructionError(f"unsupported network mode {net!r} (use default, none or host)")
    sec = fl.str("security")
    if sec and sec not in ("sandbox", "insecure"):
        raise InstructionError(f"unsupported security mode {sec!r}")
    mounts = tuple(parse_mount(m) for m in fl.strs("mount"))
    if fl.strs("device"):
        raise InstructionError("RUN --device is not supported")
    return Run(cmd=_command_line(node), mounts=mounts, network=net if net != "default" else "",
               security=sec, **_loc(node))


def _parse_from(node: Node, fl: _Flags) -> tuple[str, str, str]:
    args = node.args
    name = ""
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise InstructionError(f"invalid name for build stage: {args[2]!r}, name can't start with a number "
                                   f"or contain symbols")
    elif len(args) != 1:
        raise InstructionError("FROM requires either one or three arguments")
    fl.add_string("platform", "")
    fl.parse()
    return args[0], name, fl.str("platform")


def _exactly_one(node: Node, name: str) -> str:
    if len(node.args) != 1:
        raise InstructionError(f"{name} requires exactly one argument")
    return node.args[0]


def parse_instruction(node: Node) -> Instruction | tuple[str, str, str]:
    """One node -> an Instruction, or for FROM the tuple (base, name, platform)."""
    fl = _Flags(node.flags)
    c = node.cmd
    loc = _loc(node)
    if c == "from":
        return _parse_from(node, fl)
    if c == "run":
        return _parse_run(node, fl)
    if c in ("cmd", "entrypoint"):
        fl.parse()
        cls = Cmd if c == "cmd" else Entrypoint
        return cls(cmd=_command_line(node), **loc)
    if c in ("env", "label"):
        fl.parse()
        pairs = _kvps(node, c.upper())
        return Env(pairs=pairs, **loc) if c == "env" else Label(pairs=pairs, **loc)
    if c == "arg":
        if not node.args:
            raise InstructionError("ARG requires at least one argument")
        fl.parse()
        pairs: list[tuple[str, str | None]] = []
        for a in node.args:
            if "=" in a:
                k, v = a.split("=", 1)
                if not k:
                    raise InstructionError("ARG names can not be blank")
                pairs.append((k, v))
            else:
                pairs.append((a, None))
        return Arg(pairs=tuple(pairs), **loc)
    if c == "maintainer":
        m = _exactly_one(node, "MAINTAINER")
        fl.parse()
        return Maintainer(maintainer=m, **loc)
    if c == "expose":
        if not node.args:
            raise InstructionError("EXPOSE requires at least one argument")
        fl.parse()
        return Expose(ports=tuple(sorted(node.args)), **loc)
    if c in ("copy", "add"):
        if len(node.args) < 2:
            raise InstructionError(f"{c.upper()} requires at least two arguments, but only one was provided. "
                                   f"Destination could not be determined")
        fl.add_string("chown", "")
        fl.add_string("chmod", "")
        fl.add_bool("link", False)
        fl.add_strings("exclude")
        if c == "copy":
            fl.add_string("from", "")
            fl.add_bool("parents", False)
        else:
            fl.add_string("checksum", "")
            fl.add_bool("keep-git-dir", False)
            fl.add_string("unpack", "")
        fl.parse()
        srcs, contents, dest = _sources_and_dest(node, c.upper())
        chmod = fl.str("chmod")
        if c == "copy":
            return Copy(sources=srcs, contents=contents, dest=dest, from_=fl.str("from"), chown=fl.str("chown"),
                        chmod=chmod, link=fl.bool("link"), parents=fl.bool("parents"),
                        exclude=fl.strs("exclude"), **loc)
        unpack_s = fl.str("unpack")
        unpack: bool | None = None
        if unpack_s:
            if unpack_s.lower() not in ("true", "false"):
                raise InstructionError(f"expecting boolean value for flag --unpack, not: {unpack_s}")
            unpack = unpack_s.lower() == "true"
        return Add(sources=srcs, contents=contents, dest=dest, chown=fl.str("chown"), chmod=chmod,
                   link=fl.bool("link"), checksum=fl.str("checksum"), keep_git_dir=fl.bool("keep-git-dir"),
                   exclude=fl.strs("exclude"), unpack=unpack, **loc)
    if c == "onbuild":
        if not node.args:
            raise InstructionError("ONBUILD requires at least one argument")
        fl.parse()
        trigger = node.args[0].strip().upper()
        if trigger == "ONBUILD":
            raise InstructionError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise InstructionError(f"{trigger} isn't allowed as an ONBUILD trigger")
        expr = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original, count=1)
        for h in node.heredocs:
            expr += "\n" + h.content + h.name
        return Onbuild(expression=expr, **loc)
    if c == "workdir":
        p = _exactly_one(node, "WORKDIR")
        fl.parse()
        return Workdir(path=p, **loc)
    if c == "healthcheck":
        return _parse_healthcheck(node, fl)
    if c == "user":
        u = _exactly_one(node, "USER")
        fl.parse()
        return User(user=u, **loc)
    if c == "volume":
        if not node.args:
            raise InstructionError("VOLUME requires at least one argument")
        fl.parse()
        vols = []
        for v in node.args:
            v = v.strip()
            if not v:
                raise InstructionError("VOLUME specified can not be an empty string")
            vols.append(v)
        return Volume(volumes=tuple(vols), **loc)
    if c == "stopsignal":
        s = _exactly_one(node, "STOPSIGNAL")
        fl.parse()
        return StopSignal(signal=s, **loc)
    if c == "shell":
        fl.parse()
        sh = _handle_json_args(node.args, node.json)
        if not sh:
            raise InstructionError("SHELL requires at least one argument")
        if not node.json:
            raise InstructionError(f"SHELL requires the arguments to be in JSON form, e.g. "
                                   f"SHELL [\"/bin/bash\", \"-c\"] (got: {node.original.strip()})")
        return Shell(shell=sh, **loc)
    raise InstructionError(_unknown_message(node.written_cmd or c))


def _unknown_message(word: str) -> str:
    import difflib

    close = difflib.get_close_matches(word.lower(), INSTRUCTIONS, n=1, cutoff=0.6)
    msg = f"unknown instruction: {word}"
    if close:
        msg += f" (did you mean {close[0].upper()}?)"
    return msg


def _parse_healthcheck(node: Node, fl: _Flags) -> Healthcheck:
    loc = _loc(node)
    if not node.args:
        raise InstructionError("HEALTHCHECK requires at least one argument")
    typ = node.args[0].upper()
    args = node.args[1:]
    if typ == "NONE":
        if args:
            raise InstructionError("HEALTHCHECK NONE takes no arguments")
        fl.parse()
        return Healthcheck(health=HealthConfig(test=("NONE",)), **loc)
    for f in ("interval", "timeout", "start-period", "start-interval", "retries"):
        fl.add_string(f, "")
    fl.parse()
    if typ != "CMD":
        raise InstructionError(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
    cmd = _handle_json_args(tuple(args), node.json)
    if not cmd:
        raise InstructionError("Missing command after HEALTHCHECK CMD")
    test = ("CMD" if node.json else "CMD-SHELL",) + cmd

    def interval(name: str) -> int:
        s = fl.str(name)
        if not s:
            return 0
        d = parse_duration(s)
        if d == 0:
            return 0            # 0 (any spelling: 0, 0s): the default, as BuildKit
        if d < 1_000_000:       # negative too
            raise InstructionError(f'Interval "{name}" cannot be less than 1ms')
        return d

    retries = 0
    if fl.str("retries"):
        try:
            retries = int(fl.str("retries"))
        except ValueError:
            raise InstructionError(f"invalid --retries value {fl.str('retries')!r}") from None
        if retries < 0:         # 0: the default (BuildKit)
            raise InstructionError(f"--retries cannot be negative ({retries})")
    return Healthcheck(health=HealthConfig(test=test, interval=interval("interval"), timeout=interval("timeout"),
                                           start_period=interval("start-period"),
                                           start_interval=interval("start-interval"), retries=retries), **loc)


def parse_dockerfile(text: str | bytes, filename: str = "Dockerfile") -> Dockerfile:
    """Dockerfile text -> Dockerfile (stages, global ARGs); DockerfileError on bad input."""
    result: ParseResult = parse(text, filename)
    return dockerfile_from_nodes(result, filename)


def dockerfile_from_nodes(result: ParseResult, filename: str = "Dockerfile") -> Dockerfile:
    stages: list[dict] = []
    meta: list[Arg] = []
    for node in result.nodes:
        try:
            inst = parse_instruction(node)
        except InstructionError as e:
            raise DockerfileError(str(e), file=filename, line=node.start_line, end_line=node.end_line,
                                  instruction=node.cmd if node.cmd in INSTRUCTIONS else "",
                                  source=node.original) from None
        if isinstance(inst, tuple):
            base, name, platform = inst
            stages.append({"index": len(stages), "base": base, "name": name, "platform": platform,
                           "instructions": [], "line": node.start_line, "source": node.original.strip()})
            continue
        if not stages:
            if isinstance(inst, Arg):
                meta.append(inst)
                continue
            raise DockerfileError("no build stage in current context: the first instruction must be FROM "
                                  "(only ARG may come before it)", file=filename, line=node.start_line,
                                  instruction=node.cmd, source=node.original)
        stages[-1]["instructions"].append(inst)
    out = tuple(Stage(index=s["index"], base=s["base"], name=s["name"], platform=s["platform"],
                      instructions=tuple(s["instructions"]), line=s["line"], source=s["source"]) for s in stages)
    return Dockerfile(stages=out, meta_args=tuple(meta), escape_token=result.escape_token, filename=filename,
                      syntax=result.directive("syntax"), warnings=result.warnings)

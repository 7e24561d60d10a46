"""Entry point: global options, dispatch to one command module, error mapping.

Only the module that owns the requested command is imported (start-up time
is a feature); ``rootless --help`` imports them all to list the commands.
This is the one place where a :class:`RootlessError` becomes a message and
an exit code.
"""

from __future__ import annotations

import os
import sys

from rootless import __version__
from rootless.errors import RootlessError, UsageError

# top-level command -> (module under rootless.cli, command name in its COMMANDS)
TOP: dict[str, tuple[str, str]] = {
    # containers
    "run": ("containers", "run"),
    "create": ("containers", "create"),
    "start": ("containers", "start"),
    "attach": ("containers", "attach"),
    "stop": ("containers", "stop"),
    "restart": ("containers", "restart"),
    "kill": ("containers", "kill"),
    "rm": ("containers", "rm"),
    "ps": ("containers", "ps"),
    "logs": ("containers", "logs"),
    "exec": ("containers", "exec"),
    "wait": ("containers", "wait"),
    "top": ("containers", "top"),
    "cp": ("containers", "cp"),
    "rename": ("containers", "rename"),
    "port": ("containers", "port"),
    "inspect": ("containers", "inspect"),
    # images
    "pull": ("images", "pull"),
    "push": ("images", "push"),
    "images": ("images", "images"),
    "rmi": ("images", "rmi"),
    "tag": ("images", "tag"),
    "history": ("images", "history"),
    "save": ("images", "save"),
    "load": ("images", "load"),
    "login": ("images", "login"),
    "logout": ("images", "logout"),
    # build
    "build": ("build", "build"),
    # system
    "info": ("system", "info"),
    "version": ("system", "version"),
    "doctor": ("system", "doctor"),
    "unshare": ("system", "unshare"),
}

# management command -> (module, {subcommand: command name in COMMANDS})
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "container": ("containers", {
        "run": "run", "create": "create", "start": "start", "attach": "attach", "stop": "stop",
        "restart": "restart", "kill": "kill", "rm": "rm", "ls": "ps", "list": "ps", "ps": "ps", "logs": "logs",
        "exec": "exec", "wait": "wait", "top": "top", "cp": "cp", "rename": "rename", "port": "port",
        "inspect": "container-inspect", "prune": "prune"}),
    "image": ("images", {
        "pull": "pull", "push": "push", "ls": "images", "list": "images", "rm": "rmi", "tag": "tag",
        "history": "history", "save": "save", "load": "load", "inspect": "image-inspect", "prune": "prune",
        "build": "build"}),
    "volume": ("volume", {"create": "create", "ls": "ls", "list": "ls", "inspect": "inspect", "rm": "rm",
                          "prune": "prune"}),
    "network": ("network", {"create": "create", "ls": "ls", "list": "ls", "inspect": "inspect", "rm": "rm",
                            "prune": "prune", "connect": "connect", "disconnect": "disconnect"}),
    "system": ("system", {"info": "info", "doctor": "doctor", "prune": "prune", "df": "df"}),
    "machine": ("machine", {"init": "init", "start": "start", "stop": "stop", "list": "list", "ls": "list",
                            "inspect": "inspect", "rm": "rm", "ssh": "ssh", "set": "set"}),
    "manifest": ("manifest", {"create": "create", "add": "add", "inspect": "inspect", "push": "push",
                              "rm": "rm"}),
    "binfmt": ("binfmt", {"status": "status", "install": "install", "uninstall": "uninstall"}),
}

GROUP_SUMMARY = {
    "container": "Manage containers",
    "image": "Manage images",
    "volume": "Manage volumes",
    "network": "Manage networks",
    "system": "Manage rootless (info, doctor, disk usage)",
    "machine": "Manage the Linux virtual machine (macOS, Windows, --connection)",
    "manifest": "Manage manifest lists (multi-platform images)",
    "binfmt": "Register qemu-user emulation on the host (for administrators)",
}

USAGE = "Usage:  rootless [OPTIONS] COMMAND"

GLOBAL_OPTIONS = [
    ("--root PATH", "store root (default ~/.local/share/rootless; env ROOTLESS_ROOT)"),
    ("--connection NAME", "run the command inside machine NAME (env ROOTLESS_CONNECTION)"),
    ("-v, --version", "print the version and exit"),
    ("-h, --help", "print this help and exit"),
]


def _load(module: str):
    import importlib

    try:
        return importlib.import_module(f"rootless.cli.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"rootless.cli.{module}":
            raise UsageError(f"this build of rootless has no '{module}' commands") from None
        raise


def _summary(module: str, name: str) -> str:
    try:
        return _load(module).COMMANDS[name].summary
    except (RootlessError, KeyError):
        return ""


def top_help() -> str:
    lines = [USAGE, "", "Run OCI/Docker images of any architecture as an unprivileged user.", "",
             "Global options:"]
    for o, d in GLOBAL_OPTIONS:
        lines.append(f"  {o:<22}{d}")
    lines += ["", "Management Commands:"]
    for g in GROUPS:
        lines.append(f"  {g:<12}{GROUP_SUMMARY.get(g, '')}")
    lines += ["", "Commands:"]
    for name, (module, cmd) in TOP.items():
        lines.append(f"  {name:<12}{_summary(module, cmd)}")
    lines += ["", "Run 'rootless COMMAND --help' for more information on a command."]
    return "\n".join(lines)


def group_help(group: str) -> str:
    module, subs = GROUPS[group]
    lines = [f"Usage:  rootless {group} COMMAND", "", GROUP_SUMMARY.get(group, ""), "", "Commands:"]
    seen = set()
    for sub, cmd in subs.items():
        if cmd in seen and sub in ("list",):
            continue
        seen.add(cmd)
        lines.append(f"  {sub:<12}{_summary(module, cmd)}")
    lines += ["", f"Run 'rootless {group} COMMAND --help' for more information on a command."]
    return "\n".join(lines)


def _unknown(word: str, where: str = "rootless") -> UsageError:
    import difflib

    pool = list(TOP) + list(GROUPS) if where == "rootless" else list(GROUPS[where.split()[-1]][1])
    close = difflib.get_close_matches(word, pool, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return UsageError(f"{where}: '{word}' is not a rootless command",
                      hint=f"{hint}See '{where} --help'.")


def connection_for(flag: str | None, env: dict[str, str], platform: str) -> str | None:
    """The machine a container command runs in (pure): ``--connection``, else
    ``ROOTLESS_CONNECTION``, else the machine ``default`` on a host without a
    Linux kernel (macOS, Windows), as ``podman machine`` does; None runs it here."""
    if flag:
        return flag
    if env.get("ROOTLESS_CONNECTION"):
        return env["ROOTLESS_CONNECTION"]
    if not platform.startswith("linux"):
        return "default"
    return None


def _dispatch(argv: list[str], env: dict[str, str]) -> int:
    from rootless.cli.base import Context

    globals_: dict[str, str] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-v", "--version"):
            print(f"rootless version {__version__}")
            return 0
        if a in ("-h", "--help"):
            print(top_help())
            return 0
        if a in ("--root", "--connection"):
            if i + 1 >= len(argv):
                raise UsageError(f"flag needs an argument: {a}", hint="See 'rootless --help'.")
            globals_[a[2:]] = argv[i + 1]
            i += 2
            continue
        if a.startswith("--root=") or a.startswith("--connection="):
            k, v = a[2:].split("=", 1)
            globals_[k] = v
            i += 1
            continue
        if a.startswith("-"):
            raise UsageError(f"unknown flag: {a}", hint="See 'rootless --help'.")
        break
    rest = argv[i:]
    if not rest:
        print(top_help(), file=sys.stderr)
        return 125
    if "root" in globals_:
        env["ROOTLESS_ROOT"] = os.path.abspath(globals_["root"])

    word = rest[0]
    connection = connection_for(globals_.get("connection"), env, sys.platform)
    if connection and word not in ("machine",):
        from vmhost.forward import forward

        return forward(connection, rest, env)

    if word in GROUPS:
        module, subs = GROUPS[word]
        if len(rest) < 2 or rest[1] in ("-h", "--help"):
            print(group_help(word))
            return 0 if len(rest) >= 2 else 125
        if rest[1] not in subs:
            raise _unknown(rest[1], f"rootless {word}")
        prog = f"rootless {word} {rest[1]}"
        name = subs[rest[1]]
        args = rest[2:]
    elif word in TOP:
        module, name = TOP[word]
        prog = f"rootless {word}"
        args = rest[1:]
    else:
        raise _unknown(word)
    mod = _load(module)
    cmd = mod.COMMANDS[name]
    parser = cmd.parser(prog)
    ns = parser.parse_args(args)
    ctx = Context(env=env)
    return cmd.handler(ctx, ns) or 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    try:
        return _dispatch(argv, env)
    except RootlessError as e:
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except BrokenPipeError:
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:
            pass
        return 141
    except OSError as e:
        # a file the library did not expect to fail (e.g. --root in a directory we
        # cannot enter): one line and a hint, not a traceback
        _print_error(os_error(e, env))
        return 125


def os_error(e: OSError, env: dict[str, str]) -> RootlessError:
    """The error and hint for an OSError that reached the CLI (pure)."""
    import errno

    what = e.strerror or str(e)
    path = e.filename if isinstance(e.filename, str) else None
    msg = f"{path}: {what}" if path else what
    hint = None
    root = env.get("ROOTLESS_ROOT")
    if not root:
        try:
            from rootless.config import load_config

            root = str(load_config(env).data_root)
        except Exception:  # noqa: BLE001 - only for the hint
            root = None
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR):
        if path and root and (path == root or path.startswith(root.rstrip("/") + "/")):
            hint = (f"the store {root} must be a directory you can write to: choose another with "
                    f"--root DIR or ROOTLESS_ROOT (`rootless doctor` checks the store)")
        elif path:
            hint = f"check the permissions of {path} and its parent directories (`ls -ld {path}`)"
    return RootlessError(msg, hint=hint)


def _print_error(e: RootlessError) -> None:
    try:
        print(f"Error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"Hint: {e.hint}", file=sys.stderr)
    except Exception:
        pass

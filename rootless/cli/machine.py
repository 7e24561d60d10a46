"""rootless machine: init, start, stop, list, inspect, rm, ssh, set (vmhost)."""

from __future__ import annotations

import argparse
import json
import sys

from rootless.cli.base import Command
from rootless.errors import UsageError

COMMANDS: dict[str, Command] = {}
DEFAULT = "default"


def _machines(ctx, quiet: bool = False):
    from vmhost.machine import Machines

    return Machines(ctx.config, ctx.env, ctx.reporter(quiet=quiet))


def _size_mib(text: str) -> int:
    """2048, 2048M, 2G, 2GiB -> MiB."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    mult = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 2048, 4G)") from None


def _size_gib(text: str) -> int:
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if t.endswith("t"):
            return int(float(t[:-1]) * 1024)
        if t.endswith("g"):
            return int(float(t[:-1]))
        if t.endswith("m"):
            return max(1, int(float(t[:-1]) / 1024))
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 20, 100G)") from None


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {v}")
    return v


# ---------------------------------------------------------------- init

def _init_setup(p):
    p.add_argument("name", nargs="?", default=DEFAULT, help="machine name (default: default)")
    p.add_argument("--cpus", type=_positive, help="virtual CPUs (default: 2, at most the host's)")
    p.add_argument("-m", "--memory", type=_size_mib, help="memory in MiB, or with a unit: 4G (default 2048)")
    p.add_argument("--disk-size", type=_size_gib, help="disk size in GiB (default 20)")
    p.add_argument("--image", metavar="PATH",
                   help="a cloud image (.qcow2, .img, .raw: Debian/Ubuntu, provisioned by cloud-init) or a guest "
                        "image directory (default: build one from Debian packages, cached)")
    p.add_argument("--accel", choices=["auto", "kvm", "hvf", "whpx", "tcg"], default="auto",
                   help="accelerator (default auto: KVM/HVF, else TCG emulation with a warning)")
    p.add_argument("--no-share", action="store_true", help="do not share the home directory with the machine")
    p.add_argument("--now", action="store_true", help="start the machine once it is made")


def cmd_init(ctx, args) -> int:
    ms = _machines(ctx)
    spec = ms.init(args.name, cpus=args.cpus, memory_mib=args.memory, disk_gib=args.disk_size, image=args.image,
                   accel=args.accel, share_home=not args.no_share)
    print(f"Machine {spec.name} created ({spec.cpus} CPUs, {spec.memory_mib} MiB, {spec.disk_gib} GiB disk)",
          file=sys.stderr)
    if args.now:
        ms.start(spec.name)
    print(spec.name)
    return 0


COMMANDS["init"] = Command("Create a Linux virtual machine (built from Debian packages the first time)",
                           _init_setup, cmd_init)


# ---------------------------------------------------------------- start / stop

def _name_setup(p):
    p.add_argument("name", nargs="?", default=DEFAULT, help="machine name (default: default)")


def cmd_start(ctx, args) -> int:
    ms = _machines(ctx)
    ms.start(args.name)
    print(args.name)
    return 0


COMMANDS["start"] = Command("Start a machine and wait until it is ready", _name_setup, cmd_start)


def cmd_stop(ctx, args) -> int:
    ms = _machines(ctx)
    if not ms.stop(args.name):
        ctx.warn(f"machine {args.name} was not running")
    print(args.name)
    return 0


COMMANDS["stop"] = Command("Stop a machine", _name_setup, cmd_stop)


# ---------------------------------------------------------------- list / inspect

def _list_setup(p):
    p.add_argument("--format", help="'json', 'table' or a Go template")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the names")
    p.add_argument("--noheading", action="store_true", help="no header row")


def _ago(iso: str) -> str:
    import calendar
    import time

    if not iso:
        return "Never"
    try:
        t = calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return iso
    s = max(0, int(time.time() - t))
    for unit, n in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if s >= n:
            v = s // n
            return f"{v} {unit}{'s' if v > 1 else ''} ago"
    return "Less than a minute ago" if s >= 1 else "Now"


def cmd_list(ctx, args) -> int:
    from rootless.cli.format import output

    ms = _machines(ctx, quiet=True)
    items = [ms.info(n) for n in ms.names()]
    if args.quiet:
        for i in items:
            print(i["Name"])
        return 0

    def row(i):
        name = i["Name"] + ("*" if i["Default"] else "")
        last = "Currently running" if i["Running"] else _ago(i["LastUp"])
        return [name, i["VMType"], _ago(i["Created"]), last, str(i["CPUs"]), f"{i['Memory'] / 1024:g}GiB",
                f"{i['DiskSize']}GiB"]

    text = output(items, args.format, ["NAME", "VM TYPE", "CREATED", "LAST UP", "CPUS", "MEMORY", "DISK SIZE"], row)
    if args.noheading and (args.format in (None, "table")):
        text = "\n".join(text.splitlines()[1:])
    if text:
        print(text)
    return 0


COMMANDS["list"] = Command("List machines", _list_setup, cmd_list)


def _inspect_setup(p):
    p.add_argument("names", nargs="*", default=[DEFAULT], help="machines (default: default)")
    p.add_argument("-f", "--format", help="a Go template, e.g. '{{.State}}'")


def cmd_inspect(ctx, args) -> int:
    from rootless.cli.format import render
    from rootless.errors import MachineError

    ms = _machines(ctx, quiet=True)
    out, rc = [], 0
    for n in args.names or [DEFAULT]:
        try:
            out.append(ms.info(n))
        except MachineError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            rc = 125
    if args.format:
        for i in out:
            print(render(args.format, i))
    else:
        print(json.dumps(out, indent=4))
    return rc


COMMANDS["inspect"] = Command("Show a machine's configuration and state as JSON", _inspect_setup, cmd_inspect)


# ---------------------------------------------------------------- rm

def _rm_setup(p):
    p.add_argument("names", nargs="*", default=[DEFAULT], help="machines (default: default)")
    p.add_argument("-f", "--force", action="store_true", help="stop it first if it is running")


def cmd_rm(ctx, args) -> int:
    from rootless.errors import RootlessError

    ms = _machines(ctx)
    rc = 0
    for n in args.names or [DEFAULT]:
        try:
            ms.rm(n, force=args.force)
            print(n)
        except RootlessError as e:
            if len(args.names) == 1:
                raise
            print(f"Error: {e.message}", file=sys.stderr)
            rc = e.exit_code
    return rc


COMMANDS["rm"] = Command("Remove a machine: its VM processes, disk, keys and logs", _rm_setup, cmd_rm)


# ---------------------------------------------------------------- set

def _set_setup(p):
    p.add_argument("name", nargs="?", default=DEFAULT, help="machine name (default: default)")
    p.add_argument("--cpus", type=_positive, help="virtual CPUs")
    p.add_argument("-m", "--memory", type=_size_mib, help="memory in MiB, or with a unit: 4G")
    p.add_argument("--disk-size", type=_size_gib, help="grow the disk to this many GiB")
    p.add_argument("--accel", choices=["auto", "kvm", "hvf", "whpx", "tcg"], help="accelerator")


def cmd_set(ctx, args) -> int:
    if args.cpus is None and args.memory is None and args.disk_size is None and args.accel is None:
        raise UsageError("machine set: nothing to change",
                         hint="give --cpus, --memory, --disk-size or --accel")
    _machines(ctx).set(args.name, cpus=args.cpus, memory_mib=args.memory, disk_gib=args.disk_size,
                       accel=args.accel)
    return 0


COMMANDS["set"] = Command("Change a stopped machine's CPUs, memory, disk size or accelerator", _set_setup, cmd_set)


# ---------------------------------------------------------------- ssh

def _ssh_setup(p):
    p.add_argument("--username", help="log in as this guest user (default: yours; 'root' for root)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="[NAME] [COMMAND [ARG...]]")


def cmd_ssh(ctx, args) -> int:
    import os
    import shlex

    ms = _machines(ctx)
    rest = list(args.args)
    if rest and rest[0] == "--":
        rest = rest[1:]
    name = DEFAULT
    if rest and rest[0] in ms.names():
        name = rest.pop(0)
    elif rest and not ms.exists(DEFAULT) and len(rest) == 1:
        name = rest.pop(0)  # 'machine ssh NAME' of a machine that does not exist: say so
    ms.spec(name)
    tty = None
    if not rest:
        tty = sys.stdin.isatty()
    argv = ms.ssh_argv(name, user=args.username, tty=tty)
    if rest:
        argv += ["--", shlex.join(rest) if len(rest) > 1 else rest[0]]
    from vmhost.forward import run_passthrough

    return run_passthrough(argv)


COMMANDS["ssh"] = Command("Log in to a machine, or run a command in it, over SSH", _ssh_setup, cmd_ssh)

"""Volume commands: create, ls, inspect, rm, prune."""

from __future__ import annotations

import json
import sys

from rootless.cli.base import Command
from rootless.errors import RootlessError

COMMANDS: dict[str, Command] = {}


def _vstore(ctx):
    from rootless.runtime.volumes import VolumeStore

    return VolumeStore(ctx.config)


def _create_setup(p):
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-d", "--driver", default="local", help="only 'local'")
    p.add_argument("-o", "--opt", action="append", default=[], help="(not supported)")
    p.add_argument("name", nargs="?", default=None)


def cmd_create(ctx, args) -> int:
    from rootless.errors import UsageError
    from rootless.runtime.spec import parse_labels

    if args.driver != "local":
        raise UsageError(f"unknown volume driver {args.driver!r}", hint="only the 'local' driver exists")
    if args.opt:
        raise UsageError("volume driver options (-o) are not supported")
    v, _ = _vstore(ctx).create(args.name, parse_labels(args.label))
    print(v.name)
    return 0


COMMANDS["create"] = Command("Create a volume", _create_setup, cmd_create)


def _ls_setup(p):
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[], help="name=, label=, dangling=true")
    p.add_argument("--format", default=None)


def cmd_ls(ctx, args) -> int:
    from rootless.cli.format import output

    vs = _vstore(ctx)
    items = []
    for v in vs.list():
        d = v.to_json()
        ok = True
        for f in args.filter:
            k, _, val = f.partition("=")
            if k == "name" and val not in v.name:
                ok = False
            elif k == "label":
                lk, eq, lv = val.partition("=")
                labels = dict(v.labels)
                if lk not in labels or (eq and labels[lk] != lv):
                    ok = False
            elif k == "dangling" and (val in ("true", "1")) == bool(vs.users(v.name)):
                ok = False
        if ok:
            items.append(d)
    if args.format == "json":
        for d in items:
            print(json.dumps(d))
        return 0
    text = output(items, args.format, ["DRIVER", "VOLUME NAME"], lambda d: [d["Driver"], d["Name"]],
                  headers={"Name": "VOLUME NAME"},
                  quiet_field="Name", quiet=args.quiet)
    if text:
        print(text)
    return 0


COMMANDS["ls"] = Command("List volumes", _ls_setup, cmd_ls)


def _inspect_setup(p):
    p.add_argument("-f", "--format", default=None)
    p.add_argument("names", nargs="+", metavar="VOLUME")


def cmd_inspect(ctx, args) -> int:
    vs = _vstore(ctx)
    items, status = [], 0
    for n in args.names:
        try:
            items.append(vs.get(n).to_json())
        except RootlessError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            status = 1
    if args.format and args.format != "json":
        from rootless.cli.format import render

        for i in items:
            print(render(args.format, i))
    elif items or not status:
        print(json.dumps(items, indent=4))
    return status


COMMANDS["inspect"] = Command("Display detailed information on volumes", _inspect_setup, cmd_inspect)


def _rm_setup(p):
    p.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it")
    p.add_argument("names", nargs="+", metavar="VOLUME")


def cmd_rm(ctx, args) -> int:
    vs = _vstore(ctx)
    status = 0
    for n in args.names:
        try:
            vs.remove(n, force=args.force)
            print(n)
        except RootlessError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            if e.hint:
                print(f"Hint: {e.hint}", file=sys.stderr)
            status = 1
    return status


COMMANDS["rm"] = Command("Remove one or more volumes", _rm_setup, cmd_rm)


def _prune_setup(p):
    p.add_argument("-a", "--all", action="store_true", help="also unused named volumes")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")


def cmd_prune(ctx, args) -> int:
    if not args.force:
        from rootless.cli.base import confirm

        if not confirm("WARNING! This will remove unused volumes.\nAre you sure you want to continue?"):
            return 0
    from rootless.image.present import human_size

    removed, freed = _vstore(ctx).prune(all_=args.all)
    print("Deleted Volumes:")
    for n in removed:
        print(n)
    print(f"\nTotal reclaimed space: {human_size(freed)}")
    return 0


COMMANDS["prune"] = Command("Remove unused volumes", _prune_setup, cmd_prune)

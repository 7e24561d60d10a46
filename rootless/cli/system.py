"""System commands: info, version, doctor, unshare, df, prune."""

from __future__ import annotations

import json
import os
import sys

from rootless.cli.base import Command

COMMANDS: dict[str, Command] = {}


def _doctor_setup(p):
    p.add_argument("--json", action="store_true", help="print the checks as JSON")


def cmd_doctor(ctx, args) -> int:
    from rootless.doctor import all_required_ok, run_checks

    checks = run_checks(ctx.config)
    ok = all_required_ok(checks)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [c.to_json() for c in checks]}, indent=2))
        return 0 if ok else 1
    width = max(len(c.name) for c in checks)
    for c in checks:
        line = f"{c.status:<5} {c.name:<{width}}  {c.detail}"
        if c.fix and c.status != "OK":
            line += f"  -- fix: {c.fix}"
        print(line)
    failed = [c.name for c in checks if c.status == "FAIL" and c.required]
    if ok:
        print("\nrootless can run containers on this host.")
    else:
        print(f"\nrootless cannot run containers here until these are fixed: {', '.join(failed)}")
    return 0 if ok else 1


COMMANDS["doctor"] = Command("Check that this host can run rootless containers, and how to fix it",
                             _doctor_setup, cmd_doctor)


def _info_setup(p):
    p.add_argument("-f", "--format", help="'json' or a Go template")


def cmd_info(ctx, args) -> int:
    from rootless.info import host_info

    info = host_info(ctx.config)
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return 0
    if args.format:
        from rootless.cli.format import render

        print(render(args.format, info))
        return 0

    def show(d, indent=0):
        for k, v in d.items():
            if isinstance(v, dict):
                print(" " * indent + f"{k}:")
                show(v, indent + 2)
            elif isinstance(v, list):
                print(" " * indent + f"{k}:")
                for x in v:
                    if isinstance(x, dict):
                        print(" " * (indent + 2) + "- " + ", ".join(f"{a}: {b}" for a, b in x.items()))
                    else:
                        print(" " * (indent + 2) + f"- {x}")
            else:
                print(" " * indent + f"{k}: {v}")

    show(info)
    return 0


COMMANDS["info"] = Command("Display system-wide information", _info_setup, cmd_info)


def _version_setup(p):
    p.add_argument("-f", "--format", help="'json' or a Go template")


def cmd_version(ctx, args) -> int:
    from rootless import __version__

    v = {"Client": {"Version": __version__, "ApiVersion": "none (daemonless)", "GoVersion": "",
                    "Os": sys.platform, "Arch": os.uname().machine,
                    "PythonVersion": sys.version.split()[0]}}
    if args.format == "json":
        print(json.dumps(v, indent=2))
    elif args.format:
        from rootless.cli.format import render

        print(render(args.format, v))
    else:
        print(f"Version:       {__version__}\nPython:        {v['Client']['PythonVersion']}\n"
              f"OS/Arch:       {sys.platform}/{v['Client']['Arch']}")
    return 0


COMMANDS["version"] = Command("Show the rootless version information", _version_setup, cmd_version)


def _unshare_setup(p):
    import argparse

    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run (default: $SHELL)")


def cmd_unshare(ctx, args) -> int:
    """Run a command as root of the user namespace the store uses (like podman unshare)."""
    from rootless.userns import run_in_userns

    cmd = args.command or [os.environ.get("SHELL", "/bin/sh")]

    def _exec():
        os.environ["ROOTLESS_UNSHARED"] = "1"
        import subprocess

        return subprocess.call(cmd)

    return run_in_userns(_exec)


COMMANDS["unshare"] = Command("Run a command in the user namespace of the store (store files show their container ids)",
                              _unshare_setup, cmd_unshare)


def _df_setup(p):
    p.add_argument("--format", help="'table', 'json' (one object per line) or a Go template")


def cmd_df(ctx, args) -> int:
    from rootless.cli.format import output
    from rootless.diskusage import collect, summarize

    rows = summarize(collect(ctx.config))
    if args.format == "json":
        for r in rows:
            print(json.dumps(r.to_json()))
        return 0
    text = output([r.to_json() for r in rows], args.format, ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                  lambda i: [i["Type"], i["TotalCount"], i["Active"], i["Size"], i["Reclaimable"]],
                  headers={"TotalCount": "TOTAL"})
    if text:
        print(text)
    return 0


COMMANDS["df"] = Command("Show disk usage", _df_setup, cmd_df)


def _prune_setup(p):
    p.add_argument("-a", "--all", action="store_true",
                   help="remove all unused images (not just dangling ones) and all build cache")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--volumes", action="store_true", help="also remove anonymous volumes no container uses")


def prune_warning(all_: bool, volumes: bool) -> str:
    """Docker's confirmation text of ``system prune``."""
    lines = ["WARNING! This will remove:", "  - all stopped containers",
             "  - all networks not used by at least one container"]
    if volumes:
        lines.append("  - all anonymous volumes not used by at least one container")
    lines.append("  - all images without at least one container associated to them" if all_
                 else "  - all dangling images")
    lines.append("  - all build cache" if all_ else "  - unused build cache")
    return "\n".join(lines) + "\n\nAre you sure you want to continue?"


def cmd_prune(ctx, args) -> int:
    """Containers, networks, (volumes), images, build cache, in that order (as Docker): what the
    first steps free can make images unused for the later ones."""
    from rootless.build import cache as build_cache
    from rootless.cli import containers, network
    from rootless.image.present import human_size
    from rootless.image.store import Store
    from rootless.runtime.volumes import VolumeStore

    if not args.force:
        from rootless.cli.base import confirm

        if not confirm(prune_warning(args.all, args.volumes)):
            return 0
    freed = 0
    removed, size = containers.prune_stopped(ctx)
    freed += size
    if removed:
        print("Deleted Containers:\n" + "\n".join(removed) + "\n")
    nets = network.prune_unused(ctx)
    if nets:
        print("Deleted Networks:\n" + "\n".join(nets) + "\n")
    if args.volumes:
        vols, size = VolumeStore(ctx.config).prune(all_=False)
        freed += size
        if vols:
            print("Deleted Volumes:\n" + "\n".join(vols) + "\n")
    store = Store(ctx.config)
    imgs, size = store.prune(all_images=args.all)
    freed += size
    if imgs:
        print("Deleted Images:\n" + "\n".join(f"deleted: {i}" for i in imgs) + "\n")
    n, size = build_cache.prune(store, unused_only=not args.all)
    freed += size
    if n:
        print(f"Deleted build cache objects: {n}\n")
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


COMMANDS["prune"] = Command("Remove unused data (stopped containers, unused networks, dangling images, "
                            "build cache)", _prune_setup, cmd_prune)

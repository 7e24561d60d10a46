"""`rootless binfmt status|install|uninstall`: host qemu-user registrations (for admins).

Users do not need any of this on Linux >= 6.7: `rootless run` registers
qemu inside each container's own binfmt_misc. An admin registers on the host
for older kernels, or to let every tool on the host run foreign binaries.
"""

from __future__ import annotations

import json

from rootless.cli.base import Command

COMMANDS: dict[str, Command] = {}


def _arch_arg(p):
    p.add_argument("--arch", action="append", metavar="ARCH",
                   help="architecture(s) to act on, e.g. arm64 or arm64,riscv64 (repeatable; default: all foreign "
                        "architectures with a static qemu-user)")


def _status_setup(p):
    _arch_arg(p)
    p.add_argument("-f", "--format", help="'json' or a Go template")
    p.add_argument("--no-probe", action="store_true", help="do not execute the probe program through each entry")


def cmd_status(ctx, args) -> int:
    from archsupport.emulation import emulation_table
    from archsupport.hostbinfmt import parse_arches, status

    arches = parse_arches(args.arch)
    state, rows = status(probe=not args.no_probe)
    if arches is not None:
        rows = [r for r in rows if r.arch in arches]
    modes = emulation_table(ctx.config)
    if arches is not None:
        modes = {a: m for a, m in modes.items() if a in arches}
    data = {"binfmt_misc": {"path": state.path, "mounted": state.mounted, "enabled": state.enabled},
            "entries": [r.to_json() for r in rows], "emulation": modes}
    if args.format == "json":
        print(json.dumps(data, indent=2))
        return 0
    if args.format:
        from rootless.cli.format import render

        print(render(args.format, data))
        return 0
    if not state.mounted:
        print(f"binfmt_misc: not mounted at {state.path} (no host registrations)")
    else:
        print(f"binfmt_misc: mounted at {state.path}, {'enabled' if state.enabled else 'DISABLED'}")
    if rows:
        from rootless.cli.format import table

        def works(r):
            if r.works is None:
                return "-"
            return "yes" if r.works else f"NO ({r.detail})"

        print()
        print(table(["NAME", "ARCH", "INTERPRETER", "FLAGS", "ENABLED", "PERSISTED", "WORKS"],
                    [[r.name, r.arch or "-", r.interpreter or "-", r.flags or "-", "yes" if r.enabled else "no",
                      r.persisted or "-", works(r)] for r in rows]))
    print("\nEmulation used by `rootless run`:")
    w = max((len(a) for a in modes), default=4)
    for arch, m in modes.items():
        line = f"  {arch:<{w}}  {m['mode']}"
        if m.get("interpreter"):
            line += f"  {m['interpreter']}"
        if m["mode"] == "none" and m.get("fix"):
            line += f"  -- fix: {m['fix']}"
        print(line)
    return 0


COMMANDS["status"] = Command("List the host's binfmt_misc registrations and whether each works", _status_setup,
                             cmd_status)


def _install_setup(p):
    _arch_arg(p)
    p.add_argument("--persist", action="store_true",
                   help="also write /etc/binfmt.d/rootless-qemu-*.conf so systemd-binfmt registers them at boot")


def cmd_install(ctx, args) -> int:
    from archsupport.hostbinfmt import install, parse_arches

    changes = install(parse_arches(args.arch), ctx.config, persist=args.persist)
    for c in changes:
        print(f"{c.arch}: {c.action} {c.name}" + (f" - {c.detail}" if c.detail else ""))
    return 0


COMMANDS["install"] = Command("Register qemu-user for foreign architectures on the host (root)", _install_setup,
                              cmd_install)


def _uninstall_setup(p):
    _arch_arg(p)
    p.add_argument("--persist", action="store_true",
                   help="accepted for symmetry: uninstall always removes rootless's /etc/binfmt.d files too")


def cmd_uninstall(ctx, args) -> int:
    from archsupport.hostbinfmt import parse_arches, uninstall

    changes = uninstall(parse_arches(args.arch))
    if not changes:
        print("nothing to remove: rootless has no registrations on this host")
    for c in changes:
        print(f"{c.arch}: {c.action} {c.name}" + (f" - {c.detail}" if c.detail else ""))
    return 0


COMMANDS["uninstall"] = Command("Remove rootless's qemu-user registrations from the host (root)", _uninstall_setup,
                                cmd_uninstall)

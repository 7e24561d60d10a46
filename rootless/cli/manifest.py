"""``rootless manifest create/add/inspect/push/rm``: manifest lists by hand (as Podman)."""

from __future__ import annotations

import json

from rootless.cli.base import Command

COMMANDS: dict[str, Command] = {}


def _store(ctx):
    from rootless.image.store import Store

    return Store(ctx.config)


def _create_setup(p):
    p.add_argument("name", metavar="LIST", help="name of the manifest list (NAME[:TAG])")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="images to put in it")
    p.add_argument("--all", action="store_true", help="add every platform of each IMAGE that is a list")
    p.add_argument("--amend", action="store_true", help="change the list if it exists")


def cmd_create(ctx, args) -> int:
    from rootless.build import manifest

    digest = manifest.create(_store(ctx), args.name, args.images, all_platforms=args.all, amend=args.amend,
                             reporter=ctx.reporter())
    print(digest)
    return 0


def _add_setup(p):
    p.add_argument("name", metavar="LIST")
    p.add_argument("image", metavar="IMAGE", help="a local image, or one to pull")
    p.add_argument("--all", action="store_true", help="add every platform of IMAGE")
    p.add_argument("--platform", help="which platform of IMAGE (os/arch[/variant])")
    p.add_argument("--arch", help="architecture of IMAGE (with --os/--variant, like --platform)")
    p.add_argument("--os", help="operating system of IMAGE")
    p.add_argument("--variant", help="variant of IMAGE")


def cmd_add(ctx, args) -> int:
    from archsupport.platform import parse
    from rootless.build import manifest

    plat = None
    if args.platform:
        plat = parse(args.platform)
    elif args.arch:
        plat = parse("/".join(x for x in (args.os or "linux", args.arch, args.variant or "") if x))
    digest = manifest.add(_store(ctx), args.name, args.image, platform=plat, all_platforms=args.all,
                          reporter=ctx.reporter())
    print(digest)
    return 0


def _inspect_setup(p):
    p.add_argument("name", metavar="LIST")


def cmd_inspect(ctx, args) -> int:
    from rootless.build import manifest

    print(json.dumps(manifest.inspect(_store(ctx), args.name), indent=4))
    return 0


def _push_setup(p):
    p.add_argument("name", metavar="LIST")
    p.add_argument("destination", nargs="?", help="push under another name (HOST/NAME[:TAG])")
    p.add_argument("--all", action="store_true", default=True, help="push every image of the list (default)")
    p.add_argument("--rm", action="store_true", help="remove the local list after a successful push")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    from rootless.cli.images import _add_tls

    _add_tls(p)


def cmd_push(ctx, args) -> int:
    from rootless.build import manifest
    from rootless.cli.images import _tls
    from rootless.image.push import push

    store = _store(ctx)
    manifest.members(store, args.name)
    digest = push(store, args.name, args.destination, reporter=ctx.reporter(quiet=args.quiet),
                  tls_verify=_tls(args))
    if args.rm:
        manifest.remove(store, [args.name])
    print(digest)
    return 0


def _rm_setup(p):
    p.add_argument("names", nargs="+", metavar="LIST")


def cmd_rm(ctx, args) -> int:
    from rootless.build import manifest

    for n in manifest.remove(_store(ctx), args.names):
        print(f"Untagged: {n}")
    return 0


COMMANDS["create"] = Command("Create a manifest list (multi-platform image) from images", _create_setup, cmd_create)
COMMANDS["add"] = Command("Add an image to a manifest list", _add_setup, cmd_add)
COMMANDS["inspect"] = Command("Display the contents of a manifest list", _inspect_setup, cmd_inspect)
COMMANDS["push"] = Command("Push a manifest list and its images to a registry", _push_setup, cmd_push)
COMMANDS["rm"] = Command("Remove manifest lists (their images stay)", _rm_setup, cmd_rm)

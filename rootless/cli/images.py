"""Image commands: pull, push, images, image inspect, tag, rmi, image prune,
history, save, load, login, logout."""

from __future__ import annotations

import json
import sys

from rootless.cli.base import Command
from rootless.errors import UsageError

COMMANDS: dict[str, Command] = {}


def _store(ctx):
    from rootless.image.store import Store

    return Store(ctx.config)


def _platform(s: str | None):
    if not s:
        return None
    from archsupport.platform import parse

    return parse(s)


def _tls(args) -> bool | None:
    v = getattr(args, "tls_verify", None)
    if v is None:
        return None
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise UsageError(f"--tls-verify: invalid value {v!r}", hint="use --tls-verify=true or --tls-verify=false")


def _add_tls(p) -> None:
    p.add_argument("--tls-verify", nargs="?", const="true", default=None, metavar="BOOL",
                   help="verify TLS certificates (default true; registries on localhost use plain HTTP)")


# pull ----------------------------------------------------------------------

def _pull_setup(p):
    p.add_argument("image", help="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    p.add_argument("-a", "--all-platforms", action="store_true", help="pull every platform of a multi-arch image")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    _add_tls(p)


def cmd_pull(ctx, args) -> int:
    from rootless.image.pull import pull

    store = _store(ctx)
    rep = ctx.reporter(quiet=args.quiet)
    img = pull(store, args.image, platform=_platform(args.platform), reporter=rep,
               all_platforms=args.all_platforms, tls_verify=_tls(args))
    print(img.id)
    return 0


COMMANDS["pull"] = Command("Download an image from a registry", _pull_setup, cmd_pull)


# images --------------------------------------------------------------------

def _images_setup(p):
    p.add_argument("reference", nargs="?", help="only images matching REPOSITORY[:TAG]")
    p.add_argument("-a", "--all", action="store_true", help="show all images (intermediate ones too)")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="dangling=true|false, reference=PATTERN")
    p.add_argument("--format", help="'table', 'json' or a Go template")


def _image_rows(store, args) -> list[dict]:
    import fnmatch

    from rootless.image.present import human_size, parse_time, since
    from rootless.image.reference import familiar_name

    filters = {}
    for f in args.filter:
        k, _, v = f.partition("=")
        if k not in ("dangling", "reference", "label"):
            raise UsageError(f"invalid filter {k!r}", hint="use dangling=true|false, reference=PATTERN or label=KEY[=VALUE]")
        filters.setdefault(k, []).append(v)
    rows = []
    for img in sorted(store.images(), key=lambda i: -i.added):
        created = parse_time(img.created)
        tags = list(img.repo_tags) or ["<none>:<none>"]
        if "dangling" in filters:
            want = filters["dangling"][-1].lower() in ("true", "1")
            if want != (not img.repo_tags):
                continue
        if "label" in filters:
            ok = True
            for lv in filters["label"]:
                k, eq, v = lv.partition("=")
                if k not in img.config.labels or (eq and img.config.labels[k] != v):
                    ok = False
            if not ok:
                continue
        for t in tags:
            repo, _, tag = t.rpartition(":")
            pats = ([args.reference] if args.reference else []) + filters.get("reference", [])
            if pats and not any(_ref_match(p, repo, tag) for p in pats):
                continue
            digest = "<none>"
            for d in img.repo_digests:
                if d.split("@")[0] == repo:
                    digest = d.split("@", 1)[1]
            rows.append({"Repository": repo, "Tag": tag, "ID": img.id if args.no_trunc else img.short_id,
                         "Digest": digest, "CreatedSince": since(created),
                         "CreatedAt": img.created, "Size": human_size(img.size), "VirtualSize": human_size(img.size),
                         "Platform": str(img.platform), "Containers": "N/A",
                         "Labels": ",".join(f"{k}={v}" for k, v in img.config.labels.items())})
    return rows


def _ref_match(pattern: str, repo: str, tag: str) -> bool:
    import fnmatch

    from rootless.image.reference import familiar_name

    prepo, _, ptag = pattern.partition(":") if pattern.count(":") == 1 and "/" not in pattern.split(":")[1] else (pattern, "", "")
    names = {repo, familiar_name(repo)}
    try:
        from rootless.image.reference import parse

        names.add(familiar_name(parse(repo).name))
    except Exception:  # noqa: BLE001
        pass
    if not any(fnmatch.fnmatchcase(n, prepo) for n in names):
        return False
    return not ptag or fnmatch.fnmatchcase(tag, ptag)


def cmd_images(ctx, args) -> int:
    from rootless.cli.format import output

    rows = _image_rows(_store(ctx), args)
    if args.quiet:
        seen = []
        for r in rows:
            if r["ID"] not in seen:
                seen.append(r["ID"])
        if seen:
            print("\n".join(seen))
        return 0
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]

    def row(r):
        return [r["Repository"], r["Tag"]] + ([r["Digest"]] if args.digests else []) + [
            r["ID"], r["CreatedSince"], r["Size"]]

    text = output(rows, args.format, headers, row)
    if text:
        print(text)
    return 0


COMMANDS["images"] = Command("List images", _images_setup, cmd_images)


# inspect -------------------------------------------------------------------

def _inspect_setup(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", help="'json' or a Go template")
    p.add_argument("--platform", help="os/arch[/variant] when a tag has several platforms")


def cmd_image_inspect(ctx, args) -> int:
    from rootless.errors import ImageNotFound
    from rootless.image.present import inspect_json

    store = _store(ctx)
    out = []
    missing = []
    plat = _platform(args.platform)
    for ref in args.images:
        try:
            out.append(inspect_json(store, store.resolve(ref, plat, reporter=ctx.reporter())))
        except ImageNotFound:
            missing.append(ref)
    if args.format and args.format != "json":
        from rootless.cli.format import render

        for o in out:
            print(render(args.format, o))
    else:
        print(json.dumps(out, indent=4))
    if missing:
        for m in missing:
            print(f"Error: No such image: {m}", file=sys.stderr)
        return 1
    return 0


COMMANDS["image-inspect"] = Command("Display detailed information on one or more images", _inspect_setup,
                                    cmd_image_inspect)

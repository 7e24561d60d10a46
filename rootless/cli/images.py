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
    p.add_optional_value("--tls-verify", const="true", default=None, metavar="BOOL",
                         help="--tls-verify=true|false: verify TLS certificates (default true; registries on "
                              "localhost use plain HTTP)")


# pull ----------------------------------------------------------------------

def _pull_setup(p):
    p.add_argument("image", help="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="os/arch[/variant] (default: this host's)")
    p.add_argument("--arch", help="architecture (overrides --platform's), e.g. arm64")
    p.add_argument("--variant", help="architecture variant, e.g. v7")
    p.add_argument("-a", "--all-platforms", action="store_true", help="pull every platform of a multi-arch image")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    _add_tls(p)


def cmd_pull(ctx, args) -> int:
    from rootless.image.pull import pull

    store = _store(ctx)
    rep = ctx.reporter(quiet=args.quiet)
    from archsupport.platform import requested

    img = pull(store, args.image, platform=requested(args.platform, args.arch, args.variant), reporter=rep,
               all_platforms=args.all_platforms, tls_verify=_tls(args))
    print(img.id)
    return 0


COMMANDS["pull"] = Command("Download an image from a registry", _pull_setup, cmd_pull)


# images --------------------------------------------------------------------

def _images_setup(p):
    p.add_argument("reference", nargs="?", help="only images matching REPOSITORY[:TAG]")
    # Docker hides intermediate images (a build's per-step parents) unless -a; this store keeps
    # none (a build records only its result, the cache keeps layers), so -a lists the same images
    p.add_argument("-a", "--all", action="store_true",
                   help="show all images; the same list as without it (the store keeps no intermediate images)")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="dangling=true|false, reference=PATTERN")
    p.add_argument("--format", help="'table', 'json' or a Go template")


def _image_rows(store, args) -> list[dict]:
    from rootless.image.present import human_size, parse_time, since

    filters = {}
    for f in args.filter:
        k, _, v = f.partition("=")
        if k not in ("dangling", "reference", "label"):
            raise UsageError(f"invalid filter {k!r}", hint="use dangling=true|false, reference=PATTERN or label=KEY[=VALUE]")
        filters.setdefault(k, []).append(v)
    pats = ([args.reference] if args.reference else []) + filters.get("reference", [])
    if pats:
        from rootless.image.reference import path_pattern

        for p in pats:
            path_pattern(p)  # a bad pattern is an error even when no image is there to match
    rows = []
    indexes = store.db().get("indexes", {})
    for img in sorted(store.images(), key=lambda i: -i.added):
        created = parse_time(img.created)
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
        for repo, tag, digest in _image_refs(img, args.digests, indexes):
            if pats:
                if repo == "<none>":
                    continue  # Docker: an image without references matches no reference filter
                if not any(_ref_match(p, repo, tag, digest) for p in pats):
                    continue
            rows.append({"Repository": repo, "Tag": tag, "ID": img.id if args.no_trunc else img.short_id,
                         "Digest": digest, "CreatedSince": since(created),
                         "CreatedAt": img.created, "Size": human_size(img.size), "VirtualSize": human_size(img.size),
                         "Platform": str(img.platform), "Containers": "N/A",
                         "Labels": ",".join(f"{k}={v}" for k, v in img.config.labels.items())})
    return rows


def _image_refs(img, digests: bool, indexes: dict) -> list[tuple[str, str, str]]:
    """The image's rows as Docker's CLI makes them: (repository, tag, digest).

    A tag's digest is a digest reference of its repository: the index the tag came from,
    else the image's own manifest, else the latest (with ``--digests`` a row for each); a
    repository with digest references but no tag gets rows of its own (tag ``<none>``); an
    image without references is ``<none> <none>``. ``indexes``: images.json's."""
    from rootless.errors import InvalidReference
    from rootless.image.reference import parse

    by_repo: dict[str, list[str]] = {}
    for d in img.repo_digests:
        repo, _, dg = d.partition("@")
        by_repo.setdefault(repo, []).append(dg)
    out = []
    tagged = set()
    for t in img.repo_tags:
        repo, _, tag = t.rpartition(":")
        tagged.add(repo)
        ds = by_repo.get(repo) or ["<none>"]
        if not digests and len(ds) > 1:
            try:
                index = indexes.get(parse(t).tagged, {}).get("digest")
            except InvalidReference:
                index = None
            ds = [next((d for d in (index, img.manifest.digest) if d in ds), ds[-1])]
        out.extend((repo, tag, d) for d in (ds if digests else ds[-1:]))
    for repo, ds in by_repo.items():
        if repo not in tagged:
            out.extend((repo, "<none>", d) for d in (ds if digests else ds[-1:]))
    return out or [("<none>", "<none>", "<none>")]


def _ref_match(pattern: str, repo: str, tag: str, digest: str) -> bool:
    """``images REF`` / ``-f reference=PATTERN``: the row's reference (``repo:tag``, or
    ``repo@digest`` for a ``<none>`` tag) by Docker's FamiliarMatch, full names too."""
    from rootless.errors import InvalidReference
    from rootless.image.reference import familiar_match, parse

    try:
        name = parse(repo).name
    except InvalidReference:
        return False
    if tag != "<none>":
        return familiar_match(pattern, name, tag=tag)
    return familiar_match(pattern, name, digest=digest if digest != "<none>" else None)


def _json_lines(rows: list[dict]) -> str:
    """Docker's ``--format json``: one JSON object per line (``{{json .}}``), not an array."""
    import json

    return "\n".join(json.dumps(r) for r in rows)


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

    text = _json_lines(rows) if args.format == "json" else output(rows, args.format, headers, row, headers={"ID": "IMAGE ID"})
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

    if args.format and args.format != "json":
        from rootless.cli.format import check

        check(args.format)
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


# push ----------------------------------------------------------------------

def _push_setup(p):
    p.add_argument("image", help="local image NAME[:TAG]")
    p.add_argument("destination", nargs="?", help="push under another name (HOST/NAME[:TAG])")
    p.add_argument("--platform", help="push only this platform's image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_tls(p)


def cmd_push(ctx, args) -> int:
    from rootless.image.push import push

    rep = ctx.reporter(quiet=args.quiet)
    push(_store(ctx), args.image, args.destination, reporter=rep, tls_verify=_tls(args),
         platform=_platform(args.platform))
    return 0


COMMANDS["push"] = Command("Upload an image to a registry", _push_setup, cmd_push)


# tag -----------------------------------------------------------------------

def _tag_setup(p):
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.add_argument("--platform", help="tag only this platform's image")


def cmd_tag(ctx, args) -> int:
    _store(ctx).tag(args.source, args.target, _platform(args.platform), reporter=ctx.reporter())
    return 0


COMMANDS["tag"] = Command("Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", _tag_setup, cmd_tag)


# rmi -----------------------------------------------------------------------

def _rmi_setup(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="remove an image even if it has several tags")


def cmd_rmi(ctx, args) -> int:
    from rootless.errors import ImageNotFound, RootlessError

    store = _store(ctx)
    status = 0
    for name in args.images:
        try:
            for what, x in store.remove([name], force=args.force):
                print(f"{what}: {x}")
        except ImageNotFound as e:
            print(f"Error: {e.message}", file=sys.stderr)
            status = 1
        except RootlessError as e:
            print(f"Error: {e.message}", file=sys.stderr)
            if e.hint:
                print(f"Hint: {e.hint}", file=sys.stderr)
            status = e.exit_code if status == 0 else status
        store = _store(ctx)
    return status


COMMANDS["rmi"] = Command("Remove one or more images", _rmi_setup, cmd_rmi)


# prune ---------------------------------------------------------------------

def _prune_setup(p):
    p.add_argument("-a", "--all", action="store_true", help="remove all images no container uses, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")


def cmd_prune(ctx, args) -> int:
    from rootless.image.present import human_size

    if not args.force:
        from rootless.cli.base import confirm

        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        if not confirm(f"WARNING! This will remove {what}.\nAre you sure you want to continue?"):
            return 0
    removed, freed = _store(ctx).prune(all_images=args.all)
    if removed:
        print("Deleted Images:")
        for i in removed:
            print(f"deleted: {i}")
        print()
    print(f"Total reclaimed space: {human_size(freed)}")
    return 0


COMMANDS["prune"] = Command("Remove unused images", _prune_setup, cmd_prune)


# history -------------------------------------------------------------------

def _history_setup(p):
    p.add_argument("image")
    p.add_optional_value("-H", "--human", const="true", default="true", metavar="BOOL",
                         help="--human=true|false: human-readable sizes and dates (default true)")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--format", help="'table', 'json' or a Go template")
    p.add_argument("--platform")


def cmd_history(ctx, args) -> int:
    from rootless.cli.format import check, output
    from rootless.image.present import history_rows, human_size, parse_time, since

    if args.format and args.format not in ("json", "table"):
        check(args.format)
    store = _store(ctx)
    img = store.resolve(args.image, _platform(args.platform), reporter=ctx.reporter())
    human = str(args.human).lower() not in ("false", "0", "no")
    rows = []
    for r in history_rows(img, store):
        iid = r["ID"] if (args.no_trunc or r["ID"] == "<missing>") else r["ID"][7:19]
        by = r["CreatedBy"]
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        rows.append({"ID": iid, "CreatedSince": since(parse_time(r["Created"])) if human else r["Created"],
                     "CreatedAt": r["Created"], "CreatedBy": by,
                     "Size": human_size(r["Size"]) if human else str(r["Size"]), "Comment": r["Comment"]})
    if args.quiet:
        print("\n".join(r["ID"] for r in rows))
        return 0
    if args.format == "json":
        print(_json_lines(rows))
        return 0
    print(output(rows, args.format, ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                 lambda r: [r["ID"], r["CreatedSince"], r["CreatedBy"], r["Size"], r["Comment"]]))
    return 0


COMMANDS["history"] = Command("Show the history of an image", _history_setup, cmd_history)


# save / load ---------------------------------------------------------------

def _save_setup(p):
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", help="write to FILE instead of stdout")
    p.add_argument("--format", default="docker-archive", help="docker-archive (default) or oci-archive")
    p.add_argument("--platform", help="the platform's image when a tag has several")


def cmd_save(ctx, args) -> int:
    import os

    from rootless.image.archive import FORMATS, save

    if args.format not in FORMATS:
        raise UsageError(f"unknown format {args.format!r}", hint="use --format docker-archive or oci-archive")
    store = _store(ctx)
    if not args.output:
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to save to a terminal",
                             hint="use the -o flag or redirect the output")
        sys.stdout.flush()
        save(store, args.images, sys.stdout.buffer, args.format, platform=_platform(args.platform),
             reporter=ctx.reporter())
        sys.stdout.buffer.flush()
        return 0
    out = os.path.abspath(args.output)
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            save(store, args.images, f, args.format, platform=_platform(args.platform), reporter=ctx.reporter())
        os.rename(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return 0


COMMANDS["save"] = Command("Save one or more images to a tar archive (docker-archive or oci-archive)",
                           _save_setup, cmd_save)


def _load_setup(p):
    p.add_argument("-i", "--input", help="read from FILE instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def cmd_load(ctx, args) -> int:
    from rootless.errors import RootlessError
    from rootless.image.archive import load

    rep = ctx.reporter(quiet=args.quiet)
    if args.input:
        try:
            f = open(args.input, "rb")
        except OSError as e:
            raise RootlessError(f"cannot read {args.input}: {e.strerror}") from None
        with f:
            lines = load(_store(ctx), f, reporter=rep)
    else:
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty (a terminal)",
                             hint="use -i FILE or redirect an archive into stdin")
        lines = load(_store(ctx), sys.stdin.buffer, reporter=rep)
    for line in lines:
        print(line)
    return 0


COMMANDS["load"] = Command("Load images from a tar archive (docker-archive or oci-archive)", _load_setup, cmd_load)


# login / logout ------------------------------------------------------------

def _login_setup(p):
    p.add_argument("server", nargs="?", default="docker.io")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _add_tls(p)


def cmd_login(ctx, args) -> int:
    import getpass

    from rootless.image import auth
    from rootless.image.registry import RegistryClient

    server = _server(args.server)
    user = args.username
    password = args.password
    if args.password_stdin:
        if password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\n")
        if not user:
            raise UsageError("--password-stdin needs --username")
    if not user:
        if not sys.stdin.isatty():
            raise UsageError("no username given and stdin is not a terminal", hint="use -u USER and --password-stdin")
        user = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("no password given and stdin is not a terminal", hint="use --password-stdin")
        password = getpass.getpass("Password: ")
    if args.password:
        ctx.warn("using --password on the command line is insecure: use --password-stdin")
    client = RegistryClient(server, ctx.config, tls_verify=_tls(args), creds=(user, password))
    client.login_check()
    auth.store(ctx.config, server, user, password)
    print("Login Succeeded!")
    return 0


def _server(s: str) -> str:
    for pre in ("https://", "http://"):
        if s.startswith(pre):
            s = s[len(pre):]
    s = s.rstrip("/")
    if s.endswith("/v1") or s.endswith("/v2"):
        s = s[:-3]
    from rootless.image.auth import auth_key

    return auth_key(s)


COMMANDS["login"] = Command("Log in to a registry (credentials in ~/.config/rootless/auth.json)", _login_setup,
                            cmd_login)


def _logout_setup(p):
    p.add_argument("server", nargs="?", default="docker.io")
    p.add_argument("-a", "--all", action="store_true", help="remove the credentials of every registry")


def cmd_logout(ctx, args) -> int:
    from rootless.errors import RootlessError
    from rootless.image import auth

    if args.all:
        auth.remove(ctx.config, None)
        print("Removed login credentials for all registries")
        return 0
    server = _server(args.server)
    if not auth.remove(ctx.config, server):
        raise RootlessError(f"not logged in to {server}")
    print(f"Removed login credentials for {server}")
    return 0


COMMANDS["logout"] = Command("Log out from a registry", _logout_setup, cmd_logout)


# `rootless image build` is `rootless build` (owned by rootless.cli.build) -----

def _build_cmd():
    from rootless.cli.main import _load

    return _load("build").COMMANDS["build"]


COMMANDS["build"] = Command("Build an image from a Dockerfile (same as `rootless build`)",
                            lambda p: _build_cmd().setup(p), lambda ctx, args: _build_cmd().handler(ctx, args))

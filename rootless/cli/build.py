"""``rootless build``: build an image from a Dockerfile (Docker's and Podman's flags)."""

from __future__ import annotations

import os
import sys

from rootless.cli.base import Command
from rootless.errors import UsageError

COMMANDS: dict[str, Command] = {}

USAGE = "rootless build [OPTIONS] CONTEXT"


def _setup(p):
    p.add_argument("context", metavar="CONTEXT", help="the build context: a directory, or - (stdin: a tar of "
                                                      "the context, possibly compressed, or a Dockerfile alone)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]", help="name the image (repeatable)")
    p.add_argument("-f", "--file", metavar="FILE", help="the Dockerfile (default CONTEXT/Dockerfile or "
                                                        "CONTEXT/Containerfile; - reads stdin)")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V",
                   help="set a build argument (K alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build this stage (and what it needs) only")
    p.add_argument("--platform", action="append", default=[], metavar="P[,P2...]",
                   help="target platform(s), e.g. linux/arm64; several make a manifest list")
    p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    p.add_optional_value("--pull", const="always", default="missing", metavar="POLICY",
                         help="pull base images: --pull=always|missing|never|newer (a bare --pull: always)")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="set a label on the image")
    p.add_argument("--network", default="", metavar="MODE", help="network of RUN steps: default, none, host")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID (or manifest list digest) to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("-o", "--output", action="append", default=[], metavar="type=TYPE,dest=FILE",
                   help="also write the image to a file: type=docker-archive or oci-archive")


def parse_build_args(items: list[str], env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    out = []
    for a in items:
        k, eq, v = a.partition("=")
        if not k:
            raise UsageError(f"invalid --build-arg {a!r}", hint="use --build-arg NAME=VALUE")
        if eq:
            out.append((k, v))
        elif k in env:
            out.append((k, env[k]))
    return tuple(out)


def parse_labels(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for a in items:
        k, _, v = a.partition("=")
        if not k:
            raise UsageError(f"invalid --label {a!r}", hint="use --label KEY=VALUE")
        out.append((k, v))
    return tuple(out)


def parse_platforms(items: list[str]):
    from archsupport.platform import parse

    out = []
    for item in items:
        for p in item.split(","):
            p = p.strip()
            if not p:
                continue
            plat = parse(p)
            if plat not in out:
                out.append(plat)
    return tuple(out)


def parse_pull(v: str) -> str:
    low = v.lower()
    if low in ("true", "always"):
        return "always"
    if low in ("false", "missing", "ifmissing"):
        return "missing"
    if low in ("never", "newer"):
        return low
    raise UsageError(f"invalid --pull value {v!r}", hint="use always, missing, never or newer")


def parse_output(spec: str) -> tuple[str, str]:
    kv = {}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        if not eq:
            if len(spec.split(",")) == 1 and k and k != "-":
                raise UsageError(f"invalid --output {spec!r}",
                                 hint="use --output type=docker-archive,dest=FILE (or type=oci-archive)")
            raise UsageError(f"invalid --output {spec!r}: {part!r} is not KEY=VALUE")
        kv[k.strip().lower()] = v
    typ = kv.pop("type", "")
    dest = kv.pop("dest", "")
    typ = {"docker": "docker-archive", "oci": "oci-archive", "tar": "oci-archive"}.get(typ, typ)
    if typ not in ("docker-archive", "oci-archive"):
        raise UsageError(f"unsupported --output type {typ!r}", hint="use type=docker-archive or type=oci-archive")
    if not dest:
        raise UsageError(f"--output {spec!r}: dest=FILE is required")
    if kv:
        raise UsageError(f"--output {spec!r}: unknown key {next(iter(kv))!r}")
    return typ, dest


def _network(v: str) -> str:
    if v in ("", "default", "bridge", "pasta", "slirp4netns", "private"):
        return ""
    if v in ("none", "host"):
        return v
    raise UsageError(f"unsupported --network {v!r} for build", hint="use default, none or host")


def _read_stdin(args, ctx, store):
    """``build -``: (text, name, path, context dir or None, staging to remove or None).

    A (compressed) tar on stdin is the context, extracted into a private staging directory of the
    store; anything else is the Dockerfile, and there is no context (Docker)."""
    from rootless.build import stdincontext as sc

    stream = sys.stdin.buffer
    if args.file == "-":
        return stream.read(), "Dockerfile", None, None, None     # -f - -: a Dockerfile, whatever it looks like
    head = sc.read_head(stream)
    kind = sc.sniff(head)
    if kind is None:
        if args.file:
            raise UsageError("with CONTEXT '-' and a Dockerfile on stdin there is no context: do not give -f",
                             hint="to send a context, send a tar of it: tar -c . | rootless build -f FILE -")
        return head + stream.read(), "Dockerfile", None, None, None
    from rootless.image.locks import Staging

    store.ensure_dirs()
    staging = Staging(store.root / "tmp")
    try:
        context = staging.path / "context"
        context.mkdir(mode=0o700)
        sc.extract_context(stream, head, kind, context, ctx.warn)
        text, name, path = sc.read_dockerfile(context, args.file)
    except BaseException:
        _drop_staging(store, staging)
        raise
    return text, name, path, context, staging


def _drop_staging(store, staging) -> None:
    staging.close()
    store.remove_trees([staging.path])      # in the user namespace: read-only directories of the tar too


def _read_dockerfile(args, ctx) -> tuple[bytes, str, object, object]:
    """(text, name for errors, path or None, context dir)."""
    from pathlib import Path

    context = Path(args.context).absolute()
    if not context.is_dir():
        raise UsageError(f"unable to prepare context: path {args.context!r} not found or not a directory",
                         hint="give the build context directory, e.g. rootless build -t app .")
    if args.file == "-":
        return sys.stdin.buffer.read(), "Dockerfile", None, context
    if args.file:
        path = Path(args.file)
        if not path.is_absolute():
            path = Path.cwd() / path
    else:
        path = context / "Dockerfile"
        if not path.exists() and (context / "Containerfile").exists():
            path = context / "Containerfile"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"cannot read the Dockerfile {path}: no such file",
                         hint="name it with -f FILE, or put a Dockerfile in the context") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read the Dockerfile {path}: it is a directory") from None
    except OSError as e:
        raise UsageError(f"cannot read the Dockerfile {path}: {e.strerror}") from None
    try:
        shown = os.path.relpath(path) if not os.path.relpath(path).startswith("../..") else str(path)
    except ValueError:
        shown = str(path)
    return data, shown, path, context


def cmd_build(ctx, args) -> int:
    import tempfile
    from pathlib import Path

    from rootless.build.builder import Builder, BuildOptions
    from rootless.image.store import Store

    outputs = [parse_output(o) for o in args.output]
    if len(parse_platforms(args.platform)) > 1 and any(t == "docker-archive" for t, _ in outputs):
        raise UsageError("a docker-archive holds one image per platform, not a manifest list",
                         hint="use --output type=oci-archive,dest=FILE for a multi-platform build")
    from rootless.image.reference import parse as parse_ref

    for t in args.tag:
        parse_ref(t)
    store = Store(ctx.config)
    staging = None
    if args.context == "-":
        text, name, path, context, staging = _read_stdin(args, ctx, store)
    else:
        text, name, path, context = _read_dockerfile(args, ctx)
    tmp_ctx = None
    has_context = context is not None
    if context is None:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="rootless-build-")
        context = Path(tmp_ctx.name)
    try:
        opts = BuildOptions(context=context, dockerfile_text=text, dockerfile_name=name, dockerfile_path=path,
                            tags=tuple(args.tag), build_args=parse_build_args(args.build_arg, ctx.env),
                            target=args.target or "", platforms=parse_platforms(args.platform),
                            no_cache=args.no_cache, pull=parse_pull(args.pull), labels=parse_labels(args.label),
                            network=_network(args.network), quiet=args.quiet, has_context=has_context)
        reporter = ctx.reporter(quiet=args.quiet)
        try:
            builder = Builder(store, reporter, output=None if args.quiet else 2)
            result = builder.build(opts)
        finally:
            reporter.done()
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
        if staging is not None:
            _drop_staging(store, staging)
    for typ, dest in outputs:
        _write_output(store, result, typ, dest, reporter)
    if not args.quiet:
        for t in result.tags:
            reporter.info(f"Successfully tagged {t}")
    if args.iidfile:
        from rootless.image.locks import atomic_write

        atomic_write(Path(args.iidfile).absolute(), result.image_id.encode())
    print(result.image_id)
    return 0


def _write_output(store, result, typ: str, dest: str, reporter) -> None:
    from pathlib import Path

    out = Path(dest).absolute()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if len(result.images) > 1:
                if typ == "docker-archive":
                    raise UsageError("a docker-archive holds one image per platform, not a manifest list",
                                     hint="use --output type=oci-archive,dest=FILE for a multi-platform build")
                from rootless.build.output import write_oci_index_archive

                write_oci_index_archive(store, result, f)
            else:
                from rootless.image.archive import save

                names = list(result.tags[:1]) or [result.images[0].image_id]
                save(store, names, f, typ, platform=result.images[0].platform, reporter=reporter)
        os.rename(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    reporter.info(f"Wrote {typ} {out}")


COMMANDS["build"] = Command("Build an image from a Dockerfile", _setup, cmd_build, usage=USAGE)

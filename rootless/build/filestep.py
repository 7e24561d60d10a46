"""COPY, ADD and WORKDIR steps, run as root of the build's user namespace.

``run_file_job`` (in the namespace child) mounts a kernel overlay of the
stage's layers with a fresh upper dir, mounts the source of a COPY --from
(another stage's or an image's layers, read-only), does the file work of
``rootless.build.fscopy`` in the merged view (owners are container ids
here), unmounts, and turns the upper dir into a layer of the store
(``snapshot``).  ``download`` fetches ADD's URLs in the parent.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rootless.build import plan as P
from rootless.build.fscopy import (ContextFS, CopyError, CopyOptions, SourceFS, chmod_value, contains_wildcards,
                                   copy_one, mkdir_all, parse_chmod, parse_chown, prepare_dest, resolve_owner,
                                   resolve_sources, write_content)
from rootless.errors import BuildError


@dataclass(frozen=True)
class Download:
    url: str
    path: str          # the file on the host (store tmp)
    name: str          # the file name it gets in the image
    digest: str
    mtime: float = 0.0


@dataclass(frozen=True)
class Source:
    kind: str                                   # "context" | "layers"
    root: str = ""
    entries: dict = field(default_factory=dict)  # context: rel path -> stat (after .dockerignore)
    lowers: tuple[str, ...] = ()                 # layers: lowest first
    label: str = ""
    downloads: dict = field(default_factory=dict)  # url -> Download
    unreadable: tuple[str, ...] = ()             # context: directories that could not be read


@dataclass(frozen=True)
class FileJob:
    lowers: tuple[str, ...]
    layers_dir: str
    step: P.Step
    source: Source | None
    store_root: str


def overlay_data(lowers, upper: str | None, work: str | None, layers_dir: str) -> str:
    """Mount data (lowest layer first in ``lowers``); store paths relative to ``layers_dir``."""
    def rel(p: str) -> str:
        return os.path.relpath(p, layers_dir) if p.startswith(layers_dir + "/") else p

    for p in list(lowers) + [upper or "", work or ""]:
        if any(c in p for c in ",:\\"):
            raise BuildError(f"store path {p!r} contains ',' ':' or '\\', which overlay mounts cannot express",
                             hint="move the store (ROOTLESS_ROOT) to a plain path")
    data = "lowerdir=" + ":".join(rel(x) for x in reversed(list(lowers)))
    if upper is not None:
        data += f",upperdir={upper},workdir={work}"
    data += ",userxattr"
    if len(data) > 4000:
        raise BuildError(f"too many layers ({len(lowers)}) for one overlay mount",
                         hint="combine RUN steps (fewer layers) or squash the base image")
    return data


def mount_layers(lowers, target: str, layers_dir: str, empty: str, upper: str | None = None,
                 work: str | None = None) -> None:
    from rootless import syscalls as sc

    lows = list(lowers)
    if upper is None and len(lows) == 1:
        sc.mount(lows[0], target, None, sc.MS_BIND | sc.MS_REC)
        return
    if not lows or (upper is None and len(lows) < 2):
        lows = [empty] + lows
        if upper is None and len(lows) < 2:
            lows.append(empty)
    cwd = os.getcwd()
    try:
        os.chdir(layers_dir)
        sc.mount("overlay", target, "overlay", 0, overlay_data(lows, upper, work, layers_dir))
    except OSError as e:
        raise BuildError(f"cannot mount the build's overlay: {os.strerror(e.errno or 0)}",
                         hint="kernel overlayfs in a user namespace needs Linux >= 5.11 (run `rootless doctor`)"
                         ) from None
    finally:
        os.chdir(cwd)


def _umount(path: str) -> None:
    from rootless import syscalls as sc

    try:
        sc.umount2(path, sc.MNT_DETACH)
    except OSError:
        pass


def run_file_job(store, job: FileJob, staging: str, *, pins):
    """In the user namespace: do the step on a fresh upper dir; return its LayerInfo (its blob and
    layer pinned in ``pins``, see ``snapshot_into_store``)."""
    import signal

    from rootless import syscalls as sc
    from rootless.build.snapshot import snapshot_into_store

    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    st = Path(staging)
    upper, work, mnt, srcmnt, empty = (st / n for n in ("upper", "work", "mnt", "src", "empty"))
    for d in (upper, work, mnt, srcmnt, empty):
        d.mkdir(mode=0o755)
    os.chmod(upper, 0o755)
    mount_layers(job.lowers, str(mnt), job.layers_dir, str(empty), str(upper), str(work))
    try:
        step = job.step
        if isinstance(step, P.WorkdirStep):
            owner = resolve_owner(step.user, mnt)
            mkdir_all(mnt, step.path, CopyOptions(owner=owner))
        elif isinstance(step, P.CopyStep):
            _copy(job, step, mnt, srcmnt, job.layers_dir, str(empty))
        else:  # pragma: no cover
            raise BuildError(f"not a file step: {step!r}")
    finally:
        _umount(str(srcmnt))
        _umount(str(mnt))
    return snapshot_into_store(store, str(upper), staging, pins)


def _copy(job: FileJob, step: P.CopyStep, mnt: Path, srcmnt: Path, layers_dir: str, empty: str) -> None:
    src = job.source
    assert src is not None
    if src.kind == "context":
        fs: SourceFS = ContextFS(Path(src.root), list(src.entries.items()), unreadable=src.unreadable)
    else:
        mount_layers(src.lowers, str(srcmnt), layers_dir, empty)
        fs = SourceFS(srcmnt, src.label)
    owner = parse_chown(step.chown, mnt) if step.chown else None
    mode = parse_chmod(step.chmod) if step.chmod else None
    exclude = None
    if step.exclude:
        from rootless.build.dockerignore import PatternMatcher

        exclude = PatternMatcher(list(step.exclude))
    unpack = step.is_add and step.unpack is not False
    opt = CopyOptions(owner=owner, reset_owner=src.kind == "context", mode=mode, exclude=exclude, unpack=unpack)
    local = [s for s in step.sources if not s.startswith(("http://", "https://"))]
    urls = [s for s in step.sources if s.startswith(("http://", "https://"))]
    rels, _empty = resolve_sources(fs, local)
    items = len(rels) + len(urls) + len(step.contents)
    if items > 1 and not step.dest.endswith("/") and any(contains_wildcards(s) for s in local):
        target = mnt / prepare_dest(mnt, step.dest, CopyOptions(owner=owner))
        if not target.is_dir() or target.is_symlink():
            raise CopyError(f"when using {'ADD' if step.is_add else 'COPY'} with more than one source file, the "
                            f"destination must be a directory and end with a /")
    if step.parents:
        import posixpath

        for s in local:
            pivot = ""
            if "/./" in s:
                pivot = posixpath.normpath("/" + s.split("/./", 1)[0]).lstrip("/")
            found, _ = resolve_sources(fs, [s])
            for rel in found:
                keep = posixpath.relpath(rel, pivot) if pivot else rel
                parent = posixpath.dirname(keep)
                base = step.dest.rstrip("/") + "/" + (parent + "/" if parent else "")
                d = prepare_dest(mnt, base, opt)
                copy_one(fs, rel, mnt, d, opt)
    else:
        d = prepare_dest(mnt, step.dest, opt)
        for rel in rels:
            copy_one(fs, rel, mnt, d, opt)
    for url in urls:
        dl: Download = src.downloads[url]
        uopt = CopyOptions(owner=owner, reset_owner=True, mode=chmod_value(mode, stat.S_IFREG | 0o600))
        d = prepare_dest(mnt, step.dest, uopt)
        target = mnt / d if d else mnt
        if step.dest.endswith("/") or (target.is_dir() and not target.is_symlink()):
            d = f"{d}/{dl.name}" if d else dl.name
        import shutil

        dst = mnt / d
        if dst.is_dir() and not dst.is_symlink():
            raise CopyError(f"cannot replace directory /{d} with the download of {url}")
        if os.path.lexists(dst):
            os.unlink(dst)
        shutil.copyfile(Path(dl.path), dst)
        os.chmod(dst, uopt.mode)
        os.lchown(dst, *((owner.uid, owner.gid) if owner else (0, 0)))
        if dl.mtime:
            os.utime(dst, (dl.mtime, dl.mtime))
    for c in step.contents:
        write_content(mnt, step.dest, c.path, c.data, CopyOptions(owner=owner, mode=mode))


# ---------------------------------------------------------------------------
# ADD https://...

def download(url: str, tmp_root: Path, checksum: str, reporter) -> Download:
    """Fetch ``url`` into a private file under ``tmp_root`` (in the parent process)."""
    import email.utils
    import secrets
    import urllib.error
    import urllib.parse
    import urllib.request

    name = os.path.basename(urllib.parse.urlparse(url).path) or "__unnamed__"
    if name in (".", ".."):
        name = "__unnamed__"
    tmp_root.mkdir(parents=True, exist_ok=True)
    d = tmp_root / f"add-{os.getpid()}-{secrets.token_hex(6)}"
    d.mkdir(mode=0o700)
    path = d / name
    reporter.info(f"Downloading {url}")
    h = hashlib.sha256()
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "rootless-build"})
        with urllib.request.urlopen(req, timeout=60) as resp, open(path, "wb") as f:
            lm = resp.headers.get("Last-Modified")
            while True:
                b = resp.read(1 << 20)
                if not b:
                    break
                h.update(b)
                f.write(b)
    except urllib.error.HTTPError as e:
        raise BuildError(f"ADD {url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BuildError(f"ADD {url}: cannot download: {reason}",
                         hint="check the URL and the network (proxies: --build-arg HTTPS_PROXY=...)") from None
    digest = "sha256:" + h.hexdigest()
    if checksum and checksum != digest:
        raise BuildError(f"ADD {url}: checksum mismatch: expected {checksum}, got {digest}")
    mtime = 0.0
    if lm:
        try:
            mtime = email.utils.parsedate_to_datetime(lm).timestamp()
        except (TypeError, ValueError):
            mtime = 0.0
    return Download(url, str(path), name, digest, mtime)

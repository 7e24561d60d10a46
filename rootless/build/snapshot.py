"""An overlay upper directory -> an OCI layer (tar+gzip) and a store layer.

Runs as root of the build's user namespace (default mapping), so every
owner read with ``lstat`` is already the container's id, and every file is
readable whatever its mode.

* entries are written in sorted order, PAX format, owners as numbers
  (no user/group names), times kept;
* an overlay whiteout (a 0/0 character device ``NAME``) becomes the OCI
  whiteout ``.wh.NAME``; a directory with ``user.overlay.opaque=y`` gets a
  ``.wh..wh..opq`` entry (its lower content is hidden);
* hard links inside the layer stay hard links;
* xattrs: ``security.capability`` and ``user.*`` (never ``user.overlay.*``);
* the tar is hashed (diff_id) while it is gzipped, and the gzip stream
  hashed (blob digest) while it is written: one pass.

The upper directory itself then becomes the layer's ``diff`` directory in
the store (it already has the overlay form the store wants: whiteouts as
0/0 devices, opaque xattrs), after the overlay bookkeeping xattrs
(``user.overlay.origin``, ``impure``, ...) are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
_KEEP_OVERLAY_XATTRS = (OPAQUE_XATTR,)


@dataclass(frozen=True)
class LayerInfo:
    diff_id: str          # sha256 of the uncompressed tar
    digest: str           # sha256 of the gzip blob
    size: int             # blob size
    usize: int            # tar size
    empty: bool           # the upper dir had no change at all


class _GzipSink:
    """File-like: hash the tar, gzip it, hash and write the gzip bytes."""

    def __init__(self, out, level: int):
        self.out = out
        self.z = zlib.compressobj(level, zlib.DEFLATED, 31)
        self.th = hashlib.sha256()
        self.gh = hashlib.sha256()
        self.tsize = 0
        self.gsize = 0

    def _emit(self, b: bytes) -> None:
        if b:
            self.gh.update(b)
            self.gsize += len(b)
            self.out.write(b)

    def write(self, b) -> int:
        b = bytes(b)
        self.th.update(b)
        self.tsize += len(b)
        self._emit(self.z.compress(b))
        return len(b)

    def close(self) -> None:
        self._emit(self.z.flush())

    def tell(self) -> int:
        return self.tsize


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        if n.startswith("user.overlay.") or not (n.startswith("user.") or n == "security.capability"):
            continue
        try:
            v = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
        out["SCHILY.xattr." + n] = v.decode("utf-8", "surrogateescape")
    return out


def _is_opaque(path: str) -> bool:
    from rootless.storage import is_opaque

    return is_opaque(path)


def _info(name: str, st: os.stat_result, type_: bytes, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = size
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid = st.st_uid
    ti.gid = st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    return ti


def write_layer_tar(upper: str, out, level: int = 6) -> LayerInfo:
    """Write the tar+gzip of ``upper`` to the binary stream ``out``."""
    sink = _GzipSink(out, level)
    tf = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT)
    seen: dict[tuple[int, int], str] = {}
    count = 0

    def walk(rel: str) -> None:
        nonlocal count
        base = os.path.join(upper, rel) if rel else upper
        for name in sorted(os.listdir(base)):
            full = os.path.join(base, name)
            arc = f"{rel}/{name}" if rel else name
            st = os.lstat(full)
            m = st.st_mode
            count += 1
            if stat.S_ISCHR(m) and st.st_rdev == 0:
                wh = f"{rel}/{WH_PREFIX}{name}" if rel else WH_PREFIX + name
                ti = _info(wh, st, tarfile.REGTYPE)
                ti.mode, ti.uid, ti.gid = 0, 0, 0
                tf.addfile(ti)
            elif stat.S_ISDIR(m):
                ti = _info(arc, st, tarfile.DIRTYPE)
                ti.pax_headers = _xattrs(full)
                tf.addfile(ti)
                if _is_opaque(full):
                    op = _info(f"{arc}/{WH_OPAQUE}", st, tarfile.REGTYPE)
                    op.mode, op.uid, op.gid = 0, 0, 0
                    tf.addfile(op)
                walk(arc)
            elif stat.S_ISREG(m):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    ti = _info(arc, st, tarfile.LNKTYPE)
                    ti.linkname = seen[key]
                    tf.addfile(ti)
                    continue
                seen[key] = arc
                ti = _info(arc, st, tarfile.REGTYPE, st.st_size)
                ti.pax_headers = _xattrs(full)
                with open(full, "rb") as f:
                    tf.addfile(ti, f)
            elif stat.S_ISLNK(m):
                ti = _info(arc, st, tarfile.SYMTYPE)
                ti.linkname = os.readlink(full)
                tf.addfile(ti)
            elif stat.S_ISFIFO(m):
                tf.addfile(_info(arc, st, tarfile.FIFOTYPE))
            elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
                ti = _info(arc, st, tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE)
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tf.addfile(ti)
            # sockets are not part of images

    walk("")
    tf.close()
    sink.close()
    return LayerInfo(diff_id="sha256:" + sink.th.hexdigest(), digest="sha256:" + sink.gh.hexdigest(),
                     size=sink.gsize, usize=sink.tsize, empty=count == 0)


def strip_overlay_xattrs(upper: str) -> None:
    """Remove overlay's bookkeeping xattrs (origin, impure, nlink...) but keep opaque markers."""
    for dirpath, dirnames, filenames in os.walk(upper):
        for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
            if os.path.islink(n):
                continue
            try:
                names = os.listxattr(n, follow_symlinks=False)
            except OSError:
                continue
            for x in names:
                if x.startswith("user.overlay.") and x not in _KEEP_OVERLAY_XATTRS:
                    try:
                        os.removexattr(n, x, follow_symlinks=False)
                    except OSError:
                        pass


def snapshot_into_store(store, upper: str, staging: str, pins, level: int = 6) -> LayerInfo:
    """(in the user namespace) tar+gzip ``upper`` into a blob and make ``upper`` the layer's diff dir.

    The blob and the layer appear atomically (link / rename after
    layer.json is written); an identical layer already in the store is
    kept and ``upper`` is removed. Both names are pinned in ``pins``
    (``Store.reserve_*``) BEFORE either is looked at or made visible: GC
    (rmi, image prune) keeps them while the pins are held, and the builder
    gets them from its namespace child (``run_in_userns(..., pins=)``).
    """
    from rootless.image.locks import FileLock
    from rootless.image.oci import digest_hex

    store.ensure_dirs()
    tmp_blob = Path(staging) / f"blob-{os.getpid()}-{time.monotonic_ns()}"
    with open(tmp_blob, "wb") as f:
        info = write_layer_tar(upper, f, level)
        f.flush()
    if info.empty:
        os.unlink(tmp_blob)
        return info
    store.reserve_blob(pins, info.digest)
    store.reserve_layer(pins, info.diff_id)
    store.commit_file(tmp_blob, store.blob_path(info.digest))
    with FileLock(store.lock_path("layer", info.diff_id)):
        if store.has_layer(info.diff_id):
            import shutil

            shutil.rmtree(upper, ignore_errors=True)
            return info
        strip_overlay_xattrs(upper)
        work = Path(staging) / f"layer-{digest_hex(info.diff_id)}"
        work.mkdir()
        os.rename(upper, work / "diff")
        with open(work / "layer.json", "w") as f:
            json.dump({"diff_id": info.diff_id, "size": info.usize, "blob": info.digest, "created": time.time(),
                       "built": True}, f)
        final = store.layer_path(info.diff_id)
        if final.exists():
            import shutil

            shutil.rmtree(final, ignore_errors=True)   # a leftover without layer.json
        os.rename(work, final)
    return info

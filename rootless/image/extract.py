"""Safe layer extraction, run as root of the user namespace (default mapping).

Python 3.11's tarfile has no extraction filters, so this is our own loop
over the members of a streamed tar:

* names are split into components; an absolute name or a ``..`` component is
  refused with a LayerError naming the entry;
* every parent directory is opened with ``O_NOFOLLOW|O_DIRECTORY`` relative to
  the previous one (``dir_fd``), starting at the layer's own directory, so no
  path ever goes through a symlink, whatever the layer contains;
* hardlink targets are resolved the same way, inside the layer only;
* files are created with ``O_EXCL|O_NOFOLLOW``; symlinks are created, never
  followed;
* OCI whiteouts become overlay whiteouts: ``.wh.NAME`` -> a 0/0 character
  device ``NAME``; ``.wh..wh..opq`` -> xattr ``user.overlay.opaque=y``;
* other device nodes are skipped with a warning; xattrs: ``user.*`` (never
  ``user.overlay.*``) and ``security.capability``, where the kernel allows;
* ownership is kept (chown inside the namespace: image uid 1000 = container
  uid 1000); ids outside the mapping, or every id when the user has no
  subordinate range, become 0 with one warning.
"""

from __future__ import annotations

import os
import stat
import tarfile

from rootless.errors import ImageError, LayerError

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"
_CACHE_MAX = 256


def split_name(name: str, what: str = "entry") -> list[str]:
    """Components of a tar member name; refuses absolute names and ``..``."""
    if name.startswith("/"):
        raise LayerError(f"hostile layer: {what} {name!r} has an absolute path",
                         hint="the image is broken or malicious; nothing of this layer was kept")
    parts = []
    for c in name.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            raise LayerError(f"hostile layer: {what} {name!r} climbs out of the layer with '..'",
                             hint="the image is broken or malicious; nothing of this layer was kept")
        parts.append(c)
    return parts


def _rmtree_at(pfd: int, name: str) -> None:
    """Remove ``name`` under directory fd ``pfd`` without following symlinks."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=pfd)
        return
    fd = os.open(name, O_DIR, dir_fd=pfd)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for n, is_dir in entries:
            if is_dir:
                _rmtree_at(fd, n)
            else:
                os.unlink(n, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)


class Extractor:
    """Extracts tar members into ``dest`` (an empty directory of ours)."""

    whiteouts = True            # OCI whiteouts become overlay whiteouts (a layer); False: plain files

    def __init__(self, dest: str, *, max_uid: int, max_gid: int, single: bool, warn):
        self.root_fd = os.open(dest, O_DIR)
        self.max_uid = max_uid
        self.max_gid = max_gid
        self.single = single
        self.warn = warn
        self.cache: dict[tuple[str, ...], int] = {}
        self.dirs: list[tuple[tuple[str, ...], int]] = []
        self.skipped_devices: list[str] = []
        self.clamped: list[str] = []
        self.xattr_skipped = 0

    def close(self) -> None:
        self._drop_cache()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _drop_cache(self) -> None:
        for fd in self.cache.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.cache.clear()

    # parents -------------------------------------------------------------
    def _walk(self, dirparts: tuple[str, ...], name: str, create: bool) -> int:
        if not dirparts:
            return self.root_fd
        fd = self.cache.get(dirparts)
        if fd is not None:
            return fd
        if len(self.cache) > _CACHE_MAX:
            self._drop_cache()
        cur = self.root_fd
        for i, c in enumerate(dirparts):
            sub = dirparts[:i + 1]
            f = self.cache.get(sub)
            if f is None:
                try:
                    f = os.open(c, O_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise LayerError(f"broken layer: {name!r} refers to {'/'.join(sub)!r}, which does not exist "
                                         "in the layer") from None
                    os.mkdir(c, 0o755, dir_fd=cur)
                    f = os.open(c, O_DIR, dir_fd=cur)
                except OSError as e:
                    # ELOOP (a symlink) or ENOTDIR (a file): never follow
                    raise LayerError(f"hostile layer: entry {name!r} goes through {'/'.join(sub)!r}, which is not a "
                                     f"directory ({e.strerror.lower() if e.strerror else e})",
                                     hint="the image is broken or malicious; nothing of this layer was kept") from None
                self.cache[sub] = f
            cur = f
        return cur

    def _ids(self, m: tarfile.TarInfo) -> tuple[int, int]:
        uid, gid = m.uid, m.gid
        if self.single:
            if (uid or gid) and not self.clamped:
                self.clamped.append(m.name)
                self.warn("your user has no subordinate ids (/etc/subuid): files owned by other users in the "
                          "image are owned by root in the container")
            return 0, 0
        if uid > self.max_uid or gid > self.max_gid or uid < 0 or gid < 0:
            if not self.clamped:
                self.warn(f"{m.name!r} is owned by {uid}:{gid}, outside your {self.max_uid + 1} subordinate ids: "
                          "such files are owned by root in the container (give your user a larger range in "
                          "/etc/subuid and /etc/subgid)")
            self.clamped.append(m.name)
            return (0 if uid > self.max_uid or uid < 0 else uid), (0 if gid > self.max_gid or gid < 0 else gid)
        return uid, gid

    def _xattrs(self, fd: int, m: tarfile.TarInfo) -> None:
        for k, v in m.pax_headers.items():
            if not k.startswith("SCHILY.xattr."):
                continue
            name = k[len("SCHILY.xattr."):]
            if not (name == "security.capability" or (name.startswith("user.") and not name.startswith("user.overlay."))):
                self.xattr_skipped += 1
                continue
            try:
                os.setxattr(fd, name, v.encode("utf-8", "surrogateescape"))
            except OSError:
                self.xattr_skipped += 1

    def _clear(self, pfd: int, name: str, keep_dir: bool) -> bool:
        """Remove an existing entry ``name``; True when a directory was kept."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._drop_cache()
            _rmtree_at(pfd, name)
        else:
            os.unlink(name, dir_fd=pfd)
        return False

    # members -------------------------------------------------------------
    def member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        try:
            self._member(tf, m)
        except (LayerError, ImageError):
            raise
        except OSError as e:
            raise LayerError(f"cannot extract layer entry {m.name!r}: {e.strerror or e}") from None

    def _member(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = split_name(m.name)
        if not parts:
            return  # the layer's root itself
        base = parts[-1]
        dirparts = tuple(parts[:-1])
        if self.whiteouts and base.startswith(WH_PREFIX):
            pfd = self._walk(dirparts, m.name, create=True)
            if base == WH_OPAQUE:
                os.setxattr(pfd, OPAQUE_XATTR, b"y")
                return
            target = base[len(WH_PREFIX):]
            if target.startswith(WH_PREFIX):
                return  # other AUFS meta files (.wh..wh.plnk ...)
            if target in ("", ".", ".."):
                raise LayerError(f"hostile layer: whiteout {m.name!r} names {target!r}")
            self._clear(pfd, target, keep_dir=False)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0), dir_fd=pfd)
            return
        pfd = self._walk(dirparts, m.name, create=True)
        mtime_ns = int(float(m.mtime) * 1e9) if m.mtime else 0

        if m.isdir():
            if not self._clear(pfd, base, keep_dir=True):
                os.mkdir(base, 0o700, dir_fd=pfd)
            key = dirparts + (base,)
            fd = self._walk(key, m.name, create=False)
            uid, gid = self._ids(m)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, m.mode & 0o7777)
            self._xattrs(fd, m)
            self.dirs.append((key, mtime_ns))
            return

        if m.islnk():
            tparts = split_name(m.linkname, "hardlink target of " + repr(m.name))
            if not tparts:
                raise LayerError(f"hostile layer: hardlink {m.name!r} points at the layer's root")
            tpfd = self._walk(tuple(tparts[:-1]), m.name, create=False)
            try:
                tst = os.stat(tparts[-1], dir_fd=tpfd, follow_symlinks=False)
            except FileNotFoundError:
                raise LayerError(f"broken layer: hardlink {m.name!r} points at {m.linkname!r}, which is not in "
                                 "the layer") from None
            if stat.S_ISDIR(tst.st_mode):
                raise LayerError(f"hostile layer: hardlink {m.name!r} points at a directory")
            if (tpfd, tparts[-1]) == (pfd, base) or (tuple(tparts) == tuple(parts)):
                return
            self._clear(pfd, base, keep_dir=False)
            os.link(tparts[-1], base, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
            return

        self._clear(pfd, base, keep_dir=False)
        uid, gid = self._ids(m)
        if m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=pfd)
            try:
                src = tf.extractfile(m)
                remaining = m.size
                while remaining > 0:
                    b = src.read(min(remaining, 1 << 20))
                    if not b:
                        raise LayerError(f"broken layer: {m.name!r} is truncated")
                    remaining -= len(b)
                    view = memoryview(b)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                os.fchown(fd, uid, gid)
                os.fchmod(fd, m.mode & 0o7777)
                self._xattrs(fd, m)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            os.mknod(base, stat.S_IFCHR | (m.mode & 0o777), os.makedev(0, 0), dir_fd=pfd)
        elif m.ischr() or m.isblk():
            self.skipped_devices.append(m.name)
        elif m.isfifo():
            os.mkfifo(base, m.mode & 0o777, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        else:
            self.warn(f"layer entry {m.name!r} has an unsupported type {m.type!r}: skipped")

    def finish(self) -> None:
        """Directory mtimes last (creating their children changed them)."""
        for key, mtime_ns in reversed(self.dirs):
            try:
                fd = self._walk(key, "/".join(key), create=False)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            except (OSError, LayerError):
                pass
        if self.skipped_devices:
            self.warn(f"skipped {len(self.skipped_devices)} device node(s) in a layer (e.g. "
                      f"{self.skipped_devices[0]!r}): the runtime provides /dev")


def extract_tar(reader, dest: str, *, max_uid: int, max_gid: int, single: bool, warn) -> None:
    """Extract the (uncompressed) tar stream ``reader`` into ``dest``."""
    ex = Extractor(dest, max_uid=max_uid, max_gid=max_gid, single=single, warn=warn)
    try:
        try:
            tf = tarfile.open(fileobj=reader, mode="r|", errorlevel=2)
        except tarfile.ReadError as e:
            if "empty" in str(e):
                return  # an empty layer
            raise LayerError(f"layer is not a valid tar archive: {e}") from None
        try:
            for m in tf:
                ex.member(tf, m)
        except tarfile.TarError as e:
            raise LayerError(f"layer is not a valid tar archive: {e}") from None
        ex.finish()
    finally:
        ex.close()

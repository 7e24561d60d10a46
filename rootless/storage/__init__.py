"""Container root filesystems: the storage drivers.

* ``overlay``: kernel overlayfs mounted inside the container's user
  namespace with ``userxattr`` (Linux >= 5.11). The default.
* ``fuse-overlayfs``: the FUSE implementation; the fallback when the kernel
  refuses, and the only driver that can present the layers with another id
  mapping (``--userns=keep-id``: its ``uidmapping=``/``gidmapping=`` options).
* ``vfs``: a full copy of the layers per container; only when configured
  (``[storage] driver = "vfs"``) or when nothing else works.

With ``driver = "auto"`` the choice is a chain tried at mount time, each step
down with a one-line warning that names the fix: kernel overlay (when the
kernel version allows it) -> fuse-overlayfs (when installed and /dev/fuse is
usable) -> vfs. A kernel >= 5.11 can still refuse a mount (a filesystem
without user xattrs, options longer than a page...), so the version only
decides where the chain starts.

The image layers (lower dirs) are never written: every container gets its own
``upper/`` and ``work/`` directories under ``containers/<id>/``.

Everything here but :func:`remove_tree` and :func:`vfs_materialize` is pure.
"""

from __future__ import annotations

import os

DRIVERS = ("overlay", "fuse-overlayfs", "vfs")


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string ("6.1.0-18-amd64", "5.15.0-rc1+"), or None."""
    parts = release.split("-")[0].split(".")
    try:
        major = int(parts[0])
        digits = ""
        for c in parts[1] if len(parts) > 1 else "0":
            if not c.isdigit():
                break
            digits += c
        return major, int(digits or 0)
    except ValueError:
        return None


def kernel_overlay_ok(release: str | None = None) -> bool:
    """Kernel overlayfs can be mounted in a user namespace from Linux 5.11."""
    v = kernel_version(os.uname().release if release is None else release)
    return v is not None and v >= (5, 11)


def fuse_overlayfs_path(program: str = "") -> str | None:
    """fuse-overlayfs (``program``: the configured ``[storage] mount_program``, else the one
    on PATH) if it is installed and /dev/fuse is usable."""
    from rootless import hosttools

    exe = hosttools.find(program or "fuse-overlayfs")
    if exe and os.access("/dev/fuse", os.R_OK | os.W_OK):
        return exe
    return None


def driver_chain(configured: str, kernel_ok: bool, fuse_ok: bool) -> tuple[str, ...]:
    """The drivers to try, in order (pure). A configured driver is used alone (a configured
    kernel overlay may still give way to fuse-overlayfs); "auto" ends with the copy."""
    if configured == "overlay":
        return ("overlay", "fuse-overlayfs") if fuse_ok else ("overlay",)
    if configured != "auto":
        return (configured,)
    return (("overlay",) if kernel_ok else ()) + (("fuse-overlayfs",) if fuse_ok else ()) + ("vfs",)


def select_driver_name(config) -> str:
    """The driver `run` tries first: the configured one, else the best that should work here."""
    return driver_chain(config.storage_driver, kernel_overlay_ok(),
                        bool(fuse_overlayfs_path(getattr(config, "mount_program", ""))))[0]


FIX_FUSE = "install fuse-overlayfs (apt-get install fuse-overlayfs) and make /dev/fuse usable (mode 0666)"


def fallback_warning(failed: list[tuple[str, str]], used: str) -> str:
    """The one-line warning when ``used`` replaced the drivers in ``failed`` ((driver, reason)
    pairs, in the order tried), naming the fix."""
    names = {"overlay": "kernel overlay", "fuse-overlayfs": "fuse-overlayfs", "vfs": "vfs"}
    why = " and ".join(f"{names.get(d, d)} is not usable ({r})" for d, r in failed)
    if used == "vfs":
        return (f"storage: {why}: copying the image for this container (slow, uses disk space); "
                f"to avoid the copy, {FIX_FUSE}")
    return (f"storage: {why}: using {names.get(used, used)}, which is slower; set [storage] driver = "
            f"\"{used}\" to skip the attempt, or see `rootless doctor` (overlay in a user namespace "
            f"needs Linux >= 5.11)")


def _check_path(p: str) -> str:
    # overlay's option parser splits on ',' and ':' ('\' escapes them); our store
    # paths never contain them, a user-chosen store root might
    if "," in p or ":" in p or "\\" in p:
        from rootless.errors import StoreError

        raise StoreError(f"store path {p!r} contains ',' ':' or '\\', which overlay mounts cannot express",
                         hint="move the store (ROOTLESS_ROOT or [storage] root) to a plain path")
    return p


def overlay_options(lowers: list[str] | tuple[str, ...], upper: str, work: str, *, userxattr: bool = True,
                    readonly: bool = False) -> str:
    """Mount data of a kernel overlay; ``lowers`` LOWEST FIRST (the store's order).

    overlayfs wants the top-most lower first. Relative paths are resolved
    against the caller's working directory (keeps the data under one page).
    """
    if not lowers:
        from rootless.errors import StoreError

        raise StoreError("the image has no layers")
    low = ":".join(_check_path(x) for x in reversed(lowers))
    if readonly:
        # overlay without upper dir needs at least two lowers; the caller
        # uses a bind mount of a single layer instead
        opts = f"lowerdir={low}"
    else:
        opts = f"lowerdir={low},upperdir={_check_path(upper)},workdir={_check_path(work)}"
    if userxattr:
        opts += ",userxattr"
    return opts


def fuse_overlayfs_argv(exe: str, lowers, upper: str, work: str, target: str,
                        uidmapping: str = "", gidmapping: str = "") -> list[str]:
    low = ":".join(_check_path(x) for x in reversed(list(lowers)))
    opts = f"lowerdir={low},upperdir={_check_path(upper)},workdir={_check_path(work)}"
    if uidmapping:
        opts += f",uidmapping={uidmapping},gidmapping={gidmapping}"
    return [exe, "-o", opts, target]


def keep_id_fuse_mapping(me: int, total: int) -> str:
    """fuse-overlayfs ``uidmapping`` for ``--userns=keep-id``.

    The layers store ids in the default mapping (store id 0 = the user, 1..N
    = the subordinate range). In a keep-id namespace the user is ``me`` and
    the subordinate ids are container ids 0..me-1, me+1..; fuse-overlayfs
    runs there and must present each file with its store id again. Each
    triple is ``underlying:presented:count`` (as fuse-overlayfs reads it).
    """
    parts = [f"{me}:0:1"]
    if me > 0:
        parts.append(f"0:1:{me}")
    rest = total - me - 1
    if rest > 0:
        parts.append(f"{me + 1}:{me + 1}:{rest}")
    return ":".join(parts)


def remove_tree(path, mapping=None) -> None:
    """Remove a directory whose files may belong to subordinate ids.

    Tries as the user first (a container that wrote nothing as another id is
    removed without a user namespace), then inside the user namespace.
    """
    p = os.fspath(path)
    if not os.path.lexists(p):
        return
    try:
        _rmtree_fast(p)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    if not os.path.lexists(p):
        return
    from rootless.userns import run_in_userns

    run_in_userns(_rmtree_as_root, p, mapping=mapping)


def _rmtree_fast(p: str) -> None:
    """rmtree without shutil (its import costs ~2 ms on `run --rm`); overlay's
    work/work is mode 000, so a directory that cannot be read is opened up."""
    import stat as st

    try:
        entries = list(os.scandir(p))
    except PermissionError:
        os.chmod(p, 0o700)
        entries = list(os.scandir(p))
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            _rmtree_fast(e.path)
        else:
            os.unlink(e.path)
    try:
        os.rmdir(p)
    except PermissionError:
        if not st.S_ISDIR(os.lstat(p).st_mode):
            raise
        os.chmod(os.path.dirname(p), 0o700)
        os.rmdir(p)


def _rmtree_as_root(p: str) -> None:
    import shutil

    def onerror(fn, name, exc):
        try:
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
        except OSError:
            pass
        if fn is os.rmdir or fn is os.unlink:
            try:
                fn(name)
                return
            except OSError:
                pass

    shutil.rmtree(p, onerror=onerror)
    if os.path.lexists(p):
        shutil.rmtree(p)


OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")


def is_opaque(path: str) -> bool:
    """Is the directory ``path`` an overlay opaque directory (it hides what the
    layers below put there)? ``user.`` (rootless overlay, userxattr) or
    ``trusted.`` (an overlay made by root) ``overlay.opaque=y``."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def vfs_materialize(lowers, dest: str) -> None:
    """Copy the layers (lowest first) into ``dest``, applying overlay whiteouts.

    Runs as root of the user namespace (ownership, modes and xattrs kept).
    A 0/0 character device is a whiteout; ``user.overlay.opaque=y`` (or
    ``trusted.overlay.opaque``) on a directory hides what lower layers put
    there.
    """
    import shutil
    import stat as st

    def remove(p: str) -> None:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)

    os.makedirs(dest, exist_ok=True)
    for layer in lowers:
        layer = os.fspath(layer)
        for dirpath, dirnames, filenames in os.walk(layer):
            rel = os.path.relpath(dirpath, layer)
            out_dir = dest if rel == "." else os.path.join(dest, rel)
            for name in dirnames + filenames:
                src = os.path.join(dirpath, name)
                dst = os.path.join(out_dir, name)
                s = os.lstat(src)
                if st.S_ISCHR(s.st_mode) and s.st_rdev == 0:
                    remove(dst)
                    continue
                if st.S_ISDIR(s.st_mode):
                    if os.path.lexists(dst) and (not os.path.isdir(dst) or os.path.islink(dst) or is_opaque(src)):
                        remove(dst)
                    if not os.path.lexists(dst):
                        os.mkdir(dst)
                    os.chown(dst, s.st_uid, s.st_gid, follow_symlinks=False)
                    os.chmod(dst, st.S_IMODE(s.st_mode))
                    continue
                remove(dst)
                if st.S_ISLNK(s.st_mode):
                    os.symlink(os.readlink(src), dst)
                elif st.S_ISREG(s.st_mode):
                    shutil.copyfile(src, dst, follow_symlinks=False)
                    os.chmod(dst, st.S_IMODE(s.st_mode))
                else:
                    os.mknod(dst, s.st_mode, s.st_rdev)
                os.chown(dst, s.st_uid, s.st_gid, follow_symlinks=False)
        # directory times are not important for a container root

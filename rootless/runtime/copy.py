"""`cp`: files between a container and the host, as a tar stream over a pipe.

The container side runs as root of the container's user namespace with the
container's root as "/": in all the namespaces of a running container (joined
by setns, as for ``exec``), or with the root filesystem mounted in a fresh
user+mount namespace for a stopped one. Symlinks inside the container
therefore resolve inside it. The host side extracts refusing any path that
would land outside the destination (a hostile container may send any tar). Modes (and times) are kept; files
copied into the container belong to its root unless ``-a``.
"""

from __future__ import annotations

import os
import threading

from rootless.errors import ContainerError, RootlessError


class CopyError(ContainerError):
    exit_code = 1


def _within(path: str, base: str) -> bool:
    return os.path.commonpath([path, base]) == base


def _parts(name: str) -> list[str]:
    return [p for p in name.split("/") if p not in ("", ".")]


def safe_extract(fileobj, dest_dir: str, *, rename_top: str | None = None, owner: tuple[int, int] | None = None,
                 keep_owner: bool = False) -> None:
    """Extract a tar stream below ``dest_dir`` without ever leaving it.

    Directories get their modes and times at the end (a read-only one must be filled
    first), through an fd and only if the path still names the directory made for the
    entry: a later entry may have replaced it by a symlink to anywhere."""
    import tarfile

    base = os.path.realpath(dest_dir)
    dirs = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tf:
        for m in tf:
            parts = _parts(m.name)
            if ".." in parts:
                raise CopyError(f"refusing to extract {m.name!r}: '..' in the path")
            if not parts:
                if m.isdir():
                    dirs.append((base, m, _dir_id(base)))
                continue
            if rename_top:
                parts[0] = rename_top
            target = os.path.join(base, *parts)
            parent = os.path.realpath(os.path.dirname(target))
            if not _within(parent, base):
                raise CopyError(f"refusing to extract {m.name!r}: it would land outside {dest_dir}")
            if os.path.lexists(target) and not (m.isdir() and os.path.isdir(target)
                                                 and not os.path.islink(target)):
                if os.path.isdir(target) and not os.path.islink(target):
                    import shutil

                    shutil.rmtree(target)
                else:
                    os.unlink(target)
            if m.isdir():
                if not os.path.isdir(target):
                    os.mkdir(target, 0o700)
                dirs.append((target, m, _dir_id(target)))
            elif m.isreg():
                src = tf.extractfile(m)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                    out.flush()
                    _attrs(fd, m, owner, keep_owner)
            elif m.issym():
                os.symlink(m.linkname, target)
                _link_attrs(target, m, owner, keep_owner)
            elif m.islnk():
                lp = _parts(m.linkname)
                if ".." in lp or not lp:
                    raise CopyError(f"refusing hard link {m.name!r} -> {m.linkname!r}")
                if rename_top:
                    lp[0] = rename_top
                src_path = os.path.join(base, *lp)
                if not _within(os.path.realpath(src_path), base):
                    raise CopyError(f"refusing hard link {m.name!r} -> {m.linkname!r}")
                os.link(src_path, target, follow_symlinks=False)
            # devices, fifos: not copied
        for target, m, ident in reversed(dirs):
            try:
                fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue        # replaced by a later entry: not the directory made for this one
            try:
                if _dir_id(fd) == ident:
                    _attrs(fd, m, owner, keep_owner)
            finally:
                os.close(fd)


def _dir_id(path_or_fd) -> tuple[int, int]:
    st = os.stat(path_or_fd, follow_symlinks=False) if isinstance(path_or_fd, str) else os.fstat(path_or_fd)
    return st.st_dev, st.st_ino


def _owner(m, owner, keep_owner: bool) -> tuple[int, int] | None:
    return owner if owner is not None else (m.uid, m.gid) if keep_owner else None


def _attrs(fd: int, m, owner, keep_owner: bool) -> None:
    """Owner, mode and times of the file or directory open as ``fd``."""
    import stat

    uid_gid = _owner(m, owner, keep_owner)
    if uid_gid is not None:
        try:
            os.fchown(fd, *uid_gid)
        except OSError:
            pass
    os.fchmod(fd, stat.S_IMODE(m.mode))
    try:
        os.utime(fd, (m.mtime, m.mtime))
    except OSError:
        pass


def _link_attrs(target: str, m, owner, keep_owner: bool) -> None:
    uid_gid = _owner(m, owner, keep_owner)
    try:
        if uid_gid is not None:
            os.chown(target, *uid_gid, follow_symlinks=False)
        os.utime(target, (m.mtime, m.mtime), follow_symlinks=False)
    except OSError:
        pass


def _write_tar(wfd: int, path: str, arcname: str, follow: bool, names: bool = True) -> None:
    """``names=False``: the entries' uname/gname stay empty (see :func:`_no_name_lookups`)."""
    import tarfile

    if not names:
        _no_name_lookups()
    with os.fdopen(wfd, "wb") as f:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT, dereference=False) as tf:
            if follow and os.path.islink(path):
                path = os.path.realpath(path)
            tf.add(path, arcname=arcname, recursive=True)


def _split_src(src: str) -> tuple[str, str]:
    """(path to archive, arcname): 'dir/.' copies the contents of dir."""
    contents = src.endswith("/.") or src == "."
    path = src[:-2] if src.endswith("/.") else src
    path = path.rstrip("/") or "/"
    return path, "." if contents else (os.path.basename(path) or ".")


# ---------------------------------------------------------------------------
# inside the container (as its root)
#
# The helper runs our Python with the container's files as "/", and no code of the
# container may run in it (it is outside the container's other namespaces when the
# container is stopped, and it holds what the CLI had open until it closes it):
# - everything it imports is imported before the switch (``_preload``): an import
#   after it would read, and run, the container's files;
# - nothing calls glibc's NSS (getpwuid, getgrgid, getaddrinfo...), which reads the
#   container's /etc/nsswitch.conf and loads the libnss_*.so it names (docker
#   CVE-2019-14271): owners are written as numbers only.

def _preload() -> None:
    """Import what the helper needs on the container's side, while "/" is still the host's."""
    import json  # noqa: F401
    import pickle  # noqa: F401
    import shutil  # noqa: F401
    import stat  # noqa: F401
    import tarfile  # noqa: F401
    import traceback  # noqa: F401

    import rootless.runtime.execute  # noqa: F401


def _no_name_lookups() -> None:
    """tarfile's gettarinfo names each entry's owner with pwd.getpwuid / grp.getgrgid
    unless its module has no pwd / grp: take them away in this (forked) helper process,
    so that uname / gname stay empty, like those of an image layer."""
    import tarfile

    tarfile.pwd = None
    tarfile.grp = None


def _source_is_dir(src: str, path: str, follow: bool, where: str) -> bool:
    """Whether the source is a directory; a trailing '/' (or '/.') on anything else is refused."""
    if not os.path.lexists(path):
        raise CopyError(f"could not find the file {src} {where}: no such file or directory")
    if src.endswith("/") or src.endswith("/."):
        if not os.path.isdir(path):
            raise CopyError(f"cannot copy {src}: not a directory", hint="drop the trailing '/' to copy a file")
        return True
    return os.path.isdir(path) and (follow or not os.path.islink(path))


def _write_error(dest: str, e: OSError) -> CopyError:
    if e.errno == 30:    # EROFS
        return CopyError(f"cannot copy to {dest}: {dest} is on a read-only file system",
                         hint="copy to a writable path (not a :ro mount, nor the root of a --read-only container)")
    return CopyError(f"cannot copy to {dest}: {e.filename + ': ' if e.filename else ''}{e.strerror or e}")


def _inside_out(path: str, wfd: int, follow: bool) -> None:
    p, arc = _split_src(path)
    is_dir = _source_is_dir(path, p, follow, "in the container")
    try:
        os.write(wfd, b"d" if is_dir else b"f")     # the host side plans the destination with it
        _write_tar(wfd, p, arc, follow, names=False)
    except OSError as e:
        raise CopyError(f"copying {path} out of the container failed: "
                        f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}") from None


def _inside_in(dest: str, rfd: int, src_is_dir: bool, contents: bool, keep_owner: bool) -> None:
    top, rename = _dest_plan(dest, src_is_dir, contents, in_container=True)
    try:
        with os.fdopen(rfd, "rb") as f:
            safe_extract(f, top, rename_top=rename, owner=None if keep_owner else (0, 0))
    except OSError as e:
        raise _write_error(dest, e) from None


def _dest_plan(dest: str, src_is_dir: bool, contents: bool, in_container: bool) -> tuple[str, str | None]:
    """(directory to extract into, new name for the top entry) following docker cp's rules."""
    if contents:
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise CopyError(f"cannot copy a directory's contents to {dest}: not a directory")
        os.makedirs(dest, exist_ok=True)
        return dest, None
    if os.path.isdir(dest):
        return dest, None
    if os.path.lexists(dest.rstrip("/")) and (src_is_dir or dest.endswith("/")):
        if src_is_dir:     # docker cp: never replaces a file by a directory
            raise CopyError(f"cannot copy a directory to a file: {dest} is not a directory")
        raise CopyError(f"cannot copy to {dest}: not a directory")
    if dest.endswith("/"):
        raise CopyError(f"destination directory {dest} does not exist")
    parent = os.path.dirname(dest.rstrip("/")) or "/"
    if not os.path.isdir(parent):
        raise CopyError(f"destination directory {parent} does not exist")
    return parent, os.path.basename(dest.rstrip("/"))


def _pipe_end(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return fd, st.st_ino


def _close_foreign(ends) -> None:
    """In a forked child: close the host side's end of the pipe (``_pipe_end``), so that
    the child sees EOF / EPIPE when the host side finishes or fails (else both wait
    forever). Checked by inode: the host thread may have closed it and the number
    been reused before the fork."""
    for fd, ino in ends:
        try:
            if os.fstat(fd).st_ino == ino:
                os.close(fd)
        except OSError:
            pass


def _run_inside(config, ctr, fn, *args, child_close=()) -> None:
    """Run fn(*args) as root with the container's root as '/'.

    A running container: a child joins all its namespaces (as ``exec`` does) keeping
    none of the CLI's files but the pipes, and forks fn's process into its pid
    namespace. A stopped one: its root filesystem is mounted in a new user+mount
    namespace (``child_close``: the host side's pipe ends, closed there)."""
    _preload()
    from rootless.runtime.execute import error_from, read_all, report_error

    st = ctr.state
    if st.running:
        from rootless.runtime.execute import enter_namespaces, open_namespaces

        fds = open_namespaces(st.pid)
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(err_r)
                _keep_only_fds({err_w, *fds.values(), *(a for a in args if type(a) is int)})
                enter_namespaces(fds)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                worker = os.fork()      # in the container's pid namespace
                if worker == 0:
                    wcode = 0
                    try:
                        os.chdir("/")
                        fn(*args)
                    except BaseException as e:  # noqa: BLE001
                        report_error(err_w, e)
                        wcode = 1
                    os._exit(wcode)
                _close_arg_fds(args)
                os.close(err_w)
                while True:
                    try:
                        _, status = os.waitpid(worker, 0)
                        break
                    except InterruptedError:
                        continue
                code = 0 if status == 0 else 1
            except BaseException as e:  # noqa: BLE001
                report_error(err_w, e)
            os._exit(code)
        for fd in fds.values():
            os.close(fd)
        os.close(err_w)
        _close_arg_fds(args)
        data = read_all(err_r)
        os.close(err_r)
        os.waitpid(pid, 0)
        if data:
            raise error_from(data)
        return
    from rootless.runtime.monitor import mapping_for, prepare
    from rootless.userns import run_in_userns

    prep = prepare(config, ctr)
    mount_step = prep.steps[0]
    _, mapping = mapping_for(ctr.spec)
    try:
        run_in_userns(_mounted_call, mount_step, prep.host, fn, args, child_close, mapping=mapping)
    finally:
        _close_arg_fds(args)


def _arg_fds(args) -> list[int]:
    return [a for a in args if isinstance(a, int) and not isinstance(a, bool) and a > 2]


def _keep_only_fds(keep: set[int]) -> None:
    """In a forked child: close every fd but ``keep``; /dev/null (the host's) as 0, 1, 2."""
    null = os.open("/dev/null", os.O_RDWR)
    for i in (0, 1, 2):
        if i != null and i not in keep:
            os.dup2(null, i, inheritable=False)
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _close_arg_fds(args) -> None:
    for a in _arg_fds(args):
        try:
            os.close(a)
        except OSError:
            pass


def _mounted_call(mount_step, host, fn, args, child_close=()):
    from rootless.runtime.execute import Executor

    _close_foreign(child_close)

    Executor(host, {}).do_MountRootfs(mount_step)
    os.chroot(host.rootfs)
    os.chdir("/")
    fn(*args)


# ---------------------------------------------------------------------------
# the two directions (host side)

def copy_out(config, ctr, src: str, dest: str, follow: bool = False) -> None:
    if not src.startswith("/"):
        src = "/" + src
    r, w = os.pipe()
    errors: list[BaseException] = []
    _, arc = _split_src(src)
    contents = arc == "."

    def host_side():
        try:
            with os.fdopen(r, "rb") as f:
                kind = f.read(1)    # "d" / "f" (_inside_out); nothing (or no tar): it failed
                if not kind or not f.peek(1):
                    return
                if dest == "-":
                    import sys

                    while True:
                        b = f.read(1 << 20)
                        if not b:
                            break
                        sys.stdout.buffer.write(b)
                    return
                top, rename = _dest_plan(dest, kind == b"d", contents, in_container=False)
                safe_extract(f, top, rename_top=rename)
        except OSError as e:
            errors.append(_write_error(dest, e))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    host_end = _pipe_end(r)
    t = threading.Thread(target=host_side, daemon=True)
    t.start()
    inside: RootlessError | None = None
    try:
        _run_inside(config, ctr, _inside_out, src, w, follow, child_close=(host_end,))
    except RootlessError as e:
        inside = e
    finally:
        t.join()
    if errors:   # the host side's reason first: the container side then only saw a broken pipe
        e = errors[0]
        if isinstance(e, RootlessError):
            raise e
        raise CopyError(f"copying to {dest} failed: {e}") from None
    if inside is not None:
        raise inside


def copy_in(config, ctr, src: str, dest: str, archive: bool = False, follow: bool = False) -> None:
    if not dest.startswith("/"):
        dest = "/" + dest
    path, arc = _split_src(src)
    src_is_dir = _source_is_dir(src, path, follow, "on the host")
    r, w = os.pipe()
    errors: list[BaseException] = []

    def host_side():
        try:
            _write_tar(w, path, arc, follow)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    host_end = _pipe_end(w)
    t = threading.Thread(target=host_side, daemon=True)
    t.start()
    inside: RootlessError | None = None
    try:
        _run_inside(config, ctr, _inside_in, dest, r, src_is_dir, arc == ".", archive, child_close=(host_end,))
    except RootlessError as e:
        inside = e
    finally:
        t.join()
    if errors and not isinstance(errors[0], BrokenPipeError):
        raise CopyError(f"reading {src} failed: {errors[0]}")
    if inside is not None:
        raise inside

"""Executing a plan: namespaces, the set-up steps, and the exec.

Processes (``spawn``, called by the monitor, which is a child subreaper)::

    monitor --fork--> A: unshare(USER) ............ waits
       newuidmap/newgidmap A  (rootless.userns.apply_mapping)
                        A: root inside; unshare(NS|PID|UTS|IPC|CGROUP[|NET]);
                           / rprivate; fork B; report B's pid; exit
                        B: PID 1 of the new pid namespace (re-parented to the
                           monitor): runs the plan's steps, waits for "go"
                           (the network is up), drops privileges, execs.

B reports a failure as one JSON line on a close-on-exec pipe: the monitor
reads EOF when the exec succeeded. Every syscall of a step is checked and a
failure names the step and the fix (:class:`SyscallError`).

Nothing here imports more than ``os`` and the ctypes shim on the way to the
exec: the set-up runs between fork and exec of every container.
"""

from __future__ import annotations

import os

from rootless import syscalls as sc
from rootless.errors import (CannotExecute, CommandNotFound, ContainerError, HostError, RootlessError,
                             SyscallError)

_AT_FDCWD = -100
_AT_RECURSIVE = 0x8000
_MOUNT_ATTR_RDONLY = 0x1
_SYS_mount_setattr = 442
_TIOCSCTTY = 0x540E
_TIOCGPTN = 0x80045430
_ST_TO_MS = ((2, sc.MS_NOSUID), (4, sc.MS_NODEV), (8, sc.MS_NOEXEC), (1024, 1024), (2048, 2048),
             (4096, sc.MS_RELATIME))


# ---------------------------------------------------------------------------
# paths inside the container's root (before pivot_root)

def secure_join(root: str, path: str, *, max_links: int = 40) -> str:
    """``root`` + ``path`` with every symlink resolved INSIDE ``root``.

    Like filepath-securejoin: absolute links restart at root, '..' stops at
    root; components that do not exist are appended as they are. A hostile
    image's ``/etc -> /host/etc`` link therefore cannot make a mount land
    outside the container.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if resolved:
                resolved.pop()
            continue
        cur = root + "/" + "/".join(resolved + [p])
        try:
            st = os.lstat(cur)
        except OSError:
            resolved.append(p)
            resolved.extend(x for x in parts if x != "..")  # nothing below exists either
            parts = []
            break
        import stat as _stat

        if _stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise SyscallError(f"resolving {path} in the container", 40)
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [x for x in target.split("/") if x and x != "."] + parts
            continue
        resolved.append(p)
    return root + ("/" + "/".join(resolved) if resolved else "")


def _spawn_daemon(argv: list[str], log: str, desc: str, hint: str | None) -> None:
    """Run a helper that daemonizes (fuse-overlayfs): wait for the foreground
    process only; its stderr goes to a log file (the daemon keeps it open)."""
    import signal

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        pid = os.posix_spawn(argv[0], argv, os.environ,
                             file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                           (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                           (os.POSIX_SPAWN_DUP2, fd, 2)],
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        os.close(fd)
        from rootless.errors import HelperFailed

        raise HelperFailed(desc, None, e.strerror or str(e), hint=hint) from None
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        from rootless.errors import HelperFailed

        try:
            with open(log, errors="replace") as f:
                err = f.read()
        except OSError:
            err = ""
        raise HelperFailed(desc, code, err, hint=hint)


def _check(step, fn, *args, hint=None):
    try:
        return fn(*args)
    except OSError as e:
        raise SyscallError(f"{step.what}: {e.strerror or e}" if e.errno is None else step.what,
                           e.errno or 0, hint or step.hint) from None


def _mkdir_p(root: str, path: str, mode: int = 0o755) -> str:
    """Create ``path`` inside root (secure), return the host path."""
    full = secure_join(root, path)
    rel = full[len(root):].strip("/")
    cur = root
    for part in rel.split("/") if rel else []:
        cur = cur + "/" + part
        try:
            os.mkdir(cur, mode)
        except FileExistsError:
            import stat as _stat

            st = os.lstat(cur)
            if _stat.S_ISLNK(st.st_mode):   # appeared since secure_join: never follow
                raise OSError(40, f"{path}: symlink in the way")
    return full


def _create_file(root: str, path: str) -> str:
    full = secure_join(root, path)
    parent = os.path.dirname(full)
    if parent != root and not os.path.isdir(parent):
        # create the parents of the RESOLVED path: /etc/resolv.conf may be a
        # link to ../run/systemd/resolve/stub-resolv.conf that the image lacks
        _mkdir_p(root, parent[len(root):] or "/")
        full = secure_join(root, path)
    if not os.path.lexists(full):
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        os.close(fd)
    return full


def _locked_flags(path: str) -> int:
    f = os.statvfs(path).f_flag
    out = 0
    for st_flag, ms_flag in _ST_TO_MS:
        if f & st_flag:
            out |= ms_flag
    return out


class _MountAttr(__import__("ctypes").Structure):
    _fields_ = [("attr_set", __import__("ctypes").c_uint64), ("attr_clr", __import__("ctypes").c_uint64),
                ("propagation", __import__("ctypes").c_uint64), ("userns_fd", __import__("ctypes").c_uint64)]


def make_readonly(path: str, recursive: bool = True) -> None:
    """Make the mount at ``path`` (and its submounts) read-only, keeping locked flags."""
    import ctypes

    attr = _MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    r = sc._libc.syscall(_SYS_mount_setattr, _AT_FDCWD, os.fsencode(path),
                         _AT_RECURSIVE if recursive else 0, ctypes.byref(attr), ctypes.sizeof(attr))
    if r == 0:
        return
    e = ctypes.get_errno()
    if e not in (38,):  # ENOSYS: kernel < 5.12, remount instead
        raise OSError(e, os.strerror(e))
    sc.mount(None, path, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _locked_flags(path))


def _loopback_up() -> None:
    import ctypes
    import fcntl
    import struct

    fd = sc._libc.socket(2, 2 | 0o2000000, 0)  # AF_INET, SOCK_DGRAM|SOCK_CLOEXEC
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(fd, 0x8913, req))[1]   # SIOCGIFFLAGS
        fcntl.ioctl(fd, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))   # SIOCSIFFLAGS IFF_UP
    finally:
        os.close(fd)


def copy_tree(src: str, dst: str) -> None:
    """Copy the contents of ``src`` into ``dst`` keeping owners and modes (volume copy-up)."""
    import shutil
    import stat as _stat

    for name in os.listdir(src):
        s, d = os.path.join(src, name), os.path.join(dst, name)
        st = os.lstat(s)
        if _stat.S_ISDIR(st.st_mode):
            os.mkdir(d)
            copy_tree(s, d)
        elif _stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif _stat.S_ISREG(st.st_mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        else:
            continue
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
        if not _stat.S_ISLNK(st.st_mode):
            os.chmod(d, _stat.S_IMODE(st.st_mode))
    st = os.stat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, _stat.S_IMODE(st.st_mode))


# ---------------------------------------------------------------------------
# running the steps (in B, as root of the user namespace, before pivot_root)

class Executor:
    def __init__(self, host, ctx: dict):
        self.host = host
        self.root = host.rootfs
        self.ctx = ctx   # emulation, tty socket, stdio fds, mapping...
        self.warnings: list[str] = []

    def run(self, steps) -> None:
        for step in steps:
            fn = getattr(self, "do_" + type(step).__name__)
            fn(step)

    def do_MountRootfs(self, s) -> None:
        """``s.driver``, then each of ``s.fallback`` in turn; a fallback leaves a warning."""
        from rootless.storage import fallback_warning

        chain = (s.driver,) + tuple(s.fallback)
        failed: list[tuple[str, str]] = []
        for i, driver in enumerate(chain):
            if driver == "fuse-overlayfs" and not s.fuse and i < len(chain) - 1:
                failed.append((driver, "not installed, or /dev/fuse not usable"))
                continue
            try:
                getattr(self, "_mount_" + driver.replace("-", "_"))(s)
            except (RootlessError, OSError) as e:
                if i == len(chain) - 1:
                    raise
                reason = (f"mount: {os.strerror(e.errno)}" if isinstance(e, SyscallError)
                          else getattr(e, "message", None) or str(e))
                failed.append((driver, reason))
                continue
            if failed:
                self.warnings.append(fallback_warning(failed, driver))
            return

    def _mount_vfs(self, s) -> None:
        if not os.path.exists(os.path.join(s.target, ".rootless-vfs-done")):
            # a fallback (`prepare` copied already when vfs was chosen): copy here, as root
            # of the container's user namespace (owners kept)
            from rootless.storage import vfs_materialize

            try:
                vfs_materialize([os.path.join(s.cwd, x) for x in s.lowers], s.target)
                open(os.path.join(s.target, ".rootless-vfs-done"), "w").close()
            except OSError as e:
                raise SyscallError(f"{s.what}: copying the image (vfs)", e.errno or 0,
                                   "free disk space in the store") from None
        _check(s, sc.mount, s.target, s.target, None, sc.MS_BIND | sc.MS_REC)

    def _mount_overlay(self, s) -> None:
        from rootless.storage import overlay_options

        try:
            os.chdir(s.cwd)
            rel = [os.path.relpath(x, s.cwd) if x.startswith(s.cwd + "/") else x for x in s.lowers]
            if s.upper.startswith(s.cwd + "/"):
                upper, work = os.path.relpath(s.upper, s.cwd), os.path.relpath(s.work, s.cwd)
            else:
                upper, work = s.upper, s.work
            data = overlay_options(rel, upper, work, userxattr=True)
            sc.mount("overlay", s.target, "overlay", 0, data)
        except OSError as e:
            raise SyscallError(f"{s.what}: overlay mount failed", e.errno or 0, s.hint) from None
        finally:
            os.chdir("/")

    def _mount_fuse_overlayfs(self, s) -> None:
        if not s.fuse:
            from rootless.storage import FIX_FUSE

            raise HostError("fuse-overlayfs is not usable: cannot mount the container's root filesystem",
                            hint=FIX_FUSE)
        from rootless.storage import fuse_overlayfs_argv

        argv = fuse_overlayfs_argv(s.fuse, s.lowers, s.upper, s.work, s.target, s.uidmapping, s.gidmapping)
        _spawn_daemon(argv, os.path.join(os.path.dirname(s.upper), "userdata", "fuse-overlayfs.log"),
                      "fuse-overlayfs (mounting the container's root filesystem)", s.hint)
        # The FUSE daemon must keep the host's root: pivot_root would also move its
        # root onto its own mount, and its next path lookup (/proc/self/fd/N/...)
        # would wait for itself. The container continues in a copy of this mount
        # namespace (which has the FUSE mount); the daemon stays in this one.
        _check(s, sc.unshare, sc.CLONE_NEWNS)

    def do_Binfmt(self, s) -> None:
        emu = self.ctx.get("emulation")
        if emu is None or getattr(emu, "mode", "") != "sandboxed":
            return
        from archsupport.binfmt import sandbox_register

        try:
            sandbox_register(emu, self.root)
        except OSError as e:
            raise SyscallError(s.what, e.errno or 0,
                               "Linux >= 6.7 mounts binfmt_misc in a user namespace; or an admin runs "
                               "`sudo rootless binfmt install`") from None

    def do_Mount(self, s) -> None:
        try:
            target = _mkdir_p(self.root, s.target) if s.kind == "dir" else _create_file(self.root, s.target)
            sc.mount(s.source, target, s.fstype, s.flags, s.data or None)
        except OSError as e:
            if s.optional:
                return
            hint = HINT_PROC if s.fstype == "proc" else None
            raise SyscallError(s.what, e.errno or 0, hint) from None

    def do_Bind(self, s) -> None:
        import stat as _stat

        src = s.source
        try:
            st = os.stat(src)
        except OSError as e:
            if s.kind == "auto":
                raise ContainerError(f"bind source path does not exist: {src}",
                                     hint="create it first, or check the -v/--mount source") from None
            raise SyscallError(s.what, e.errno or 0) from None
        is_dir = _stat.S_ISDIR(st.st_mode)
        try:
            target = _mkdir_p(self.root, s.target) if is_dir else _create_file(self.root, s.target)
            if s.copy_up and is_dir:
                self._copy_up(target, src)
            sc.mount(src, target, None, sc.MS_BIND | (sc.MS_REC if s.recursive else 0))
            if s.readonly:
                make_readonly(target, recursive=s.recursive)
        except OSError as e:
            raise SyscallError(s.what, e.errno or 0) from None

    def _copy_up(self, target: str, volume_dir: str) -> None:
        # a new volume starts with what the image has at the mount point (Docker)
        if os.path.isdir(target) and not os.listdir(volume_dir) and os.listdir(target):
            copy_tree(target, volume_dir)

    def do_Symlink(self, s) -> None:
        full = secure_join(self.root, s.path)
        if not os.path.lexists(full):
            _check(s, os.symlink, s.link, full)

    def do_Mask(self, s) -> None:
        full = secure_join(self.root, s.path)
        if not os.path.lexists(full):
            return
        if os.path.isdir(full):
            _check(s, sc.mount, "tmpfs", full, "tmpfs", sc.MS_RDONLY, "size=0k")
        else:
            _check(s, sc.mount, "/dev/null", full, None, sc.MS_BIND)

    def do_ReadOnly(self, s) -> None:
        full = secure_join(self.root, s.path)
        if not os.path.lexists(full):
            return
        _check(s, sc.mount, full, full, None, sc.MS_BIND | sc.MS_REC)
        _check(s, make_readonly, full)

    def do_PasswdEntry(self, s) -> None:
        from rootless.runtime.plan import passwd_has

        text = _read_small(secure_join(self.root, "/etc/passwd")) or ""
        if passwd_has(text, s.uid, s.name):
            return
        if text and not text.endswith("\n"):
            text += "\n"
        try:
            fd = os.open(s.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (text + s.line + "\n").encode())
                os.fchown(fd, s.uid, s.gid)     # the user's own file on the host
            finally:
                os.close(fd)
            sc.mount(s.file, _create_file(self.root, "/etc/passwd"), None, sc.MS_BIND)
        except OSError as e:
            raise SyscallError(s.what, e.errno or 0) from None

    def do_Mkdir(self, s) -> None:
        _check(s, _mkdir_p, self.root, s.path)

    def do_LoopbackUp(self, s) -> None:
        _check(s, _loopback_up)

    def do_RootReadonly(self, s) -> None:
        _check(s, sc.mount, None, self.root, None,
               sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _locked_flags(self.root))

    def do_PivotRoot(self, s) -> None:
        _check(s, os.chdir, self.root)
        _check(s, sc.pivot_root, ".", ".")
        _check(s, sc.umount2, ".", sc.MNT_DETACH)
        _check(s, os.chdir, "/")

    def do_Hostname(self, s) -> None:
        _check(s, sc.sethostname, s.name)

    def do_Process(self, s) -> None:
        self.process = s   # run by start_process after "go"


HINT_PROC = "the host's /proc must be fully visible (no over-mounts) to mount a new one in a user namespace"


# ---------------------------------------------------------------------------
# the process: user, tty, capabilities, fds, exec

def _read_small(path: str, limit: int = 64 << 20) -> str | None:
    """A regular file of the image (passwd, group), whole; None if it is not one
    or cannot be read (a hostile image may point it at /proc/self/mem, a FIFO...)."""
    import stat as _stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size < limit:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            chunks.append(b)
            size += len(b)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def resolve_process_user(user: str):
    from rootless.runtime.spec import resolve_user

    return resolve_user(user, _read_small("/etc/passwd"), _read_small("/etc/group"))


def _setup_tty(ctx: dict, uid: int) -> int:
    """Open a PTY in the container's devpts, hand the master to the monitor; return the slave."""
    import fcntl
    import struct

    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, 0x40045431, struct.pack("i", 0))  # TIOCSPTLCK: unlock
    n = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, b"\0\0\0\0"))[0]
    slave_path = f"/dev/pts/{n}"
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    if uid:
        try:
            os.fchown(slave, uid, -1)
        except OSError:
            pass
    if ctx.get("console", True):
        try:
            fd = os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
            sc.mount(slave_path, "/dev/console", None, sc.MS_BIND)
        except OSError:
            pass
    sock = ctx["tty_sock"]
    import socket

    s = socket.socket(fileno=sock)
    winsize = ctx.get("winsize")
    if winsize:
        try:
            fcntl.ioctl(master, 0x5414, winsize)  # TIOCSWINSZ
        except OSError:
            pass
    socket.send_fds(s, [b"M"], [master])
    s.detach()
    os.close(sock)
    os.close(master)
    return slave


def _exec_error(argv0: str, e: OSError, ctx: dict | None = None, path_env: str | None = None) -> RootlessError:
    if e.errno in (2, 20):  # ENOENT, ENOTDIR
        if "/" in argv0:
            return CommandNotFound(f"exec: {argv0}: no such file or directory",
                                   hint="check the command's path inside the image")
        return CommandNotFound(f"exec: \"{argv0}\": executable file not found in $PATH",
                               hint="check the command name and the image's PATH")
    if e.errno == 13:
        return CannotExecute(f"exec: {argv0}: permission denied", hint="the file is not executable in the image")
    if e.errno == 8:
        platform = (ctx or {}).get("platform")
        if "archsupport.emulation" in __import__("sys").modules:
            # preloaded: explain from the ELF header what the binary is (any image: a native
            # one may be mislabelled; a --rootfs has no platform)
            try:
                from archsupport.emulation import exec_format_error
                from archsupport.platform import parse

                return exec_format_error(argv0, parse(platform) if platform else None, path_env=path_env)
            except Exception:  # noqa: BLE001 - the plain message below is still right
                pass
        return CannotExecute(f"exec: {argv0}: exec format error",
                             hint="the binary is for another architecture or a script without #! line")
    return CannotExecute(f"exec: {argv0}: {os.strerror(e.errno or 0)}")


def start_process(proc, ctx: dict, err_w: int) -> None:
    """Become the container's command (never returns). Runs after pivot_root."""
    user = resolve_process_user(proc.user)
    env = list(proc.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    # execve takes any NAME=VALUE, Python's os.execvpe does not: drop what it refuses
    # (an image's Env may hold "=x" or a NUL) instead of failing with a traceback
    envd = {k: v for k, v in (e.partition("=")[::2] for e in env) if k and "\0" not in k + v}
    if proc.tty:
        slave = _setup_tty(ctx, user.uid)
        try:
            os.setsid()
        except OSError:
            pass
        import fcntl

        fcntl.ioctl(slave, _TIOCSCTTY, 0)
        for i in (0, 1, 2):
            os.dup2(slave, i)
        if slave > 2:
            os.close(slave)
    else:
        fds = ctx.get("stdio") or (None, None, None)
        null = None
        for i, fd in enumerate(fds):
            if fd is None:
                if null is None:
                    null = os.open("/dev/null", os.O_RDWR)
                fd = null
            if fd != i:
                os.dup2(fd, i)
    try:
        os.chdir(proc.cwd)
    except OSError as e:
        raise ContainerError(f"cannot change to the working directory {proc.cwd}: {e.strerror}") from None

    if proc.init:
        _run_init(proc, user, envd, ctx, err_w)   # never returns
    _become(proc, user, envd, ctx, err_w)


def _drop_privileges(proc, user, ctx: dict) -> None:
    last = ctx.get("cap_last", 40)
    keep = set(proc.caps)
    for cap in range(last + 1):
        if cap not in keep:
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != 22:
                    raise SyscallError("dropping capabilities from the bounding set", e.errno or 0) from None
    if proc.no_new_privs:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    try:
        if not ctx.get("single_mapping"):
            os.setgroups(list(user.groups))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise ContainerError(f"cannot switch to user {proc.user or 'root'} (uid {user.uid}, gid {user.gid}): "
                             f"{e.strerror}",
                             hint="the id is outside the user namespace's mapping (see /etc/subuid)") from None
    if user.uid == 0:
        mask = 0
        for c in keep:
            mask |= 1 << c
        sc.capset(mask, mask, 0)


def _close_fds(keep: int) -> None:
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ, and the monitor some job-control signals:
    an ignored disposition survives exec, so give the command the defaults."""
    import signal

    for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM,
              signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(s, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _become(proc, user, envd: dict, ctx: dict, err_w: int) -> None:
    _reset_signals()
    _drop_privileges(proc, user, ctx)
    _close_fds(err_w)
    try:
        os.execvpe(proc.argv[0], list(proc.argv), envd)
    except OSError as e:
        raise _exec_error(proc.argv[0], e, ctx, envd.get("PATH")) from None


def _hide_host_argv_env() -> None:
    """Zero this process's original argv and environment strings (what /proc/PID/cmdline
    and /proc/PID/environ show): the init is the monitor's fork, whose command line names
    host paths and whose environment is the host user's. Python runs on copies of both."""
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        # fields 48-51 (man 5 proc) are arg_start, arg_end, env_start, env_end
        arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    except (OSError, ValueError):
        return
    for start, end in ((arg_start, arg_end), (env_start, env_end)):
        if 0 < start < end:
            ctypes.memset(start, 0, end - start)
    if arg_end - arg_start > 4:
        ctypes.memmove(arg_start, b"init", 4)


def _init_unprivileged(proc, user, ctx: dict) -> None:
    """The --init reaper only waits and forwards signals: it keeps the container's bounding
    set, user and no_new_privs, and no capability at all."""
    sc.set_process_name("init")
    _hide_host_argv_env()
    _drop_privileges(proc, user, ctx)
    sc.capset(0, 0, 0)
    # a change of uid made it non-dumpable, and since it never exec'ed, /proc/PID/ns/* would
    # then be closed to the user owning the container (`exec`, `top` join through them)
    sc.prctl(sc.PR_SET_DUMPABLE, 1)


def _run_init(proc, user, envd: dict, ctx: dict, err_w: int) -> None:
    """--init: a minimal PID 1 that reaps zombies and forwards signals to the command."""
    import signal

    forward = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
    signal.pthread_sigmask(signal.SIG_BLOCK, forward + [signal.SIGCHLD])
    ready_r, ready_w = os.pipe()    # the command starts once the init has dropped its privileges
    child = os.fork()
    if child == 0:
        try:
            os.close(ready_w)
            os.read(ready_r, 1)
            os.close(ready_r)
            os.setpgid(0, 0)
            if proc.tty:    # its own process group reads the terminal (SIGTTOU is still blocked)
                os.tcsetpgrp(0, os.getpid())
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            for s in forward:
                try:
                    signal.signal(s, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            _become(proc, user, envd, ctx, err_w)
        except BaseException as e:  # noqa: BLE001
            report_error(err_w, e)
            os._exit(getattr(e, "exit_code", 125))
    os.close(ready_r)
    try:
        _init_unprivileged(proc, user, ctx)
    except BaseException as e:  # noqa: BLE001
        report_error(err_w, e)
        os.kill(child, signal.SIGKILL)
        os._exit(getattr(e, "exit_code", 125))
    os.close(ready_w)
    os.close(err_w)
    _close_fds(2)
    while True:
        info = signal.sigwaitinfo(forward + [signal.SIGCHLD])
        if info.si_signo != signal.SIGCHLD:
            try:
                os.kill(child, info.si_signo)
            except OSError:
                pass
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if pid == 0:
                break
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)


# ---------------------------------------------------------------------------
# error reporting across the fork

def preload(tty: bool = False, explain_exec: bool = False) -> None:
    """Import now what runs after the switch to the container's root (pivot_root, setns):
    from there on the host's Python library is out of reach."""
    import fcntl  # noqa: F401
    import json  # noqa: F401
    import signal  # noqa: F401
    import stat  # noqa: F401
    import struct  # noqa: F401

    import rootless.runtime.spec  # noqa: F401
    if tty:
        import socket  # noqa: F401
    if explain_exec:
        try:   # explains "exec format error" from the ELF header, after pivot_root
            import archsupport.emulation  # noqa: F401
            import archsupport.platform  # noqa: F401
        except ImportError:
            pass


def report_error(fd: int, e: BaseException) -> None:
    import json

    if isinstance(e, RootlessError):
        d = {"type": type(e).__name__, "message": e.message, "hint": e.hint, "code": e.exit_code}
    elif isinstance(e, OSError):
        d = {"type": "HostError", "message": str(e), "hint": None, "code": 125}
    else:
        tb = e.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
        d = {"type": "RootlessError", "message": f"internal error: {type(e).__name__}: {e}",
             "hint": f"at {where}" if where else None, "code": 125}
    try:
        os.write(fd, json.dumps(d).encode() + b"\n")
    except OSError:
        pass


def report_warning(fd: int, message: str) -> None:
    """A warning for the user, on the error pipe (the set-up goes on)."""
    import json

    try:
        os.write(fd, json.dumps({"warning": message}).encode() + b"\n")
    except OSError:
        pass


def split_warnings(data: bytes) -> tuple[list[str], bytes]:
    """(warnings, the rest: an error report or b"") of what came on the error pipe."""
    import json

    warnings, rest = [], []
    for line in data.splitlines(keepends=True):
        try:
            d = json.loads(line)
        except ValueError:
            d = None
        if isinstance(d, dict) and set(d) == {"warning"}:
            warnings.append(str(d["warning"]))
        else:
            rest.append(line)
    return warnings, b"".join(rest)


def error_from(data: bytes) -> RootlessError:
    import json

    from rootless import errors

    data = split_warnings(data)[1]
    try:
        d = json.loads(data.decode(errors="replace").splitlines()[0])
    except (ValueError, IndexError):
        return RootlessError(f"container set-up failed: {data[:200]!r}")
    cls = getattr(errors, d.get("type", ""), errors.RootlessError)
    if not (isinstance(cls, type) and issubclass(cls, errors.RootlessError)):
        cls = errors.RootlessError
    exc = cls.__new__(cls)
    errors.RootlessError.__init__(exc, d.get("message", "?"), d.get("hint"), exit_code=d.get("code", 125))
    return exc


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not b:
            return b"".join(chunks)
        chunks.append(b)


# ---------------------------------------------------------------------------
# spawn: the fork dance (in the monitor)

class Launched:
    def __init__(self, pid: int, err_r: int, go_w: int):
        self.pid = pid
        self.err_r = err_r
        self.go_w = go_w
        self.warnings: list[str] = []   # the set-up's (after go)

    def go(self) -> None:
        """Let the container exec; raise its set-up or exec error, if any; keep its warnings."""
        try:
            os.write(self.go_w, b"g")
        except OSError:
            pass
        os.close(self.go_w)
        self.go_w = -1
        data = read_all(self.err_r)
        os.close(self.err_r)
        self.err_r = -1
        self.warnings, data = split_warnings(data)
        if data:
            raise error_from(data)

    def early_error(self) -> RootlessError | None:
        """A set-up error B already reported (non-blocking), e.g. when the network start failed."""
        import select

        if self.err_r >= 0 and select.select([self.err_r], [], [], 0.2)[0]:
            data = split_warnings(os.read(self.err_r, 65536))[1]
            if data:
                return error_from(data)
        return None

    def abort(self) -> None:
        for fd in (self.go_w, self.err_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.go_w = self.err_r = -1


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def spawn(steps, host, mapping, *, new_netns: bool, ctx: dict, join_userns: str = "",
          join_netns: str = "", place=None) -> Launched:
    """Create the namespaces and B (the container's PID 1), running ``steps`` in it.

    Must be called by a child subreaper (the monitor): A exits after forking
    B, so B becomes our child. B waits for :meth:`Launched.go` before exec.

    ``join_userns`` / ``join_netns`` (from :func:`rootless.network.join`):
    A enters these existing namespaces (setns) instead of creating a user
    namespace (no id mapping then: the joined one has it) / a network
    namespace. A user-defined network needs the per-user network
    namespace's user namespace; ``--network container:X`` needs X's.

    ``place(pid)`` (resource limits: rootless.runtime.cgroups) is called
    with A's pid before A creates the other namespaces, so that the cgroup
    namespace of the container is rooted at the cgroup it was put in.
    """
    from rootless.userns import apply_mapping

    preload(bool(ctx.get("tty_sock")), True)
    ctx.setdefault("cap_last", _cap_last())
    ctx["single_mapping"] = mapping.single
    r_sync, w_sync = os.pipe()
    r_go_a, w_go_a = os.pipe()
    err_r, err_w = os.pipe()
    go_r, go_w = os.pipe()
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWCGROUP
    if new_netns and not join_netns:
        flags |= sc.CLONE_NEWNET
    join_fds = {}
    try:
        for kind, path in (("user", join_userns), ("net", join_netns)):
            if path:
                join_fds[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for fd in join_fds.values():
            os.close(fd)
        raise ContainerError(f"cannot open the namespace to join ({e.filename}): {e.strerror}",
                             hint="the container or network namespace it shares is gone: start it again") from None
    pid_a = os.fork()
    if pid_a == 0:
        code = 125
        try:
            os.close(r_sync)
            os.close(w_go_a)
            os.close(err_r)
            os.close(go_w)
            if "user" in join_fds:
                try:
                    sc.setns(join_fds["user"], sc.CLONE_NEWUSER)
                except OSError as e:
                    raise SyscallError("joining the user namespace of the network", e.errno or 0) from None
                os.write(w_sync, b"j")
            else:
                try:
                    sc.unshare(sc.CLONE_NEWUSER)
                except OSError as e:
                    raise HostError(f"cannot create a user namespace: {e.strerror}",
                                    hint="run `rootless doctor` to see why unprivileged user namespaces are not "
                                         "allowed") from None
                os.write(w_sync, b"u")
            if os.read(r_go_a, 1) != b"g":
                os._exit(125)
            os.close(r_go_a)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if not mapping.single:
                os.setgroups([])
            # with --userns=keep-id the switch to root changed the uid (the user is not root
            # there) and made A and B non-dumpable: the user could not open /proc/B/ns/*,
            # which pasta, slirp4netns and the relay join (as _init_unprivileged does for --init)
            sc.prctl(sc.PR_SET_DUMPABLE, 1)
            try:
                sc.unshare(flags)
            except OSError as e:
                raise SyscallError("creating the mount, pid, uts, ipc, cgroup and network namespaces",
                                   e.errno or 0) from None
            if "net" in join_fds:
                try:
                    sc.setns(join_fds["net"], sc.CLONE_NEWNET)
                except OSError as e:
                    raise SyscallError("joining the network namespace of the container", e.errno or 0) from None
            for fd in join_fds.values():
                os.close(fd)
            try:
                sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            except OSError as e:
                raise SyscallError("making / private in the container's mount namespace", e.errno or 0) from None
            pid_b = os.fork()
            if pid_b == 0:
                os.close(w_sync)
                _container_main(steps, host, ctx, err_w, go_r)
            os.write(w_sync, b"%d\n" % pid_b)
            code = 0
        except BaseException as e:  # noqa: BLE001
            report_error(err_w, e)
        finally:
            os._exit(code)
    os.close(w_sync)
    os.close(r_go_a)
    os.close(err_w)
    os.close(go_r)
    for fd in join_fds.values():
        os.close(fd)
    try:
        first = os.read(r_sync, 1)
        if first == b"u":
            apply_mapping(pid_a, mapping)
        if first in (b"u", b"j"):
            if place is not None:
                place(pid_a)
            os.write(w_go_a, b"g")
        os.close(w_go_a)
        w_go_a = -1
        data = read_all(r_sync)
    except BaseException:
        if w_go_a >= 0:
            os.close(w_go_a)
        os.close(r_sync)
        os.close(go_w)
        os.waitpid(pid_a, 0)
        os.close(err_r)
        raise
    os.close(r_sync)
    os.waitpid(pid_a, 0)
    if not data.strip().isdigit():
        err = read_all(err_r)
        os.close(err_r)
        os.close(go_w)
        raise error_from(err) if err else RootlessError("the container's namespace helper died")
    return Launched(int(data), err_r, go_w)


def _container_main(steps, host, ctx: dict, err_w: int, go_r: int) -> None:
    code = 125
    try:
        try:
            os.setsid()
        except OSError:
            pass
        from rootless.runtime import trace

        trace("container: set-up")
        ex = Executor(host, ctx)
        ex.run(steps)
        trace("container: set up")
        for w in ex.warnings:
            report_warning(err_w, w)
        if os.read(go_r, 1) != b"g":
            os._exit(125)
        os.close(go_r)
        start_process(ex.process, ctx, err_w)
    except BaseException as e:  # noqa: BLE001
        report_error(err_w, e)
        code = getattr(e, "exit_code", 125)
    os._exit(code)


# ---------------------------------------------------------------------------
# exec: a new process in a running container

NS_ORDER = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")


def open_namespaces(pid: int) -> dict[str, int]:
    """fds of container ``pid``'s namespaces (those that are not already ours), for
    :func:`enter_namespaces` in a child: ``exec`` and ``cp`` join all of them."""
    fds: dict[str, int] = {}
    for ns in NS_ORDER:
        try:
            if os.stat(f"/proc/{pid}/ns/{ns}").st_ino == os.stat(f"/proc/self/ns/{ns}").st_ino:
                continue
            fds[ns] = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            for fd in fds.values():
                os.close(fd)
            raise ContainerError(f"cannot join the container's {ns} namespace: {e.strerror}",
                                 hint="is the container still running?") from None
    return fds


def enter_namespaces(fds: dict[str, int]) -> None:
    """In a forked child: join the namespaces of :func:`open_namespaces` (user first) and
    close their fds. The process is made non-dumpable first (as runc does; joining the
    user namespace would make it so too): the container's root must not ptrace it or
    open its /proc/PID/fd while it still holds the CLI's files. Only its children are in
    the container's pid namespace."""
    sc.prctl(sc.PR_SET_DUMPABLE, 0)
    for ns in NS_ORDER:
        if ns in fds:
            try:
                sc.setns(fds[ns], 0)
            except OSError as e:
                raise SyscallError(f"joining the container's {ns} namespace", e.errno or 0) from None
            os.close(fds[ns])


def exec_in(pid: int, proc, ctx: dict) -> tuple[int, int]:
    """Fork a process that joins container ``pid``'s namespaces and execs ``proc``.

    Returns (child pid, error pipe read end). The child forks once more
    (a pid namespace applies to children) and waits for the command, exiting
    with its status (128+N for signal N).
    """
    preload(proc.tty)
    ctx.setdefault("cap_last", _cap_last())
    fds = open_namespaces(pid)
    try:
        with open(f"/proc/{pid}/uid_map") as f:
            single = sum(int(x.split()[2]) for x in f if x.strip()) == 1
    except OSError:
        single = False
    ctx["single_mapping"] = single
    ctx["console"] = False
    from rootless.runtime.cgroups import container_cgroup

    cgroup = container_cgroup(pid)      # a container with limits: exec joins its cgroup
    err_r, err_w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 125
        try:
            os.close(err_r)
            if cgroup:
                try:
                    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                        f.write("0")
                except OSError as e:
                    raise ContainerError(f"cannot join the container's cgroup {cgroup}: {e.strerror}") from None
            enter_namespaces(fds)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            if ctx.get("detach"):
                os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                gcode = 125
                try:
                    if not proc.tty:
                        # its own session, as `run` gives: else the caller's terminal stays its
                        # controlling terminal, and TIOCSTI on it types into the user's shell
                        # (with -t start_process makes the container's pty the controlling one)
                        os.setsid()
                    start_process(proc, ctx, err_w)
                except BaseException as e:  # noqa: BLE001
                    report_error(err_w, e)
                    gcode = getattr(e, "exit_code", 125)
                os._exit(gcode)
            os.close(err_w)
            if ctx.get("detach"):
                os._exit(0)
            import signal

            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                      signal.SIGUSR2):
                signal.signal(s, lambda n, f: os.kill(grandchild, n))
            while True:
                try:
                    _, status = os.waitpid(grandchild, 0)
                    break
                except InterruptedError:
                    continue
            c = os.waitstatus_to_exitcode(status)
            code = 128 - c if c < 0 else c
        except BaseException as e:  # noqa: BLE001
            report_error(err_w, e)
            code = getattr(e, "exit_code", 125)
        os._exit(code)
    for fd in fds.values():
        os.close(fd)
    os.close(err_w)
    return child, err_r

"""The one ctypes shim for the syscalls Python's os module lacks (3.11).

Every wrapper raises ``OSError(errno, strerror)``; callers that know the
set-up step turn it into :class:`rootless.errors.SyscallError` with a hint
(see :func:`check`).
"""

from __future__ import annotations

import ctypes
import os

from rootless.errors import SyscallError

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long


def _err(what: str, path: str | None = None):
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}" + (f" ({path})" if path else ""))


def _b(s) -> bytes | None:
    if s is None:
        return None
    return os.fsencode(s)


def unshare(flags: int) -> None:
    if _libc.unshare(flags) != 0:
        raise _err("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if _libc.setns(fd, nstype) != 0:
        raise _err("setns")


def mount(source, target, fstype=None, flags: int = 0, data=None) -> None:
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise _err(f"mount {fstype or ''} on".strip(), os.fsdecode(target))


def umount2(target, flags: int = 0) -> None:
    if _libc.umount2(_b(target), flags) != 0:
        raise _err("umount", os.fsdecode(target))


_SYS_pivot_root = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}.get(os.uname().machine, 155)
_SYS_capset = {"x86_64": 126, "aarch64": 91, "riscv64": 91, "ppc64le": 184, "s390x": 185}.get(os.uname().machine, 126)
_SYS_capget = {"x86_64": 125, "aarch64": 90, "riscv64": 90, "ppc64le": 183, "s390x": 184}.get(os.uname().machine, 125)


def pivot_root(new_root, put_old) -> None:
    if _libc.syscall(_SYS_pivot_root, _b(new_root), _b(put_old)) != 0:
        raise _err("pivot_root")


def sethostname(name: str) -> None:
    b = name.encode()
    if _libc.sethostname(b, len(b)) != 0:
        raise _err("sethostname")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    r = _libc.prctl(option, a2, a3, a4, a5)
    if r < 0:
        raise _err("prctl")
    return r


def set_process_name(name: str) -> None:
    """prctl(PR_SET_NAME): the name in /proc/PID/comm and status (15 bytes at most)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    prctl(PR_SET_NAME, ctypes.addressof(buf))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    if _libc.syscall(_SYS_capset, ctypes.byref(hdr), ctypes.byref(data)) != 0:
        raise _err("capset")


class _Statfs(ctypes.Structure):
    # struct statfs starts with f_type (__fsword_t: a long, but an unsigned int on s390x);
    # the rest is padding large enough for every architecture
    _fields_ = [("f_type", ctypes.c_uint if os.uname().machine == "s390x" else ctypes.c_long),
                ("_rest", ctypes.c_byte * 256)]


_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]

PROC_SUPER_MAGIC = 0x9FA0
BINFMTFS_MAGIC = 0x42494E4D


def fs_type(path) -> int:
    """statfs(path).f_type: the filesystem's magic number (PROC_SUPER_MAGIC...)."""
    buf = _Statfs()
    if _libc.statfs(_b(path), ctypes.byref(buf)) != 0:
        raise _err("statfs", os.fsdecode(path))
    return buf.f_type & 0xFFFFFFFF


_SYS_openat2 = 437     # the same number on every architecture (a syscall newer than 5.1)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_in_root(root_fd: int, path: str, flags: int) -> int:
    """openat2(root_fd, path, flags, RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS) (Linux >= 5.6): every
    symlink resolves inside ``root_fd`` (e.g. /proc/PID/root: a container's file seen from the host)."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_openat2, root_fd, _b(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        raise _err("openat2", path)
    return fd


def check(step: str, fn, *args, hint: str | None = None, **kw):
    """Call fn(*args); turn an OSError into a SyscallError naming ``step``."""
    try:
        return fn(*args, **kw)
    except OSError as e:
        raise SyscallError(step, e.errno or 0, hint) from None

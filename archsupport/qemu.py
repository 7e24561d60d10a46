"""qemu-user discovery: which interpreter runs a foreign architecture.

Search order for OCI arch A (qemu target T, e.g. arm64 -> aarch64):

1. the path configured in ``[emulation.qemu] A = "/path"``;
2. ``qemu-T-static`` on PATH (Debian/Ubuntu ``qemu-user-static``);
3. ``qemu-T`` on PATH when it is a static binary (Debian >= 13, Fedora's
   ``qemu-user-static-*``, self-built ``--static``).

Only a static qemu works for containers: with the F flag the kernel opens the
interpreter from the host, but a dynamic one would look for its libraries
inside the container's rootfs.

Preserve-argv0 (binfmt flag P): the kernel (>= 5.12) tells the interpreter
through ``AT_FLAGS`` that argv[0] was preserved, and qemu-user >= 6.0 reads it
(QEMU commit "linux-user: manage binfmt-misc preserve-arg[0] flag"; before,
only Debian's ``*-binfmt-P`` file-name hack existed). qemu-binfmt-conf.sh
adds P with ``--preserve-argv0 yes``. Without P, a program started as
``exec -a NAME`` (busybox applets, login shells ``-sh``) sees its path instead.
"""

from __future__ import annotations

import functools
import os
from rootless.record import Record

from archsupport.platform import QEMU_ARCH

PRESERVE_ARGV0_QEMU = (6, 0)
PRESERVE_ARGV0_KERNEL = (5, 12)


class QemuUser(Record):
    arch: str          # OCI arch
    path: str
    static: bool

    @property
    def version(self) -> str:
        return qemu_version(self.path)

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.version)

    def supports_preserve_argv0(self, kernel: tuple[int, int] | None = None) -> bool:
        return supports_preserve_argv0(self.version, kernel)


def _is_static(path: str) -> bool:
    """A static ELF has no PT_INTERP program header."""
    import struct

    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if hdr[:4] != b"\x7fELF":
                return False
            is64 = hdr[4] == 2
            end = "<" if hdr[5] == 1 else ">"
            if is64:
                phoff = struct.unpack(end + "Q", hdr[32:40])[0]
                phentsize, phnum = struct.unpack(end + "HH", hdr[54:58])
            else:
                phoff = struct.unpack(end + "I", hdr[28:32])[0]
                phentsize, phnum = struct.unpack(end + "HH", hdr[42:46])
            f.seek(phoff)
            ph = f.read(phentsize * phnum)
            for i in range(phnum):
                p_type = struct.unpack(end + "I", ph[i * phentsize:i * phentsize + 4])[0]
                if p_type == 3:  # PT_INTERP
                    return False
            return True
    except (OSError, struct.error):
        return False


def qemu_name(arch: str) -> str:
    """qemu's target name for OCI ``arch`` (arm64 -> aarch64)."""
    return QEMU_ARCH.get(arch, arch)


def find_qemu(arch: str, configured: str | None = None) -> QemuUser | None:
    """The best qemu-user for OCI ``arch``: configured path, qemu-X-static, static qemu-X."""
    q, _ = locate_qemu(arch, configured)
    return q


def locate_qemu(arch: str, configured: str | None = None, *,
                search_path: str | None = None) -> tuple[QemuUser | None, str]:
    """(qemu or None, why not / where from) - the reason words doctor and errors.

    ``search_path``: the directories to search (``a:b``) instead of PATH and
    the usual bin directories (hosttools.find) - for tests.
    """
    from rootless import hosttools

    name = qemu_name(arch)
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            real = os.path.realpath(configured)
            return QemuUser(arch, real, _is_static(real)), f"configured in [emulation.qemu] {arch}"
        return None, f"the configured qemu for {arch} ({configured}) is not an executable file"
    dynamic = None
    for cand in (f"qemu-{name}-static", f"qemu-{name}"):
        p = hosttools.find(cand) if search_path is None else _find_in(cand, search_path)
        if p:
            real = os.path.realpath(p)
            static = _is_static(real)
            if static:
                return QemuUser(arch, real, True), f"found {p}"
            dynamic = dynamic or QemuUser(arch, real, False)
    if dynamic:
        return dynamic, f"{dynamic.path} is dynamically linked (containers need a static qemu)"
    return None, f"no qemu-{name}-static or static qemu-{name} on PATH"


def _find_in(name: str, search_path: str) -> str | None:
    for d in search_path.split(os.pathsep):
        p = os.path.join(d, name)
        if d and os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def parse_version(text: str) -> tuple[int, ...]:
    nums = []
    for part in text.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        nums.append(int(digits))
    return tuple(nums)


@functools.lru_cache(maxsize=32)
def qemu_version(path: str) -> str:
    """``7.2.22`` from ``qemu-aarch64 version 7.2.22 (Debian ...)``; "unknown" if it does not say."""
    from rootless import hosttools
    from rootless.errors import RootlessError

    try:
        out = hosttools.spawn_capture([path, "--version"], f"ask {path} for its version")
    except RootlessError:
        return "unknown"
    first = out.decode(errors="replace").splitlines()[:1]
    if first and "version" in first[0]:
        rest = first[0].split("version", 1)[1].strip().split()
        if rest:
            return rest[0]
    return "unknown"


def supports_preserve_argv0(version: str, kernel: tuple[int, int] | None = None) -> bool:
    """Does binfmt flag P work with this qemu version on this kernel?"""
    if kernel is None:
        from rootless.doctor import kernel_version

        kernel = kernel_version()
    v = parse_version(version)
    return bool(v) and v >= PRESERVE_ARGV0_QEMU and kernel >= PRESERVE_ARGV0_KERNEL

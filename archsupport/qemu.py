"""qemu-user discovery: which interpreter runs a foreign architecture."""

from __future__ import annotations

import os
from dataclasses import dataclass

from archsupport.platform import QEMU_ARCH


@dataclass(frozen=True)
class QemuUser:
    arch: str          # OCI arch
    path: str
    static: bool

    @property
    def version(self) -> str:
        return qemu_version(self.path)


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
    except OSError:
        return False


def find_qemu(arch: str, configured: str | None = None) -> QemuUser | None:
    """The best qemu-user for OCI ``arch``: configured path, qemu-X-static, static qemu-X."""
    from rootless import hosttools

    name = QEMU_ARCH.get(arch, arch)
    if configured:
        if os.access(configured, os.X_OK):
            return QemuUser(arch, configured, _is_static(configured))
        return None
    for cand in (f"qemu-{name}-static", f"qemu-{name}"):
        p = hosttools.find(cand)
        if p:
            real = os.path.realpath(p)
            static = _is_static(real)
            if static or cand.endswith("-static"):
                return QemuUser(arch, real, static)
    return None


def qemu_version(path: str) -> str:
    from rootless import hosttools

    try:
        cp = hosttools.run([path, "--version"], f"ask {path} for its version", timeout=10, check=False)
    except Exception:
        return "unknown"
    first = cp.stdout.decode(errors="replace").splitlines()[:1]
    if first and "version" in first[0]:
        return first[0].split("version", 1)[1].strip().split()[0]
    return "unknown"

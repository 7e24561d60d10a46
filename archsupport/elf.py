"""ELF headers: which CPU architecture a binary is for.

``parse_header(data)`` reads the identification bytes and the fixed part of
the header (class, byte order, type, e_machine, e_flags) from the first
64 bytes of a file; ``read_elf(path)`` does it for a file; ``platform_of``
turns the header into an OCI (arch, variant); ``explain_mismatch`` words the
message users see when a binary cannot run ("this binary is arm64, the host
is amd64 ...").

Pure and small: used on the ``run`` path to check an entrypoint and to
explain exec failures (ENOEXEC), so it imports nothing heavy (no
dataclasses: ``ElfHeader`` is a ``rootless.record.Record``).

A "root" below is a directory, or the layers of an overlay (a sequence of
directories, TOP FIRST: the container's upper dir, then the image's layers),
read with overlay's rules (a 0/0 character device is a whiteout, an
``overlay.opaque`` directory hides the layers below).
"""

from __future__ import annotations

import os
import stat as _stat
import struct

from rootless.record import Record

ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_EXEC, ET_DYN = 2, 3

EM_386 = 3
EM_MIPS = 8
EM_PPC = 20
EM_PPC64 = 21
EM_S390 = 22
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258

MACHINE_NAMES = {
    EM_386: "Intel 80386", EM_MIPS: "MIPS", EM_PPC: "PowerPC", EM_PPC64: "PowerPC64", EM_S390: "IBM S/390",
    EM_ARM: "ARM", EM_X86_64: "x86-64", EM_AARCH64: "AArch64", EM_RISCV: "RISC-V", EM_LOONGARCH: "LoongArch",
}

# (e_machine, class, byte order) -> OCI architecture
_OCI: dict[tuple[int, int, int], str] = {
    (EM_X86_64, ELFCLASS64, ELFDATA2LSB): "amd64",
    (EM_386, ELFCLASS32, ELFDATA2LSB): "386",
    (EM_AARCH64, ELFCLASS64, ELFDATA2LSB): "arm64",
    (EM_ARM, ELFCLASS32, ELFDATA2LSB): "arm",
    (EM_RISCV, ELFCLASS64, ELFDATA2LSB): "riscv64",
    (EM_PPC64, ELFCLASS64, ELFDATA2LSB): "ppc64le",
    (EM_PPC64, ELFCLASS64, ELFDATA2MSB): "ppc64",
    (EM_S390, ELFCLASS64, ELFDATA2MSB): "s390x",
    (EM_MIPS, ELFCLASS64, ELFDATA2LSB): "mips64le",
    (EM_MIPS, ELFCLASS64, ELFDATA2MSB): "mips64",
    (EM_MIPS, ELFCLASS32, ELFDATA2LSB): "mipsle",
    (EM_MIPS, ELFCLASS32, ELFDATA2MSB): "mips",
    (EM_LOONGARCH, ELFCLASS64, ELFDATA2LSB): "loong64",
}


class NotELF(ValueError):
    """The data is not an ELF header (too short, wrong magic, bad class)."""


class ElfHeader(Record):
    bits: int            # 32 or 64
    little_endian: bool
    osabi: int
    type: int            # ET_EXEC, ET_DYN, ...
    machine: int         # e_machine
    flags: int           # e_flags

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"e_machine {self.machine}")

    @property
    def architecture(self) -> str | None:
        """The OCI architecture (``arm64``...), or None when rootless knows none."""
        return _OCI.get((self.machine, ELFCLASS64 if self.bits == 64 else ELFCLASS32,
                         ELFDATA2LSB if self.little_endian else ELFDATA2MSB))

    def describe(self) -> str:
        """``ELF 64-bit LSB AArch64 (arm64)`` - for messages."""
        arch = self.architecture
        return (f"ELF {self.bits}-bit {'LSB' if self.little_endian else 'MSB'} {self.machine_name}"
                + (f" ({arch})" if arch else ""))


def parse_header(data: bytes) -> ElfHeader:
    """Parse the first bytes of a file (at least 52 for 32-bit, 64 for 64-bit)."""
    if len(data) < 20 or data[:4] != b"\x7fELF":
        raise NotELF("not an ELF file")
    cls, order = data[4], data[5]
    if cls not in (ELFCLASS32, ELFCLASS64):
        raise NotELF(f"bad ELF class {cls}")
    if order not in (ELFDATA2LSB, ELFDATA2MSB):
        raise NotELF(f"bad ELF byte order {order}")
    end = "<" if order == ELFDATA2LSB else ">"
    need = 64 if cls == ELFCLASS64 else 52
    if len(data) < need:
        raise NotELF(f"truncated ELF header ({len(data)} of {need} bytes)")
    e_type, e_machine = struct.unpack_from(end + "HH", data, 16)
    flags_off = 48 if cls == ELFCLASS64 else 36
    (e_flags,) = struct.unpack_from(end + "I", data, flags_off)
    return ElfHeader(bits=64 if cls == ELFCLASS64 else 32, little_endian=order == ELFDATA2LSB, osabi=data[7],
                     type=e_type, machine=e_machine, flags=e_flags)


def read_elf(path: str | os.PathLike) -> ElfHeader | None:
    """The ELF header of ``path``; None when it is not ELF (a script, data)."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError:
        return None
    try:
        return parse_header(data)
    except NotELF:
        return None


def _layers(root: str | os.PathLike | list | tuple) -> tuple[str, ...]:
    return (os.fspath(root),) if isinstance(root, (str, os.PathLike)) else tuple(map(os.fspath, root))


def _hides_lower(d: str) -> bool:
    """Does this layer's ``d`` hide what the layers below have there (overlay)?"""
    try:
        st = os.lstat(d)
    except OSError:
        return False          # not in this layer: look further down
    if not _stat.S_ISDIR(st.st_mode):
        return True           # a file or a whiteout replaced the directory
    from rootless.storage import is_opaque

    return is_opaque(d)


def _lookup(layers: tuple[str, ...], done: list[str], name: str) -> tuple[str, os.stat_result] | None:
    """(host path, lstat) of ``done/name`` in the merged view of ``layers`` (top first)."""
    for i, layer in enumerate(layers):
        p = os.path.join(layer, *done, name)
        try:
            st = os.lstat(p)
        except OSError:
            st = None
        if st is not None:
            if _stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None       # whiteout
            return p, st
        if i + 1 < len(layers) and _hides_lower(os.path.join(layer, *done)):
            return None
    return None


def resolve_in_root(root: str | os.PathLike | list | tuple, path: str, *, max_links: int = 40) -> str | None:
    """Resolve ``path`` (absolute inside the image) under ``root`` without leaving it.

    ``root``: a directory, or overlay layers top first (see the module's doc).
    Symbolic links are followed as the container would see them: an absolute
    target restarts at ``root``, ``..`` stops at ``root``. Returns the host
    path of the final file, or None if it does not exist (or loops).
    """
    layers = _layers(root)
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []       # the path so far, inside the image
    hosts: list[str] = []      # the host path of each of its components
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
                hosts.pop()
            continue
        hit = _lookup(layers, done, name)
        if hit is None:
            return None
        found, st = hit
        if _stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                return None
            target = os.readlink(found)
            if target.startswith("/"):
                done, hosts = [], []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(name)
        hosts.append(found)
    return hosts[-1] if hosts else layers[0]


def find_in_root(root: str | os.PathLike | list | tuple, cmd: str,
                 path_env: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") -> str | None:
    """Where the container's ``execvp(cmd)`` would find ``cmd``, as a host path under ``root``."""
    if "/" in cmd:
        p = resolve_in_root(root, cmd if cmd.startswith("/") else "/" + cmd)
        return p if p and os.path.isfile(p) else None
    for d in path_env.split(":"):
        if not d:
            continue
        p = resolve_in_root(root, f"{d}/{cmd}")
        if p and os.path.isfile(p):
            return p
    return None


def binary_architecture(root: str | os.PathLike | list | tuple, cmd: str,
                        path_env: str | None = None) -> tuple[str | None, ElfHeader | None]:
    """(host path, ELF header) of the program ``cmd`` in the rootfs ``root``.

    A ``#!`` script is followed to its interpreter (one level, as the kernel
    does for the usual case), since the interpreter is what must run.
    """
    host = find_in_root(root, cmd, path_env) if path_env else find_in_root(root, cmd)
    if host is None:
        return None, None
    try:
        with open(host, "rb") as f:
            head = f.read(256)
    except OSError:
        return host, None
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip().split()
        if line:
            interp = resolve_in_root(root, os.fsdecode(line[0]))
            if interp:
                return interp, read_elf(interp)
        return host, None
    try:
        return host, parse_header(head)
    except NotELF:
        return host, None


def explain_mismatch(what: str, header: ElfHeader, host_arch: str) -> str:
    """``/bin/sh in the image is arm64 (ELF 64-bit LSB AArch64), the host is amd64``."""
    arch = header.architecture or header.machine_name
    return f"{what} is {arch} ({header.describe()}), the host is {host_arch}"

"""binfmt_misc: the magic/mask table, register strings, entries, registration.

The one table
-------------
``FORMATS`` holds, per OCI architecture, the magic and mask of QEMU's
``scripts/qemu-binfmt-conf.sh`` (QEMU 7.2, identical to what Debian 12's
qemu-user-static installs in /usr/lib/binfmt.d). The values are kept as the
script writes them (``\\xNN`` text) and decoded once.

Register strings
----------------
``register_line(fmt, interpreter, flags)`` gives
``:name:M:0:MAGIC:MASK:INTERPRETER:FLAGS`` with EVERY magic/mask byte written
as a 4-character ``\\xNN`` escape: the kernel decodes them. Raw bytes would
put NULs in the line, which truncate the fields; the resulting entry can match
every 64-bit ELF file - the interpreter included - and the host then fails
every exec with ELOOP. ``check_safe`` refuses a registration that would
match the interpreter itself or a native binary, and the host's native
architecture is never registered.

Flags: ``F`` always (the kernel opens the interpreter at registration, so it
works inside a container's rootfs, after pivot_root); ``P`` (preserve argv[0])
only when the interpreter supports it (archsupport.qemu).

Sandboxed registration (Linux >= 6.7)
-------------------------------------
Inside a user namespace, the first mount of binfmt_misc creates an empty
instance for that namespace. Found on this project's hosts (kernel 6.18,
tests/integration/test_sandbox_binfmt.py):

* exec looks the format up in the nearest instance walking up the user
  namespaces: nested user namespaces (a container's children, ``unshare -U``
  inside) use the container's instance;
* a namespace's own instance shadows its ancestors' entirely (a host
  registration is not consulted once a container mounted its own);
* the instance does NOT survive unmounting: umount (even ``umount -l``) of
  its last mount removes every entry. The mount must therefore stay in the
  container's mount tree for the container's life (stacking another mount on
  top of it is fine) - see ``sandbox_register``.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from rootless.errors import EmulationError, HostError

HOST_BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
BINFMT_D = "/etc/binfmt.d"
HOST_PREFIX = "rootless-"          # names of the entries `rootless binfmt install` makes
MAX_REGISTER = 1920                 # the kernel's MAX_REGISTER_LENGTH


def _unescape(text: str) -> bytes:
    """Decode qemu-binfmt-conf.sh's notation (``\\xNN`` escapes, other chars literal)."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text.startswith("\\x", i):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += text[i].encode("ascii")
            i += 1
    return bytes(out)


@dataclass(frozen=True)
class BinfmtFormat:
    arch: str          # OCI architecture
    qemu: str          # qemu-user target name (qemu-<qemu>-static)
    magic: bytes
    mask: bytes
    offset: int = 0

    def matches(self, header: bytes) -> bool:
        return _match(self.offset, self.magic, self.mask, header)

    @property
    def name(self) -> str:
        return f"qemu-{self.qemu}"


def _match(offset: int, magic: bytes, mask: bytes | None, header: bytes) -> bool:
    """The kernel's test: every ``(header ^ magic) & mask`` byte is 0."""
    seg = header[offset:offset + len(magic)]
    if len(seg) < len(magic):
        return False
    if mask is None:
        return seg == magic
    return all(((h ^ m) & k) == 0 for h, m, k in zip(seg, magic, mask))


# OCI arch, qemu target, magic, mask - copied from QEMU 7.2 scripts/qemu-binfmt-conf.sh
_TABLE = (
    ("amd64", "x86_64",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
     r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("386", "i386",
     r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x03\x00",
     r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("arm64", "aarch64",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
     r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("arm", "arm",
     r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
     r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("riscv64", "riscv64",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
     r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("ppc64le", "ppc64le",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00",
     r"\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00"),
    ("s390x", "s390x",
     r"\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16",
     r"\xff\xff\xff\xff\xff\xff\xff\xfc\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff"),
    ("mips64le", "mips64el",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x08\x00",
     r"\xff\xff\xff\xff\xff\xff\xff\x00\xfe\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
    ("loong64", "loongarch64",
     r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x02\x01",
     r"\xff\xff\xff\xff\xff\xff\xff\xfc\x00\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"),
)

FORMATS: dict[str, BinfmtFormat] = {
    arch: BinfmtFormat(arch, qemu, _unescape(magic), _unescape(mask)) for arch, qemu, magic, mask in _TABLE
}


def format_for(arch: str) -> BinfmtFormat:
    try:
        return FORMATS[arch]
    except KeyError:
        raise EmulationError(f"no binfmt_misc magic is known for architecture {arch!r}",
                             hint="known: " + ", ".join(FORMATS)) from None


def escape(data: bytes) -> str:
    """Every byte as ``\\xNN`` text (never a raw byte, never a NUL)."""
    return "".join(f"\\x{b:02x}" for b in data)


def register_line(fmt: BinfmtFormat, interpreter: str, flags: str = "F", name: str | None = None) -> str:
    """The text to write to ``register`` (no trailing newline needed)."""
    name = name or fmt.name
    if not name or any(c in name for c in ":/\n") or name in (".", ".."):
        raise EmulationError(f"invalid binfmt_misc entry name {name!r}")
    if not interpreter.startswith("/") or any(c in interpreter for c in ":\n\0") or " " in interpreter:
        raise EmulationError(f"cannot register interpreter {interpreter!r}: it must be an absolute path "
                             "without ':', spaces or newlines",
                             hint="install qemu-user-static, or configure a plain path in [emulation.qemu]")
    if set(flags) - set("POCF"):
        raise EmulationError(f"invalid binfmt_misc flags {flags!r}")
    if len(fmt.magic) != len(fmt.mask):
        raise EmulationError(f"binfmt table entry for {fmt.arch}: magic and mask lengths differ")
    line = f":{name}:M:{fmt.offset}:{escape(fmt.magic)}:{escape(fmt.mask)}:{interpreter}:{flags}"
    if len(line) > MAX_REGISTER:
        raise EmulationError(f"binfmt_misc register line for {fmt.arch} too long ({len(line)} bytes)")
    return line


def native_headers() -> list[tuple[str, bytes]]:
    """Headers of binaries the host runs natively (its Python, /bin/sh), for safety checks."""
    import sys

    out = []
    for p in (sys.executable, "/bin/sh", "/usr/bin/env"):
        try:
            with open(os.path.realpath(p), "rb") as f:
                out.append((p, f.read(128)))
        except OSError:
            continue
    return out


def check_safe(fmt: BinfmtFormat, interpreter: str, native_arches: set[str] | frozenset[str]) -> None:
    """Refuse a registration that could hijack the host or loop on itself."""
    if fmt.arch in native_arches:
        raise EmulationError(f"refusing to register {fmt.arch}: this host runs it natively",
                             hint="registering the host's own architecture would send every program through qemu")
    try:
        with open(interpreter, "rb") as f:
            ihead = f.read(128)
    except OSError as e:
        raise EmulationError(f"cannot read the interpreter {interpreter}: {e.strerror}",
                             hint="install qemu-user-static (apt-get install qemu-user-static)") from None
    if fmt.matches(ihead):
        raise EmulationError(f"refusing to register {fmt.arch}: its magic matches the interpreter {interpreter} "
                             "itself (every exec would loop)")
    for path, head in native_headers():
        if fmt.matches(head):
            raise EmulationError(f"refusing to register {fmt.arch}: its magic matches {path}, a native program")


# ---------------------------------------------------------------------------
# entries as the kernel shows them

@dataclass(frozen=True)
class BinfmtEntry:
    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int = 0
    magic: bytes = b""
    mask: bytes | None = None
    extension: str = ""      # for E (extension) entries

    def matches(self, header: bytes) -> bool:
        if self.extension or not self.magic:
            return False
        return _match(self.offset, self.magic, self.mask, header)

    def architecture(self) -> str | None:
        """The OCI architecture this entry runs (by our table's sample headers)."""
        from archsupport.probe import ARCHES, probe_elf

        for arch in ARCHES:
            if self.matches(probe_elf(arch)):
                return arch
        return None

    def to_json(self) -> dict:
        return {"name": self.name, "enabled": self.enabled, "interpreter": self.interpreter, "flags": self.flags,
                "offset": self.offset, "magic": self.magic.hex(), "mask": self.mask.hex() if self.mask else None,
                "extension": self.extension}


def parse_entry(name: str, text: str) -> BinfmtEntry:
    """Parse ``/proc/sys/fs/binfmt_misc/NAME`` (the kernel's ``entry_status`` format)."""
    enabled = False
    interp = ""
    flags = ""
    offset = 0
    magic = b""
    mask = None
    ext = ""
    for line in text.splitlines():
        line = line.strip()
        if line == "enabled":
            enabled = True
        elif line == "disabled":
            enabled = False
        elif line.startswith("interpreter "):
            interp = line[len("interpreter "):]
        elif line.startswith("flags:"):
            flags = line[len("flags:"):].strip()
        elif line.startswith("offset "):
            offset = int(line.split()[1])
        elif line.startswith("magic "):
            magic = bytes.fromhex(line.split()[1])
        elif line.startswith("mask "):
            mask = bytes.fromhex(line.split()[1])
        elif line.startswith("extension "):
            ext = line.split(None, 1)[1]
    return BinfmtEntry(name, enabled, interp, flags, offset, magic, mask, ext)


@dataclass(frozen=True)
class BinfmtState:
    """One binfmt_misc instance (the host's, or a sandboxed one) as seen at ``path``."""
    path: str
    mounted: bool
    enabled: bool
    entries: tuple[BinfmtEntry, ...] = ()

    def entry_for(self, arch: str, *, need_flags: str = "") -> BinfmtEntry | None:
        """An enabled entry that would run an ``arch`` binary (and has ``need_flags``)."""
        if not self.mounted or not self.enabled:
            return None
        from archsupport.probe import ARCHES, probe_elf

        if arch not in ARCHES:
            return None
        head = probe_elf(arch)
        for e in self.entries:
            if e.enabled and e.matches(head) and all(f in e.flags for f in need_flags):
                return e
        return None

    def any_entry_for(self, arch: str) -> BinfmtEntry | None:
        """A matching entry, enabled or not, whatever its flags (for explanations)."""
        from archsupport.probe import ARCHES, probe_elf

        if arch not in ARCHES:
            return None
        head = probe_elf(arch)
        for e in self.entries:
            if e.matches(head):
                return e
        return None


def read_state(path: str = HOST_BINFMT_DIR) -> BinfmtState:
    """The registrations of the binfmt_misc mounted at ``path`` (empty if not mounted)."""
    status = os.path.join(path, "status")
    try:
        with open(status) as f:
            enabled = f.read().strip() == "enabled"
    except OSError:
        return BinfmtState(path, False, False)
    entries = []
    try:
        names = sorted(os.listdir(path))
    except OSError:
        names = []
    for n in names:
        if n in ("register", "status"):
            continue
        try:
            with open(os.path.join(path, n)) as f:
                entries.append(parse_entry(n, f.read()))
        except OSError:
            continue          # removed meanwhile
    return BinfmtState(path, True, enabled, tuple(entries))


def write_register(binfmt_dir: str, line: str) -> None:
    """Write one register line; turn the kernel's errno into a clear error."""
    path = os.path.join(binfmt_dir, "register")
    name = line.split(":")[1] if line.startswith(":") else "?"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HostError(f"cannot open {path}: {e.strerror}",
                        hint="binfmt_misc must be mounted there and writable (root, or root of a user namespace "
                             "on Linux >= 6.7)") from None
    try:
        os.write(fd, line.encode("ascii"))
    except OSError as e:
        if e.errno == errno.EEXIST:
            raise HostError(f"binfmt_misc entry {name} already exists in {binfmt_dir}",
                            hint=f"remove it first: echo -1 > {binfmt_dir}/{name}") from None
        if e.errno == errno.ENOENT:
            raise HostError(f"registering {name}: the interpreter does not exist") from None
        raise HostError(f"registering {name} in {binfmt_dir} failed: {e.strerror}") from None
    finally:
        os.close(fd)


def remove_entry(binfmt_dir: str, name: str) -> bool:
    """Remove entry ``name``; False if it did not exist."""
    try:
        with open(os.path.join(binfmt_dir, name), "w") as f:
            f.write("-1")
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise HostError(f"cannot remove binfmt_misc entry {name}: {e.strerror}") from None


# ---------------------------------------------------------------------------
# sandboxed registration (inside the container's user + mount namespace)

def _is_procfs(path: str) -> bool:
    from rootless import syscalls

    try:
        return syscalls.fs_type(path) == syscalls.PROC_SUPER_MAGIC
    except OSError:
        return False


def sandbox_mountpoint(rootfs: str) -> str:
    """Where ``sandbox_register`` mounts the instance for ``rootfs``.

    If the container's /proc is already mounted: its
    ``proc/sys/fs/binfmt_misc`` (the container sees its registrations where a
    normal system has them). Otherwise ``rootfs/proc`` itself: the /proc
    mounted there later stacks on top and keeps the instance alive, hidden.
    """
    proc = os.path.join(rootfs, "proc")
    if _is_procfs(proc):
        return os.path.join(proc, "sys", "fs", "binfmt_misc")
    return proc


def sandbox_register(emu, rootfs: str) -> str:
    """Mount a fresh binfmt_misc for this user namespace and register ``emu``'s qemu with F.

    Call as root of the container's user namespace, in its mount namespace,
    BEFORE pivot_root (F makes the kernel open the interpreter now, from the
    host's filesystem). The mount is left inside ``rootfs`` (see
    ``sandbox_mountpoint``): unmounting it would drop the registration, and it
    goes away with the container's mount namespace. Returns the mountpoint.
    """
    from rootless import syscalls

    if emu.mode != "sandboxed" or emu.qemu is None:
        raise EmulationError(f"sandbox_register called for emulation mode {emu.mode!r}")
    fmt = format_for(emu.platform.architecture)
    # never a registration that could catch qemu itself or a native program (cheap: three small reads)
    from archsupport.platform import host_platform

    check_safe(fmt, emu.qemu.path, {host_platform().architecture})
    proc = os.path.join(rootfs, "proc")
    if os.path.islink(proc) or (os.path.lexists(proc) and not os.path.isdir(proc)):
        raise EmulationError("the image's /proc is not a directory (a symbolic link or a file): cannot set up "
                             "emulation", hint="fix the image: /proc must be an empty directory")
    where = sandbox_mountpoint(rootfs)
    if not os.path.isdir(where):
        try:
            os.makedirs(where, mode=0o555, exist_ok=True)
        except OSError as e:
            raise HostError(f"cannot create {where} for binfmt_misc: {e.strerror}") from None
    syscalls.check("mount binfmt_misc in the container's user namespace", syscalls.mount,
                   "binfmt_misc", where, "binfmt_misc",
                   syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
                   hint="sandboxed binfmt_misc needs Linux >= 6.7; or an admin runs "
                        f"`sudo rootless binfmt install --arch {fmt.arch}`")
    try:
        write_register(where, register_line(fmt, emu.qemu.path, emu.flags))
    except BaseException:
        try:
            syscalls.umount2(where, syscalls.MNT_DETACH)
        except OSError:
            pass
        raise
    return where

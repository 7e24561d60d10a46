"""Tiny static probe programs, one per architecture, built in memory.

``probe_elf("arm64")`` returns a complete ELF executable (~140 bytes) whose
only instructions are ``exit_group(42)`` for that CPU. Executing it through
a binfmt_misc registration proves the registration works end to end (the
kernel matched the header, opened the interpreter, qemu ran the code) with
no test image and no network: `rootless binfmt status` does exactly that.

The header is a real one (class, byte order, e_machine, e_flags as the
toolchains write them), so it also serves as the sample header an
architecture's binfmt magic/mask must match.
"""

from __future__ import annotations

import struct

EXIT_CODE = 42

# OCI arch -> (class 32/64, little endian, e_machine, e_flags, code)
# code = exit_group(42) in that instruction set
_PROGRAMS: dict[str, tuple[int, bool, int, int, bytes]] = {
    # mov edi, 42 ; mov eax, 231 (exit_group) ; syscall
    "amd64": (64, True, 62, 0, bytes.fromhex("bf2a000000" "b8e7000000" "0f05")),
    # mov ebx, 42 ; mov eax, 252 (exit_group) ; int 0x80
    "386": (32, True, 3, 0, bytes.fromhex("bb2a000000" "b8fc000000" "cd80")),
    # movz x0, #42 ; movz x8, #94 (exit_group) ; svc #0
    "arm64": (64, True, 183, 0, struct.pack("<3I", 0xD2800540, 0xD2800BC8, 0xD4000001)),
    # mov r0, #42 ; mov r7, #248 (exit_group) ; svc #0   (EABI5, soft/hard float agnostic)
    "arm": (32, True, 40, 0x05000000, struct.pack("<3I", 0xE3A0002A, 0xE3A070F8, 0xEF000000)),
    # addi a0, zero, 42 ; addi a7, zero, 94 (exit_group) ; ecall    (RVC, double-float ABI)
    "riscv64": (64, True, 243, 0x5, struct.pack("<3I", 0x02A00513, 0x05E00893, 0x00000073)),
    # li r3, 42 ; li r0, 234 (exit_group) ; sc     (ELFv2 ABI)
    "ppc64le": (64, True, 21, 0x2, struct.pack("<3I", 0x3860002A, 0x380000EA, 0x44000002)),
    # lghi %r2, 42 ; svc 248 (exit_group)
    "s390x": (64, False, 22, 0, bytes.fromhex("a729002a" "0af8")),
    # addiu a0, zero, 42 ; addiu v0, zero, 5205 (n64 exit_group) ; syscall   (MIPS64r2, n64)
    "mips64le": (64, True, 8, 0x80000007, struct.pack("<3I", 0x2404002A, 0x24021455, 0x0000000C)),
    # addi.w a0, zero, 42 ; addi.w a7, zero, 94 (exit_group) ; syscall 0   (LP64D)
    "loong64": (64, True, 258, 0x43, struct.pack("<3I", 0x0280A804, 0x0281780B, 0x002B0000)),
}

ARCHES = tuple(_PROGRAMS)


def probe_elf(arch: str) -> bytes:
    """A static ELF executable for OCI ``arch`` that exits with status 42."""
    bits, little, machine, flags, code = _PROGRAMS[arch]
    e = "<" if little else ">"
    base = 0x400000 if bits == 64 else 0x10000
    if bits == 64:
        ehsize, phsize = 64, 56
    else:
        ehsize, phsize = 52, 32
    code_off = ehsize + phsize
    entry = base + code_off
    total = code_off + len(code)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if little else 2, 1, 0]) + b"\0" * 8
    if bits == 64:
        ehdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, machine, 1, entry, ehsize, 0, flags,
                                   ehsize, phsize, 1, 0, 0, 0)
        # PT_LOAD, R+X, offset 0 at base
        phdr = struct.pack(e + "IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x10000)
    else:
        ehdr = ident + struct.pack(e + "HHIIIIIHHHHHH", 2, machine, 1, entry, ehsize, 0, flags,
                                   ehsize, phsize, 1, 0, 0, 0)
        phdr = struct.pack(e + "IIIIIIII", 1, 0, base, base, total, total, 5, 0x10000)
    out = ehdr + phdr + code
    assert len(ehdr) == ehsize and len(phdr) == phsize and len(out) == total
    return out

"""ELF header parsing against real Debian binaries (tests/unit/data/elf)."""

import os
from pathlib import Path

import pytest

from archsupport import elf
from archsupport.probe import ARCHES, probe_elf

DATA = Path(__file__).parent / "data" / "elf"

EXPECT = {
    # file: (bits, little endian, e_machine, OCI arch)
    "busybox-static_amd64.head": (64, True, elf.EM_X86_64, "amd64"),
    "busybox-static_arm64.head": (64, True, elf.EM_AARCH64, "arm64"),
    "busybox-static_armel.head": (32, True, elf.EM_ARM, "arm"),
    "busybox-static_armhf.head": (32, True, elf.EM_ARM, "arm"),
    "busybox-static_i386.head": (32, True, elf.EM_386, "386"),
    "busybox-static_mips64el.head": (64, True, elf.EM_MIPS, "mips64le"),
    "busybox-static_ppc64el.head": (64, True, elf.EM_PPC64, "ppc64le"),
    "busybox-static_s390x.head": (64, False, elf.EM_S390, "s390x"),
    "ld-linux-riscv64-lp64d.so.1.head": (64, True, elf.EM_RISCV, "riscv64"),
}


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_real_headers(name):
    h = elf.parse_header((DATA / name).read_bytes())
    bits, little, machine, arch = EXPECT[name]
    assert (h.bits, h.little_endian, h.machine, h.architecture) == (bits, little, machine, arch)
    assert h.type in (elf.ET_EXEC, elf.ET_DYN)


def test_real_header_details():
    armhf = elf.parse_header((DATA / "busybox-static_armhf.head").read_bytes())
    assert armhf.flags & 0xFF000000 == 0x05000000          # EABI version 5
    assert armhf.flags & 0x400                              # EF_ARM_ABI_FLOAT_HARD
    ld = elf.parse_header((DATA / "ld-linux-riscv64-lp64d.so.1.head").read_bytes())
    assert ld.type == elf.ET_DYN
    assert elf.parse_header((DATA / "busybox-static_s390x.head").read_bytes()).describe() == \
        "ELF 64-bit MSB IBM S/390 (s390x)"


@pytest.mark.parametrize("arch", ARCHES)
def test_probe_programs_parse_as_their_arch(arch):
    assert elf.parse_header(probe_elf(arch)).architecture == arch


@pytest.mark.parametrize("data", [b"", b"#!/bin/sh\n", b"\x7fELF", b"\x7fELF\x03\x01" + b"\0" * 60,
                                  b"\x7fELF\x02\x03" + b"\0" * 60, b"\x7fELF\x02\x01" + b"\0" * 30])
def test_not_elf(data):
    with pytest.raises(elf.NotELF):
        elf.parse_header(data)


def test_unknown_machine_is_described_but_has_no_arch():
    data = bytearray(probe_elf("arm64"))
    data[18:20] = (2).to_bytes(2, "little")                  # EM_SPARC
    h = elf.parse_header(bytes(data))
    assert h.architecture is None and "e_machine 2" in h.describe()


def test_explain_mismatch():
    h = elf.parse_header((DATA / "busybox-static_arm64.head").read_bytes())
    assert elf.explain_mismatch("/bin/sh in the image", h, "amd64") == \
        "/bin/sh in the image is arm64 (ELF 64-bit LSB AArch64 (arm64)), the host is amd64"


def _rootfs(tmp_path):
    r = tmp_path / "root"
    (r / "bin").mkdir(parents=True)
    (r / "usr" / "bin").mkdir(parents=True)
    (r / "bin" / "busybox").write_bytes(probe_elf("arm64"))
    os.symlink("busybox", r / "bin" / "sh")
    os.symlink("/bin/busybox", r / "usr" / "bin" / "env")
    os.symlink("../../../../../etc/passwd", r / "bin" / "escape")
    (r / "usr" / "bin" / "script").write_text("#!/usr/bin/env sh\necho hi\n")
    (r / "usr" / "bin" / "data").write_text("plain text")
    return r


def test_binary_architecture_in_rootfs(tmp_path):
    r = _rootfs(tmp_path)
    path, h = elf.binary_architecture(str(r), "sh")
    assert path == str(r / "bin" / "busybox") and h.architecture == "arm64"
    # a script is judged by its interpreter (here reached through an absolute symlink)
    path, h = elf.binary_architecture(str(r), "/usr/bin/script")
    assert path == str(r / "bin" / "busybox") and h.architecture == "arm64"
    assert elf.binary_architecture(str(r), "data")[1] is None
    assert elf.binary_architecture(str(r), "missing") == (None, None)


def test_resolve_in_root_never_leaves_the_root(tmp_path):
    r = _rootfs(tmp_path)
    got = elf.resolve_in_root(str(r), "/bin/escape")
    # ../ beyond the root stops at the root: /etc/passwd of the IMAGE (absent), not the host's
    assert got is None
    (r / "etc").mkdir()
    (r / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")
    assert elf.resolve_in_root(str(r), "/bin/escape") == str(r / "etc" / "passwd")
    os.symlink("loop", r / "loop")
    assert elf.resolve_in_root(str(r), "/loop") is None

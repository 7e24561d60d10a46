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


def _layer(base, name, files):
    """A layer directory: {path: bytes | ("link", target) | "whiteout" | "opaque-dir"}."""
    d = base / name
    d.mkdir()
    for path, what in files.items():
        p = d / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if what == "whiteout":
            os.mknod(p, 0o20600, os.makedev(0, 0))      # overlay's whiteout: a 0/0 character device
        elif what == "opaque-dir":
            p.mkdir()
            os.setxattr(p, "user.overlay.opaque", b"y")
        elif isinstance(what, tuple):
            os.symlink(what[1], p)
        else:
            p.write_bytes(what)
    return str(d)


def test_resolve_through_overlay_layers(tmp_path):
    """The merged view of layers (top first), as the container sees it before it is mounted."""
    arm, amd, s390 = probe_elf("arm64"), probe_elf("amd64"), probe_elf("s390x")
    lower = _layer(tmp_path, "lower", {"/bin/busybox": amd, "/bin/sh": ("link", "busybox"),
                                      "/usr/bin/gone": amd, "/opt/app/run": s390, "/sbin/tool": amd})
    middle = _layer(tmp_path, "middle", {"/bin/busybox": arm, "/usr/bin/gone": "whiteout",
                                        "/opt/app": "opaque-dir", "/sbin/tool2": amd})
    upper = _layer(tmp_path, "upper", {"/usr/local/bin/app": ("link", "/bin/sh")})
    layers = [upper, middle, lower]
    # a symlink of the upper layer, to a link of the lowest, to the file of the middle one
    assert elf.resolve_in_root(layers, "/usr/local/bin/app") == os.path.join(middle, "bin", "busybox")
    path, h = elf.binary_architecture(layers, "sh")
    assert path == os.path.join(middle, "bin", "busybox") and h.architecture == "arm64"
    assert elf.binary_architecture(layers[2:], "sh")[1].architecture == "amd64"
    # a whiteout hides the lower file; an opaque directory hides the lower directory's contents
    assert elf.resolve_in_root(layers, "/usr/bin/gone") is None
    assert elf.binary_architecture(layers, "/usr/bin/gone") == (None, None)
    assert elf.resolve_in_root(layers, "/opt/app/run") is None
    assert elf.resolve_in_root(layers[2:], "/opt/app/run") == os.path.join(lower, "opt", "app", "run")
    # a directory present in several layers merges them
    assert elf.resolve_in_root(layers, "/sbin/tool") == os.path.join(lower, "sbin", "tool")
    assert elf.resolve_in_root(layers, "/sbin/tool2") == os.path.join(middle, "sbin", "tool2")
    # ".." after a real directory goes back up in the merged view
    assert elf.resolve_in_root(layers, "/sbin/../bin/busybox") == os.path.join(middle, "bin", "busybox")
    assert elf.resolve_in_root(layers, "/") == upper

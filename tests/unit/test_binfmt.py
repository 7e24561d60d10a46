"""The binfmt_misc table, register strings and entry parsing (pure logic).

The magic/mask table is checked against REAL ELF headers of Debian binaries
(tests/unit/data/elf, see its README): each header must be matched by its
own architecture's entry and by no other.
"""

from pathlib import Path

import pytest

from archsupport import binfmt
from archsupport.binfmt import FORMATS, BinfmtState, parse_entry, register_line
from archsupport.probe import ARCHES, probe_elf
from rootless.errors import EmulationError

DATA = Path(__file__).parent / "data" / "elf"

# file -> OCI arch it must be recognised as
REAL = {
    "busybox-static_amd64.head": "amd64",
    "busybox-static_arm64.head": "arm64",
    "busybox-static_armel.head": "arm",
    "busybox-static_armhf.head": "arm",
    "busybox-static_i386.head": "386",
    "busybox-static_mips64el.head": "mips64le",
    "busybox-static_ppc64el.head": "ppc64le",
    "busybox-static_s390x.head": "s390x",
    "ld-linux-riscv64-lp64d.so.1.head": "riscv64",
    "libc.so.6_riscv64.head": "riscv64",
}


def test_data_files_present():
    assert sorted(p.name for p in DATA.glob("*.head")) == sorted(REAL)
    for name in REAL:
        assert (DATA / name).stat().st_size == 128


@pytest.mark.parametrize("name,arch", sorted(REAL.items()))
def test_table_matches_real_header_of_its_arch_only(name, arch):
    head = (DATA / name).read_bytes()
    matched = [a for a, fmt in FORMATS.items() if fmt.matches(head)]
    assert matched == [arch]


def test_every_real_arch_covered():
    # every architecture of the table but loong64 (not in bookworm) has a real binary
    assert set(REAL.values()) == set(FORMATS) - {"loong64"}


@pytest.mark.parametrize("arch", ARCHES)
def test_probe_header_matches_only_its_arch(arch):
    head = probe_elf(arch)
    assert [a for a, fmt in FORMATS.items() if fmt.matches(head)] == [arch]


def test_table_values_are_qemus():
    # spot-check against QEMU 7.2's qemu-binfmt-conf.sh (and NOTES.md)
    a = FORMATS["arm64"]
    assert a.magic == b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\xb7\x00"
    assert a.mask == bytes.fromhex("ffffffffffffff00fffffffffffffffffeffffff")
    assert a.qemu == "aarch64" and a.name == "qemu-aarch64"
    assert FORMATS["s390x"].magic[-4:] == b"\x00\x02\x00\x16"       # big-endian e_type/e_machine
    assert FORMATS["mips64le"].qemu == "mips64el"
    for fmt in FORMATS.values():
        assert len(fmt.magic) == len(fmt.mask) == 20
        assert fmt.magic[:4] == b"\x7fELF"
        assert fmt.mask[:4] == b"\xff\xff\xff\xff"


def test_register_line_is_text_with_every_byte_escaped():
    line = register_line(FORMATS["arm64"], "/usr/bin/qemu-aarch64-static", "FP")
    assert line == (
        r":qemu-aarch64:M:0:\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
        r":\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
        r":/usr/bin/qemu-aarch64-static:FP")
    assert "\0" not in line and line.isascii() and "\n" not in line
    # the fields split cleanly on ':' (no raw byte can contain one)
    assert len(line.split(":")) == 8


def test_register_line_roundtrips_through_kernel_decoding():
    for fmt in FORMATS.values():
        fields = register_line(fmt, "/q", "F").split(":")
        assert binfmt._unescape(fields[4]) == fmt.magic
        assert binfmt._unescape(fields[5]) == fmt.mask


@pytest.mark.parametrize("interp", ["relative/qemu", "/a:b/qemu", "/a b/qemu", "/a\n/q"])
def test_register_line_rejects_bad_interpreter(interp):
    with pytest.raises(EmulationError):
        register_line(FORMATS["arm64"], interp)


def test_register_line_rejects_bad_flags_and_names():
    with pytest.raises(EmulationError):
        register_line(FORMATS["arm64"], "/q", "FX")
    with pytest.raises(EmulationError):
        register_line(FORMATS["arm64"], "/q", "F", name="a:b")
    with pytest.raises(EmulationError):
        register_line(FORMATS["arm64"], "/q", "F", name="..")


def test_format_for_unknown_arch():
    with pytest.raises(EmulationError) as ei:
        binfmt.format_for("sparc64")
    assert "arm64" in ei.value.hint


def test_check_safe_refuses_native_arch(tmp_path):
    q = tmp_path / "qemu"
    q.write_bytes(probe_elf("amd64"))
    with pytest.raises(EmulationError, match="natively"):
        binfmt.check_safe(FORMATS["amd64"], str(q), {"amd64", "386"})


def test_check_safe_refuses_entry_matching_its_interpreter(tmp_path):
    # an "interpreter" that is itself an arm64 binary would loop (ELOOP on every exec)
    q = tmp_path / "qemu"
    q.write_bytes(probe_elf("arm64"))
    with pytest.raises(EmulationError, match="interpreter"):
        binfmt.check_safe(FORMATS["arm64"], str(q), {"riscv64"})


def test_check_safe_refuses_entry_matching_native_programs(tmp_path, monkeypatch):
    q = tmp_path / "qemu"
    q.write_bytes(probe_elf("riscv64"))
    monkeypatch.setattr(binfmt, "native_headers", lambda: [("/bin/sh", probe_elf("arm64"))])
    with pytest.raises(EmulationError, match="native program"):
        binfmt.check_safe(FORMATS["arm64"], str(q), {"riscv64"})
    monkeypatch.setattr(binfmt, "native_headers", lambda: [("/bin/sh", probe_elf("riscv64"))])
    binfmt.check_safe(FORMATS["arm64"], str(q), {"riscv64"})


def test_broken_entry_with_truncated_magic_would_match_everything():
    """Why escapes must be text: a magic cut at its first NUL matches any 64-bit LE ELF."""
    truncated = FORMATS["arm64"].magic.split(b"\0")[0]      # b"\x7fELF\x02\x01\x01"
    e = binfmt.BinfmtEntry("broken", True, "/q", "F", 0, truncated, None)
    assert e.matches(probe_elf("amd64")) and e.matches(probe_elf("riscv64"))
    good = binfmt.BinfmtEntry("good", True, "/q", "F", 0, FORMATS["arm64"].magic, FORMATS["arm64"].mask)
    assert not good.matches(probe_elf("amd64"))


ENTRY_TEXT = """enabled
interpreter /usr/bin/qemu-aarch64-static
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def test_parse_entry_as_the_kernel_prints_it():
    e = parse_entry("qemu-aarch64", ENTRY_TEXT)
    assert e.enabled and e.interpreter == "/usr/bin/qemu-aarch64-static"
    assert e.flags == "PF" and e.offset == 0
    assert e.magic == FORMATS["arm64"].magic and e.mask == FORMATS["arm64"].mask
    assert e.architecture() == "arm64"
    d = parse_entry("x", "disabled\ninterpreter /q\nflags: \nextension .exe\n")
    assert not d.enabled and d.extension == ".exe" and d.architecture() is None


def test_state_entry_for_needs_enabled_and_flags():
    on = parse_entry("qemu-aarch64", ENTRY_TEXT)
    off = parse_entry("qemu-aarch64", ENTRY_TEXT.replace("enabled", "disabled"))
    nof = parse_entry("qemu-aarch64", ENTRY_TEXT.replace("flags: PF", "flags: P"))
    st = BinfmtState("/x", True, True, (on,))
    assert st.entry_for("arm64", need_flags="F") == on
    assert st.entry_for("riscv64") is None
    assert BinfmtState("/x", True, True, (off,)).entry_for("arm64") is None
    assert BinfmtState("/x", True, True, (nof,)).entry_for("arm64", need_flags="F") is None
    assert BinfmtState("/x", True, True, (nof,)).any_entry_for("arm64") == nof
    assert BinfmtState("/x", True, False, (on,)).entry_for("arm64") is None     # status: disabled
    assert BinfmtState("/x", False, False).entry_for("arm64") is None


def test_read_state_of_unmounted_dir(tmp_path):
    st = binfmt.read_state(str(tmp_path))
    assert not st.mounted and st.entries == ()


def test_read_state_of_a_directory_laid_out_like_the_kernels(tmp_path):
    (tmp_path / "status").write_text("enabled\n")
    (tmp_path / "register").write_text("")
    (tmp_path / "qemu-aarch64").write_text(ENTRY_TEXT)
    st = binfmt.read_state(str(tmp_path))
    assert st.mounted and st.enabled and [e.name for e in st.entries] == ["qemu-aarch64"]

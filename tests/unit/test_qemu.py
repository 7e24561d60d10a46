"""qemu-user discovery helpers (pure parts) and the probe programs' shape."""

import pytest

from archsupport import qemu
from archsupport.probe import ARCHES, EXIT_CODE, probe_elf


@pytest.mark.parametrize("text,expect", [("7.2.22", (7, 2, 22)), ("8.0.0-rc1", (8, 0, 0)), ("6.0", (6, 0)),
                                         ("unknown", ()), ("10.1.2~ds", (10, 1, 2))])
def test_parse_version(text, expect):
    assert qemu.parse_version(text) == expect


def test_preserve_argv0_needs_qemu_6_and_kernel_5_12():
    assert qemu.supports_preserve_argv0("7.2.22", (6, 18))
    assert qemu.supports_preserve_argv0("6.0.0", (5, 12))
    assert not qemu.supports_preserve_argv0("5.2.0", (6, 18))
    assert not qemu.supports_preserve_argv0("7.2.22", (5, 10))
    assert not qemu.supports_preserve_argv0("unknown", (6, 18))


def test_qemu_names():
    assert qemu.qemu_name("arm64") == "aarch64"
    assert qemu.qemu_name("mips64le") == "mips64el"
    assert qemu.qemu_name("386") == "i386"


def test_locate_configured_path_not_executable(tmp_path):
    q, why = qemu.locate_qemu("arm64", str(tmp_path / "nope"))
    assert q is None and "not an executable file" in why


@pytest.mark.parametrize("arch", ARCHES)
def test_probe_elf_is_small_and_static(arch, tmp_path):
    data = probe_elf(arch)
    assert len(data) < 200 and EXIT_CODE == 42
    p = tmp_path / arch
    p.write_bytes(data)
    assert qemu._is_static(str(p))

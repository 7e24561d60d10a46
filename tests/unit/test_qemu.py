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


def _fake_bin(d, files: dict[str, str]) -> str:
    """The directory ``d`` with real executables under the given names (copies of real static/dynamic binaries)."""
    import shutil

    d.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copyfile(src, d / name)
        (d / name).chmod(0o755)
    return str(d)


STATIC_QEMU = "/usr/bin/qemu-aarch64-static"
DYNAMIC = "/bin/ls"


@pytest.fixture
def real_binaries():
    import os

    if not os.path.isfile(STATIC_QEMU) or not qemu._is_static(STATIC_QEMU):
        pytest.skip("qemu-user-static is not installed (apt-get install qemu-user-static)")
    assert not qemu._is_static(DYNAMIC), "/bin/ls should be dynamically linked"


def test_locate_prefers_qemu_static_over_static_qemu(tmp_path, real_binaries):
    d = _fake_bin(tmp_path / "bin", {"qemu-aarch64": STATIC_QEMU, "qemu-aarch64-static": STATIC_QEMU})
    q, why = qemu.locate_qemu("arm64", search_path=d)
    assert q == qemu.QemuUser("arm64", f"{d}/qemu-aarch64-static", True) and why == f"found {d}/qemu-aarch64-static"


def test_locate_takes_a_static_qemu_without_suffix(tmp_path, real_binaries):
    """Debian >= 13 and Fedora ship a static qemu-ARCH."""
    d = _fake_bin(tmp_path / "bin", {"qemu-aarch64": STATIC_QEMU})
    assert qemu.locate_qemu("arm64", search_path=d)[0] == qemu.QemuUser("arm64", f"{d}/qemu-aarch64", True)


def test_locate_search_order_follows_the_path(tmp_path, real_binaries):
    first = _fake_bin(tmp_path / "a", {"qemu-aarch64": STATIC_QEMU})
    second = _fake_bin(tmp_path / "b", {"qemu-aarch64-static": STATIC_QEMU})
    # qemu-X-static anywhere on the path wins over a static qemu-X earlier on it
    assert qemu.locate_qemu("arm64", search_path=f"{first}:{second}")[0].path == f"{second}/qemu-aarch64-static"


def test_locate_rejects_a_dynamic_qemu(tmp_path, real_binaries):
    """A dynamic qemu-X would look for its libraries in the image: reported, not used."""
    d = _fake_bin(tmp_path / "bin", {"qemu-aarch64": DYNAMIC})
    q, why = qemu.locate_qemu("arm64", search_path=d)
    assert q == qemu.QemuUser("arm64", f"{d}/qemu-aarch64", False)
    assert why == f"{d}/qemu-aarch64 is dynamically linked (containers need a static qemu)"
    # a static one besides it is taken instead, whatever its name
    d = _fake_bin(tmp_path / "bin", {"qemu-aarch64": DYNAMIC, "qemu-aarch64-static": STATIC_QEMU})
    assert qemu.locate_qemu("arm64", search_path=d)[0].static
    d2 = _fake_bin(tmp_path / "x", {"qemu-aarch64-static": DYNAMIC, "qemu-aarch64": STATIC_QEMU})
    assert qemu.locate_qemu("arm64", search_path=d2)[0] == qemu.QemuUser("arm64", f"{d2}/qemu-aarch64", True)


def test_locate_nothing_and_configured_path(tmp_path, real_binaries):
    d = _fake_bin(tmp_path / "bin", {"qemu-riscv64-static": STATIC_QEMU})
    q, why = qemu.locate_qemu("arm64", search_path=d)
    assert q is None and why == "no qemu-aarch64-static or static qemu-aarch64 on PATH"
    # a configured path is used as it is (no search), static or not
    q, why = qemu.locate_qemu("arm64", f"{d}/qemu-riscv64-static", search_path=d)
    assert q == qemu.QemuUser("arm64", f"{d}/qemu-riscv64-static", True)
    assert why == "configured in [emulation.qemu] arm64"
    assert not qemu.locate_qemu("arm64", DYNAMIC, search_path=d)[0].static

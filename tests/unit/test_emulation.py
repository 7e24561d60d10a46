"""Emulation mode selection (pure: made-up facts)."""

import pytest

from archsupport.binfmt import BinfmtState, parse_entry
from archsupport.emulation import Emulation, EmulationFacts, decide
from archsupport.platform import Platform
from archsupport.qemu import QemuUser
from rootless.errors import EmulationError

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")
NATIVE = (AMD64, Platform("linux", "386"))
QEMU = QemuUser("arm64", "/usr/bin/qemu-aarch64-static", True)
HOST_ENTRY = parse_entry("qemu-aarch64", """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
""")
EMPTY = BinfmtState("/proc/sys/fs/binfmt_misc", False, False)


def facts(**kw):
    base = dict(host=AMD64, native=NATIVE, kernel=(6, 18), binfmt=EMPTY, qemu=QEMU, qemu_reason="found",
                preserve_argv0=True)
    base.update(kw)
    return EmulationFacts(**base)


def test_native():
    assert decide(AMD64, facts()).mode == "native"
    assert decide(Platform("linux", "386"), facts()).mode == "native"
    assert decide(Platform("linux", "amd64", "v3"), facts()).mode == "native"


def test_sandboxed_by_default_on_new_kernels():
    e = decide(ARM64, facts())
    assert e.mode == "sandboxed" and e.qemu == QEMU and e.flags == "FP"
    assert e.register_line().endswith(":/usr/bin/qemu-aarch64-static:FP")
    assert e.require() is e


def test_flag_p_only_when_supported():
    e = decide(ARM64, facts(preserve_argv0=False))
    assert e.mode == "sandboxed" and e.flags == "F"


def test_host_registration_wins():
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, True, (HOST_ENTRY,))
    e = decide(ARM64, facts(binfmt=st))
    assert e.mode == "host" and e.host_entry == "qemu-aarch64"
    assert e.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert e.register_line() == ""


def test_host_registration_without_F_is_not_used():
    entry = parse_entry("qemu-aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: \noffset 0\n"
                                        "magic 7f454c460201010000000000000000000200b700\n"
                                        "mask ffffffffffffff00fffffffffffffffffeffffff\n")
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, True, (entry,))
    e = decide(ARM64, facts(binfmt=st))
    assert e.mode == "sandboxed" and "no flag F" in e.reason


def test_disabled_host_registration_is_not_used():
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, False, (HOST_ENTRY,))
    assert decide(ARM64, facts(binfmt=st)).mode == "sandboxed"
    e = decide(ARM64, facts(binfmt=st), "host")
    assert e.mode == "none" and "disabled" in e.reason


def test_other_arch_registration_irrelevant():
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, True, (HOST_ENTRY,))
    e = decide(Platform("linux", "riscv64"), facts(binfmt=st, qemu=QemuUser("riscv64", "/q-riscv64", True)))
    assert e.mode == "sandboxed"


def test_none_without_qemu():
    e = decide(ARM64, facts(qemu=None, qemu_reason="no qemu-aarch64-static or static qemu-aarch64 on PATH"))
    assert e.mode == "none"
    assert "qemu-aarch64-static" in e.reason
    assert "apt-get install qemu-user-static" in e.hint
    with pytest.raises(EmulationError) as ei:
        e.require()
    assert ei.value.exit_code == 125 and "linux/arm64" in ei.value.message and ei.value.hint == e.hint


def test_none_with_dynamic_qemu():
    e = decide(ARM64, facts(qemu=QemuUser("arm64", "/usr/bin/qemu-aarch64", False)))
    assert e.mode == "none" and "dynamically linked" in e.reason and "qemu-user-static" in e.hint


def test_none_on_old_kernel_without_host_registration():
    e = decide(ARM64, facts(kernel=(6, 1)))
    assert e.mode == "none"
    assert "6.7" in e.reason and "6.1" in e.reason
    assert "sudo rootless binfmt install --arch arm64" in e.hint


def test_old_kernel_with_host_registration_is_fine():
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, True, (HOST_ENTRY,))
    assert decide(ARM64, facts(kernel=(5, 15), binfmt=st, qemu=None)).mode == "host"


def test_config_setting_none_host_sandboxed():
    st = BinfmtState("/proc/sys/fs/binfmt_misc", True, True, (HOST_ENTRY,))
    assert decide(ARM64, facts(binfmt=st), "none").mode == "none"
    assert decide(AMD64, facts(), "none").mode == "native"
    assert decide(ARM64, facts(binfmt=st), "sandboxed").mode == "sandboxed"
    e = decide(ARM64, facts(), "host")
    assert e.mode == "none" and "binfmt install --arch arm64" in e.hint


def test_unknown_arch_and_os():
    e = decide(Platform("linux", "sparc64"), facts())
    assert e.mode == "none" and "sparc64" in e.reason and "arm64" in e.hint
    assert decide(Platform("windows", "amd64"), facts()).mode == "none"


def test_arm_on_arm64_host():
    host = Platform("linux", "arm64")
    native = (host, Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"))
    assert decide(Platform("linux", "arm", "v7"), facts(host=host, native=native)).mode == "native"
    e = decide(Platform("linux", "arm", "v7"), facts(host=host, native=(host,),
                                                     qemu=QemuUser("arm", "/usr/bin/qemu-arm-static", True)))
    assert e.mode == "sandboxed" and e.register_line().split(":")[1] == "qemu-arm"
    assert decide(AMD64, facts(host=host, native=(host,),
                               qemu=QemuUser("amd64", "/usr/bin/qemu-x86_64-static", True))).mode == "sandboxed"


def test_to_json():
    d = decide(ARM64, facts()).to_json()
    assert d["mode"] == "sandboxed" and d["platform"] == "linux/arm64" and d["qemu"] == QEMU.path
    assert isinstance(Emulation("native", AMD64).to_json(), dict)


def test_exec_format_error_explains_from_elf(tmp_path):
    import os

    from archsupport.emulation import exec_format_error
    from archsupport.probe import probe_elf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "app").write_bytes(probe_elf("arm64"))
    (tmp_path / "bin" / "data").write_text("hello")
    os.symlink("app", tmp_path / "bin" / "sh")
    e = exec_format_error("sh", Platform("linux", "amd64"), root=str(tmp_path), host=AMD64)
    assert e.exit_code == 126
    assert e.message == ("exec sh: exec format error: sh is arm64 (ELF 64-bit LSB AArch64 (arm64)), the host is "
                         "amd64, but the image says linux/amd64 (mislabelled image)")
    assert e.hint == "run it as what it is: --platform linux/arm64"
    e = exec_format_error("/bin/app", ARM64, root=str(tmp_path), host=AMD64)
    assert "arm64 emulation is not in effect" in e.message
    e = exec_format_error("/bin/data", AMD64, root=str(tmp_path), host=AMD64)
    assert "not a program" in e.message


def test_exec_format_error_without_a_claimed_platform(tmp_path):
    """--rootfs without --platform: nothing was claimed, the fix is to say what it is."""
    from archsupport.emulation import exec_format_error
    from archsupport.probe import probe_elf

    (tmp_path / "app").write_bytes(probe_elf("arm64"))
    (tmp_path / "native").write_bytes(probe_elf("amd64"))
    e = exec_format_error("/app", None, root=str(tmp_path), host=AMD64)
    assert e.exit_code == 126
    assert e.message == ("exec /app: exec format error: /app is arm64 (ELF 64-bit LSB AArch64 (arm64)), the host "
                         "is amd64, and no --platform was given")
    assert e.hint == "run it as what it is: --platform linux/arm64"
    e = exec_format_error("/native", None, root=str(tmp_path), host=AMD64)
    assert "yet the kernel refused it" in e.message


def test_foreign_binary_checks_the_entrypoint(tmp_path):
    import os

    from archsupport.emulation import foreign_binary
    from archsupport.probe import probe_elf

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "arm").write_bytes(probe_elf("arm64"))
    (tmp_path / "bin" / "amd").write_bytes(probe_elf("amd64"))
    (tmp_path / "bin" / "i386").write_bytes(probe_elf("386"))
    (tmp_path / "bin" / "armhf").write_bytes(probe_elf("arm"))
    (tmp_path / "bin" / "script").write_text("#!/bin/arm\n")
    (tmp_path / "bin" / "text").write_text("hello")
    os.symlink("arm", tmp_path / "bin" / "sh")
    path, hdr, plat = foreign_binary(str(tmp_path), "sh", "/bin", host=AMD64)
    assert path == str(tmp_path / "bin" / "arm") and hdr.architecture == "arm64" and plat == ARM64
    assert foreign_binary(str(tmp_path), "/bin/script", host=AMD64)[2] == ARM64
    assert foreign_binary(str(tmp_path), "/bin/armhf", host=AMD64)[2] == Platform("linux", "arm", "v7")
    for native_or_unknown in ("/bin/amd", "/bin/text", "/bin/missing"):
        assert foreign_binary(str(tmp_path), native_or_unknown, host=AMD64) is None
    # on an arm64 host the amd64 program is the foreign one
    assert foreign_binary(str(tmp_path), "/bin/amd", host=ARM64)[2] == AMD64
    assert foreign_binary(str(tmp_path), "/bin/arm", host=ARM64) is None


def test_mislabelled_warning():
    from archsupport.elf import parse_header
    from archsupport.emulation import mislabelled_warning
    from archsupport.probe import probe_elf

    hdr = parse_header(probe_elf("arm64"))
    emu = decide(ARM64, facts())
    assert mislabelled_warning("/bin/busybox", hdr, AMD64, emu) == (
        "the image says linux/amd64, but its /bin/busybox is arm64 (ELF 64-bit LSB AArch64 (arm64)) (mislabelled "
        "image): running it emulated (sandboxed); run it as what it is: --platform linux/arm64")
    assert mislabelled_warning("sh", hdr, None, emu, host=AMD64) == (
        "sh is arm64 (ELF 64-bit LSB AArch64 (arm64)), not amd64 like this host: running it emulated (sandboxed); "
        "say so with --platform linux/arm64")

"""Platform normalisation and the host's native platforms."""

import pytest

from archsupport import platform as P
from archsupport.platform import Platform, host_platform, normalize_arch, parse
from rootless.errors import UsageError


@pytest.mark.parametrize("machine,arch,variant", [
    ("x86_64", "amd64", ""), ("amd64", "amd64", ""), ("aarch64", "arm64", ""), ("arm64", "arm64", ""),
    ("armv7l", "arm", "v7"), ("armv6l", "arm", "v6"), ("armhf", "arm", "v7"), ("armel", "arm", "v5"),
    ("i686", "386", ""), ("i386", "386", ""), ("riscv64", "riscv64", ""), ("ppc64le", "ppc64le", ""),
    ("ppc64el", "ppc64le", ""), ("s390x", "s390x", ""), ("mips64le", "mips64le", ""),
    ("mips64el", "mips64le", ""), ("loongarch64", "loong64", ""), ("X86_64", "amd64", ""),
])
def test_normalize_arch(machine, arch, variant):
    assert normalize_arch(machine) == (arch, variant)


@pytest.mark.parametrize("spec,expect", [
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64")),
    ("arm64", Platform("linux", "arm64")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("linux/arm/v7", Platform("linux", "arm", "v7")),
    ("linux/arm", Platform("linux", "arm", "v7")),
    ("linux/arm/7", Platform("linux", "arm", "v7")),
    ("linux/arm/v6", Platform("linux", "arm", "v6")),
    ("LINUX/ARM64", Platform("linux", "arm64")),
    ("linux/386", Platform("linux", "386")),
    ("linux/riscv64", Platform("linux", "riscv64")),
])
def test_parse(spec, expect):
    assert parse(spec) == expect


@pytest.mark.parametrize("spec", ["linux/sparc", "windows/amd64", "linux/arm64/v8/x", "", "/"])
def test_parse_unknown_names_known_values(spec):
    with pytest.raises(UsageError) as ei:
        parse(spec)
    if spec.strip("/"):
        assert ei.value.exit_code == 125
    if "sparc" in spec or "windows" in spec:
        assert "linux/arm64" in ei.value.hint and "linux/amd64" in ei.value.hint


def test_str_and_json():
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(Platform("linux", "arm64")) == "linux/arm64"
    assert Platform("linux", "arm64").to_json() == {"os": "linux", "architecture": "arm64"}


def test_uname_machine():
    assert Platform("linux", "arm64").uname_machine == "aarch64"
    assert Platform("linux", "arm", "v7").uname_machine == "armv7l"
    assert Platform("linux", "amd64").uname_machine == "x86_64"


def test_matches_variants():
    assert Platform("linux", "arm64").matches(Platform("linux", "arm64", "v8"))
    assert Platform("linux", "arm", "v7").matches(Platform("linux", "arm"))
    assert not Platform("linux", "arm", "v7").matches(Platform("linux", "arm", "v6"))
    assert not Platform("linux", "arm64").matches(Platform("linux", "amd64"))


def test_host_platform_from_machine():
    assert host_platform("x86_64") == Platform("linux", "amd64")
    assert host_platform("aarch64") == Platform("linux", "arm64")


def test_native_platforms(monkeypatch):
    monkeypatch.setattr(P, "_secondary_runs", lambda arch: True)
    assert P.native_platforms(Platform("linux", "amd64")) == (Platform("linux", "amd64"), Platform("linux", "386"))
    assert P.native_platforms(Platform("linux", "arm64")) == (
        Platform("linux", "arm64"), Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6"))
    monkeypatch.setattr(P, "_secondary_runs", lambda arch: False)
    assert P.native_platforms(Platform("linux", "arm64")) == (Platform("linux", "arm64"),)
    assert P.native_platforms(Platform("linux", "riscv64")) == (Platform("linux", "riscv64"),)


def test_known_platform_strings():
    k = P.known_platform_strings()
    assert "linux/amd64" in k and "linux/arm64" in k and "linux/arm/v7" in k


def test_requested_from_flags():
    assert P.requested() is None
    assert P.requested("linux/arm64") == Platform("linux", "arm64")
    assert P.requested(arch="aarch64") == Platform("linux", "arm64")
    assert P.requested("linux/amd64", arch="arm64") == Platform("linux", "arm64")      # --arch overrides
    assert P.requested(arch="arm", variant="v6") == Platform("linux", "arm", "v6")
    assert P.requested("linux/arm", variant="6") == Platform("linux", "arm", "v6")
    assert P.requested(variant="v8").architecture == host_platform().architecture


@pytest.mark.parametrize("kw", [{"platform": "linux/sparc"}, {"arch": "sparc"}, {"os_": "windows"}])
def test_requested_unknown_lists_known(kw):
    with pytest.raises(UsageError) as ei:
        P.requested(**kw)
    assert ei.value.exit_code == 125 and "linux/arm64" in ei.value.hint


def test_select_from_index():
    from rootless.errors import PlatformNotFound

    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64", "v8")
    host = Platform("linux", "amd64")
    assert P.select([arm, amd], None, host) == amd
    assert P.select([amd, arm], Platform("linux", "arm64"), host) == arm
    with pytest.raises(PlatformNotFound) as ei:
        P.select([amd, arm], Platform("linux", "riscv64"), host, ref="busybox")
    assert ei.value.message == "busybox has no linux/riscv64 image (it has: linux/amd64, linux/arm64/v8)"
    assert ei.value.exit_code == 125 and "--platform" in ei.value.hint
    # without --platform an index lacking the host's platform is an error too (no silent emulation)
    with pytest.raises(PlatformNotFound):
        P.select([arm], None, host)


def test_mismatch_warning(monkeypatch):
    amd, arm = Platform("linux", "amd64"), Platform("linux", "arm64")
    assert P.mismatch_warning(arm, Platform("linux", "arm64", "v8"), amd) is None
    assert P.mismatch_warning(arm, amd, amd) == \
        "image platform (linux/amd64) does not match the expected platform (linux/arm64)"
    assert P.mismatch_warning(None, amd, amd) is None
    # Docker's words for a foreign image run without --platform
    assert P.mismatch_warning(None, arm, amd) == (
        "The requested image's platform (linux/arm64) does not match the detected host platform (linux/amd64) "
        "and no specific platform was requested")
    assert P.mismatch_warning(None, Platform("linux", "amd64", "v3"), amd) is None
    # a platform the CPU runs natively (386 on amd64) runs without emulation: nothing to warn about
    monkeypatch.setattr(P, "_secondary_runs", lambda arch: True)
    assert P.mismatch_warning(None, Platform("linux", "386"), amd) is None
    monkeypatch.setattr(P, "_secondary_runs", lambda arch: False)
    assert "(linux/386)" in P.mismatch_warning(None, Platform("linux", "386"), amd)

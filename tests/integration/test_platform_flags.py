"""--platform / --arch / --variant on pull, against the real local registry, as the unprivileged user."""

from __future__ import annotations

import json

import pytest

from archsupport.platform import host_platform

pytestmark = pytest.mark.usefixtures("unprivileged")


def _arch_of(rl, ref, platform):
    return json.loads(rl.ok("image", "inspect", "--platform", platform, ref))[0]["Architecture"]


def test_pull_arch_flag_like_podman(rl, registry):
    ref = registry.ref("busybox")
    cp = rl("pull", "-q", "--arch", "aarch64", ref)
    assert cp.returncode == 0, cp.stderr
    assert _arch_of(rl, ref, "linux/arm64") == "arm64"
    # --arch overrides the architecture of --platform; --variant is normalised (arm64/v8 = arm64)
    cp = rl("pull", "-q", "--platform", "linux/amd64", "--arch", "arm64", "--variant", "v8", ref)
    assert cp.returncode == 0, cp.stderr


@pytest.mark.parametrize("flags", [("--platform", "linux/sparc"), ("--platform", "windows/amd64"),
                                   ("--arch", "sparc"), ("--platform", "linux/arm64/v8/extra")])
def test_unknown_platform_is_125_listing_known_values(rl, registry, flags):
    cp = rl("pull", *flags, registry.ref("busybox"))
    assert cp.returncode == 125, cp.stderr
    assert "Traceback" not in cp.stderr
    if "extra" not in flags[1]:
        assert "linux/amd64" in cp.stderr and "linux/arm64" in cp.stderr and "linux/riscv64" in cp.stderr


def test_index_without_the_platform_lists_what_it_has(rl, registry):
    cp = rl("pull", "--arch", "riscv64", registry.ref("busybox"))
    assert cp.returncode == 125
    assert "linux/riscv64" in cp.stderr and "linux/amd64" in cp.stderr and "linux/arm64" in cp.stderr


def test_single_platform_image_of_another_platform_warns(rl, registry):
    """`layered` is one amd64 manifest (no index): asking for arm64 pulls it with a warning (like Podman)."""
    if host_platform().architecture != "amd64":
        pytest.skip("the layered test image is amd64")
    cp = rl("pull", "--platform", "linux/arm64", registry.ref("layered"))
    assert cp.returncode == 0, cp.stderr
    assert "WARNING: image platform (linux/amd64) does not match the expected platform (linux/arm64)" in cp.stderr
    assert json.loads(rl.ok("image", "inspect", registry.ref("layered")))[0]["Architecture"] == "amd64"

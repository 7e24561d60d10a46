"""Choosing the storage driver: kernel versions, the fallback chain, its warning (pure)."""

from __future__ import annotations

import os

import pytest

from rootless.runtime import plan as P
from rootless.runtime.execute import error_from, report_error, report_warning, split_warnings
from rootless.errors import SyscallError
from rootless.storage import driver_chain, fallback_warning, kernel_overlay_ok, kernel_version
from tests.unit.test_runtime_spec_plan import host, spec


@pytest.mark.parametrize("release,version,ok", [
    ("6.18.44-fc-v669", (6, 18), True),
    ("6.1.0-18-amd64", (6, 1), True),
    ("5.11.0", (5, 11), True),
    ("5.10.209-1-cloud", (5, 10), False),
    ("5.15.0-rc1+", (5, 15), True),
    ("5.4rc3", (5, 4), False),
    ("4.19.0-26-amd64", (4, 19), False),
    ("6", (6, 0), True),
    ("10.0", (10, 0), True),
    ("", None, False),
    ("linux", None, False),
])
def test_kernel_version(release, version, ok):
    assert kernel_version(release) == version
    assert kernel_overlay_ok(release) is ok


def test_driver_chain():
    # auto: kernel overlay when the version allows it, fuse-overlayfs when installed, the copy last
    assert driver_chain("auto", True, True) == ("overlay", "fuse-overlayfs", "vfs")
    assert driver_chain("auto", True, False) == ("overlay", "vfs")
    assert driver_chain("auto", False, True) == ("fuse-overlayfs", "vfs")
    assert driver_chain("auto", False, False) == ("vfs",)
    # configured: that driver (a configured overlay may give way to fuse-overlayfs), never a copy
    assert driver_chain("overlay", False, True) == ("overlay", "fuse-overlayfs")
    assert driver_chain("overlay", True, False) == ("overlay",)
    assert driver_chain("fuse-overlayfs", True, True) == ("fuse-overlayfs",)
    assert driver_chain("vfs", True, True) == ("vfs",)


def test_fallback_warning_is_one_line_naming_the_fix():
    w = fallback_warning([("overlay", "mount: Invalid argument")], "fuse-overlayfs")
    assert "\n" not in w and "kernel overlay is not usable (mount: Invalid argument)" in w
    assert "using fuse-overlayfs" in w and '[storage] driver = "fuse-overlayfs"' in w
    w = fallback_warning([("overlay", "mount: Invalid argument"), ("fuse-overlayfs", "not installed")], "vfs")
    assert "\n" not in w and "fuse-overlayfs is not usable (not installed)" in w
    assert "copying the image" in w and "apt-get install fuse-overlayfs" in w


def test_plan_fallbacks():
    def fallback(**kw):
        steps = P.plan(spec(**kw.pop("spec", {})), host(**kw))
        assert isinstance(steps[0], P.MountRootfs)
        return steps[0].driver, steps[0].fallback

    fuse = "/usr/bin/fuse-overlayfs"
    assert fallback(driver="overlay", fuse=fuse, copy_fallback=True) == ("overlay", ("fuse-overlayfs", "vfs"))
    # without fuse-overlayfs the chain still names it (the warning says it is missing)
    assert fallback(driver="overlay", copy_fallback=True) == ("overlay", ("fuse-overlayfs", "vfs"))
    assert fallback(driver="fuse-overlayfs", fuse=fuse, copy_fallback=True) == ("fuse-overlayfs", ("vfs",))
    assert fallback(driver="vfs", copy_fallback=True) == ("vfs", ())
    # a configured driver: no copy
    assert fallback(driver="overlay", fuse=fuse) == ("overlay", ("fuse-overlayfs",))
    assert fallback(driver="overlay") == ("overlay", ())
    # keep-id needs fuse-overlayfs' id mapping: nothing else will do
    assert fallback(driver="overlay", fuse=fuse, copy_fallback=True, keep_id=(1001, 1001, 65537),
                    spec={"userns": "keep-id"}) == ("fuse-overlayfs", ())


def test_warnings_and_errors_share_the_error_pipe():
    r, w = os.pipe()
    report_warning(w, "storage: copied")
    report_error(w, SyscallError("mounting", 22, "fix it"))
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    warnings, rest = split_warnings(data)
    assert warnings == ["storage: copied"]
    e = error_from(data)
    assert isinstance(e, SyscallError) and e.message == "mounting: Invalid argument" and e.hint == "fix it"
    assert split_warnings(b'{"warning": "only"}\n') == (["only"], b"")

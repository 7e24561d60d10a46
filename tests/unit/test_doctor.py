"""The verdicts of `rootless doctor` (pure judge_* functions) on made-up host facts:
the failure branches this host (where everything works) never shows."""

from pathlib import Path

import pytest

from archsupport.emulation import EmulationFacts, decide
from archsupport.platform import Platform
from archsupport.qemu import QemuUser
from rootless.doctor import (FAIL, OK, WARN, ToolFile, ToolRun, all_required_ok, judge_fuse, judge_idmap_binaries,
                             judge_network, judge_qemu, judge_space, judge_tun, judge_userns)

GOOD_SYSCTL = {"max_user_namespaces": "63000", "unprivileged_userns_clone": None,
               "apparmor_restrict_unprivileged_userns": None}


# userns --------------------------------------------------------------------

def test_userns_ok():
    c = judge_userns(GOOD_SYSCTL, "", "")
    assert c.status == OK and c.required


def test_userns_max_user_namespaces_zero():
    c = judge_userns(dict(GOOD_SYSCTL, max_user_namespaces="0"), "unshare", "unshare: No space left on device")
    assert c.status == FAIL and c.required
    assert "max_user_namespaces is 0" in c.detail and "No space left on device" in c.detail
    assert c.fix == "sudo sysctl -w user.max_user_namespaces=28633"


def test_userns_debian_unprivileged_userns_clone_zero():
    c = judge_userns(dict(GOOD_SYSCTL, unprivileged_userns_clone="0"), "unshare", "unshare: Operation not permitted")
    assert c.status == FAIL
    assert "unprivileged_userns_clone is 0 (Debian)" in c.detail
    assert c.fix == "sudo sysctl -w kernel.unprivileged_userns_clone=1"


def test_userns_ubuntu_apparmor_restriction_unshare_works_but_no_capabilities():
    c = judge_userns(dict(GOOD_SYSCTL, apparmor_restrict_unprivileged_userns="1"), "caps",
                     "mount tmpfs on: Operation not permitted (/tmp)")
    assert c.status == FAIL
    assert "apparmor_restrict_unprivileged_userns is 1 (Ubuntu)" in c.detail
    assert "without capabilities" in c.detail and "mounting a tmpfs" in c.detail
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in c.fix


def test_userns_apparmor_set_but_not_restricting_this_user():
    c = judge_userns(dict(GOOD_SYSCTL, apparmor_restrict_unprivileged_userns="1"), "", "")
    assert c.status == OK and "not restricting this user" in c.detail


def test_userns_failure_without_a_known_cause():
    c = judge_userns(GOOD_SYSCTL, "caps", "mount tmpfs on: Permission denied (/tmp)")
    assert c.status == FAIL and "no capabilities" in c.detail and "Permission denied" in c.detail
    assert "seccomp" in c.fix


# newuidmap -----------------------------------------------------------------

def test_idmap_binaries():
    good = [ToolFile("newuidmap", "/usr/bin/newuidmap", 0o104755, 0),
            ToolFile("newgidmap", "/usr/bin/newgidmap", 0o104755, 0)]
    assert judge_idmap_binaries(good) is None
    caps = [ToolFile("newuidmap", "/u/newuidmap", 0o100755, 0, True), good[1]]
    assert judge_idmap_binaries(caps) is None
    c = judge_idmap_binaries([good[0], ToolFile("newgidmap", None)])
    assert c.status == FAIL and c.detail == "newgidmap not found" and c.fix == "sudo apt-get install uidmap"
    # a copy without the setuid bit, or setuid but not root's
    c = judge_idmap_binaries([ToolFile("newuidmap", "/tmp/newuidmap", 0o100755, 0), good[1]])
    assert c.status == FAIL and "/tmp/newuidmap is neither setuid root nor has file capabilities" in c.detail
    assert "chmod u+s /tmp/newuidmap" in c.fix and "uidmap" in c.fix
    c = judge_idmap_binaries([ToolFile("newuidmap", "/x/newuidmap", 0o104755, 1000), good[1]])
    assert c.status == FAIL


# fuse-overlayfs, tun, network ------------------------------------------------

def test_fuse():
    assert judge_fuse("/usr/bin/fuse-overlayfs", "", "", "").status == OK
    c = judge_fuse("/usr/bin/fuse-overlayfs", "", "", None)
    assert c.status == OK and "mount not tried" in c.detail
    c = judge_fuse("/usr/bin/fuse-overlayfs", "", "", "fuse: device not found")
    assert c.status == WARN and not c.required and "failed to mount in a user namespace" in c.detail
    c = judge_fuse(None, "", "", None)
    assert c.status == WARN and "not installed" in c.detail and c.fix == "sudo apt-get install fuse-overlayfs"
    c = judge_fuse("/usr/bin/fuse-overlayfs", "Permission denied", "0o600", None)
    assert c.status == WARN and "mode 0o600" in c.detail and "chmod 0666 /dev/fuse" in c.fix
    c = judge_fuse(None, "No such file or directory", "", None)
    assert "apt-get install fuse-overlayfs" in c.fix and "modprobe fuse" in c.fix


def test_tun():
    assert judge_tun("me", "", "").status == OK
    c = judge_tun("me", "Permission denied", "0o600")
    assert c.status == FAIL and "mode 0o600: Permission denied for me" in c.detail
    assert "chmod 0666 /dev/net/tun" in c.fix
    c = judge_tun("me", "No such file or directory", "")
    assert c.status == FAIL and c.fix == "sudo modprobe tun"


PASTA = ToolRun("pasta", "/usr/bin/pasta")
SLIRP = ToolRun("slirp4netns", "/usr/bin/slirp4netns", version="1.2.0")


def test_network_backends():
    assert judge_network(PASTA, SLIRP).status == OK
    c = judge_network(PASTA, ToolRun("slirp4netns", None))
    assert c.status == OK and "slirp4netns not installed (optional)" in c.detail
    c = judge_network(ToolRun("pasta", None), SLIRP)
    assert c.status == WARN and c.fix == "sudo apt-get install passt"
    c = judge_network(ToolRun("pasta", None), ToolRun("slirp4netns", None))
    assert c.status == FAIL and c.required
    assert "package passt" in c.detail and "passt" in c.fix and "slirp4netns" in c.fix
    # installed but broken: `--version` failed, so it is not usable
    broken = ToolRun("pasta", "/usr/bin/pasta", "pasta --version failed (exit status 1): bad")
    c = judge_network(broken, ToolRun("slirp4netns", None))
    assert c.status == FAIL and "/usr/bin/pasta does not run: pasta --version failed" in c.detail
    c = judge_network(broken, SLIRP)
    assert c.status == WARN and "reinstall passt" in c.fix
    # [network] backend set: that one is judged, the other is only offered
    c = judge_network(ToolRun("pasta", None), SLIRP, "pasta")
    assert c.status == FAIL and "pasta not installed: it is the network backend set in the configuration" in c.detail
    assert c.fix == 'sudo apt-get install passt, or set [network] backend = "auto" to use slirp4netns (installed)'
    c = judge_network(ToolRun("pasta", None), SLIRP, "slirp4netns")
    assert c.status == OK and "slirp4netns (/usr/bin/slirp4netns, 1.2.0), the network backend set" in c.detail
    c = judge_network(PASTA, ToolRun("slirp4netns", None), "slirp4netns")
    assert c.status == FAIL and c.fix.startswith("sudo apt-get install slirp4netns, or set")
    c = judge_network(ToolRun("pasta", None), ToolRun("slirp4netns", None), "slirp4netns")
    assert c.status == FAIL and c.fix == "sudo apt-get install slirp4netns"


# qemu ------------------------------------------------------------------------

HOST = Platform("linux", "amd64")


def test_qemu_missing_names_the_package():
    arm64 = Platform("linux", "arm64")
    emu = decide(arm64, EmulationFacts(HOST, (HOST,), kernel=(6, 8), qemu=None, qemu_reason="qemu-aarch64-static "
                                                                                              "not found"))
    c = judge_qemu("arm64", None, "", emu)
    assert c.status == WARN and not c.required
    assert "linux/arm64 images cannot run" in c.detail and "qemu-aarch64-static not found" in c.detail
    assert "apt-get install qemu-user-static" in c.fix


def test_qemu_dynamic_and_good():
    arm64 = Platform("linux", "arm64")
    dyn = QemuUser("arm64", "/usr/bin/qemu-aarch64", False)
    emu = decide(arm64, EmulationFacts(HOST, (HOST,), kernel=(6, 8), qemu=dyn, sandbox_ok=True))
    c = judge_qemu("arm64", dyn, "7.2", emu)
    assert c.status == WARN and "qemu-user-static" in c.fix
    good = QemuUser("arm64", "/usr/bin/qemu-aarch64-static", True)
    emu = decide(arm64, EmulationFacts(HOST, (HOST,), kernel=(6, 8), qemu=good, sandbox_ok=True))
    c = judge_qemu("arm64", good, "7.2.22", emu)
    assert c.status == OK and c.detail == "/usr/bin/qemu-aarch64-static 7.2.22; mode sandboxed (flags F)"


# space -----------------------------------------------------------------------

@pytest.mark.parametrize("free, status", [(100 << 20, FAIL), (1 << 30, WARN), (20 << 30, OK)])
def test_space(free, status):
    c = judge_space(Path("/home/me/.local/share/rootless"), free)
    assert c.status == status
    assert c.detail.startswith("store /home/me/.local/share/rootless (")
    if status != OK:
        assert "ROOTLESS_ROOT" in c.fix
    # only too little space stops `run`
    assert all_required_ok([c]) == (status != FAIL)

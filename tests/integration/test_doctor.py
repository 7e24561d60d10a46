"""`rootless doctor` and `info` as the unprivileged user, on the CI host."""

import json
import os

import pytest

from rootless.doctor import cgroup_v2_delegation


def test_doctor_all_required_ok(rl, unprivileged):
    cp = rl("doctor")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = cp.stdout.splitlines()
    for name in ("kernel", "userns", "subuid", "subgid", "newuidmap", "overlay", "fuse-overlayfs", "tun",
                 "network", "binfmt_misc", "space", "qemu-arm64"):
        assert any(l.startswith("OK") and l.split()[1] == name for l in lines), (name, cp.stdout)


def test_doctor_json_every_check_ok_but_unavailable_limits(rl, unprivileged):
    cp = rl("doctor", "--json")
    assert cp.returncode == 0
    d = json.loads(cp.stdout)
    assert d["ok"] is True
    cgroups_ok, _, _ = cgroup_v2_delegation()
    for c in d["checks"]:
        if c["name"] == "cgroups" and not cgroups_ok:
            # this host has hybrid cgroups: limits are honestly unavailable
            assert c["status"] == "WARN" and "limits unavailable" in c["detail"] and c["fix"]
        else:
            assert c["status"] == "OK", c


def test_info_json(rl, unprivileged):
    d = json.loads(rl.ok("info", "--format", "json"))
    assert d["host"]["kernel"] == os.uname().release
    assert d["store"]["root"] == str(rl.root)
    assert d["host"]["platform"].startswith("linux/")
    assert "arm64" in d["emulation"]
    assert d["idmap"]["uids"][0] == f"0 {os.getuid()} 1"
    assert rl.ok("info", "--format", "{{.store.root}}").strip() == str(rl.root)

"""`rootless doctor` and `info` as the unprivileged user, on the CI host."""

import json
import os


def _cgroup_facts() -> tuple[bool, bool]:
    """(hybrid, v2 group writable) read here from /proc/self/mountinfo and /proc/self/cgroup,
    independently of rootless.doctor: hybrid when the memory, cpu or pids controller is bound
    to a cgroup v1 hierarchy (then the v2 tree, this host's /sys/fs/cgroup/unified, cannot
    offer it)."""
    v1 = False
    v2_mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype == "cgroup" and {"memory", "cpu", "pids"} & set(fields[-1].split(",")):
                v1 = True
            elif fstype == "cgroup2" and v2_mount is None:
                v2_mount = fields[4]
    if v2_mount is None:
        return True, False
    rel = next((l[3:].strip() for l in open("/proc/self/cgroup") if l.startswith("0::")), "/")
    group = os.path.join(v2_mount, rel.lstrip("/"))
    writable = os.access(group, os.W_OK) or os.access(os.path.dirname(group), os.W_OK)
    return v1, writable


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
    hybrid, writable = _cgroup_facts()
    for c in d["checks"]:
        if c["name"] == "cgroups" and (hybrid or not writable):
            # hybrid cgroups (this host), or a v2 group not delegated to us: limits are honestly unavailable
            assert c["status"] == "WARN" and "limits unavailable" in c["detail"] and c["fix"], c
            if hybrid:
                assert "hybrid" in c["detail"] or "no cgroup v2" in c["detail"], c
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

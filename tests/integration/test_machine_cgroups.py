"""Resource limits for real, in the managed VM: its guest has a pure cgroup v2
hierarchy with a subtree delegated to the user (as systemd's Delegate=yes
does), which this project's CI host (hybrid cgroups) does not have.

`rootless --connection limits run --memory/--pids-limit/--cpus` must really
limit: memory.max, cpu.max, pids.max inside the container, an allocation
over the limit OOM-killed (137), a fork loop bounded, a busy loop throttled;
`exec` joins the container's cgroup; `rootless doctor` in the guest says OK.
Select with ``-m vm``.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import RL

pytestmark = [pytest.mark.vm, pytest.mark.slow]

VM_IMAGES = os.environ.get("ROOTLESS_TEST_VM_IMAGES") or f"/var/tmp/rootless-test-vm-images-{os.getuid()}"
NAME = "limits"


class Guest:
    def __init__(self, rl: RL):
        self.rl = rl

    def run(self, *args, **kw):
        kw.setdefault("timeout", 600)
        return self.rl("--connection", NAME, *args, **kw)

    def ssh(self, script: str) -> str:
        return self.rl.ok("machine", "ssh", NAME, "sh", "-c", script, timeout=300)


@pytest.fixture(scope="module")
def guest(tmp_path_factory, registry, unprivileged):
    rl = RL(tmp_path_factory.mktemp("limits"))
    rl.env["ROOTLESS_MACHINE_IMAGES"] = VM_IMAGES
    cp = rl("machine", "init", NAME, "--no-share", timeout=1800)
    assert cp.returncode == 0, cp.stderr
    cp = rl("machine", "start", NAME, timeout=900)
    assert cp.returncode == 0, cp.stderr
    g = Guest(rl)
    # pull once
    assert g.run("pull", "-q", registry.ref("busybox")).returncode == 0
    yield g
    rl("machine", "rm", "-f", NAME, timeout=300)
    rl.cleanup()


def _user_cgroup() -> str:
    return f"/sys/fs/cgroup/user.slice/user-{os.getuid()}"


def test_the_guest_delegates_a_cgroup_v2_subtree(guest):
    uid = os.getuid()
    out = guest.ssh("cat /proc/self/cgroup; stat -c '%u %n' $0 $0/cgroup.procs $0/cgroup.subtree_control; "
                    "cat $0/cgroup.subtree_control".replace("$0", _user_cgroup()))
    lines = out.splitlines()
    assert lines[0] == f"0::/user.slice/user-{uid}/init"     # the SSH session: in the user's leaf
    assert all(ln.startswith(f"{uid} ") for ln in lines[1:4])
    assert {"memory", "cpu", "pids"} <= set(lines[4].split())
    doctor = json.loads(guest.rl.ok("machine", "ssh", NAME, "rootless", "doctor", "--json", timeout=300))
    check = next(c for c in doctor["checks"] if c["name"] == "cgroups")
    assert check["status"] == "OK", check
    assert f"user-{uid} delegated" in check["detail"]


def test_memory_limit_is_enforced(guest, registry):
    ref = registry.ref("busybox")
    cp = guest.run("run", "--rm", "--memory", "32m", ref, "sh", "-c",
                   "cat /sys/fs/cgroup/memory.max; dd if=/dev/zero of=/dev/null bs=16M count=1 2>/dev/null && "
                   "echo 16M-fits")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == [str(32 << 20), "16M-fits"]
    # 64 MiB in one buffer: the kernel's OOM killer ends it, Docker's status for SIGKILL
    cp = guest.run("run", "--rm", "--memory", "32m", ref, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert cp.returncode == 137, cp.stderr
    # the same without a limit fits in the guest
    assert guest.run("run", "--rm", ref, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1").returncode == 0


def test_pids_limit_bounds_a_fork_loop(guest, registry):
    cp = guest.run("run", "--rm", "--pids-limit", "10", registry.ref("busybox"), "sh", "-c",
                   "sh -c 'while :; do sleep 60 & done' 2>/dev/null; read c < /sys/fs/cgroup/pids.current; "
                   "read m < /sys/fs/cgroup/pids.max; echo $c $m; "
                   "while read k v; do [ $k = max ] && echo events $v; done < /sys/fs/cgroup/pids.events")
    assert cp.returncode == 0, cp.stderr
    first, events = cp.stdout.splitlines()
    current, limit = (int(x) for x in first.split())
    assert limit == 10 and 5 <= current <= 10
    assert int(events.split()[1]) >= 1        # forks were refused


def test_cpus_limit_throttles(guest, registry):
    cp = guest.run("run", "--rm", "--cpus", "0.5", registry.ref("busybox"), "sh", "-c",
                   "cat /sys/fs/cgroup/cpu.max; timeout 3 sh -c 'while :; do :; done'; cat /sys/fs/cgroup/cpu.stat")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "50000 100000"
    stat = dict(ln.split() for ln in lines[1:])
    assert int(stat["nr_throttled"]) > 0
    assert int(stat["usage_usec"]) < 2_250_000          # at most ~half of the 3 s busy loop


def test_exec_joins_the_limited_cgroup_and_rm_removes_it(guest, registry):
    cp = guest.run("run", "-d", "--name", "lim", "--pids-limit", "50", registry.ref("busybox"), "sleep", "300")
    assert cp.returncode == 0, cp.stderr
    cid = cp.stdout.strip()
    try:
        cp = guest.run("exec", "lim", "sh", "-c", "cat /proc/self/cgroup; cat /sys/fs/cgroup/pids.max")
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.split() == ["0::/", "50"]
        assert guest.ssh(f"cat {_user_cgroup()}/rootless-{cid[:12]}/pids.max").strip() == "50"
    finally:
        guest.run("rm", "-f", "lim")
    assert guest.ssh(f"ls {_user_cgroup()}").split().count(f"rootless-{cid[:12]}") == 0


def test_a_delegated_cgroup_holding_processes(guest, registry):
    """Like `systemd-run --user --scope -p Delegate=yes`: the runtime's own
    processes are in the delegated cgroup itself; they are moved into its
    leaf "init" so that it can give controllers to the container's cgroup."""
    scope = f"{_user_cgroup()}/test.scope"
    out = guest.ssh(f"mkdir {scope} && echo $$ > {scope}/cgroup.procs && "
                    f"rootless run --rm --pids-limit 7 {registry.ref('busybox')} cat /sys/fs/cgroup/pids.max && "
                    f"cat /proc/self/cgroup && cat {scope}/cgroup.subtree_control && rootless doctor | grep cgroups")
    lines = out.splitlines()
    assert lines[0] == "7"
    assert lines[1].endswith("/test.scope/init")
    assert {"memory", "cpu", "pids"} <= set(lines[2].split())
    assert lines[3].startswith("OK") and "test.scope delegated" in lines[3]

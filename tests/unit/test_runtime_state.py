"""Container state truth: pids with start times and the boot they belong to."""

from __future__ import annotations

import os

from rootless.runtime.state import State, alive, current_boot_id, proc_start_time, same_boot

BOOT_A = "6f1c2b7e-0000-4000-8000-00000000000a"
BOOT_B = "6f1c2b7e-0000-4000-8000-00000000000b"


def test_same_boot():
    assert same_boot(BOOT_A, BOOT_A)
    assert not same_boot(BOOT_A, BOOT_B)
    assert same_boot("", BOOT_B)       # recorded by an older rootless: start times decide
    assert same_boot(BOOT_A, "")       # the kernel does not say


def test_current_boot_id_is_this_kernels():
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert current_boot_id() == f.read().strip() != ""


def test_alive_needs_the_start_time():
    me, start = os.getpid(), proc_start_time(os.getpid())
    assert alive(me, start) and alive(me, None)
    assert not alive(me, start + 1)
    assert not alive(0, None) and not alive(-1, None)


def running(boot: str, **kw) -> State:
    me, start = os.getpid(), proc_start_time(os.getpid())
    d = dict(status="running", pid=me, pid_start=start, monitor_pid=me, monitor_start=start, boot_id=boot,
             network={"mode": "pasta", "helper_pid": me, "helper_start": start})
    d.update(kw)
    return State(**d)


def test_pids_of_another_boot_name_nothing():
    st = running(BOOT_A)
    assert st.in_boot(BOOT_A) is st and st.in_boot(BOOT_A).truth().status == "running"
    other = st.in_boot(BOOT_B)
    assert (other.pid, other.monitor_pid, other.network) == (0, 0, {})
    t = other.truth()
    assert t.status == "exited" and t.exit_code == 255
    # starting before the reboot: created again
    assert running(BOOT_A, status="starting").in_boot(BOOT_B).truth().status == "created"
    # no boot recorded (state of an older rootless): as before, start times decide
    assert running("").in_boot(BOOT_B).truth().status == "running"
    assert running("", pid_start=1, monitor_start=1).in_boot(BOOT_B).truth().status == "exited"


def test_state_json_round_trip_keeps_the_boot():
    st = running(BOOT_A)
    assert State.from_json(st.to_json()) == st
    assert State.from_json({"status": "exited"}).boot_id == ""

"""Resource limits (--memory, --cpus, --pids-limit) through a delegated cgroup v2.

Without a delegated cgroup v2 (hybrid cgroups, no systemd user delegation)
limits are refused with the reason and the fix; runs without limits never
touch cgroups.
"""

from __future__ import annotations

import os

from rootless.errors import HostError


def _delegated() -> str:
    from rootless.doctor import cgroup_v2_delegation

    ok, detail, fix = cgroup_v2_delegation()
    if not ok:
        raise HostError(f"resource limits (--memory, --cpus, --pids-limit) need a delegated cgroup v2: {detail}",
                        hint=(fix + "; or run without limits") if fix else "run without limits")
    mounts = open("/proc/self/mountinfo").read().splitlines()
    unified = next(line.split()[4] for line in mounts if " - cgroup2 " in line)
    rel = next(line[3:] for line in open("/proc/self/cgroup").read().splitlines() if line.startswith("0::"))
    return os.path.join(unified, rel.lstrip("/"))


def check_available() -> None:
    _delegated()


def _path(cid: str) -> str:
    return os.path.join(_delegated(), f"rootless-{cid[:12]}")


def apply(spec, pid: int, cid: str) -> None:
    base = _delegated()
    path = os.path.join(base, f"rootless-{cid[:12]}")
    try:
        with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
            f.write("+memory +cpu +pids")
        os.makedirs(path, exist_ok=True)
        if spec.memory:
            with open(os.path.join(path, "memory.max"), "w") as f:
                f.write(str(spec.memory))
        if spec.cpus:
            period = 100000
            with open(os.path.join(path, "cpu.max"), "w") as f:
                f.write(f"{int(spec.cpus * period)} {period}")
        if spec.pids_limit:
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(spec.pids_limit))
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))
    except OSError as e:
        raise HostError(f"cannot apply resource limits in {path}: {e.strerror}",
                        hint="the cgroup must be delegated to you with the memory, cpu and pids controllers "
                             "and hold no processes of its own (systemd-run --user --scope -p Delegate=yes)") from None


def cleanup(cid: str) -> None:
    try:
        os.rmdir(_path(cid))
    except (OSError, HostError):
        pass

"""Resource limits (--memory, --cpus, --pids-limit) through a delegated cgroup v2.

Where containers go: the *delegation root* D is the cgroup this process is
in, or its parent when this process sits in D's leaf named ``init`` (how a
delegated subtree keeps its own processes out of the way: the rootless
guest's ``user.slice/user-UID/init``; what this module makes itself, below).
Each container with limits gets ``D/rootless-<id12>`` with memory.max,
cpu.max and pids.max, and its first process is moved there before it makes
its cgroup namespace, so /sys/fs/cgroup in the container shows its own
cgroup and limits, as with Docker.

cgroup v2's "no internal processes" rule: D can enable controllers for its
children only while no process is in D itself. When D holds processes (a
``systemd-run --user --scope -p Delegate=yes`` scope: this very process), they
are moved into ``D/init`` first, once (Podman does the same).

Without a delegated cgroup v2 (hybrid cgroups, no systemd user delegation)
limits are refused with the reason and the fix; runs without limits never
touch cgroups.
"""

from __future__ import annotations

import errno
import os

from rootless.errors import HostError

CONTROLLERS = ("memory", "cpu", "pids")
LEAF = "init"
PERIOD = 100000


def _own_cgroup() -> str:
    """The cgroup v2 directory of this process."""
    with open("/proc/self/mountinfo") as f:
        mounts = f.read().splitlines()
    unified = next(line.split()[4] for line in mounts if " - cgroup2 " in line)
    with open("/proc/self/cgroup") as f:
        rel = next(line[3:] for line in f.read().splitlines() if line.startswith("0::"))
    return os.path.join(unified, rel.lstrip("/"))


def _writable(d: str) -> bool:
    return os.access(d, os.W_OK) and os.access(os.path.join(d, "cgroup.procs"), os.W_OK) \
        and os.access(os.path.join(d, "cgroup.subtree_control"), os.W_OK)


def delegation_root(cur: str, writable=_writable) -> str:
    """D for a process in cgroup directory ``cur``: its parent when ``cur`` is
    D's ``init`` leaf and the parent is delegated to us too, else ``cur``."""
    parent = os.path.dirname(cur.rstrip("/"))
    if os.path.basename(cur.rstrip("/")) == LEAF and parent and writable(parent):
        return parent
    return cur


def cpu_max(cpus: float, period: int = PERIOD) -> str:
    """cpu.max for ``--cpus`` (Docker: quota = cpus x period, at least 1 ms)."""
    return f"{max(1000, int(round(cpus * period)))} {period}"


def _delegated() -> str:
    from rootless.doctor import cgroup_v2_delegation

    ok, detail, fix = cgroup_v2_delegation()
    if not ok:
        raise HostError(f"resource limits (--memory, --cpus, --pids-limit) need a delegated cgroup v2: {detail}",
                        hint=(fix + "; or run without limits") if fix else "run without limits")
    return delegation_root(_own_cgroup())


def check_available() -> None:
    _delegated()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _enable_controllers(base: str) -> None:
    """Give ``base``'s children the memory, cpu and pids controllers; when
    ``base`` holds processes, move them into its ``init`` leaf first."""
    have = _read(os.path.join(base, "cgroup.subtree_control")).split()
    want = " ".join(f"+{c}" for c in CONTROLLERS if c not in have)
    if not want:
        return
    try:
        _write(os.path.join(base, "cgroup.subtree_control"), want)
        return
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
    leaf = os.path.join(base, LEAF)
    os.makedirs(leaf, exist_ok=True)
    for _ in range(20):
        pids = _read(os.path.join(base, "cgroup.procs")).split()
        if not pids:
            break
        for pid in pids:
            try:
                _write(os.path.join(leaf, "cgroup.procs"), pid)
            except OSError as e:
                if e.errno not in (errno.ESRCH, errno.ENOENT):
                    raise
    _write(os.path.join(base, "cgroup.subtree_control"), want)


def _path(cid: str) -> str:
    return os.path.join(_delegated(), f"rootless-{cid[:12]}")


def apply(spec, pid: int, cid: str) -> None:
    """Put process ``pid`` in the container's own cgroup with ``spec``'s limits."""
    base = _delegated()
    path = os.path.join(base, f"rootless-{cid[:12]}")
    try:
        _enable_controllers(base)
        os.makedirs(path, exist_ok=True)
        if spec.memory:
            _write(os.path.join(path, "memory.max"), str(spec.memory))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                _write(os.path.join(path, "memory.swap.max"), str(spec.memory))   # Docker: swap = memory
        if spec.cpus:
            _write(os.path.join(path, "cpu.max"), cpu_max(spec.cpus))
        if spec.pids_limit:
            _write(os.path.join(path, "pids.max"), str(spec.pids_limit))
        _write(os.path.join(path, "cgroup.procs"), str(pid))
    except OSError as e:
        raise HostError(f"cannot apply resource limits in {path}: {e.strerror}",
                        hint="the cgroup must be delegated to you with the memory, cpu and pids controllers "
                             "(systemd-run --user --scope -p Delegate=yes ...)") from None


def container_cgroup(pid: int) -> str | None:
    """The cgroup directory of container process ``pid`` when it is one this
    module made (``exec`` joins it, so the limits hold there too), else None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            rel = next((line[3:] for line in f.read().splitlines() if line.startswith("0::")), "")
        if not os.path.basename(rel).startswith("rootless-"):
            return None
        with open("/proc/self/mountinfo") as f:
            unified = next(line.split()[4] for line in f.read().splitlines() if " - cgroup2 " in line)
    except (OSError, StopIteration):
        return None
    path = os.path.join(unified, rel.lstrip("/"))
    return path if os.path.isdir(path) else None


def cleanup(cid: str) -> None:
    try:
        os.rmdir(_path(cid))
    except (OSError, HostError):
        pass

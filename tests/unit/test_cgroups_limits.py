"""rootless.runtime.cgroups, pure parts: where containers go, cpu.max."""

from rootless.runtime.cgroups import cpu_max, delegation_root


def test_delegation_root_is_the_parent_of_an_init_leaf_we_may_write():
    ours = {"/sys/fs/cgroup/user.slice/user-1000", "/sys/fs/cgroup/user.slice/user-1000/app.scope"}
    w = ours.__contains__
    assert delegation_root("/sys/fs/cgroup/user.slice/user-1000/init", w) == "/sys/fs/cgroup/user.slice/user-1000"
    # a leaf named init under a cgroup that is not ours stays where it is
    assert delegation_root("/sys/fs/cgroup/system.slice/init", w) == "/sys/fs/cgroup/system.slice/init"
    # a delegated scope holding processes is its own root (its processes move into its init leaf)
    assert delegation_root("/sys/fs/cgroup/user.slice/user-1000/app.scope", w) == \
        "/sys/fs/cgroup/user.slice/user-1000/app.scope"
    assert delegation_root("/sys/fs/cgroup/user.slice/user-1000/app.scope/init", w) == \
        "/sys/fs/cgroup/user.slice/user-1000/app.scope"


def test_cpu_max_like_docker():
    assert cpu_max(0.5) == "50000 100000"
    assert cpu_max(2) == "200000 100000"
    assert cpu_max(1.25) == "125000 100000"
    assert cpu_max(0.001) == "1000 100000"      # the kernel's minimum quota is 1 ms

"""Sandboxed binfmt_misc, for real, as the unprivileged user (no `rootless run` needed).

In a user + mount namespace made by rootless.userns.run_in_userns, register
qemu-aarch64 with archsupport.binfmt.sandbox_register, pivot_root into the
arm64 busybox of the test image and run it. Also pins down the kernel
behaviour the design relies on (Linux >= 6.7): nested user namespaces see
the instance, a namespace's own instance shadows it, and unmounting the
instance removes its entries.
"""

from __future__ import annotations

import errno
import os

import pytest

from archsupport.binfmt import HOST_BINFMT_DIR, read_state, sandbox_register
from archsupport.emulation import choose
from archsupport.platform import parse
from rootless import syscalls
from rootless.config import load_config
from rootless.userns import run_in_userns
from tests.rootfs_util import extract_rootfs

ARM64 = parse("linux/arm64")


@pytest.fixture(scope="module")
def arm64_rootfs(images, tmp_path_factory):
    return extract_rootfs(images.layout("busybox"), "linux/arm64", tmp_path_factory.mktemp("arm64") / "rootfs")


@pytest.fixture
def sandboxed():
    """The Emulation for linux/arm64 forced to the sandboxed mode (a host registration must not matter)."""
    cfg = load_config().replace(emulation_mode="sandboxed")
    emu = choose(ARM64, cfg)
    if emu.mode != "sandboxed":
        pytest.skip(f"sandboxed emulation unavailable: {emu.reason} (fix: {emu.hint})")
    return emu


def host_binfmt_snapshot():
    st = read_state()
    try:
        listing = sorted(os.listdir(HOST_BINFMT_DIR))
    except OSError as e:
        listing = [f"<{e.strerror}>"]
    return st.mounted, st.enabled, tuple((e.name, e.enabled, e.interpreter, e.flags) for e in st.entries), listing


def _run_capture(argv: list[str]) -> tuple[int, str]:
    """fork/exec argv, capture stdout+stderr (usable after pivot_root: no imports)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.execv(argv[0], argv)
        except OSError as e:
            os.write(2, f"exec {argv[0]}: {e.strerror} (errno {e.errno})\n".encode())
        os._exit(127)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    _, st = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(st), out.decode(errors="replace")


def _exec_errno(path: str) -> int:
    """0 if path executes (exit status ignored), else the errno of execve."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(path, [path, "true"])
        except OSError as e:
            os._exit(100 + (e.errno or 0) % 100)
    _, st = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(st)
    return code - 100 if code >= 100 else 0


def _in_container(emu, rootfs: str, script: str):
    """Register, pivot_root into rootfs (binfmt mount kept under /proc), run /bin/sh -c script."""
    syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
    where = sandbox_register(emu, rootfs)
    os.chdir(rootfs)
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
    code, out = _run_capture(["/bin/sh", "-c", script])
    return where, code, out


def test_sandboxed_arm64_busybox_runs_and_host_unchanged(arm64_rootfs, sandboxed, unprivileged):
    before = host_binfmt_snapshot()
    host_had_arm64 = read_state().entry_for("arm64") is not None
    where, code, out = run_in_userns(
        _in_container, sandboxed, str(arm64_rootfs),
        "uname -m; echo x | cat | sed s/x/piped/; sh -c 'uname -m'; (uname -m) | tr a-z A-Z; "
        "exec -a foo /bin/busybox 2>&1")
    assert where == str(arm64_rootfs / "proc")
    lines = out.splitlines()
    assert lines[:4] == ["aarch64", "piped", "aarch64", "AARCH64"], out
    # flag P: argv[0] "foo" reached busybox (without P it would print its help)
    assert lines[4:] == ["foo: applet not found"], out
    assert code == 127
    # the host saw nothing: same binfmt_misc, and it still cannot run the arm64 binary itself
    assert host_binfmt_snapshot() == before
    if not host_had_arm64:
        assert _exec_errno(str(arm64_rootfs / "bin" / "busybox")) == errno.ENOEXEC


def test_register_line_as_seen_by_the_kernel(arm64_rootfs, sandboxed, unprivileged):
    def inner(emu, rootfs):
        syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
        where = sandbox_register(emu, rootfs)
        st = read_state(where)
        return [(e.name, e.enabled, e.interpreter, e.flags, e.magic, e.mask) for e in st.entries]

    entries = run_in_userns(inner, sandboxed, str(arm64_rootfs))
    assert len(entries) == 1
    name, enabled, interp, flags, magic, mask = entries[0]
    from archsupport.binfmt import FORMATS

    assert (name, enabled, interp) == ("qemu-aarch64", True, sandboxed.qemu.path)
    assert set(flags) == set(sandboxed.flags)
    assert magic == FORMATS["arm64"].magic and mask == FORMATS["arm64"].mask


def test_with_proc_mounted_the_container_sees_its_registration(arm64_rootfs, sandboxed, unprivileged):
    """When /proc is mounted first, the instance goes to /proc/sys/fs/binfmt_misc, visible inside."""
    def inner(emu, rootfs):
        syscalls.unshare(syscalls.CLONE_NEWPID)
        pid = os.fork()
        if pid:
            _, st = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(st)
        code = 1
        try:
            syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
            syscalls.mount("proc", rootfs + "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV)
            where = sandbox_register(emu, rootfs)
            assert where == rootfs + "/proc/sys/fs/binfmt_misc"
            os.chdir(rootfs)
            syscalls.pivot_root(".", ".")
            syscalls.umount2(".", syscalls.MNT_DETACH)
            os.chdir("/")
            rc, out = _run_capture(["/bin/sh", "-c", "ls /proc/sys/fs/binfmt_misc; uname -m"])
            code = 0 if out.split() == ["qemu-aarch64", "register", "status", "aarch64"] else 3
        finally:
            os._exit(code)

    assert run_in_userns(inner, sandboxed, str(arm64_rootfs)) == 0


def test_nested_user_namespace_uses_the_instance(arm64_rootfs, sandboxed, unprivileged):
    def inner(emu, rootfs):
        syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
        sandbox_register(emu, rootfs)
        busybox = rootfs + "/bin/busybox"
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
            os.dup2(w, 1)
            try:
                os.execv(busybox, [busybox, "uname", "-m"])
            finally:
                os._exit(99)
        os.close(w)
        out = os.read(r, 100).decode().strip()
        os.waitpid(pid, 0)
        return out

    assert run_in_userns(inner, sandboxed, str(arm64_rootfs)) == "aarch64"


def test_own_instance_shadows_and_umount_drops_entries(arm64_rootfs, sandboxed, unprivileged):
    """The facts behind sandbox_register's design (see archsupport/binfmt.py)."""
    def inner(emu, rootfs):
        syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
        where = sandbox_register(emu, rootfs)
        busybox = rootfs + "/bin/busybox"
        got = {"registered": _exec_errno(busybox)}
        # a nested user namespace mounting its OWN binfmt_misc gets an empty instance that shadows ours
        pid = os.fork()
        if pid == 0:
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
            syscalls.mount("binfmt_misc", where, "binfmt_misc", 0)
            os._exit(_exec_errno(busybox))
        _, st = os.waitpid(pid, 0)
        got["nested own instance"] = os.waitstatus_to_exitcode(st)
        # stacking another mount on top keeps it alive
        syscalls.mount("tmpfs", where, "tmpfs", 0)
        got["covered"] = _exec_errno(busybox)
        syscalls.umount2(where, 0)
        # unmounting the instance (even lazily) removes its entries
        syscalls.umount2(where, syscalls.MNT_DETACH)
        got["unmounted"] = _exec_errno(busybox)
        syscalls.mount("binfmt_misc", where, "binfmt_misc", 0)
        got["remounted entries"] = sorted(os.listdir(where))
        return got

    got = run_in_userns(inner, sandboxed, str(arm64_rootfs))
    assert got == {"registered": 0, "nested own instance": errno.ENOEXEC, "covered": 0,
                   "unmounted": errno.ENOEXEC, "remounted entries": ["register", "status"]}


def test_hostile_proc_symlink_is_refused(arm64_rootfs, sandboxed, tmp_path, unprivileged):
    import shutil

    from rootless.errors import EmulationError

    root = tmp_path / "hostile"
    shutil.copytree(arm64_rootfs, root, symlinks=True)
    (root / "proc").rmdir()
    os.symlink("/etc", root / "proc")

    def inner(emu, rootfs):
        syscalls.mount(rootfs, rootfs, None, syscalls.MS_BIND | syscalls.MS_REC)
        sandbox_register(emu, rootfs)

    with pytest.raises(EmulationError, match="/proc is not a directory"):
        run_in_userns(inner, sandboxed, str(root))

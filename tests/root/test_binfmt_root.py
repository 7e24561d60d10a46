"""`rootless binfmt install|status|uninstall` on the real host (run as root by ci/run-tests).

Every test leaves the host's binfmt_misc exactly as it found it (the
``host_restored`` fixture checks and, on failure, repairs): a stray host
registration would change which emulation mode other tests see, and a broken
one can hijack every program on the machine.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from archsupport.binfmt import BINFMT_D, HOST_BINFMT_DIR, HOST_PREFIX, read_state, remove_entry
from archsupport.hostbinfmt import MOUNT_MARKER
from tests.rootfs_util import extract_rootfs

ROOT = Path(__file__).resolve().parent.parent.parent
USER = os.environ.get("ROOTLESS_TEST_USER", "rltest")


@pytest.fixture(autouse=True)
def need_root():
    if os.getuid() != 0:
        pytest.skip("needs root (ci/run-tests runs this part as root)")


def snapshot():
    st = read_state()
    try:
        confs = sorted(os.listdir(BINFMT_D))
    except FileNotFoundError:
        confs = []
    return {"mounted": st.mounted, "enabled": st.enabled,
            "entries": sorted((e.name, e.enabled, e.interpreter, e.flags) for e in st.entries),
            "binfmt.d": confs, "marker": os.path.exists(MOUNT_MARKER)}


def _force_restore(before):
    """Repair the host if a test failed half-way (never leave a registration behind)."""
    st = read_state()
    keep = {e[0] for e in before["entries"]}
    for e in st.entries:
        if e.name not in keep:
            remove_entry(HOST_BINFMT_DIR, e.name)
    for f in os.listdir(BINFMT_D) if os.path.isdir(BINFMT_D) else []:
        if f.startswith(HOST_PREFIX) and f not in before["binfmt.d"]:
            os.unlink(os.path.join(BINFMT_D, f))
    if not before["mounted"] and read_state().mounted and not read_state().entries:
        subprocess.run(["umount", HOST_BINFMT_DIR], check=False)
    if not before["marker"] and os.path.exists(MOUNT_MARKER):
        os.unlink(MOUNT_MARKER)


@pytest.fixture
def host_restored():
    before = snapshot()
    yield before
    after = snapshot()
    if after != before:
        _force_restore(before)
        pytest.fail(f"the test left the host changed: before {before}, after {after} (repaired)")


def rl_root(*args, config: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if config:
        env["ROOTLESS_CONFIG"] = config
    return subprocess.run([sys.executable, "-m", "rootless", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def rl_user(*args) -> subprocess.CompletedProcess:
    pw = pwd.getpwnam(USER)
    env = {"HOME": pw.pw_dir, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run(["runuser", "-u", USER, "--", sys.executable, "-m", "rootless", *args],
                          capture_output=True, text=True, env=env, cwd="/", timeout=120)


@pytest.fixture(scope="module")
def arm64_busybox(images, tmp_path_factory):
    d = tmp_path_factory.mktemp("arm64bb")
    os.chmod(d, 0o755)
    root = extract_rootfs(images.layout("busybox"), "linux/arm64", d / "rootfs")
    return root / "bin" / "busybox"


def test_install_status_uninstall(host_restored, arm64_busybox, tmp_path):
    if read_state().entry_for("arm64") is not None:
        pytest.skip("this host already has an arm64 registration")
    cp = rl_root("binfmt", "install", "--arch", "arm64", "--persist")
    assert cp.returncode == 0, cp.stderr
    assert "arm64: registered rootless-qemu-aarch64" in cp.stdout
    try:
        st = read_state()
        assert st.mounted and st.enabled
        e = next(e for e in st.entries if e.name == "rootless-qemu-aarch64")
        assert e.enabled and "F" in e.flags and e.interpreter.endswith("qemu-aarch64-static")
        conf = Path(BINFMT_D) / "rootless-qemu-aarch64.conf"
        assert conf.read_text().splitlines()[1].startswith(r":rootless-qemu-aarch64:M:0:\x7f\x45\x4c\x46")

        # a real arm64 program now runs on the host, for root and for users
        out = subprocess.run([str(arm64_busybox), "uname", "-m"], capture_output=True, text=True)
        assert out.stdout.strip() == "aarch64"

        d = json.loads(rl_root("binfmt", "status", "--format", "json").stdout)
        row = next(r for r in d["entries"] if r["name"] == "rootless-qemu-aarch64")
        assert row["arch"] == "arm64" and row["works"] is True and row["rootless"] is True
        assert row["persisted"] == str(conf)
        assert d["emulation"]["arm64"]["mode"] == "host"
        text = rl_root("binfmt", "status").stdout
        assert any(l.split()[:2] == ["rootless-qemu-aarch64", "arm64"] and l.split()[-1] == "yes"
                   for l in text.splitlines()), text

        # users' `rootless` now uses the host registration (mode "host")
        info = json.loads(rl_user("info", "--format", "json").stdout)
        assert info["emulation"]["arm64"]["mode"] == "host"
        assert info["emulation"]["riscv64"]["mode"] == "sandboxed"

        # installing again changes nothing
        again = rl_root("binfmt", "install", "--arch", "arm64")
        assert again.returncode == 0 and "arm64: exists rootless-qemu-aarch64" in again.stdout
    finally:
        un = rl_root("binfmt", "uninstall")
    assert un.returncode == 0, un.stderr
    assert "arm64: removed rootless-qemu-aarch64" in un.stdout
    # host_restored checks that mount state, entries, /etc/binfmt.d and the marker are as before


def test_install_refuses_native_arch(host_restored):
    cp = rl_root("binfmt", "install", "--arch", "amd64" if os.uname().machine == "x86_64" else "arm64")
    assert cp.returncode == 125
    assert "native" in cp.stderr and "Hint:" in cp.stderr


def test_unknown_arch_lists_known(host_restored):
    cp = rl_root("binfmt", "install", "--arch", "sparc")
    assert cp.returncode == 125 and "arm64" in cp.stderr


def test_registration_that_does_not_work_is_removed(host_restored, tmp_path):
    """busybox (static, amd64) configured as "qemu" for arm64: registered, probed, fails, removed."""
    if read_state().entry_for("arm64") is not None:
        pytest.skip("this host already has an arm64 registration")
    busybox = "/bin/busybox"
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[emulation.qemu]\narm64 = "{busybox}"\n')
    cp = rl_root("binfmt", "install", "--arch", "arm64", config=str(cfg))
    assert cp.returncode == 125, cp.stdout
    assert "does not work" in cp.stderr and "removed it" in cp.stderr
    assert read_state().entry_for("arm64") is None


def test_status_reports_a_broken_registration(host_restored):
    """An entry whose interpreter is not qemu: status executes the probe and says NO."""
    from archsupport.binfmt import FORMATS, register_line, write_register
    from archsupport.hostbinfmt import ensure_mounted, uninstall

    if read_state().entry_for("arm64") is not None:
        pytest.skip("this host already has an arm64 registration")
    mounted = ensure_mounted()
    name = HOST_PREFIX + "test-broken"
    try:
        write_register(HOST_BINFMT_DIR, register_line(FORMATS["arm64"], "/bin/false", "F", name=name))
        d = json.loads(rl_root("binfmt", "status", "--format", "json").stdout)
        row = next(r for r in d["entries"] if r["name"] == name)
        assert row["arch"] == "arm64" and row["works"] is False and "exited 1" in row["detail"]
    finally:
        remove_entry(HOST_BINFMT_DIR, name)
        if mounted:
            uninstall([])          # unmounts what ensure_mounted mounted (no entries left)


def test_status_as_user_without_registrations(host_restored):
    cp = rl_user("binfmt", "status")
    assert cp.returncode == 0, cp.stderr
    assert "Emulation used by `rootless run`" in cp.stdout
    cp = rl_user("binfmt", "install", "--arch", "arm64")
    assert cp.returncode == 125 and "must run as root" in cp.stderr


@pytest.fixture
def user_dir():
    """A directory the unprivileged user can reach (pytest's tmp_path is under a 0700 directory)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rootless-root-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_run_uses_the_host_registration(host_restored, registry, user_dir):
    """With an admin's registration present, `rootless run` uses mode host: no binfmt_misc in the container."""
    if read_state().entry_for("arm64") is not None:
        pytest.skip("this host already has an arm64 registration")
    pw = pwd.getpwnam(USER)
    base = user_dir / "user"
    base.mkdir()
    for d in ("home", "run"):
        (base / d).mkdir()
    for p in (base, base / "home", base / "run"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    os.chmod(base / "run", 0o700)
    env = {"HOME": str(base / "home"), "XDG_RUNTIME_DIR": str(base / "run"), "ROOTLESS_ROOT": str(base / "store"),
           "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT)}

    def user(*args):
        return subprocess.run(["runuser", "-u", USER, "--", "env", *(f"{k}={v}" for k, v in env.items()),
                               sys.executable, "-m", "rootless", *args],
                              capture_output=True, text=True, cwd="/", timeout=300)

    ref = registry.ref("busybox")
    cp = rl_root("binfmt", "install", "--arch", "arm64")
    assert cp.returncode == 0, cp.stderr
    try:
        out = user("run", "--rm", "--platform", "linux/arm64", ref, "sh", "-c", "uname -m; cat /proc/self/mountinfo")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "aarch64"
        assert not any(" - binfmt_misc " in l for l in lines), out.stdout     # mode host: nothing mounted
        user("create", "--name", "hostmode", "--platform", "linux/arm64", ref, "true")
        d = json.loads(user("inspect", "hostmode").stdout)[0]
        assert d["Rootless"]["Emulation"]["mode"] == "host"
        assert d["Rootless"]["Emulation"]["host_entry"] == "rootless-qemu-aarch64"
    finally:
        user("rm", "-f", "hostmode")
        user("unshare", "rm", "-rf", str(base / "store"))
        rl_root("binfmt", "uninstall")
    # and without it, the same run registers in the container (sandboxed)
    out = user("run", "--rm", "--platform", "linux/arm64", ref, "sh", "-c", "uname -m; cat /proc/self/mountinfo")
    assert out.stdout.splitlines()[0] == "aarch64"
    assert any(" - binfmt_misc " in l for l in out.stdout.splitlines())
    user("unshare", "rm", "-rf", str(base / "store"))

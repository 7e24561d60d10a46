"""vmhost on macOS and Windows hosts: what can be checked on Linux.

The command line and the accelerator per host OS (pure functions), the SSH
options without connection sharing (Windows), the guest user's name, and
that the forwarding path imports nothing Unix-only: a child interpreter in
which fcntl, termios, pwd, grp, resource and the ctypes syscall shim cannot
be imported and os has no getuid runs `--connection` and `machine` commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vmhost import qemu as Q
from vmhost.spec import MachineSpec

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = MachineSpec(name="dev", arch="x86_64", cpus=2, memory_mib=2048, disk_gib=20, accel="auto",
                   image="/img", user="alice", uid=1000, gid=1000, home="", created="2024-01-01T00:00:00Z")


def _launch(**kw) -> Q.Launch:
    base = dict(qemu="qemu-system-x86_64", accel="tcg", kernel="k", initrd="i", console="ttyS0",
                disk="/m/disk.qcow2", ssh_port=2222, qmp="/r/qmp.sock", pidfile="/r/qemu.pid",
                serial_log="/m/serial.log")
    base.update(kw)
    return Q.Launch(**base)


def _opt(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _probe(**kw):
    base = dict(system="Linux", machine="x86_64", kvm_device=True, kvm_access=True, kvm_modules=("kvm_intel",),
                distro="debian")
    base.update(kw)
    return Q.HostProbe(**base)


# ---------------------------------------------------------------- command line per OS

def test_windows_qemu_does_not_daemonize_and_has_qmp_on_loopback_tcp():
    disk = r"C:\Users\Jane Doe\AppData\Local\rootless\machines\dev\disk.qcow2"
    argv = Q.qemu_argv(SPEC, _launch(host_system="Windows", accel="whpx", qmp="tcp:127.0.0.1:50123", disk=disk,
                                     pidfile=r"C:\x\qemu.pid"))
    assert "-daemonize" not in argv
    assert _opt(argv, "-pidfile") == [r"C:\x\qemu.pid"]
    assert "socket,id=qmp0,host=127.0.0.1,port=50123,server=on,wait=off" in _opt(argv, "-chardev")
    # WHPX first, TCG when Windows' hypervisor platform is off (QEMU tries them in order)
    assert _opt(argv, "-accel") == ["whpx,kernel-irqchip=off", "tcg,thread=multi,tb-size=256"]
    assert _opt(argv, "-cpu") == ["max"]
    assert f"if=none,id=disk0,file={disk},format=qcow2,discard=unmap,cache=writeback" in _opt(argv, "-drive")
    assert "-fsdev" not in argv


@pytest.mark.parametrize("system", ["Linux", "Darwin"])
def test_posix_qemu_daemonizes_with_qmp_on_a_unix_socket(system):
    argv = Q.qemu_argv(SPEC, _launch(host_system=system))
    assert argv[-1] == "-daemonize"
    assert "socket,id=qmp0,path=/r/qmp.sock,server=on,wait=off" in _opt(argv, "-chardev")


def test_macos_hvf_on_apple_silicon_and_intel():
    arm = Q.qemu_argv(SPEC.with_changes(arch="aarch64"),
                      _launch(host_system="Darwin", accel="hvf", console="ttyAMA0", qemu="qemu-system-aarch64"))
    assert _opt(arm, "-machine") == ["virt"] and _opt(arm, "-accel") == ["hvf"] and _opt(arm, "-cpu") == ["host"]
    intel = Q.qemu_argv(SPEC, _launch(host_system="Darwin", accel="hvf"))
    assert _opt(intel, "-machine")[0].startswith("q35") and _opt(intel, "-cpu") == ["host"]


def test_commas_in_paths_are_doubled():
    argv = Q.qemu_argv(SPEC, _launch(disk="/a,b/disk.qcow2", share="/home/x,y", serial_log="/s,l"))
    assert any(d.startswith("if=none,id=disk0,file=/a,,b/disk.qcow2,") for d in _opt(argv, "-drive"))
    assert "local,id=fs0,path=/home/x,,y,security_model=none" in _opt(argv, "-fsdev")
    assert "file,id=serial0,path=/s,,l" in _opt(argv, "-chardev")


@pytest.mark.parametrize("probe,want", [
    (dict(system="Windows", kvm_device=False, kvm_access=False, kvm_modules=(), distro=""), ("whpx", None)),
    (dict(system="Darwin", machine="aarch64", hvf=True, kvm_device=False, kvm_modules=()), ("hvf", None)),
    (dict(system="Darwin", machine="x86_64", hvf=True, kvm_device=False, kvm_modules=()), ("hvf", None)),
    (dict(system="FreeBSD", kvm_device=False, kvm_modules=()), ("tcg", "no hardware accelerator known for FreeBSD")),
])
def test_accelerator_per_os(probe, want):
    accel, warning = Q.choose_accel("auto", _probe(**probe))
    assert accel == want[0]
    assert (warning is None) == (want[1] is None) and (want[1] is None or want[1] in warning)


def test_tcg_can_be_asked_for_everywhere_and_hvf_only_on_macos():
    for system in ("Linux", "Darwin", "Windows"):
        assert Q.choose_accel("tcg", _probe(system=system)) == ("tcg", None)
    from rootless.errors import MachineError

    with pytest.raises(MachineError):
        Q.choose_accel("hvf", _probe(system="Windows"))


@pytest.mark.parametrize("name,want", [("alice", "alice"), ("Jane Doe", "jane_doe"), (r"CORP\Bob", "bob"),
                                       ("bob@example.com", "bob"), ("1st", "u1st"), ("root", "user"), ("", "u")])
def test_guest_user_name(name, want):
    from vmhost.machine import guest_user_name

    assert guest_user_name(name) == want


def test_windows_ssh_has_no_connection_sharing(tmp_path):
    """OpenSSH for Windows has no ControlMaster: each command logs in itself."""
    from rootless.config import load_config
    from rootless.report import make_reporter
    from vmhost.machine import Machines
    from vmhost.spec import write_json_atomic

    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "ROOTLESS_ROOT": str(tmp_path / "store"),
           "PATH": os.environ.get("PATH", "")}
    cfg = load_config(env)
    out = []
    for system in ("Windows", "Linux"):
        ms = Machines(cfg, env, make_reporter(open(os.devnull, "w"), tty=False), probe=_probe(system=system))
        p = ms.paths("dev")
        p.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(p.spec, SPEC.to_json())
        from vmhost.machine import _proc_start

        write_json_atomic(p.state, {"running": True, "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
                                    "ssh_port": 2222})
        out.append(ms.ssh_argv("dev"))
    win, linux = out
    assert not any(a.startswith("ControlPath=") for a in win)
    assert any(a.startswith("ControlPath=") for a in linux)


# ---------------------------------------------------------------- imports

CHILD = textwrap.dedent(r"""
    import importlib.abc, json, os, sys
    BLOCKED = {"fcntl", "termios", "pwd", "grp", "resource", "rootless.syscalls", "rootless.userns"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED:
                raise ImportError(f"{name} does not exist on this OS (simulated)")
            return None

    for m in BLOCKED:
        sys.modules.pop(m, None)
    sys.meta_path.insert(0, Block())
    for f in ("getuid", "getgid", "geteuid", "getegid"):
        if hasattr(os, f):
            delattr(os, f)
    sys.platform = "darwin"  # a host without a Linux kernel: commands go to machine "default"
    import rootless.cli.main as cli
    import vmhost.cloud, vmhost.fat, vmhost.forward, vmhost.machine, vmhost.qemu, vmhost.qmp, vmhost.seed
    import vmhost.ssh, vmhost.image, vmhost.lock, vmhost.detach, vmhost.portwatch, vmhost.spec
    results = {}
    for argv in (["--connection", "nosuch", "run", "--rm", "-p", "8080:80", "img"], ["machine", "list"],
                 ["machine", "inspect", "nosuch"], ["machine", "list", "--format", "json"],
                 ["run", "--rm", "img", "true"]):
        results[" ".join(argv)] = cli.main(argv)
    print(json.dumps({"results": results, "blocked_loaded": sorted(BLOCKED & set(sys.modules))}))
""")


def test_forward_path_imports_nothing_unix_only(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "ROOTLESS_ROOT": str(tmp_path / "store"),
           "PYTHONPATH": ROOT, "PATH": os.environ.get("PATH", "")}
    cp = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert out["blocked_loaded"] == []
    r = out["results"]
    assert r["--connection nosuch run --rm -p 8080:80 img"] == 125
    assert "machine nosuch does not exist" in cp.stderr
    assert r["machine list"] == 0 and r["machine list --format json"] == 0
    assert r["machine inspect nosuch"] == 125
    # no --connection on macOS: the command went to machine "default", which the error names with its fix
    assert r["run --rm img true"] == 125
    assert "machine default does not exist" in cp.stderr and "rootless machine init" in cp.stderr


def test_connection_for_a_host_without_linux_is_the_default_machine():
    from rootless.cli.main import connection_for

    assert connection_for(None, {}, "linux") is None
    assert connection_for(None, {}, "darwin") == "default"
    assert connection_for(None, {}, "win32") == "default"
    assert connection_for(None, {"ROOTLESS_CONNECTION": "dev"}, "darwin") == "dev"
    assert connection_for(None, {"ROOTLESS_CONNECTION": "dev"}, "linux") == "dev"
    assert connection_for("m2", {"ROOTLESS_CONNECTION": "dev"}, "win32") == "m2"

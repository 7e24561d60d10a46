"""The managed VM, for real: build the guest image, boot it, run containers in
it through ``--connection``, forward ports, share the home, stop, remove.

One machine serves the whole module (a boot is the expensive part); the tests
run in file order: start -> use -> stop -> start on demand -> rm.

The guest image is cached in ``$ROOTLESS_TEST_VM_IMAGES`` (default
/var/tmp/rootless-test-vm-images-UID) so only the first run builds it.
Select with ``-m vm``: ``bash ci/dev-test -m vm tests/integration/test_machine.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import RL, free_port

pytestmark = [pytest.mark.vm, pytest.mark.slow]

VM_IMAGES = os.environ.get("ROOTLESS_TEST_VM_IMAGES") or f"/var/tmp/rootless-test-vm-images-{os.getuid()}"
NAME = "default"


class VM:
    def __init__(self, rl: RL, init, start):
        self.rl = rl
        self.init = init
        self.start = start

    def info(self) -> dict:
        return json.loads(self.rl.ok("machine", "inspect", NAME))[0]

    def run(self, *args, **kw):
        """``rootless --connection default ARGS``."""
        kw.setdefault("timeout", 600)
        return self.rl("--connection", NAME, *args, **kw)

    @property
    def dir(self) -> Path:
        return self.rl.root / "machines" / NAME


def _prune_other_images(cache: Path) -> None:
    """Keep only the current recipe's image in the test cache (each is ~400 MB)."""
    import platform

    from vmhost.image import make_recipe

    keep = make_recipe(platform.machine()).dirname
    if cache.is_dir():
        for p in cache.iterdir():
            if p.is_dir() and p.name != keep and not p.name.startswith("."):
                shutil.rmtree(p, ignore_errors=True)


@pytest.fixture(scope="module")
def vm(tmp_path_factory, registry, unprivileged):
    cache = Path(VM_IMAGES)
    cache.mkdir(parents=True, exist_ok=True)
    _prune_other_images(cache)
    rl = RL(tmp_path_factory.mktemp("vm"))
    rl.env["ROOTLESS_MACHINE_IMAGES"] = str(cache)
    init = rl("machine", "init", timeout=1800)   # builds the guest image on the first run
    assert init.returncode == 0, init.stderr
    start = rl("machine", "start", timeout=900)
    assert start.returncode == 0, start.stderr
    yield VM(rl, init, start)
    rl("machine", "rm", "-f", NAME, timeout=300)
    rl.cleanup()


def _needs_runtime_feature(cp) -> None:
    """The guest runs whatever rootless can do: a feature another part of the
    project has not delivered yet is a skip naming it (a failure in CI, where
    ROOTLESS_CI_NO_SKIP=1), not a pass."""
    for marker in ("is not available in this build", "has no emulation support yet"):
        if cp.returncode == 125 and marker in cp.stderr:
            pytest.skip("the runtime lacks: " + cp.stderr.strip().splitlines()[-2 if "Hint" in cp.stderr else -1])


def _pids_of(machine_dir: Path) -> list[int]:
    needle = str(machine_dir).encode()
    pids = []
    for e in os.scandir("/proc"):
        if not e.name.isdigit() or int(e.name) == os.getpid():
            continue
        try:
            with open(os.path.join(e.path, "cmdline"), "rb") as f:
                if needle in f.read():
                    pids.append(int(e.name))
        except OSError:
            pass
    return pids


# ---------------------------------------------------------------- start

def test_init_and_start_reach_ready(vm):
    from vmhost.qemu import choose_accel, probe_host

    assert vm.init.stdout.strip() == NAME
    assert "Machine default created" in vm.init.stderr
    assert "Machine default is ready" in vm.start.stderr
    accel, warning = choose_accel("auto", probe_host())
    # no acceleration: a warning that says why, and TCG
    assert ("WARNING: no hardware acceleration" in vm.start.stderr) == (warning is not None)
    info = vm.info()
    assert info["State"] == "running" and info["Accel"] == accel and info["PID"] > 0
    assert info["SharedHome"] == str(vm.rl.home.resolve())
    listed = json.loads(vm.rl.ok("machine", "list", "--format", "json"))
    assert [(m["Name"], m["Running"], m["CPUs"]) for m in listed] == [(NAME, True, info["CPUs"])]
    # SSH answers, as the user of the same name and uid
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    assert vm.rl.ok("machine", "ssh", NAME, "id", "-un").strip() == me
    assert vm.rl.ok("machine", "ssh", "id", "-u").strip() == str(os.getuid())


def test_bad_input_on_a_running_machine(vm):
    again = vm.rl("machine", "init")
    assert again.returncode == 125 and "machine default already exists" in again.stderr
    started = vm.rl("machine", "start")
    assert started.returncode == 125 and "already running" in started.stderr
    changed = vm.rl("machine", "set", "--cpus", "1")
    assert changed.returncode == 125 and "is running" in changed.stderr and "Hint:" in changed.stderr
    removed = vm.rl("machine", "rm", NAME)
    assert removed.returncode == 125 and "is running" in removed.stderr and "rm -f" in removed.stderr
    missing = vm.rl("--connection", "nosuch", "ps")
    assert missing.returncode == 125 and "machine nosuch does not exist" in missing.stderr
    assert "machine init nosuch" in missing.stderr


def test_serial_console_shows_the_boot(vm):
    import pexpect

    log = vm.dir / "serial.log"
    child = pexpect.spawn("tail", ["-n", "+1", str(log)], timeout=10, encoding="utf-8")
    seen = ""
    for line in (r"rootless-guest: stage 1 at [0-9.]+ s", r"rootless-guest: booted in [0-9.]+ s",
                 r"rootless-guest: ready in [0-9.]+ s"):
        # a step of the guest's boot that went wrong says "rootless-guest: failed: ..." before "ready"
        assert child.expect([line, r"rootless-guest: failed: [^\r\n]*"]) == 0, child.after
        seen += child.before + child.after
    child.expect(pexpect.EOF)
    seen += child.before
    assert "failed" not in seen
    assert log.read_text().replace("\r", "").startswith(seen.replace("\r", ""))  # the console saw the whole log


# ---------------------------------------------------------------- containers through --connection

def test_run_prints_the_guest_architecture(vm, registry):
    guest = vm.rl.ok("machine", "ssh", "uname", "-m").strip()
    cp = vm.run("run", "--rm", registry.ref("busybox"), "uname", "-m")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == guest


def test_exit_status_and_streams_pass_through(vm, registry):
    ref = registry.ref("busybox")
    assert vm.run("run", "--rm", ref, "sh", "-c", "exit 7").returncode == 7
    cp = vm.run("run", "--rm", ref, "sh", "-c", "echo to-out; echo to-err >&2; exit 3")
    assert cp.returncode == 3
    assert cp.stdout == "to-out\n" and "to-err" in cp.stderr and "to-out" not in cp.stderr
    assert vm.run("run", "--rm", ref, "no-such-command").returncode == 127
    cp = vm.run("run", "--rm", "-i", ref, "tr", "a-z", "A-Z", input="hello vm\n")
    assert cp.returncode == 0 and cp.stdout == "HELLO VM\n"


def test_ctrl_c_ends_the_container_in_the_guest(vm, registry):
    import signal
    import subprocess

    p = subprocess.Popen([*vm.rl.argv0, "--connection", NAME, "run", "--rm", "--name", "interrupted",
                          registry.ref("busybox"), "sh", "-c", "trap 'exit 3' INT TERM; echo up; while :; do sleep 1; done"],
                         env=vm.rl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        assert p.stdout.readline() == "up\n"
        os.killpg(p.pid, signal.SIGINT)   # what the terminal does on Ctrl-C
        assert p.wait(timeout=120) == 130
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while "interrupted" in vm.run("ps", "-a", "--format", "{{.Names}}").stdout:
        assert time.monotonic() < deadline, "the container still runs in the guest after Ctrl-C on the host"
        time.sleep(1)


def test_tty_passes_through(vm, registry):
    import sys

    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "rootless", "--connection", NAME, "run", "-it", "--rm",
                                           registry.ref("busybox"), "sh"],
                          env=vm.rl.env, timeout=300, encoding="utf-8", dimensions=(30, 100))
    child.expect(r"# ")
    child.sendline("tty; stty size; exit 5")
    child.expect(r"/dev/pts/\d+")
    child.expect("30 100")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 5


def test_machine_ssh_interactive_login(vm):
    import sys

    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "rootless", "machine", "ssh"], env=vm.rl.env, timeout=120,
                          encoding="utf-8")
    child.expect(r"\$ ")
    child.sendline("echo host=$(hostname) home=$HOME; exit 3")
    child.expect(f"host={NAME} home={vm.rl.home.resolve()}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3


def test_connection_from_the_environment(vm, registry):
    cp = vm.rl("run", "--rm", registry.ref("busybox"), "cat", "/proc/sys/kernel/hostname",
               env={"ROOTLESS_CONNECTION": NAME}, timeout=600)
    assert cp.returncode == 0, cp.stderr
    # the container runs in the guest's runtime: its store is the guest's, not ours
    assert not (vm.rl.root / "images.json").exists()


def test_arm64_image_runs_in_the_guest(vm, registry):
    cp = vm.run("run", "--rm", "--platform", "linux/arm64", registry.ref("busybox"), "uname", "-m")
    _needs_runtime_feature(cp)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "aarch64"


def test_published_port_answers_on_the_host(vm, registry):
    port = free_port()
    cp = vm.run("run", "-d", "--rm", "--name", "web", "-p", f"127.0.0.1:{port}:8080", registry.ref("busybox"),
                "sh", "-c", "mkdir /www && echo published-in-vm > /www/index.html && exec httpd -f -p 8080 -h /www")
    _needs_runtime_feature(cp)
    assert cp.returncode == 0, cp.stderr
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert body == b"published-in-vm\n"
        ports = vm.info()["Ports"]
        assert {"Proto": "tcp", "HostIP": "127.0.0.1", "HostPort": port, "GuestPort": port} in ports
    finally:
        vm.run("rm", "-f", "web")


def _http(url: str, deadline_s: float = 120) -> bytes:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10).read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _closed(port: int, deadline_s: float = 60) -> bool:
    """Nothing forwards host port ``port`` any more (within the deadline)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            # (SO_REUSEADDR: connections in TIME_WAIT do not count, a listener does)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
                return True
            except OSError:
                time.sleep(0.5)
    return False


def _guest_port(vm, name: str, cport: str) -> int:
    """The host port the guest's runtime published for CPORT of container NAME."""
    deadline = time.monotonic() + 120
    while True:
        cp = vm.run("port", name, cport)
        if cp.returncode == 0 and cp.stdout.strip():
            return int(cp.stdout.split()[0].rsplit(":", 1)[1])
        assert time.monotonic() < deadline, cp.stderr
        time.sleep(1)


def test_a_port_the_guest_picks_is_forwarded_while_the_run_lasts(vm, registry):
    """-p CONTAINERPORT in the foreground: the guest picks the port, the host's same port answers."""
    import signal
    import subprocess

    p = subprocess.Popen([*vm.rl.argv0, "--connection", NAME, "run", "--rm", "--name", "dyn", "-p", "8080",
                          registry.ref("busybox"), "sh", "-c",
                          "mkdir /www && echo picked-by-guest > /www/index.html && exec httpd -f -p 8080 -h /www"],
                         env=vm.rl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        port = _guest_port(vm, "dyn", "8080")
        assert _http(f"http://127.0.0.1:{port}/") == b"picked-by-guest\n"
        assert {"Proto": "tcp", "HostIP": "", "HostPort": port, "GuestPort": port} in vm.info()["Ports"]
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate(timeout=60)
    assert "not forwarded" not in err, err
    # the run ended: its forward is gone and the host port is free again
    assert all(f["HostPort"] != port for f in vm.info()["Ports"])
    assert _closed(port, 5)


def test_publish_all_of_a_detached_container_until_it_stops(vm, registry):
    """run -d -P: forwarded once it runs, removed when the container stops (not when the command ends)."""
    cp = vm.run("run", "-d", "--name", "pall", "-P", "--expose", "8081", registry.ref("busybox"), "sh", "-c",
                "mkdir /www && echo published-all > /www/index.html && exec httpd -f -p 8081 -h /www")
    assert cp.returncode == 0, cp.stderr
    try:
        port = _guest_port(vm, "pall", "8081")
        assert _http(f"http://127.0.0.1:{port}/") == b"published-all\n"
        fw = {"Proto": "tcp", "HostIP": "", "HostPort": port, "GuestPort": port}
        assert fw in vm.info()["Ports"]
        time.sleep(2)
        assert fw in vm.info()["Ports"]     # still there after the command ended
        assert vm.run("stop", "-t", "1", "pall").returncode == 0
        deadline = time.monotonic() + 120
        while fw in vm.info()["Ports"]:
            assert time.monotonic() < deadline, "the forward outlived the container"
            time.sleep(0.5)
        assert _closed(port, 10)
    finally:
        vm.run("rm", "-f", "pall")


def test_publishing_a_port_taken_on_the_host_fails_before_running(vm, registry):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        cp = vm.run("run", "--rm", "--name", "never", "-p", f"127.0.0.1:{taken}:80", registry.ref("busybox"), "true")
        assert cp.returncode == 125
        assert f"host port 127.0.0.1:{taken}/tcp is already in use" in cp.stderr and "Hint:" in cp.stderr
    ps = vm.run("ps", "-a", "--format", "{{.Names}}")
    assert "never" not in ps.stdout


def test_bind_mount_under_the_shared_home(vm, registry):
    project = vm.rl.home / "project"
    project.mkdir()
    (project / "in.txt").write_text("from the host\n")
    cp = vm.run("run", "--rm", "-v", f"{project}:/src", registry.ref("busybox"),
                "sh", "-c", "cat /src/in.txt; echo written-in-vm > /src/out.txt")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "from the host\n"
    out = project / "out.txt"
    assert out.read_text() == "written-in-vm\n"
    assert out.stat().st_uid == os.getuid()
    # a host path the machine does not share is refused, with the fix
    outside = vm.rl.base / "not-shared"
    outside.mkdir()
    cp = vm.run("run", "--rm", "-v", f"{outside}:/x", registry.ref("busybox"), "true")
    assert cp.returncode == 125 and "is not shared with the machine" in cp.stderr and "Hint:" in cp.stderr


def test_a_second_machine_is_independent(vm):
    image = vm.info()["Image"]
    cp = vm.rl("machine", "init", "other", "--image", image, "--cpus", "1", "--memory", "1G", "--disk-size", "4",
               "--no-share")
    assert cp.returncode == 0, cp.stderr
    other = vm.rl.root / "machines" / "other"
    info = json.loads(vm.rl.ok("machine", "inspect", "other"))[0]
    assert (info["CPUs"], info["Memory"], info["DiskSize"], info["SharedHome"]) == (1, 1024, 4, "")
    assert info["State"] == "stopped" and info["ConfigDir"] == str(other)
    assert (other / "disk.qcow2").is_file() and (other / "id_ed25519").is_file()
    assert (other / "id_ed25519").read_bytes() != (vm.dir / "id_ed25519").read_bytes()
    names = [(m["Name"], m["Default"], m["Running"])
             for m in json.loads(vm.rl.ok("machine", "list", "--format", "json"))]
    assert names == [(NAME, True, True), ("other", False, False)]
    listing = vm.rl.ok("machine", "list").splitlines()
    assert listing[0].split()[:3] == ["NAME", "VM", "TYPE"] and listing[1].startswith("default*")
    before = sorted(p.name for p in vm.dir.iterdir())
    vm.rl.ok("machine", "rm", "other")
    assert not other.exists()
    assert sorted(p.name for p in vm.dir.iterdir()) == before
    assert vm.info()["State"] == "running"


@pytest.mark.parametrize("args,message", [
    (("machine", "init", "x", "--image", "/nonexistent"), "--image /nonexistent: no such file or directory"),
    (("machine", "init", "bad/name"), "invalid machine name"),
    (("machine", "init", "x", "--cpus", "0"), "must be at least 1"),
    (("machine", "init", "x", "--memory", "lots"), "invalid size"),
    (("machine", "set", "--disk-size", "1", "nosuch"), "machine nosuch does not exist"),
    (("machine", "start", "nosuch"), "machine nosuch does not exist"),
])
def test_bad_machine_arguments(vm, args, message):
    cp = vm.rl(*args)
    assert cp.returncode == 125, cp.stderr
    assert message in cp.stderr
    assert not (vm.rl.root / "machines" / "x").exists()


# ---------------------------------------------------------------- stop, start on demand, rm

def test_stop_leaves_no_process(vm):
    import pexpect

    pid = vm.info()["PID"]
    log = vm.dir / "serial.log"
    console = pexpect.spawn("tail", ["-n", "0", "-F", str(log)], timeout=120, encoding="utf-8")
    try:
        cp = vm.rl("machine", "stop", timeout=300)
        assert cp.returncode == 0, cp.stderr
        console.expect("rootless-guest: stopping")
        console.expect("rootless-guest: stopped")
    finally:
        console.close(force=True)
    assert not os.path.exists(f"/proc/{pid}")
    assert _pids_of(vm.dir) == []
    info = vm.info()
    assert info["State"] == "stopped" and info["PID"] == 0 and info["Ports"] == []
    assert not Path(info["QMPSocket"]).exists()
    # a stopped machine: clear errors
    cp = vm.rl("machine", "ssh", "true")
    assert cp.returncode == 125 and "machine default is not running" in cp.stderr and "machine start" in cp.stderr
    again = vm.rl("machine", "stop")
    assert again.returncode == 0 and "was not running" in again.stderr
    # settings change while stopped
    vm.rl.ok("machine", "set", "--memory", "1536", "--disk-size", "24")
    info = vm.info()
    assert info["Memory"] == 1536 and info["DiskSize"] == 24
    # no qemu-system on PATH: the install command for this host
    cp = vm.rl("machine", "start", env={"PATH": str(vm.rl.base / "empty-path")})
    assert cp.returncode == 125
    assert "qemu-system-x86_64 not found" in cp.stderr or "qemu-system-aarch64 not found" in cp.stderr
    assert "Hint: install it:" in cp.stderr or "Hint: install QEMU" in cp.stderr


def test_connection_starts_a_stopped_machine(vm, registry):
    cp = vm.run("run", "--rm", registry.ref("busybox"), "echo", "started-on-demand")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "started-on-demand\n"
    assert "Machine default is ready" in cp.stderr
    assert vm.info()["State"] == "running"
    # the disk grew to the new size
    size = vm.rl.ok("machine", "ssh", "df", "-k", "/").splitlines()[-1].split()[1]
    assert int(size) > 20 * 1024 * 1024


def test_rm_removes_every_process_and_file(vm):
    info = vm.info()
    pid = info["PID"]
    assert os.path.exists(f"/proc/{pid}")
    run_dir = Path(info["RuntimeDir"])
    cp = vm.rl("machine", "rm", "-f", NAME, timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert not os.path.exists(f"/proc/{pid}")
    assert _pids_of(vm.dir) == []
    assert not vm.dir.exists() and not run_dir.exists()
    assert vm.rl.ok("machine", "list", "-q") == ""
    assert [p.name for p in (vm.rl.root / "machines").iterdir()] == []
    # the guest image stays in the cache for the next machine
    assert any(Path(VM_IMAGES).glob("*/image.json"))
    cp = vm.rl("machine", "inspect", NAME)
    assert cp.returncode == 125 and "does not exist" in cp.stderr

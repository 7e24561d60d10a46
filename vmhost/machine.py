"""Machine lifecycle: init, start, stop, rm, list, inspect, set.

Every change of a machine happens under its fcntl lock (``lock``); state
files are written atomically. A machine is *running* when the pid recorded
in state.json still exists with the recorded start time (a recycled pid is
not our QEMU).

Start: choose the accelerator (warn on TCG) -> write this start's initramfs
(image + seed) -> QEMU daemonizes (errors surface synchronously) -> wait for
"rootless-guest: ready" on the serial console -> SSH answers -> ready.
Stop: ``poweroff`` over SSH -> ACPI power button over QMP -> ``quit`` ->
SIGTERM -> SIGKILL, each with a deadline.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from rootless.errors import HelperFailed, MachineError, PortInUse, UsageError
from vmhost import qemu as Q
from vmhost.spec import (DEFAULT_NAME, MachinePaths, MachineSpec, check_name, machines_dir, read_json,
                         write_json_atomic)

READY_LINE = "rootless-guest: ready"
FAIL_MARKERS = ("rootless-guest: stage 1 failed", "Kernel panic", "rootless-guest: sshd did not start")


@dataclass(frozen=True)
class MachineState:
    running: bool
    pid: int = 0
    ssh_port: int = 0
    accel: str = ""
    started_at: float = 0.0
    last_up: float = 0.0
    forwards: tuple[tuple[str, str, int, int], ...] = ()


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        now = _proc_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = "127.0.0.1", proto: str = "tcp") -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            return True
        except OSError:
            return False


class Machines:
    """The machines of one user (one Config)."""

    def __init__(self, config, env: dict[str, str], reporter, probe: Q.HostProbe | None = None):
        self.config = config
        self.env = env
        self.reporter = reporter
        self._probe = probe

    # ------------------------------------------------------------ helpers

    @property
    def probe(self) -> Q.HostProbe:
        if self._probe is None:
            self._probe = Q.probe_host()
        return self._probe

    def paths(self, name: str) -> MachinePaths:
        return MachinePaths.of(self.config, check_name(name))

    def exists(self, name: str) -> bool:
        return self.paths(name).spec.is_file()

    def spec(self, name: str) -> MachineSpec:
        p = self.paths(name)
        try:
            return MachineSpec.from_json(read_json(p.spec, "machine"))
        except FileNotFoundError:
            raise MachineError(f"machine {name} does not exist",
                               hint=f"create it: rootless machine init{'' if name == DEFAULT_NAME else ' ' + name}",
                               exit_code=125) from None

    def names(self) -> list[str]:
        d = machines_dir(self.config)
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and (p / "machine.json").is_file())

    @contextlib.contextmanager
    def _locked(self, name: str):
        p = self.paths(name)
        p.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(p.lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield p

    def state(self, name: str) -> MachineState:
        p = self.paths(name)
        try:
            d = read_json(p.state, "machine state")
        except FileNotFoundError:
            return MachineState(False)
        pid = int(d.get("pid") or 0)
        running = bool(d.get("running")) and _alive(pid, d.get("pid_start"))
        return MachineState(running=running, pid=pid if running else 0, ssh_port=int(d.get("ssh_port") or 0),
                            accel=d.get("accel", ""), started_at=float(d.get("started_at") or 0),
                            last_up=float(d.get("last_up") or 0),
                            forwards=tuple(tuple(f) for f in d.get("forwards", [])) if running else ())

    def _write_state(self, p: MachinePaths, **d) -> None:
        write_json_atomic(p.state, d)

    def _update_state(self, p: MachinePaths, **changes) -> None:
        try:
            d = read_json(p.state, "machine state")
        except FileNotFoundError:
            d = {}
        d.update(changes)
        write_json_atomic(p.state, d)

    # ------------------------------------------------------------ init

    def init(self, name: str = DEFAULT_NAME, *, cpus: int | None = None, memory_mib: int | None = None,
             disk_gib: int | None = None, image: str | None = None, accel: str = "auto",
             share_home: bool = True) -> MachineSpec:
        from vmhost import image as I
        from vmhost import ssh

        check_name(name)
        if accel not in Q.ACCELS:
            raise UsageError(f"unknown accelerator {accel!r}", hint="use one of " + ", ".join(Q.ACCELS))
        cpus = cpus or min(2, os.cpu_count() or 1)
        memory_mib = memory_mib or 2048
        disk_gib = disk_gib or 20
        _check_resources(cpus, memory_mib, disk_gib)
        if self.exists(name):
            raise MachineError(f"machine {name} already exists",
                               hint=f"use it (rootless machine start {name}), or remove it first "
                                    f"(rootless machine rm {name})")
        arch = self.probe.machine
        if image:
            img = I.GuestImage.load(Path(image).expanduser().resolve())
            if Q.normalize_machine(img.arch) != arch:
                raise MachineError(f"guest image {image} is for {img.arch}, this host is {arch}",
                                   hint="give --image an image of the host's architecture")
        else:
            img = I.ensure_image(self.config, self.env, arch, self.reporter)
        qemu_img = Q.find_program("qemu-img", self.env, self.probe, "make the machine's disk")

        root = machines_dir(self.config)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            from rootless import hosttools

            hosttools.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(img.rootfs), "-F", "raw",
                           str(tmp / "disk.qcow2"), f"{disk_gib}G"], "make the machine's disk (qemu-img create)",
                          timeout=120)
            ssh.keygen(tmp / "id_ed25519", f"rootless-machine-{name}", self.env, self.probe)
            ssh.keygen(tmp / "ssh_host_ed25519_key", f"rootless-machine-{name}-host", self.env, self.probe)
            host_pub = (tmp / "ssh_host_ed25519_key.pub").read_text()
            (tmp / "known_hosts").write_text(ssh.known_hosts_line(name, host_pub))
            home = str(Path(self.env.get("HOME") or Path.home()).resolve()) if share_home else ""
            if home and _guest_system_path(home):
                self.reporter.warn(f"your home directory {home} is a system directory of the guest: "
                                   "the machine will not share it")
                home = ""
            spec = MachineSpec(name=name, arch=arch, cpus=cpus, memory_mib=memory_mib, disk_gib=disk_gib,
                               accel=accel, image=str(img.path), user=_user_name(self.env), uid=os.getuid(),
                               gid=os.getgid(), home=home,
                               created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            write_json_atomic(tmp / "machine.json", spec.to_json())
            final = self.paths(name).dir
            if final.exists():
                # only a lock file from a concurrent init/rm: anything else is a machine
                if any(p.name != "lock" for p in final.iterdir()):
                    raise MachineError(f"machine {name} already exists")
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return spec

    # ------------------------------------------------------------ start

    def start(self, name: str = DEFAULT_NAME, *, if_needed: bool = False, timeout: float | None = None) -> MachineState:
        spec = self.spec(name)
        with self._locked(name) as p:
            st = self.state(name)
            if st.running:
                if if_needed:
                    return st
                raise MachineError(f"machine {name} is already running",
                                   hint=f"stop it first (rootless machine stop {name})")
            self._cleanup_runtime(p)
            return self._start_locked(spec, p, timeout)

    def _start_locked(self, spec: MachineSpec, p: MachinePaths, timeout: float | None) -> MachineState:
        from vmhost import image as I
        from vmhost import seed

        t0 = time.monotonic()
        accel, warning = Q.choose_accel(spec.accel, self.probe)
        if warning:
            self.reporter.warn(warning)
        qemu = Q.find_qemu_system(spec.arch, self.env, self.probe)
        if not (Path(spec.image) / "image.json").is_file():
            raise MachineError(f"the guest image of machine {spec.name} is gone ({spec.image})",
                               hint=f"make the machine again: rootless machine rm -f {spec.name} && "
                                    f"rootless machine init {spec.name}")
        img = I.GuestImage.load(Path(spec.image))
        if not p.disk.is_file():
            raise MachineError(f"the disk of machine {spec.name} is missing ({p.disk})",
                               hint=f"recreate the machine: rootless machine rm -f {spec.name} && rootless machine init")
        entries = seed.seed_entries(spec, (p.dir / "id_ed25519.pub").read_text(), p.host_key.read_bytes(),
                                    seed.code_tar())
        seed.write_initrd(p.initrd, img.initrd, entries)
        p.run.mkdir(parents=True, exist_ok=True, mode=0o700)
        share = spec.home if spec.home and os.path.isdir(spec.home) else ""
        if spec.home and not share:
            self.reporter.warn(f"{spec.home} does not exist: the machine starts without the shared home")
        last_err = None
        for _attempt in range(3):
            port = free_port()
            launch = Q.Launch(qemu=qemu, accel=accel, kernel=str(img.kernel), initrd=str(p.initrd),
                              console=img.cmdline_console, disk=str(p.disk), ssh_port=port, qmp=str(p.qmp),
                              pidfile=str(p.pidfile), serial_log=str(p.serial_log), share=share)
            argv = Q.qemu_argv(spec, launch)
            for f in (p.serial_log, p.pidfile):
                f.unlink(missing_ok=True)
            try:
                self._spawn(argv, p)
                break
            except HelperFailed as e:
                last_err = e
                if "host forwarding" in (e.stderr or "") and not port_free(port):
                    continue  # lost the race for the SSH port: another one
                raise
        else:
            raise last_err  # type: ignore[misc]
        pid = int(p.pidfile.read_text().strip())
        now = time.time()
        self._write_state(p, running=True, pid=pid, pid_start=_proc_start(pid), ssh_port=port, accel=accel,
                          started_at=now, last_up=now, forwards=[], qemu_argv=argv)
        st = MachineState(True, pid, port, accel, now, now)
        limit = timeout or (120.0 if accel != "tcg" else 600.0)
        try:
            self._wait_ready(spec, p, st, t0 + limit)
        except BaseException:
            self._kill(p, st, graceful=False)
            raise
        self.reporter.info(f"Machine {spec.name} is ready ({accel}, {time.monotonic() - t0:.1f} s)")
        return st

    def _spawn(self, argv: list[str], p: MachinePaths) -> None:
        import subprocess

        with open(p.qemu_log, "ab") as log:
            log.write(("\n== " + time.strftime("%Y-%m-%d %H:%M:%S") + " " + " ".join(argv) + "\n").encode())
            log.flush()
            try:
                cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE,
                                    timeout=120, start_new_session=True)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise HelperFailed("start QEMU", None, str(e)) from None
            log.write(cp.stderr)
        err = cp.stderr.decode(errors="replace")
        if cp.returncode != 0:
            hint = f"QEMU's messages are in {p.qemu_log}"
            if "Could not access KVM" in err or "failed to initialize kvm" in err.lower():
                hint = "KVM cannot be used: rootless machine set --accel tcg NAME (slow) or fix /dev/kvm access"
            raise HelperFailed("start QEMU", cp.returncode, err, hint=hint)
        if not p.pidfile.is_file():
            raise HelperFailed("start QEMU", None, "QEMU wrote no pid file", hint=f"see {p.qemu_log}")

    def _wait_ready(self, spec: MachineSpec, p: MachinePaths, st: MachineState, deadline: float) -> None:
        pos = 0
        seen = ""
        while True:
            try:
                with open(p.serial_log, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos += len(chunk)
                    seen = (seen + chunk.decode(errors="replace"))[-65536:]
            except FileNotFoundError:
                pass
            for marker in FAIL_MARKERS:
                if marker in seen:
                    line = next((ln for ln in seen.splitlines() if marker in ln), marker)
                    raise MachineError(f"machine {spec.name} failed to boot: {line.strip()}",
                                       hint=f"the serial console is in {p.serial_log}")
            if READY_LINE in seen:
                break
            if not _alive(st.pid, None):
                raise MachineError(f"machine {spec.name} stopped while booting",
                                   hint=f"see {p.serial_log} and {p.qemu_log}")
            if time.monotonic() > deadline:
                raise MachineError(f"machine {spec.name} did not become ready in time",
                                   hint=f"see the serial console in {p.serial_log}")
            time.sleep(0.02)
        # the guest says sshd listens: log in with our key, and keep that
        # connection as the master every later command goes through
        while True:
            cp = self._start_master(spec.name, p, st)
            if cp.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise MachineError(f"machine {spec.name} booted but SSH does not answer: "
                                   f"{cp.stderr.strip().splitlines()[-1:] or ''}",
                                   hint=f"see the serial console in {p.serial_log}")
            time.sleep(0.2)

    # ------------------------------------------------------------ ssh

    def _start_master(self, name: str, p: MachinePaths, st: MachineState):
        import subprocess

        from vmhost import ssh

        base = self.ssh_argv(name, state=st, tty=False)
        argv = ssh.master_argv(base[:-1], p.ssh_control) + [base[-1]]
        p.ssh_control.unlink(missing_ok=True)
        log = p.dir / "ssh.log"
        # -f: ssh forks once logged in; the master must hold no pipe of ours
        # (old OpenSSH keeps its stdio after -f), hence a file for its errors
        with open(log, "wb") as err:
            try:
                cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    timeout=60, start_new_session=True)
                rc = cp.returncode
            except subprocess.TimeoutExpired:
                rc = 255
        return subprocess.CompletedProcess(argv, rc, "", log.read_text(errors="replace"))

    def ssh_argv(self, name: str, *, state: MachineState | None = None, user: str | None = None,
                 tty: bool | None = None, extra: list[str] | None = None) -> list[str]:
        from vmhost import ssh

        spec = self.spec(name)
        st = state or self.state(name)
        if not st.running:
            raise MachineError(f"machine {name} is not running",
                               hint=f"start it: rootless machine start{'' if name == DEFAULT_NAME else ' ' + name}")
        p = self.paths(name)
        exe = Q.find_program("ssh", self.env, self.probe, "connect to the machine")
        argv = ssh.base_argv(exe, name, p.key, p.known_hosts, st.ssh_port, user or spec.user, tty=tty,
                             control=p.ssh_control if (user or spec.user) == spec.user else None)
        return argv + (extra or []) + ["127.0.0.1"]

    def ssh_run(self, name: str, command: list[str], *, state: MachineState | None = None, user: str | None = None,
                check: bool = True, timeout: float = 60, input: bytes | None = None):
        import shlex
        import subprocess

        argv = self.ssh_argv(name, state=state, user=user, tty=False) + ["--", shlex.join(command)]
        try:
            cp = subprocess.run(argv, capture_output=True, timeout=timeout, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            cp = subprocess.CompletedProcess(argv, 255, b"", b"timed out")
        cp = subprocess.CompletedProcess(argv, cp.returncode, cp.stdout.decode(errors="replace"),
                                         cp.stderr.decode(errors="replace"))
        if check and cp.returncode != 0:
            raise HelperFailed(f"run {shlex.join(command)} in machine {name}", cp.returncode, cp.stderr)
        return cp

    # ------------------------------------------------------------ stop / rm

    def stop(self, name: str = DEFAULT_NAME, *, timeout: float | None = None) -> bool:
        """Stop the machine; False when it was not running."""
        self.spec(name)
        with self._locked(name) as p:
            st = self.state(name)
            if not st.running:
                self._cleanup_runtime(p)
                self._update_state(p, running=False, pid=0, forwards=[])
                return False
            self._kill(p, st, graceful=True, timeout=timeout)
            return True

    def _kill(self, p: MachinePaths, st: MachineState, *, graceful: bool, timeout: float | None = None) -> None:
        from vmhost.qmp import QMP, QMPError

        limit = timeout if timeout is not None else (30.0 if st.accel != "tcg" else 90.0)

        def wait(secs: float) -> bool:
            end = time.monotonic() + secs
            while time.monotonic() < end:
                if not _alive(st.pid, None):
                    return True
                time.sleep(0.05)
            return not _alive(st.pid, None)

        done = not _alive(st.pid, None)
        if graceful and not done:
            name = p.dir.name
            cp = self.ssh_run(name, ["/bin/busybox", "poweroff"], state=st, user="root", check=False, timeout=15)
            done = wait(limit if cp.returncode in (0, 255) else 0)
            if not done:
                with contextlib.suppress(QMPError, OSError):
                    with QMP(str(p.qmp), timeout=5) as q:
                        q.command("system_powerdown")
                done = wait(10)
        if not done:
            with contextlib.suppress(QMPError, OSError):
                with QMP(str(p.qmp), timeout=5) as q:
                    q.command("quit")
            done = wait(5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if done:
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(st.pid, sig)
            done = wait(5)
        if not done:
            raise MachineError(f"cannot stop QEMU (pid {st.pid}) of machine {p.dir.name}",
                               hint=f"kill -9 {st.pid}")
        # the SSH master (and clients) end with the connection; do not wait for them
        for pid in _processes_using(p.dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        self._cleanup_runtime(p)
        self._update_state(p, running=False, pid=0, forwards=[], last_up=time.time())

    def _cleanup_runtime(self, p: MachinePaths) -> None:
        shutil.rmtree(p.run, ignore_errors=True)

    def rm(self, name: str, *, force: bool = False) -> None:
        self.spec(name)
        with self._locked(name) as p:
            st = self.state(name)
            if st.running:
                if not force:
                    raise MachineError(f"machine {name} is running",
                                       hint=f"stop it first (rootless machine stop {name}) or use rm -f")
                self._kill(p, st, graceful=False)
            for pid in _processes_using(p.dir):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self._cleanup_runtime(p)
            trash = p.dir.with_name(f".rm-{name}-{os.getpid()}")
            os.rename(p.dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------ set / info

    def set(self, name: str, *, cpus: int | None = None, memory_mib: int | None = None,
            disk_gib: int | None = None, accel: str | None = None) -> MachineSpec:
        spec = self.spec(name)
        with self._locked(name) as p:
            if self.state(name).running:
                raise MachineError(f"machine {name} is running: settings change only while it is stopped",
                                   hint=f"rootless machine stop {name}, then set again")
            changes: dict = {}
            if cpus is not None:
                changes["cpus"] = cpus
            if memory_mib is not None:
                changes["memory_mib"] = memory_mib
            if accel is not None:
                if accel not in Q.ACCELS:
                    raise UsageError(f"unknown accelerator {accel!r}", hint="use one of " + ", ".join(Q.ACCELS))
                changes["accel"] = accel
            if disk_gib is not None:
                if disk_gib < spec.disk_gib:
                    raise MachineError(f"the disk can only grow ({spec.disk_gib} GiB now, {disk_gib} GiB asked)",
                                       hint="give a size of at least the current one")
                changes["disk_gib"] = disk_gib
            new = spec.with_changes(**changes)
            _check_resources(new.cpus, new.memory_mib, new.disk_gib)
            if new.disk_gib != spec.disk_gib:
                from rootless import hosttools

                qemu_img = Q.find_program("qemu-img", self.env, self.probe, "resize the machine's disk")
                hosttools.run([qemu_img, "resize", "-q", str(p.disk), f"{new.disk_gib}G"],
                              "resize the machine's disk (qemu-img resize)", timeout=120)
            write_json_atomic(p.spec, new.to_json())
            return new

    def info(self, name: str) -> dict:
        """What list and inspect show (JSON-able)."""
        spec = self.spec(name)
        st = self.state(name)
        p = self.paths(name)
        disk_used = 0
        with contextlib.suppress(OSError):
            disk_used = p.disk.stat().st_blocks * 512
        return {
            "Name": spec.name, "Default": spec.name == DEFAULT_NAME, "VMType": "qemu", "Arch": spec.arch,
            "Created": spec.created, "Running": st.running, "State": "running" if st.running else "stopped",
            "LastUp": _iso(st.last_up) if st.last_up else "", "CPUs": spec.cpus, "Memory": spec.memory_mib,
            "DiskSize": spec.disk_gib, "DiskUsed": disk_used, "Accel": st.accel if st.running else spec.accel,
            "Image": spec.image, "SharedHome": spec.home,
            "SSHConfig": {"IdentityPath": str(p.key), "Port": st.ssh_port if st.running else 0,
                          "RemoteUsername": spec.user, "KnownHostsFile": str(p.known_hosts)},
            "ConfigDir": str(p.dir), "RuntimeDir": str(p.run), "SerialLog": str(p.serial_log),
            "QMPSocket": str(p.qmp), "PID": st.pid,
            "Ports": [{"Proto": f[0], "HostIP": f[1], "HostPort": f[2], "GuestPort": f[3]} for f in st.forwards],
        }

    # ------------------------------------------------------------ port forwards

    def add_forwards(self, name: str, wanted: list[tuple[str, str, int, int]]) -> list[tuple[str, str, int, int]]:
        """Forward host (ip, port) to the guest's port, via QMP hostfwd_add.

        Forwards this machine already has are kept as they are; a host port
        taken by anything else is a PortInUse error (nothing added).
        """
        from vmhost.qmp import QMP

        if not wanted:
            return []
        with self._locked(name) as p:
            st = self.state(name)
            if not st.running:
                raise MachineError(f"machine {name} is not running")
            have = {(f[0], f[2]): f for f in st.forwards}
            new = []
            for fw in wanted:
                proto, ip, hport, gport = fw
                old = have.get((proto, hport))
                if old is not None:
                    if old[3] != gport:
                        raise PortInUse(f"host port {hport}/{proto} is already forwarded to port {old[3]} of "
                                        f"machine {name}", hint="publish on another host port")
                    continue
                if not port_free(hport, ip, proto):
                    raise PortInUse(f"host port {ip}:{hport}/{proto} is already in use",
                                    hint=f"publish on another host port (-p OTHER:{gport})")
                new.append(fw)
            added = []
            with QMP(str(p.qmp)) as q:
                for proto, ip, hport, gport in new:
                    out = q.hmp(f"hostfwd_add net0 {Q.hostfwd_rule(proto, ip, hport, gport)}").strip()
                    if out:
                        for a in added:
                            q.hmp(f"hostfwd_remove net0 {a[0]}:{a[1]}:{a[2]}")
                        raise PortInUse(f"cannot forward host port {ip}:{hport}/{proto}: {out}",
                                        hint=f"publish on another host port (-p OTHER:{gport})")
                    added.append((proto, ip, hport, gport))
            self._update_state(p, forwards=[list(f) for f in st.forwards] + [list(a) for a in added])
            return added

    def remove_forwards(self, name: str, forwards: list[tuple[str, str, int, int]]) -> None:
        from vmhost.qmp import QMP, QMPError

        if not forwards:
            return
        with self._locked(name) as p:
            st = self.state(name)
            if not st.running:
                return
            with contextlib.suppress(QMPError):
                with QMP(str(p.qmp)) as q:
                    for proto, ip, hport, _g in forwards:
                        q.hmp(f"hostfwd_remove net0 {proto}:{ip}:{hport}")
            gone = {(f[0], f[2]) for f in forwards}
            self._update_state(p, forwards=[list(f) for f in st.forwards if (f[0], f[2]) not in gone])


def _check_resources(cpus: int, memory_mib: int, disk_gib: int) -> None:
    if cpus < 1 or cpus > 256:
        raise UsageError(f"--cpus {cpus}: must be between 1 and 256")
    if memory_mib < 256:
        raise UsageError(f"--memory {memory_mib}: at least 256 MiB", hint="e.g. --memory 2048")
    if disk_gib < 2 or disk_gib > 65536:
        raise UsageError(f"--disk-size {disk_gib}: between 2 and 65536 GiB")


_GUEST_SYSTEM = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/run", "/sbin", "/sys",
                 "/usr", "/var", "/tmp")


def _guest_system_path(path: str) -> bool:
    """Would mounting the share at ``path`` hide part of the guest's own system?"""
    p = os.path.normpath(path)
    return p in _GUEST_SYSTEM or any(p.startswith(d + "/") for d in _GUEST_SYSTEM[1:] if d not in ("/tmp", "/var")) \
        or p in ("/var/lib", "/var/lib/rootless") or p.startswith("/var/lib/rootless/")


def _user_name(env: dict[str, str]) -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return env.get("USER") or getpass.getuser()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _processes_using(d: Path) -> list[int]:
    """Our processes whose command line names a file of the machine directory."""
    needle = str(d).encode() + b"/"
    pids = []
    me = os.getpid()
    with contextlib.suppress(OSError):
        for e in os.scandir("/proc"):
            if not e.name.isdigit() or int(e.name) == me:
                continue
            try:
                if os.stat(e.path).st_uid != os.getuid():
                    continue
                with open(os.path.join(e.path, "cmdline"), "rb") as f:
                    if needle in f.read():
                        pids.append(int(e.name))
            except OSError:
                continue
    return pids

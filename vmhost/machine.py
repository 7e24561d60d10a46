"""Machine lifecycle: init, start, stop, rm, list, inspect, set.

Every change of a machine happens under its lock (``lock``, vmhost.lock); state
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
from vmhost.spec import (DEFAULT_NAME, GUEST_STORE, MachinePaths, MachineSpec, check_name, machines_dir,
                         read_json, write_json_atomic)

READY_LINE = "rootless-guest: ready"
NO_SHARE_LINE = "rootless-guest: no-share"
FAIL_MARKERS = ("rootless-guest: stage 1 failed", "Kernel panic", "rootless-guest: sshd did not start")


@dataclass(frozen=True)
class MachineState:
    running: bool
    pid: int = 0
    ssh_port: int = 0
    accel: str = ""
    started_at: float = 0.0
    last_up: float = 0.0
    forwards: tuple[tuple[str, str, int, int], ...] = ()   # (proto, host ip, host port, guest port)
    owners: tuple[str, ...] = ()  # per forward: the guest container that owns it ("" = the command that made it)
    kind: str = "rootless"      # the guest image's kind: rootless | cloud
    share: str = ""             # the host directory the running guest really mounted
    qmp: str = ""               # QEMU's control socket: a path, or tcp:127.0.0.1:PORT (Windows)


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
    if os.name == "nt":
        return _alive_windows(pid)
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


def _alive_windows(pid: int) -> bool:
    """Is process ``pid`` running (Windows: os.kill(pid, 0) would terminate it)."""
    import ctypes

    k32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    h = k32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
    if not h:
        return False
    try:
        code = ctypes.c_ulong()
        return bool(k32.GetExitCodeProcess(h, ctypes.byref(code))) and code.value == 259   # STILL_ACTIVE
    finally:
        k32.CloseHandle(h)


def host_ids() -> tuple[int, int]:
    """The uid and gid the guest user gets: the host's, or 1000 where there are none (Windows)."""
    if hasattr(os, "getuid"):
        return os.getuid(), os.getgid()
    return 1000, 1000


_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)   # Windows: both terminate the process


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
        from vmhost import lock

        with lock.locked(p.lock):
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
                            forwards=tuple(tuple(f[:4]) for f in d.get("forwards", [])) if running else (),
                            owners=tuple((f[4] if len(f) > 4 else "") for f in d.get("forwards", []))
                            if running else (),
                            kind=d.get("kind", "rootless"),
                            share=(d["share"] if "share" in d else self._spec_home(name)) if running else "",
                            qmp=d.get("qmp") or str(p.qmp))

    def _spec_home(self, name: str) -> str:
        """(state.json of an older version has no "share": the spec's home was shared)"""
        try:
            return self.spec(name).home
        except MachineError:
            return ""

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
            src = Path(image).expanduser().resolve()
            if src.is_dir():
                img = I.GuestImage.load(src)
            elif src.is_file():
                from vmhost import cloud

                img = cloud.import_image(src, I.cache_dir(self.config, self.env), self.env, self.probe,
                                         self.reporter)
            else:
                raise MachineError(f"--image {image}: no such file or directory",
                                   hint="give a cloud image file (.qcow2, .img, .raw) or a rootless guest image "
                                        "directory")
            if Q.normalize_machine(img.arch) != arch:
                raise MachineError(f"guest image {image} is for {img.arch}, this host is {arch}",
                                   hint="give --image an image of the host's architecture")
        else:
            img = I.ensure_image(self.config, self.env, arch, self.reporter)
        if img.virtual_size > disk_gib * (1 << 30):
            need = -(-img.virtual_size // (1 << 30))
            raise MachineError(f"--disk-size {disk_gib}: the image {image} needs at least {need} GiB",
                               hint=f"give --disk-size {need} or more")
        qemu_img = Q.find_program("qemu-img", self.env, self.probe, "make the machine's disk")

        root = machines_dir(self.config)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o700)
        try:
            from rootless import hosttools

            hosttools.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(img.rootfs), "-F", img.disk_format,
                           str(tmp / "disk.qcow2"), f"{disk_gib}G"], "make the machine's disk (qemu-img create)",
                          timeout=120)
            ssh.keygen(tmp / "id_ed25519", f"rootless-machine-{name}", self.env, self.probe)
            ssh.keygen(tmp / "ssh_host_ed25519_key", f"rootless-machine-{name}-host", self.env, self.probe)
            host_pub = (tmp / "ssh_host_ed25519_key.pub").read_text()
            (tmp / "known_hosts").write_text(ssh.known_hosts_line(name, host_pub))
            home = str(Path(self.env.get("HOME") or Path.home()).resolve()) if share_home else ""
            if home and self.probe.system == "Windows":
                self.reporter.warn("QEMU on Windows cannot share directories (no virtio-9p): the machine will not "
                                   "share your home directory")
                home = ""
            if home and _guest_system_path(home):
                self.reporter.warn(f"your home directory {home} is a system directory of the guest: "
                                   "the machine will not share it")
                home = ""
            spec = MachineSpec(name=name, arch=arch, cpus=cpus, memory_mib=memory_mib, disk_gib=disk_gib,
                               accel=accel, image=str(img.path), user=_user_name(self.env), uid=host_ids()[0],
                               gid=host_ids()[1], home=home,
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
        pub = (p.dir / "id_ed25519.pub").read_text()
        if img.kind == "cloud":
            from vmhost import cloud

            cloud.write_seed(p.seed_disk, cloud.seed_files(spec, pub, p.host_key.read_bytes(), seed.code_tar(),
                                                           seed.machine_env(spec), cloud.sshd_conf(spec, GUEST_STORE)))
            kernel, initrd = self._boot_files(p, img)
            append, seed_disk = cloud.cmdline(img.cmdline_console, img.root), str(p.seed_disk)
        else:
            entries = seed.seed_entries(spec, pub, p.host_key.read_bytes(), seed.code_tar())
            seed.write_initrd(p.initrd, img.initrd, entries)
            kernel, initrd, append, seed_disk = str(img.kernel), str(p.initrd), "", ""
        _make_run_dir(self.config, p)
        share = spec.home if spec.home and os.path.isdir(spec.home) else ""
        if spec.home and not share:
            self.reporter.warn(f"{spec.home} does not exist: the machine starts without the shared home")
        last_err = None
        windows = self.probe.system == "Windows"
        for _attempt in range(3):
            port = free_port()
            qmp = f"tcp:127.0.0.1:{free_port()}" if windows else str(p.qmp)
            launch = Q.Launch(qemu=qemu, accel=accel, kernel=kernel, initrd=initrd,
                              console=img.cmdline_console, disk=str(p.disk), ssh_port=port, qmp=qmp,
                              pidfile=str(p.pidfile), serial_log=str(p.serial_log), share=share, append=append,
                              seed_disk=seed_disk, host_system=self.probe.system)
            argv = Q.qemu_argv(spec, launch)
            for f in (p.serial_log, p.pidfile):
                f.unlink(missing_ok=True)
            try:
                self._spawn(argv, p, daemonizes="-daemonize" in argv, qmp=qmp)
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
                          started_at=now, last_up=now, forwards=[], qemu_argv=argv, kind=img.kind, share=share,
                          qmp=qmp)
        st = MachineState(True, pid, port, accel, now, now, kind=img.kind, share=share, qmp=qmp)
        # a cloud image's first boot installs packages (online) and runs cloud-init: more time
        limit = timeout or {("rootless", False): 120.0, ("rootless", True): 600.0,
                            ("cloud", False): 600.0, ("cloud", True): 1800.0}[(img.kind, accel == "tcg")]
        try:
            self._wait_ready(spec, p, st, t0 + limit)
        except BaseException:
            self._kill(p, st, graceful=False)
            raise
        if share and NO_SHARE_LINE in p.serial_log.read_text(errors="replace"):
            self.reporter.warn(f"the kernel of machine {spec.name}'s image has no 9p file system: "
                               f"{share} is not shared with it (bind mounts of host paths will be refused)")
            self._update_state(p, share="")
        self.reporter.info(f"Machine {spec.name} is ready ({accel}, {time.monotonic() - t0:.1f} s)")
        return st

    def _spawn(self, argv: list[str], p: MachinePaths, *, daemonizes: bool = True, qmp: str = "") -> None:
        import subprocess

        if not daemonizes:
            return self._spawn_detached(argv, p, qmp)
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

    def _spawn_detached(self, argv: list[str], p: MachinePaths, qmp: str) -> None:
        """Where QEMU cannot -daemonize (Windows): start it detached, then wait until it
        wrote its pid file and answers on its control socket, or died (its messages
        are in qemu.log)."""
        from vmhost.detach import spawn_detached
        from vmhost.qmp import QMP, QMPError

        with open(p.qemu_log, "ab") as log:
            log.write(("\n== " + time.strftime("%Y-%m-%d %H:%M:%S") + " " + " ".join(argv) + "\n").encode())
        start = p.qemu_log.stat().st_size
        try:
            pid = spawn_detached(argv, dict(os.environ), log=p.qemu_log)
        except OSError as e:
            raise HelperFailed("start QEMU", None, e.strerror or str(e)) from None
        deadline = time.monotonic() + 120
        while True:
            if not _alive(pid, None):
                with open(p.qemu_log, "rb") as f:
                    f.seek(start)
                    err = f.read().decode(errors="replace")
                raise HelperFailed("start QEMU", None, err or "QEMU exited", hint=f"QEMU's messages are in {p.qemu_log}")
            if p.pidfile.is_file():
                try:
                    with QMP(qmp, timeout=2):
                        return
                except QMPError:
                    pass
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(pid, _SIGKILL)
                raise HelperFailed("start QEMU", None, "QEMU did not answer on its control socket in 120 s",
                                   hint=f"see {p.qemu_log}")
            time.sleep(0.1)

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

    @property
    def _ssh_master(self) -> bool:
        """One shared SSH connection per machine (OpenSSH's ControlMaster: not on Windows)."""
        return self.probe.system != "Windows"

    def _start_master(self, name: str, p: MachinePaths, st: MachineState):
        import subprocess

        from vmhost import ssh

        base = self.ssh_argv(name, state=st, tty=False)
        if not self._ssh_master:
            # Windows' OpenSSH has no connection sharing: just check that we can log in
            try:
                return subprocess.run(base + ["--", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                                      text=True, timeout=60)
            except subprocess.TimeoutExpired:
                return subprocess.CompletedProcess(base, 255, "", "timed out")
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
                             control=p.ssh_control if (user or spec.user) == spec.user and self._ssh_master
                             else None)
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
            if st.kind == "cloud":
                self._refresh_kernel(name, p, st)
            self._kill(p, st, graceful=True, timeout=timeout)
            return True

    def _boot_files(self, p: MachinePaths, img) -> tuple[str, str]:
        """(kernel, initrd) a cloud machine boots: its own copy once its guest installed another kernel."""
        try:
            own = read_json(p.dir / "boot" / "boot.json", "the machine's kernel")
            k, i = p.dir / "boot" / own["kernel"], p.dir / "boot" / own["initrd"]
            if k.is_file() and i.is_file():
                return str(k), str(i)
        except (FileNotFoundError, MachineError, KeyError):
            pass
        return str(img.kernel), str(img.initrd)

    def _refresh_kernel(self, name: str, p: MachinePaths, st: MachineState) -> None:
        """Before a cloud guest stops: when it installed a newer kernel (apt upgrade), copy that
        kernel and its initramfs out (over SSH) for the next start: the image's copy may have
        lost its modules. Never fails the stop."""
        import stat
        import subprocess

        from vmhost import cloud
        from vmhost import image as I

        listing = self.ssh_run(name, ["sh", "-c", "cd /boot && for f in *; do [ -f \"$f\" ] && echo \"$f\"; done; "
                                                  "echo --; ls -1 /usr/lib/modules /lib/modules 2>/dev/null"],
                               state=st, user="root", check=False, timeout=60)
        if listing.returncode != 0 or "--" not in listing.stdout.splitlines():
            return
        lines = listing.stdout.splitlines()
        cut = lines.index("--")
        boot = {n: stat.S_IFREG | 0o644 for n in lines[:cut]}
        picked = cloud.pick_kernel(boot, {m for m in lines[cut + 1:] if m and not m.endswith(":")})
        try:
            img = I.GuestImage.load(Path(self.spec(name).image))
        except MachineError:
            return
        now = Path(self._boot_files(p, img)[0]).name
        if picked is None or picked[0] == now:
            return
        d = p.dir / "boot"
        d.mkdir(exist_ok=True)
        try:
            for f in picked[:2]:
                cp = subprocess.run(self.ssh_argv(name, state=st, user="root", tty=False) + ["--", f"cat /boot/{f}"],
                                    capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
                if cp.returncode != 0 or not cp.stdout:
                    raise MachineError(f"cannot copy /boot/{f} out of the machine")
                (d / f"{f}.tmp").write_bytes(cp.stdout)
            if cloud.kernel_arch((d / f"{picked[0]}.tmp").read_bytes()[:1 << 16]) is None:
                raise MachineError(f"/boot/{picked[0]} of the machine is not a kernel QEMU can boot")
            for f in picked[:2]:
                os.replace(d / f"{f}.tmp", d / f)
            write_json_atomic(d / "boot.json", {"kernel": picked[0], "initrd": picked[1], "version": picked[2]})
            for old in d.iterdir():
                if old.name not in (picked[0], picked[1], "boot.json"):
                    old.unlink()
            self.reporter.info(f"Machine {name} boots its new kernel {picked[2]} from now on")
        except (MachineError, OSError, subprocess.SubprocessError) as e:
            self.reporter.warn(f"machine {name} installed kernel {picked[2]}, but it could not be copied out "
                               f"({e}): it keeps booting {now}")
            for t in d.glob("*.tmp"):
                t.unlink()

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
            cmd = ["poweroff"] if st.kind == "cloud" else ["/bin/busybox", "poweroff"]
            cp = self.ssh_run(name, cmd, state=st, user="root", check=False, timeout=15)
            done = wait(limit if cp.returncode in (0, 255) else 0)
            if not done:
                with contextlib.suppress(QMPError, OSError):
                    with QMP(st.qmp or str(p.qmp), timeout=5) as q:
                        q.command("system_powerdown")
                done = wait(10)
        if not done:
            with contextlib.suppress(QMPError, OSError):
                with QMP(st.qmp or str(p.qmp), timeout=5) as q:
                    q.command("quit")
            done = wait(5)
        for sig in (signal.SIGTERM, _SIGKILL):
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
                    os.kill(pid, _SIGKILL)
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
            "QMPSocket": st.qmp or str(p.qmp), "PID": st.pid,
            "Ports": [{"Proto": f[0], "HostIP": f[1], "HostPort": f[2], "GuestPort": f[3]} for f in st.forwards],
        }

    # ------------------------------------------------------------ port forwards

    def add_forwards(self, name: str, wanted: list[tuple[str, str, int, int]], *, owner: str = "",
                     skip_taken: bool = False) -> list[tuple[str, str, int, int]]:
        """Forward host (ip, port) to the guest's port, via QMP hostfwd_add; returns what was added.

        Forwards this machine already has are kept as they are (``owner``
        given: they change hands, so that the new owner's end removes them).
        A host port taken by anything else is a PortInUse error (nothing
        added), or, with ``skip_taken``, a warning and that port is skipped
        (the container already runs: its port stays reachable in the machine).
        """
        from vmhost.qmp import QMP

        if not wanted:
            return []
        if not self.exists(name):
            raise MachineError(f"machine {name} does not exist")
        with self._locked(name) as p:
            st = self.state(name)
            if not st.running:
                raise MachineError(f"machine {name} is not running")
            have = {(f[0], f[2]): i for i, f in enumerate(st.forwards)}
            owners = list(st.owners) + [""] * (len(st.forwards) - len(st.owners))
            new = []
            for fw in wanted:
                proto, ip, hport, gport = fw
                i = have.get((proto, hport))
                if i is not None:
                    old = st.forwards[i]
                    if old[3] != gport:
                        if skip_taken:
                            self.reporter.warn(f"host port {hport}/{proto} is already forwarded to port {old[3]} of "
                                               f"machine {name}: the container's port {gport} is not forwarded")
                            continue
                        raise PortInUse(f"host port {hport}/{proto} is already forwarded to port {old[3]} of "
                                        f"machine {name}", hint="publish on another host port")
                    if owner:
                        owners[i] = owner
                    continue
                if not port_free(hport, ip, proto):
                    if skip_taken:
                        self.reporter.warn(f"host port {ip or '*'}:{hport}/{proto} is in use on the host: the "
                                           f"port the container got in machine {name} is not forwarded")
                        continue
                    raise PortInUse(f"host port {ip}:{hport}/{proto} is already in use",
                                    hint=f"publish on another host port (-p OTHER:{gport})")
                new.append(fw)
            added = []
            with QMP(st.qmp or str(p.qmp)) as q:
                for proto, ip, hport, gport in new:
                    out = q.hmp(f"hostfwd_add net0 {Q.hostfwd_rule(proto, ip, hport, gport)}").strip()
                    if out:
                        if skip_taken:
                            self.reporter.warn(f"cannot forward host port {ip or '*'}:{hport}/{proto}: {out}")
                            continue
                        for a in added:
                            q.hmp(f"hostfwd_remove net0 {a[0]}:{a[1]}:{a[2]}")
                        raise PortInUse(f"cannot forward host port {ip}:{hport}/{proto}: {out}",
                                        hint=f"publish on another host port (-p OTHER:{gport})")
                    added.append((proto, ip, hport, gport))
            rows = [list(f) + [o] for f, o in zip(st.forwards, owners)] + [list(a) + [owner] for a in added]
            self._update_state(p, forwards=rows)
            return added

    def remove_forwards(self, name: str, forwards: list[tuple[str, str, int, int]] | None = None, *,
                        owner: str | None = None) -> None:
        """Remove ``forwards`` (those still held by the command that made them), or every
        forward ``owner`` holds."""
        from vmhost.qmp import QMP, QMPError

        if forwards is not None and not forwards:
            return
        if not self.exists(name):
            return          # (a port watcher of a machine being removed: do not make its directory again)
        with self._locked(name) as p:
            st = self.state(name)
            if not st.running:
                return
            owners = list(st.owners) + [""] * (len(st.forwards) - len(st.owners))
            mine = {(f[0], f[2]) for f in forwards or []}
            gone = []
            for f, o in zip(st.forwards, owners):
                if owner is not None:
                    if o == owner:
                        gone.append(f)
                elif (f[0], f[2]) in mine and o == "":
                    gone.append(f)
            if not gone:
                return
            with contextlib.suppress(QMPError):
                with QMP(st.qmp or str(p.qmp)) as q:
                    for proto, ip, hport, _g in gone:
                        q.hmp(f"hostfwd_remove net0 {proto}:{ip}:{hport}")
            keep = [list(f) + [o] for f, o in zip(st.forwards, owners) if f not in gone]
            self._update_state(p, forwards=keep)


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
    """The guest user's name: the host user's, made a valid Linux user name (Windows: "Jane Doe" -> jane_doe)."""
    try:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError, AttributeError):
        name = env.get("USER") or env.get("USERNAME") or getpass.getuser()
    return guest_user_name(name)


def guest_user_name(name: str) -> str:
    import re

    n = re.sub(r"[^a-z0-9_-]", "_", name.lower().split("\\")[-1].split("@")[0])[:32]
    if not n or not (n[0].isalpha() or n[0] == "_"):
        n = ("u" + n)[:32]
    return "user" if n in ("root", "daemon", "bin", "sys", "nobody") else n


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _processes_using(d: Path) -> list[int]:
    """Our processes whose command line names a file of the machine directory
    (/proc; ``ps`` on macOS; none on Windows, where no SSH master is kept)."""
    needle = str(d).encode() + b"/"
    pids = []
    me = os.getpid()
    if os.name == "nt":
        return []
    if not os.path.isdir("/proc/self"):
        import subprocess

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["ps", "-x", "-o", "pid=,command="], capture_output=True, timeout=10).stdout
            for line in out.splitlines():
                pid, _, cmd = line.strip().partition(b" ")
                if pid.isdigit() and int(pid) != me and needle in cmd:
                    pids.append(int(pid))
        return pids
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


def _make_run_dir(config, p: MachinePaths) -> None:
    """The machine's runtime directory (sockets, pid), mode 0700; it and the runtime directory
    above it (or the short /tmp one) must be ours and not writable by others."""
    from rootless.config import ensure_private_dir, runtime_subdir

    if p.run.parent == Path(config.runtime_dir) / "machines":
        runtime_subdir(config.runtime_dir, "machines")
    ensure_private_dir(p.run)

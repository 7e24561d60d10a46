"""The per-container monitor, and starting a container through it.

``start(config, ctr, attach=...)`` forks the monitor (its own session, a
child subreaper) and waits until the container's command has been exec'ed
(or failed). The monitor:

* prepares the set-up (image layers, storage driver, volumes, /etc files,
  emulation, the network plan) and spawns the container (execute.spawn);
* starts the network once the container's namespace exists, then lets the
  command run;
* keeps the container's stdio: output to ``ctr.log`` (JSON lines with
  timestamps, Docker's json-file format) and, while a CLI is attached, to
  that CLI's stdout/stderr; a PTY master with ``-t``;
* records the exit status (128+N for signal N) and time in state.json,
  stops the network, and removes the container with ``--rm``.

Messages to the starting CLI, one per line on a pipe: ``S <pid>`` (running),
``E <json error>``, ``X <exit code>``, ``W <warning>``.

With ``-d`` the CLI returns after ``S``: the monitor lives on, detached from
the terminal, with no fd of the CLI.
"""

from __future__ import annotations

import os
import signal

from rootless.errors import CannotExecute, ContainerError, EmulationError, HostError, RootlessError


# ---------------------------------------------------------------------------
# preparing (in the monitor, before any namespace)

def _lowers(config, spec) -> tuple[str, ...]:
    if spec.rootfs:
        return (spec.rootfs,)
    from rootless.image.store import Store

    store = Store(config)
    img = None
    try:
        img = store.resolve(spec.image_id, platform=None)
    except RootlessError:
        img = None
    if img is None or getattr(img, "id", None) != spec.image_id:
        from archsupport.platform import parse

        plat = parse(spec.platform) if spec.platform else None
        img = store.resolve(spec.image_ref, platform=plat)
        if img.id != spec.image_id:
            raise ContainerError(f"the image {spec.image_id[:19]} of this container is no longer in the store",
                                 hint="remove the container and run it again")
    return tuple(str(p) for p in store.layer_dirs(img))


def _is_foreign(platform: str) -> bool:
    if not platform:
        return False
    from archsupport.platform import host_platform, native_platforms, parse

    p = parse(platform)
    return not any(n.matches(p) or p.matches(n) for n in native_platforms(host_platform()))


def choose_emulation(config, platform: str):
    """archsupport's choice for a foreign image; raises EmulationError when it cannot run."""
    try:
        from archsupport.emulation import choose
    except ImportError:
        raise EmulationError(f"the image is for {platform}, which this host cannot run natively, and this "
                             f"build of rootless has no emulation support yet",
                             hint="pull the image for the host's platform (--platform)") from None
    from archsupport.platform import parse

    emu = choose(parse(platform), config)
    if emu.mode == "none":
        raise EmulationError(f"cannot run {platform} images here: {emu.reason}",
                             hint=getattr(emu, "hint", "") or "install qemu-user-static "
                                                              "(apt-get install qemu-user-static)")
    return emu


def emulation_record(config, platform: str) -> dict:
    """What ``inspect`` shows of the emulation a container of ``platform`` gets (recorded at create);
    {} for a native platform (the start records what the set-up really used)."""
    if not _is_foreign(platform):
        return {}
    from archsupport.emulation import choose
    from archsupport.platform import parse

    return choose(parse(platform), config).to_json()


def entrypoint_emulation(config, spec, layers) -> tuple:
    """(Emulation, warning) when the entrypoint of a container whose platform says native (or a
    --rootfs without --platform) is a program of another architecture, and emulation runs it;
    (None, "") when it runs natively or is not an ELF program. Raises CannotExecute (126), with
    what the program is and the fix, when it cannot run at all.

    ``layers``: the container's root filesystem, overlay layers top first. One ELF
    header is read (archsupport.emulation.foreign_binary): cheap on every start.
    """
    if not spec.argv:
        return None, ""
    import posixpath

    from archsupport.emulation import choose, explain_exec_format, foreign_binary, mislabelled_warning
    from archsupport.platform import parse

    cmd = spec.argv[0]
    where = posixpath.join(spec.working_dir or "/", cmd) if "/" in cmd and not cmd.startswith("/") else cmd
    path_env = next((e[5:] for e in spec.env if e.startswith("PATH=")), None)
    found = foreign_binary(layers, where, path_env)
    if found is None:
        return None, ""
    _, hdr, plat = found
    claimed = parse(spec.platform) if spec.platform else None
    emu = choose(plat, config)
    if emu.mode == "none":
        e = explain_exec_format(cmd, hdr, claimed)
        fix = f"; fix: {emu.hint}" if emu.hint else ""
        raise CannotExecute(e.message, hint=f"{e.hint}, once {plat.architecture} programs can run here "
                                            f"({emu.reason}{fix})")
    return emu, mislabelled_warning(cmd, hdr, claimed, emu)


def mapping_for(spec):
    from rootless.userns import default_mapping, keep_id_mapping

    base = default_mapping()
    if spec.userns == "keep-id":
        return base, keep_id_mapping(base)
    return base, base


class Prepared:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def prepare(config, ctr, reporter=None) -> Prepared:
    """Everything the set-up needs, computed before forking (raises with a fix)."""
    from rootless import storage
    from rootless.network import plan_network
    from rootless.runtime.plan import Host, plan
    from rootless.runtime.volumes import VolumeStore

    spec = ctr.spec
    base, mapping = mapping_for(spec)
    lowers = _lowers(config, spec)
    fuse = storage.fuse_overlayfs_path(config.mount_program) or ""
    chain = storage.driver_chain(config.storage_driver, storage.kernel_overlay_ok(), bool(fuse))
    driver = chain[0]
    cdir = str(ctr.dir)
    warnings: list[str] = []
    if os.path.exists(os.path.join(cdir, "rootfs", ".rootless-vfs-done")):
        driver = "vfs"      # it fell back to a copy before: keep it (and the container's changes)
    elif driver == "vfs" and config.storage_driver == "auto":
        warnings.append(storage.fallback_warning([("overlay", f"Linux {os.uname().release} < 5.11"),
                                                  ("fuse-overlayfs", "not installed")], "vfs"))
    if spec.userns == "keep-id" and not mapping.single and not fuse:
        raise HostError("--userns=keep-id needs fuse-overlayfs (the kernel overlay cannot remap ids)",
                        hint="apt-get install fuse-overlayfs and make /dev/fuse usable (mode 0666)")
    if driver == "vfs":
        rootfs = os.path.join(cdir, "rootfs")
        if not os.path.exists(os.path.join(rootfs, ".rootless-vfs-done")):
            from rootless.userns import run_in_userns

            run_in_userns(_vfs_fill, list(lowers), rootfs, mapping=base)
    netplan = plan_network(spec, config, container_dir=cdir)
    files = netplan.etc_files(spec.hostname)
    ud = os.path.join(cdir, "userdata")
    for path, text in files.items():
        p = os.path.join(ud, os.path.basename(path))
        with open(p + ".tmp", "w") as f:
            f.write(text)
        os.chmod(p + ".tmp", 0o644)
        os.replace(p + ".tmp", p)

    vstore = VolumeStore(config)
    vol_dirs = []
    anon = list(ctr.anon_volumes)
    for m in spec.mounts:
        if m.kind != "volume":
            continue
        if m.source:
            v, new = vstore.create(m.source)
        else:
            name = anon.pop(0) if anon else None
            if name and vstore.exists(name):
                v, new = vstore.get(name), False
            else:
                v, new = vstore.create(name, anonymous=True)
        first = new or not (v.path / ".initialized").exists()
        vol_dirs.append((m.target, str(v.data), first))
        if first:
            try:
                (v.path / ".initialized").touch()
            except OSError:
                pass

    emu = None
    foreign_platform = ""
    if _is_foreign(spec.platform):
        emu = choose_emulation(config, spec.platform)
        foreign_platform = spec.platform
    else:
        layers = [os.path.join(cdir, "rootfs")] if driver == "vfs" else [os.path.join(cdir, "upper"), *lowers[::-1]]
        emu, warning = entrypoint_emulation(config, spec, layers)
        if emu is not None:
            foreign_platform = str(emu.platform)
            warnings.append(warning)
    if spec.memory or spec.cpus or spec.pids_limit:
        from rootless.runtime import cgroups

        cgroups.check_available()
    cg2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    keep = (0, 0, 0)
    keep_user: tuple = ()
    if spec.userns == "keep-id":
        if not mapping.single:
            keep = (os.getuid(), os.getgid(), base.uid_count)
        keep_user = _host_user()
    host = Host(container_dir=cdir, store_dir=str(config.data_root), lowers=lowers,
                driver=driver, fuse=fuse, copy_fallback=config.storage_driver == "auto",
                new_netns=netplan.new_netns,
                single_mapping=mapping.single, volume_dirs=tuple(vol_dirs),
                foreign_platform=foreign_platform, keep_id=keep, keep_user=keep_user, cgroup2_unified=cg2)
    steps = plan(spec, host)
    return Prepared(spec=spec, host=host, steps=steps, mapping=mapping, netplan=netplan, emulation=emu,
                    warnings=warnings)


def _host_user() -> tuple:
    """(uid, gid, name, home) of the user on the host (keep-id's /etc/passwd entry); () if unknown."""
    import pwd

    try:
        pw = pwd.getpwuid(os.getuid())
    except KeyError:
        return ()
    return (os.getuid(), os.getgid(), pw.pw_name, pw.pw_dir)


def _vfs_fill(lowers, rootfs):
    from rootless.storage import vfs_materialize

    vfs_materialize(lowers, rootfs)
    open(os.path.join(rootfs, ".rootless-vfs-done"), "w").close()


# ---------------------------------------------------------------------------
# starting (CLI side)

class Started:
    """What the CLI gets back from :func:`start`."""

    def __init__(self, pid: int, ctl_r: int, monitor_pid: int, master: int | None, tty_sock, warnings):
        self.pid = pid
        self.ctl_r = ctl_r
        self.monitor_pid = monitor_pid
        self.master = master
        self.tty_sock = tty_sock
        self.warnings = warnings
        self._buf = b""

    def wait_exit(self) -> int:
        """Block until the monitor reports the exit status (foreground)."""
        code = None
        while True:
            line = self._readline()
            if line is None:
                break
            if line.startswith(b"X "):
                code = int(line[2:])
                break
        try:
            os.close(self.ctl_r)
        except OSError:
            pass
        try:
            os.waitpid(self.monitor_pid, 0)
        except ChildProcessError:
            pass
        if code is None:
            raise RootlessError("the container's monitor died before reporting the exit status",
                                hint="see `rootless ps -a` for the container's state")
        return code

    def _readline(self) -> bytes | None:
        while b"\n" not in self._buf:
            try:
                b = os.read(self.ctl_r, 4096)
            except InterruptedError:
                continue
            if not b:
                return None
            self._buf += b
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def terminal_ready(self) -> None:
        """-t: the user's terminal is raw: the monitor may write the container's output to it."""
        if self.tty_sock is not None:
            try:
                self.tty_sock.send(b"r")
            except OSError:
                pass

    def detach(self) -> None:
        for fd in (self.ctl_r,):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.tty_sock is not None:
            self.tty_sock.close()


def start(config, ctr, *, attach: bool, reporter=None, winsize: bytes | None = None,
          stdin_attached: bool = False) -> Started:
    """Fork the container's monitor; return once the command runs (or raise its error)."""
    from rootless.runtime import trace

    spec = ctr.spec
    prep = prepare(config, ctr, reporter)
    trace("cli: prepared")
    ctl_r, ctl_w = os.pipe()
    tty_parent = tty_child = None
    if spec.tty and attach:
        import socket

        tty_parent, tty_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mpid = os.fork()
    if mpid == 0:
        code = 0
        try:
            os.close(ctl_r)
            if tty_parent is not None:
                tty_parent.close()
            code = _monitor_main(config, ctr, prep, ctl_w, attach, tty_child, winsize, stdin_attached)
        except BaseException as e:  # noqa: BLE001
            try:
                _send_error(ctl_w, e)
            except BaseException:
                pass
            code = 125
        os._exit(code)
    os.close(ctl_w)
    if tty_child is not None:
        tty_child.close()
    st = Started(0, ctl_r, mpid, None, tty_parent, list(prep.warnings))
    while True:
        line = st._readline()
        if line is None:
            try:
                os.waitpid(mpid, 0)
            except ChildProcessError:
                pass
            raise RootlessError("the container's monitor died while starting the container")
        if line.startswith(b"W "):
            st.warnings.append(line[2:].decode(errors="replace"))
            if reporter is not None:
                reporter.warn(line[2:].decode(errors="replace"))
            continue
        if line.startswith(b"E "):
            from rootless.runtime.execute import error_from

            os.close(ctl_r)
            try:
                os.waitpid(mpid, 0)
            except ChildProcessError:
                pass
            raise error_from(line[2:])
        if line.startswith(b"S "):
            st.pid = int(line[2:])
            break
    if tty_parent is not None:
        import socket

        msg, fds, _, _ = socket.recv_fds(tty_parent, 16, 1)
        st.master = fds[0] if fds else None
    if not attach:
        os.close(ctl_r)
    return st


def _send(fd: int, line: bytes) -> None:
    try:
        os.write(fd, line + b"\n")
    except OSError:
        pass


def _send_error(fd: int, e: BaseException) -> None:
    from rootless.runtime.execute import report_error

    r, w = os.pipe()
    report_error(w, e)
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    _send(fd, b"E " + data.strip())


# ---------------------------------------------------------------------------
# the monitor process

def _close_inherited(keep: set[int]) -> None:
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


class _LogWriter:
    """Docker's json-file lines: {"log": ..., "stream": ..., "time": ...}."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self.partial: dict[str, bytes] = {}

    def write(self, stream: str, data: bytes, final: bool = False) -> None:
        import json

        from rootless.runtime.state import now_iso

        buf = self.partial.get(stream, b"") + data
        lines = buf.split(b"\n")
        rest = lines.pop()
        out = []
        t = now_iso()
        for ln in lines:
            out.append(json.dumps({"log": ln.decode("utf-8", "replace") + "\n", "stream": stream, "time": t}))
        if rest and (final or len(rest) > 16384):
            out.append(json.dumps({"log": rest.decode("utf-8", "replace"), "stream": stream, "time": t}))
            rest = b""
        self.partial[stream] = rest
        if out:
            try:
                os.write(self.fd, ("\n".join(out) + "\n").encode())
            except OSError:
                pass

    def close(self) -> None:
        for s in list(self.partial):
            if self.partial[s]:
                self.write(s, b"", final=True)
        os.close(self.fd)


def _write_all(fd: int, data: bytes) -> bool:
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
        return True
    except OSError:
        return False


def _monitor_main(config, ctr, prep, ctl_w: int, attach: bool, tty_sock, winsize, stdin_attached) -> int:
    from rootless import syscalls as sc
    from rootless.runtime.execute import spawn
    from rootless.runtime.state import ContainerStore, current_boot_id, now_iso, proc_start_time

    spec = ctr.spec
    store = ContainerStore(config)
    os.setsid()
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(s, signal.SIG_IGN)
    keep = {ctl_w}
    if tty_sock is not None:
        keep.add(tty_sock.fileno())
    _close_inherited(keep)
    null = os.open(os.devnull, os.O_RDWR)
    if not attach:
        for i in (0, 1, 2):
            os.dup2(null, i)
    foreground_direct = attach and spec.auto_remove and not spec.tty
    # the platform the image claims: exec failures (ENOEXEC) are explained against it
    ctx: dict = {"emulation": prep.emulation, "platform": spec.platform}
    log = None
    pipes: dict[int, tuple[str, int | None]] = {}
    child_ends = []
    stdin_w = None
    if spec.tty:
        import socket

        ctx_sock_parent, ctx_sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctx["tty_sock"] = ctx_sock_child.detach()
        ctx["winsize"] = winsize
        stdio = (None, None, None)
    elif foreground_direct:
        stdio = (0 if (spec.interactive and stdin_attached) else None, 1, 2)
    else:
        r1, w1 = os.pipe()
        r2, w2 = os.pipe()
        pipes[r1] = ("stdout", 1 if attach else None)
        pipes[r2] = ("stderr", 2 if attach else None)
        child_ends = [w1, w2]
        stdin = None
        if spec.interactive and attach and stdin_attached:
            stdin = 0
        elif spec.interactive:
            # -i without a CLI's stdin (-d, start without -i): a pipe held open here, so the
            # container's stdin stays open for `attach` (as Docker's)
            stdin, stdin_w = os.pipe()
            child_ends.append(stdin)
        stdio = (stdin, w1, w2)
    for fd in stdio:
        if fd is not None:
            os.set_inheritable(fd, True)
    ctx["stdio"] = stdio

    store.update_state(ctr.id, status="starting", monitor_pid=os.getpid(),
                       monitor_start=proc_start_time(os.getpid()), boot_id=current_boot_id(), error="",
                       exit_code=None, restarting=False,
                       emulation=prep.emulation.to_json() if prep.emulation is not None else {})
    from rootless.runtime import trace

    trace("monitor: spawning")
    joined = None
    try:
        from rootless import network

        joined = network.join(prep.netplan, config, ctr.id)
        place = None
        if spec.memory or spec.cpus or spec.pids_limit:
            from rootless.runtime import cgroups

            place = lambda pid_a: cgroups.apply(spec, pid_a, ctr.id)  # noqa: E731 (before its cgroup ns)
        launched = spawn(prep.steps, prep.host, prep.mapping, new_netns=prep.netplan.new_netns, ctx=ctx,
                         join_userns=joined.userns, join_netns=joined.netns, place=place)
        trace("monitor: spawned")
    except BaseException as e:
        for fd in child_ends:
            os.close(fd)
        if spec.memory or spec.cpus or spec.pids_limit:
            from rootless.runtime import cgroups

            cgroups.cleanup(ctr.id)
        store.update_state(ctr.id, status="created", pid=0, exit_code=getattr(e, "exit_code", 125),
                           error=str(e))
        if spec.auto_remove:
            _auto_remove(config, store, ctr)
        raise
    for fd in child_ends:
        os.close(fd)
    if spec.tty:
        os.close(ctx["tty_sock"])
    pid = launched.pid
    pid_start = proc_start_time(pid)
    net_state: dict = {}
    try:
        from rootless import network

        net_state = network.start(prep.netplan, pid, str(ctr.dir / "userdata"), container_id=ctr.id,
                                  name=ctr.name, joined=joined)
        trace("monitor: network up")
        launched.go()
        trace("monitor: exec'ed")
    except RootlessError as e:
        early = launched.early_error() if not isinstance(e, (ContainerError,)) else None
        launched.abort()
        kill_and_reap(pid)
        from rootless import network

        network.stop(net_state)
        if spec.memory or spec.cpus or spec.pids_limit:
            from rootless.runtime import cgroups

            cgroups.cleanup(ctr.id)
        err = early or e
        store.update_state(ctr.id, status="created", pid=0, exit_code=err.exit_code, error=err.message,
                           network={})
        if spec.auto_remove:
            _auto_remove(config, store, ctr)
        raise err from None

    master = None
    if spec.tty:
        import socket

        msg, fds, _, _ = socket.recv_fds(ctx_sock_parent, 16, 1)
        ctx_sock_parent.close()
        master = fds[0]
    attachers = None if foreground_direct else _Attachers.listen(str(ctr.dir), master, stdin_w)
    started = now_iso()
    store.update_state(ctr.id, status="running", pid=pid, pid_start=pid_start, started_at=started,
                       finished_at="", exit_code=None, network=net_state, attached=attach)
    for w in [*ctx.get("warnings", ()), *launched.warnings]:
        _send(ctl_w, b"W " + w.encode())
    _send(ctl_w, b"S %d" % pid)
    if master is not None and tty_sock is not None:
        socket.send_fds(tty_sock, [b"M"], [master])
    if not attach:
        os.close(ctl_w)
        ctl_w = -1

    if not foreground_direct:
        log = _LogWriter(str(ctr.dir / "ctr.log"))
    status = _pump(pid, pipes, master, log, tty_sock, attach, attachers)
    trace("monitor: container exited")
    if log is not None:
        log.close()
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code
    _reap_all()
    from rootless import network

    network.stop(net_state)
    _reap_all()
    if spec.memory or spec.cpus or spec.pids_limit:
        from rootless.runtime import cgroups

        cgroups.cleanup(ctr.id)
    if spec.auto_remove and not store.raw_state(ctr.id).restarting:
        store.record_exit(ctr.id, code)    # for a `wait` (the container and its state.json go)
        _auto_remove(config, store, ctr)
    else:
        store.update_state(ctr.id, status="exited", pid=0, exit_code=code, finished_at=now_iso(), network={},
                           attached=False)
    trace("monitor: cleaned up")
    if attachers is not None:
        attachers.finish(code)
    if ctl_w >= 0:
        _send(ctl_w, b"X %d" % code)
    return 0


def _pump(pid: int, pipes: dict, master, log, tty_sock, attach: bool, attachers=None) -> int:
    """Copy the container's output until it exits; return its wait status. ``attachers``: the
    `attach` clients (their connections are served here too)."""
    import select

    poller = select.poll()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    for fd in pipes:
        poller.register(fd, select.POLLIN)
    sock_fd = tty_sock.fileno() if tty_sock is not None else -1
    # -it in the foreground: the terminal gets output once the CLI has made it raw (it says "r"):
    # else the keys typed meanwhile (ctrl-p ctrl-q) would meet a cooked terminal
    hold_master = master is not None and sock_fd >= 0 and attach
    if master is not None and not hold_master:
        poller.register(master, select.POLLIN)
    if sock_fd >= 0:
        poller.register(sock_fd, select.POLLIN)
    if attachers is not None:
        poller.register(attachers.fileno(), select.POLLIN)
    attached_out = attach
    status = None
    open_pipes = set(pipes)
    while True:
        if status is not None and not open_pipes and master is None:
            break
        try:
            events = poller.poll(None if status is None else 200)
        except InterruptedError:
            continue
        if not events and status is not None:
            break    # output holders gone long after the exit
        for fd, ev in events:
            if attachers is not None and attachers.serve(fd, poller):
                continue
            if fd == pidfd:
                poller.unregister(pidfd)
                os.close(pidfd)
                pidfd = -1
                _, status = os.waitpid(pid, 0)
                continue
            if fd == sock_fd:
                try:
                    data = os.read(sock_fd, 4096)
                except OSError:
                    data = b""
                if hold_master and master is not None:
                    poller.register(master, select.POLLIN)
                    hold_master = False
                if not data:
                    # the CLI detached (or died): let go of its terminal
                    attached_out = False
                    poller.unregister(sock_fd)
                    sock_fd = -1
                    _release_stdio()
                continue
            if fd == master:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(master)
                    os.close(master)
                    master = None
                    if attachers is not None:
                        attachers.master = None
                    continue
                if log is not None:
                    log.write("stdout", data)
                if attached_out and not _write_all(1, data):
                    attached_out = False
                if attachers is not None:
                    attachers.output("stdout", data)
                continue
            stream, out = pipes[fd]
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                os.close(fd)
                open_pipes.discard(fd)
                continue
            if log is not None:
                log.write(stream, data)
            if out is not None and attach:
                if not _write_all(out, data):
                    pipes[fd] = (stream, None)
            if attachers is not None:
                attachers.output(stream, data)
        if status is None and pidfd < 0:
            _, status = os.waitpid(pid, 0)
    if master is not None:
        os.close(master)
    for fd in open_pipes:
        os.close(fd)
    return status


ATTACH_SOCKET = "attach.sock"


def _dir_path(fd: int, name: str) -> str:
    """A short path to ``name`` in the directory open as ``fd``: a unix socket path has at most
    107 bytes, a store path may be longer."""
    return f"/proc/self/fd/{fd}/{name}"


class _Attachers:
    """The clients of `rootless attach` (and of `start -a` on a running container).

    The monitor listens on ``containers/<id>/attach.sock`` (the container's directory is
    0700; the peer's uid is checked too). A client sends one line of JSON (``{"stdin":
    bool}``) with its stdout and stderr fds (SCM_RIGHTS); it gets back ``M`` with the PTY
    master (-t: it writes the keystrokes and sets the window size itself), ``I`` with the
    write end of the container's stdin pipe (-i without -t, when it asked for stdin), or
    ``O`` (output only). The monitor writes the container's output to the client's fds
    until the client closes the connection (detach), and ``X <exit code>`` when the
    container has exited and been recorded.
    """

    def __init__(self, sock, cdir: str, master, stdin_w):
        self.sock = sock
        self.cdir = cdir
        self.master = master
        self.stdin_w = stdin_w
        self.clients: dict[int, tuple] = {}     # socket fd -> (socket, stdout fd, stderr fd)

    @classmethod
    def listen(cls, cdir: str, master, stdin_w):
        import socket

        dfd = os.open(cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            path = _dir_path(dfd, ATTACH_SOCKET)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                os.chmod(path, 0o600)
                sock.listen(8)
            except OSError:
                sock.close()
                return None     # no attach for this run; the container runs anyway
        finally:
            os.close(dfd)
        sock.setblocking(False)
        return cls(sock, cdir, master, stdin_w)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def serve(self, fd: int, poller) -> bool:
        """Handle an event of the listener or of a client; False when ``fd`` is not ours."""
        import select

        if self.sock is not None and fd == self.sock.fileno():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return True
            client = self._handshake(conn)
            if client is not None:
                self.clients[conn.fileno()] = client
                poller.register(conn.fileno(), select.POLLIN)
            return True
        if fd in self.clients:
            try:
                data = self.clients[fd][0].recv(4096)
            except OSError:
                data = b""
            if not data:        # detached (or gone)
                poller.unregister(fd)
                self._drop(fd)
            return True
        return False

    def _handshake(self, conn):
        import json
        import socket
        import struct

        fds: list[int] = []
        try:
            conn.settimeout(5)
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", cred)[1] != os.getuid():
                raise OSError("not the container's owner")
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 2)
            req = json.loads(msg.decode() or "{}")
            if len(fds) != 2:
                raise OSError("no stdout/stderr")
            if self.master is not None:
                socket.send_fds(conn, [b"M\n"], [self.master])
            elif req.get("stdin") and self.stdin_w is not None:
                socket.send_fds(conn, [b"I\n"], [self.stdin_w])
            else:
                conn.sendall(b"O\n")
            conn.settimeout(None)
            return (conn, fds[0], fds[1])
        except (OSError, ValueError):
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
            conn.close()
            return None

    def output(self, stream: str, data: bytes) -> None:
        for fd, (_, out, err) in list(self.clients.items()):
            if not _write_all(err if stream == "stderr" else out, data):
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        conn, out, err = self.clients.pop(fd)
        for f in (out, err):
            try:
                os.close(f)
            except OSError:
                pass
        conn.close()

    def finish(self, code: int) -> None:
        """The container exited and is recorded: tell the clients, stop listening."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            try:
                dfd = os.open(self.cdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.unlink(_dir_path(dfd, ATTACH_SOCKET))
                finally:
                    os.close(dfd)
            except OSError:
                pass       # (--rm: the directory is gone already)
        for fd in list(self.clients):
            try:
                self.clients[fd][0].sendall(b"X %d\n" % code)
            except OSError:
                pass
            self._drop(fd)


def _release_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for i in (0, 1, 2):
        os.dup2(null, i)
    os.close(null)


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child process and collect it (no zombie), whatever state it is in."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _auto_remove(config, store, ctr) -> None:
    from rootless.runtime.state import ContainerStore

    try:
        remove_container(config, ContainerStore(config).load(ctr.id), volumes=True)
    except RootlessError:
        pass


def remove_container(config, ctr, volumes: bool = False) -> None:
    """Delete a (stopped) container's files; with ``volumes`` its anonymous volumes too."""
    from rootless.runtime.state import ContainerStore
    from rootless.runtime.volumes import VolumeStore

    base, _ = mapping_for(ctr.spec)
    ContainerStore(config).delete(ctr, base)
    if volumes and ctr.anon_volumes:
        vs = VolumeStore(config)
        for v in ctr.anon_volumes:
            try:
                vs.remove(v, force=True)
            except RootlessError:
                pass


# ---------------------------------------------------------------------------
# attach (any CLI process): the client of _Attachers

class Attached:
    """A connection to a running container's monitor: ``master`` (-t), ``stdin`` (the write end
    of its stdin pipe) or neither; :meth:`wait_exit` returns the exit code, None if the monitor
    went away without one."""

    def __init__(self, sock, master, stdin):
        self.sock = sock
        self.master = master
        self.stdin = stdin

    def fileno(self) -> int:
        return self.sock.fileno()

    def wait_exit(self) -> int | None:
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                b = self.sock.recv(64)
            except InterruptedError:
                continue
            except OSError:
                b = b""
            if not b:
                break
            buf += b
        self.close()
        line = buf.strip()
        if line.startswith(b"X "):
            try:
                return int(line[2:])
            except ValueError:
                pass
        return None

    def close(self) -> None:
        for fd in (self.master, self.stdin):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.stdin = None
        self.sock.close()


def attach(ctr, *, stdin: bool, stdout: int = 1, stderr: int = 2) -> Attached:
    """Connect to the monitor of running container ``ctr``: it writes the output to ``stdout``
    and ``stderr`` from now on (raises ContainerError when it does not take attaches)."""
    import json
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        dfd = os.open(ctr.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock.connect(_dir_path(dfd, ATTACH_SOCKET))
        finally:
            os.close(dfd)
        socket.send_fds(sock, [json.dumps({"stdin": stdin}).encode()], [stdout, stderr])
        msg, fds, _, _ = socket.recv_fds(sock, 16, 1)
    except OSError as e:
        sock.close()
        raise ContainerError(f"cannot attach to container {ctr.name}: its monitor does not answer "
                             f"({e.strerror or e})",
                             hint="it was started by an older rootless, in the foreground with --rm, or its "
                                  "monitor died: `rootless logs -f` shows its output", exit_code=1) from None
    if msg.startswith(b"M") and fds:
        return Attached(sock, fds[0], None)
    if msg.startswith(b"I") and fds:
        return Attached(sock, None, fds[0])
    for f in fds:
        os.close(f)
    if not msg:
        sock.close()
        raise ContainerError(f"cannot attach to container {ctr.name}: its monitor refused", exit_code=1)
    return Attached(sock, None, None)


# ---------------------------------------------------------------------------
# stop / kill / wait (any CLI process)

def wait_gone(pid: int, start: int | None, timeout: float | None) -> bool:
    """Wait until process ``pid`` (with that start time) is gone; False on timeout."""
    import select
    import time

    from rootless.runtime.state import alive

    if not alive(pid, start):
        return True
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            if not alive(pid, start):
                return True
            p = select.poll()
            p.register(fd, select.POLLIN)
            return bool(p.poll(None if timeout is None else int(timeout * 1000)))
        finally:
            os.close(fd)
    deadline = None if timeout is None else time.monotonic() + timeout
    while alive(pid, start):
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def wait_recorded(store, ctr, timeout: float = 10.0):
    """After the process is gone: wait for the monitor to record the exit (or die). A dead
    monitor recorded nothing and stopped nothing: the store's reaper stops the network
    helpers it left (pasta outlives the namespace it joined) and records the exit."""
    import time

    from rootless.errors import ContainerNotFound

    deadline = time.monotonic() + timeout
    while True:
        st = store.raw_state(ctr.id)
        if st.status not in ("running", "starting", "stopping"):
            return st
        if not st.monitor_alive():
            try:
                return store.load(ctr.id).state      # reaps (ContainerStore._reap) once the pid is gone
            except ContainerNotFound:
                return st.truth()
        if time.monotonic() > deadline:
            st = st.truth()
            from rootless.runtime.state import alive

            if st.status != "exited" and not alive(st.pid, st.pid_start):
                st = st.replace(status="exited", pid=0, exit_code=255, error="the monitor did not record an exit status")
            return st
        wait_gone(st.monitor_pid, st.monitor_start, 0.05)


def stop_container(config, ctr, timeout: int | None = None, sig: int | None = None) -> None:
    from rootless.runtime.state import ContainerStore

    store = ContainerStore(config)
    st = ctr.state
    if st.status != "running":
        return
    t = ctr.spec.stop_timeout if timeout is None else timeout
    try:
        os.kill(st.pid, sig or ctr.spec.stop_signal)
    except ProcessLookupError:
        pass
    if not wait_gone(st.pid, st.pid_start, max(t, 0)):
        try:
            os.kill(st.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_gone(st.pid, st.pid_start, 10)
    wait_recorded(store, ctr)

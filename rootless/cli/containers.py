"""Container commands: run create start stop restart kill rm ps logs exec
inspect wait top cp prune rename port.

Argument parsing and output only; the work is in rootless.runtime.
"""

from __future__ import annotations

import argparse
import os
import sys

from rootless.cli.base import Command
from rootless.errors import ContainerNotFound, ContainerStateError, ImageNotFound, RootlessError, UsageError

COMMANDS: dict[str, Command] = {}

PROXY_SIGNALS = (1, 2, 3, 10, 12, 15, 28)   # HUP INT QUIT USR1 USR2 TERM WINCH


def _cmd(name: str, summary: str, setup, usage: str | None = None):
    def deco(fn):
        COMMANDS[name] = Command(summary, setup, fn if name in ("run", "create") else _status_1(fn), usage)
        return fn
    return deco


def _status_1(fn):
    """Docker: a missing container is exit status 1 outside run/create."""
    def handler(ctx, args):
        try:
            return fn(ctx, args)
        except ContainerNotFound as e:
            raise ContainerNotFound(e.message, e.hint, exit_code=1) from None
    return handler


def _print_err(msg: str) -> None:
    print(f"Error: {msg}", file=sys.stderr)


def _each(refs, fn) -> int:
    """Docker's multi-container commands: report each failure, exit 1 if any."""
    status = 0
    for ref in refs:
        try:
            fn(ref)
        except RootlessError as e:
            _print_err(e.message)
            if e.hint:
                print(f"Hint: {e.hint}", file=sys.stderr)
            status = 1
    return status


# ---------------------------------------------------------------------------
# run / create

def _run_flags(p, *, run: bool) -> None:
    p.add_argument("--name", help="assign a name to the container")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits")
    if run:
        p.add_argument("-d", "--detach", action="store_true", help="run in the background, print the id")
        p.add_argument("--detach-keys", default="ctrl-p,ctrl-q", help="keys to detach from a -t container")
        p.add_argument("--sig-proxy", default="true", help="forward signals to the container (default true)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("-u", "--user", default="", help="user[:group] or uid[:gid]")
    p.add_argument("--entrypoint", default=None, help="override the image's entrypoint")
    p.add_argument("--hostname", default="", help="container host name")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="[SRC:]DST[:ro]")
    p.add_argument("--mount", action="append", default=[], metavar="type=...,source=...,target=...")
    p.add_argument("--tmpfs", action="append", default=[], metavar="PATH[:OPTIONS]")
    p.add_argument("--read-only", action="store_true", help="mount the root filesystem read-only")
    p.add_argument("--init", action="store_true", help="run an init that reaps zombies and forwards signals")
    p.add_argument("--pull", default="missing", choices=("always", "missing", "never", "newer"))
    p.add_argument("--platform", default="", help="os/arch[/variant] of the image")
    p.add_argument("--arch", default="", help="architecture of the image (overrides --platform's), e.g. arm64")
    p.add_argument("--variant", default="", help="architecture variant of the image, e.g. v7")
    p.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stop-signal", default="", help="signal to stop the container (default SIGTERM)")
    p.add_argument("--stop-timeout", type=int, default=None, help="seconds before SIGKILL on stop")
    p.add_argument("--network", "--net", default="default",
                   help="default (pasta or slirp4netns) | none | host | container:NAME|ID | NETWORK")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:][HOSTPORT:]CTRPORT[/PROTO]")
    p.add_argument("-P", "--publish-all", action="store_true", help="publish every exposed port on a free host port")
    p.add_argument("--expose", action="append", default=[], metavar="PORT[/PROTO]", help="expose a port (for -P)")
    p.add_argument("--network-alias", "--net-alias", action="append", default=[], metavar="NAME",
                   help="another DNS name of the container on its user-defined network")
    p.add_argument("--ip", default="", help="the container's IPv4 address on its user-defined network")
    p.add_argument("--dns", action="append", default=[], metavar="IP")
    p.add_argument("--dns-search", action="append", default=[], metavar="DOMAIN")
    p.add_argument("--dns-option", "--dns-opt", action="append", default=[], metavar="OPTION")
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP")
    p.add_argument("--cap-add", action="append", default=[], metavar="CAP")
    p.add_argument("--cap-drop", action="append", default=[], metavar="CAP")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT")
    p.add_argument("--userns", default="", help="keep-id: the user keeps their uid/gid inside")
    p.add_argument("-m", "--memory", default="", help="memory limit (needs a delegated cgroup v2)")
    p.add_argument("--cpus", default="", help="CPU limit (needs a delegated cgroup v2)")
    p.add_argument("--pids-limit", type=int, default=0, help="process limit (needs a delegated cgroup v2)")
    p.add_argument("--rootfs", action="store_true",
                   help="the first argument is a root filesystem directory, not an image (Podman's --rootfs)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def _run_setup(p):
    _run_flags(p, run=True)


def _create_setup(p):
    _run_flags(p, run=False)


def _options(args, env: dict[str, str]):
    from rootless.runtime.spec import (RunOptions, parse_bytes, parse_env, parse_env_file_text, parse_labels,
                                       parse_mount, parse_tmpfs, parse_volume)

    envs = []
    for f in args.env_file:
        try:
            with open(f) as fh:
                text = fh.read()
        except OSError as e:
            raise UsageError(f"cannot read --env-file {f}: {e.strerror}") from None
        envs += parse_env_file_text(text, f, env)
    envs += parse_env(args.env, env)
    mounts = [parse_volume(v) for v in args.volume] + [parse_mount(m) for m in args.mount] + \
        [parse_tmpfs(t) for t in args.tmpfs]
    nnp = False
    for so in args.security_opt:
        if so in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            nnp = True
        elif so in ("no-new-privileges:false", "no-new-privileges=false"):
            nnp = False
        elif so.split("=")[0].split(":")[0] in ("seccomp", "apparmor", "label"):
            continue   # not enforced by rootless (accepted like Podman on hosts without them)
        else:
            raise UsageError(f"invalid --security-opt {so!r}", hint="supported: no-new-privileges")
    cpus = 0.0
    if args.cpus:
        try:
            cpus = float(args.cpus)
        except ValueError:
            raise UsageError(f"invalid --cpus {args.cpus!r}", hint="a number, e.g. 1.5") from None
    user = args.user
    if args.userns == "keep-id" and not user:
        user = f"{os.getuid()}:{os.getgid()}"
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    return RunOptions(
        command=tuple(command), entrypoint=args.entrypoint, env=tuple(envs), workdir=args.workdir, user=user,
        hostname=args.hostname, tty=args.tty, interactive=args.interactive, init=args.init,
        read_only=args.read_only, mounts=tuple(mounts), cap_add=tuple(args.cap_add), cap_drop=tuple(args.cap_drop),
        no_new_privileges=nnp, userns=args.userns, network=args.network, publish=tuple(args.publish),
        dns=tuple(args.dns), add_hosts=tuple(args.add_host), stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout, labels=parse_labels(args.label), auto_remove=args.rm,
        rootfs="", memory=parse_bytes(args.memory, "--memory") if args.memory else 0, cpus=cpus,
        pids_limit=args.pids_limit, network_aliases=tuple(args.network_alias), ip=args.ip,
        publish_all=args.publish_all, expose=tuple(args.expose), dns_search=tuple(args.dns_search),
        dns_options=tuple(args.dns_option))


_warned = False


def _warn_single_mapping(ctx) -> None:
    """Without a subordinate id range: warn once (per store) with the fix."""
    global _warned
    from rootless.userns import default_mapping

    if _warned or not default_mapping().single:
        return
    _warned = True
    marker = ctx.config.data_root / ".warned-no-subids"
    if marker.exists():
        return
    import pwd

    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    from rootless.userns import subid_fix

    ctx.warn(f"no subordinate ids for {user} in /etc/subuid and /etc/subgid: containers map only your own "
             f"uid (to root); files of other owners in images cannot be used. Fix: {subid_fix(user)}")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


def _create(ctx, args):
    from rootless.runtime.spec import build_spec
    from rootless.runtime.state import ContainerStore, valid_name
    from rootless.runtime.volumes import VolumeStore

    config = ctx.config
    opts = _options(args, ctx.env)
    cstore = ContainerStore(config)
    if args.name is not None:
        if not valid_name(args.name.lstrip("/")):
            raise UsageError(f"invalid container name {args.name!r}",
                             hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters")
        if args.name.lstrip("/") in cstore.names():
            from rootless.errors import NameInUse

            raise NameInUse(f"the container name \"{args.name}\" is already in use",
                            hint="remove that container (rootless rm) or choose another --name")
    _warn_single_mapping(ctx)
    if args.rootfs:
        path = os.path.abspath(args.image)
        if not os.path.isdir(path):
            raise UsageError(f"--rootfs {args.image}: not a directory")
        # --platform says what the directory holds (it chooses the emulation); none: the entrypoint tells
        plat = _requested_platform(args)
        image_config, image_id, image_ref, platform = None, "", path, str(plat) if plat else ""
        opts = opts.replace(rootfs=path)
    else:
        image_config, image_id, image_ref, platform = _image(ctx, args)
    from rootless.network import plan_network

    cid = ContainerStore.new_id()
    spec = build_spec(image_config, opts, image_id=image_id, image_ref=image_ref, platform=platform,
                      default_hostname=_net().peer_hostname(config, opts.network) or cid[:12])
    for w in plan_network(spec, config).warnings:   # bad network options fail now, before anything is created
        ctx.warn(w)
    if spec.memory or spec.cpus or spec.pids_limit:
        from rootless.runtime import cgroups

        cgroups.check_available()
    anon = []
    made = []     # volumes created here (Docker creates named volumes at create too)
    vstore = VolumeStore(config)
    for m in spec.mounts:
        if m.kind == "volume" and not m.source:
            v, _ = vstore.create(None, anonymous=True)
            anon.append(v.name)
            made.append(v.name)
        elif m.kind == "volume":
            v, new = vstore.create(m.source)
            if new:
                made.append(v.name)
    from rootless.runtime.monitor import emulation_record

    emulation = emulation_record(config, platform)   # what inspect shows, even if the config changes later
    try:
        return cstore.create(args.name, spec, anon_volumes=tuple(anon), cid=cid, emulation=emulation)
    except BaseException:
        for v in made:
            try:
                vstore.remove(v, force=True)
            except RootlessError:
                pass
        raise


def _image(ctx, args):
    """(ImageConfig, image id, reference, platform string) via the image store."""
    try:
        from rootless.image.store import Store
    except ImportError:
        raise RootlessError("this build of rootless has no image store yet",
                            hint="use --rootfs DIR to run a root filesystem directory") from None
    from archsupport.platform import mismatch_warning

    plat = _requested_platform(args)
    store = Store(ctx.config)
    pull = "missing" if args.pull == "newer" else args.pull
    pulled = False
    try:
        img = None
        if pull in ("never", "missing"):
            try:
                img = store.resolve(args.image, platform=plat)
            except ImageNotFound:
                if pull == "never":
                    raise
        if img is None:
            # only a pull needs the progress reporter (and its imports)
            img = store.ensure_image(args.image, pull=pull, platform=plat, reporter=ctx.reporter())
            pulled = True
    except ImageNotFound as e:
        if pull == "never":
            raise ImageNotFound(f"{args.image}: image not known",
                                hint="pull it first (rootless pull) or use --pull=missing") from None
        raise e
    # once: a pull has already warned about an image that is not the platform asked for
    # (image.pull); Docker's warning about a foreign image run without --platform is ours
    if (plat is None or not pulled) and (w := mismatch_warning(plat, img.platform)):
        ctx.warn(w)
    return img.config, img.id, args.image, str(img.platform)


def _requested_platform(args):
    """--platform / --arch / --variant as a Platform (None: nothing asked); unknown values: 125."""
    from archsupport.platform import requested

    return requested(args.platform or None, getattr(args, "arch", "") or None, getattr(args, "variant", "") or None)


def _print_warnings(started) -> None:
    for w in started.warnings:
        print(f"WARNING: {w}", file=sys.stderr)


def _attach_foreground(ctx, ctr, started, *, detach_keys: str = "ctrl-p,ctrl-q", sig_proxy: bool = True) -> int:
    """The foreground side of run / start -a: terminal relay or signal forwarding."""
    import signal

    spec = ctr.spec
    if spec.tty and started.master is not None:
        from rootless.runtime.tty import parse_detach_keys, raw_terminal, relay

        keys = parse_detach_keys(detach_keys) if detach_keys else b""
        stdin = 0 if spec.interactive else os.open(os.devnull, os.O_RDONLY)
        with raw_terminal(0 if spec.interactive else stdin):
            started.terminal_ready()
            how = relay(started.master, stdin=stdin, stop_fd=started.ctl_r, detach_keys=keys)
        if how == "detached":
            started.detach()
            print("", file=sys.stderr)
            return 0
        os.close(started.master)
        return started.wait_exit()
    started.terminal_ready()     # (-t without the master: the output still flows)
    if sig_proxy:
        pid = started.pid

        def fwd(n, _f):
            try:
                os.kill(pid, n)
            except OSError:
                pass

        for s in PROXY_SIGNALS:
            signal.signal(s, fwd)
        # signals that arrived while the container was starting were held: deliver them now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, PROXY_SIGNALS)
    return started.wait_exit()


def _attach_running(ctx, ctr, *, detach_keys: str = "ctrl-p,ctrl-q", stdin: bool = True,
                    sig_proxy: bool = True) -> int:
    """Attach to a running container through its monitor (attach, start -a): its output from
    now on, stdin when it was created with -i, a terminal relay (resize, detach keys) with -t;
    returns its exit code (0 after a detach)."""
    import signal

    from rootless.runtime import monitor
    from rootless.runtime.tty import get_winsize, parse_detach_keys, raw_terminal, relay, set_winsize

    spec = ctr.spec
    keys = parse_detach_keys(detach_keys) if detach_keys else b""
    want_stdin = stdin and spec.interactive
    _check_tty(spec.tty, want_stdin)
    src = 0 if want_stdin else os.open(os.devnull, os.O_RDONLY)
    # -t: the terminal is raw before the first output arrives (the keys typed then are relayed)
    with raw_terminal(src) if spec.tty else _nothing():
        att = monitor.attach(ctr, stdin=want_stdin)
        if not spec.tty and sig_proxy:
            def fwd(n, _f):
                try:
                    os.kill(ctr.state.pid, n)
                except OSError:
                    pass

            for s in PROXY_SIGNALS:
                if s != signal.SIGWINCH:
                    signal.signal(s, fwd)
        target = att.master if att.master is not None else att.stdin
        if target is not None:
            if att.master is not None:
                set_winsize(att.master, get_winsize(0) or get_winsize(1))
            how = relay(target, stdin=src, stop_fd=att.fileno(), detach_keys=keys)
            if how == "detached":
                att.close()
                if spec.tty:
                    print("\r", file=sys.stderr)
                return 0
    code = att.wait_exit()
    if code is None:
        from rootless.runtime.monitor import wait_recorded

        st = wait_recorded(_store(ctx), ctr)
        code = st.exit_code if st.exit_code is not None else 0
    return code


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _attach_setup(p):
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q", help="keys to detach (default ctrl-p,ctrl-q)")
    p.add_argument("--no-stdin", action="store_true", help="do not attach stdin")
    p.add_argument("--sig-proxy", default="true", help="forward signals to the container (default true; not with -t)")
    p.add_argument("container", metavar="CONTAINER")


def cmd_attach(ctx, args) -> int:
    ctr = _store(ctx).lookup(args.container)
    if not ctr.state.running:
        raise ContainerStateError("you cannot attach to a stopped container, start it first",
                                  hint=f"rootless start -ai {args.container}", exit_code=1)
    return _attach_running(ctx, ctr, detach_keys=args.detach_keys, stdin=not args.no_stdin,
                           sig_proxy=args.sig_proxy.lower() not in ("false", "0"))


_cmd("attach", "Attach stdin, stdout and stderr to a running container", _attach_setup)(cmd_attach)


def _hold_signals() -> None:
    """From before the monitor starts until the forwarding is in place, hold the
    signals `run` forwards (they would otherwise kill the CLI, not the container)."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, PROXY_SIGNALS)


def _release_signals() -> None:
    import signal

    signal.pthread_sigmask(signal.SIG_UNBLOCK, PROXY_SIGNALS)


def _check_tty(tty: bool, interactive: bool) -> None:
    """Docker's CheckTty: -it needs a terminal on stdin (status 1, before anything is created)."""
    if tty and interactive and not os.isatty(0):
        raise UsageError("the input device is not a TTY", hint="drop -t when stdin is a pipe or a file",
                         exit_code=1)


def cmd_run(ctx, args) -> int:
    from rootless.runtime import monitor, trace

    trace("cli: run")
    _check_tty(args.tty, args.interactive)

    ctr = _create(ctx, args)
    trace("cli: created")
    winsize = None
    if ctr.spec.tty:
        from rootless.runtime.tty import get_winsize

        winsize = get_winsize(0)
    if not args.detach and not ctr.spec.tty:
        _hold_signals()
    try:
        started = monitor.start(ctx.config, ctr, attach=not args.detach, winsize=winsize,
                                stdin_attached=args.interactive)
    except BaseException:
        _release_signals()
        raise
    trace("cli: started")
    _print_warnings(started)
    if args.detach:
        print(ctr.id)
        return 0
    code = _attach_foreground(ctx, ctr, started, detach_keys=args.detach_keys,
                              sig_proxy=args.sig_proxy.lower() not in ("false", "0"))
    trace("cli: exit")
    # the container is gone and recorded: skip the interpreter's teardown (a few ms)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return code
    os._exit(code)


_cmd("run", "Create and run a new container from an image", _run_setup)(cmd_run)


def cmd_create(ctx, args) -> int:
    ctr = _create(ctx, args)
    print(ctr.id)
    return 0


_cmd("create", "Create a new container", _create_setup)(cmd_create)


# ---------------------------------------------------------------------------
# start / stop / restart / kill / rm

def _store(ctx):
    from rootless.runtime.state import ContainerStore

    return ContainerStore(ctx.config)


def _start_setup(p):
    p.add_argument("-a", "--attach", action="store_true", help="attach stdout/stderr and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def cmd_start(ctx, args) -> int:
    from rootless.runtime import monitor

    store = _store(ctx)
    if args.attach and len(args.containers) > 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    if args.attach or args.interactive:
        ctr = store.lookup(args.containers[0])
        if ctr.state.running:       # Docker: start -a / -i of a running container attaches to it
            return _attach_running(ctx, ctr, detach_keys=args.detach_keys, stdin=args.interactive)
        _check_tty(ctr.spec.tty, args.interactive)
        winsize = None
        if ctr.spec.tty:
            from rootless.runtime.tty import get_winsize

            winsize = get_winsize(0)
        if not ctr.spec.tty:
            _hold_signals()
        try:
            started = monitor.start(ctx.config, ctr, attach=True, winsize=winsize, stdin_attached=args.interactive)
        except BaseException:
            _release_signals()
            raise
        _print_warnings(started)
        return _attach_foreground(ctx, ctr, started, detach_keys=args.detach_keys)

    def one(ref):
        ctr = store.lookup(ref)
        if not ctr.state.running:
            started = monitor.start(ctx.config, ctr, attach=False)
            _print_warnings(started)
        print(ref)

    return _each(args.containers, one)


_cmd("start", "Start one or more stopped containers", _start_setup)(cmd_start)


def _stop_setup(p):
    p.add_argument("-t", "--time", "--timeout", type=int, default=None, dest="time",
                   help="seconds to wait before killing (default: the container's stop timeout, 10)")
    p.add_argument("-s", "--signal", default="", help="signal to send (default: the container's stop signal)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def cmd_stop(ctx, args) -> int:
    from rootless.runtime import monitor
    from rootless.runtime.spec import parse_signal

    store = _store(ctx)
    sig = parse_signal(args.signal) if args.signal else None

    def one(ref):
        ctr = store.lookup(ref)
        monitor.stop_container(ctx.config, ctr, args.time, sig)
        print(ref)

    return _each(args.containers, one)


_cmd("stop", "Stop one or more running containers", _stop_setup)(cmd_stop)


def cmd_restart(ctx, args) -> int:
    from rootless.runtime import monitor
    from rootless.runtime.spec import parse_signal

    store = _store(ctx)
    sig = parse_signal(args.signal) if args.signal else None

    def one(ref):
        ctr = store.lookup(ref)
        if ctr.state.running and ctr.spec.auto_remove:
            store.update_state(ctr.id, restarting=True)    # the monitor keeps a --rm container
        monitor.stop_container(ctx.config, ctr, args.time, sig)
        ctr = store.lookup(ctr.id)
        started = monitor.start(ctx.config, ctr, attach=False)
        _print_warnings(started)
        print(ref)

    return _each(args.containers, one)


_cmd("restart", "Restart one or more containers", _stop_setup)(cmd_restart)


def _kill_setup(p):
    p.add_argument("-s", "--signal", default="KILL", help="signal to send (default KILL)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def cmd_kill(ctx, args) -> int:
    from rootless.runtime.spec import parse_signal

    store = _store(ctx)
    sig = parse_signal(args.signal)

    def one(ref):
        ctr = store.lookup(ref)
        if not ctr.state.running:
            raise ContainerStateError(f"cannot kill container {ref}: container is not running", exit_code=1)
        try:
            os.kill(ctr.state.pid, sig)
        except ProcessLookupError:
            raise ContainerStateError(f"cannot kill container {ref}: container is not running",
                                      exit_code=1) from None
        print(ref)

    return _each(args.containers, one)


_cmd("kill", "Kill one or more running containers (default signal KILL)", _kill_setup)(cmd_kill)


def _rm_setup(p):
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("-v", "--volumes", action="store_true", help="remove the container's anonymous volumes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def _remove(ctx, ctr, force: bool, volumes: bool) -> None:
    import signal

    from rootless.runtime import monitor

    store = _store(ctx)
    if ctr.state.running or ctr.state.status == "starting":
        if not force:
            raise ContainerStateError(f"cannot remove container {ctr.name}: container is running",
                                      hint="stop the container before removing it, or use rm -f", exit_code=1)
        if ctr.state.pid > 0:      # none yet while starting: kill(0) would hit our process group
            try:
                os.kill(ctr.state.pid, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass
        monitor.wait_gone(ctr.state.pid, ctr.state.pid_start, 10)
        monitor.wait_recorded(store, ctr)
    if ctr.spec.auto_remove and ctr.state.monitor_alive():
        # the monitor removes it (--rm): wait for that
        monitor.wait_gone(ctr.state.monitor_pid, ctr.state.monitor_start, 10)
        if not ctr.dir.exists():
            return
    monitor.remove_container(ctx.config, ctr, volumes=volumes)


def cmd_rm(ctx, args) -> int:
    store = _store(ctx)

    missing = []

    def one(ref):
        try:
            ctr = store.lookup(ref)
        except ContainerNotFound as e:
            if not args.force:
                raise
            missing.append(e.message)   # Docker: rm -f of a missing container is not a failure
            return
        _remove(ctx, ctr, args.force, args.volumes)
        print(ref)

    status = _each(args.containers, one)
    for m in missing:
        _print_err(m)
    return status


_cmd("rm", "Remove one or more containers", _rm_setup)(cmd_rm)


def _prune_setup(p):
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.add_argument("--filter", action="append", default=[],
                   help="until=TIME (created before), label=KEY[=VALUE], label!=KEY[=VALUE]")


def _prune_until(filters: dict[str, list[str]]) -> float | None:
    """The until= time of prune filters (None: no such filter); Docker takes at most one."""
    import time

    from rootless.cli.filters import timestamp_arg

    values = filters.get("until", [])
    if len(values) > 1:
        raise UsageError("more than one until filter specified", hint="give one --filter until=TIME")
    return timestamp_arg(values[0], time.time(), "until filter") if values else None


def prune_stopped(ctx, filters: dict[str, list[str]] | None = None) -> tuple[list[str], int]:
    """Remove every stopped container (matching Docker's prune filters: until=, label=,
    label!=) and what interrupted creates and removals left; (ids, bytes of their upper
    dirs). Failures are reported and skipped."""
    from rootless.cli.filters import prune_labels
    from rootless.diskusage import tree_size
    from rootless.runtime.state import parse_iso

    filters = filters or {}
    until = _prune_until(filters)
    store = _store(ctx)
    removed = []
    freed = 0
    for c in store.list():
        if c.state.running or c.state.status == "starting":
            continue
        if not prune_labels(dict(c.spec.labels), filters):
            continue
        if until is not None and parse_iso(c.created) > until:
            continue      # created after the time: kept
        try:
            size = tree_size(c.dir / "upper")
            _remove(ctx, c, False, False)
            removed.append(c.id)
            freed += size
        except RootlessError as e:
            _print_err(e.message)
    try:    # and what interrupted creates and removals left behind
        removed += store.sweep()
    except RootlessError as e:
        _print_err(e.message)
    return removed, freed


def cmd_prune(ctx, args) -> int:
    from rootless.image.present import human_size

    filters = _parse_filters(args.filter, PRUNE_FILTERS, "container prune")
    _prune_until(filters)      # bad input fails before the question
    if not args.force:
        from rootless.cli.base import confirm

        if not confirm("WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"):
            return 0
    removed, freed = prune_stopped(ctx, filters)
    print("Deleted Containers:")
    for cid in removed:
        print(cid)
    print(f"\nTotal reclaimed space: {human_size(freed)}")
    return 0


_cmd("prune", "Remove all stopped containers", _prune_setup)(cmd_prune)


def _rename_setup(p):
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")


def cmd_rename(ctx, args) -> int:
    store = _store(ctx)
    ctr = store.lookup(args.container)
    store.rename(ctr, args.new_name)
    _net().renamed(ctx.config, ctr.id, args.new_name.lstrip("/"))
    return 0


_cmd("rename", "Rename a container", _rename_setup)(cmd_rename)


# ---------------------------------------------------------------------------
# ps

def human_duration(seconds: float) -> str:
    """Docker's (go-units) HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = int(seconds / 60)
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(seconds / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def _status_text(c, now: float) -> str:
    from rootless.runtime.state import parse_iso

    st = c.state
    if st.status == "running":
        return f"Up {human_duration(now - parse_iso(st.started_at))}"
    if st.status == "exited":
        ago = human_duration(now - parse_iso(st.finished_at)) + " ago" if st.finished_at else ""
        return f"Exited ({st.exit_code if st.exit_code is not None else -1}) {ago}".rstrip()
    if st.status == "starting":
        return "Starting"
    return "Created"


def _command_text(c, trunc: bool) -> str:
    import shlex

    cmd = " ".join(shlex.quote(a) if (" " in a or not a) else a for a in c.spec.argv)
    if trunc and len(cmd) > 20:
        cmd = cmd[:19] + "…"
    return f'"{cmd}"'


def _port_mappings(c) -> list:
    from rootless.network.ports import PortMapping

    out = []
    for p in (c.state.network or {}).get("ports") or []:
        try:
            out.append(PortMapping.from_json(p))
        except (KeyError, ValueError, TypeError):
            continue
    return out


def _ports_text(c) -> str:
    """Docker's PORTS column: published ports (ranges collapsed), then exposed ones, while running."""
    if c.state.status != "running":
        return ""
    from rootless.network.ports import format_ps

    return format_ps(_port_mappings(c), list(getattr(c.spec, "exposed", ()) or ()))


def _ps_item(c, trunc: bool, now: float) -> dict:
    from rootless.runtime.state import parse_iso

    import time as _t

    created = parse_iso(c.created)
    return {
        "ID": c.short_id if trunc else c.id,
        "Image": c.image_ref if c.image_ref else c.image_id[:19],
        "Command": _command_text(c, trunc),
        "CreatedAt": _t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", _t.gmtime(created)),
        "RunningFor": human_duration(now - created) + " ago",
        "Ports": _ports_text(c),
        "Status": _status_text(c, now),
        "State": c.state.status,
        "Names": c.name,
        "Labels": ",".join(f"{k}={v}" for k, v in c.spec.labels),
        "Mounts": ",".join(m.source or m.target for m in c.spec.mounts),
        "Networks": _net().current_networks(c.spec.network, c.dir),
        "Size": "0B",
        "Pid": c.state.pid,
        "ExitCode": c.state.exit_code,
    }


PS_FILTERS = ("id", "name", "label", "exited", "status", "ancestor", "before", "since", "volume", "network",
              "publish", "expose")
PRUNE_FILTERS = ("until", "label", "label!")


def _parse_filters(items: list[str], supported=PS_FILTERS, command: str = "ps") -> dict[str, list[str]]:
    from rootless.cli.filters import parse

    # Docker's other ps filters: health (no health checks here), isolation (Windows), is-task (swarm)
    return parse(items, supported, command, unsupported=("health", "isolation", "is-task"))


def _match_labels(c, wanted: list[str]) -> bool:
    from rootless.cli.filters import match_labels

    return match_labels(dict(c.spec.labels), wanted)


def _port_filter(value: str, key: str) -> tuple[int, int, str]:
    """publish= / expose= values: PORT[/PROTO] or START-END[/PROTO] (tcp by default)."""
    import re

    m = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", value.strip())
    if not m or not (0 < int(m.group(1)) <= int(m.group(2) or m.group(1)) <= 65535):
        raise UsageError(f"invalid filter '{key}={value}'", hint="use PORT[/PROTO] or START-END[/PROTO]")
    return int(m.group(1)), int(m.group(2) or m.group(1)), m.group(3) or "tcp"


def _port_keys(c, exposed: bool) -> set[str]:
    """"80/tcp" keys of the container's published ports (-p, -P; with ``exposed`` EXPOSE and
    --expose too: Docker counts published ports as exposed)."""
    keys = set(_net().port_bindings(c.spec))
    if getattr(c.spec, "publish_all", False) or exposed:
        keys |= set(getattr(c.spec, "exposed", ()) or ())
    keys |= {m.key for m in _port_mappings(c)}
    return keys


def _networks_of(c) -> set[str]:
    """Names (and ids of user-defined networks) the container is configured with or attached to."""
    from rootless.network import read_overrides
    from rootless.network.networks import _network_names_of

    names = {m.strip() for m in (c.spec.network or "default").split(",") if m.strip()}
    names |= _network_names_of(c.spec.to_json(), c.state.to_json(), read_overrides(c.dir))
    if (c.state.network or {}).get("mode"):
        names.add(c.state.network["mode"])
    for ep in (c.state.network or {}).get("networks") or []:
        if isinstance(ep, dict) and ep.get("id"):
            names.add(ep["id"])
    return names


def _ancestor_match(c, a: str) -> bool:
    """ancestor=: the reference the container was made from (busybox = busybox:latest), or an image id prefix."""
    def norm(ref: str) -> str:
        last = ref.rsplit("/", 1)[-1]
        base = ref[:-len(last)]
        return base + (last if ":" in last or "@" in last else last + ":latest")

    if c.image_ref and norm(c.image_ref) == norm(a):
        return True
    if c.image_ref and "/" not in a and norm(c.image_ref).rsplit("/", 1)[-1] == norm(a):
        return True
    want = a[7:] if a.startswith("sha256:") else a
    have = c.image_id[7:] if c.image_id.startswith("sha256:") else ""
    return len(want) >= 4 and all(ch in "0123456789abcdef" for ch in want) and have.startswith(want)


def _matches(c, filters: dict[str, list[str]]) -> bool:
    import re

    if "status" in filters:
        valid = ("created", "running", "exited", "paused", "restarting", "removing", "dead")
        for s in filters["status"]:
            if s not in valid:
                raise UsageError(f"invalid filter 'status={s}'", hint="status is one of " + ", ".join(valid))
        st = c.state.status if c.state.status != "starting" else "created"
        if st not in filters["status"]:
            return False
    if "name" in filters and not any(re.search(n, c.name) for n in filters["name"]):
        return False
    if "id" in filters and not any(c.id.startswith(i) for i in filters["id"]):
        return False
    if "label" in filters and not _match_labels(c, filters["label"]):
        return False
    if "exited" in filters:
        for e in filters["exited"]:
            if not e.lstrip("-").isdigit():
                raise UsageError(f"invalid filter 'exited={e}'", hint="exited= takes an exit code (a number)")
        if c.state.status != "exited" or str(c.state.exit_code) not in [str(int(e)) for e in filters["exited"]]:
            return False
    if "volume" in filters:
        if not any(m.source in filters["volume"] or m.target in filters["volume"] for m in c.spec.mounts):
            return False
    if "ancestor" in filters and not any(_ancestor_match(c, a) for a in filters["ancestor"]):
        return False
    if "network" in filters:
        nets = _networks_of(c)
        if not any(n in nets or (len(n) >= 12 and any(x.startswith(n) for x in nets)) for n in filters["network"]):
            return False
    for key in ("publish", "expose"):
        if key in filters:
            ranges = [_port_filter(v, key) for v in filters[key]]
            ports = []
            for k in _port_keys(c, key == "expose"):
                num, _, proto = k.partition("/")
                if num.isdigit():
                    ports.append((int(num), proto or "tcp"))
            if not any(lo <= p <= hi and proto == pr for lo, hi, proto in ranges for p, pr in ports):
                return False
    return True


def _ps_setup(p):
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default: running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only ids")
    p.add_argument("-l", "--latest", action="store_true", help="the latest created container")
    p.add_argument("-n", "--last", type=int, default=-1, help="the n last created containers")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="id=, name=, label=, exited=, status=, ancestor=, before=, since=, volume=, network=, "
                        "publish=, expose=")
    p.add_argument("--format", default=None, help="table, json or a Go template")
    p.add_argument("-s", "--size", action="store_true", help="(accepted; sizes are not computed)")


def cmd_ps(ctx, args) -> int:
    import json
    import time

    from rootless.cli.format import output

    filters = _parse_filters(args.filter)
    store = _store(ctx)
    items = store.list()
    show_all = args.all or args.latest or args.last >= 0 or "status" in filters or "exited" in filters
    if not show_all:
        items = [c for c in items if c.state.running]
    items = [c for c in items if _matches(c, filters)]
    for ref in filters.get("before", []):      # created before / since another container
        t = store.lookup(ref).created
        items = [c for c in items if c.created < t]
    for ref in filters.get("since", []):
        t = store.lookup(ref).created
        items = [c for c in items if c.created > t]
    if args.latest:
        items = items[:1]
    elif args.last >= 0:
        items = items[:args.last]
    now = time.time()
    trunc = not args.no_trunc
    rows = [_ps_item(c, trunc, now) for c in items]
    if args.quiet:
        for r in rows:
            print(r["ID"])
        return 0
    if args.format == "json":
        for r in rows:
            print(json.dumps(r))
        return 0
    labels = {id(r): dict(c.spec.labels) for r, c in zip(rows, items)}
    methods = {"Label": lambda r, key: labels.get(id(r), {}).get(key, "")}     # Docker's {{.Label "k"}}
    text = output(rows, args.format, ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"],
                  lambda r: [r["ID"], r["Image"], r["Command"], r["RunningFor"], r["Status"], r["Ports"],
                             r["Names"]], headers={"ID": "CONTAINER ID"}, methods=methods)
    if text:
        print(text)
    return 0


_cmd("ps", "List containers", _ps_setup)(cmd_ps)


# ---------------------------------------------------------------------------
# logs

def _parse_since(s: str, now: float) -> float:
    """--since / --until of logs: Docker's timestamps (rootless.cli.filters.timestamp)."""
    from rootless.cli.filters import timestamp_arg

    return timestamp_arg(s, now, "--since/--until")


def _logs_setup(p):
    p.add_argument("-f", "--follow", action="store_true", help="follow the output")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end (default all)")
    p.add_argument("--since", default="", help="only since: duration (10m), unix time or RFC 3339")
    p.add_argument("--until", default="", help="only until")
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("container", metavar="CONTAINER")


def cmd_logs(ctx, args) -> int:
    import json
    import time

    from rootless.runtime.state import parse_iso

    store = _store(ctx)
    ctr = store.lookup(args.container)
    now = time.time()
    since = _parse_since(args.since, now) if args.since else None
    until = _parse_since(args.until, now) if args.until else None
    if args.tail != "all":
        try:
            tail = int(args.tail)
        except ValueError:
            raise UsageError(f"invalid --tail {args.tail!r}", hint="a number or 'all'") from None
    else:
        tail = -1
    path = ctr.dir / "ctr.log"
    out, err = sys.stdout.buffer, sys.stderr.buffer

    def emit(lines: list[bytes]) -> None:
        for raw in lines:
            try:
                d = json.loads(raw)
            except ValueError:
                continue
            t = d.get("time", "")
            if since is not None or until is not None:
                ts = parse_iso(t)
                if since is not None and ts < since:
                    continue
                if until is not None and ts > until:
                    continue
            text = d.get("log", "")
            if args.timestamps:
                text = f"{t} {text}"
            (err if d.get("stream") == "stderr" else out).write(text.encode("utf-8", "replace"))
        out.flush()
        err.flush()

    try:
        f = open(path, "rb")
    except FileNotFoundError:
        f = None
    pos = 0
    if f is not None:
        data = f.read()
        pos = len(data)
        lines = data.split(b"\n")
        rest = lines.pop()
        pos -= len(rest)
        if tail >= 0:
            lines = lines[-tail:] if tail else []
        emit(lines)
    if not args.follow:
        return 0
    while True:
        if f is None:
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                pass
        if f is not None:
            f.seek(pos)
            data = f.read()
            if data:
                lines = data.split(b"\n")
                rest = lines.pop()
                pos += len(data) - len(rest)
                emit(lines)
                continue
        try:
            c = store.load(ctr.id)
        except ContainerNotFound:
            return 0
        if not c.state.running and c.state.status != "starting":
            if f is not None:
                f.seek(pos)
                emit([x for x in f.read().split(b"\n") if x])
            return 0
        time.sleep(0.1)


_cmd("logs", "Fetch the logs of a container", _logs_setup)(cmd_logs)


# ---------------------------------------------------------------------------
# exec

def _exec_setup(p):
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE")
    p.add_argument("-u", "--user", default="", help="user[:group] or uid[:gid]")
    p.add_argument("-w", "--workdir", default="", help="working directory inside the container")
    p.add_argument("--privileged", action="store_true", help="(accepted; rootless has no more privileges)")
    p.add_argument("--detach-keys", default="ctrl-p,ctrl-q")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")


def cmd_exec(ctx, args) -> int:
    from rootless.runtime.execute import error_from, exec_in, read_all
    from rootless.runtime.plan import Process
    from rootless.runtime.spec import CAP_NUMBERS, merge_env, parse_env, parse_env_file_text

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("exec needs a command", hint="rootless exec CONTAINER COMMAND [ARG...]")
    _check_tty(args.tty, args.interactive and not args.detach)
    ctr = _store(ctx).lookup(args.container)
    if not ctr.state.running:
        raise ContainerStateError(f"container {args.container} is not running",
                                  hint=f"start it first: rootless start {args.container}", exit_code=1)
    spec = ctr.spec
    extra = []
    for f in args.env_file:
        with open(f) as fh:
            extra += parse_env_file_text(fh.read(), f, ctx.env)
    extra += parse_env(args.env, ctx.env)
    env = merge_env(spec.env, extra)
    if args.tty and not any(e.startswith("TERM=") for e in env):
        env = env + ("TERM=xterm",)
    proc = Process(tuple(command), env, args.workdir or spec.working_dir or "/", args.user or spec.user,
                   tuple(CAP_NUMBERS[c] for c in spec.caps), spec.no_new_privileges, False, args.tty)
    ctx_d: dict = {"stdio": (0 if args.interactive and not args.detach else None,
                             None if args.detach else 1, None if args.detach else 2),
                   "detach": args.detach}
    sock = None
    if args.tty and not args.detach:
        import socket

        from rootless.runtime.tty import get_winsize

        sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ctx_d["tty_sock"] = child_sock.detach()
        ctx_d["winsize"] = get_winsize(0)
    elif args.tty:
        proc = Process(proc.argv, proc.env, proc.cwd, proc.user, proc.caps, proc.no_new_privs, False, False)
    for fd in ctx_d["stdio"]:
        if fd is not None:
            os.set_inheritable(fd, True)
    child, err_r = exec_in(ctr.state.pid, proc, ctx_d)
    if sock is not None:
        os.close(ctx_d["tty_sock"])
        import socket

        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        master = fds[0] if fds else None
        sock.close()
    data = read_all(err_r)
    os.close(err_r)
    if data:
        os.waitpid(child, 0)
        raise error_from(data)
    if args.detach:
        os.waitpid(child, 0)
        return 0
    if args.tty and master is not None:
        from rootless.runtime.tty import parse_detach_keys, raw_terminal, relay

        stdin = 0 if args.interactive else os.open(os.devnull, os.O_RDONLY)
        with raw_terminal(stdin):
            how = relay(master, stdin=stdin, stdout=1, detach_keys=parse_detach_keys(args.detach_keys))
        os.close(master)
        if how == "detached":
            return 0
    else:
        import signal

        def fwd(n, _f):
            try:
                os.kill(child, n)
            except OSError:
                pass

        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(s, fwd)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


_cmd("exec", "Run a command in a running container", _exec_setup)(cmd_exec)


# ---------------------------------------------------------------------------
# inspect / wait / top / port

def _emulation_json(c, config) -> dict:
    """The emulation mode of the container (archsupport.emulation), for inspect: as recorded at
    create and at each start; recomputed for containers made before it was recorded."""
    if c.state.emulation:
        return dict(c.state.emulation)
    platform = c.spec.platform
    if not platform or config is None:
        return {"mode": "native"}
    from archsupport.emulation import choose
    from archsupport.platform import parse

    return choose(parse(platform), config).to_json()


def _inspect_json(c, config=None) -> dict:
    spec = c.spec
    st = c.state
    binds = [f"{m.source}:{m.target}" + (":ro" if m.readonly else "") for m in spec.mounts if m.kind == "bind"]
    mounts = []
    for m in spec.mounts:
        if m.kind == "tmpfs":
            continue
        mounts.append({"Type": m.kind, "Name": m.source if m.kind == "volume" else "",
                       "Source": m.source, "Destination": m.target, "Mode": "ro" if m.readonly else "",
                       "RW": not m.readonly})
    anon = list(c.anon_volumes)
    volumes_dir = c.dir.parent.parent / "volumes"     # <data root>/volumes (rootless.runtime.volumes)
    for m in mounts:
        if m["Type"] == "volume":
            if not m["Name"] and anon:
                m["Name"] = anon.pop(0)
            # Docker: Source is the volume's data directory on the host
            m.update(Source=str(volumes_dir / m["Name"] / "_data") if m["Name"] else "", Driver="local")
        else:
            m["Propagation"] = "rprivate"
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": spec.argv[0] if spec.argv else "",
        "Args": list(spec.argv[1:]),
        "State": {"Status": st.status, "Running": st.running, "Paused": False, "Restarting": False,
                  "OOMKilled": False, "Dead": False, "Pid": st.pid if st.running else 0,
                  "ExitCode": st.exit_code if st.exit_code is not None else 0, "Error": st.error,
                  "StartedAt": st.started_at or "0001-01-01T00:00:00Z",
                  "FinishedAt": st.finished_at or "0001-01-01T00:00:00Z"},
        "Image": c.image_id,
        "ImageName": c.image_ref,
        "Name": "/" + c.name,
        "RestartCount": 0,
        "Driver": "rootless",
        "Platform": "linux",
        "Mounts": mounts,
        "Config": {"Hostname": spec.hostname, "User": spec.user, "Env": list(spec.env),
                   "Cmd": list(spec.cmd) if spec.cmd else None,
                   "Entrypoint": list(spec.entrypoint) if spec.entrypoint else None,
                   "Image": c.image_ref, "WorkingDir": spec.working_dir, "Labels": dict(spec.labels),
                   "Tty": spec.tty, "OpenStdin": spec.interactive, "AttachStdin": spec.interactive,
                   "StopSignal": _signame(spec.stop_signal), "StopTimeout": spec.stop_timeout,
                   "Volumes": {v: {} for v in spec.image_volumes} or None,
                   **({"ExposedPorts": {p: {} for p in spec.exposed}} if getattr(spec, "exposed", ()) else {})},
        "HostConfig": {"Binds": binds or None, "AutoRemove": spec.auto_remove, "ReadonlyRootfs": spec.read_only,
                       "CapAdd": list(spec.cap_add) or None, "CapDrop": list(spec.cap_drop) or None,
                       "Init": spec.init, "NetworkMode": spec.network, "Memory": spec.memory,
                       "NanoCpus": int(spec.cpus * 1e9), "PidsLimit": spec.pids_limit or None,
                       "Tmpfs": {m.target: ",".join(m.options) for m in spec.mounts if m.kind == "tmpfs"} or None,
                       "SecurityOpt": ["no-new-privileges"] if spec.no_new_privileges else None,
                       "UsernsMode": spec.userns, "PortBindings": _net().port_bindings(spec),
                       "PublishAllPorts": getattr(spec, "publish_all", False), "Dns": list(spec.dns),
                       "DnsSearch": list(getattr(spec, "dns_search", ())),
                       "DnsOptions": list(getattr(spec, "dns_options", ())), "ExtraHosts": list(spec.add_hosts)},
        "NetworkSettings": _net().inspect_settings(spec, st.network, st.pid, st.running),
        "GraphDriver": {"Name": "overlay", "Data": {"UpperDir": str(c.dir / "upper"),
                                                    "WorkDir": str(c.dir / "work"),
                                                    "MergedDir": str(c.dir / "rootfs")}},
        "Rootless": {"Caps": list(spec.caps), "Platform": spec.platform, "Rootfs": spec.rootfs,
                     "Emulation": _emulation_json(c, config)},
    }


def _net():
    import rootless.network

    return rootless.network


def _signame(n: int) -> str:
    from rootless.runtime.spec import SIGNALS

    for k, v in SIGNALS.items():
        if v == n:
            return "SIG" + k
    return str(n)


def _inspect_setup(p):
    p.add_argument("-f", "--format", default=None, help="json (default) or a Go template")
    p.add_argument("--type", default="", choices=("", "container", "image"))
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("names", nargs="+", metavar="NAME")


def _print_inspect(items: list[dict], fmt: str | None) -> None:
    import json

    if not fmt or fmt == "json":
        print(json.dumps(items, indent=4))
    else:
        from rootless.cli.format import render

        for i in items:
            print(render(fmt, i))


def cmd_inspect(ctx, args) -> int:
    """Top-level inspect: a container, else an image (rootless.cli.images)."""
    store = _store(ctx)
    items = []
    status = 0
    for n in args.names:
        if args.type != "image":
            try:
                items.append(_inspect_json(store.lookup(n), ctx.config))
                continue
            except ContainerNotFound:
                if args.type == "container":
                    _print_err(f"no such container: {n}")
                    status = 1
                    continue
        got = _image_inspect(ctx, n)
        if got is None:
            _print_err(f"no such object: {n}")
            status = 1
        else:
            items.extend(got)
    if items:
        _print_inspect(items, args.format)
    elif status == 0:
        print("[]")
    return status


def _image_inspect(ctx, name: str):
    """The image module's inspect data for ``name`` (None when it is not an image)."""
    import contextlib
    import io
    import json

    try:
        from rootless.cli import images
    except ImportError:
        return None
    cmd = images.COMMANDS.get("image-inspect")
    if cmd is None:
        return None
    ns = cmd.parser("rootless inspect").parse_args([name])
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            code = cmd.handler(ctx, ns)
    except RootlessError:
        return None
    if code:
        return None
    try:
        data = json.loads(buf.getvalue())
    except ValueError:
        return None
    return data if isinstance(data, list) else [data]


def cmd_container_inspect(ctx, args) -> int:
    store = _store(ctx)
    items = []

    def one(ref):
        items.append(_inspect_json(store.lookup(ref), ctx.config))

    status = _each(args.names, one)
    if items:
        _print_inspect(items, args.format)
    return status


_cmd("inspect", "Display detailed information on containers or images", _inspect_setup)(cmd_inspect)
_cmd("container-inspect", "Display detailed information on one or more containers", _inspect_setup)(
    cmd_container_inspect)


def _wait_setup(p):
    p.add_argument("containers", nargs="+", metavar="CONTAINER")


def cmd_wait(ctx, args) -> int:
    from rootless.runtime import monitor

    store = _store(ctx)

    def one(ref):
        ctr = store.lookup(ref)
        st = ctr.state
        if st.status in ("running", "starting"):
            if st.status == "starting":
                monitor.wait_gone(st.monitor_pid, st.monitor_start, None)
                st = store.load(ctr.id).state
            if st.running:
                monitor.wait_gone(st.pid, st.pid_start, None)
            st = monitor.wait_recorded(store, ctr)
        print(st.exit_code if st.exit_code is not None else 0)

    return _each(args.containers, one)


_cmd("wait", "Block until containers stop, then print their exit codes", _wait_setup)(cmd_wait)


def _top_setup(p):
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]")


def cmd_top(ctx, args) -> int:
    """Docker's top: ``ps -ef`` columns by default, else the host's ps with these options, kept
    to the container's processes; users named from the container's /etc/passwd (rootless.runtime.top)."""
    from rootless.cli.format import table
    from rootless.runtime.top import Users, container_pids, default_rows, name_users, split_ps

    ctr = _store(ctx).lookup(args.container)
    if not ctr.state.running:
        raise ContainerStateError(f"container {args.container} is not running", exit_code=1)
    pids = container_pids(ctr.state.pid)
    users = Users.of(ctr.state.pid)
    if args.ps_args:
        from rootless import hosttools

        cp = hosttools.run(["ps", *args.ps_args], "ps (listing the container's processes)", check=False)
        try:
            hdr, rows = split_ps(cp.stdout.decode(errors="replace"), pids)
        except ValueError:
            raise UsageError("the ps options must include the PID column", hint="e.g. rootless top CTR -ef") from None
        if not hdr:
            err = cp.stderr.decode(errors="replace").strip().splitlines()
            raise UsageError(f"ps {' '.join(args.ps_args)} failed" + (f": {err[0]}" if err else ""),
                             exit_code=1)
        numeric_uid = any("uid" in a for a in args.ps_args)     # ps -o uid: numbers (-f: names)
        print(table(hdr, name_users(hdr, rows, users, numeric_uid)))
        return 0
    print(table(["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], default_rows(pids, users)))
    return 0


_cmd("top", "Display the running processes of a container", _top_setup)(cmd_top)


def _port_setup(p):
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("port", nargs="?", default=None, metavar="PRIVATE_PORT[/PROTO]")


def cmd_port(ctx, args) -> int:
    from rootless.network.ports import format_port_lines

    ctr = _store(ctx).lookup(args.container)
    mappings = _port_mappings(ctr) if ctr.state.running else []
    which = None
    if args.port:
        num, _, proto = args.port.partition("/")
        if not num.isdigit() or proto not in ("", "tcp", "udp"):
            raise UsageError(f"invalid port {args.port!r}", hint="use PORT or PORT/tcp or PORT/udp")
        which = f"{int(num)}/{proto or 'tcp'}"
    lines = format_port_lines(mappings, which)
    for line in lines:
        print(line)
    if which and not lines:
        _print_err(f"no public port '{args.port}' published for {args.container}")
        return 1
    return 0


_cmd("port", "List port mappings of a container", _port_setup)(cmd_port)


# ---------------------------------------------------------------------------
# cp

def _cp_setup(p):
    p.add_argument("-a", "--archive", action="store_true", help="keep uid/gid (default: owned by root inside)")
    p.add_argument("-L", "--follow-link", action="store_true", help="follow a symlink in SRC")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")


def _split_cp(arg: str):
    if arg.startswith("/") or arg.startswith(".") or ":" not in arg:
        return None, arg
    name, _, path = arg.partition(":")
    return name, path


def cmd_cp(ctx, args) -> int:
    from rootless.runtime import copy

    src_c, src = _split_cp(args.src)
    dst_c, dst = _split_cp(args.dest)
    if (src_c is None) == (dst_c is None):
        raise UsageError("copying between containers or within the host is not supported",
                         hint="one of SRC and DEST must be CONTAINER:PATH")
    store = _store(ctx)
    if src_c is not None:
        ctr = store.lookup(src_c)
        copy.copy_out(ctx.config, ctr, src, dst, follow=args.follow_link)
    else:
        ctr = store.lookup(dst_c)
        copy.copy_in(ctx.config, ctr, src, dst, archive=args.archive, follow=args.follow_link)
    return 0


_cmd("cp", "Copy files between a container and the host", _cp_setup)(cmd_cp)

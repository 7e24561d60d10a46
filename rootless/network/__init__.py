"""Container networking: the hook the runtime calls.

``plan_network(opts, config)`` is pure: it decides the mode and the files;
``start(plan, pid, state_dir)`` runs in the container's monitor after the
container's network namespace exists and before the command is exec'ed;
``stop(handle_state)`` when the container stops. Modes:

* ``pasta`` (default when installed) / ``slirp4netns``: user-mode networking
  into a new network namespace (no ports published here: see the ports
  module of this package);
* ``none``: a new network namespace with only the loopback interface up;
* ``host``: the host's network namespace (and its /etc/hosts and
  /etc/resolv.conf).
"""

from __future__ import annotations

import os
from rootless.errors import NetworkError, UsageError
from rootless.runtime.record import Record

PASTA_DNS_FORWARD = "169.254.1.1"
SLIRP_DNS = "10.0.2.3"
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_ADDR = "10.0.2.100"


class NetworkPlan(Record):
    mode: str                                   # pasta | slirp4netns | none | host
    ports: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()                   # --dns servers (else from the host)
    hosts: tuple[tuple[str, str], ...] = ()     # (name, ip) from --add-host
    aliases: tuple[str, ...] = ()
    host_resolv: str = ""                       # the host's resolv.conf text (read by plan_network)
    host_hosts: str = ""                        # the host's /etc/hosts (for --network host)
    exe: str = ""                               # pasta / slirp4netns path
    extra: dict = {}

    @property
    def new_netns(self) -> bool:
        return self.mode != "host"

    def nameservers(self) -> list[str]:
        if self.dns:
            return list(self.dns)
        host_ns = [line.split()[1] for line in self.host_resolv.splitlines()
                   if line.strip().startswith("nameserver") and len(line.split()) > 1]
        if self.mode == "host":
            return host_ns
        if self.mode == "slirp4netns":
            return [SLIRP_DNS]
        usable = [n for n in host_ns if not n.startswith("127.") and n != "::1"]
        if self.mode == "pasta":
            return usable or [PASTA_DNS_FORWARD]
        return usable

    def etc_files(self, hostname: str) -> dict[str, str]:
        """The contents of /etc/hosts, /etc/hostname and /etc/resolv.conf for the container."""
        if self.mode == "host":
            hosts = self.host_hosts or "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            hname = os.uname().nodename
        else:
            hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            if hostname:
                hosts += f"127.0.1.1\t{hostname}\n"
            hname = hostname
        for name, ip in self.hosts:
            hosts += f"{ip}\t{name}\n"
        search = [line for line in self.host_resolv.splitlines()
                  if line.strip().startswith(("search", "options", "domain"))]
        resolv = "".join(f"nameserver {n}\n" for n in self.nameservers()) + "".join(s + "\n" for s in search)
        return {"/etc/hosts": hosts, "/etc/hostname": (hname or "") + "\n", "/etc/resolv.conf": resolv}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _backend(config) -> tuple[str, str]:
    from rootless import hosttools

    want = getattr(config, "network_backend", "auto")
    for b in (("pasta", "slirp4netns") if want == "auto" else (want,)):
        exe = hosttools.find(b)
        if exe:
            return b, exe
    return "", ""


def plan_network(opts, config) -> NetworkPlan:
    """Decide the network of a container from its options (``network``, ``dns``, ``add_hosts``, ``publish``)."""
    mode = getattr(opts, "network", "") or "default"
    dns = tuple(getattr(opts, "dns", ()) or ())
    hosts = []
    for h in getattr(opts, "add_hosts", ()) or ():
        name, sep, ip = h.partition(":")
        if not sep or not name or not ip:
            raise UsageError(f"invalid --add-host {h!r}", hint="use --add-host NAME:IP")
        hosts.append((name, ip))
    ports = tuple(getattr(opts, "publish", ()) or ())
    resolv = _read("/etc/resolv.conf")
    if mode in ("none", "host"):
        if ports:
            raise UsageError(f"cannot publish ports with --network {mode}")
        return NetworkPlan(mode, (), dns, tuple(hosts), host_resolv=resolv,
                           host_hosts=_read("/etc/hosts") if mode == "host" else "")
    if mode in ("default", "bridge", "pasta", "slirp4netns", "private"):
        if mode in ("pasta", "slirp4netns"):
            from rootless import hosttools

            exe = hosttools.find(mode)
            backend = mode if exe else ""
        else:
            backend, exe = _backend(config)
        if not backend:
            raise NetworkError("no user-mode network backend: neither pasta nor slirp4netns is installed",
                               hint="apt-get install passt (or slirp4netns), or use --network none")
        if ports:
            raise NetworkError("publishing ports (-p) is not available in this build",
                               hint="use --network host to reach the container's ports")
        return NetworkPlan(backend, ports, dns, tuple(hosts), host_resolv=resolv, exe=exe)
    raise UsageError(f"unknown network mode {mode!r}", hint="use default, none, host, pasta or slirp4netns")


def start(plan: NetworkPlan, pid: int, state_dir) -> dict:
    """Connect the network namespace of ``pid``; returns what ``stop`` needs (kept in state.json)."""
    if plan.mode in ("none", "host"):
        return {"mode": plan.mode}
    if plan.mode == "pasta":
        return _start_pasta(plan, pid, str(state_dir))
    if plan.mode == "slirp4netns":
        return _start_slirp(plan, pid, str(state_dir))
    raise NetworkError(f"unknown network mode {plan.mode}")


def _start_pasta(plan: NetworkPlan, pid: int, state_dir: str) -> dict:
    from rootless import hosttools

    pidfile = os.path.join(state_dir, "pasta.pid")
    argv = [plan.exe, "--config-net", "--quiet", "--pid", pidfile,
            "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw"]
    if PASTA_DNS_FORWARD in plan.nameservers():
        argv += ["--dns-forward", PASTA_DNS_FORWARD]
    argv.append(str(pid))
    try:
        hosttools.spawn_wait(argv, "pasta (user-mode network for the container)")
    except NetworkError:
        raise
    except Exception as e:  # HelperFailed -> keep the message, add the fix
        from rootless.errors import HelperFailed

        if isinstance(e, HelperFailed):
            raise NetworkError(e.message, hint="check /dev/net/tun (mode 0666) with `rootless doctor`, "
                                               "or use --network none") from None
        raise
    try:
        with open(pidfile) as f:
            helper = int(f.read().strip())
    except (OSError, ValueError):
        helper = 0
    from rootless.runtime.state import proc_start_time

    return {"mode": "pasta", "helper_pid": helper, "helper_start": proc_start_time(helper) if helper else None}


def _start_slirp(plan: NetworkPlan, pid: int, state_dir: str) -> dict:
    # slirp4netns stays in the foreground: start it and wait for its ready fd
    r, w = os.pipe()
    os.set_inheritable(w, True)
    argv = [plan.exe, "--configure", "--mtu=65520", "--disable-host-loopback", f"--ready-fd={w}",
            str(pid), "tap0"]
    try:
        helper = os.posix_spawn(argv[0], argv, os.environ,
                                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                              (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)],
                                setsid=True)
    except OSError as e:
        os.close(r)
        os.close(w)
        raise NetworkError(f"cannot start slirp4netns: {e.strerror}", hint="apt-get install slirp4netns") from None
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    if not ok:
        raise NetworkError("slirp4netns failed to configure the container's network",
                           hint="check /dev/net/tun with `rootless doctor`, or use --network none")
    from rootless.runtime.state import proc_start_time

    return {"mode": "slirp4netns", "helper_pid": helper, "helper_start": proc_start_time(helper),
            "child": True}


def stop(handle_state: dict) -> None:
    """Stop the helper of a container's network (idempotent)."""
    if not handle_state:
        return
    pid = handle_state.get("helper_pid") or 0
    if not pid:
        return
    from rootless.runtime.state import alive

    if alive(pid, handle_state.get("helper_start")):
        import signal

        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    if handle_state.get("child"):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

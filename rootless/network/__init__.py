"""Container networking: the hook the runtime calls.

``plan_network(opts, config)`` is pure (but for reading small host files and
the network definitions): it decides the mode, the published ports, the
names and the files; ``join(plan, config, container_id)`` (in the monitor,
before the container's namespaces are made) says which existing user and
network namespaces the container must join; ``start(plan, pid, state_dir,
...)`` runs in the container's monitor after the container's network
namespace exists and before the command is exec'ed; ``stop(handle_state)``
when the container stops (frees the host ports). Modes:

* ``pasta`` (default when installed) / ``slirp4netns``: user-mode networking
  into a new network namespace; ``-p`` TCP through our splice relay
  (:mod:`rootless.network.relay`: the server sees the client's address), UDP
  through pasta's ``-u`` or slirp4netns's API (``add_hostfwd``);
* ``none``: a new network namespace with only the loopback interface up;
* ``host``: the host's network namespace (and its /etc/hosts and
  /etc/resolv.conf);
* ``container:NAME|ID``: the network (and user) namespace of a running
  container;
* ``NAME``: a user-defined network (``network create``): the container joins
  the per-user network namespace's user namespace and gets a veth on the
  network's bridge, its name and aliases in the network's DNS
  (:mod:`rootless.network.rootlessns`).

``host.containers.internal`` and ``host.docker.internal`` reach the host's
loopback (Config.host_containers_internal, on by default): pasta maps its
gateway address (or, when it knows ``--map-host-loopback``, 169.254.1.2) to
the host's 127.0.0.1; slirp4netns's 10.0.2.2 is the host's loopback.
"""

from __future__ import annotations

import os

from rootless.errors import NetworkError, UsageError
from rootless.record import Record

PASTA_DNS_FORWARD = "169.254.1.1"
PASTA_HOST_LOOPBACK = "169.254.1.2"
SLIRP_DNS = "10.0.2.3"
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_ADDR = "10.0.2.100"
HOST_NAMES = ("host.containers.internal", "host.docker.internal")
BUILTIN_MODES = ("default", "bridge", "pasta", "slirp4netns", "private", "none", "host")


class NetworkPlan(Record):
    mode: str                                   # pasta | slirp4netns | none | host | container | bridge
    ports: tuple[str, ...] = ()                 # the -p specs as given
    dns: tuple[str, ...] = ()                   # --dns servers (else from the host / the network)
    hosts: tuple[tuple[str, str], ...] = ()     # (name, ip) from --add-host
    aliases: tuple[str, ...] = ()               # --network-alias
    host_resolv: str = ""                       # the host's resolv.conf text (read by plan_network)
    host_hosts: str = ""                        # the host's /etc/hosts (for --network host)
    exe: str = ""                               # pasta / slirp4netns path
    extra: dict = {}
    publish: tuple = ()                         # PortMappings (host port 0 = chosen at start)
    networks: tuple = ()                        # user-defined networks (Network objects), first = primary
    ip: str = ""                                # --ip on the first user-defined network
    container: str = ""                         # container:NAME|ID -> NAME|ID
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    host_gateway: str = ""                      # what host.containers.internal resolves to ("" = no entry)
    map_host_loopback: bool = False             # pasta >= 2024: --map-host-loopback PASTA_HOST_LOOPBACK
    runtime_dir: str = ""
    data_root: str = ""                         # to name the container that holds a host port
    warnings: tuple[str, ...] = ()              # for the CLI to show (the options it ignored)

    @property
    def new_netns(self) -> bool:
        return self.mode not in ("host", "container")

    def nameservers(self) -> list[str]:
        if self.mode == "bridge":
            # Docker: the embedded server stays the container's resolver (or container names would stop
            # resolving); --dns becomes its upstream for this container
            dns_nets = [n for n in self.networks if n.dns]
            if dns_nets:
                return [dns_nets[0].gateway]
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
            # like Podman: pasta's forwarder first (it answers from the host's own resolver, even one on
            # the host's loopback), then the host's other resolvers
            return [PASTA_DNS_FORWARD] + [n for n in usable if n != PASTA_DNS_FORWARD]
        return usable

    def search_domains(self) -> list[str]:
        if self.dns_search:
            return [d for d in self.dns_search if d != "."]
        out = []
        for line in self.host_resolv.splitlines():
            p = line.split()
            if p and p[0] in ("search", "domain"):
                out += p[1:]
        if self.mode == "bridge" and any(n.dns for n in self.networks):
            from rootless.network.networks import DNS_DOMAIN

            out = [DNS_DOMAIN] + [d for d in out if d != DNS_DOMAIN]
        return out

    def resolv_options(self) -> list[str]:
        if self.dns_options:
            return list(self.dns_options)
        out = []
        for line in self.host_resolv.splitlines():
            p = line.split()
            if p and p[0] == "options":
                out += p[1:]
        return out

    def etc_files(self, hostname: str, own_ip: str = "") -> dict[str, str]:
        """The contents of /etc/hosts, /etc/hostname and /etc/resolv.conf for the container.

        ``own_ip`` (known once a user-defined network is attached) maps the
        hostname to the container's address instead of 127.0.1.1 (with
        slirp4netns its fixed 10.0.2.100, as Podman does).
        """
        if not own_ip and self.mode == "slirp4netns":
            own_ip = SLIRP_ADDR
        if self.mode == "host":
            hosts = self.host_hosts or "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            hname = os.uname().nodename
        else:
            hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            if hostname:
                names = " ".join(dict.fromkeys([hostname, *self.extra.get("own_names", ())]))
                hosts += f"{own_ip or '127.0.1.1'}\t{names}\n"
            hname = hostname
        if self.host_gateway and self.mode != "host":
            hosts += f"{self.host_gateway}\t{' '.join(HOST_NAMES)}\n"
        for name, ip in self.hosts:
            hosts += f"{ip}\t{name}\n"
        resolv = "".join(f"nameserver {n}\n" for n in self.nameservers())
        search = self.search_domains()
        if search:
            resolv += "search " + " ".join(search) + "\n"
        opts = self.resolv_options()
        if opts:
            resolv += "options " + " ".join(opts) + "\n"
        return {"/etc/hosts": hosts, "/etc/hostname": (hname or "") + "\n", "/etc/resolv.conf": resolv}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


BACKENDS = ("pasta", "slirp4netns")


def _find_backend(want: str) -> tuple[str, str]:
    """(name, path) of ``want`` ("auto": pasta, else slirp4netns); ("", "") if not installed."""
    from rootless import hosttools

    for b in (BACKENDS if want == "auto" else (want,)):
        exe = hosttools.find(b)
        if exe:
            return b, exe
    return "", ""


def _backend(config) -> tuple[str, str]:
    """(name, path) of the configured user-mode backend (auto: pasta, else slirp4netns); ("", "") if missing."""
    return _find_backend(getattr(config, "network_backend", "auto"))


def backend_missing(want: str, explicit: bool = False) -> NetworkError:
    """The one error for a missing backend, naming the tool and its package.

    ``want`` is "auto" or the backend asked for, by ``--network NAME``
    (``explicit``) or by ``[network] backend`` in the configuration.
    """
    from rootless import hosttools

    if want == "auto":
        return NetworkError("no user-mode network backend: neither pasta nor slirp4netns is installed",
                            hint="install one: apt-get install passt (or slirp4netns), or use --network none")
    hint = f"install it: apt-get install {hosttools.package_for(want)}"
    if explicit:
        return NetworkError(f"{want} not found: needed for --network {want}", hint=hint)
    return NetworkError(f"{want} not found: it is the network backend set in the configuration "
                        "([network] backend)", hint=hint + _instead(want))


def _instead(want: str) -> str:
    """', or set [network] backend = "auto" to use OTHER (installed)' when the other backend is there."""
    from rootless import hosttools

    other = next((b for b in BACKENDS if b != want and hosttools.find(b)), "")
    return f', or set [network] backend = "auto" to use {other} (installed)' if other else ""


def choose_backend(config, mode: str = "default") -> tuple[str, str]:
    """(name, path) of the user-mode backend for ``--network MODE`` (pasta / slirp4netns: that one;
    otherwise the configured one, auto: pasta, else slirp4netns). NetworkError (125) when missing."""
    from rootless import hosttools

    if mode in BACKENDS:
        exe = hosttools.find(mode)
        if not exe:
            raise backend_missing(mode, explicit=True)
        return mode, exe
    name, exe = _backend(config)
    if not name:
        raise backend_missing(getattr(config, "network_backend", "auto"))
    return name, exe


def backend_name(config) -> str:
    """The backend ``run`` would use, for display: the configured one even when it is
    missing (``run`` then fails naming its package); "" when none is installed."""
    name, _ = _backend(config)
    if name:
        return name
    want = getattr(config, "network_backend", "auto")
    return "" if want == "auto" else want


_pasta_features: dict[tuple[str, float], bool] = {}


def pasta_maps_host_loopback(exe: str) -> bool:
    """Does this pasta know ``--map-host-loopback`` (passt 2024_08 and later)?"""
    try:
        real = os.path.realpath(exe)
        key = (real, os.stat(real).st_mtime)
    except OSError:
        return False
    if key not in _pasta_features:
        try:
            with open(real, "rb") as f:
                _pasta_features[key] = b"map-host-loopback" in f.read()
        except OSError:
            _pasta_features[key] = False
    return _pasta_features[key]


def host_default_gateway() -> str:
    """The IPv4 gateway of the host's default route (pasta copies it into the namespace).

    /proc/net/route, no socket module: this is on the start-up path."""
    best = None
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                p = line.split()
                if len(p) >= 8 and p[1] == "00000000" and p[7] == "00000000" and int(p[3], 16) & 2:
                    metric = int(p[6])
                    gw = ".".join(str(b) for b in int(p[2], 16).to_bytes(4, "little"))
                    if best is None or metric < best[0]:
                        best = (metric, gw)
    except (OSError, ValueError):
        return ""
    return best[1] if best else ""


def _opt(opts, name: str, default=()):
    v = getattr(opts, name, None)
    return default if v is None else v


def _parse_hosts(items) -> list[tuple[str, str]]:
    import ipaddress

    out = []
    for h in items or ():
        name, sep, ip = h.partition(":")
        if not sep:  # Docker also accepts NAME=IP
            name, sep, ip = h.partition("=")
        if not sep or not name or not ip:
            raise UsageError(f"invalid --add-host {h!r}", hint="use --add-host NAME:IP (or NAME:host-gateway)")
        if ip != "host-gateway":
            try:
                ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                raise UsageError(f"invalid --add-host {h!r}: {ip!r} is not an IP address",
                                 hint="use --add-host NAME:IP (or NAME:host-gateway)") from None
        out.append((name, ip.strip("[]")))
    return out


def _parse_publish(opts) -> tuple:
    if not _opt(opts, "publish") and not _opt(opts, "publish_all", False):
        return ()
    from rootless.network.ports import check_conflicts, merge, parse_publish, publish_all

    mappings = []
    for p in _opt(opts, "publish"):
        mappings += parse_publish(p)
    if _opt(opts, "publish_all", False):
        mappings = merge(mappings, publish_all(list(_opt(opts, "exposed", ()))))
    check_conflicts(mappings)
    return tuple(mappings)


OVERRIDES = "networks.json"   # containers/<id>/networks.json: what `network connect/disconnect` changed


def read_overrides(container_dir) -> dict:
    """``{"connect": {NAME: {"aliases": [...], "ip": ""}}, "disconnect": [NAME...]}`` (empty when none)."""
    import json

    if not container_dir:
        return {}
    try:
        with open(os.path.join(str(container_dir), OVERRIDES)) as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write_overrides(container_dir, data: dict) -> None:
    import json

    path = os.path.join(str(container_dir), OVERRIDES)
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def effective_mode(mode: str, overrides: dict) -> tuple[str, dict]:
    """The network mode after `network connect/disconnect`: (mode, {name: {"aliases", "ip"}} of the extras)."""
    mode = (mode or "default").strip()
    conn = overrides.get("connect") or {}
    gone = set(overrides.get("disconnect") or [])
    if mode in BUILTIN_MODES or mode.startswith("container:"):
        names = [] if conn and mode in ("default", "bridge", "none") else None
    else:
        names = [m.strip() for m in mode.split(",") if m.strip()]
    if names is None:
        return mode, {}
    names = [n for n in names if n not in gone]
    for n in conn:
        if n not in names and n not in gone:
            names.append(n)
    if not names:
        return "none", {}
    return ",".join(names), {n: conn[n] for n in names if n in conn}


def plan_network(opts, config, container_dir=None) -> NetworkPlan:
    """Decide the network of a container from its options.

    Reads ``network``, ``publish``, ``publish_all`` + ``exposed``, ``dns``,
    ``dns_search``, ``dns_options``, ``add_hosts``, ``network_aliases``,
    ``ip`` of ``opts`` (a ContainerSpec or RunOptions), and what
    ``network connect/disconnect`` recorded in ``container_dir``.
    """
    mode, per_network = effective_mode(_opt(opts, "network", "") or "default", read_overrides(container_dir))
    dns = tuple(_opt(opts, "dns"))
    if dns:
        import ipaddress
    for d in dns:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise UsageError(f"invalid --dns {d!r}: not an IP address", hint="e.g. --dns 192.0.2.53") from None
    hosts = _parse_hosts(_opt(opts, "add_hosts"))
    aliases = tuple(_opt(opts, "network_aliases"))
    ip = _opt(opts, "ip", "") or ""
    publish = _parse_publish(opts)
    resolv = _read("/etc/resolv.conf")
    common = dict(dns=dns, aliases=aliases, host_resolv=resolv, dns_search=tuple(_opt(opts, "dns_search")),
                  dns_options=tuple(_opt(opts, "dns_options")), ports=tuple(_opt(opts, "publish")),
                  runtime_dir=str(config.runtime_dir), data_root=str(config.data_root))
    hci = bool(getattr(config, "host_containers_internal", True))

    def finish(plan_mode: str, gateway: str = "", **kw) -> NetworkPlan:
        hs = [(n, gateway if i == "host-gateway" else i) for n, i in hosts]
        if any(i == "" for _, i in hs):
            raise UsageError("--add-host NAME:host-gateway needs a network that reaches the host",
                             hint="leave it out with --network none, or use the host's address")
        return NetworkPlan(plan_mode, hosts=tuple(hs), host_gateway=gateway if hci else "", **common, **kw)

    if (aliases or ip) and mode in BUILTIN_MODES + ("",) or (aliases or ip) and mode.startswith("container:"):
        what = "--network-alias" if aliases else "--ip"
        raise UsageError(f"{what} works only on user-defined networks",
                         hint="create one (rootless network create NAME) and use --network NAME")
    if mode == "host":
        # Docker and Podman: a warning, and the ports are ignored (the container's ports are the host's)
        warn = ("Published ports are discarded when using host network mode",) if publish else ()
        common["ports"] = ()
        return finish(mode, "127.0.0.1", host_hosts=_read("/etc/hosts"), warnings=warn)
    if mode == "none":
        if publish:
            raise UsageError("cannot publish ports with --network none",
                             hint="the container has no network to publish from: leave out -p/-P")
        return finish(mode, "")
    if mode.startswith("container:"):
        target = mode[len("container:"):]
        if not target:
            raise UsageError("--network container: needs a container name or ID", hint="--network container:NAME")
        if publish:
            raise UsageError("cannot publish ports with --network container:...",
                             hint=f"publish them on the container {target}")
        if dns or hosts:
            raise UsageError("--dns and --add-host cannot be used with --network container:...",
                             hint=f"they belong to the container {target}")
        return NetworkPlan("container", container=target, host_resolv=resolv, runtime_dir=str(config.runtime_dir))
    if mode in ("default", "bridge", "pasta", "slirp4netns", "private"):
        backend, exe = choose_backend(config, mode)
        gw, maplo = "", False
        if backend == "pasta":
            maplo = pasta_maps_host_loopback(exe)
            gw = PASTA_HOST_LOOPBACK if maplo else host_default_gateway()
        else:
            gw = SLIRP_GATEWAY
        return finish(backend, gw, exe=exe, publish=publish, map_host_loopback=maplo and hci)
    # user-defined network(s): NAME[,NAME...]
    from rootless.network.networks import NetworkStore

    store = NetworkStore(config.data_root)
    nets = []
    for name in [m.strip() for m in mode.split(",") if m.strip()]:
        if name in BUILTIN_MODES or name.startswith("container:"):
            raise UsageError(f"--network {mode}: {name} cannot be combined with other networks")
        nets.append(store.get(name))     # NetworkNotFound: 125 with a hint
    if ip:
        nets[0].check_ip(ip)
    for n in nets:
        if per_network.get(n.name, {}).get("ip"):
            n.check_ip(per_network[n.name]["ip"])
    if getattr(opts, "userns", "") == "keep-id":
        raise UsageError("--userns keep-id cannot be combined with a user-defined network",
                         hint="leave out --userns keep-id, or use the default network")
    backend, exe = _backend(config)
    gw = ""
    info = None
    from rootless.network import rootlessns

    info = rootlessns.running(config.runtime_dir)
    if info is not None:
        gw = info.host_gateway
    elif backend == "pasta":
        gw = host_default_gateway()
    elif backend:
        gw = SLIRP_GATEWAY
    if all(n.internal for n in nets):
        gw = ""
    return finish("bridge", gw, networks=tuple(nets), ip=ip, publish=publish,
                  extra={"per_network": per_network} if per_network else {})


# ---------------------------------------------------------------------------
# join: which namespaces the container enters instead of making its own

class Join(Record):
    userns: str = ""     # path of a user namespace to join (setns) instead of creating one
    netns: str = ""      # path of a network namespace to join instead of creating one
    extra: dict = {}


def join(plan: NetworkPlan, config, container_id: str) -> Join:
    """Namespaces the container joins (in the monitor, before the container's namespaces exist).

    * a user-defined network: the user namespace of the per-user network
      namespace (started here if needed); a new network namespace is then
      owned by it, so a veth end can be put into it;
    * ``container:X``: X's user and network namespaces (X must run).
    """
    if plan.mode == "bridge":
        from rootless.network import rootlessns

        info = rootlessns.ensure_holder(config, reserve=container_id)
        return Join(userns=info.userns, extra={"holder": info.pid, "host_gateway": info.host_gateway})
    if plan.mode == "container":
        from rootless.runtime.state import alive

        ctr = _lookup(config, plan.container)
        st = ctr.state.truth() if hasattr(ctr.state, "truth") else ctr.state
        if not alive(st.pid, st.pid_start):
            raise NetworkError(f"cannot join the network of container {plan.container}: it is not running",
                               hint=f"start it first: rootless start {plan.container}")
        if ctr.id == container_id:
            raise UsageError("a container cannot join its own network namespace")
        return Join(userns=f"/proc/{st.pid}/ns/user", netns=f"/proc/{st.pid}/ns/net",
                    extra={"container": ctr.id, "dir": str(ctr.dir)})
    return Join()


def _lookup(config, ref: str):
    from rootless.runtime.state import ContainerStore

    return ContainerStore(config).lookup(ref)


# ---------------------------------------------------------------------------
# start / stop

def start(plan: NetworkPlan, pid: int, state_dir, container_id: str = "", name: str = "",
          joined: Join | None = None) -> dict:
    """Connect the network namespace of ``pid``; returns what ``stop`` needs (kept in state.json)."""
    state_dir = str(state_dir)
    if not container_id:
        container_id = os.path.basename(os.path.dirname(state_dir.rstrip("/")))
    if plan.mode in ("none", "host"):
        return {"mode": plan.mode}
    if plan.mode == "container":
        _copy_peer_files(joined, state_dir)
        return {"mode": "container", "container": (joined.extra.get("container") if joined else plan.container)}
    if plan.mode == "pasta":
        return _start_pasta(plan, pid, state_dir)
    if plan.mode == "slirp4netns":
        return _start_slirp(plan, pid, state_dir, container_id)
    if plan.mode == "bridge":
        return _start_bridge(plan, pid, state_dir, container_id, name)
    raise NetworkError(f"unknown network mode {plan.mode}")


def _copy_peer_files(joined: Join | None, state_dir: str) -> None:
    """container:X shares X's /etc/hosts and /etc/resolv.conf (written in place: they are bind mounts)."""
    if joined is None or not joined.extra.get("dir"):
        return
    for f in ("hosts", "resolv.conf"):
        text = _read(os.path.join(joined.extra["dir"], "userdata", f))
        if text:
            _rewrite(os.path.join(state_dir, f), text)


def _rewrite(path: str, text: str) -> None:
    """Replace a file's content in place (it may be bind-mounted into the container already)."""
    try:
        with open(path, "r+") as f:
            f.seek(0)
            f.write(text)
            f.truncate()
    except FileNotFoundError:
        with open(path, "w") as f:
            f.write(text)


def _allocate(plan: NetworkPlan) -> list:
    if not plan.publish:
        return []
    from rootless.network.ports import allocate

    return allocate(list(plan.publish), owner=_owner_of(plan))


def _owner_of(plan: NetworkPlan):
    """A function naming the rootless container that publishes a host port (for PortInUse)."""

    def owner(m) -> str | None:
        import json

        root = os.path.join(plan.data_root, "containers")
        try:
            ids = os.listdir(root)
        except OSError:
            return None
        for cid in ids:
            try:
                with open(os.path.join(root, cid, "state.json")) as f:
                    st = json.load(f)
                net = st.get("network") or {}
                if st.get("status") != "running":
                    continue
                for p in net.get("ports") or []:
                    if int(p.get("host_port", 0)) == m.host_port and p.get("protocol", "tcp") == m.protocol:
                        with open(os.path.join(root, cid, "config.json")) as f:
                            name = json.load(f).get("name") or cid[:12]
                        via = p.get("via") or net.get("mode")
                        helper = net.get("relay_pid") if via == "relay" else net.get("helper_pid")
                        how = {"pasta": f"pasta, pid {helper}", "slirp4netns": f"slirp4netns, pid {helper}",
                               "relay": f"port relay, pid {helper}",
                               "bridge": "the rootless network namespace"}.get(via, "")
                        return f"container {name}" + (f" ({how})" if how else "")
            except (OSError, ValueError, TypeError, AttributeError):
                continue
        return None

    return owner


def _pasta_port_args(mappings) -> list[str]:
    """pasta's -t/-u options: no TCP (every published TCP port goes through our relay, see
    :func:`_start_pasta`), UDP as published. UDP keeps the host port number inside: pasta (2023) loses
    the answers of a remapped UDP port, so the container's namespace redirects it (:func:`_udp_redirects`)."""
    udp = [m for m in mappings if m.protocol == "udp"]
    args = ["-t", "none"] + ([] if udp else ["-u", "none"])
    for m in udp:
        addr = f"{m.host_ip}/" if m.host_ip else ""
        args += ["-u", f"{addr}{m.host_port}:{m.host_port}"]
    return args


def _udp_redirects(pid: int, mappings) -> None:
    """In the container's network namespace: UDP to the host port number goes to the container port."""
    remap = [m for m in mappings if m.protocol == "udp" and m.host_port != m.container_port]
    if not remap:
        return
    from rootless import hosttools

    nft = hosttools.find("nft")
    if nft is None:
        raise NetworkError("publishing a UDP port under another number needs nft with pasta",
                           hint="apt-get install nftables, or publish UDP with the same port number on both "
                                "sides (-p 5353:5353/udp), or use --network slirp4netns")
    rules = "".join(f"  udp dport {m.host_port} redirect to :{m.container_port}\n" for m in remap)
    ruleset = ("table inet rootless-ports {\n chain out {\n  type nat hook output priority -100;\n" + rules +
               " }\n chain pre {\n  type nat hook prerouting priority -100;\n" + rules + " }\n}\n")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            from rootless import syscalls

            os.close(w)
            for ns, flag in (("user", syscalls.CLONE_NEWUSER), ("net", syscalls.CLONE_NEWNET)):
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
                syscalls.setns(fd, flag)
                os.close(fd)
            os.dup2(r, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.execv(nft, [nft, "-f", "-"])
        except BaseException:
            pass
        os._exit(code)
    os.close(r)
    os.write(w, ruleset.encode())
    os.close(w)
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise NetworkError("could not redirect the published UDP ports in the container's namespace (nft failed)",
                           hint="publish UDP with the same port number on both sides (-p 5353:5353/udp), "
                                "or use --network slirp4netns")


def _start_relay(plan: NetworkPlan, pid: int, mappings, state: dict) -> None:
    """TCP ports through our splice relay (see rootless.network.relay); fills state["relay_*"]."""
    if not mappings:
        return
    from rootless.network.ports import bind_host_ports
    from rootless.network.relay import start_relay
    from rootless.runtime.state import proc_start_time

    socks = bind_host_ports(mappings, _owner_of(plan))
    try:
        rpid = start_relay(pid, mappings, socks)
    finally:
        for s in socks:
            s.close()
    state["relay_pid"] = rpid
    state["relay_start"] = proc_start_time(rpid)


def _start_pasta(plan: NetworkPlan, pid: int, state_dir: str) -> dict:
    from rootless import hosttools
    from rootless.errors import HelperFailed

    ports = _allocate(plan)
    # every TCP port through our relay: pasta 2023 segfaults on a client that is not on loopback and shows
    # local clients as 127.0.0.1; the relay keeps each client's address and is faster. UDP: pasta
    relayed = [m for m in ports if m.protocol == "tcp"]
    state: dict = {"mode": "pasta", "ports": [dict(m.to_json(), via="relay" if m in relayed else "pasta")
                                              for m in ports]}
    try:
        _start_relay(plan, pid, relayed, state)
    except BaseException:
        _stop_relay(state)
        raise
    ports = [m for m in ports if m not in relayed]
    pidfile = os.path.join(state_dir, "pasta.pid")
    argv = [plan.exe, "--config-net", "--quiet", "--pid", pidfile, *_pasta_port_args(ports), "-T", "none",
            "-U", "none"]
    if plan.map_host_loopback:
        argv += ["--no-map-gw", "--map-host-loopback", PASTA_HOST_LOOPBACK]
    elif not plan.host_gateway:
        argv.append("--no-map-gw")
    if PASTA_DNS_FORWARD in plan.nameservers():
        argv += ["--dns-forward", PASTA_DNS_FORWARD]
    argv.append(str(pid))
    try:
        _udp_redirects(pid, ports)
        hosttools.spawn_wait(argv, "pasta (user-mode network for the container)")
    except HelperFailed as e:
        _stop_relay(state)
        _raise_port_error(plan, ports, e)
        raise NetworkError(e.message, hint="check /dev/net/tun (mode 0666) with `rootless doctor`, "
                                           "or use --network none") from None
    except BaseException:
        _stop_relay(state)
        raise
    try:
        with open(pidfile) as f:
            helper = int(f.read().strip())
    except (OSError, ValueError):
        helper = 0
    from rootless.runtime.state import proc_start_time

    state.update(helper_pid=helper, helper_start=proc_start_time(helper) if helper else None)
    return state


def _raise_port_error(plan: NetworkPlan, ports, e) -> None:
    """pasta could not bind a port (taken between our check and its bind): name it."""
    from rootless.network.ports import check_free

    text = (getattr(e, "stderr", "") or "") + str(e)
    if "bind" in text.lower() or "address already in use" in text.lower():
        for m in ports:
            check_free(m, _owner_of(plan))


def _slirp_api(sock_path: str, req: dict) -> dict:
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(json.dumps(req).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            data += b
    return json.loads(data or b"{}")


def _slirp_api_path(plan: NetworkPlan, container_id: str) -> str:
    """A short path for slirp4netns's API socket (unix socket paths are limited to 107 bytes)."""
    if plan.runtime_dir:
        from rootless.config import runtime_subdir

        p = os.path.join(runtime_subdir(plan.runtime_dir, "slirp"), f"{container_id[:12]}.sock")
        if len(p.encode()) <= 100:
            return p
    import tempfile

    return os.path.join(tempfile.mkdtemp(prefix="rl-slirp-"), "api.sock")    # private (0700)


def _start_slirp(plan: NetworkPlan, pid: int, state_dir: str, container_id: str = "") -> dict:
    all_ports = _allocate(plan)
    # TCP through our relay (slirp4netns's forwarding copies through its user-space TCP stack;
    # the server sees 10.0.2.2 with it anyway); UDP through slirp4netns's API
    relayed = [m for m in all_ports if m.protocol == "tcp"]
    ports = [m for m in all_ports if m.protocol != "tcp"]
    api = _slirp_api_path(plan, container_id or os.path.basename(os.path.dirname(state_dir))) if ports else ""
    if api:
        try:
            os.unlink(api)
        except FileNotFoundError:
            pass
    log = os.path.join(state_dir, "slirp4netns.log")
    # slirp4netns stays in the foreground: start it and wait for its ready fd
    r, w = os.pipe()
    os.set_inheritable(w, True)
    argv = [plan.exe, "--configure", "--mtu=65520", f"--ready-fd={w}"]
    if api:
        argv += ["--api-socket", api]
    if not plan.host_gateway:
        argv.append("--disable-host-loopback")
    argv += [str(pid), "tap0"]
    import signal

    try:
        helper = os.posix_spawn(argv[0], argv, os.environ,
                                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                              (os.POSIX_SPAWN_OPEN, 1, log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                               0o600),
                                              (os.POSIX_SPAWN_DUP2, 1, 2)],
                                setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
    except OSError as e:
        os.close(r)
        os.close(w)
        raise NetworkError(f"cannot start slirp4netns: {e.strerror}", hint="apt-get install slirp4netns") from None
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    from rootless.runtime.state import proc_start_time

    state = {"mode": "slirp4netns", "helper_pid": helper, "helper_start": proc_start_time(helper), "child": True,
             "ports": [dict(m.to_json(), via="relay" if m in relayed else "slirp4netns") for m in all_ports],
             "api": api}
    if not ok:
        stop(state)
        last = _read(log).strip().splitlines()[-1:] or [""]
        raise NetworkError("slirp4netns failed to configure the container's network" + (f": {last[0]}" if last[0]
                                                                                          else ""),
                           hint="check /dev/net/tun with `rootless doctor`, or use --network none")
    try:
        for m in ports:
            resp = _slirp_api(api, {"execute": "add_hostfwd", "arguments": {
                "proto": m.protocol, "host_addr": m.host_ip or "0.0.0.0", "host_port": m.host_port,
                "guest_addr": SLIRP_ADDR, "guest_port": m.container_port}})
            if "error" in resp:
                from rootless.network.ports import check_free

                check_free(m, _owner_of(plan))
                raise NetworkError(f"slirp4netns cannot publish {m.host_addr()}: "
                                   f"{resp['error'].get('desc', resp['error'])}")
        _start_relay(plan, pid, relayed, state)
    except BaseException:
        stop(state)
        raise
    return state


def _start_bridge(plan: NetworkPlan, pid: int, state_dir: str, container_id: str, name: str) -> dict:
    from rootless.network import rootlessns
    from rootless.network.ports import allocate

    ports = allocate(list(plan.publish), check=False) if plan.publish else []  # bind_host_ports checks
    runtime_dir = plan.runtime_dir
    cfg = _RuntimeOnly(runtime_dir)
    eps = []
    state = {"mode": "bridge", "runtime_dir": runtime_dir, "container_id": container_id, "networks": eps,
             "ports": [m.to_json() for m in ports]}
    try:
        per = plan.extra.get("per_network") or {}
        for i, n in enumerate(plan.networks):
            extra = per.get(n.name) or {}
            ep = rootlessns.attach(cfg, container_id=container_id, pid=pid, name=name or container_id[:12],
                                   network=n, ip=(plan.ip if i == 0 else None) or extra.get("ip") or None,
                                   aliases=tuple(plan.aliases if i == 0 else ()) + tuple(extra.get("aliases") or ()),
                                   ports=ports if i == 0 else (), ifname=f"eth{i}", default_route=True,
                                   owner=_owner_of(plan), dns=[(d, 53) for d in plan.dns])
            eps.append({"name": n.name, "id": n.id, **ep})
    except BaseException:
        stop(state)
        raise
    if eps:
        hostname = _read(os.path.join(state_dir, "hostname")).strip()
        files = plan.etc_files(hostname, own_ip=eps[0]["ip"])
        _rewrite(os.path.join(state_dir, "hosts"), files["/etc/hosts"])
    return state


def current_networks(network: str, container_dir) -> str:
    """The container's networks now (``ps {{.Networks}}``): its --network after `network connect/disconnect`."""
    return effective_mode(network or "default", read_overrides(container_dir))[0]


def peer_hostname(config, network: str) -> str:
    """With ``--network container:X``: X's hostname (Docker gives it to the container), else ""."""
    if not (network or "").startswith("container:"):
        return ""
    from rootless.errors import RootlessError

    try:
        return _lookup(config, network[len("container:"):]).spec.hostname or ""
    except (RootlessError, OSError, ValueError):
        return ""     # not there (yet): `start` says so


def renamed(config, container_id: str, name: str) -> None:
    """After ``rename``: the user-defined networks' DNS answers the new name (and no longer the old one),
    ``network inspect`` shows it (Docker does both)."""
    from rootless.network import rootlessns

    rootlessns.rename(config, container_id, name)


class _RuntimeOnly(Record):
    runtime_dir: str


def _stop_relay(state: dict) -> None:
    rpid = state.get("relay_pid") or 0
    if not rpid:
        return
    import signal

    from rootless.runtime.state import alive

    if alive(rpid, state.get("relay_start")):
        try:
            os.kill(rpid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.waitpid(rpid, 0)
    except ChildProcessError:
        pass


def stop(handle_state: dict) -> None:
    """Undo ``start``: stop the helper, detach from user-defined networks, free host ports (idempotent)."""
    if not handle_state:
        return
    _stop_relay(handle_state)
    if handle_state.get("mode") == "bridge":
        from rootless.network import rootlessns

        try:
            rootlessns.detach(_RuntimeOnly(handle_state["runtime_dir"]), handle_state["container_id"])
        except NetworkError:
            pass  # the holder is gone: nothing is attached any more
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
        if handle_state.get("api"):
            try:
                os.unlink(handle_state["api"])
            except OSError:
                pass
    elif any(p.get("via", "pasta") == "pasta" for p in handle_state.get("ports") or ()):
        # pasta daemonizes: wait until it has let go of the ports it published (only then:
        # it takes ~30 ms to exit, and a `run --rm` without ports should not wait for it)
        import time

        for _ in range(100):
            if not alive(pid, handle_state.get("helper_start")):
                break
            time.sleep(0.01)


# ---------------------------------------------------------------------------
# inspect

def port_bindings(spec) -> dict:
    """HostConfig.PortBindings: the -p requests as given (HostPort "" = chosen at start)."""
    from rootless.network.ports import parse_publish

    out: dict = {}
    for p in getattr(spec, "publish", ()) or ():
        try:
            ms = parse_publish(p)
        except UsageError:
            continue
        for m in ms:
            out.setdefault(m.key, []).append({"HostIp": m.host_ip, "HostPort": str(m.host_port or "")})
    return out


def inspect_settings(spec, state: dict, pid: int = 0, running: bool = False) -> dict:
    """NetworkSettings of ``inspect`` (Docker's shape) from the spec and the hook's state."""
    from rootless.network.ports import PortMapping, inspect_ports

    state = state or {}
    mode = getattr(spec, "network", "default") or "default"
    mappings = []
    for p in state.get("ports") or []:
        try:
            mappings.append(PortMapping.from_json(p))
        except (KeyError, ValueError, TypeError):
            continue
    exposed = list(getattr(spec, "exposed", ()) or ())
    out = {"Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
           "LinkLocalIPv6PrefixLen": 0, "Ports": inspect_ports(mappings, exposed) if running else {},
           "SandboxKey": f"/proc/{pid}/ns/net" if running and pid else "", "Gateway": "", "IPAddress": "",
           "IPPrefixLen": 0, "MacAddress": "", "Networks": {}, "Mode": mode}
    if not running:
        return out
    backend = state.get("mode", "")
    if backend in ("pasta", "slirp4netns"):
        if backend == "slirp4netns":
            out.update(Gateway=SLIRP_GATEWAY, IPAddress=SLIRP_ADDR, IPPrefixLen=24)
        out["Networks"][backend] = {"Aliases": None, "NetworkID": backend, "EndpointID": "",
                                    "Gateway": out["Gateway"], "IPAddress": out["IPAddress"],
                                    "IPPrefixLen": out["IPPrefixLen"], "MacAddress": ""}
    for i, ep in enumerate(state.get("networks") or []):
        # each endpoint's own aliases (what its network's DNS answers); a state from before they were
        # recorded: --network-alias went to the first network only
        aliases = ep["aliases"] if "aliases" in ep else \
            (list(getattr(spec, "network_aliases", ()) or ()) if i == 0 else [])
        net = {"Aliases": list(aliases) or None, "NetworkID": ep.get("id", ""),
               "EndpointID": ep.get("endpoint_id", ""), "Gateway": ep.get("gateway", ""),
               "IPAddress": ep.get("ip", ""), "IPPrefixLen": ep.get("prefixlen", 0), "MacAddress": ep.get("mac", ""),
               "DNSNames": None}
        out["Networks"][ep.get("name", f"net{i}")] = net
        if i == 0:
            out.update(Gateway=net["Gateway"], IPAddress=net["IPAddress"], IPPrefixLen=net["IPPrefixLen"],
                       MacAddress=net["MacAddress"])
    return out

"""The per-user network namespace that holds the user-defined networks.

Like Podman's "rootless-netns": one long-lived holder process per user
(per runtime directory) owns a user namespace ``H`` (the default id
mapping: root = the user, 1..N = the subordinate ids) and a network
namespace in it, where it builds

* one Linux bridge per network (``rl<id[:12]>``, the gateway address on it),
* one veth pair per attached container (the container's end, ``eth0``, is
  created directly in the container's network namespace),
* an nftables table ``inet rootless``: masquerade from the networks to the
  outside, no forwarding between two networks, none in or out of an
  ``--internal`` network,
* the embedded DNS server of each network on its gateway, port 53,
* the published ports: the host-side listening sockets (bound by the
  caller in the host's namespace, so the port is the caller's to get and
  the error is immediate) are handed over with SCM_RIGHTS; the holder
  accepts and connects to the container's address, and moves the bytes
  with splice(2) (no copy through user space),

and reaches the outside through pasta (else slirp4netns), started from the
host's namespaces against the holder's pid.

Containers on these networks must live in the user namespace ``H``: the
runtime joins it (setns) instead of creating its own, then unshares a new
network namespace, which is therefore owned by ``H``, so the holder (root in
``H``) may put a veth end into it. Podman shares one user namespace between
all rootless containers the same way.

Files in ``<runtime_dir>/netns/`` (mode 0700):
``lock`` (flock: taken by clients around every exchange, and by the holder
before it exits idle), ``holder.json`` (pid, start time, backend),
``ctl.sock`` (one JSON request per connection, fds with SCM_RIGHTS),
``endpoints.json`` (who is attached where; atomic), ``holder.log``.

Run ``python -m rootless.network.rootlessns DIR`` only through
:func:`ensure_holder`, which also writes the id maps of the new user
namespace.
"""

from __future__ import annotations

import array
import errno
import fcntl
import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rootless.errors import HostError, NetworkError, RootlessError
from rootless.network.networks import DNS_DOMAIN

IDLE_EXIT = float(os.environ.get("ROOTLESS_NETNS_IDLE", "30"))  # seconds without endpoints before exiting
MTU = 65520
PROTOCOL_VERSION = 1


def netns_dir(runtime_dir: Path) -> Path:
    """``<runtime_dir>/netns`` (the runtime directory checked: ours, not writable by others)."""
    from rootless.config import runtime_subdir

    return runtime_subdir(runtime_dir, "netns")


# ---------------------------------------------------------------------------
# Small helpers shared by both sides

def _proc_start(pid: int) -> str | None:
    """Start time of a live process (None when gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            return None
        return fields[19]
    except (OSError, ValueError, IndexError):
        return None


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _send_msg(sock: socket.socket, obj, fds: list[int] = ()) -> None:
    data = (json.dumps(obj) + "\n").encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def _recv_msg(sock: socket.socket, max_fds: int = 64) -> tuple[dict, list[int]]:
    buf = b""
    fds: list[int] = []
    while not buf.endswith(b"\n"):
        msg, anc, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(max_fds * 4))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(data[:len(data) - len(data) % a.itemsize])
                fds.extend(a)
        if not msg:
            break
        buf += msg
        if len(buf) > 1 << 20:
            raise ValueError("message too long")
    if not buf:
        raise ConnectionError("connection closed")
    return json.loads(buf), fds


def _env_upstreams() -> list[tuple[str, int]]:
    """ROOTLESS_NETNS_DNS="IP[:PORT],...": resolvers instead of the host's /etc/resolv.conf (tests, debugging)."""
    out = []
    for item in os.environ.get("ROOTLESS_NETNS_DNS", "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, port = item[1:].partition("]:")
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        else:
            host, port = item, ""
        out.append((host, int(port) if port.isdigit() else 53))
    return out


def mac_for(ip: str) -> str:
    """Docker's scheme: 02:42 and the four bytes of the IPv4 address."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


# ---------------------------------------------------------------------------
# Client side

@dataclass(frozen=True)
class HolderInfo:
    pid: int
    userns: str          # /proc/PID/ns/user: what containers on user networks join
    netns: str           # /proc/PID/ns/net: the holder's own network namespace
    backend: str         # pasta | slirp4netns
    host_gateway: str    # inside the holder namespace: the address that reaches the host's loopback


@contextmanager
def _locked(d: Path):
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_info(d: Path) -> HolderInfo | None:
    try:
        j = json.loads((d / "holder.json").read_text())
    except (OSError, ValueError):
        return None
    pid = j.get("pid")
    if not isinstance(pid, int) or _proc_start(pid) != j.get("start"):
        return None
    return HolderInfo(pid, f"/proc/{pid}/ns/user", f"/proc/{pid}/ns/net", j.get("backend", "pasta"),
                      j.get("host_gateway", ""))


@contextmanager
def _short_path(d: Path, name: str):
    """A path to d/name short enough for a unix socket (107 bytes): /proc/self/fd/N/name if needed."""
    p = str(d / name)
    if len(p.encode()) <= 100:
        yield p
        return
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def _connect(d: Path, timeout: float = 30.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        with _short_path(d, "ctl.sock") as p:
            s.connect(p)
    except BaseException:
        s.close()
        raise
    return s


def _request_unlocked(d: Path, op: str, fds: list[int] = (), timeout: float = 30.0, **kw) -> dict:
    try:
        s = _connect(d, timeout)
    except OSError as e:
        raise NetworkError(f"the rootless network namespace does not answer ({e.strerror})",
                           hint=f"see {d / 'holder.log'}") from None
    with s:
        _send_msg(s, {"op": op, **kw}, list(fds))
        try:
            resp, _ = _recv_msg(s)
        except (OSError, ValueError, ConnectionError) as e:
            raise NetworkError(f"the rootless network namespace failed during {op}: {e}",
                               hint=f"see {d / 'holder.log'}") from None
    if not resp.get("ok"):
        from rootless import errors

        cls = getattr(errors, resp.get("kind") or "", None)
        if not (isinstance(cls, type) and issubclass(cls, RootlessError)):
            cls = NetworkError
        raise cls(resp.get("error") or f"{op} failed", hint=resp.get("hint"))
    return resp


def request(runtime_dir: Path, op: str, fds: list[int] = (), **kw) -> dict:
    """One request to a running holder (NetworkError if there is none)."""
    d = netns_dir(runtime_dir)
    with _locked(d):
        if _read_info(d) is None:
            raise NetworkError("the rootless network namespace is not running")
        return _request_unlocked(d, op, fds, **kw)


def running(runtime_dir: Path) -> HolderInfo | None:
    return _read_info(netns_dir(runtime_dir))


def endpoints(runtime_dir: Path) -> dict:
    """``{network_id: {container_id: endpoint}}`` of a running holder, else {}."""
    d = netns_dir(runtime_dir)
    if _read_info(d) is None:
        return {}
    try:
        return json.loads((d / "endpoints.json").read_text()).get("networks", {})
    except (OSError, ValueError):
        return {}


def ensure_holder(config, *, reserve: str | None = None, timeout: float = 20.0) -> HolderInfo:
    """Start the holder unless it runs; ``reserve`` keeps it alive for a container about to attach."""
    d = netns_dir(config.runtime_dir)
    with _locked(d):
        info = _read_info(d)
        if info is not None:
            try:
                _request_unlocked(d, "reserve" if reserve else "ping", container_id=reserve, timeout=5)
                return info
            except RootlessError:
                _kill_stale(info.pid)
        info = _spawn(config, d, timeout)
        if reserve:
            _request_unlocked(d, "reserve", container_id=reserve)
        return info


def attach(config, *, container_id: str, pid: int, name: str, network, ip: str | None = None,
           aliases=(), ports=(), ifname: str = "eth0", default_route: bool = True, owner=None,
           dns=()) -> dict:
    """Connect the container process ``pid`` (in the holder's user namespace) to ``network``.

    ``ports`` are PortMappings with concrete host ports: bound here, handed
    to the holder. ``dns``: the container's own resolvers ((ip, port) pairs,
    its ``--dns``): the network's DNS server forwards its queries there. Returns the endpoint: ip, mac, prefixlen, gateway, ifname,
    dns (the DNS server's address or None), endpoint_id.
    """
    from rootless.network.ports import bind_host_ports

    socks = bind_host_ports(ports, owner)
    try:
        d = netns_dir(config.runtime_dir)
        with _locked(d):
            if _read_info(d) is None:
                raise NetworkError("the rootless network namespace is not running",
                                   hint="start the container again")
            return _request_unlocked(
                d, "attach", [s.fileno() for s in socks], container_id=container_id, pid=pid, name=name,
                network=network.to_json(), ip=ip, aliases=list(aliases), ifname=ifname,
                default_route=default_route, ports=[m.to_json() for m in ports],
                dns=[[h, int(p)] for h, p in dns])
    finally:
        for s in socks:
            s.close()


def detach(config, container_id: str, network_id: str | None = None) -> list[str]:
    """Disconnect a container (from one network, or all); no-op when no holder runs."""
    d = netns_dir(config.runtime_dir)
    with _locked(d):
        if _read_info(d) is None:
            return []
        return _request_unlocked(d, "detach", container_id=container_id, network_id=network_id)["detached"]


def rename(config, container_id: str, name: str) -> None:
    """A container was renamed: its new name in the DNS of its networks and in ``network inspect``
    (no-op when no holder runs or the container is attached nowhere)."""
    d = netns_dir(config.runtime_dir)
    with _locked(d):
        if _read_info(d) is None:
            return
        _request_unlocked(d, "rename", container_id=container_id, name=name)


def _kill_stale(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass


def choose_backend(config) -> tuple[str, str]:
    """The backend that connects the per-user namespace to the outside (the configured one, as for ``run``)."""
    from rootless.network import choose_backend as choose

    return choose(config)


def _spawn(config, d: Path, timeout: float) -> HolderInfo:
    import subprocess

    from rootless import hosttools
    from rootless.userns import apply_mapping, default_mapping

    backend, backend_path = choose_backend(config)
    nft = hosttools.find("nft")
    if nft is None:
        raise HostError("nft not found: needed for user-defined networks (NAT and isolation in the "
                        "rootless network namespace)", hint="install it: apt-get install nftables")
    for f in ("holder.json", "ctl.sock", "endpoints.json"):
        try:
            os.unlink(d / f)
        except FileNotFoundError:
            pass
    r_status, w_status = os.pipe()
    r_go, w_go = os.pipe()
    log = open(d / "holder.log", "ab")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                    env.get("PYTHONPATH", "")] if p)
    args = [sys.executable, "-m", "rootless.network.rootlessns", str(d), str(w_status), str(r_go), backend,
            backend_path, nft]
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(w_status, r_go),
                                start_new_session=True, env=env, close_fds=True)
    finally:
        log.close()
        os.close(w_status)
        os.close(r_go)
    deadline = time.monotonic() + timeout

    def read_status() -> bytes:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([r_status], [], [], max(0.0, left))
        if not ready:
            return b""
        return os.read(r_status, 4096)

    try:
        first = read_status()
        if first[:1] != b"U":
            raise _spawn_error(first, d)
        try:
            apply_mapping(proc.pid, default_mapping())
        except RootlessError:
            os.write(w_go, b"X")
            raise
        os.write(w_go, b"G")
        rest = first[1:]
        while not rest.startswith(b"R") and not rest.startswith(b"E"):
            chunk = read_status()
            if not chunk:
                break
            rest += chunk
        if not rest.startswith(b"R"):
            raise _spawn_error(rest, d)
    except BaseException:
        try:
            proc.kill()
        except OSError:
            pass
        raise
    finally:
        os.close(r_status)
        os.close(w_go)
    info = _read_info(d)
    if info is None:
        raise NetworkError("the rootless network namespace started but wrote no state", hint=f"see {d / 'holder.log'}")
    return info


def _spawn_error(data: bytes, d: Path) -> RootlessError:
    if data.startswith(b"E"):
        try:
            j = json.loads(data[1:].decode())
            from rootless import errors

            cls = getattr(errors, j.get("kind") or "", NetworkError)
            if not (isinstance(cls, type) and issubclass(cls, RootlessError)):
                cls = NetworkError
            return cls(j.get("error", "failed"), hint=j.get("hint"))
        except ValueError:
            pass
    tail = ""
    try:
        tail = (d / "holder.log").read_text(errors="replace").strip().splitlines()[-1]
    except (OSError, IndexError):
        pass
    return NetworkError("the rootless network namespace did not start" + (f": {tail}" if tail else ""),
                        hint=f"see {d / 'holder.log'}")


# ---------------------------------------------------------------------------
# Holder side: port forwarding

@dataclass
class _Forward:
    """One published port: a host-side socket, the container's address and port."""

    container_id: str
    proto: str
    sock: socket.socket
    target: tuple[str, int]
    host: str                         # for messages: "127.0.0.1:8080"
    udp_sessions: dict = field(default_factory=dict)   # client addr -> [socket, last_used]


# ---------------------------------------------------------------------------
# Holder side: the process

@dataclass
class _Net:
    id: str
    name: str
    subnet: ipaddress.IPv4Network
    gateway: str
    internal: bool
    dns: bool
    bridge: str
    leases: dict[str, str] = field(default_factory=dict)     # ip -> container id
    dns_server: object = None


@dataclass
class _Endpoint:
    container_id: str
    name: str
    net_id: str
    ip: str
    mac: str
    host_if: str
    ifname: str
    aliases: list[str]
    pid: int
    dns: list = field(default_factory=list)    # the container's own resolvers (--dns): [(ip, port)]


class Holder:
    def __init__(self, d: Path, backend: str, backend_path: str, nft: str, upstream4: socket.socket,
                 upstream6: socket.socket | None):
        self.d = d
        self.backend = backend
        self.backend_path = backend_path
        self.nft = nft
        from rootless.network.dns import Forwarder

        # one forwarder (one pending table) for the DNS servers of every network: they share the
        # host-side upstream sockets, and an answer must reach the server that asked
        self.forwarder = Forwarder(upstream4, upstream6)
        self.nets: dict[str, _Net] = {}
        self.eps: dict[tuple[str, str], _Endpoint] = {}      # (container id, net id) -> endpoint
        self.forwards: list[_Forward] = []
        self.pidfds: dict[str, int] = {}                       # container id -> pidfd
        self.reserved: dict[str, float] = {}                   # container id -> deadline
        self.splicers: set = set()
        self._splicers_lock = threading.Lock()
        self.idle_since = time.monotonic()
        self.sel = None
        self.ipr = None
        self.host_gateway = ""
        self.backend_pid = 0
        self._stopping = False
        # held by the event loop while it handles an event: the DNS servers' TCP threads take it to read
        # the endpoints and the names
        self.lock = threading.RLock()
        self.connector: socket.socket | None = None     # to the helper that connects from the host's netns
        self._connector_lock = threading.Lock()

    # -- logging
    def log(self, msg: str) -> None:
        sys.stderr.write(time.strftime("%H:%M:%S ") + msg + "\n")
        sys.stderr.flush()

    # -- nftables
    def _nft_ruleset(self) -> str:
        lines = ["table inet rootless", "delete table inet rootless", "table inet rootless {",
                 "  chain forward {", "    type filter hook forward priority 0; policy accept;"]
        for n in self.nets.values():
            if n.internal:
                lines.append(f'    iifname "{n.bridge}" oifname != "{n.bridge}" drop')
                lines.append(f'    oifname "{n.bridge}" iifname != "{n.bridge}" drop')
            else:  # never from one network into another
                lines.append(f'    iifname "{n.bridge}" oifname "rl*" oifname != "{n.bridge}" drop')
        # a network's gateway (its DNS server) answers only its own network: no names across networks
        lines += ["  }", "  chain input {", "    type filter hook input priority 0; policy accept;"]
        for n in self.nets.values():
            lines.append(f'    ip daddr {n.gateway} iifname != "{n.bridge}" drop')
        lines += ["  }", "  chain postrouting {", "    type nat hook postrouting priority 100; policy accept;"]
        for n in self.nets.values():
            if not n.internal:
                lines.append(f'    ip saddr {n.subnet} oifname != "rl*" masquerade')
        lines += ["  }", "}"]
        return "\n".join(lines) + "\n"

    def _apply_nft(self) -> None:
        import subprocess

        cp = subprocess.run([self.nft, "-f", "-"], input=self._nft_ruleset().encode(), capture_output=True)
        if cp.returncode != 0:
            raise NetworkError(f"nft failed in the rootless network namespace: "
                               f"{cp.stderr.decode(errors='replace').strip().splitlines()[-1:]}",
                               hint="check that the kernel has nf_tables (modprobe nf_tables) and nftables is installed")

    # -- networks
    def _ensure_net(self, nj: dict) -> _Net:
        nid = nj["id"]
        n = self.nets.get(nid)
        if n is not None:
            return n
        subnet = ipaddress.IPv4Network(nj["subnet"])
        for o in self.nets.values():
            if o.subnet.overlaps(subnet):
                raise NetworkError(f"network {nj['name']} ({subnet}) overlaps active network {o.name} ({o.subnet})",
                                   hint="give the networks distinct subnets (rootless network create --subnet)")
        bridge = "rl" + nid[:12]
        ipr = self.ipr
        # a fixed MAC (Docker's scheme, from the gateway address): without one the bridge takes the
        # lowest MAC of its ports, which changes as containers come and go, and the others' ARP caches
        # point at a MAC that is gone (the gateway and its DNS server are lost for up to ~30 s)
        mac = mac_for(nj["gateway"])
        if not ipr.link_lookup(ifname=bridge):
            ipr.link("add", ifname=bridge, kind="bridge", address=mac)
        idx = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("set", index=idx, mtu=MTU, address=mac)
        try:
            ipr.addr("add", index=idx, address=nj["gateway"], prefixlen=subnet.prefixlen)
        except Exception as e:  # noqa: BLE001 - pyroute2 raises NetlinkError
            if getattr(e, "code", None) != errno.EEXIST:
                raise
        ipr.link("set", index=idx, state="up")
        n = _Net(nid, nj["name"], subnet, nj["gateway"], bool(nj.get("internal")), bool(nj.get("dns", True)),
                 bridge)
        self.nets[nid] = n
        try:
            self._apply_nft()
            if n.dns:
                self._start_dns(n)
        except BaseException:
            del self.nets[nid]
            self._drop_bridge(bridge)
            raise
        self.log(f"network {n.name} up: {bridge} {n.gateway}/{subnet.prefixlen}" + (" internal" if n.internal else ""))
        return n

    def _start_dns(self, n: _Net) -> None:
        from rootless.network.dns import DNSServer, Records, host_resolvers

        socks = []
        try:
            # UDP, and TCP for the clients whose answer came truncated (RFC 7766)
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
                socks.append(s)
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # the gateway address may still be "tentative" for a moment: retry briefly
                for _ in range(50):
                    try:
                        s.bind((n.gateway, 53))
                        break
                    except OSError as e:
                        if e.errno != errno.EADDRNOTAVAIL:
                            raise
                        time.sleep(0.02)
                else:
                    s.bind((n.gateway, 53))
                if kind == socket.SOCK_STREAM:
                    s.listen(64)
        except BaseException:
            for s in socks:
                s.close()
            raise
        upstreams = [] if n.internal else (_env_upstreams() or host_resolvers())
        srv = DNSServer(socks, Records(domain=DNS_DOMAIN), upstreams, forwarder=self.forwarder,
                        view=lambda addr, nid=n.id: self._dns_view(nid, addr),
                        upstreams_for=lambda addr, nid=n.id: self._dns_upstreams(nid, addr),
                        lock=self.lock, connect_upstream=self._connect_upstream)
        n.dns_server = srv
        for sock in srv.sockets():
            self.sel.register(sock, 1, ("dns", n.id))

    def _connect_upstream(self, addr) -> socket.socket:
        """A TCP connection to a resolver, made in the host's network namespace by the connector (a
        resolver on the host's loopback, 127.0.0.53 with systemd-resolved, is reachable only from there)."""
        if self.connector is None:
            raise OSError(errno.ENETUNREACH, "no connector")
        with self._connector_lock:
            _send_msg(self.connector, {"host": addr[0], "port": int(addr[1])})
            resp, fds = _recv_msg(self.connector, max_fds=1)
        if not fds:
            raise OSError(resp.get("errno") or errno.ECONNREFUSED, resp.get("error") or "connect failed")
        s = socket.socket(fileno=fds[0])
        # connect is in progress (the connector does not wait): wait here, in the caller's thread
        _, w, _ = select.select([], [s], [], 5)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else errno.ETIMEDOUT
        if err:
            s.close()
            raise OSError(err, os.strerror(err))
        s.setblocking(True)
        return s

    def _dns_upstreams(self, nid: str, addr) -> list | None:
        """The resolvers of the container at ``addr`` on network ``nid`` (its --dns; None: the network's)."""
        n = self.nets.get(nid)
        if n is None or n.internal:
            return None
        ep = next((ep for ep in self.eps.values() if ep.net_id == nid and ep.ip == addr[0]), None)
        return [tuple(u) for u in ep.dns] if ep is not None and ep.dns else None

    def _dns_view(self, nid: str, addr) -> object:
        """The names a client sees: those of every network its container is on (Docker's rule)."""
        from rootless.network.dns import Records

        me = next((ep.container_id for ep in self.eps.values() if ep.net_id == nid and ep.ip == addr[0]), None)
        if me is None:
            return None
        mine = [ep.net_id for ep in self.eps.values() if ep.container_id == me]
        if len(mine) <= 1:
            return None
        view = Records(domain=DNS_DOMAIN)
        seen: set[tuple[str, str]] = set()
        for other in [nid] + [x for x in mine if x != nid]:   # this network's addresses first
            n = self.nets.get(other)
            if n is None or n.dns_server is None:
                continue
            for cid, entry in n.dns_server.records.snapshot().items():
                key = cid if other == nid else f"{cid}@{other}"
                names = [x for x in entry["names"] if (x, cid) not in seen]
                for x in names:
                    seen.add((x, cid))
                if names:
                    view.set(key, names, entry["addresses"])
        return view

    def _stop_dns(self, n: _Net) -> None:
        srv = n.dns_server
        if srv is None:
            return
        for sock in srv.sockets():
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
        srv.close()
        n.dns_server = None

    def _drop_bridge(self, bridge: str) -> None:
        try:
            for idx in self.ipr.link_lookup(ifname=bridge):
                self.ipr.link("del", index=idx)
        except Exception as e:  # noqa: BLE001
            self.log(f"removing {bridge}: {e}")

    def _maybe_drop_net(self, nid: str) -> None:
        n = self.nets.get(nid)
        if n is None or any(ep.net_id == nid for ep in self.eps.values()):
            return
        self._stop_dns(n)
        self._drop_bridge(n.bridge)
        del self.nets[nid]
        try:
            self._apply_nft()
        except RootlessError as e:
            self.log(str(e))
        self.log(f"network {n.name} down")

    def _lease(self, n: _Net, cid: str, want: str | None) -> str:
        if want:
            a = ipaddress.IPv4Address(want)
            if a not in n.subnet or str(a) == n.gateway or a in (n.subnet.network_address, n.subnet.broadcast_address):
                raise NetworkError(f"--ip {want} is not a usable address of network {n.name} ({n.subnet})")
            holder = n.leases.get(str(a))
            if holder and holder != cid:
                other = next((e.name for e in self.eps.values() if e.container_id == holder), holder[:12])
                raise NetworkError(f"address {want} is already in use on network {n.name} by container {other}",
                                   hint="choose another --ip, or leave --ip out to get a free address")
            n.leases[str(a)] = cid
            return str(a)
        for h in n.subnet.hosts():
            s = str(h)
            if s != n.gateway and s not in n.leases:
                n.leases[s] = cid
                return s
        raise NetworkError(f"network {n.name} ({n.subnet}) has no free address left",
                           hint="create a network with a larger --subnet")

    # -- requests
    def op_ping(self, req, fds):
        return {"pid": os.getpid(), "version": PROTOCOL_VERSION}

    def op_reserve(self, req, fds):
        cid = req.get("container_id")
        if cid:
            self.reserved[cid] = time.monotonic() + 120
        return {}

    def op_attach(self, req, fds):
        from pyroute2 import IPRoute

        cid, pid = req["container_id"], int(req["pid"])
        nj = req["network"]
        ifname = req.get("ifname") or "eth0"
        try:
            same = os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise NetworkError(f"container process {pid} is gone") from None
            same = False  # we may not even look: certainly not one of ours
        if not same:
            raise NetworkError(f"container process {pid} is not in the user namespace of the rootless network "
                               "namespace", hint="the runtime must join the holder's user namespace "
                                                 "(NetworkPlan.userns) before creating the network namespace")
        if (cid, nj["id"]) in self.eps:
            raise NetworkError(f"container {req.get('name') or cid[:12]} is already connected to network {nj['name']}")
        n = self._ensure_net(nj)
        ip = self._lease(n, cid, req.get("ip"))
        mac = mac_for(ip)
        host_if = "rv" + os.urandom(4).hex()
        ep = None
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.ipr.link("add", ifname=host_if, kind="veth", mtu=MTU,
                          peer={"ifname": ifname, "address": mac, "mtu": MTU, "net_ns_fd": nsfd})
            hidx = self.ipr.link_lookup(ifname=host_if)[0]
            self.ipr.link("set", index=hidx, master=self.ipr.link_lookup(ifname=n.bridge)[0], state="up")
            with IPRoute(netns=nsfd) as c:
                lo = c.link_lookup(ifname="lo")
                if lo:
                    c.link("set", index=lo[0], state="up")
                e = c.link_lookup(ifname=ifname)[0]
                c.addr("add", index=e, address=ip, prefixlen=n.subnet.prefixlen)
                c.link("set", index=e, state="up")
                if not n.internal and req.get("default_route", True):
                    has_default = any(r.get_attr("RTA_DST") is None for r in c.route("dump", family=socket.AF_INET)
                                      if r["dst_len"] == 0 and r["table"] == 254)
                    if not has_default:
                        c.route("add", dst="0.0.0.0/0", gateway=n.gateway)
            ep = _Endpoint(cid, req.get("name") or cid[:12], n.id, ip, mac, host_if, ifname,
                           list(req.get("aliases") or []), pid,
                           [(str(h), int(p)) for h, p in req.get("dns") or []])
            self.eps[(cid, n.id)] = ep
            self.reserved.pop(cid, None)
            if n.dns_server is not None:
                names = [ep.name, cid[:12], *ep.aliases]
                n.dns_server.records.set(cid, names, [ip])
            self._add_forwards(ep, req.get("ports") or [], fds)
            fds = []
            if cid not in self.pidfds:
                pfd = os.pidfd_open(pid)
                self.pidfds[cid] = pfd
                self.sel.register(pfd, 1, ("pidfd", cid))
        except BaseException:
            if ep is not None:
                self._detach_one(ep)
            else:
                n.leases.pop(ip, None)
                try:
                    for idx in self.ipr.link_lookup(ifname=host_if):
                        self.ipr.link("del", index=idx)
                except Exception:  # noqa: BLE001
                    pass
                self._maybe_drop_net(n.id)
            raise
        finally:
            os.close(nsfd)
            for fd in fds:
                os.close(fd)
        self._save()
        self.log(f"attached {ep.name} ({cid[:12]}) to {n.name}: {ip} via {host_if}")
        return {"ip": ip, "mac": mac, "prefixlen": n.subnet.prefixlen, "gateway": n.gateway, "ifname": ifname,
                "dns": n.gateway if n.dns else None, "endpoint_id": host_if,
                "internal": n.internal, "aliases": list(ep.aliases)}

    def _add_forwards(self, ep: _Endpoint, ports: list[dict], fds: list[int]) -> None:
        if len(ports) != len(fds):
            raise NetworkError("published ports and their sockets do not match")
        for p, fd in zip(ports, fds):
            proto = p["protocol"]
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            fw = _Forward(ep.container_id, proto, sock, (ep.ip, int(p["container_port"])),
                          f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}")
            self.forwards.append(fw)
            self.sel.register(sock, 1, ("fwd", fw))

    def _close_forward(self, fw: _Forward) -> None:
        try:
            self.sel.unregister(fw.sock)
        except (KeyError, ValueError):
            pass
        fw.sock.close()
        for s, _ in fw.udp_sessions.values():
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        fw.udp_sessions.clear()

    def op_detach(self, req, fds):
        cid = req["container_id"]
        nid = req.get("network_id")
        gone = [ep for (c, n), ep in list(self.eps.items()) if c == cid and (nid is None or n == nid)]
        for ep in gone:
            self._detach_one(ep)
        self.reserved.pop(cid, None)
        self._save()
        return {"detached": [ep.net_id for ep in gone]}

    def _detach_one(self, ep: _Endpoint) -> None:
        self.eps.pop((ep.container_id, ep.net_id), None)
        n = self.nets.get(ep.net_id)
        still = any(c == ep.container_id for (c, _n) in self.eps)
        for fw in [f for f in self.forwards if f.container_id == ep.container_id and f.target[0] == ep.ip]:
            self._close_forward(fw)
            self.forwards.remove(fw)
        if n is not None:
            n.leases.pop(ep.ip, None)
            if n.dns_server is not None:
                n.dns_server.records.remove(ep.container_id)
        try:
            for idx in self.ipr.link_lookup(ifname=ep.host_if):
                self.ipr.link("del", index=idx)
        except Exception as e:  # noqa: BLE001
            self.log(f"removing {ep.host_if}: {e}")
        if not still:
            pfd = self.pidfds.pop(ep.container_id, None)
            if pfd is not None:
                try:
                    self.sel.unregister(pfd)
                except (KeyError, ValueError):
                    pass
                os.close(pfd)
        self._maybe_drop_net(ep.net_id)
        self.log(f"detached {ep.name} ({ep.container_id[:12]}) from {n.name if n else ep.net_id[:12]}")

    def op_status(self, req, fds):
        return {"networks": self._snapshot(), "pid": os.getpid(), "backend": self.backend,
                "host_gateway": self.host_gateway}

    def op_dns_update(self, req, fds):
        """Set the extra names (aliases) of an attached container."""
        cid, nid = req["container_id"], req["network_id"]
        ep = self.eps.get((cid, nid))
        if ep is None:
            raise NetworkError("container is not attached to that network")
        ep.aliases = list(req.get("aliases") or [])
        n = self.nets[nid]
        if n.dns_server is not None:
            n.dns_server.records.set(cid, [ep.name, cid[:12], *ep.aliases], [ep.ip])
        self._save()
        return {}

    def op_rename(self, req, fds):
        """A container's new name (``rename``): in the records of every network it is on."""
        cid, name = req["container_id"], str(req["name"])
        for ep in [e for (c, _n), e in self.eps.items() if c == cid]:
            ep.name = name
            n = self.nets.get(ep.net_id)
            if n is not None and n.dns_server is not None:
                n.dns_server.records.set(cid, [ep.name, cid[:12], *ep.aliases], [ep.ip])
        self._save()
        return {}

    def _snapshot(self) -> dict:
        out: dict = {}
        for ep in self.eps.values():
            n = self.nets[ep.net_id]
            out.setdefault(ep.net_id, {})[ep.container_id] = {
                "name": ep.name, "network": n.name, "ip": ep.ip, "prefixlen": n.subnet.prefixlen, "mac": ep.mac,
                "gateway": n.gateway, "endpoint_id": ep.host_if, "aliases": ep.aliases, "pid": ep.pid,
                "ports": [{"protocol": f.proto, "host": f.host, "container_port": f.target[1]}
                          for f in self.forwards if f.container_id == ep.container_id and f.target[0] == ep.ip]}
        return out

    def _save(self) -> None:
        _atomic_json(self.d / "endpoints.json", {"pid": os.getpid(), "networks": self._snapshot()})
        if self.eps or self.reserved:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = time.monotonic()

    # -- event handlers
    def _on_ctl(self, lsock: socket.socket) -> None:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            fds: list[int] = []
            try:
                creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
                _pid, uid, _gid = struct.unpack("3i", creds)
                if uid != os.getuid():
                    return
                req, fds = _recv_msg(conn)
                op = getattr(self, "op_" + str(req.get("op")), None)
                if op is None:
                    raise NetworkError(f"unknown request {req.get('op')!r}")
                resp = {"ok": True, **op(req, fds)}
                fds = []
            except RootlessError as e:
                resp = {"ok": False, "error": e.message, "hint": e.hint, "kind": type(e).__name__}
            except Exception as e:  # noqa: BLE001 - reported to the client, logged here
                import traceback

                self.log(traceback.format_exc())
                resp = {"ok": False, "error": f"{type(e).__name__}: {e}", "kind": "NetworkError",
                        "hint": f"see {self.d / 'holder.log'}"}
            finally:
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            try:
                _send_msg(conn, resp)
            except OSError:
                pass

    def _on_forward(self, fw: _Forward) -> None:
        if fw.proto == "tcp":
            for _ in range(16):
                try:
                    client, _addr = fw.sock.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    self.log(f"accept on {fw.host}: {e}")
                    return
                threading.Thread(target=self._connect_and_splice, args=(client, fw.target), daemon=True).start()
            return
        # UDP: datagrams from clients to the container, answers back
        for _ in range(64):
            try:
                data, addr = fw.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sess = fw.udp_sessions.get(addr)
            if sess is None:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
                try:
                    s.connect(fw.target)
                except OSError:
                    s.close()
                    continue
                sess = [s, time.monotonic()]
                fw.udp_sessions[addr] = sess
                self.sel.register(s, 1, ("udpback", (fw, addr)))
            sess[1] = time.monotonic()
            try:
                sess[0].send(data)
            except OSError:
                pass

    def _on_udp_back(self, fw: _Forward, addr, s: socket.socket) -> None:
        for _ in range(64):
            try:
                data = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                fw.sock.sendto(data, addr)
            except OSError:
                pass
            sess = fw.udp_sessions.get(addr)
            if sess:
                sess[1] = time.monotonic()

    def _connect_and_splice(self, client: socket.socket, target: tuple[str, int]) -> None:
        client.setblocking(True)
        up = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        up.settimeout(10)
        try:
            up.connect(target)
        except OSError:
            up.close()
            client.close()  # the client sees the connection closed (Docker's proxy does the same)
            return
        up.settimeout(None)
        for s in (client, up):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        from rootless.network.relay import Splicer

        # recorded before it starts: a short connection may end (and call back) before start() returns,
        # and one recorded after that would stay for ever (the holder would never go idle)
        sp = Splicer(client, up, self._splice_done, start=False)
        with self._splicers_lock:
            self.splicers.add(sp)
        sp.start()

    def _splice_done(self, sp) -> None:
        with self._splicers_lock:
            self.splicers.discard(sp)

    def _on_pidfd(self, cid: str) -> None:
        for ep in [e for (c, _n), e in list(self.eps.items()) if c == cid]:
            self._detach_one(ep)
        pfd = self.pidfds.pop(cid, None)
        if pfd is not None:
            try:
                self.sel.unregister(pfd)
            except (KeyError, ValueError):
                pass
            os.close(pfd)
        self._save()

    def _tick(self, now: float) -> bool:
        """Housekeeping; True when the holder should exit (idle)."""
        self.forwarder.expire(now)
        for fw in self.forwards:
            for addr, (s, last) in list(fw.udp_sessions.items()):
                if now - last > 60:
                    try:
                        self.sel.unregister(s)
                    except (KeyError, ValueError):
                        pass
                    s.close()
                    del fw.udp_sessions[addr]
        for cid, dl in list(self.reserved.items()):
            if dl < now:
                del self.reserved[cid]
                self._save()
        if self.backend_pid:
            try:
                wpid, status = os.waitpid(self.backend_pid, os.WNOHANG)
            except ChildProcessError:
                wpid, status = self.backend_pid, 0
            if wpid:
                self.log(f"{self.backend} exited ({status}): the networks lost their way out")
                self.backend_pid = 0
        return bool(self.idle_since is not None and now - self.idle_since > IDLE_EXIT and not self.splicers)

    def _dispatch(self, key) -> None:
        kind, arg = key.data
        if kind == "ctl":
            self._on_ctl(key.fileobj)
        elif kind == "dns":
            n = self.nets.get(arg)
            if n is not None and n.dns_server is not None:
                n.dns_server.handle(key.fileobj)
        elif kind == "dnsup":
            self.forwarder.handle(key.fileobj)
        elif kind == "fwd":
            self._on_forward(arg)
        elif kind == "udpback":
            self._on_udp_back(arg[0], arg[1], key.fileobj)
        elif kind == "pidfd":
            self._on_pidfd(arg)

    def serve(self, ctl: socket.socket) -> None:
        import selectors

        self.sel = selectors.DefaultSelector()
        self.sel.register(ctl, 1, ("ctl", None))
        for s in self.forwarder.sockets():
            self.sel.register(s, 1, ("dnsup", None))
        signal.signal(signal.SIGTERM, lambda *a: setattr(self, "_stopping", True))
        lockfd = None
        while not self._stopping:
            for key, _ in self.sel.select(0.5):
                with self.lock:
                    self._dispatch(key)
            with self.lock:
                idle = self._tick(time.monotonic())
            if idle:
                # exit only while no client is talking to us
                lockfd = os.open(self.d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(lockfd)
                    lockfd = None
                    continue
                # a request may have arrived between select and the lock
                r, _, _ = select.select([ctl], [], [], 0)
                if r:
                    fcntl.flock(lockfd, fcntl.LOCK_UN)
                    os.close(lockfd)
                    lockfd = None
                    continue
                break
        self.log("exiting")
        for f in ("holder.json", "ctl.sock", "endpoints.json"):
            try:
                os.unlink(self.d / f)
            except FileNotFoundError:
                pass
        if self.backend_pid:
            try:
                os.kill(self.backend_pid, signal.SIGTERM)
                for _ in range(50):
                    if os.waitpid(self.backend_pid, os.WNOHANG)[0]:
                        break
                    time.sleep(0.02)
            except OSError:
                pass
        # lockfd is released when the process exits


# ---------------------------------------------------------------------------
# Holder start-up (python -m rootless.network.rootlessns DIR W_STATUS R_GO BACKEND PATH NFT)

def _backend_argv(backend: str, path: str, pid: int, api_sock: str) -> list[str]:
    if backend == "pasta":
        return [path, "--config-net", "-f", "-q", "-t", "none", "-u", "none", "-T", "none", "-U", "none",
                "--mtu", str(MTU), "--ns-ifname", "tap0", "--userns", f"/proc/{pid}/ns/user",
                "--netns", f"/proc/{pid}/ns/net"]
    return [path, "--configure", f"--mtu={MTU}", f"--userns-path=/proc/{pid}/ns/user", "--api-socket", api_sock,
            str(pid), "tap0"]


def _connector(sock: socket.socket) -> None:
    """In the host's network namespace: TCP connections for the holder, handed over with SCM_RIGHTS.

    One request at a time (``{"host", "port"}``); the connection is handed over
    while it is still in progress: the holder waits for it, not us."""
    while True:
        try:
            req, fds = _recv_msg(sock, max_fds=0)
        except (OSError, ValueError, ConnectionError):
            return
        for fd in fds:
            os.close(fd)
        s = None
        try:
            host, port = str(req["host"]), int(req["port"])
            ipaddress.ip_address(host)
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            resp, fds = {"ok": True}, [s.fileno()]
        except (KeyError, ValueError, TypeError, OSError) as e:
            resp, fds = {"error": str(e), "errno": getattr(e, "errno", None) or errno.EINVAL}, []
        try:
            _send_msg(sock, resp, fds)
        except OSError:
            return
        finally:
            if s is not None:
                s.close()


def _wait_for_uplink(ipr, timeout: float = 10.0) -> tuple[str, str]:
    """The backend's tap0 with an address and a default route: (address, gateway)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        idx = ipr.link_lookup(ifname="tap0")
        if idx:
            addrs = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx[0], family=socket.AF_INET)]
            gws = [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=socket.AF_INET)
                   if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY")]
            if addrs and gws:
                return addrs[0], gws[0]
        time.sleep(0.02)
    raise NetworkError("the network backend did not bring up the rootless network namespace's uplink",
                       hint="see holder.log; `rootless doctor` checks /dev/net/tun and the backends")


def _main(argv: list[str]) -> int:
    d = Path(argv[0])
    w_status, r_go = int(argv[1]), int(argv[2])
    backend, backend_path, nft = argv[3], argv[4], argv[5]
    from rootless import syscalls

    def fail(e: BaseException) -> int:
        if isinstance(e, RootlessError):
            payload = {"error": e.message, "hint": e.hint, "kind": type(e).__name__}
        else:
            import traceback

            traceback.print_exc()
            payload = {"error": f"{type(e).__name__}: {e}", "kind": "NetworkError"}
        try:
            os.write(w_status, b"E" + json.dumps(payload).encode())
        except OSError:
            pass
        return 1

    try:
        # 1. in the host's namespaces: the sockets that reach the host's resolvers
        up4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            up6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        except OSError:
            up6 = None
        # 2. the backend's launcher stays in the host's namespaces; it dies with us
        r_b, w_b = os.pipe()
        me = os.getpid()
        bpid = os.fork()
        if bpid == 0:
            try:
                os.close(w_b)
                syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGTERM)
                if os.getppid() != me or os.read(r_b, 1) != b"G":
                    os._exit(0)
                api = str(d / "slirp.sock")
                # Python ignores SIGPIPE and exec keeps that; pasta (2023) dies on it
                # ("Couldn't install signal handlers"): give it the default back
                for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                    signal.signal(sig, signal.SIG_DFL)
                os.execv(backend_path, _backend_argv(backend, backend_path, me, api))
            except BaseException:
                os._exit(127)
        os.close(r_b)
        # 3. the connector stays in the host's namespaces too: it makes the DNS servers' TCP connections
        # to the resolvers (one on the host's loopback is reachable only from there); it dies with us
        conn, conn_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        cpid = os.fork()
        if cpid == 0:
            try:
                conn.close()
                for fd in (w_b, w_status, r_go):
                    os.close(fd)
                syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() == me:
                    _connector(conn_child)
            finally:
                os._exit(0)
        conn_child.close()
        # 4. our own user + network namespace; the client maps our ids
        syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNET)
        os.write(w_status, b"U")
        if os.read(r_go, 1) != b"G":
            return 1
        os.close(r_go)
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.setgroups([])
        from pyroute2 import IPRoute

        ipr = IPRoute()
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        holder = Holder(d, backend, backend_path, nft, up4, up6)
        holder.ipr = ipr
        holder.backend_pid = bpid
        holder.connector = conn
        holder._apply_nft()
        os.write(w_b, b"G")
        os.close(w_b)
        addr, gw = _wait_for_uplink(ipr)
        holder.host_gateway = gw if backend == "pasta" else "10.0.2.2"
        ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.unlink(d / "ctl.sock")
        except FileNotFoundError:
            pass
        with _short_path(d, "ctl.sock") as p:
            ctl.bind(p)
        os.chmod(d / "ctl.sock", 0o600)
        ctl.listen(64)
        ctl.setblocking(False)
        _atomic_json(d / "holder.json", {"pid": me, "start": _proc_start(me), "backend": backend,
                                         "uplink": addr, "host_gateway": holder.host_gateway,
                                         "version": PROTOCOL_VERSION})
        holder._save()
        holder.log(f"serving: {backend} uplink {addr} via {gw}")
    except BaseException as e:  # noqa: BLE001
        return fail(e)
    os.write(w_status, b"R")
    os.close(w_status)
    holder.serve(ctl)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

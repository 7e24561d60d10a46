"""User-defined networks: their definitions on disk and address management.

``<data_root>/networks/<name>.json`` (atomic: tmp + fsync + rename), every
change under an exclusive ``fcntl`` lock on ``<data_root>/networks/.lock``::

    {"name": "n1", "id": "<64 hex>", "driver": "bridge", "created": "...Z",
     "subnet": "10.89.1.0/24", "gateway": "10.89.1.1", "internal": false,
     "dns": true, "labels": {}}

A network is built on demand in the per-user network namespace
(:mod:`rootless.network.rootlessns`): one Linux bridge ``rl<id[:12]>`` with
the gateway address, one veth per attached container. Container addresses
are leased there while the container runs (``--ip`` asks for one).

Built-in names (not files): ``bridge`` (the default: pasta or slirp4netns,
one private namespace per container), ``host``, ``none``, and the backends'
own names ``pasta`` and ``slirp4netns``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rootless.errors import NetworkError, UsageError

BUILTIN = ("bridge", "host", "none", "pasta", "slirp4netns")
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
AUTO_POOL = ipaddress.IPv4Network("10.89.0.0/16")   # networks get /24s from here (like Podman)
DNS_DOMAIN = "dns.rootless"


class NetworkNotFound(NetworkError):
    pass


class NetworkExists(NetworkError):
    pass


class NetworkInUse(NetworkError):
    pass


@dataclass(frozen=True)
class Network:
    name: str
    id: str
    subnet: str
    gateway: str
    internal: bool = False
    dns: bool = True
    driver: str = "bridge"
    created: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def bridge(self) -> str:
        """The bridge's interface name (IFNAMSIZ: at most 15 characters)."""
        return "rl" + self.id[:12]

    @property
    def net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        return self.net.prefixlen

    def to_json(self) -> dict:
        return {"name": self.name, "id": self.id, "driver": self.driver, "created": self.created,
                "subnet": self.subnet, "gateway": self.gateway, "internal": self.internal, "dns": self.dns,
                "labels": dict(self.labels)}

    @classmethod
    def from_json(cls, d: dict) -> "Network":
        return cls(name=d["name"], id=d["id"], subnet=d["subnet"], gateway=d["gateway"],
                   internal=bool(d.get("internal")), dns=bool(d.get("dns", True)),
                   driver=d.get("driver", "bridge"), created=d.get("created", ""),
                   labels=tuple(sorted((d.get("labels") or {}).items())))

    def check_ip(self, ip: str) -> str:
        """Validate a ``--ip`` for this network (pure): in the subnet, not reserved."""
        try:
            a = ipaddress.IPv4Address(ip)
        except ValueError:
            raise UsageError(f"invalid --ip {ip!r}: not an IPv4 address", hint="e.g. --ip 10.89.1.10") from None
        if a not in self.net:
            raise UsageError(f"--ip {ip} is not in network {self.name}'s subnet {self.subnet}",
                             hint=f"choose an address in {self.subnet}")
        if a in (self.net.network_address, self.net.broadcast_address) or str(a) == self.gateway:
            raise UsageError(f"--ip {ip} is reserved in network {self.name} "
                             f"(network, broadcast or gateway address)", hint=f"choose another address in {self.subnet}")
        return str(a)


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def atomic_write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def validate_name(name: str) -> str:
    if not NAME_RE.match(name) or len(name) > 200:
        raise UsageError(f"invalid network name {name!r}",
                         hint="use letters, digits and _ . - (starting with a letter or digit)")
    if name in BUILTIN:
        raise UsageError(f"{name} is a built-in network name: it cannot be created or removed",
                         hint="choose another name")
    return name


def host_route_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations the host routes (/proc/net/route): auto subnets avoid them."""
    out = []
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                p = line.split()
                if len(p) < 8:
                    continue
                dest = int(p[1], 16)
                mask = int(p[7], 16)
                if mask == 0:
                    continue  # the default route overlaps everything
                d = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
                m = bin(mask).count("1")
                out.append(ipaddress.IPv4Network(f"{d}/{m}", strict=False))
    except OSError:
        pass
    return out


def host_addresses(path: str = "/proc/net/fib_trie") -> list[ipaddress.IPv4Address]:
    """The host's own IPv4 addresses but loopback (the ``/32 host LOCAL`` entries of the FIB)."""
    out: list[ipaddress.IPv4Address] = []
    last = None
    try:
        with open(path) as f:
            for line in f:
                t = line.strip()
                if t.startswith("|-- "):
                    last = t[4:]
                elif t == "/32 host LOCAL" and last:
                    try:
                        a = ipaddress.IPv4Address(last)
                    except ValueError:
                        continue
                    if not a.is_loopback and a not in out:
                        out.append(a)
    except OSError:
        pass
    return out


def host_overlap(net: ipaddress.IPv4Network, routes, addresses) -> str | None:
    """What of the host's ``net`` overlaps (a route's network or an address of the host), else None."""
    for r in routes:
        if net.overlaps(r):
            return f"the host's network {r} (a route of the host)"
    for a in addresses:
        if a in net:
            return f"the host's address {a}"
    return None


def parse_subnet(subnet: str, gateway: str | None) -> tuple[str, str]:
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise UsageError(f"invalid --subnet {subnet!r}", hint="use CIDR notation, e.g. --subnet 10.89.5.0/24") from None
    if net.version != 4:
        raise UsageError(f"--subnet {subnet}: IPv6 networks are not supported yet", hint="use an IPv4 subnet")
    if net.prefixlen > 29:
        raise UsageError(f"--subnet {subnet} is too small", hint="use a /29 or larger (e.g. /24)")
    if net.network_address.is_loopback or net.network_address.is_multicast or net.network_address.is_link_local:
        raise UsageError(f"--subnet {subnet} is not usable for containers (loopback, link-local or multicast)",
                         hint="use a private range such as 10.89.5.0/24")
    if gateway is None:
        gw = next(net.hosts())
    else:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise UsageError(f"invalid --gateway {gateway!r}", hint="use an IPv4 address inside --subnet") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise UsageError(f"--gateway {gateway} is not a host address of {net}",
                             hint=f"choose an address inside {net}")
    return str(net), str(gw)


@dataclass
class NetworkStore:
    """The user-defined networks of one store (``Config.data_root``)."""

    data_root: Path
    _dir: Path = field(init=False)

    def __post_init__(self):
        self._dir = Path(self.data_root) / "networks"

    @property
    def dir(self) -> Path:
        return self._dir

    @contextmanager
    def lock(self):
        self._dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}.json"

    def list(self) -> list[Network]:
        out = []
        try:
            names = sorted(os.listdir(self._dir))
        except FileNotFoundError:
            return []
        for fn in names:
            if not fn.endswith(".json") or fn.startswith("."):
                continue
            try:
                out.append(Network.from_json(json.loads((self._dir / fn).read_text())))
            except (OSError, ValueError, KeyError):
                continue  # a broken file is skipped (and shown by `network ls` as missing)
        return out

    def get(self, ref: str) -> Network:
        """By name, full id, or a unique id prefix (Docker's rules)."""
        if NAME_RE.match(ref) and "/" not in ref:
            p = self._path(ref)
            if p.is_file():
                try:
                    return Network.from_json(json.loads(p.read_text()))
                except (ValueError, KeyError) as e:
                    raise NetworkError(f"network file {p} is corrupt: {e}",
                                       hint=f"remove it (rm {p}) and create the network again") from None
        if re.fullmatch(r"[0-9a-f]{3,64}", ref):
            hits = [n for n in self.list() if n.id.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise NetworkError(f"network id prefix {ref} is ambiguous", hint="give more characters or the name")
        raise NetworkNotFound(f"network {ref} not found", hint="list networks with `rootless network ls`; "
                                                               "create one with `rootless network create NAME`")

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def _pick_subnet(self, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
        for cand in AUTO_POOL.subnets(new_prefix=24):
            if cand.network_address.packed[2] == 0:
                continue  # 10.89.0.0/24 is left alone (Podman's default "podman" network)
            if not any(cand.overlaps(t) for t in taken):
                return cand
        raise NetworkError("no free subnet left in 10.89.0.0/16", hint="remove unused networks (rootless network prune) "
                                                                       "or give --subnet")

    def create(self, name: str, subnet: str | None = None, gateway: str | None = None, internal: bool = False,
               labels: dict[str, str] | None = None, dns: bool = True) -> Network:
        validate_name(name)
        if gateway and not subnet:
            raise UsageError("--gateway needs --subnet", hint="e.g. --subnet 10.89.5.0/24 --gateway 10.89.5.1")
        with self.lock():
            if self.exists(name):
                raise NetworkExists(f"network with name {name} already exists",
                                    hint=f"use it, or remove it first: rootless network rm {name}")
            others = self.list()
            if subnet:
                net_s, gw = parse_subnet(subnet, gateway)
                net = ipaddress.IPv4Network(net_s)
                for o in others:
                    if net.overlaps(o.net):
                        raise NetworkError(f"subnet {net} overlaps network {o.name} ({o.subnet})",
                                           hint="choose a subnet that no other network uses")
                # Podman refuses too: the per-user namespace (pasta copies the host's addresses and
                # routes into it) and the containers could no longer reach that part of the host's network
                clash = host_overlap(net, host_route_networks(), host_addresses())
                if clash:
                    raise NetworkError(f"subnet {net} overlaps {clash}",
                                       hint="choose a subnet the host does not use (see ip route and ip addr), "
                                            "or leave out --subnet to get a free one")
            else:
                net = self._pick_subnet([o.net for o in others] + host_route_networks()
                                        + [ipaddress.IPv4Network(a) for a in host_addresses()])
                net_s, gw = str(net), str(next(net.hosts()))
            n = Network(name=name, id=os.urandom(32).hex(), subnet=net_s, gateway=gw, internal=internal, dns=dns,
                        created=now_rfc3339(), labels=tuple(sorted((labels or {}).items())))
            atomic_write_json(self._path(name), n.to_json())
            return n

    def remove(self, name: str, users: list[str] = ()) -> None:
        """Remove a network; ``users`` (containers still using it) makes it refuse."""
        n = self.get(name)
        if users:
            raise NetworkInUse(f"network {n.name} is in use by container(s) {', '.join(users)}",
                               hint="remove those containers first (rootless rm -f NAME), or "
                                    f"disconnect them: rootless network disconnect {n.name} CONTAINER")
        with self.lock():
            try:
                os.unlink(self._path(n.name))
            except FileNotFoundError:
                raise NetworkNotFound(f"network {name} not found") from None

    def update(self, n: Network) -> None:
        with self.lock():
            atomic_write_json(self._path(n.name), n.to_json())


def _network_names_of(spec: dict, state: dict, overrides: dict) -> set[str]:
    """Names of the user-defined networks a container is configured with or attached to."""
    from rootless.network import effective_mode

    mode = spec.get("network") or "default"
    names: set[str] = set()
    if isinstance(mode, str):
        eff, _ = effective_mode(mode, overrides)
        for m in eff.split(","):
            m = m.strip()
            if m and m not in BUILTIN and not m.startswith("container:") and m != "default":
                names.add(m)
    for n in (state.get("network") or {}).get("networks") or []:
        if isinstance(n, dict) and n.get("name"):
            names.add(n["name"])
    return names


def containers_using(data_root: Path) -> dict[str, list[str]]:
    """``{network name: [container names]}`` from ``containers/*/config.json``, ``state.json`` and
    ``networks.json`` (what ``network connect/disconnect`` changed).

    Every container counts, running or not (like Podman: a stopped container
    would fail to start without its network).
    """
    from rootless.network import read_overrides

    out: dict[str, list[str]] = {}
    cdir = Path(data_root) / "containers"
    try:
        ids = sorted(os.listdir(cdir))
    except OSError:
        return out
    for cid in ids:
        d = cdir / cid
        try:
            cfg = json.loads((d / "config.json").read_text())
        except (OSError, ValueError):
            continue
        try:
            state = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            state = {}
        for n in _network_names_of(cfg.get("spec") or {}, state, read_overrides(d)):
            out.setdefault(n, []).append(cfg.get("name") or cid[:12])
    return out

"""Published ports: ``-p``/``-P`` syntax, host port choice, who holds a port.

Docker's syntax, one ``-p`` value::

    [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]     PROTO = tcp (default) | udp
    8080:80            0.0.0.0:8080 -> 80/tcp
    127.0.0.1:8080:80  only on the host's loopback
    127.0.0.1::80      a free host port on 127.0.0.1
    80                 a free host port on every address
    0:80               the same (Docker: host port 0 is a free one)
    [::1]:8080:80      IPv6 host address (brackets)
    8000-8009:80-89    a range (same length on both sides)
    8000-8009:80       the first free host port of the range for container port 80
    53:53/udp

``-P`` publishes every EXPOSEd port of the image (and ``--expose``) on a free
host port. Parsing is pure; :func:`allocate` asks the kernel for free ports
and :func:`port_holder` looks up who holds a port in /proc.
"""

from __future__ import annotations

import errno
import os

from rootless.errors import PortInUse, UsageError
from rootless.record import Record

PROTOCOLS = ("tcp", "udp")


class PortMapping(Record):
    """One published port: host ``host_ip:host_port`` -> container ``container_port``.

    ``host_ip`` "" means every address (0.0.0.0 and ::). ``host_port`` 0
    means "choose a free port" (within ``host_range`` when that is given).
    """

    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""
    host_port: int = 0
    host_range: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.protocol}"

    @property
    def host_ip_shown(self) -> str:
        return self.host_ip or "0.0.0.0"

    def host_addr(self) -> str:
        ip = self.host_ip_shown
        return f"[{ip}]:{self.host_port}" if ":" in ip else f"{ip}:{self.host_port}"

    def to_json(self) -> dict:
        d = {"container_port": self.container_port, "protocol": self.protocol,
             "host_ip": self.host_ip, "host_port": self.host_port}
        if self.host_range:
            d["host_range"] = list(self.host_range)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "PortMapping":
        hr = d.get("host_range")
        return cls(int(d["container_port"]), d.get("protocol", "tcp"), d.get("host_ip", ""),
                   int(d.get("host_port", 0)), (int(hr[0]), int(hr[1])) if hr else None)


def _bad(spec: str, why: str) -> UsageError:
    return UsageError(f"invalid port specification {spec!r}: {why}",
                      hint="use -p [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp], e.g. -p 8080:80 or -p 127.0.0.1:8080:80/tcp")


def _port(spec: str, s: str, what: str, allow_zero: bool = False) -> int:
    if not s.isdigit():
        raise _bad(spec, f"{what} {s!r} is not a number")
    n = int(s)
    if n > 65535 or (n == 0 and not allow_zero):
        raise _bad(spec, f"{what} {n} is out of range (1-65535)")
    return n


def _range(spec: str, s: str, what: str) -> tuple[int, int]:
    if "-" in s:
        a, _, b = s.partition("-")
        lo, hi = _port(spec, a, what), _port(spec, b, what)
        if hi < lo:
            raise _bad(spec, f"{what} range {s} ends before it starts")
        return lo, hi
    n = _port(spec, s, what)
    return n, n


def _split_ip(spec: str, body: str) -> tuple[str, str]:
    """Split off an IP prefix: returns (ip, rest) where rest is [HOSTPORT:]CPORT."""
    import ipaddress

    if body.startswith("["):
        end = body.find("]")
        if end < 0 or body[end + 1:end + 2] != ":":
            raise _bad(spec, "an IPv6 address must be written [ADDR]:HOSTPORT:CONTAINERPORT")
        ip, rest = body[1:end], body[end + 2:]
        try:
            ipaddress.IPv6Address(ip)
        except ValueError:
            raise _bad(spec, f"{ip!r} is not an IPv6 address") from None
        return ip, rest
    parts = body.split(":")
    if len(parts) <= 2:
        return "", body
    if len(parts) == 3:
        ip = parts[0]
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise _bad(spec, f"{ip!r} is not an IP address") from None
        return ip, ":".join(parts[1:])
    # a bare IPv6 address (Docker accepts ::1:8080:80 style only in brackets)
    raise _bad(spec, "too many ':' (write an IPv6 host address in brackets: [::1]:8080:80)")


def parse_publish(spec: str) -> list[PortMapping]:
    """Parse one ``-p`` value into mappings (several for a range). Raises UsageError (125)."""
    s = spec.strip()
    if not s:
        raise _bad(spec, "empty")
    proto = "tcp"
    if "/" in s:
        s, _, proto = s.rpartition("/")
        proto = proto.lower()
        if proto == "sctp":
            raise UsageError(f"invalid port specification {spec!r}: sctp is not supported by rootless networking",
                             hint="publish tcp or udp ports")
        if proto not in PROTOCOLS:
            raise _bad(spec, f"unknown protocol {proto!r} (tcp or udp)")
    ip, rest = _split_ip(spec, s)
    if ":" in rest:
        host_s, _, cont_s = rest.partition(":")
    else:
        host_s, cont_s = "", rest
    if not cont_s:
        raise _bad(spec, "no container port")
    clo, chi = _range(spec, cont_s, "container port")
    if host_s.isdigit() and int(host_s) == 0:
        host_s = ""     # Docker: host port 0 is a free one
    if not host_s:
        return [PortMapping(p, proto, ip, 0) for p in range(clo, chi + 1)]
    hlo, hhi = _range(spec, host_s, "host port")
    if hhi - hlo == chi - clo:
        return [PortMapping(clo + i, proto, ip, hlo + i) for i in range(chi - clo + 1)]
    if clo == chi:
        # a host range for one container port: the first free port of the range
        return [PortMapping(clo, proto, ip, 0, (hlo, hhi))]
    raise _bad(spec, f"host range {host_s} and container range {cont_s} differ in length")


def parse_expose(spec: str) -> list[tuple[int, str]]:
    """``--expose`` / EXPOSE values: ``80``, ``80/udp``, ``8000-8010``."""
    s = spec.strip()
    proto = "tcp"
    if "/" in s:
        s, _, proto = s.rpartition("/")
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise UsageError(f"invalid exposed port {spec!r}: unknown protocol {proto!r}",
                             hint="use PORT[/tcp|/udp] or a range START-END")
    try:
        lo, hi = _range(spec, s, "port")
    except UsageError:
        raise UsageError(f"invalid exposed port {spec!r}", hint="use PORT[/tcp|/udp] or a range START-END") from None
    return [(p, proto) for p in range(lo, hi + 1)]


def publish_all(exposed) -> list[PortMapping]:
    """``-P``: every exposed port (``"80/tcp"`` strings or (port, proto) pairs) on a free host port."""
    out: list[PortMapping] = []
    seen = set()
    for e in exposed:
        pairs = parse_expose(e) if isinstance(e, str) else [(int(e[0]), e[1])]
        for port, proto in pairs:
            if (port, proto) not in seen:
                seen.add((port, proto))
                out.append(PortMapping(port, proto))
    return sorted(out, key=lambda m: (m.container_port, m.protocol))


def merge(explicit: list[PortMapping], all_exposed: list[PortMapping]) -> list[PortMapping]:
    """``-p`` wins over ``-P`` for the same container port."""
    have = {m.key for m in explicit}
    return list(explicit) + [m for m in all_exposed if m.key not in have]


def check_conflicts(mappings: list[PortMapping]) -> None:
    """Two mappings of one run asking for the same host port: 125.

    The wildcard address ("") overlaps every address; two different
    specific addresses may share a port number.
    """
    fixed = [m for m in mappings if m.host_port]
    for i, a in enumerate(fixed):
        for b in fixed[:i]:
            if a.protocol == b.protocol and a.host_port == b.host_port and \
                    (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip):
                raise UsageError(f"host port {a.host_port}/{a.protocol} is published twice "
                                 f"(for {b.key} and {a.key})", hint="give each -p its own host port")


# ---------------------------------------------------------------------------
# Free ports and who holds a port (the only I/O here)

def host_socket(ip: str, port: int, proto: str):
    """A socket bound to the host side of a published port (TCP: listening).

    ``ip`` "" (every address): one dual-stack socket on ``::`` (IPV6_V6ONLY
    off: IPv4 clients arrive as ``::ffff:a.b.c.d``, like Docker's two sockets
    on 0.0.0.0 and ::), TCP and UDP alike, or 0.0.0.0 where the host has no
    IPv6. A specific IPv6 address (also ``::``) takes IPv6 clients only,
    0.0.0.0 IPv4 ones. Raises OSError (see :func:`port_error`).
    """
    import socket

    kind = (socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM) | socket.SOCK_CLOEXEC
    s = None
    if not ip:
        try:
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            ip = "::"
        except OSError as e:
            if s is not None:
                s.close()
            if e.errno not in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ENOPROTOOPT):
                raise
            s = None
    ip = ip or "0.0.0.0"
    if s is None:
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, kind)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        if proto == "tcp":
            s.listen(256)
        return s
    except OSError:
        s.close()
        raise


def bind_host_ports(mappings, owner=None) -> list:
    """Bind (and listen on) the host side of published ports, here in the host's namespace.

    Raises PortInUse (125) naming the holder of a taken port; on error the
    sockets bound so far are closed.
    """
    out: list = []
    try:
        for m in mappings:
            try:
                out.append(host_socket(m.host_ip, m.host_port, m.protocol))
            except OSError as e:
                raise port_error(m, e, owner) from None
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


def check_free(m: PortMapping, owner=None) -> None:
    """Raise PortInUse (125) naming the holder when the host port cannot be bound.

    ``owner(mapping) -> str | None`` may name the holder better than /proc
    (e.g. "container web": pasta hides its fds from /proc even from us).
    """
    try:
        host_socket(m.host_ip, m.host_port, m.protocol).close()
    except OSError as e:
        raise port_error(m, e, owner) from None


def port_error(m: PortMapping, e: OSError, owner=None) -> PortInUse | UsageError:
    if e.errno == errno.EADDRINUSE:
        who = (owner(m) if owner else None) or port_holder(m.host_port, m.protocol)
        return PortInUse(f"host port {m.host_addr()}/{m.protocol} is already in use"
                         + (f" by {who}" if who else ""),
                         hint=f"choose another host port (-p OTHER:{m.container_port}) or stop what holds it")
    if e.errno == errno.EADDRNOTAVAIL:
        return UsageError(f"cannot publish on {m.host_ip}: no such address on this host",
                          hint="use an address of this host (ip -brief addr), 127.0.0.1, or omit it")
    if e.errno == errno.EACCES:
        return PortInUse(f"cannot publish host port {m.host_port}: ports below "
                         f"{_unprivileged_port_start()} need privileges",
                         hint="use a port >= 1024, or an admin lowers net.ipv4.ip_unprivileged_port_start")
    return PortInUse(f"cannot publish host port {m.host_addr()}/{m.protocol}: {e.strerror}")


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def allocate(mappings: list[PortMapping], check: bool = True, owner=None) -> list[PortMapping]:
    """Give every mapping a concrete host port; check the fixed ones are free.

    A random port is one the kernel hands out for port 0 (the ephemeral
    range) that is free for this protocol on that address and not taken by
    another mapping of the same run.
    """
    check_conflicts(mappings)
    taken = {(m.protocol, m.host_port) for m in mappings if m.host_port}
    out = []
    for m in mappings:
        if m.host_port:
            if check:
                check_free(m, owner)
            out.append(m)
            continue
        if m.host_range:
            lo, hi = m.host_range
            for p in range(lo, hi + 1):
                if (m.protocol, p) in taken:
                    continue
                try:
                    host_socket(m.host_ip, p, m.protocol).close()
                except OSError:
                    continue
                taken.add((m.protocol, p))
                out.append(m.replace(host_port=p, host_range=None))
                break
            else:
                raise PortInUse(f"no free host port in {lo}-{hi} for {m.key}",
                                hint="choose another range or free a port of it")
            continue
        for _ in range(50):
            try:
                s = host_socket(m.host_ip, 0, m.protocol)
            except OSError as e:
                raise port_error(m, e) from None
            p = s.getsockname()[1]
            s.close()
            if (m.protocol, p) not in taken:
                taken.add((m.protocol, p))
                out.append(m.replace(host_port=p))
                break
        else:  # pragma: no cover - the kernel keeps handing out taken ports
            raise PortInUse(f"could not find a free host port for {m.key}")
    return out


def _proc_net_inodes(port: int, proto: str) -> set[str]:
    inodes = set()
    for fam in ("", "6"):
        try:
            with open(f"/proc/net/{proto}{fam}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    local, state, inode = parts[1], parts[3], parts[9]
                    if int(local.rsplit(":", 1)[1], 16) != port:
                        continue
                    if proto == "tcp" and state != "0A":  # LISTEN
                        continue
                    inodes.add(inode)
        except OSError:
            continue
    return inodes


def port_holder(port: int, proto: str = "tcp") -> str | None:
    """"pid 1234 (pasta)" for the process that holds a listening socket on ``port``.

    Only our own processes' fds are readable; another user's socket gives
    "another user's process". None when /proc does not tell.
    """
    inodes = _proc_net_inodes(port, proto)
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in targets:
                    return f"pid {pid} ({_comm(pid)})"
            except OSError:
                continue
    return "another user's process"


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        name = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""
        if name.startswith("python") and len(argv) > 2 and argv[1] == b"-m":
            name = argv[2].decode(errors="replace")
        if name:
            return name
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# Display (ps, port, inspect)

def _collapse(mappings: list[PortMapping]) -> list[tuple[str, int, int, int, int, str]]:
    """Group consecutive mappings into ranges (Docker's ps shows 8000-8002->80-82/tcp)."""
    items = sorted(mappings, key=lambda m: (m.host_ip, m.protocol, m.container_port))
    out: list[list] = []
    for m in items:
        if out:
            ip, hlo, hhi, clo, chi, proto = out[-1]
            if ip == m.host_ip_shown and proto == m.protocol and m.container_port == chi + 1 \
                    and m.host_port == hhi + 1:
                out[-1][2] += 1
                out[-1][4] += 1
                continue
        out.append([m.host_ip_shown, m.host_port, m.host_port, m.container_port, m.container_port, m.protocol])
    return [tuple(x) for x in out]  # type: ignore[misc]


def format_ps(mappings: list[PortMapping], exposed: list[str] = ()) -> str:
    """Docker's PORTS column: ``0.0.0.0:8080->80/tcp, 443/tcp``."""
    parts = []
    for ip, hlo, hhi, clo, chi, proto in _collapse(mappings):
        h = f"{hlo}" if hlo == hhi else f"{hlo}-{hhi}"
        c = f"{clo}" if clo == chi else f"{clo}-{chi}"
        addr = f"[{ip}]" if ":" in ip else ip
        parts.append(f"{addr}:{h}->{c}/{proto}")
    published = {m.key for m in mappings}
    for e in exposed:
        for port, proto in parse_expose(e):
            if f"{port}/{proto}" not in published:
                parts.append(f"{port}/{proto}")
                published.add(f"{port}/{proto}")
    return ", ".join(parts)


def format_port_lines(mappings: list[PortMapping], which: str | None = None) -> list[str]:
    """``rootless port C [PORT[/PROTO]]`` lines."""
    if which:
        port_s, _, proto = which.partition("/")
        proto = proto or "tcp"
        want = [m for m in mappings if str(m.container_port) == port_s and m.protocol == proto]
        return [m.host_addr() for m in want]
    return [f"{m.key} -> {m.host_addr()}" for m in sorted(mappings, key=lambda m: (m.container_port, m.protocol))]


def inspect_ports(mappings: list[PortMapping], exposed: list[str] = ()) -> dict:
    """NetworkSettings.Ports: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": null}``."""
    out: dict[str, list | None] = {}
    for e in exposed:
        for port, proto in parse_expose(e):
            out.setdefault(f"{port}/{proto}", None)
    for m in mappings:
        lst = out.get(m.key) or []
        lst.append({"HostIp": m.host_ip_shown, "HostPort": str(m.host_port)})
        out[m.key] = lst
    return out

"""The embedded DNS server of a user-defined network.

One :class:`DNSServer` per network listens on the network's gateway, port
53, inside the per-user network namespace. It answers A, AAAA and PTR
queries for the names of the containers on that network (name, aliases,
short id) from a :class:`Records` table that the holder updates as
containers start and stop, and forwards every other query, unchanged, to
the host's resolvers, relaying their answer back with the client's id.

The packet code (RFC 1035) is pure and hostile-input safe: a container can
send anything, so every read is bounds-checked and compression pointers
may only point backwards.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass, field

TYPE_A = 1
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1

RCODE_OK = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5

OPCODE_QUERY = 0
TTL = 10  # containers come and go: short TTLs, like aardvark-dns/Docker (600 s is Docker's; 60 s aardvark)
MAX_UDP = 512
MAX_TCP = 65535
TCP_IDLE = 10.0       # seconds a TCP client may stay silent
TCP_CLIENTS = 64      # concurrent TCP connections per server



def drain(sock: socket.socket, handle) -> None:
    """Read what a readable datagram socket holds (at most 64 datagrams a turn): ``handle(data, addr)``."""
    for _ in range(64):
        try:
            data, addr = sock.recvfrom(4096)
        except OSError:        # BlockingIOError, InterruptedError: nothing more now
            return
        handle(data, addr)

class DNSFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    name: str          # lower case, no trailing dot ("" is the root)
    qtype: int
    qclass: int


@dataclass(frozen=True)
class Message:
    id: int
    flags: int
    questions: tuple[Question, ...]
    answers: tuple["RR", ...] = ()

    @property
    def is_response(self) -> bool:
        return bool(self.flags & 0x8000)

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF

    @property
    def rd(self) -> bool:
        return bool(self.flags & 0x0100)

    @property
    def rcode(self) -> int:
        return self.flags & 0xF


@dataclass(frozen=True)
class RR:
    name: str
    rtype: int
    ttl: int
    data: object   # str (address or PTR target name) or raw bytes for other types


# ---------------------------------------------------------------------------
# Wire format

def _read_name(buf: bytes, off: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at ``off``; return (name, offset after it)."""
    labels: list[str] = []
    end = None
    jumps = 0
    total = 0
    while True:
        if off >= len(buf):
            raise DNSFormatError("name runs past the end of the packet")
        n = buf[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(buf):
                raise DNSFormatError("truncated compression pointer")
            ptr = ((n & 0x3F) << 8) | buf[off + 1]
            if end is None:
                end = off + 2
            if ptr >= off or jumps > 32:
                raise DNSFormatError("bad compression pointer")
            jumps += 1
            off = ptr
            continue
        if n & 0xC0:
            raise DNSFormatError("unknown label type")
        off += 1
        if n == 0:
            break
        if off + n > len(buf):
            raise DNSFormatError("label runs past the end of the packet")
        total += n + 1
        if total > 255:
            raise DNSFormatError("name longer than 255 bytes")
        labels.append(buf[off:off + n].decode("ascii", errors="replace"))
        off += n
    return ".".join(labels).lower(), (end if end is not None else off)


def encode_name(name: str) -> bytes:
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            b = label.encode("idna") if any(ord(c) > 127 for c in label) else label.encode("ascii")
            if not b or len(b) > 63:
                raise ValueError(f"bad DNS label in {name!r}")
            out.append(len(b))
            out += b
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def parse_message(buf: bytes) -> Message:
    """Parse the header, the questions and (for responses) the answers."""
    if len(buf) < 12:
        raise DNSFormatError("shorter than a DNS header")
    mid, flags, qd, an, _ns, _ar = struct.unpack("!6H", buf[:12])
    off = 12
    if qd > 16:
        raise DNSFormatError("too many questions")
    qs = []
    for _ in range(qd):
        name, off = _read_name(buf, off)
        if off + 4 > len(buf):
            raise DNSFormatError("truncated question")
        qtype, qclass = struct.unpack("!2H", buf[off:off + 4])
        off += 4
        qs.append(Question(name, qtype, qclass))
    answers = []
    if flags & 0x8000:
        for _ in range(min(an, 64)):
            name, off = _read_name(buf, off)
            if off + 10 > len(buf):
                raise DNSFormatError("truncated resource record")
            rtype, _rclass, ttl, rdlen = struct.unpack("!HHIH", buf[off:off + 10])
            off += 10
            if off + rdlen > len(buf):
                raise DNSFormatError("truncated rdata")
            rdata = buf[off:off + rdlen]
            if rtype == TYPE_A and rdlen == 4:
                data: object = socket.inet_ntop(socket.AF_INET, rdata)
            elif rtype == TYPE_AAAA and rdlen == 16:
                data = socket.inet_ntop(socket.AF_INET6, rdata)
            elif rtype == TYPE_PTR:
                data = _read_name(buf, off)[0]
            else:
                data = bytes(rdata)
            off += rdlen
            answers.append(RR(name, rtype, ttl, data))
    return Message(mid, flags, tuple(qs), tuple(answers))


def build_query(name: str, qtype: int, mid: int = 0, rd: bool = True) -> bytes:
    flags = 0x0100 if rd else 0
    return struct.pack("!6H", mid, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!2H", qtype, CLASS_IN)


def _rdata(rr: RR) -> bytes:
    if rr.rtype == TYPE_A:
        return socket.inet_pton(socket.AF_INET, str(rr.data))
    if rr.rtype == TYPE_AAAA:
        return socket.inet_pton(socket.AF_INET6, str(rr.data))
    if rr.rtype == TYPE_PTR:
        return encode_name(str(rr.data))
    return bytes(rr.data)  # type: ignore[arg-type]


def build_response(query: Message, answers: list[RR] | tuple[RR, ...] = (), rcode: int = RCODE_OK,
                   authoritative: bool = True, recursion_available: bool = True, max_size: int = MAX_UDP) -> bytes:
    """A response to ``query``: its id, RD copied, its question echoed, our answers (TC set when they
    do not all fit in ``max_size``: 512 over UDP, the client then asks again over TCP)."""
    flags = 0x8000 | (query.opcode << 11) | (query.flags & 0x0100) | (rcode & 0xF)
    if authoritative:
        flags |= 0x0400
    if recursion_available:
        flags |= 0x0080
    qs = query.questions[:1]
    body = bytearray()
    for q in qs:
        body += encode_name(q.name) + struct.pack("!2H", q.qtype, q.qclass)
    count = 0
    for rr in answers:
        rd = _rdata(rr)
        rec = encode_name(rr.name) + struct.pack("!HHIH", rr.rtype, CLASS_IN, rr.ttl, len(rd)) + rd
        if 12 + len(body) + len(rec) > max_size:
            flags |= 0x0200  # TC: the rest did not fit
            break
        body += rec
        count += 1
    return struct.pack("!6H", query.id, flags, len(qs), count, 0, 0) + bytes(body)


def error_response(buf: bytes, rcode: int) -> bytes | None:
    """FORMERR/SERVFAIL for a packet we could not (fully) parse; None if not even a header."""
    if len(buf) < 12:
        return None
    mid, flags = struct.unpack("!2H", buf[:4])
    if flags & 0x8000:
        return None  # never answer a response
    flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!6H", mid, flags, 0, 0, 0, 0)


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


def ptr_to_ip(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4`` (and ip6.arpa), else None."""
    try:
        if name.endswith(".in-addr.arpa"):
            parts = name[:-len(".in-addr.arpa")].split(".")
            if len(parts) != 4:
                return None
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        if name.endswith(".ip6.arpa"):
            nibbles = name[:-len(".ip6.arpa")].split(".")
            if len(nibbles) != 32 or any(len(n) != 1 for n in nibbles):
                return None
            h = "".join(reversed(nibbles))
            return str(ipaddress.IPv6Address(int(h, 16)))
    except ValueError:
        return None
    return None


# ---------------------------------------------------------------------------
# The table of names

@dataclass
class Records:
    """Names of one network: container id -> (names, addresses).

    A name may belong to several containers (an alias shared by replicas):
    all their addresses are answered (round robin is the client's business).
    """

    domain: str = ""   # optional search domain (name.domain also answers)
    _by_container: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)

    def set(self, container_id: str, names: list[str] | tuple[str, ...], addresses: list[str] | tuple[str, ...]) -> None:
        clean = tuple(dict.fromkeys(n.lower().rstrip(".") for n in names if n))
        self._by_container[container_id] = (clean, tuple(addresses))

    def remove(self, container_id: str) -> None:
        self._by_container.pop(container_id, None)

    def __contains__(self, container_id: str) -> bool:
        return container_id in self._by_container

    def _strip(self, name: str) -> str:
        if self.domain and name.endswith("." + self.domain):
            return name[:-len(self.domain) - 1]
        return name

    def lookup(self, name: str) -> list[str] | None:
        """Addresses for ``name`` (None: not ours)."""
        name = self._strip(name.lower().rstrip("."))
        out: list[str] = []
        found = False
        for names, addrs in self._by_container.values():
            if name in names:
                found = True
                out.extend(a for a in addrs if a not in out)
        return out if found else None

    def reverse(self, ip: str) -> str | None:
        for names, addrs in self._by_container.values():
            if ip in addrs and names:
                return names[0] + (f".{self.domain}" if self.domain else "")
        return None

    def snapshot(self) -> dict[str, dict]:
        return {cid: {"names": list(n), "addresses": list(a)} for cid, (n, a) in self._by_container.items()}


def answer_locally(q: Message, records: Records, max_size: int = MAX_UDP) -> bytes | None:
    """Our answer to ``q``, or None when the query must be forwarded."""
    if q.opcode != OPCODE_QUERY:
        return build_response(q, rcode=RCODE_NOTIMP)
    if len(q.questions) != 1:
        return build_response(q, rcode=RCODE_FORMERR)
    qq = q.questions[0]
    if qq.qclass not in (CLASS_IN, TYPE_ANY):
        return None
    if qq.qtype == TYPE_PTR:
        ip = ptr_to_ip(qq.name)
        target = records.reverse(ip) if ip else None
        if target is None:
            return None
        return build_response(q, [RR(qq.name, TYPE_PTR, TTL, target)], max_size=max_size)
    addrs = records.lookup(qq.name)
    if addrs is None:
        return None
    want = {TYPE_A: 4, TYPE_AAAA: 6}.get(qq.qtype)
    if qq.qtype == TYPE_ANY:
        rrs = [RR(qq.name, TYPE_A if ":" not in a else TYPE_AAAA, TTL, a) for a in addrs]
    elif want is None:
        rrs = []  # a name of ours, another type (MX, TXT...): NODATA
    else:
        rrs = [RR(qq.name, qq.qtype, TTL, a) for a in addrs if (":" in a) == (want == 6)]
    return build_response(q, rrs, max_size=max_size)


# ---------------------------------------------------------------------------
# The server

def host_resolvers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The host's nameservers (glibc's default 127.0.0.1 when none are listed)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        ipaddress.ip_address(parts[1].split("%")[0])
                    except ValueError:
                        continue
                    out.append((parts[1], 53))
    except OSError:
        pass
    return out or [("127.0.0.1", 53)]


@dataclass
class _Pending:
    client: tuple
    client_id: int
    sock: socket.socket
    query: bytes
    upstreams: tuple            # the resolvers of this query (the client's own with --dns)
    tried: int
    deadline: float


class Forwarder:
    """Sends queries to upstream resolvers and relays their answers back to the clients.

    One pending table for every server that uses it: the holder has one
    forwarder for all its networks (an answer read from the shared upstream
    socket finds its client whichever network asked), and each query carries
    its own upstreams (a container's ``--dns``). ``up4``/``up6`` are where
    queries leave from (the holder makes them in the host's network namespace
    before it leaves it: resolvers on the host's loopback stay reachable).
    """

    def __init__(self, up4: socket.socket | None = None, up6: socket.socket | None = None, timeout: float = 2.0):
        self.up4, self.up6 = up4, up6
        for s in self.sockets():
            s.setblocking(False)
        self.timeout = timeout
        self._pending: dict[int, _Pending] = {}

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.up4, self.up6) if s is not None]

    def _sock_for(self, upstream) -> socket.socket | None:
        return self.up6 if ":" in upstream[0] else self.up4

    def _new_id(self) -> int:
        while True:
            i = struct.unpack("!H", os.urandom(2))[0]
            if i not in self._pending:
                return i

    def forward(self, sock: socket.socket, data: bytes, client, client_id: int, upstreams, tried: int = 0) -> None:
        """Send the query ``data`` (from ``client`` on ``sock``) to ``upstreams[tried]``."""
        upstreams = tuple(upstreams)
        if len(self._pending) >= 4096:  # a flood: forget the oldest query
            oldest = min(self._pending, key=lambda k: self._pending[k].deadline)
            del self._pending[oldest]
        uid = self._new_id()
        q = struct.pack("!H", uid) + data[2:]
        self._pending[uid] = _Pending(client, client_id, sock, q, upstreams, tried, time.monotonic() + self.timeout)
        up = upstreams[tried % len(upstreams)]
        out = self._sock_for(up)
        if out is None:
            self._pending[uid].deadline = 0.0     # no socket of that family: the next upstream at once
            return
        try:
            out.sendto(q, up)
        except OSError:
            pass  # the deadline retries the next upstream

    def handle(self, sock: socket.socket) -> None:
        """An upstream socket is readable: drain it."""
        drain(sock, self._from_upstream)

    def _from_upstream(self, data: bytes, addr) -> None:
        if len(data) < 12:
            return
        uid = struct.unpack("!H", data[:2])[0]
        p = self._pending.get(uid)
        if p is None:
            return
        expected = p.upstreams[p.tried % len(p.upstreams)]
        if (addr[0], addr[1]) != (expected[0], expected[1]) and not _same_host(addr, expected):
            return  # not from the server we asked: ignore (spoofing)
        del self._pending[uid]
        _send(p.sock, struct.pack("!H", p.client_id) + data[2:], p.client)

    def expire(self, now: float) -> None:
        """Retry timed-out queries on the next upstream; SERVFAIL after all were tried."""
        for uid, p in list(self._pending.items()):
            if p.deadline > now:
                continue
            del self._pending[uid]
            data = struct.pack("!H", p.client_id) + p.query[2:]
            if p.tried + 1 < len(p.upstreams):
                self.forward(p.sock, data, p.client, p.client_id, p.upstreams, p.tried + 1)
                continue
            try:
                _send(p.sock, build_response(parse_message(data), rcode=RCODE_SERVFAIL, authoritative=False),
                      p.client)
            except DNSFormatError:
                pass

    def close(self) -> None:
        for s in self.sockets():
            s.close()


def _same_host(addr, expected) -> bool:
    try:
        return ipaddress.ip_address(addr[0].split("%")[0]) == ipaddress.ip_address(expected[0]) \
            and addr[1] == expected[1]
    except ValueError:
        return False


def _read_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        b = sock.recv(n - len(buf))
        if not b:
            return None
        buf += b
    return buf


def _read_tcp_message(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message (RFC 1035 4.2.2); None at the end of the stream."""
    head = _read_exact(sock, 2)
    if head is None:
        return None
    n = struct.unpack("!H", head)[0]
    if n == 0:
        raise ValueError("empty DNS message")
    return _read_exact(sock, n)


def _send(sock: socket.socket, data: bytes, addr) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        pass


class DNSServer:
    """Answers from ``records``, forwards the rest to ``upstreams``.

    Not an event loop itself: the owner watches :meth:`sockets` for
    readability and calls :meth:`handle` (and :meth:`expire` now and then),
    so one selector in the holder serves every network. ``serve`` runs a
    private loop (for tests and a standalone forwarder).

    ``forwarder`` sends what is not ours upstream; the holder passes one
    :class:`Forwarder` to all its servers (and watches its sockets itself).
    Without one the server makes its own, from ``upstream_socket`` if given.
    ``view(client_address) -> Records`` is what a client may see (a container
    on several networks finds the names of all of them);
    ``upstreams_for(client_address) -> list | None`` the resolvers of that
    client (a container's ``--dns``); None: ``records`` and ``upstreams``.

    ``listen`` may hold listening TCP sockets too (RFC 7766: a client whose
    UDP answer came truncated asks again over TCP). Each TCP client gets a
    thread; it answers from the records (under ``lock``: the owner changes
    them from its own thread) or relays the query upstream over TCP, on a
    connection from ``connect_upstream((ip, port)) -> socket`` (the holder's
    are made in the host's network namespace, like the UDP socket).
    """

    def __init__(self, listen: list[socket.socket], records: Records, upstreams: list[tuple[str, int]],
                 upstream_socket: socket.socket | None = None, timeout: float = 2.0, view=None,
                 forwarder: Forwarder | None = None, upstreams_for=None, lock=None, connect_upstream=None):
        import threading

        self.lock = lock if lock is not None else threading.RLock()
        self.connect_upstream = connect_upstream or (lambda addr: socket.create_connection(addr, timeout=timeout))
        self._tcp_clients = 0
        self.listen = list(listen)
        self.records = records
        self.view = view
        self.upstreams_for = upstreams_for
        self.upstreams = list(upstreams)
        self.timeout = timeout
        self._own_forwarder = forwarder is None
        if forwarder is None:
            if upstream_socket is None:
                fam = socket.AF_INET6 if upstreams and ":" in upstreams[0][0] else socket.AF_INET
                upstream_socket = socket.socket(fam, socket.SOCK_DGRAM)
            six = upstream_socket.family == socket.AF_INET6
            forwarder = Forwarder(None if six else upstream_socket, upstream_socket if six else None, timeout)
        self.forwarder = forwarder
        for s in self.listen:
            s.setblocking(False)
        self._closed = False

    def sockets(self) -> list[socket.socket]:
        """The sockets to watch: the listening ones (and those of the forwarder when it is ours)."""
        return [*self.listen, *(self.forwarder.sockets() if self._own_forwarder else ())]

    def handle(self, sock: socket.socket) -> None:
        """``sock`` is readable: drain it."""
        if sock in self.forwarder.sockets():
            self.forwarder.handle(sock)
            return
        if sock.type == socket.SOCK_STREAM:
            self._accept(sock)
            return
        drain(sock, lambda data, addr: self._from_client(sock, data, addr))

    def _client(self, addr) -> tuple[Records, list]:
        """The records and the upstreams of the client at ``addr``."""
        records, upstreams = self.records, self.upstreams
        try:
            if self.view is not None:
                records = self.view(addr) or self.records
            if self.upstreams_for is not None:
                mine = self.upstreams_for(addr)
                if mine is not None:
                    upstreams = list(mine)
        except Exception:  # noqa: BLE001 - a bad callback must not kill the server
            pass
        return records, upstreams

    def _from_client(self, sock: socket.socket, data: bytes, addr) -> None:
        try:
            q = parse_message(data)
        except DNSFormatError:
            resp = error_response(data, RCODE_FORMERR)
            if resp:
                _send(sock, resp, addr)
            return
        if q.is_response:
            return
        records, upstreams = self._client(addr)
        resp = answer_locally(q, records)
        if resp is not None:
            _send(sock, resp, addr)
            return
        if not upstreams:
            _send(sock, build_response(q, rcode=RCODE_SERVFAIL, authoritative=False), addr)
            return
        self.forwarder.forward(sock, data, addr, q.id, upstreams)

    # -- TCP
    def _accept(self, lsock: socket.socket) -> None:
        import threading

        for _ in range(16):
            try:
                conn, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            with self.lock:
                full = self._tcp_clients >= TCP_CLIENTS
                if not full:
                    self._tcp_clients += 1
            if full:
                conn.close()
                continue
            threading.Thread(target=self._tcp_client, args=(conn, addr), daemon=True).start()

    def _tcp_client(self, conn: socket.socket, addr) -> None:
        try:
            with conn:
                conn.settimeout(TCP_IDLE)
                while not self._closed:
                    data = _read_tcp_message(conn)
                    if data is None:
                        return
                    resp = self._answer_tcp(data, addr)
                    if resp is None:
                        continue
                    conn.sendall(struct.pack("!H", len(resp)) + resp)
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                self._tcp_clients -= 1

    def _answer_tcp(self, data: bytes, addr) -> bytes | None:
        try:
            q = parse_message(data)
        except DNSFormatError:
            return error_response(data, RCODE_FORMERR)
        if q.is_response:
            return None
        with self.lock:
            records, upstreams = self._client(addr)
            resp = answer_locally(q, records, max_size=MAX_TCP)
        if resp is not None:
            return resp
        for up in upstreams:
            got = self._relay_tcp(up, data)
            if got is not None:
                return got
        return build_response(q, rcode=RCODE_SERVFAIL, authoritative=False, max_size=MAX_TCP)

    def _relay_tcp(self, upstream, data: bytes) -> bytes | None:
        """The answer of ``upstream`` over TCP to the query ``data`` (None: it failed)."""
        try:
            s = self.connect_upstream(upstream)
        except OSError:
            return None
        try:
            with s:
                s.settimeout(self.timeout)
                s.sendall(struct.pack("!H", len(data)) + data)
                got = _read_tcp_message(s)
        except (OSError, ValueError):
            return None
        if got is None or len(got) < 12 or got[:2] != data[:2]:
            return None
        return got

    def expire(self, now: float) -> None:
        """Retry timed-out queries (only when the forwarder is ours: else its owner does it)."""
        if self._own_forwarder:
            self.forwarder.expire(now)

    def close(self) -> None:
        self._closed = True
        for s in self.sockets():
            s.close()

    def serve(self, stop) -> None:
        """Run until ``stop()`` is true (checked every 0.2 s)."""
        import selectors

        sel = selectors.DefaultSelector()
        for s in self.sockets():
            sel.register(s, selectors.EVENT_READ)
        try:
            while not stop():
                for key, _ in sel.select(0.2):
                    self.handle(key.fileobj)  # type: ignore[arg-type]
                self.expire(time.monotonic())
        finally:
            sel.close()

"""A TCP relay for published ports: host sockets in, the container's loopback out, splice(2) between.

Every published TCP port goes through it, whatever the host address:

* pasta: pasta 0~git20230309 (Debian 12) segfaults on the first inbound
  connection from a client that is not on loopback (its tap path) and shows
  local clients as 127.0.0.1; the relay keeps every client's address and
  moves more bytes per second than pasta 2023 on the same machine (bench/net).
  pasta keeps UDP and the container's way out;
* slirp4netns: its own forwarding copies through its user-space TCP stack
  and shows every client as 10.0.2.2.

The host side is bound by the caller (:func:`rootless.network.ports.host_socket`):
a port on every address (``-p 8080:80``) is one dual-stack socket on ``::``,
so IPv4 clients arrive as ``::ffff:a.b.c.d``; the relay connects for them
from a.b.c.d over IPv4 (:func:`upstream_candidates`).

The relay is a child of the container's monitor (it dies with it:
PR_SET_PDEATHSIG): it gets the listening sockets bound in the host's
network namespace, enters the container's user and network namespaces, and
for each client connects to 127.0.0.1:PORT there ([::1] for an IPv6 client;
the other family when nothing listens on that one). ``stop`` kills it,
which frees the host ports.

The server sees the client's own address (:class:`SourceAddress`): the relay
is root in the container's user namespace, so it binds its upstream socket
to the client's address before connecting. A loopback client (127.0.0.0/8,
::1) keeps its address as it is: the container's ``lo`` owns the whole
range. Any other client address (a LAN client of a port on every address,
a client that bound a host address) is not local in the container: the
socket is IP_TRANSPARENT, and one policy route in the container's namespace
(``from 127.0.0.0/8 lookup 29292``, table 29292: ``local default dev lo``;
the same for ::1) delivers the server's answers back to the relay instead
of sending them out. Replies from a loopback source could never leave the
namespace anyway, so the route changes nothing else. Where that cannot be
set up, the relay connects from the loopback address as before.
"""

from __future__ import annotations

import fcntl
import os
import threading

PIPE_SIZE = 1 << 20


class Splicer:
    """Bidirectional TCP relay between two connected sockets, one thread per direction (no copies)."""

    def __init__(self, a, b, on_done=None, start: bool = True):
        self.a, self.b = a, b
        self.on_done = on_done
        self._left = 2
        self._lock = threading.Lock()
        if start:
            self.start()

    def start(self) -> None:
        """Start the two pumps (``on_done`` may be called from them as soon as this returns, or before)."""
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst) -> None:
        import socket

        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            try:
                fcntl.fcntl(w, 1031, PIPE_SIZE)  # F_SETPIPE_SZ
            except OSError:
                pass
            sfd, dfd = src.fileno(), dst.fileno()
            while True:
                n = os.splice(sfd, w, PIPE_SIZE, flags=1)  # SPLICE_F_MOVE (F_MORE measured no better)
                if n == 0:
                    break
                while n:
                    n -= os.splice(r, dfd, n, flags=1)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            os.close(r)
            os.close(w)
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self.a.close()
                self.b.close()
                if self.on_done is not None:
                    self.on_done(self)


IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
IP_BIND_ADDRESS_NO_PORT = 24
REPLY_TABLE = 29292        # the policy-routing table of the transparent path (in the container's namespace)
REPLY_RULE_PRIORITY = 100  # before "main" (32766); "local" (0) still wins for the namespace's own addresses


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


class SourceAddress:
    """Upstream sockets that carry the client's own address (the relay is in the container's namespaces)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._transparent: dict[int, bool] = {}     # address family -> reply route in place

    def socket(self, client_ip: str, family: int):
        """A TCP socket of ``family``, bound to ``client_ip`` where that works, else unbound."""
        import socket

        s = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        if not client_ip or (":" in client_ip) != (family == socket.AF_INET6):
            return s
        try:
            if not is_loopback(client_ip):
                if not self.transparent(family):
                    return s
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
                else:
                    s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # the port is chosen at connect
            except OSError:
                pass
            s.bind((client_ip, 0))
        except OSError:
            s.close()
            return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        return s

    def transparent(self, family: int) -> bool:
        """Is the reply route for transparent sockets of ``family`` in place (set up on first use)?"""
        with self._lock:
            if family not in self._transparent:
                try:
                    add_reply_route(family)
                    self._transparent[family] = True
                except Exception:  # noqa: BLE001 - no pyroute2, no CAP_NET_ADMIN, no IPv6: no transparency
                    self._transparent[family] = False
            return self._transparent[family]

    def failed(self, family: int) -> None:
        """A transparent connect failed: use unbound sockets for non-loopback clients from now on."""
        with self._lock:
            self._transparent[family] = False


def add_reply_route(family: int) -> None:
    """In the current network namespace: packets from the loopback range to any address are delivered locally.

    That is how the server's answers reach the relay's IP_TRANSPARENT socket
    bound to a non-local client address.
    """
    import errno
    import socket

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    v6 = family == socket.AF_INET6
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        for op in (lambda: ipr.route("add", dst="::" if v6 else "0.0.0.0", dst_len=0, type="local", scope="host",
                                     oif=lo, table=REPLY_TABLE, family=family),
                   lambda: ipr.rule("add", family=family, src="::1" if v6 else "127.0.0.0", src_len=128 if v6 else 8,
                                    table=REPLY_TABLE, priority=REPLY_RULE_PRIORITY)):
            try:
                op()
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise


def upstream_candidates(peer: str, port: int, v6_listener: bool = False) -> list[tuple[str, str, int]]:
    """Where to connect for a client at ``peer``: ``[(source, target, family), ...]``, best first.

    The client's own family first, from its own address: an IPv4 client
    (also an IPv4-mapped one, ``::ffff:a.b.c.d``, as a dual-stack listener
    sees it) to 127.0.0.1 from a.b.c.d, an IPv6 client to ::1 from its
    address. Then the other family's loopback, unbound, for a server that
    listens on one family only (Docker's proxy reaches an IPv4-only server
    from an IPv6 client too). ``peer`` "" (unknown): the listener's family.
    """
    import socket

    if peer.lower().startswith("::ffff:") and "." in peer:
        peer = peer[7:]
    v6 = ":" in peer if peer else v6_listener
    first = (peer, "::1" if v6 else "127.0.0.1", socket.AF_INET6 if v6 else socket.AF_INET)
    other = ("", "127.0.0.1" if v6 else "::1", socket.AF_INET if v6 else socket.AF_INET6)
    return [first, other]


def _connect_upstream(source: SourceAddress, candidates, port: int):
    """A socket connected to the container's loopback from the client's address where possible; None when
    nothing listens there (or it cannot be reached)."""
    import socket

    for client_ip, target, family in candidates:
        try:
            up = source.socket(client_ip, family)
        except OSError:
            continue                      # no such family here (IPv6 off)
        bound = up.getsockname()[0] not in ("0.0.0.0", "::")
        while True:
            up.settimeout(10)
            try:
                up.connect((target, port))
                return up
            except ConnectionRefusedError:
                up.close()
                break                     # nothing listens on this family: the next candidate
            except OSError:
                up.close()
                if not bound:
                    break
                if not is_loopback(client_ip):
                    source.failed(family)   # the reply route does not work here: unbound from now on
                try:
                    up, bound = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC), False
                except OSError:
                    break
    return None


def _serve(listeners: list, ports: list[int]) -> None:
    import selectors
    import socket

    sel = selectors.DefaultSelector()
    for s, p in zip(listeners, ports):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, (p, s.family == socket.AF_INET6))
    source = SourceAddress()

    def connect(client, port: int, v6_listener: bool):
        client.setblocking(True)
        try:
            peer = client.getpeername()[0]
        except OSError:
            peer = ""
        up = _connect_upstream(source, upstream_candidates(peer, port, v6_listener), port)
        if up is None:
            client.close()   # nothing listens in the container: the client sees the connection closed
            return
        up.settimeout(None)
        for x in (client, up):
            try:
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        Splicer(client, up)

    while True:
        for key, _ in sel.select():
            for _ in range(16):
                try:
                    client, _addr = key.fileobj.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                threading.Thread(target=connect, args=(client, *key.data), daemon=True).start()


def start_relay(pid: int, mappings, sockets) -> int:
    """Fork the relay for container ``pid``: ``sockets`` (bound, listening, host side) -> loopback ports inside.

    Returns the relay's pid once it is in the container's namespaces and serving.
    """
    import signal

    from rootless import syscalls
    from rootless.errors import NetworkError

    ports = [m.container_port for m in mappings]
    keep = {s.fileno() for s in sockets}
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.close(r)
            syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd > 2 and fd not in keep and fd != w:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            for ns, flag in (("user", syscalls.CLONE_NEWUSER), ("net", syscalls.CLONE_NEWNET)):
                fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if os.stat(f"/proc/{pid}/ns/{ns}").st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino:
                        syscalls.setns(fd, flag)
                finally:
                    os.close(fd)
            os.write(w, b"1")
            os.close(w)
            _serve(list(sockets), ports)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(code)
    os.close(w)
    ok = os.read(r, 1) == b"1"
    os.close(r)
    if not ok:
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        raise NetworkError("the port relay could not enter the container's network namespace",
                           hint="is the container still running?")
    return child

"""The embedded DNS server on real UDP sockets on 127.0.0.1.

Clients: busybox nslookup (an independent resolver implementation) and raw
queries; upstream: a second server on 127.0.0.1 standing in for the host's
resolver.
"""

import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from rootless.network.dns import (RCODE_NXDOMAIN, RCODE_OK, RCODE_SERVFAIL, TYPE_A, TYPE_PTR, DNSServer, Records,
                                  RR, build_query, build_response, parse_message)


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


class Running:
    def __init__(self, server):
        self.server = server
        self.stopped = False
        self.thread = threading.Thread(target=server.serve, args=(lambda: self.stopped,), daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped = True
        self.thread.join(5)
        self.server.close()


class Upstream:
    """A minimal authoritative server on UDP and TCP (one port number): known names answer (a name may have
    several addresses), the rest NXDOMAIN. ``seen`` has the queries, ``seen_tcp`` those that came over TCP."""

    def __init__(self, names):
        for _ in range(50):
            self.sock = udp()
            self.port = self.sock.getsockname()[1]
            self.tcp = socket.socket()
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.sock.close()
                self.tcp.close()
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.names = names
        self.seen = []
        self.seen_tcp = []
        self.sock.settimeout(0.2)
        self.stopped = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        self.tcp_thread = threading.Thread(target=self.tcp_loop, daemon=True)
        self.tcp_thread.start()

    def answer(self, data, max_size=512):
        q = parse_message(data)
        self.seen.append(q)
        name = q.questions[0].name
        if name in self.names:
            addrs = self.names[name]
            addrs = [addrs] if isinstance(addrs, str) else addrs
            return build_response(q, [RR(name, TYPE_A, 30, a) for a in addrs], max_size=max_size)
        return build_response(q, rcode=RCODE_NXDOMAIN)

    def loop(self):
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.sock.sendto(self.answer(data), addr)

    def tcp_loop(self):
        while not self.stopped:
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            with c:
                c.settimeout(5)
                try:
                    n = struct.unpack("!H", c.recv(2))[0]
                    data = b""
                    while len(data) < n:
                        data += c.recv(n - len(data))
                    self.seen_tcp.append(parse_message(data))
                    r = self.answer(data, max_size=65535)
                    c.sendall(struct.pack("!H", len(r)) + r)
                except (OSError, struct.error):
                    pass

    def stop(self):
        self.stopped = True
        self.thread.join(5)
        self.tcp_thread.join(5)
        self.sock.close()
        self.tcp.close()


def ask(port, name, qtype=TYPE_A, mid=4242, timeout=5.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(timeout)
        c.sendto(build_query(name, qtype, mid=mid), ("127.0.0.1", port))
        data, _ = c.recvfrom(4096)
    return parse_message(data)


@pytest.fixture
def upstream():
    u = Upstream({"example.test": "192.0.2.80"})
    yield u
    u.stop()


def test_answers_and_forwards_with_busybox_nslookup(upstream):
    bb = shutil.which("busybox")
    if bb is None:
        pytest.skip("busybox not installed (apt-get install busybox-static)")
    listen = udp()
    port = listen.getsockname()[1]
    rec = Records()
    rec.set("c1", ["web", "www"], ["10.89.0.2"])
    srv = Running(DNSServer([listen], rec, [("127.0.0.1", upstream.port)]))
    try:
        out = subprocess.run([bb, "nslookup", "web", f"127.0.0.1:{port}"], capture_output=True, text=True,
                             timeout=20)
        assert out.returncode == 0, out
        assert "Address: 10.89.0.2" in out.stdout
        out = subprocess.run([bb, "nslookup", "example.test", f"127.0.0.1:{port}"], capture_output=True,
                             text=True, timeout=20)
        assert "Address: 192.0.2.80" in out.stdout, out
        assert any(q.questions[0].name == "example.test" for q in upstream.seen)
        assert not any(q.questions[0].name == "web" for q in upstream.seen)  # ours: never forwarded
        out = subprocess.run([bb, "nslookup", "10.89.0.2", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=20)
        assert "name = web" in out.stdout, out
    finally:
        srv.stop()


def test_forwarded_answers_keep_the_client_id_and_table_updates(upstream):
    listen = udp()
    port = listen.getsockname()[1]
    rec = Records()
    srv = Running(DNSServer([listen], rec, [("127.0.0.1", upstream.port)]))
    try:
        r = ask(port, "example.test", mid=0x5151)
        assert r.id == 0x5151 and r.rcode == RCODE_OK and r.answers[0].data == "192.0.2.80"
        # the upstream saw another id (ours), not the client's
        assert upstream.seen[-1].id != 0x5151 or len(upstream.seen) > 1
        r = ask(port, "db")
        assert r.rcode == RCODE_NXDOMAIN  # not ours yet: the upstream says no
        rec.set("c2", ["db"], ["10.89.0.3"])
        r = ask(port, "db")
        assert r.rcode == RCODE_OK and r.answers[0].data == "10.89.0.3"
        r = ask(port, "3.0.89.10.in-addr.arpa", TYPE_PTR)
        assert r.answers[0].data == "db"
        rec.remove("c2")
        assert ask(port, "db").rcode == RCODE_NXDOMAIN
    finally:
        srv.stop()


def test_silent_upstream_fails_over_then_servfail(upstream):
    silent = udp()  # bound, never answers
    listen = udp()
    port = listen.getsockname()[1]
    srv = Running(DNSServer([listen], Records(), [("127.0.0.1", silent.getsockname()[1]),
                                                   ("127.0.0.1", upstream.port)], timeout=0.3))
    try:
        t0 = time.monotonic()
        r = ask(port, "example.test")
        assert r.answers[0].data == "192.0.2.80"
        assert time.monotonic() - t0 >= 0.25  # it waited for the first one
    finally:
        srv.stop()
    listen = udp()
    port = listen.getsockname()[1]
    srv = Running(DNSServer([listen], Records(), [("127.0.0.1", silent.getsockname()[1])], timeout=0.3))
    try:
        r = ask(port, "example.test", mid=77)
        assert r.id == 77 and r.rcode == RCODE_SERVFAIL
    finally:
        srv.stop()
        silent.close()


def test_answer_from_a_stranger_is_ignored(upstream):
    listen = udp()
    port = listen.getsockname()[1]
    blackhole = udp()
    srv = DNSServer([listen], Records(), [("127.0.0.1", blackhole.getsockname()[1])], timeout=0.5)
    run = Running(srv)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(build_query("example.test", TYPE_A, mid=9), ("127.0.0.1", port))
            q, up_addr = blackhole.recvfrom(4096)
            forged = build_response(parse_message(q), [RR("example.test", TYPE_A, 30, "6.6.6.6")])
            # a third party sends the "answer" to the forwarder's upstream socket
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as evil:
                evil.sendto(forged, up_addr)
            data, _ = c.recvfrom(4096)
        r = parse_message(data)
        assert r.rcode == RCODE_SERVFAIL and not r.answers
    finally:
        run.stop()
        blackhole.close()


def test_garbage_gets_formerr_and_the_server_survives():
    listen = udp()
    port = listen.getsockname()[1]
    rec = Records()
    rec.set("c", ["web"], ["10.89.0.2"])
    srv = Running(DNSServer([listen], rec, []))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(3)
            c.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c", ("127.0.0.1", port))
            data, _ = c.recvfrom(4096)
            assert data[:2] == b"\x12\x34" and data[3] & 0xF == 1
            c.sendto(b"x", ("127.0.0.1", port))  # too short: no answer at all
        assert ask(port, "web").answers[0].data == "10.89.0.2"
    finally:
        srv.stop()


def udp_and_tcp():
    """A UDP socket and a listening TCP socket on one port of 127.0.0.1."""
    for _ in range(50):
        u, t = udp(), socket.socket()
        try:
            t.bind(("127.0.0.1", u.getsockname()[1]))
            t.listen(8)
            return u, t
        except OSError:
            u.close()
            t.close()
    raise AssertionError("no port free for both UDP and TCP")


def ask_tcp(port, name, qtype=TYPE_A, mid=4343):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        q = build_query(name, qtype, mid=mid)
        c.sendall(struct.pack("!H", len(q)) + q)
        buf = b""
        while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
            b = c.recv(65535)
            assert b, "the server closed the connection"
            buf += b
        # a second query on the same connection (RFC 7766: connections are reused)
        c.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", c.recv(2))[0]
        again = b""
        while len(again) < n:
            again += c.recv(n - len(again))
    first = parse_message(buf[2:])
    assert parse_message(again) == first
    return first


def test_tcp_answers_what_udp_truncates_and_relays_upstream_over_tcp():
    """RFC 7766: an answer too big for UDP comes with TC set; the client asks again over TCP and gets it
    whole, from the records or from the upstream (over TCP: its UDP answer would be truncated too)."""
    many = [f"10.89.{i // 200}.{i % 200 + 2}" for i in range(60)]
    up = Upstream({"big.test": many, "example.test": "192.0.2.80"})
    listen, tcp = udp_and_tcp()
    port = listen.getsockname()[1]
    rec = Records()
    rec.set("c1", ["web"], ["10.89.0.2"])
    rec.set("c2", ["replicas"], many)
    srv = Running(DNSServer([listen, tcp], rec, [("127.0.0.1", up.port)]))
    try:
        r = ask(port, "replicas")
        assert r.flags & 0x0200 and len(r.answers) < len(many)        # UDP: truncated
        r = ask_tcp(port, "replicas", mid=0x7777)
        assert r.id == 0x7777 and not r.flags & 0x0200 and [a.data for a in r.answers] == many
        assert [a.data for a in ask_tcp(port, "web").answers] == ["10.89.0.2"]
        assert not up.seen                                           # ours: never forwarded
        r = ask(port, "big.test")
        assert r.flags & 0x0200 and len(r.answers) < len(many)
        r = ask_tcp(port, "big.test", mid=0x1234)
        assert r.id == 0x1234 and [a.data for a in r.answers] == many
        assert [q.questions[0].name for q in up.seen_tcp][-1] == "big.test"
        assert ask_tcp(port, "nothing.test").rcode == RCODE_NXDOMAIN
    finally:
        srv.stop()
        up.stop()
    # no upstream answers over TCP: SERVFAIL, and the server stays up
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))          # bound, not listening: connection refused
    listen, tcp = udp_and_tcp()
    port = listen.getsockname()[1]
    srv = Running(DNSServer([listen, tcp], Records(), [("127.0.0.1", silent.getsockname()[1])], timeout=0.5))
    try:
        assert ask_tcp(port, "example.test").rcode == RCODE_SERVFAIL
        assert ask_tcp(port, "example.test").rcode == RCODE_SERVFAIL
    finally:
        srv.stop()
        silent.close()

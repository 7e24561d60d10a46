"""Host port allocation and the port-in-use error: real sockets on the loopback (127.0.0.1, ::1) only."""

import os
import socket

import pytest

from rootless.errors import PortInUse, UsageError
from rootless.network.ports import (PortMapping, allocate, bind_host_ports, host_socket, parse_publish,
                                    port_holder)
from tests.conftest import has_ipv6_loopback


# The functions below touch only the loopback of this host (bind/close).

def test_allocate_random_and_range():
    got = allocate(parse_publish("127.0.0.1::80") + parse_publish("127.0.0.1::81/udp"))
    assert all(m.host_port > 0 for m in got)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        s.listen(1)
        # the range starts with a busy port: the next one is taken
        got = allocate([PortMapping(80, "tcp", "127.0.0.1", 0, (busy, busy + 50))])
        assert busy < got[0].host_port <= busy + 50
        with pytest.raises(PortInUse) as ei:
            allocate(parse_publish(f"127.0.0.1:{busy}:80"))
        e = ei.value
        assert e.exit_code == 125
        assert str(busy) in e.message
        # we hold it ourselves: /proc names this very process
        assert f"pid {os.getpid()}" in e.message
        assert port_holder(busy) .startswith(f"pid {os.getpid()}")


def test_allocate_bad_address():
    with pytest.raises(UsageError, match="no such address"):
        allocate(parse_publish("198.51.100.254:8080:80"))


def test_every_address_is_one_dual_stack_socket():
    """-p PORT:80 binds [::] with IPV6_V6ONLY off: IPv4 clients arrive IPv4-mapped, IPv6 ones as they are;
    a port held on 127.0.0.1 is taken for it too (125 naming the holder)."""
    if not has_ipv6_loopback():
        s = host_socket("", 0, "tcp")
        assert s.family == socket.AF_INET and s.getsockname()[0] == "0.0.0.0"
        s.close()
        pytest.skip("this host has no IPv6 on lo (ip -6 addr show lo): 0.0.0.0 instead of a dual-stack [::]")
    with host_socket("", 0, "tcp") as s:
        assert s.family == socket.AF_INET6 and s.getsockname()[0] == "::"
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = s.getsockname()[1]
        seen = []
        for fam, dst in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(fam) as c:
                c.connect((dst, port))
                conn, addr = s.accept()
                seen.append(addr[0])
                conn.close()
        assert seen == ["::ffff:127.0.0.1", "::1"]
    # an explicit [::] is IPv6 only (as Docker binds it), 0.0.0.0 IPv4 only
    with host_socket("::", 0, "tcp") as s:
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    # UDP on every address: dual-stack as well (it was 0.0.0.0: IPv6 clients were never answered)
    with host_socket("", 0, "udp") as s:
        assert s.family == socket.AF_INET6 and s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = s.getsockname()[1]
        for fam, dst in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(fam, socket.SOCK_DGRAM) as c:
                c.settimeout(5)
                c.sendto(b"hi", (dst, port))
                data, addr = s.recvfrom(10)
                s.sendto(b"back", addr)
                assert data == b"hi" and c.recv(10) == b"back"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        busy = held.getsockname()[1]
        with pytest.raises(PortInUse) as ei:
            bind_host_ports(parse_publish(f"{busy}:80"))
        assert ei.value.exit_code == 125 and f"pid {os.getpid()}" in ei.value.message

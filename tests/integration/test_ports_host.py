"""Host port allocation and the port-in-use error: real sockets on 127.0.0.1 only."""

import os
import socket

import pytest

from rootless.errors import PortInUse, UsageError
from rootless.network.ports import PortMapping, allocate, parse_publish, port_holder


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

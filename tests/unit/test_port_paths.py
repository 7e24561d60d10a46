"""Which way a published port's bytes go (pure logic): every TCP port through the relay, which connects
from the client's own address and family; pasta only gets UDP."""

import socket

from rootless.network import _pasta_port_args
from rootless.network.ports import parse_publish
from rootless.network.relay import upstream_candidates


def test_ipv4_mapped_client_of_a_dual_stack_port_connects_over_ipv4_from_its_address():
    assert upstream_candidates("::ffff:10.250.0.7", 80, v6_listener=True) == [
        ("10.250.0.7", "127.0.0.1", socket.AF_INET), ("", "::1", socket.AF_INET6)]
    assert upstream_candidates("::FFFF:127.0.0.2", 8080, v6_listener=True)[0] == \
        ("127.0.0.2", "127.0.0.1", socket.AF_INET)


def test_ipv4_client_of_an_ipv4_port():
    assert upstream_candidates("127.0.0.2", 80) == [("127.0.0.2", "127.0.0.1", socket.AF_INET),
                                                     ("", "::1", socket.AF_INET6)]


def test_ipv6_client_connects_to_ipv6_loopback_then_ipv4_unbound():
    assert upstream_candidates("::1", 80, v6_listener=True) == [("::1", "::1", socket.AF_INET6),
                                                                 ("", "127.0.0.1", socket.AF_INET)]
    assert upstream_candidates("fd00::7", 80, v6_listener=True)[0] == ("fd00::7", "::1", socket.AF_INET6)


def test_unknown_client_uses_the_listeners_family():
    assert upstream_candidates("", 80, v6_listener=True)[0] == ("", "::1", socket.AF_INET6)
    assert upstream_candidates("", 80, v6_listener=False)[0] == ("", "127.0.0.1", socket.AF_INET)


def test_pasta_forwards_no_tcp_whatever_the_address():
    ms = (parse_publish("8080:80") + parse_publish("[::]:8081:80") + parse_publish("0.0.0.0:8082:80")
          + parse_publish("127.0.0.1:8083:80"))
    assert _pasta_port_args(ms) == ["-t", "none", "-u", "none"]


def test_pasta_keeps_udp_with_the_host_port_number_inside():
    ms = parse_publish("8080:80") + parse_publish("5353:53/udp") + parse_publish("127.0.0.1:9999:9999/udp")
    assert _pasta_port_args(ms) == ["-t", "none", "-u", "5353:5353", "-u", "127.0.0.1/9999:9999"]

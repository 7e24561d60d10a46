"""Which way a published port's bytes go (pure logic): the relay connects from the client's own address
and family."""

import socket

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

import pytest

from rootless.errors import UsageError
from rootless.network.ports import (PortMapping, check_conflicts, format_port_lines, format_ps, inspect_ports,
                                    merge, parse_expose, parse_publish, publish_all)


@pytest.mark.parametrize("spec,want", [
    ("80", [PortMapping(80, "tcp", "", 0)]),
    ("8080:80", [PortMapping(80, "tcp", "", 8080)]),
    ("8080:80/udp", [PortMapping(80, "udp", "", 8080)]),
    ("8080:80/TCP", [PortMapping(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80", [PortMapping(80, "tcp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortMapping(80, "tcp", "127.0.0.1", 0)]),
    ("0:80", [PortMapping(80, "tcp", "", 0)]),                           # Docker: host port 0 = a free one
    ("127.0.0.1:0:53/udp", [PortMapping(53, "udp", "127.0.0.1", 0)]),
    ("[::1]:8080:80/udp", [PortMapping(80, "udp", "::1", 8080)]),
    ("[::]::53", [PortMapping(53, "tcp", "::", 0)]),
    ("8000-8002:80-82", [PortMapping(80, "tcp", "", 8000), PortMapping(81, "tcp", "", 8001),
                         PortMapping(82, "tcp", "", 8002)]),
    ("9000-9009:80", [PortMapping(80, "tcp", "", 0, (9000, 9009))]),
    ("80-81", [PortMapping(80, "tcp", "", 0), PortMapping(81, "tcp", "", 0)]),
    ("127.0.0.1:5000-5001:5000-5001/udp", [PortMapping(5000, "udp", "127.0.0.1", 5000),
                                           PortMapping(5001, "udp", "127.0.0.1", 5001)]),
])
def test_parse_publish(spec, want):
    assert parse_publish(spec) == want


@pytest.mark.parametrize("spec,why", [
    ("", "empty"),
    ("abc", "not a number"),
    ("8080:", "no container port"),
    ("8080:0", "out of range"),
    ("70000:80", "out of range"),
    ("8080:80/icmp", "unknown protocol"),
    ("8080:80/sctp", "sctp"),
    ("1.2.3:8080:80", "not an IP address"),
    ("localhost:8080:80", "not an IP address"),
    ("::1:8080:80", "brackets"),
    ("[::1:8080:80", "IPv6"),
    ("[1.2.3.4]:8080:80", "not an IPv6"),
    ("8000-8002:80-81", "differ in length"),
    ("8002-8000:80", "ends before"),
    ("a:b:c:d", "too many"),
])
def test_parse_publish_errors_are_usage_errors(spec, why):
    with pytest.raises(UsageError) as ei:
        parse_publish(spec)
    assert ei.value.exit_code == 125
    assert why in ei.value.message
    assert ei.value.hint


def test_expose_and_publish_all():
    assert parse_expose("80") == [(80, "tcp")]
    assert parse_expose("53/udp") == [(53, "udp")]
    assert parse_expose("8000-8001") == [(8000, "tcp"), (8001, "tcp")]
    with pytest.raises(UsageError):
        parse_expose("http")
    got = publish_all(["443/tcp", "80/tcp", "53/udp", "80/tcp", (7, "udp")])
    assert got == [PortMapping(7, "udp"), PortMapping(53, "udp"), PortMapping(80, "tcp"), PortMapping(443, "tcp")]
    # -p wins for the same container port
    m = merge(parse_publish("8080:80"), got)
    assert [x.key for x in m] == ["80/tcp", "7/udp", "53/udp", "443/tcp"]
    assert m[0].host_port == 8080


def test_conflicts_within_one_run():
    check_conflicts(parse_publish("127.0.0.1:8080:80") + parse_publish("127.0.0.2:8080:81"))
    check_conflicts(parse_publish("8080:80") + parse_publish("8080:80/udp"))
    with pytest.raises(UsageError, match="published twice"):
        check_conflicts(parse_publish("8080:80") + parse_publish("127.0.0.1:8080:81"))
    with pytest.raises(UsageError, match="published twice"):
        check_conflicts(parse_publish("8080-8081:80-81") + parse_publish("8081:90"))


def test_json_round_trip():
    for m in parse_publish("[::1]:8080:80/udp") + parse_publish("9000-9009:80"):
        assert PortMapping.from_json(m.to_json()) == m


def test_display():
    ms = parse_publish("8000-8002:80-82") + parse_publish("127.0.0.1:5353:53/udp") + parse_publish("[::1]:9:9")
    assert format_ps(ms, ["443/tcp", "80/tcp"]) == \
        "0.0.0.0:8000-8002->80-82/tcp, 127.0.0.1:5353->53/udp, [::1]:9->9/tcp, 443/tcp"
    assert format_port_lines(ms, "53/udp") == ["127.0.0.1:5353"]
    assert format_port_lines(ms, "81") == ["0.0.0.0:8001"]
    assert format_port_lines(ms)[0] == "9/tcp -> [::1]:9"
    ins = inspect_ports(ms, ["443/tcp"])
    assert ins["443/tcp"] is None
    assert ins["53/udp"] == [{"HostIp": "127.0.0.1", "HostPort": "5353"}]

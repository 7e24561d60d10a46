"""plan_network and the /etc files it writes (pure, no namespaces)."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rootless.config import Config
from rootless.errors import NetworkError, UsageError
from rootless import network as netmod
from rootless.network import (HOST_NAMES, PASTA_DNS_FORWARD, NetworkPlan, effective_mode, plan_network,
                              port_bindings, inspect_settings)
from rootless.network.networks import NetworkStore


@dataclass(frozen=True)
class Opts:
    network: str = "default"
    publish: tuple = ()
    publish_all: bool = False
    exposed: tuple = ()
    dns: tuple = ()
    dns_search: tuple = ()
    dns_options: tuple = ()
    add_hosts: tuple = ()
    network_aliases: tuple = ()
    ip: str = ""
    userns: str = ""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(netmod, "_read", lambda p: {"/etc/resolv.conf": "nameserver 10.0.0.53\nsearch lan\n"
                                                    "options edns0\n", "/etc/hosts": "127.0.0.1 localhost\n"}
                        .get(p, ""))
    monkeypatch.setattr(netmod, "_backend", lambda c: ("pasta", "/usr/bin/pasta"))
    monkeypatch.setattr(netmod, "pasta_maps_host_loopback", lambda exe: False)
    monkeypatch.setattr(netmod, "host_default_gateway", lambda: "192.0.2.1")
    from rootless.network import networks as nw
    import ipaddress
    monkeypatch.setattr(nw, "host_route_networks", lambda: [])
    monkeypatch.setattr(nw, "host_addresses", lambda: [])
    return Config(data_root=tmp_path / "store", runtime_dir=tmp_path / "run", config_dir=tmp_path / "cfg")


def test_default_pasta_plan_and_files(cfg):
    p = plan_network(Opts(publish=("127.0.0.1:8080:80", "53:53/udp"), add_hosts=("db:10.1.1.1",)), cfg)
    assert p.mode == "pasta" and p.new_netns
    assert [m.key for m in p.publish] == ["80/tcp", "53/udp"]
    assert p.host_gateway == "192.0.2.1"
    f = p.etc_files("box")
    assert "127.0.1.1\tbox\n" in f["/etc/hosts"]
    assert f"192.0.2.1\t{' '.join(HOST_NAMES)}\n" in f["/etc/hosts"]
    assert "10.1.1.1\tdb\n" in f["/etc/hosts"]
    # like Podman: pasta's DNS forwarder first, then the host's own resolvers
    assert f["/etc/resolv.conf"] == f"nameserver {PASTA_DNS_FORWARD}\nnameserver 10.0.0.53\nsearch lan\noptions edns0\n"
    assert f["/etc/hostname"] == "box\n"


def test_pasta_dns_forwarder_when_the_host_resolver_is_loopback(cfg, monkeypatch):
    monkeypatch.setattr(netmod, "_read", lambda p: "nameserver 127.0.0.53\n" if p == "/etc/resolv.conf" else "")
    p = plan_network(Opts(), cfg)
    assert p.nameservers() == [PASTA_DNS_FORWARD]
    assert p.etc_files("x")["/etc/resolv.conf"] == f"nameserver {PASTA_DNS_FORWARD}\n"
    # loopback resolvers are left out, the forwarder reaches them; others follow it, once
    monkeypatch.setattr(netmod, "_read", lambda p: f"nameserver 127.0.0.53\nnameserver ::1\nnameserver 192.0.2.53\n"
                        f"nameserver {PASTA_DNS_FORWARD}\n" if p == "/etc/resolv.conf" else "")
    assert plan_network(Opts(), cfg).nameservers() == [PASTA_DNS_FORWARD, "192.0.2.53"]
    # --dns replaces them all
    assert plan_network(Opts(dns=("192.0.2.1",)), cfg).nameservers() == ["192.0.2.1"]


def test_dns_flags_replace_the_host_ones(cfg):
    p = plan_network(Opts(dns=("192.0.2.53",), dns_search=("a.test", "b.test"), dns_options=("ndots:3",)), cfg)
    assert p.etc_files("x")["/etc/resolv.conf"] == \
        "nameserver 192.0.2.53\nsearch a.test b.test\noptions ndots:3\n"
    with pytest.raises(UsageError, match="--dns"):
        plan_network(Opts(dns=("resolver",)), cfg)


def test_host_gateway_add_host_and_host_containers_internal_off(cfg, tmp_path):
    p = plan_network(Opts(add_hosts=("gw:host-gateway",)), cfg)
    assert ("gw", "192.0.2.1") in p.hosts
    off = Config(data_root=cfg.data_root, runtime_dir=cfg.runtime_dir, config_dir=cfg.config_dir,
                 host_containers_internal=False)
    p = plan_network(Opts(), off)
    assert p.host_gateway == "" and "host.containers.internal" not in p.etc_files("x")["/etc/hosts"]
    with pytest.raises(UsageError):
        plan_network(Opts(add_hosts=("novalue",)), cfg)
    with pytest.raises(UsageError, match="not an IP"):
        plan_network(Opts(add_hosts=("a:b",)), cfg)


def test_slirp_plan(cfg, monkeypatch):
    monkeypatch.setattr(netmod, "_backend", lambda c: ("slirp4netns", "/usr/bin/slirp4netns"))
    p = plan_network(Opts(), cfg)
    assert p.mode == "slirp4netns" and p.host_gateway == "10.0.2.2"
    assert p.nameservers() == ["10.0.2.3"]
    # Podman: the hostname is the container's fixed slirp4netns address, not 127.0.1.1
    assert "10.0.2.100\tbox\n" in p.etc_files("box")["/etc/hosts"]
    assert "127.0.1.1" not in p.etc_files("box")["/etc/hosts"]


def test_none_host_container_modes(cfg):
    p = plan_network(Opts(network="none"), cfg)
    assert p.mode == "none" and p.new_netns and p.host_gateway == ""
    assert "host.containers.internal" not in p.etc_files("x")["/etc/hosts"]
    p = plan_network(Opts(network="host"), cfg)
    assert p.mode == "host" and not p.new_netns
    p = plan_network(Opts(network="container:web"), cfg)
    assert p.mode == "container" and p.container == "web" and not p.new_netns
    for bad in (Opts(network="none", publish=("80",)),
                Opts(network="container:web", publish=("80",)), Opts(network="container:"),
                Opts(network="container:web", dns=("1.1.1.1",)), Opts(network_aliases=("x",)),
                Opts(ip="10.1.1.1"), Opts(publish=("8080:80", "8080:81"))):
        with pytest.raises(UsageError):
            plan_network(bad, cfg)


def test_missing_backend(cfg, monkeypatch):
    monkeypatch.setattr(netmod, "_backend", lambda c: ("", ""))
    with pytest.raises(NetworkError) as ei:
        plan_network(Opts(), cfg)
    assert "passt" in ei.value.hint and ei.value.exit_code == 125


def test_user_network_plan(cfg):
    store = NetworkStore(cfg.data_root)
    n1 = store.create("n1")
    n2 = store.create("n2", internal=True)
    p = plan_network(Opts(network="n1", network_aliases=("web",), ip=n1.gateway[:-1] + "9",
                          publish=("8080:80",)), cfg)
    assert p.mode == "bridge" and [n.name for n in p.networks] == ["n1"] and p.aliases == ("web",)
    f = p.etc_files("box", own_ip="10.89.1.9")
    assert "10.89.1.9\tbox\n" in f["/etc/hosts"]
    assert f["/etc/resolv.conf"].splitlines()[:2] == [f"nameserver {n1.gateway}", "search dns.rootless lan"]
    # internal only: no way to the host
    p = plan_network(Opts(network="n2"), cfg)
    assert p.host_gateway == "" and "host.containers.internal" not in p.etc_files("x")["/etc/hosts"]
    with pytest.raises(NetworkError, match="not found"):
        plan_network(Opts(network="n3"), cfg)
    with pytest.raises(UsageError, match="not in network n1"):
        plan_network(Opts(network="n1", ip="10.200.0.5"), cfg)
    with pytest.raises(UsageError, match="keep-id"):
        plan_network(Opts(network="n1", userns="keep-id"), cfg)


def test_dns_on_a_user_network_keeps_the_embedded_server(cfg):
    """Docker: --dns does not replace the network's DNS server (container names would stop resolving):
    the gateway stays the only nameserver and --dns becomes its upstream for this container."""
    store = NetworkStore(cfg.data_root)
    n1 = store.create("n1")
    nodns = store.create("quiet", dns=False)
    p = plan_network(Opts(network="n1", dns=("192.0.2.53",), dns_search=("a.test",)), cfg)
    assert p.dns == ("192.0.2.53",)
    assert p.etc_files("box")["/etc/resolv.conf"] == f"nameserver {n1.gateway}\nsearch a.test\noptions edns0\n"
    # a network without a DNS server: --dns is the container's resolver, as on the default network
    p = plan_network(Opts(network="quiet", dns=("192.0.2.53",)), cfg)
    assert p.nameservers() == ["192.0.2.53"] and nodns.dns is False


def test_host_network_discards_published_ports_with_a_warning(cfg):
    """Docker and Podman: --network host -p ... warns and ignores the ports (not an error)."""
    p = plan_network(Opts(network="host", publish=("8080:80",), publish_all=True, exposed=("90/tcp",)), cfg)
    assert p.mode == "host" and p.publish == () and p.ports == ()
    assert p.warnings == ("Published ports are discarded when using host network mode",)
    assert plan_network(Opts(network="host"), cfg).warnings == ()
    for mode in ("none", "container:web"):
        with pytest.raises(UsageError, match="publish"):
            plan_network(Opts(network=mode, publish=("8080:80",)), cfg)


def test_connect_disconnect_overrides(cfg, tmp_path):
    assert effective_mode("n1", {}) == ("n1", {})
    assert effective_mode("n1", {"connect": {"n2": {"aliases": ["a"], "ip": ""}}}) == \
        ("n1,n2", {"n2": {"aliases": ["a"], "ip": ""}})
    assert effective_mode("n1", {"disconnect": ["n1"]}) == ("none", {})
    assert effective_mode("default", {"connect": {"n2": {}}}) == ("n2", {"n2": {}})
    assert effective_mode("host", {"connect": {"n2": {}}}) == ("host", {})
    store = NetworkStore(cfg.data_root)
    store.create("n1")
    store.create("n2")
    d = tmp_path / "ctr"
    d.mkdir()
    netmod.write_overrides(d, {"connect": {"n2": {"aliases": ["b"], "ip": ""}}})
    p = plan_network(Opts(network="n1"), cfg, container_dir=d)
    assert [n.name for n in p.networks] == ["n1", "n2"]
    assert p.extra["per_network"] == {"n2": {"aliases": ["b"], "ip": ""}}


def test_inspect_shapes(cfg):
    @dataclass(frozen=True)
    class Spec:
        network: str = "n1"
        publish: tuple = ("127.0.0.1:8080:80", "9000")
        exposed: tuple = ("80/tcp", "443/tcp")
        network_aliases: tuple = ("web",)

    assert port_bindings(Spec()) == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                                     "9000/tcp": [{"HostIp": "", "HostPort": ""}]}
    state = {"mode": "bridge", "ports": [{"container_port": 80, "protocol": "tcp", "host_ip": "127.0.0.1",
                                          "host_port": 8080}],
             "networks": [{"name": "n1", "id": "abc", "ip": "10.89.1.2", "prefixlen": 24, "gateway": "10.89.1.1",
                           "mac": "02:42:0a:59:01:02", "endpoint_id": "rv1"}]}
    s = inspect_settings(Spec(), state, pid=42, running=True)
    assert s["IPAddress"] == "10.89.1.2" and s["Gateway"] == "10.89.1.1" and s["SandboxKey"] == "/proc/42/ns/net"
    assert s["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "443/tcp": None}
    assert s["Networks"]["n1"]["Aliases"] == ["web"] and s["Networks"]["n1"]["NetworkID"] == "abc"
    assert inspect_settings(Spec(), {}, running=False)["Ports"] == {}
    # aliases per endpoint: --network-alias on the first network, `network connect --alias` on another
    state["networks"] = [dict(state["networks"][0], aliases=["web"]),
                         {"name": "n2", "id": "def", "ip": "10.89.2.2", "prefixlen": 24, "aliases": ["api"]},
                         {"name": "n3", "id": "ghi", "ip": "10.89.3.2", "prefixlen": 24, "aliases": []}]
    nets = inspect_settings(Spec(), state, pid=42, running=True)["Networks"]
    assert [nets[n]["Aliases"] for n in ("n1", "n2", "n3")] == [["web"], ["api"], None]

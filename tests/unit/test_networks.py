import ipaddress
import json
import os
import threading

import pytest

from rootless.errors import NetworkError, UsageError
from rootless.network import networks as nw
from rootless.network.networks import (Network, NetworkExists, NetworkInUse, NetworkNotFound, NetworkStore,
                                       containers_using, parse_subnet)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(nw, "host_route_networks", lambda: [ipaddress.IPv4Network("10.89.1.0/24")])
    monkeypatch.setattr(nw, "host_addresses", lambda: [ipaddress.IPv4Address("10.89.4.7")])
    return NetworkStore(tmp_path)


def test_explicit_subnet_must_not_overlap_the_hosts_networks(store):
    """Podman refuses a --subnet that overlaps a route or an address of the host: 125, naming it."""
    with pytest.raises(NetworkError) as ei:
        store.create("clash", subnet="10.89.0.0/16")
    assert ei.value.exit_code == 125
    assert "subnet 10.89.0.0/16 overlaps the host's network 10.89.1.0/24" in ei.value.message
    with pytest.raises(NetworkError, match="overlaps the host's address 10.89.4.7"):
        store.create("clash", subnet="10.89.4.0/29")
    assert store.list() == []
    assert store.create("fine", subnet="10.89.5.0/24").subnet == "10.89.5.0/24"
    # the automatic choice skips both
    assert [store.create(f"a{i}").subnet for i in range(3)] == ["10.89.2.0/24", "10.89.3.0/24", "10.89.6.0/24"]


def test_host_addresses_from_the_fib(tmp_path):
    fib = tmp_path / "fib_trie"
    fib.write_text("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n"
                   "     |-- 192.0.2.0\n        /24 link UNICAST\n     |-- 192.0.2.2\n        /32 host LOCAL\n"
                   "     |-- 192.0.2.255\n        /32 link BROADCAST\nLocal:\n     |-- 192.0.2.2\n"
                   "        /32 host LOCAL\n")
    assert nw.host_addresses(str(fib)) == [ipaddress.IPv4Address("192.0.2.2")]
    assert nw.host_addresses(str(tmp_path / "missing")) == []


def test_create_get_list_remove(store, tmp_path):
    n = store.create("n1")
    # 10.89.0.0/24 is left to Podman's default, 10.89.1.0/24 is a host route here: the next free /24
    assert n.subnet == "10.89.2.0/24" and n.gateway == "10.89.2.1"
    assert len(n.id) == 64 and n.bridge == "rl" + n.id[:12] and len(n.bridge) <= 15
    on_disk = json.loads((tmp_path / "networks" / "n1.json").read_text())
    assert on_disk["subnet"] == "10.89.2.0/24" and on_disk["internal"] is False
    assert not [f for f in os.listdir(tmp_path / "networks") if f.endswith(".tmp")]
    n2 = store.create("n2", internal=True, labels={"a": "b"})
    assert n2.subnet == "10.89.3.0/24" and n2.internal and dict(n2.labels) == {"a": "b"}
    assert [x.name for x in store.list()] == ["n1", "n2"]
    assert store.get("n1") == n
    assert store.get(n.id[:6]) == n
    assert store.get(n.id) == n
    store.remove("n1")
    with pytest.raises(NetworkNotFound) as ei:
        store.get("n1")
    assert ei.value.exit_code == 125 and "not found" in ei.value.message
    # the freed subnet is handed out again
    assert store.create("n3").subnet == "10.89.2.0/24"


def test_create_errors(store):
    store.create("n1", subnet="10.90.0.0/16", gateway="10.90.0.254")
    with pytest.raises(NetworkExists):
        store.create("n1")
    with pytest.raises(NetworkError, match="overlaps network n1"):
        store.create("n2", subnet="10.90.5.0/24")
    for bad, why in [("bridge", "built-in"), ("host", "built-in"), ("-x", "invalid network name"),
                     ("a/b", "invalid network name"), ("", "invalid network name")]:
        with pytest.raises(UsageError, match=why):
            store.create(bad)
    with pytest.raises(UsageError, match="--gateway needs --subnet"):
        store.create("g", gateway="10.1.1.1")


@pytest.mark.parametrize("subnet,gateway,err", [
    ("nonsense", None, "invalid --subnet"),
    ("fd00::/64", None, "IPv6"),
    ("10.1.1.0/30", None, "too small"),
    ("127.0.0.0/24", None, "loopback"),
    ("169.254.0.0/16", None, "link-local"),
    ("10.1.1.0/24", "10.1.2.1", "not a host address"),
    ("10.1.1.0/24", "10.1.1.255", "not a host address"),
    ("10.1.1.0/24", "x", "invalid --gateway"),
])
def test_parse_subnet_errors(subnet, gateway, err):
    with pytest.raises(UsageError, match=err):
        parse_subnet(subnet, gateway)


def test_parse_subnet_normalises():
    assert parse_subnet("10.1.1.7/24", None) == ("10.1.1.0/24", "10.1.1.1")
    assert parse_subnet("10.1.1.0/24", "10.1.1.200") == ("10.1.1.0/24", "10.1.1.200")


def test_check_ip():
    n = Network("n", "a" * 64, "10.89.5.0/24", "10.89.5.1")
    assert n.check_ip("10.89.5.9") == "10.89.5.9"
    for bad, why in [("10.89.6.9", "not in"), ("10.89.5.1", "reserved"), ("10.89.5.0", "reserved"),
                     ("10.89.5.255", "reserved"), ("fe80::1", "not an IPv4")]:
        with pytest.raises(UsageError, match=why):
            n.check_ip(bad)


def test_remove_in_use_is_refused(store):
    store.create("busy")
    with pytest.raises(NetworkInUse) as ei:
        store.remove("busy", ["web", "db"])
    assert "web, db" in ei.value.message and ei.value.hint
    assert store.exists("busy")


def test_corrupt_file_is_an_error_naming_it(store, tmp_path):
    store.create("ok")
    (tmp_path / "networks" / "bad.json").write_text("{not json")
    assert [n.name for n in store.list()] == ["ok"]
    with pytest.raises(NetworkError, match="corrupt"):
        store.get("bad")


def test_concurrent_creates_get_distinct_subnets(store):
    errors = []
    made = []

    def make(i):
        try:
            made.append(store.create(f"c{i}"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len({n.subnet for n in made}) == 8


def test_containers_using(tmp_path):
    def ctr(cid, name, spec, state=None, extra=None):
        d = tmp_path / "containers" / cid
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"id": cid, "name": name, "spec": spec}))
        if state is not None:
            (d / "state.json").write_text(json.dumps(state))
        if extra is not None:
            (d / "networks.json").write_text(json.dumps(extra))

    ctr("a" * 64, "web", {"network": "n1"})
    ctr("b" * 64, "db", {"network": "default"}, extra={"connect": {"n2": {}}})
    ctr("e" * 64, "gone", {"network": "n1"}, extra={"disconnect": ["n1"]})
    ctr("c" * 64, "side", {"network": "container:web"})
    ctr("d" * 64, "old", {"network": "host"}, state={"network": {"networks": [{"name": "n3"}]}})
    (tmp_path / "containers" / "broken").mkdir()
    assert containers_using(tmp_path) == {"n1": ["web"], "n2": ["db"], "n3": ["old"]}
    assert containers_using(tmp_path / "nothing") == {}

"""`rootless network create/ls/inspect/rm/prune` as the unprivileged user."""

import json

import pytest


def test_create_ls_inspect_rm(rl, unprivileged):
    nid = rl.ok("network", "create", "n1").strip()
    assert len(nid) == 64
    rl.ok("network", "create", "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.254", "--internal",
          "--label", "team=a", "n2")
    out = rl.ok("network", "ls")
    lines = out.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    names = [l.split()[1] for l in lines[1:]]
    assert names == ["bridge", "host", "none", "n1", "n2"]
    assert any(l.split()[1] == "n1" and l.split()[0] == nid[:12] and l.split()[2] == "bridge" for l in lines)
    assert rl.ok("network", "ls", "-q", "--no-trunc", "--filter", "name=n1").split() == [nid]
    assert rl.ok("network", "ls", "--format", "{{.Name}}", "--filter", "label=team=a").split() == ["n2"]
    assert rl.ok("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom").split() == ["n1", "n2"]
    lines = rl.ok("network", "ls", "--format", "json", "--filter", "type=custom").splitlines()
    assert sorted(json.loads(line)["Name"] for line in lines) == ["n1", "n2"]

    ins = json.loads(rl.ok("network", "inspect", "n2"))
    assert len(ins) == 1
    n2 = ins[0]
    assert n2["Name"] == "n2" and n2["Driver"] == "bridge" and n2["Internal"] is True
    assert n2["IPAM"]["Config"] == [{"Subnet": "10.99.0.0/24", "Gateway": "10.99.0.254"}]
    assert n2["Labels"] == {"team": "a"} and n2["Containers"] == {}
    assert rl.ok("network", "inspect", "-f", "{{.Id}}", "n1").strip() == nid
    assert rl.ok("network", "inspect", "-f", "{{.Name}}", nid[:8]).strip() == "n1"

    assert rl.ok("network", "rm", "n1", "n2").split() == ["n1", "n2"]
    assert rl.ok("network", "ls", "-q", "--filter", "type=custom").strip() == ""


def test_errors(rl, unprivileged):
    cp = rl("network", "inspect", "nope")
    assert cp.returncode == 125 and "network nope not found" in cp.stderr
    cp = rl("network", "rm", "nope")
    assert cp.returncode == 125 and "not found" in cp.stderr
    assert rl("network", "rm", "-f", "nope").returncode == 0
    cp = rl("network", "rm", "bridge")
    assert cp.returncode == 125 and "pre-defined" in cp.stderr
    cp = rl("network", "create", "host")
    assert cp.returncode == 125 and "built-in" in cp.stderr
    rl.ok("network", "create", "dup")
    cp = rl("network", "create", "dup")
    assert cp.returncode == 125 and "already exists" in cp.stderr and "Traceback" not in cp.stderr
    cp = rl("network", "create", "--subnet", "10.300.0.0/24", "bad")
    assert cp.returncode == 125 and "invalid --subnet" in cp.stderr
    cp = rl("network", "create", "-d", "macvlan", "bad")
    assert cp.returncode == 125 and "not supported" in cp.stderr
    cp = rl("network", "ls", "--filter", "color=red")
    assert cp.returncode == 125 and "invalid filter" in cp.stderr
    # nothing half-written by the failures
    assert rl.ok("network", "ls", "--format", "{{.Name}}", "--filter", "type=custom").split() == ["dup"]


def test_prune(rl, unprivileged):
    rl.ok("network", "create", "a")
    rl.ok("network", "create", "--label", "keep=1", "b")
    # without -f it asks; no answer keeps everything
    cp = rl("network", "prune", input="\n")
    assert cp.returncode == 0 and "Are you sure" in cp.stdout
    assert rl.ok("network", "ls", "-q", "--filter", "type=custom").count("\n") == 2
    out = rl.ok("network", "prune", "-f", "--filter", "label=keep")
    assert out.split() == ["Deleted", "Networks:", "b"]
    out = rl.ok("network", "prune", input="y\n")
    assert out.splitlines()[-1] == "a"
    assert rl.ok("network", "ls", "-q", "--filter", "type=custom").strip() == ""


def test_create_refuses_a_subnet_of_the_host(rl, unprivileged):
    """Podman: an explicit --subnet that overlaps the host's own networks (its routes, its addresses) is
    refused, naming the overlap (the containers could no longer reach that part of the host's network)."""
    from rootless.network.networks import host_addresses, host_route_networks

    routes = host_route_networks()
    addrs = host_addresses()
    if not routes and not addrs:
        pytest.skip("this host has no IPv4 route but the default one and no IPv4 address but loopback")
    if routes:
        cp = rl("network", "create", "--subnet", str(routes[0]), "onhost")
        assert cp.returncode == 125, cp
        assert f"overlaps the host's network {routes[0]}" in cp.stderr and "Traceback" not in cp.stderr
    if addrs:
        cp = rl("network", "create", "--subnet", f"{addrs[0]}/29", "onhost")
        assert cp.returncode == 125, cp
        assert "overlaps the host's" in cp.stderr
    assert rl.ok("network", "ls", "-q", "--filter", "type=custom").strip() == ""

"""Networking of `rootless run` (issue 6, "Done when"), as the unprivileged user.

Everything contacted is 127.0.0.1 of this host or an address inside the
namespaces these tests made (containers, the per-user network namespace).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, has_ipv6_loopback, require


@pytest.fixture(scope="module")
def net_rl(tmp_path_factory, registry, unprivileged):
    """One store for the module: busybox pulled once; ROOTLESS_NETNS_IDLE short so holders go away."""
    from tests.conftest import RL

    require("userns", "newuidmap", "tun", "network")
    r = RL(tmp_path_factory.mktemp("net-rl"))
    r.env["ROOTLESS_NETNS_IDLE"] = "2"
    r.ok("pull", "-q", registry.ref("busybox"), timeout=300)
    r.image = registry.ref("busybox")
    yield r
    for cid in r.ok("ps", "-aq").split():
        r("rm", "-f", cid)
    r.cleanup()


def _wait_http(url: str, timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=5).read()
        except OSError as e:
            last = e
            time.sleep(0.1)
    raise AssertionError(f"{url}: {last}")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello through a published port\n")
    data = os.urandom(10 * 1024 * 1024)
    (d / "big").write_bytes(data)
    os.chmod(tmp_path, 0o755)
    return d, hashlib.sha256(data).hexdigest()


def test_publish_fetch_checksum_source_and_release(net_rl, www):
    rl = net_rl
    d, digest = www
    port = free_port()
    cid = rl.ok("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:80", "-v", f"{d}:/www:ro", rl.image,
                "httpd", "-f", "-vv", "-p", "80", "-h", "/www").strip()
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/") == b"hello through a published port\n"
        got = urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=60).read()
        assert hashlib.sha256(got).hexdigest() == digest
        # port, ps, inspect
        assert rl.ok("port", "web").strip() == f"80/tcp -> 127.0.0.1:{port}"
        assert rl.ok("port", "web", "80").strip() == f"127.0.0.1:{port}"
        assert rl("port", "web", "81").returncode == 1
        ps = rl.ok("ps", "--format", "{{.Ports}}", "--filter", "name=web").strip()
        assert ps == f"127.0.0.1:{port}->80/tcp"
        ins = json.loads(rl.ok("inspect", "web"))[0]
        assert ins["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        assert ins["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
        # the server's log names the client's own address (the relay connects from it), not the gateway
        assert _fetch_from("127.0.0.2", port, "/") == b"hello through a published port\n"
        sources = _sources(rl, "web")
        gw = _gateway_in(rl, "web")
        assert gw not in sources, (gw, sources)
        assert {"127.0.0.1", "127.0.0.2"} <= sources, sources
        # a second container cannot publish the same host port: 125, naming the port and its holder
        cp = rl("run", "--rm", "-p", f"127.0.0.1:{port}:80", rl.image, "true")
        assert cp.returncode == 125, cp
        assert str(port) in cp.stderr and "already in use by container web (port relay, pid" in cp.stderr, cp.stderr
    finally:
        rl.ok("stop", "-t", "1", cid)
    # stopped: the port is free again
    for _ in range(50):
        if _port_free(port):
            break
        time.sleep(0.1)
    assert _port_free(port)
    assert rl.ok("port", "web").strip() == ""
    rl.ok("rm", "web")


def _fetch_from(source: str, port: int, path: str) -> bytes:
    """GET http://127.0.0.1:PORT/PATH from a client socket bound to ``source``."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        c.request("GET", path)
        return c.getresponse().read()
    finally:
        c.close()


def _sources(rl, name: str) -> set[str]:
    """Client addresses in the log of busybox httpd -vv: "[::ffff:127.0.0.1]:51620: url:/"."""
    logs = rl.ok("logs", name) + rl("logs", name).stderr
    sources = set(re.findall(r"(\d+\.\d+\.\d+\.\d+)\]?:\d+: url:", logs))
    assert sources, logs
    return sources


def _gateway_in(rl, name: str) -> str:
    out = rl.ok("exec", name, "ip", "route")
    m = re.search(r"default via (\S+)", out)
    return m.group(1) if m else ""


def _two_free_ports() -> int:
    """P with P and P+1 both free on 127.0.0.1."""
    for _ in range(50):
        p = free_port()
        if p < 65535 and _port_free(p + 1):
            return p
    raise AssertionError("no two consecutive free ports")


def test_random_port_range_and_publish_all(net_rl):
    rl = net_rl
    base = _two_free_ports()
    # httpd on 80, 81, 82 and the EXPOSEd 7000, each saying which port it is
    serve = "; ".join(f"mkdir /w{p}; echo port-{p} > /w{p}/index.html; httpd -p {p} -h /w{p}"
                      for p in (80, 81, 82, 7000))
    rl.ok("run", "-d", "--name", "multi", "-p", f"127.0.0.1:{base}-{base + 1}:80-81", "-p", "127.0.0.1::82",
          "-p", "127.0.0.1::53/udp", "--expose", "7000", "-P", rl.image, "sh", "-c", serve + "; sleep 120")
    try:
        lines = rl.ok("port", "multi").splitlines()
        hosts = {l.split(" -> ")[0]: l.split(" -> ")[1] for l in lines}
        assert sorted(hosts) == ["53/udp", "7000/tcp", "80/tcp", "81/tcp", "82/tcp"], lines
        # the range: 80 -> base, 81 -> base + 1
        assert hosts["80/tcp"] == f"127.0.0.1:{base}" and hosts["81/tcp"] == f"127.0.0.1:{base + 1}", hosts
        # a random port on 127.0.0.1, and -P's on every address
        assert hosts["82/tcp"].startswith("127.0.0.1:") and hosts["7000/tcp"].startswith("0.0.0.0:"), hosts
        for key, want in (("80/tcp", b"port-80\n"), ("81/tcp", b"port-81\n"), ("82/tcp", b"port-82\n"),
                          ("7000/tcp", b"port-7000\n")):
            port = int(hosts[key].rsplit(":", 1)[1])
            assert _wait_http(f"http://127.0.0.1:{port}/") == want, key
        assert int(hosts["53/udp"].rsplit(":", 1)[1]) > 0
    finally:
        rl.ok("rm", "-f", "multi")


def test_invalid_publish_is_125(net_rl):
    rl = net_rl
    for bad in ("80:80:80:80", "abc", "8080:0", "127.0.0.1:8080:80/sctp", "1.2.3.4.5:80:80"):
        cp = rl("run", "--rm", "-p", bad, rl.image, "true")
        assert cp.returncode == 125, (bad, cp)
        assert "invalid port specification" in cp.stderr or "sctp" in cp.stderr
        assert "Traceback" not in cp.stderr
    # a host process holds the port: named with its pid
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        cp = rl("run", "--rm", "-p", f"127.0.0.1:{busy}:80", rl.image, "true")
        assert cp.returncode == 125
        assert f"host port 127.0.0.1:{busy}/tcp is already in use by pid {os.getpid()}" in cp.stderr, cp.stderr
    cp = rl("run", "--rm", "--network", "nosuchnet", rl.image, "true")
    assert cp.returncode == 125 and "network nosuchnet not found" in cp.stderr
    cp = rl("run", "--rm", "--network-alias", "x", rl.image, "true")
    assert cp.returncode == 125 and "user-defined networks" in cp.stderr


def _host_http_server(tmp_path, text: str):
    d = tmp_path / "hostsrv"
    d.mkdir()
    (d / "index.html").write_text(text)
    port = free_port()
    p = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(d)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise AssertionError("host httpd did not start")


def test_host_containers_internal_reaches_the_host_loopback(net_rl, tmp_path):
    rl = net_rl
    srv, port = _host_http_server(tmp_path, "the host says hi\n")
    try:
        for name in ("host.containers.internal", "host.docker.internal"):
            out = rl.ok("run", "--rm", rl.image, "wget", "-q", "-O", "-", f"http://{name}:{port}/", timeout=60)
            assert out == "the host says hi\n"
        # slirp4netns: 10.0.2.2 is the host's loopback
        out = rl.ok("run", "--rm", "--network", "slirp4netns", rl.image, "wget", "-q", "-O", "-",
                    f"http://host.containers.internal:{port}/", timeout=60)
        assert out == "the host says hi\n"
        # a user-defined network, through the per-user namespace
        rl.ok("network", "create", "hci")
        out = rl.ok("run", "--rm", "--network", "hci", rl.image, "wget", "-q", "-O", "-",
                    f"http://host.containers.internal:{port}/", timeout=60)
        assert out == "the host says hi\n"
        # configurable: off -> no entry
        cfg = rl.home / ".config" / "rootless"
        cfg.mkdir(parents=True, exist_ok=True)
        (cfg / "config.toml").write_text("[network]\nhost_containers_internal = false\n")
        try:
            hosts = rl.ok("run", "--rm", rl.image, "cat", "/etc/hosts")
            assert "host.containers.internal" not in hosts
        finally:
            (cfg / "config.toml").unlink()
    finally:
        srv.kill()
        srv.wait()
        rl("network", "rm", "hci")


def test_etc_files_dns_options_add_host(net_rl):
    rl = net_rl
    out = rl.ok("run", "--rm", "--hostname", "box", "--add-host", "db.local:10.1.2.3", "--dns", "192.0.2.53",
                "--dns-search", "example.test", "--dns-option", "ndots:2", rl.image, "sh", "-c",
                "cat /etc/hosts; echo ---; cat /etc/resolv.conf")
    hosts, resolv = out.split("---\n")
    assert re.search(r"^\S+\s+box\b", hosts, re.M)
    assert "10.1.2.3\tdb.local" in hosts
    assert "host.containers.internal" in hosts and "host.docker.internal" in hosts
    assert resolv.splitlines() == ["nameserver 192.0.2.53", "search example.test", "options ndots:2"]
    # without --dns (pasta): its DNS forwarder first, then the host's resolvers not on its loopback (like Podman)
    with open("/etc/resolv.conf") as f:
        host_ns = [l.split()[1] for l in f if l.startswith("nameserver") and len(l.split()) > 1]
    want = ["nameserver 169.254.1.1"] + [f"nameserver {n}" for n in host_ns
                                         if not n.startswith("127.") and n not in ("::1", "169.254.1.1")]
    resolv = rl.ok("run", "--rm", rl.image, "cat", "/etc/resolv.conf")
    assert [l for l in resolv.splitlines() if l.startswith("nameserver")] == want, resolv
    cp = rl("run", "--rm", "--add-host", "bad", rl.image, "true")
    assert cp.returncode == 125 and "--add-host" in cp.stderr
    cp = rl("run", "--rm", "--dns", "not-an-ip", rl.image, "true")
    assert cp.returncode == 125 and "--dns" in cp.stderr


def test_none_has_only_lo_and_container_mode_shares(net_rl):
    rl = net_rl
    out = rl.ok("run", "--rm", "--network", "none", rl.image, "ip", "-o", "link")
    names = [l.split(":")[1].strip().split("@")[0] for l in out.splitlines()]
    assert names == ["lo"], out
    rl.ok("run", "-d", "--name", "owner", rl.image, "sh", "-c", "nc -l -p 7777 -e echo shared-namespace; sleep 60")
    try:
        time.sleep(0.5)
        own = rl.ok("exec", "owner", "readlink", "/proc/self/ns/net").strip()
        out = rl.ok("run", "--rm", "--network", "container:owner", rl.image, "sh", "-c",
                    "readlink /proc/self/ns/net; nc 127.0.0.1 7777 </dev/null")
        lines = out.split()
        assert lines[0] == own
        assert "shared-namespace" in out
    finally:
        rl.ok("rm", "-f", "owner")
    cp = rl("run", "--rm", "--network", "container:nosuch", rl.image, "true")
    assert cp.returncode == 125 and "nosuch" in cp.stderr


def test_host_network_discards_published_ports(net_rl):
    """Docker: --network host -p ... warns on stderr, ignores the ports and runs the container."""
    rl = net_rl
    port = free_port()
    cp = rl("run", "--rm", "--network", "host", "-p", f"127.0.0.1:{port}:80", rl.image, "echo", "ran")
    assert cp.returncode == 0, cp
    assert cp.stdout == "ran\n"
    assert "WARNING: Published ports are discarded when using host network mode" in cp.stderr
    assert _port_free(port)
    cp = rl("run", "--rm", "--network", "container:nosuch", "-p", "8080:80", rl.image, "true")
    assert cp.returncode == 125 and "publish" in cp.stderr


def test_container_mode_takes_the_peers_hostname_and_inspect_exposed_ports(net_rl):
    """Docker: --network container:X gives the container X's hostname; inspect has Config.ExposedPorts
    (the image's EXPOSE and --expose)."""
    rl = net_rl
    rl.ok("run", "-d", "--name", "hostowner", "--hostname", "sharedhost", "--expose", "7000",
          "--expose", "53/udp", rl.image, "sleep", "60")
    try:
        out = rl.ok("run", "--rm", "--network", "container:hostowner", rl.image, "sh", "-c",
                    "hostname; cat /etc/hostname; echo $HOSTNAME")
        assert out.split() == ["sharedhost"] * 3, out
        out = rl.ok("run", "--rm", "--network", "container:hostowner", "--hostname", "mine", rl.image, "hostname")
        assert out.strip() == "mine"
        cfg = json.loads(rl.ok("inspect", "hostowner"))[0]["Config"]
        assert cfg["ExposedPorts"] == {"7000/tcp": {}, "53/udp": {}}, cfg
    finally:
        rl("rm", "-f", "hostowner")


def test_user_networks_names_aliases_isolation(net_rl):
    rl = net_rl
    rl.ok("network", "create", "n1")
    rl.ok("network", "create", "n2")
    try:
        rl.ok("run", "-d", "--name", "web1", "--network", "n1", "--network-alias", "www", rl.image,
              "sh", "-c", "echo hello-from-web1 > /tmp/index.html; httpd -f -p 80 -h /tmp")
        rl.ok("run", "-d", "--name", "peer", "--network", "n1", rl.image, "sleep", "120")
        time.sleep(0.5)
        for target in ("web1", "www", "web1.dns.rootless"):
            out = rl.ok("exec", "peer", "wget", "-q", "-O", "-", f"http://{target}/", timeout=30)
            assert out == "hello-from-web1\n", target
        # the other way round, by name too
        assert "peer" in rl.ok("exec", "web1", "nslookup", "peer")
        # --dns keeps the network's DNS server as the resolver (Docker): names still resolve
        out = rl.ok("run", "--rm", "--network", "n1", "--dns", "192.0.2.53", rl.image, "sh", "-c",
                    "grep nameserver /etc/resolv.conf; nslookup web1", timeout=60)
        gw = json.loads(rl.ok("network", "inspect", "n1"))[0]["IPAM"]["Config"][0]["Gateway"]
        assert out.splitlines()[0] == f"nameserver {gw}" and "192.0.2.53" not in out, out
        assert len(re.findall(r"^Address:", out, re.M)) >= 2, out
        # network inspect lists both
        ins = json.loads(rl.ok("network", "inspect", "n1"))[0]
        assert sorted(c["Name"] for c in ins["Containers"].values()) == ["peer", "web1"]
        web_ip = json.loads(rl.ok("inspect", "web1"))[0]["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
        assert web_ip
        # n2 cannot reach n1: neither by name nor by address
        out = rl("run", "--rm", "--network", "n2", rl.image, "sh", "-c",
                 f"nslookup web1; timeout 3 wget -q -O - http://{web_ip}/; echo rc=$?", timeout=60).stdout
        assert "hello-from-web1" not in out and "rc=0" not in out
        # in use: rm refused
        cp = rl("network", "rm", "n1")
        assert cp.returncode == 125 and "in use" in cp.stderr and "web1" in cp.stderr
    finally:
        rl("rm", "-f", "web1", "peer")
        rl("network", "rm", "n1", "n2")


def test_fixed_ip_and_internal(net_rl, tmp_path):
    rl = net_rl
    rl.ok("network", "create", "--subnet", "10.89.200.0/24", "fixed")
    rl.ok("network", "create", "--internal", "closed")
    srv, port = _host_http_server(tmp_path, "reachable\n")
    try:
        out = rl.ok("run", "--rm", "--network", "fixed", "--ip", "10.89.200.42", rl.image, "ip", "-o", "-4",
                    "addr", "show", "eth0")
        assert "10.89.200.42/24" in out
        cp = rl("run", "--rm", "--network", "fixed", "--ip", "10.89.201.1", rl.image, "true")
        assert cp.returncode == 125 and "not in network fixed" in cp.stderr
        out = rl("run", "--rm", "--network", "closed", rl.image, "sh", "-c",
                 f"timeout 3 wget -q -O - http://host.containers.internal:{port}/; echo rc=$?; ip route",
                 timeout=60).stdout
        assert "reachable" not in out and "default" not in out
    finally:
        srv.kill()
        srv.wait()
        rl("network", "rm", "fixed", "closed")


def test_publish_on_a_user_network(net_rl):
    rl = net_rl
    rl.ok("network", "create", "pubnet")
    port, port2 = free_port(), free_port()
    ipv6 = has_ipv6_loopback()
    try:
        rl.ok("run", "-d", "--name", "pubweb", "--network", "pubnet", "-p", f"127.0.0.1:{port}:80", rl.image,
              "sh", "-c", "echo via-bridge > /tmp/index.html; httpd -f -p 80 -h /tmp")
        assert _wait_http(f"http://127.0.0.1:{port}/") == b"via-bridge\n"
        assert rl.ok("port", "pubweb").strip() == f"80/tcp -> 127.0.0.1:{port}"
        cp = rl("run", "--rm", "--network", "pubnet", "-p", f"127.0.0.1:{port}:80", rl.image, "true")
        assert cp.returncode == 125 and str(port) in cp.stderr and "in use" in cp.stderr
        # every address (a dual-stack socket on [::], handed to the holder): both families
        rl.ok("run", "-d", "--name", "pubweb2", "--network", "pubnet", "-p", f"{port2}:80", rl.image,
              "sh", "-c", "echo via-bridge-all > /tmp/index.html; httpd -f -p 80 -h /tmp")
        assert _wait_http(f"http://127.0.0.1:{port2}/") == b"via-bridge-all\n"
        if ipv6:
            assert _get6(port2) == b"via-bridge-all\n"
    finally:
        rl("rm", "-f", "pubweb", "pubweb2")
        rl("network", "rm", "pubnet")
    for p in (port, port2):
        for _ in range(50):
            if _port_free(p):
                break
            time.sleep(0.1)
        assert _port_free(p)
    if not ipv6:
        pytest.skip("this host has no IPv6 on lo (ip -6 addr show lo): the [::1] client was not tried")


# busybox nc has no UDP mode: the UDP server is the host's python, mounted read-only into the container
# (over /usr: call busybox applets as /bin/busybox APPLET then)
HOST_PY = tuple(x for d in ("/usr", "/lib", "/lib64") if os.path.exists(d) for x in ("-v", f"{d}:{d}:ro"))
UDP_ECHO = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 9999))\n"
            "while True:\n    d, a = s.recvfrom(9000)\n    s.sendto(b'%s:' + d, a)\n")


def _udp_roundtrip(port: int) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.5)
        for _ in range(40):
            c.sendto(b"hi", ("127.0.0.1", port))
            try:
                return c.recvfrom(100)[0]
            except socket.timeout:
                continue
    return None


def test_slirp4netns_publish_tcp_and_udp_and_pasta_udp(net_rl):
    rl = net_rl
    tport, uport, pport = free_port(), free_port(), free_port()
    rl.ok("run", "-d", "--name", "slirpweb", "--network", "slirp4netns", "-p", f"127.0.0.1:{tport}:80",
          "-p", f"127.0.0.1:{uport}:9999/udp", *HOST_PY, rl.image, "sh", "-c",
          "echo via-slirp > /tmp/index.html; /bin/busybox httpd -p 80 -h /tmp; exec /usr/bin/python3 -c \"$0\"",
          UDP_ECHO % "slirp")
    rl.ok("run", "-d", "--name", "pastaudp", "-p", f"127.0.0.1:{pport}:9999/udp", *HOST_PY, rl.image,
          "/usr/bin/python3", "-c", UDP_ECHO % "pasta")
    try:
        assert _wait_http(f"http://127.0.0.1:{tport}/") == b"via-slirp\n"
        assert _udp_roundtrip(uport) == b"slirp:hi"
        assert _udp_roundtrip(pport) == b"pasta:hi"
        assert sorted(rl.ok("port", "slirpweb").splitlines()) == sorted(
            [f"80/tcp -> 127.0.0.1:{tport}", f"9999/udp -> 127.0.0.1:{uport}"])
    finally:
        rl("rm", "-f", "slirpweb", "pastaudp")
    for _ in range(50):
        if _port_free(tport):
            break
        time.sleep(0.1)
    assert _port_free(tport)


UDP_ECHO6 = ("import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
             "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\ns.bind(('::', 9999))\n"
             "while True:\n    d, a = s.recvfrom(9000)\n    s.sendto(b'%s:' + d, a)\n")


def _udp_roundtrip6(port: int) -> bytes | None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        c.settimeout(0.5)
        for _ in range(40):
            c.sendto(b"hi", ("::1", port))
            try:
                return c.recvfrom(100)[0]
            except socket.timeout:
                continue
    return None


def test_pasta_udp_under_another_port_number_reaches_ipv6_clients(net_rl):
    """-p HOST:CONTAINER/udp with pasta: the redirect inside the container's namespace (pasta keeps the host
    port number) covers IPv6 as well as IPv4 (an `inet` table, not `ip`)."""
    if not has_ipv6_loopback():
        pytest.skip("this host has no IPv6 on lo (ip -6 addr show lo)")
    rl = net_rl
    port = free_port()
    rl.ok("run", "-d", "--name", "udp6", "-p", f"{port}:9999/udp", *HOST_PY, rl.image,
          "/usr/bin/python3", "-c", UDP_ECHO6 % "six")
    try:
        assert _udp_roundtrip(port) == b"six:hi"
        assert _udp_roundtrip6(port) == b"six:hi"
    finally:
        rl("rm", "-f", "udp6")


def test_host_port_zero_and_udp_on_both_stacks_on_a_user_network(net_rl):
    """-p 0:80 is a free host port (Docker), not an error; -p P:C/udp on a user-defined network takes IPv6
    clients as well as IPv4 ones (one dual-stack socket, like TCP)."""
    rl = net_rl
    ipv6 = has_ipv6_loopback()
    rl.ok("network", "create", "udpnet")
    port = free_port()
    try:
        rl.ok("run", "-d", "--name", "zero", "-p", "127.0.0.1:0:80", rl.image, "sh", "-c",
              "echo port-zero > /tmp/index.html; httpd -f -p 80 -h /tmp")
        host = rl.ok("port", "zero", "80").strip()
        assert host.startswith("127.0.0.1:") and int(host.rsplit(":", 1)[1]) > 0, host
        assert _wait_http(f"http://{host}/") == b"port-zero\n"
        rl.ok("run", "-d", "--name", "udpecho", "--network", "udpnet", "-p", f"{port}:9999/udp", *HOST_PY,
              rl.image, "/usr/bin/python3", "-c", UDP_ECHO % "bridge")
        assert _udp_roundtrip(port) == b"bridge:hi"
        if ipv6:
            assert _udp_roundtrip6(port) == b"bridge:hi"
    finally:
        rl("rm", "-f", "zero", "udpecho")
        rl("network", "rm", "udpnet")
    if not ipv6:
        pytest.skip("this host has no IPv6 on lo (ip -6 addr show lo): the [::1] client was not tried")


def test_connect_disconnect(net_rl):
    rl = net_rl
    rl.ok("network", "create", "c1")
    rl.ok("network", "create", "c2")
    try:
        rl.ok("run", "-d", "--name", "srv", "--network", "c2", rl.image, "sh", "-c",
              "echo on-c2 > /tmp/index.html; httpd -f -p 80 -h /tmp")
        rl.ok("run", "-d", "--name", "cli", "--network", "c1", rl.image, "sleep", "120")
        time.sleep(0.3)
        cp = rl("exec", "cli", "sh", "-c", "nslookup srv; timeout 3 wget -q -O - http://srv/")
        assert "on-c2" not in cp.stdout
        # live: cli joins c2 with an alias; names resolve both ways on c2
        rl.ok("network", "connect", "--alias", "client", "c2", "cli")
        out = rl.ok("exec", "cli", "wget", "-q", "-O", "-", "http://srv/", timeout=30)
        assert out == "on-c2\n"
        assert "Address" in rl.ok("exec", "srv", "nslookup", "client")
        nets = json.loads(rl.ok("inspect", "cli"))[0]["NetworkSettings"]["Networks"]
        assert sorted(nets) == ["c1", "c2"]
        assert "eth1" in rl.ok("exec", "cli", "ip", "-o", "link")
        assert sorted(c["Name"] for c in json.loads(rl.ok("network", "inspect", "c2"))[0]["Containers"].values()) \
            == ["cli", "srv"]
        cp = rl("network", "connect", "c2", "cli")
        assert cp.returncode == 125 and "already connected" in cp.stderr
        # c2 is in use by both now
        cp = rl("network", "rm", "c2")
        assert cp.returncode == 125 and "cli" in cp.stderr and "srv" in cp.stderr
        # disconnect: the name is gone, the interface too
        rl.ok("network", "disconnect", "c2", "cli")
        cp = rl("exec", "cli", "sh", "-c", "timeout 3 wget -q -O - http://srv/; ip -o link")
        assert "on-c2" not in cp.stdout and "eth1" not in cp.stdout
        cp = rl("network", "disconnect", "c2", "cli")
        assert cp.returncode == 125 and "not connected" in cp.stderr
        # a stopped container: connect is remembered for the next start
        rl.ok("stop", "-t", "1", "cli")
        rl.ok("network", "connect", "c2", "cli")
        rl.ok("start", "cli")
        time.sleep(0.3)
        assert rl.ok("exec", "cli", "wget", "-q", "-O", "-", "http://srv/", timeout=30) == "on-c2\n"
        # a container on the default network cannot join live
        rl.ok("run", "-d", "--name", "plain", rl.image, "sleep", "60")
        cp = rl("network", "connect", "c1", "plain")
        assert cp.returncode == 125 and "stop it" in cp.stderr
        cp = rl("network", "connect", "nonet", "plain")
        assert cp.returncode == 125 and "not found" in cp.stderr
    finally:
        rl("rm", "-f", "srv", "cli", "plain")
        rl("network", "rm", "c1", "c2")


def _resolves(rl, ctr: str, name: str) -> bool:
    out = rl("exec", ctr, "nslookup", name).stdout
    return len(re.findall(r"^Address:", out, re.M)) >= 2    # the server's address, then the answer's


def test_aliases_per_network_and_rename(net_rl):
    """inspect shows each network's own aliases (those its DNS answers); rename of a running container
    changes its name in the networks' DNS and in `network inspect` (Docker)."""
    rl = net_rl
    rl.ok("network", "create", "al1")
    rl.ok("network", "create", "al2")
    try:
        rl.ok("run", "-d", "--name", "named", "--network", "al1", "--network-alias", "www", rl.image,
              "sleep", "120")
        rl.ok("run", "-d", "--name", "peer1", "--network", "al1", rl.image, "sleep", "120")
        rl.ok("run", "-d", "--name", "peer2", "--network", "al2", rl.image, "sleep", "120")
        assert rl.ok("ps", "--format", "{{.Networks}}", "--filter", "name=named").strip() == "al1"
        rl.ok("network", "connect", "--alias", "api", "al2", "named")
        assert rl.ok("ps", "--format", "{{.Networks}}", "--filter", "name=named").strip() == "al1,al2"
        nets = json.loads(rl.ok("inspect", "named"))[0]["NetworkSettings"]["Networks"]
        assert nets["al1"]["Aliases"] == ["www"] and nets["al2"]["Aliases"] == ["api"], nets
        assert _resolves(rl, "peer1", "www") and not _resolves(rl, "peer1", "api")
        assert _resolves(rl, "peer2", "api") and not _resolves(rl, "peer2", "www")

        rl.ok("rename", "named", "renamed")
        rl.ok("network", "disconnect", "al1", "peer1")
        assert rl.ok("ps", "--format", "{{.Networks}}", "--filter", "name=peer1").strip() == "none"
        rl.ok("network", "connect", "al1", "peer1")
        for peer in ("peer1", "peer2"):
            assert _resolves(rl, peer, "renamed"), peer
            assert not _resolves(rl, peer, "named"), peer
        for net in ("al1", "al2"):
            names = sorted(c["Name"] for c in json.loads(rl.ok("network", "inspect", net))[0]["Containers"].values())
            assert "renamed" in names and "named" not in names, (net, names)
        # a restart keeps the new name
        rl.ok("restart", "-t", "1", "renamed")
        time.sleep(0.3)
        assert _resolves(rl, "peer1", "renamed")
    finally:
        rl("rm", "-f", "named", "renamed", "peer1", "peer2")
        rl("network", "rm", "al1", "al2")


def _get6(port: int) -> bytes:
    """GET http://[::1]:PORT/."""
    c = http.client.HTTPConnection("::1", port, timeout=30)
    try:
        c.request("GET", "/")
        return c.getresponse().read()
    finally:
        c.close()


def test_relay_on_all_addresses(net_rl, www):
    """-p PORT:80 (every address, both families) goes through the relay too, not pasta: a dual-stack socket on
    [::]; the server sees each client's own address (127.0.0.2 stays 127.0.0.2, ::1 stays ::1)."""
    rl = net_rl
    d, digest = www
    port = free_port()
    ipv6 = has_ipv6_loopback()
    port6 = free_port()     # [::]:PORT6:80: IPv6 clients only
    rl.ok("run", "-d", "--name", "allweb", "-p", f"{port}:80", *(("-p", f"[::]:{port6}:80") if ipv6 else ()),
          "-v", f"{d}:/www:ro", rl.image, "httpd", "-f", "-vv", "-p", "80", "-h", "/www")
    try:
        assert _wait_http(f"http://127.0.0.1:{port}/") == b"hello through a published port\n"
        got = urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=60).read()
        assert hashlib.sha256(got).hexdigest() == digest
        # pasta 2023 showed a client on 127.0.0.2 as 127.0.0.1: the relay connects from 127.0.0.2 itself
        assert _fetch_from("127.0.0.2", port, "/") == b"hello through a published port\n"
        sources = _sources(rl, "allweb")
        assert "127.0.0.2" in sources and sources <= {"127.0.0.1", "127.0.0.2"}, sources
        if ipv6:
            for p in (port, port6):
                assert _get6(p) == b"hello through a published port\n"
            logs = rl.ok("logs", "allweb") + rl("logs", "allweb").stderr
            assert len(re.findall(r"\[::1\]:\d+: url:/", logs)) == 2, logs   # httpd listens on [::]: sees ::1
            assert rl.ok("port", "allweb", "80").split() == [f"0.0.0.0:{port}", f"[::]:{port6}"]
        else:
            assert rl.ok("port", "allweb").strip() == f"80/tcp -> 0.0.0.0:{port}"
        cp = rl("run", "--rm", "-p", f"127.0.0.1:{port}:80", rl.image, "true")
        assert cp.returncode == 125 and "already in use by container allweb (port relay, pid" in cp.stderr, cp.stderr
    finally:
        rl("rm", "-f", "allweb")
    for _ in range(50):
        if _port_free(port):
            break
        time.sleep(0.1)
    assert _port_free(port)
    if not ipv6:
        pytest.skip("this host has no IPv6 on lo (ip -6 addr show lo): the [::1] client was not tried")

"""The per-user network namespace, with real namespaces, as the unprivileged user.

The "containers" here are real processes in real namespaces made the way
the runtime makes a container on a user-defined network (tests/integration/
nsproc.py: join the holder's user namespace, unshare a network namespace);
only the image and the mount namespace are left out. Everything contacted
is 127.0.0.1 or an address inside these namespaces.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rootless.config import Config
from rootless.errors import NetworkError, PortInUse
from rootless.network import rootlessns
from rootless.network.networks import NetworkStore
from rootless.network.ports import PortMapping, port_holder

HERE = Path(__file__).resolve().parent
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@pytest.fixture
def cfg(request, tmp_path, unprivileged, monkeypatch):
    """A Config; parametrize indirectly with "pasta" or "slirp4netns" for [network] backend."""
    from tests.conftest import require

    require("userns", "newuidmap", "tun", "network")
    backend = getattr(request, "param", "auto")
    if backend != "auto" and not shutil.which(backend):
        pytest.skip(f"{backend} not installed")
    monkeypatch.setenv("ROOTLESS_NETNS_IDLE", "1")
    rt = tmp_path / "run"
    rt.mkdir(mode=0o700)
    c = Config(data_root=tmp_path / "store", runtime_dir=rt, config_dir=tmp_path / "cfg", network_backend=backend)
    yield c
    info = rootlessns.running(rt)
    if info is not None:
        os.kill(info.pid, 15)
        for _ in range(100):
            if rootlessns.running(rt) is None:
                break
            time.sleep(0.05)


class Proc:
    """A process in its own network namespace, in the holder's user namespace."""

    def __init__(self, userns: str, argv: list[str], hostname: str | None = None):
        extra = ["--hostname", hostname] if hostname else []
        self.p = subprocess.Popen([sys.executable, str(HERE / "nsproc.py"), userns, *extra, "--", *argv],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("ready "), (line, self.p.stderr.read())
        self.pid = int(line.split()[1])

    def go(self):
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def run(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run a command inside this process's namespaces (nsenter as the user)."""
        return subprocess.run(["nsenter", "-U", "-n", "-t", str(self.pid), *argv], capture_output=True, text=True,
                              timeout=timeout)

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


@pytest.fixture
def procs():
    made: list[Proc] = []

    def make(userns, argv=("sleep", "300"), hostname=None):
        p = Proc(userns, list(argv), hostname)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def container(cfg, procs, net, name, ip=None, aliases=(), ports=(), argv=("sleep", "300")):
    cid = name.encode().hex().ljust(64, "0")[:64]
    info = rootlessns.ensure_holder(cfg, reserve=cid)
    p = procs(info.userns, argv, hostname=name)
    ep = rootlessns.attach(cfg, container_id=cid, pid=p.pid, name=name, network=net,
                           ip=ip, aliases=aliases, ports=ports)
    p.go()
    return p, ep


def resolve(p: Proc, name: str, server: str) -> str | None:
    cp = p.run(BUSYBOX, "nslookup", name, server)
    for line in cp.stdout.splitlines()[2:]:
        if line.startswith("Address:"):
            return line.split()[1]
    return None


ASK = """
import socket, struct, sys
from rootless.network.dns import build_query, parse_message
name, server, proto, qtype = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
q = build_query(name, qtype, mid=0x4d2)
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, (server, 53))      # once: no retry hides a lost answer
    data = s.recv(65535)
else:
    s = socket.create_connection((server, 53), timeout=5)
    s.sendall(struct.pack("!H", len(q)) + q)
    buf = b""
    while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
        b = s.recv(65535)
        if not b:
            sys.exit("connection closed")
        buf += b
    data = buf[2:]
m = parse_message(data)
print(m.id, m.rcode, " ".join(str(a.data) for a in m.answers), m.flags & 0x200 and "TC" or "")
"""


def ask(p: Proc, name: str, server: str, proto: str = "udp", qtype: int = 1) -> tuple[int, list[str]] | None:
    """One query (no retries) from inside ``p``: (rcode, answers), None when nothing came back."""
    cp = p.run(sys.executable, "-c", ASK, name, server, proto, str(qtype))
    if cp.returncode != 0:
        return None
    mid, rcode, *answers = cp.stdout.split()
    assert mid == str(0x4d2)
    return int(rcode), [a for a in answers if a != "TC"]


def wait_listen(p: Proc, port: int):
    for _ in range(100):
        cp = p.run(BUSYBOX, "netstat", "-ltn")
        if f":{port} " in cp.stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}: {cp.stdout}")


def fetch(p: Proc, url: str) -> subprocess.CompletedProcess:
    return p.run(BUSYBOX, "wget", "-q", "-O", "-", url, timeout=20)


def test_two_networks_names_aliases_isolation(cfg, procs, tmp_path):
    store = NetworkStore(cfg.data_root)
    n1 = store.create("n1")
    n2 = store.create("n2")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from web\n")
    os.chmod(tmp_path, 0o755)
    web, ep_web = container(cfg, procs, n1, "web", aliases=["site"],
                            argv=[BUSYBOX, "httpd", "-f", "-p", "80", "-h", str(www)])
    client, ep_client = container(cfg, procs, n1, "client")
    other, ep_other = container(cfg, procs, n2, "other")
    assert ep_web["ip"] != ep_client["ip"]
    assert ep_web["gateway"] == n1.gateway
    assert ep_other["gateway"] == n2.gateway
    wait_listen(web, 80)

    # eth0 with the leased address, MAC from the address, default route via the gateway
    cp = client.run("ip", "-o", "-4", "addr", "show", "eth0")
    assert f"inet {ep_client['ip']}/{n1.prefixlen}" in cp.stdout, cp
    cp = client.run("ip", "route")
    assert f"default via {n1.gateway}" in cp.stdout

    # by name and by alias, through the network's DNS server on the gateway
    assert resolve(client, "web", n1.gateway) == ep_web["ip"]
    assert resolve(client, "site", n1.gateway) == ep_web["ip"]
    assert resolve(client, "web.dns.rootless", n1.gateway) == ep_web["ip"]
    cp = fetch(client, f"http://{resolve(client, 'site', n1.gateway)}/")
    assert cp.stdout == "hello from web\n", cp

    # n2 neither resolves nor reaches n1's containers, not even by asking n1's DNS server
    assert resolve(other, "web", n2.gateway) is None
    assert resolve(other, "web", n1.gateway) is None
    cp = other.run(BUSYBOX, "nc", "-w", "2", ep_web["ip"], "80", timeout=20)
    assert cp.returncode != 0 and "hello" not in cp.stdout
    cp = other.run(BUSYBOX, "timeout", "3", BUSYBOX, "wget", "-q", "-O", "-", f"http://{ep_web['ip']}/", timeout=20)
    assert cp.returncode != 0 and "hello" not in cp.stdout

    # network inspect data: both endpoints listed under n1
    eps = rootlessns.endpoints(cfg.runtime_dir)
    assert {e["name"] for e in eps[n1.id].values()} == {"web", "client"}
    assert {e["name"] for e in eps[n2.id].values()} == {"other"}

    # a stopped container leaves its network (pidfd), its name goes from DNS
    web.stop()
    for _ in range(100):
        if resolve(client, "web", n1.gateway) is None:
            break
        time.sleep(0.05)
    assert resolve(client, "web", n1.gateway) is None
    assert "web" not in {e["name"] for e in rootlessns.endpoints(cfg.runtime_dir)[n1.id].values()}


def test_ip_choice_conflicts_and_internal(cfg, procs):
    store = NetworkStore(cfg.data_root)
    n = store.create("fixed", subnet="10.89.77.0/24")
    a, ep = container(cfg, procs, n, "a", ip="10.89.77.50")
    assert ep["ip"] == "10.89.77.50" and ep["mac"] == "02:42:0a:59:4d:32"
    with pytest.raises(NetworkError, match="already in use .* by container a"):
        container(cfg, procs, n, "b", ip="10.89.77.50")
    # the failed attach left nothing behind: the next free address is handed out
    c, ep_c = container(cfg, procs, n, "c")
    assert ep_c["ip"] == "10.89.77.2"

    internal = store.create("inside", internal=True)
    i, ep_i = container(cfg, procs, internal, "i")
    cp = i.run("ip", "route")
    assert "default" not in cp.stdout  # no way out


def _host_server(tmp_path, body: bytes) -> tuple[subprocess.Popen, int]:
    www = tmp_path / "hostwww"
    www.mkdir()
    (www / "f").write_bytes(body)
    port = _free_port()
    p = subprocess.Popen([BUSYBOX, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise AssertionError("host httpd did not start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("cfg", ["pasta", "slirp4netns"], indirect=True)
def test_outside_through_the_backend_and_internal_has_none(cfg, procs, tmp_path):
    """The uplink of the per-user namespace, through each backend ([network] backend): a server on the
    host's 127.0.0.1 is reached through the backend's host-loopback address."""
    srv, port = _host_server(tmp_path, b"host loopback says hi\n")
    try:
        store = NetworkStore(cfg.data_root)
        n = store.create("out")
        ni = store.create("in", internal=True)
        a, _ = container(cfg, procs, n, "a")
        b, _ = container(cfg, procs, ni, "b")
        holder = rootlessns.running(cfg.runtime_dir)
        assert holder.backend == cfg.network_backend
        gw = holder.host_gateway
        assert gw and (gw == "10.0.2.2") == (cfg.network_backend == "slirp4netns"), gw
        cp = fetch(a, f"http://{gw}:{port}/f")
        assert cp.stdout == "host loopback says hi\n", cp
        cp = b.run(BUSYBOX, "nc", "-w", "2", gw, str(port), timeout=20)
        assert cp.returncode != 0
    finally:
        srv.kill()
        srv.wait()


def test_published_port_transfer_and_release(cfg, procs, tmp_path):
    data = os.urandom(10 * 1024 * 1024)
    www = tmp_path / "pub"
    www.mkdir()
    (www / "big").write_bytes(data)
    (www / "index.html").write_text("published\n")
    os.chmod(tmp_path, 0o755)
    store = NetworkStore(cfg.data_root)
    n = store.create("pub")
    port = _free_port()
    m = PortMapping(80, "tcp", "127.0.0.1", port)
    web, ep = container(cfg, procs, n, "web", ports=[m], argv=[BUSYBOX, "httpd", "-f", "-vv", "-p", "80",
                                                              "-h", str(www)])
    wait_listen(web, 80)
    import urllib.request

    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read() == b"published\n"
    got = urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=30).read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # held by the holder now: a second publish of the port fails, naming the holder
    with pytest.raises(PortInUse) as ei:
        container(cfg, procs, n, "web2", ports=[m])
    assert str(port) in ei.value.message and "rootless.network.rootlessns" in ei.value.message
    assert "rootlessns" in port_holder(port)
    # the container stops: the port is free again
    web.stop()
    for _ in range(100):
        if port_holder(port) is None:
            break
        time.sleep(0.05)
    assert port_holder(port) is None
    with socket.socket() as s:  # connections of the transfer may linger in TIME_WAIT: servers use SO_REUSEADDR
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)


def test_udp_published_port(cfg, procs):
    store = NetworkStore(cfg.data_root)
    n = store.create("udp")
    port = _free_port()
    # a UDP echo server in the container (busybox nc -u -l echoes nothing; use python)
    echo = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\n"
            "while True:\n d,a=s.recvfrom(9000)\n s.sendto(b'echo:'+d,a)\n")
    srv, ep = container(cfg, procs, n, "echo", ports=[PortMapping(5353, "udp", "127.0.0.1", port)],
                        argv=[sys.executable, "-c", echo])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(1)
        for _ in range(50):
            c.sendto(b"ping", ("127.0.0.1", port))
            try:
                d, _ = c.recvfrom(9000)
                break
            except socket.timeout:
                continue
        assert d == b"echo:ping"


def test_holder_exits_when_idle_and_restarts(cfg, procs):
    store = NetworkStore(cfg.data_root)
    n = store.create("idle")
    a, _ = container(cfg, procs, n, "a")
    first = rootlessns.running(cfg.runtime_dir)
    assert first is not None
    # the holder's namespace has the bridge of n and the uplink
    cp = subprocess.run(["nsenter", "-U", "-n", "-t", str(first.pid), "ip", "-o", "link"], capture_output=True,
                        text=True)
    assert n.bridge in cp.stdout and "tap0" in cp.stdout
    a.stop()
    for _ in range(200):
        if rootlessns.running(cfg.runtime_dir) is None:
            break
        time.sleep(0.05)
    assert rootlessns.running(cfg.runtime_dir) is None
    assert not (rootlessns.netns_dir(cfg.runtime_dir) / "ctl.sock").exists()
    b, ep = container(cfg, procs, n, "b")
    second = rootlessns.running(cfg.runtime_dir)
    assert second.pid != first.pid and ep["ip"]


def test_attach_refuses_a_process_outside_the_user_namespace(cfg, procs):
    store = NetworkStore(cfg.data_root)
    n = store.create("x")
    rootlessns.ensure_holder(cfg)
    p = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(NetworkError, match="not in the user namespace"):
            rootlessns.attach(cfg, container_id="f" * 64, pid=p.pid, name="outsider", network=n)
    finally:
        p.kill()
        p.wait()


def test_long_runtime_dir(tmp_path, procs, unprivileged, monkeypatch):
    """Unix socket paths are limited to 107 bytes: a deep runtime dir still works."""
    from tests.conftest import require

    require("userns", "newuidmap", "tun", "network")
    monkeypatch.setenv("ROOTLESS_NETNS_IDLE", "1")
    rt = tmp_path / ("d" * 60) / ("e" * 60)
    rt.mkdir(parents=True, mode=0o700)
    c = Config(data_root=tmp_path / "store", runtime_dir=rt, config_dir=tmp_path / "cfg")
    n = NetworkStore(c.data_root).create("deep")
    try:
        p, ep = container(c, procs, n, "deep")
        assert ep["ip"]
        assert len(str(rootlessns.netns_dir(rt) / "ctl.sock")) > 107
    finally:
        info = rootlessns.running(rt)
        if info is not None:
            os.kill(info.pid, 15)


def _dns_config(tmp_path, monkeypatch, upstream) -> Config:
    """A store and a private runtime dir whose per-user namespace forwards outside names to
    ``upstream`` (a test resolver on 127.0.0.1) and ends as soon as it is idle."""
    monkeypatch.setenv("ROOTLESS_NETNS_IDLE", "1")
    monkeypatch.setenv("ROOTLESS_NETNS_DNS", f"127.0.0.1:{upstream.port}")
    rt = tmp_path / "run"
    rt.mkdir(mode=0o700)
    return Config(data_root=tmp_path / "store", runtime_dir=rt, config_dir=tmp_path / "cfg")


def test_dns_forwards_to_a_resolver_on_the_host_loopback(tmp_path, procs, unprivileged, monkeypatch):
    """Other names go to the host's resolver, even one on the host's 127.0.0.1 (systemd-resolved style):
    the holder forwards from a socket it made in the host's namespace before leaving it."""
    from tests.conftest import require
    from tests.integration.test_dns_server import Upstream

    require("userns", "newuidmap", "tun", "network")
    up = Upstream({"outside.test": "192.0.2.99"})
    c = _dns_config(tmp_path, monkeypatch, up)
    rt = c.runtime_dir
    n = NetworkStore(c.data_root).create("fwd")
    try:
        p, ep = container(c, procs, n, "asker")
        assert resolve(p, "outside.test", n.gateway) == "192.0.2.99"
        assert any(q.questions[0].name == "outside.test" for q in up.seen)
        assert resolve(p, "asker", n.gateway) == ep["ip"]          # its own name: answered locally
        assert not any(q.questions[0].name == "asker" for q in up.seen)
    finally:
        up.stop()
        info = rootlessns.running(rt)
        if info is not None:
            os.kill(info.pid, 15)


def _bridge_mac(cfg, bridge: str) -> str:
    info = rootlessns.running(cfg.runtime_dir)
    cp = subprocess.run(["nsenter", "-U", "-n", "-t", str(info.pid), "ip", "-o", "link", "show", bridge],
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp
    return cp.stdout.split("link/ether ")[1].split()[0]


def test_gateway_keeps_its_mac_while_containers_come_and_go(cfg, procs):
    """The bridge has a fixed MAC (from the gateway address): without one it takes the lowest MAC of its
    ports, which changes as veths come and go, and the ARP caches of the other containers point at a MAC
    that is gone: their DNS server (on the gateway) is lost for up to ~30 s."""
    n = NetworkStore(cfg.data_root).create("steady")
    asker, ep = container(cfg, procs, n, "asker")
    want = rootlessns.mac_for(n.gateway)
    assert _bridge_mac(cfg, n.bridge) == want
    for i in range(6):
        b, ep_b = container(cfg, procs, n, f"b{i}")
        # the asker learns the gateway's MAC now, while b's veth is on the bridge
        cp = asker.run("ip", "neigh", "flush", "dev", "eth0")
        assert cp.returncode == 0, cp
        assert resolve(asker, f"b{i}", n.gateway) == ep_b["ip"]
        assert _bridge_mac(cfg, n.bridge) == want
        b.stop()
        for _ in range(100):
            if f"b{i}" not in {e["name"] for e in rootlessns.endpoints(cfg.runtime_dir)[n.id].values()}:
                break
            time.sleep(0.05)
        assert _bridge_mac(cfg, n.bridge) == want
        # b's veth is gone: the gateway still answers at the MAC the asker knows
        assert resolve(asker, "asker", n.gateway) == ep["ip"], i


def test_dns_forwarding_works_on_every_network(tmp_path, procs, unprivileged, monkeypatch):
    """Two networks up: each one's DNS server forwards outside names and gets its answers (they used to
    share one upstream socket, and a server dropped the answers to the other's queries)."""
    from tests.conftest import require
    from tests.integration.test_dns_server import Upstream

    require("userns", "newuidmap", "tun", "network")
    up = Upstream({"outside.test": "192.0.2.99"})
    c = _dns_config(tmp_path, monkeypatch, up)
    rt = c.runtime_dir
    store = NetworkStore(c.data_root)
    n1, n2, n3 = store.create("f1"), store.create("f2"), store.create("f3")
    try:
        askers = [(container(c, procs, n, f"asker{i}")[0], n) for i, n in enumerate((n1, n2, n3))]
        for _ in range(4):
            for p, n in askers:
                assert ask(p, "outside.test", n.gateway) == (0, ["192.0.2.99"]), n.name
                assert ask(p, "nothing.test", n.gateway) == (3, []), n.name
    finally:
        up.stop()
        info = rootlessns.running(rt)
        if info is not None:
            os.kill(info.pid, 15)


def test_dns_of_a_container_goes_to_its_own_resolvers(tmp_path, procs, unprivileged, monkeypatch):
    """--dns on a user-defined network (Docker): the container keeps the network's DNS server (its
    neighbours' names resolve) and the server forwards that container's other queries to its --dns."""
    from tests.conftest import require
    from tests.integration.test_dns_server import Upstream

    require("userns", "newuidmap", "tun", "network")
    net_up = Upstream({"outside.test": "192.0.2.1"})
    own_up = Upstream({"outside.test": "192.0.2.2"})
    c = _dns_config(tmp_path, monkeypatch, net_up)
    rt = c.runtime_dir
    n = NetworkStore(c.data_root).create("own")
    try:
        plain, ep_plain = container(c, procs, n, "plain")
        cid = "own".encode().hex().ljust(64, "0")
        info = rootlessns.ensure_holder(c, reserve=cid)
        mine = procs(info.userns, ["sleep", "300"])
        rootlessns.attach(c, container_id=cid, pid=mine.pid, name="mine", network=n,
                          dns=[("127.0.0.1", own_up.port)])
        mine.go()
        assert ask(mine, "outside.test", n.gateway) == (0, ["192.0.2.2"])
        assert ask(plain, "outside.test", n.gateway) == (0, ["192.0.2.1"])
        assert ask(mine, "plain", n.gateway) == (0, [ep_plain["ip"]])     # the network's names still resolve
        assert [q.questions[0].name for q in own_up.seen] == ["outside.test"]
    finally:
        net_up.stop()
        own_up.stop()
        info = rootlessns.running(rt)
        if info is not None:
            os.kill(info.pid, 15)


def test_dns_over_tcp_on_the_gateway(tmp_path, procs, unprivileged, monkeypatch):
    """The network's DNS server answers over TCP too (a client retries there when the UDP answer was
    truncated): container names from the records, other names relayed to the upstream over TCP, from the
    host's namespace (the upstream is on the host's 127.0.0.1)."""
    from tests.conftest import require
    from tests.integration.test_dns_server import Upstream

    require("userns", "newuidmap", "tun", "network")
    many = [f"192.0.2.{i}" for i in range(1, 61)]
    up = Upstream({"big.test": many})
    c = _dns_config(tmp_path, monkeypatch, up)
    rt = c.runtime_dir
    n = NetworkStore(c.data_root).create("tcpdns")
    try:
        a, ep_a = container(c, procs, n, "alpha", aliases=["first"])
        b, _ = container(c, procs, n, "beta")
        assert ask(b, "alpha", n.gateway, "tcp") == (0, [ep_a["ip"]])
        assert ask(b, "first.dns.rootless", n.gateway, "tcp") == (0, [ep_a["ip"]])
        assert ask(b, "big.test", n.gateway, "tcp") == (0, many)
        assert [q.questions[0].name for q in up.seen_tcp] == ["big.test"]
        rcode, part = ask(b, "big.test", n.gateway, "udp")
        assert rcode == 0 and len(part) < len(many)          # UDP: truncated
    finally:
        up.stop()
        info = rootlessns.running(rt)
        if info is not None:
            os.kill(info.pid, 15)


def test_a_connection_that_ends_at_once_does_not_keep_the_holder(tmp_path, monkeypatch):
    """A published port's connection may end before the holder has recorded it (a Splicer that finishes
    while it is being made): it must not stay recorded, or the holder never goes idle. Real sockets on
    127.0.0.1; the Splicer is one that finishes at once."""
    from rootless.network import relay

    class Instant(relay.Splicer):
        def start(self):
            self.a.close()
            self.b.close()
            self.on_done(self)

    monkeypatch.setattr(relay, "Splicer", Instant)
    h = rootlessns.Holder(tmp_path, "pasta", "/bin/false", "/bin/false", socket.socket(socket.AF_INET,
                                                                                     socket.SOCK_DGRAM), None)
    with socket.socket() as srv, socket.socket() as pub:
        srv.bind(("127.0.0.1", 0))       # the container's server
        srv.listen(1)
        pub.bind(("127.0.0.1", 0))       # the published port
        pub.listen(1)
        with socket.create_connection(pub.getsockname()):
            client, _ = pub.accept()
            h._connect_and_splice(client, srv.getsockname())
    assert h.splicers == set()
    h.forwarder.close()

"""Published ports and DNS against a stand-in host made of namespaces (tests/integration/fakehost.py).

The real ``rootless.network`` code (plan, start, stop; pasta, slirp4netns,
the port relay) runs as an unprivileged user of a user namespace the test
makes, whose network namespace plays the host: it has a peer on a veth (a
client that is not on the host's loopback) and a DNS server on its
127.0.0.1:53, which the real host's loopback must not be used for. Nothing
leaves these namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

FAKEHOST = Path(__file__).resolve().parent / "fakehost.py"
ROOT = Path(__file__).resolve().parents[2]


def fakehost(tmp_path, *scenario: str, resolv: str = "nameserver 127.0.0.1\nnameserver 10.250.0.53\n") -> dict:
    require("userns", "newuidmap", "tun", "network")
    for tool in ("setpriv", "nsenter", "ip", "busybox"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    f = tmp_path / "resolv.conf"
    f.write_text(resolv)
    f.chmod(0o644)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cp = subprocess.run(["unshare", "-Urnm", "--map-auto", sys.executable, str(FAKEHOST), str(f), *scenario],
                        capture_output=True, text=True, timeout=240, env=env)
    assert cp.returncode == 0 and cp.stdout.strip(), (cp.stdout, cp.stderr)
    return json.loads(cp.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _user(unprivileged):
    pass


def test_relay_keeps_loopback_and_remote_client_addresses(tmp_path):
    """slirp4netns: TCP through the relay, which connects from the client's own address."""
    out = fakehost(tmp_path, "publish", "slirp4netns", "18081:80")
    assert out["via"] == "relay"
    assert out["local"] == "127.0.0.2", out        # a loopback client: bound as it is
    assert out["remote"] == "10.250.0.7", out      # a remote client: IP_TRANSPARENT + the reply route
    assert out["remote_again"] == "10.250.0.7", out
    assert "from 127.0.0.0/8 lookup 29292" in out["rules"], out["rules"]
    assert out["helper_alive"], out


def test_relay_on_a_loopback_address_needs_no_route(tmp_path):
    out = fakehost(tmp_path, "publish", "pasta", "127.0.0.1:18082:80")
    assert out["via"] == "relay"
    assert out["local"] == "127.0.0.2", out
    assert "29292" not in out["rules"]             # loopback clients only: the container's rules untouched


def test_pasta_port_on_every_address_keeps_a_remote_client_and_survives_it(tmp_path):
    """-p 18080:80 with pasta goes through the relay too: pasta 0~git20230309 (Debian 12) segfaulted on the
    first inbound connection from a client that is not on loopback, taking the container's network down."""
    out = fakehost(tmp_path, "publish", "pasta", "18080:80")
    assert out["via"] == "relay"
    assert out["remote"] == "10.250.0.7", out      # seen through the dual-stack socket as ::ffff:10.250.0.7
    assert out["remote_again"] == "10.250.0.7", out
    assert out["local"] == "127.0.0.2", out
    assert "from 127.0.0.0/8 lookup 29292" in out["rules"], out["rules"]
    assert out["helper_alive"], out                # pasta still serves the container's way out
    # an IPv6 client of a server that listens on IPv4 only: the relay falls back to 127.0.0.1
    assert out["local6"] == "127.0.0.1", out


def test_resolv_conf_points_at_the_pasta_forwarder(tmp_path):
    """Like Podman: 169.254.1.1 (pasta --dns-forward) first, then the host's resolvers that are not on its
    loopback; a name asked of the forwarder is answered by the resolver on the host's 127.0.0.1."""
    out = fakehost(tmp_path, "dns")
    assert out["resolv"] == "nameserver 169.254.1.1\nnameserver 10.250.0.53\n"
    assert "Address: 192.0.2.77" in out["nslookup"], out
    assert "outside.test" in out["resolver_saw"]

"""Login, Basic auth (htpasswd) and Bearer tokens (token realm served by the test) against docker-registry."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from tests.conftest import AUTH_PASSWORD, AUTH_USER

pytestmark = pytest.mark.usefixtures("unprivileged")


def _login(rl, host, password=AUTH_PASSWORD):
    return rl("login", "-u", AUTH_USER, "--password-stdin", host, input=password + "\n")


def _auth_file(rl):
    return rl.home / ".config" / "rootless" / "auth.json"


def test_basic_auth_login_pull_logout(rl, basic_registry):
    ref = basic_registry.ref("busybox")
    cp = rl("pull", ref)
    assert cp.returncode == 125
    assert "rootless login" in cp.stderr and "Traceback" not in cp.stderr
    cp = _login(rl, basic_registry.host, "wrong")
    assert cp.returncode == 125 and "login" in cp.stderr.lower()
    assert not _auth_file(rl).exists()
    cp = _login(rl, basic_registry.host)
    assert cp.returncode == 0, cp.stderr
    assert "Login Succeeded" in cp.stdout
    f = _auth_file(rl)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    auths = json.loads(f.read_text())["auths"]
    assert base64.b64decode(auths[basic_registry.host]["auth"]).decode() == f"{AUTH_USER}:{AUTH_PASSWORD}"
    assert rl("pull", "-q", ref).returncode == 0
    # push with the same credentials
    rl.ok("tag", ref, basic_registry.ref("pushed", "v1"))
    cp = rl("push", basic_registry.ref("pushed", "v1"))
    assert cp.returncode == 0, cp.stderr
    cp = rl("logout", basic_registry.host)
    assert cp.returncode == 0 and "Removed login credentials" in cp.stdout
    assert basic_registry.host not in json.loads(f.read_text())["auths"]
    cp = rl("pull", basic_registry.ref("pushed", "v1"))
    assert cp.returncode == 125
    assert rl("logout", basic_registry.host).returncode != 0


def test_docker_config_credentials_are_read(rl, basic_registry):
    d = rl.home / ".docker"
    d.mkdir()
    token = base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": token}}}))
    cp = rl("pull", "-q", basic_registry.ref("busybox"))
    assert cp.returncode == 0, cp.stderr


def test_bearer_token_auth(rl, token_registry):
    reg, ts = token_registry
    ref = reg.ref("busybox")
    before = len(ts.requests)
    cp = rl("pull", ref)
    assert cp.returncode == 125
    assert "rootless login" in cp.stderr
    # anonymous: the registry's challenge sent us to the realm with the scope
    anon = ts.requests[before:]
    assert anon and anon[0]["user"] is None and anon[0]["scope"] == ["repository:busybox:pull"]
    assert anon[0]["service"] == ts.service
    assert _login(rl, reg.host, "wrong").returncode == 125
    cp = _login(rl, reg.host)
    assert cp.returncode == 0, cp.stderr
    before = len(ts.requests)
    cp = rl("pull", ref)
    assert cp.returncode == 0, cp.stderr
    got = ts.requests[before:]
    assert any(r["user"] == AUTH_USER and "repository:busybox:pull" in r["scope"] for r in got)
    # push asks for a push scope
    rl.ok("tag", ref, reg.ref("mine", "v2"))
    before = len(ts.requests)
    cp = rl("push", reg.ref("mine", "v2"))
    assert cp.returncode == 0, cp.stderr
    assert any("repository:mine:pull,push" in r["scope"] for r in ts.requests[before:])
    # and it can be pulled back into a fresh store with the same digest
    d1 = json.loads(rl.ok("image", "inspect", ref))[0]["Id"]
    rl.ok("rmi", "-f", ref, reg.ref("mine", "v2"))
    rl.ok("pull", "-q", reg.ref("mine", "v2"))
    assert json.loads(rl.ok("image", "inspect", reg.ref("mine", "v2")))[0]["Id"] == d1


def test_tls_registry_verification(rl, tls_registry):
    ref = tls_registry.ref("busybox")
    # 127.0.0.1 speaks plain HTTP by default: this one answers HTTPS only
    cp = rl("pull", "--tls-verify=true", ref)
    assert cp.returncode == 125
    assert "not trusted" in cp.stderr and "--tls-verify=false" in cp.stderr
    cp = rl("pull", "-q", "--tls-verify=false", ref)
    assert cp.returncode == 0, cp.stderr
    rl.ok("rmi", ref)
    # the same through the config's insecure list
    (rl.home / ".config" / "rootless").mkdir(parents=True, exist_ok=True)
    (rl.home / ".config" / "rootless" / "config.toml").write_text(
        f'[registries]\ninsecure = ["{tls_registry.host}"]\n')
    cp = rl("pull", "-q", ref)
    assert cp.returncode == 0, cp.stderr

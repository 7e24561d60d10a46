"""Registry client: TLS or plain HTTP by host, credential helpers, identity tokens.

The identity-token test runs a small registry + OAuth2 token endpoint on
127.0.0.1 in this process (the http.server module); the helper tests run a
shell script speaking Docker's credential-helper protocol.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from rootless.config import load_config
from rootless.errors import AuthError
from rootless.image import auth
from rootless.image.registry import RegistryClient


# --- TLS by default, plain HTTP for the local host ----------------------------

@pytest.mark.parametrize("host", ["ghcr.io", "quay.io", "docker.io", "registry.example.com:5000", "10.0.0.5:5000",
                                  "128.0.0.1", "localhost.example.com", "[2001:db8::1]:5000"])
def test_tls_by_default_for_other_hosts(host):
    c = RegistryClient(host)
    assert c.schemes == ["https"] and c.verify


@pytest.mark.parametrize("host", ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:5000", "127.1.2.3:80",
                                  "[::1]:5000", "::1"])
def test_plain_http_for_localhost_127_and_ipv6_loopback(host):
    assert RegistryClient(host).schemes == ["http"]


def test_tls_flags_override_the_default():
    assert RegistryClient("127.0.0.1:5000", tls_verify=True).schemes == ["https"]
    c = RegistryClient("ghcr.io", tls_verify=False)
    assert c.schemes == ["https", "http"] and not c.verify


# --- credential helpers ---------------------------------------------------------

HELPER = """#!/bin/sh
[ "$1" = get ] || exit 2
url=$(cat)
echo "$url" >> "$HELPER_LOG"
case "$url" in
  reg.example:5000) echo '{"ServerURL": "reg.example:5000", "Username": "alice", "Secret": "s3"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL": "https://index.docker.io/v1/", "Username": "<token>", "Secret": "refresh-hub"}' ;;
  broken.example) echo 'the keychain is locked' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
"""


def _env(tmp_path: Path) -> dict:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    helper = bindir / "docker-credential-fake"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PATH": f"{bindir}:/usr/bin:/bin",
            "HELPER_LOG": str(tmp_path / "helper.log")}


def _docker_config(tmp_path: Path, d: dict) -> None:
    (tmp_path / ".docker").mkdir(exist_ok=True)
    (tmp_path / ".docker" / "config.json").write_text(json.dumps(d))


def test_cred_helpers_and_creds_store(tmp_path):
    env = _env(tmp_path)
    _docker_config(tmp_path, {
        "credHelpers": {"reg.example:5000": "fake"},
        "credsStore": "fake",
        "auths": {"inline.example": {"auth": base64.b64encode(b"bob:pw").decode()}, "https://index.docker.io/v1/": {}}})
    cfg = load_config(env)
    warnings = []
    assert auth.lookup(cfg, "reg.example:5000", env, warn=warnings.append) == ("alice", "s3")
    # credsStore, for Docker Hub under its server URL; "<token>" marks an identity token
    assert auth.lookup(cfg, "docker.io", env, warn=warnings.append) == ("<token>", "refresh-hub")
    # credentials in the file come before the store
    assert auth.lookup(cfg, "inline.example", env, warn=warnings.append) == ("bob", "pw")
    # the helper has none: anonymous, no warning
    assert auth.lookup(cfg, "other.example", env, warn=warnings.append) is None
    assert warnings == []
    log = (tmp_path / "helper.log").read_text().split()
    assert log == ["reg.example:5000", "https://index.docker.io/v1/", "other.example"]
    # a failing helper: skipped with its message
    assert auth.lookup(cfg, "broken.example", env, warn=warnings.append) is None
    assert len(warnings) == 1 and "docker-credential-fake failed" in warnings[0] and "locked" in warnings[0]


def test_missing_credential_helper_warns_once_and_pulls_anonymously(tmp_path):
    env = _env(tmp_path)
    _docker_config(tmp_path, {"credsStore": "desktop", "credHelpers": {"reg.example": "desktop"}})
    (tmp_path / "cfg" / "rootless").mkdir(parents=True)
    (tmp_path / "cfg" / "rootless" / "auth.json").write_text(json.dumps({"credsStore": "desktop"}))
    cfg = load_config(env)
    warnings = []

    class R:
        def warn(self, m):
            warnings.append(m)

    c = RegistryClient("reg.example", cfg, env=env, reporter=R())
    assert c.creds is None
    assert len(warnings) == 1, warnings
    assert "docker-credential-desktop is not installed" in warnings[0] and "rootless login" in warnings[0]


def test_identitytoken_is_preferred_over_an_empty_auth(tmp_path):
    env = _env(tmp_path)
    _docker_config(tmp_path, {"auths": {"reg.example": {"auth": base64.b64encode(b"alice:").decode(),
                                                        "identitytoken": "refresh-1"}}})
    assert auth.lookup(load_config(env), "reg.example", env) == ("<token>", "refresh-1")


# --- identity token: the OAuth2 refresh-token grant ---------------------------

class _Registry:
    """/v2/* wants a Bearer token; POST /token exchanges a refresh token for one."""

    REFRESH = "refresh-abc"
    ACCESS = "access-xyz"
    SERVICE = "unit-registry"

    def __init__(self):
        self.token_posts: list[dict] = []
        reg = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body=b"", headers=None):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                reg.token_posts.append({k: v[0] for k, v in form.items()} |
                                       {"content-type": self.headers.get("Content-Type")})
                if self.path != "/token" or form.get("grant_type") != ["refresh_token"] \
                        or form.get("refresh_token") != [reg.REFRESH]:
                    return self._send(401, b'{"error": "invalid_grant"}', {"Content-Type": "application/json"})
                self._send(200, json.dumps({"access_token": reg.ACCESS, "expires_in": 300}).encode(),
                           {"Content-Type": "application/json"})

            def do_GET(self):
                if self.headers.get("Authorization") != f"Bearer {reg.ACCESS}":
                    chal = f'Bearer realm="http://{reg.host}/token",service="{reg.SERVICE}"'
                    return self._send(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {"WWW-Authenticate": chal})
                body = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
                self._send(200, body, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_registry():
    r = _Registry()
    yield r
    r.stop()


def test_identity_token_is_exchanged_with_the_refresh_token_grant(tmp_path, token_registry):
    reg = token_registry
    env = _env(tmp_path)
    _docker_config(tmp_path, {"auths": {reg.host: {"auth": "", "identitytoken": reg.REFRESH}}})
    c = RegistryClient(reg.host, load_config(env), env=env)
    try:
        body, mt, _digest = c.get_manifest("team/app", "latest")
    finally:
        c.close()
    assert mt == "application/vnd.oci.image.manifest.v1+json" and b"schemaVersion" in body
    (post,) = reg.token_posts
    assert post == {"grant_type": "refresh_token", "refresh_token": reg.REFRESH, "client_id": "rootless",
                    "service": reg.SERVICE, "scope": "repository:team/app:pull",
                    "content-type": "application/x-www-form-urlencoded"}


def test_a_refused_identity_token_is_an_auth_error(token_registry):
    c = RegistryClient(token_registry.host, creds=("<token>", "revoked"))
    with pytest.raises(AuthError, match="authentication to .* failed") as e:
        c.get_manifest("team/app", "latest")
    assert "rootless login" in (e.value.hint or "")
    c.close()

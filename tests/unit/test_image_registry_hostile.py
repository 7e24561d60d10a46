"""A broken or hostile registry: our credentials stay with the registry's own origin (and
its token server over HTTPS), and no body it sends takes more memory than its limit.

Fake registries (http.server) on 127.0.0.1 in this process; one speaks HTTPS with a
self-signed certificate (``tls_verify=False``).
"""

from __future__ import annotations

import base64
import datetime
import io
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rootless.errors import AuthError, RegistryError, RootlessError
from rootless.image.registry import MANIFEST_LIMIT, SMALL_LIMIT, RegistryClient

CREDS = ("alice", "s3cret")
BASIC = "Basic " + base64.b64encode(b"alice:s3cret").decode()


class Server:
    """An HTTP/1.1 server on 127.0.0.1 whose ``route(handler, method)`` answers every request;
    ``log`` has (method, path, Authorization) of each, ``sent`` the body bytes written."""

    def __init__(self, route, tls: bool = False, tmp_path=None):
        self.log: list[tuple[str, str, str | None]] = []
        self.sent = 0
        self.done = threading.Event()        # a streamed body ended (sent whole, or the client left)
        srv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self, status, body=b"", headers=(), length=True):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def stream(self, status, size, headers=(), length=True):
                """``size`` bytes of body, counted as they go; no Content-Length: the end is the close."""
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if length:
                    self.send_header("Content-Length", str(size))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                chunk = b" " * (1 << 20)
                try:
                    for _ in range(size >> 20):
                        self.wfile.write(chunk)
                        srv.sent += len(chunk)
                except OSError:
                    pass
                finally:
                    srv.done.set()

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                srv.log.append((self.command, self.path, self.headers.get("Authorization")))
                route(self, self.command)

            do_GET = do_POST = do_PUT = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *a: None     # a client that leaves early is the point
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*_self_signed(tmp_path))
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")


@pytest.fixture
def servers():
    made = []

    def make(route, **kw):
        s = Server(route, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# --- credentials ---------------------------------------------------------------

def _basic_registry(location):
    """Basic auth on every request; an upload starts with a 202 to ``location()``."""
    def route(h, method):
        if h.headers.get("Authorization") != BASIC:
            return h.answer(401, headers=[("WWW-Authenticate", 'Basic realm="test"')])
        if method == "POST":
            return h.answer(202, headers=[("Location", location())])
        h.answer(201)
    return route


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_an_upload_location_elsewhere_gets_no_credentials(servers, host):
    """The registry names the upload URL: on another origin (even the same host on another
    port) it gets the blob but not our password."""
    other = servers(lambda h, m: h.answer(201))
    port = other.host.rsplit(":", 1)[1]
    reg = servers(_basic_registry(lambda: f"http://{host}:{port}/upload/1?state=x"))
    c = RegistryClient(reg.host, creds=CREDS)
    try:
        c.upload_blob("team/app", "sha256:" + "0" * 64, 1, io.BytesIO(b"x"))
    finally:
        c.close()
    assert [m for m, _, _ in reg.log] == ["POST", "POST"]          # the challenge, then with Basic
    assert reg.log[1][2] == BASIC
    assert other.log == [("PUT", "/upload/1?state=x&digest=sha256%3A" + "0" * 64, None)]


def test_an_upload_location_on_the_registry_gets_the_credentials(servers):
    reg = servers(_basic_registry(lambda: "/v2/team/app/blobs/uploads/1"))
    c = RegistryClient(reg.host, creds=CREDS)
    try:
        c.upload_blob("team/app", "sha256:" + "0" * 64, 1, io.BytesIO(b"x"))
    finally:
        c.close()
    assert [(m, a) for m, _, a in reg.log] == [("POST", None), ("POST", BASIC), ("PUT", BASIC)]


def test_no_credentials_to_a_plain_http_token_server_of_an_https_registry(servers, tmp_path):
    token = servers(lambda h, m: h.answer(200, b'{"token": "t"}'))

    def route(h, method):
        if h.headers.get("Authorization") != "Bearer t":
            return h.answer(401, headers=[("WWW-Authenticate", f'Bearer realm="http://{token.host}/token"')])
        h.answer(200, b"{}", [("Content-Type", "application/vnd.oci.image.manifest.v1+json")])

    reg = servers(route, tls=True, tmp_path=tmp_path)
    c = RegistryClient(reg.host, creds=CREDS, tls_verify=False)
    try:
        with pytest.raises(AuthError, match="plain HTTP"):
            c.get_manifest("team/app", "latest")
    finally:
        c.close()
    assert token.log == []
    # anonymous: nothing secret goes there, the token is fetched
    c = RegistryClient(reg.host, tls_verify=False)
    try:
        assert c.get_manifest("team/app", "latest")[0] == b"{}"
    finally:
        c.close()
    assert [(m, p.split("?")[0], a) for m, p, a in token.log] == [("GET", "/token", None)]


@pytest.mark.parametrize("registry,scheme,realm,ok", [
    ("ghcr.io", "https", "https://ghcr.io/token", True),
    ("ghcr.io", "https", "https://auth.example/token", True),
    ("ghcr.io", "https", "http://ghcr.io/token", False),
    ("ghcr.io", "https", "http://127.0.0.1:9/token", False),       # a downgrade, even to this host
    ("127.0.0.1:5000", "http", "http://127.0.0.1:5001/token", True),
    ("127.0.0.1:5000", "http", "http://localhost/token", True),
    ("127.0.0.1:5000", "http", "http://auth.example/token", False),
    ("reg.example:5000", "http", "http://reg.example:5001/token", True),   # an insecure one, fallen back to HTTP
    ("reg.example:5000", "http", "http://auth.example/token", False),
    ("reg.example:5000", "http", "https://auth.example/token", True),
    ("127.0.0.1:5000", "http", "ftp://127.0.0.1/token", False),
])
def test_where_a_token_server_may_get_the_credentials(registry, scheme, realm, ok):
    c = RegistryClient(registry, tls_verify=False if registry.startswith("reg.") else None)
    c.scheme = scheme
    assert c._creds_may_go_to(realm) is ok


def test_an_origin_is_scheme_host_and_port():
    """Where a redirect may take the credentials: the registry's origin only (the redirect
    code compared host:port, so an HTTPS registry's redirect to plain HTTP took them)."""
    from rootless.image.registry import _origin

    assert _origin("https://reg.example/v2/x") == _origin("https://REG.example:443/y")
    assert _origin("http://reg.example:443/x") != _origin("https://reg.example:443/x")
    assert _origin("http://reg.example/x") == _origin("http://reg.example:80/x")
    assert _origin("http://reg.example:5000/x") != _origin("http://reg.example:5001/x")


# --- bounded bodies -------------------------------------------------------------

BIG = 256 << 20


def _streaming(path_part: str, status: int, length: bool, headers=()):
    """Answers requests whose path has ``path_part`` with a BIG body, others with 200 {}."""
    def route(h, method):
        if path_part in h.path:
            return h.stream(status, BIG, headers, length)
        h.answer(200, b"{}")
    return route


def _bounded(srv: Server, limit: int) -> None:
    assert srv.done.wait(120), "the body was neither sent whole nor refused"
    assert srv.sent <= limit + (32 << 20), f"the client read {srv.sent >> 20} MiB of a body limited to {limit}"


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_huge_manifest_is_refused_without_reading_it(servers, length):
    srv = servers(_streaming("/manifests/", 200, length,
                             [("Content-Type", "application/vnd.oci.image.manifest.v1+json")]))
    c = RegistryClient(srv.host)
    try:
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            c.get_manifest("team/app", "latest")
    finally:
        c.close()
    _bounded(srv, MANIFEST_LIMIT)


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_huge_error_body_is_not_read_whole(servers, length):
    srv = servers(_streaming("/manifests/", 500, length))
    c = RegistryClient(srv.host)
    try:
        with pytest.raises(RegistryError, match="answered 500"):
            c.get_manifest("team/app", "latest")
    finally:
        c.close()
    _bounded(srv, SMALL_LIMIT)


def test_a_huge_token_response_is_refused(servers):
    token = servers(_streaming("/token", 200, False))

    def route(h, method):
        h.answer(401, headers=[("WWW-Authenticate", f'Bearer realm="http://{token.host}/token"')])

    reg = servers(route)
    c = RegistryClient(reg.host)
    try:
        with pytest.raises(RegistryError, match="token server .* sent more than 1 MiB"):
            c.get_manifest("team/app", "latest")
    finally:
        c.close()
    _bounded(token, SMALL_LIMIT)


def test_a_huge_challenge_body_is_not_read_whole(servers):
    srv = servers(lambda h, m: h.stream(401, BIG, [("WWW-Authenticate", 'Basic realm="x"')]))
    c = RegistryClient(srv.host)
    try:
        with pytest.raises(AuthError, match="needs a login"):
            c.get_manifest("team/app", "latest")
    finally:
        c.close()
    _bounded(srv, SMALL_LIMIT)


def test_a_config_blob_over_its_limit_is_refused_by_its_length(servers):
    srv = servers(_streaming("/blobs/", 200, True))
    c = RegistryClient(srv.host)
    try:
        with pytest.raises(RegistryError, match="larger than expected"):
            c.get_blob("team/app", "sha256:" + "1" * 64, limit=64 << 20)
    finally:
        c.close()
    _bounded(srv, 0)

"""Test helpers for the image tests: OCI layouts built here, a proxy in front of
the real registry (to corrupt, stall or slow blobs, and to see the requests),
and a Bearer-token server for docker-registry's ``auth: token``.

Written with the standard library (and ``cryptography`` to sign tokens), not
with the code under test.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.client
import io
import json
import os
import secrets
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


# ---------------------------------------------------------------------------
# layers and layouts

class Tar:
    """Build a layer tar member by member (hostile ones included)."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _ti(self, name, type_, mode=0o644, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = type_, mode, uid, gid, 1700000000
        return ti

    def file(self, name, data=b"x", mode=0o644, uid=0, gid=0, xattrs: dict[str, bytes] | None = None):
        ti = self._ti(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        for k, v in (xattrs or {}).items():  # PAX SCHILY.xattr.NAME, binary values as tar writes them
            ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
        self.tf.addfile(ti, io.BytesIO(data))
        return self

    def dir(self, name, mode=0o755):
        self.tf.addfile(self._ti(name, tarfile.DIRTYPE, mode))
        return self

    def symlink(self, name, target):
        ti = self._ti(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tf.addfile(ti)
        return self

    def hardlink(self, name, target):
        ti = self._ti(name, tarfile.LNKTYPE)
        ti.linkname = target
        self.tf.addfile(ti)
        return self

    def device(self, name, kind=tarfile.CHRTYPE, major=1, minor=3):
        ti = self._ti(name, kind, 0o666)
        ti.devmajor, ti.devminor = major, minor
        self.tf.addfile(ti)
        return self

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()


def compress(raw: bytes, how: str) -> tuple[bytes, str]:
    if how == "gzip":
        return gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    if how == "zstd":
        cp = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True)
        return cp.stdout, "application/vnd.oci.image.layer.v1.tar+zstd"
    return raw, "application/vnd.oci.image.layer.v1.tar"


class Layout:
    """An OCI image layout on disk; ``image(...)`` adds a tagged single-platform image."""

    def __init__(self, path: Path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []

    def blob(self, data: bytes, mt: str) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / d).write_bytes(data)
        return {"mediaType": mt, "digest": "sha256:" + d, "size": len(data)}

    def image(self, tag: str, layers: list[bytes], *, how: str = "gzip", arch: str = "amd64",
              config: dict | None = None, diff_ids: list[str] | None = None) -> dict:
        descs, diffs = [], []
        for raw in layers:
            blob, mt = compress(raw, how)
            descs.append(self.blob(blob, mt))
            diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        cfg = {"architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
               "config": config or {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids or diffs},
               "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
        c = self.blob(json.dumps(cfg).encode(), OCI_CONFIG)
        m = self.blob(json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": c,
                                  "layers": descs}).encode(), OCI_MANIFEST)
        self.refs.append(dict(m, annotations={"org.opencontainers.image.ref.name": tag}))
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                          "manifests": self.refs}))
        return {"manifest": m, "config": c, "layers": descs, "diff_ids": diffs}


# ---------------------------------------------------------------------------
# a proxy in front of the registry

class Proxy:
    """HTTP proxy to a registry, on 127.0.0.1:PORT.

    ``corrupt``: blob digests whose body gets one byte flipped (same length).
    ``stall``: {digest: n}: send n bytes of that blob, then hang until ``release``.
    ``delay``: seconds to wait before answering any blob GET.
    ``hold``: blob digests whose GET waits (``holding`` set) until ``unhold`` is set, then is answered whole.
    ``ignore_range``: forward without the Range header (a registry that answers 200 to it).
    ``requests``: (method, path, Range header) seen; ``answers``: (method, path, status) sent;
    ``max_parallel_blobs``.
    """

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.corrupt: set[str] = set()
        self.stall: dict[str, int] = {}
        self.release = threading.Event()
        self.stalled = threading.Event()
        self.delay = 0.0
        self.hold: set[str] = set()
        self.holding = threading.Event()
        self.unhold = threading.Event()
        self.ignore_range = False
        self.requests: list[tuple[str, str, str | None]] = []
        self.answers: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._inflight = 0
        self.max_parallel_blobs = 0
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _go(self):
                method = self.command
                with proxy._lock:
                    proxy.requests.append((method, self.path, self.headers.get("Range")))
                blob = "/blobs/sha256:" in self.path and method == "GET"
                digest = self.path.rsplit("/", 1)[-1] if blob else None
                if blob:
                    with proxy._lock:
                        proxy._inflight += 1
                        proxy.max_parallel_blobs = max(proxy.max_parallel_blobs, proxy._inflight)
                try:
                    if blob and proxy.delay:
                        time.sleep(proxy.delay)
                    if blob and digest in proxy.hold:
                        proxy.holding.set()
                        proxy.unhold.wait(60)
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else None
                    conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                    drop = ("host", "connection") + (("range",) if proxy.ignore_range else ())
                    hdrs = {k: v for k, v in self.headers.items() if k.lower() not in drop}
                    conn.request(method, self.path, body=body, headers=hdrs)
                    r = conn.getresponse()
                    data = r.read()
                    if digest in proxy.corrupt and data:
                        data = bytes([data[0] ^ 0xFF]) + data[1:]
                    with proxy._lock:
                        proxy.answers.append((method, self.path, r.status))
                    self.send_response(r.status)
                    for k, v in r.getheaders():
                        if k.lower() in ("connection", "transfer-encoding", "content-length"):
                            continue
                        if k.lower() == "location":
                            v = v.replace(proxy.upstream, f"127.0.0.1:{proxy.port}")
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if method == "HEAD":
                        return
                    if digest in proxy.stall and not self.headers.get("Range"):
                        n = proxy.stall[digest]
                        self.wfile.write(data[:n])
                        self.wfile.flush()
                        proxy.stalled.set()
                        proxy.release.wait(60)
                        return
                    self.wfile.write(data)
                finally:
                    if blob:
                        with proxy._lock:
                            proxy._inflight -= 1

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _go

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.unhold.set()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# a token server for `auth: token:`

def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class TokenServer:
    """Issues RS256 JWTs (x5c: a self-signed cert the registry trusts) on /token."""

    def __init__(self, workdir: Path, users: dict[str, str], service: str = "rootless-test",
                 issuer: str = "rootless-test-issuer"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.service = service
        self.issuer = issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rootless test token signer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_path = Path(workdir) / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)
        self.requests: list[dict] = []
        ts = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                from urllib.parse import parse_qs, urlsplit

                q = parse_qs(urlsplit(self.path).query)
                user = None
                a = self.headers.get("Authorization", "")
                if a.startswith("Basic "):
                    u, _, p = base64.b64decode(a[6:]).decode().partition(":")
                    if ts.users.get(u) != p:
                        ts.requests.append({"user": u, "denied": True, "scope": q.get("scope", [])})
                        self.send_response(401)
                        self.send_header("Content-Type", "application/json")
                        body = b'{"details": "wrong user name or password"}'
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                    user = u
                scopes = q.get("scope", [])
                ts.requests.append({"user": user, "scope": scopes, "service": q.get("service", [None])[0]})
                access = []
                if user:
                    for s in scopes:
                        typ, _, rest = s.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": typ, "name": name, "actions": actions.split(",")})
                tok = ts.token(user or "", access)
                body = json.dumps({"token": tok, "access_token": tok, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, sub: str, access: list) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        claims = {"iss": self.issuer, "sub": sub, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        sig = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{_b64(sig)}"

    def registry_auth(self) -> dict:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.cert_path)}}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def store_consistent(root: Path) -> list[str]:
    """Problems of a store: unverifiable blobs, missing layers, leftovers. [] when consistent."""
    problems = []
    db = json.loads((root / "images.json").read_text()) if (root / "images.json").exists() else {"images": {}}
    for p in (root / "blobs" / "sha256").glob("*") if (root / "blobs" / "sha256").exists() else []:
        if hashlib.sha256(p.read_bytes()).hexdigest() != p.name:
            problems.append(f"blob {p.name} does not match its digest")
    for iid, e in db["images"].items():
        for d in [iid, e["manifest"]["digest"]] + [b["digest"] for b in e["blobs"]]:
            if not (root / "blobs" / "sha256" / d[7:]).is_file():
                problems.append(f"image {iid[:19]}: blob {d[:19]} missing")
        for l in e["layers"]:
            if not (root / "layers" / l[7:] / "layer.json").is_file():
                problems.append(f"image {iid[:19]}: layer {l[:19]} missing")
    for l in (root / "layers").glob("*") if (root / "layers").exists() else []:
        if not (l / "layer.json").is_file():
            problems.append(f"layer dir {l.name[:12]} without layer.json")
    return problems


def render_terminal(out: str) -> list[str]:
    """The lines a terminal shows at the end of ``out``: text, \\r, \\n, ESC[nA (up), ESC[K
    (erase to the end of the line) and ESC[J (erase to the end of the screen)."""
    import re

    screen: list[str] = [""]
    row = col = 0
    for m in re.finditer(r"\x1b\[(\d*)([A-Za-z])|([\r\n])|([^\x1b\r\n]+)", out):
        n, cmd, ctl, text = m.groups()
        if text:
            line = screen[row].ljust(col)
            screen[row] = line[:col] + text + line[col + len(text):]
            col += len(text)
        elif ctl == "\r":
            col = 0
        elif ctl == "\n":
            row += 1
            col = 0
            if row == len(screen):
                screen.append("")
        elif cmd == "A":
            row = max(0, row - int(n or 1))
        elif cmd == "K":
            screen[row] = screen[row][:col]
        elif cmd == "J":
            screen[row] = screen[row][:col]
            del screen[row + 1:]
        else:
            raise AssertionError(f"unexpected escape sequence {m.group(0)!r}")
    while screen and not screen[-1]:
        screen.pop()
    return screen


def store_sizes(root: Path) -> dict[str, int]:
    """Every blob and partial download (its file size) and layer (its recorded size) in a store."""
    out = {}
    for kind, sub in (("blob", "blobs/sha256"), ("partial", "blobs/partial")):
        if (root / sub).is_dir():
            for e in os.scandir(root / sub):
                out[f"{kind}:{e.name}"] = e.stat().st_size
    if (root / "layers").is_dir():
        for e in os.scandir(root / "layers"):
            out["layer:" + e.name] = json.loads((root / "layers" / e.name / "layer.json").read_text())["size"]
    return out

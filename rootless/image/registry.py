"""A client for the OCI distribution API (Docker registry v2).

Anonymous access, Bearer tokens (from the ``WWW-Authenticate`` challenge,
with scopes, cached per scope; an identity token is exchanged with the OAuth2
refresh-token grant, a POST to the realm) and Basic auth. TLS by default; registries on
localhost, 127.0.0.0/8 and ::1 are spoken to over plain HTTP (as Docker
does); registries in ``[registries] insecure`` or with ``tls_verify=False``
are tried over HTTPS without verification, then plain HTTP.

One keep-alive connection per thread and host. Credentials go only to the
registry's own origin (scheme, host, port): not to a redirect's target (blob
downloads from a CDN) nor to an upload location elsewhere; to a token server
(the realm the registry names) only over HTTPS, unless the registry itself is
a plain-HTTP one and the realm is on its host or the local host.

A hostile registry gets no more of our memory than the limits below: a body
read whole is read up to its limit and no further (Content-Length first).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import threading
from urllib.parse import urlencode, urljoin, urlsplit

from rootless.errors import AuthError, ImageNotFound, RegistryError
from rootless.image import oci
from rootless.image.reference import is_localhost

USER_AGENT = "rootless/0.1 (+python http.client)"
CLIENT_ID = "rootless"          # OAuth2 client_id sent with an identity token
TOKEN_USER = "<token>"          # rootless.image.auth.TOKEN_USER: the credentials are an identity token
TIMEOUT = 60
MANIFEST_LIMIT = 4 << 20        # as Docker (distribution's maxManifestBodySize)
SMALL_LIMIT = 1 << 20           # a token response, an error body, a body we only drain
_CHAL_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _CHAL_RE.finditer(rest)}
    return scheme.lower(), params


def _error_text(body: bytes) -> str:
    try:
        d = json.loads(body)
        errs = d.get("errors") or []
        if errs:
            return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs if isinstance(e, dict))
        if isinstance(d.get("details"), str):
            return d["details"]
    except (ValueError, AttributeError, TypeError):
        pass
    text = body[:200].decode(errors="replace").strip()
    return text


class Response:
    """A response whose body is read by the caller (``read``/``close``)."""

    def __init__(self, resp: http.client.HTTPResponse, conn, drop):
        self.resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.conn = conn
        self.drop = drop

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.resp.getheader(name, default)

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes as soon as some arrived (read1): a stalled download still saves what it got."""
        try:
            return self.resp.read1(n) if n is not None and n >= 0 else self.resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise RegistryError(f"download interrupted: {e}", hint="try again; an interrupted pull resumes") from None

    def readinto(self, b) -> int:
        return self.resp.readinto(b)

    def body(self, limit: int = SMALL_LIMIT) -> bytes | None:
        """The whole body if it has at most ``limit`` bytes; else None, having read no more
        than ``limit`` + 1 bytes (nothing when Content-Length says so) and closed the
        connection."""
        if self.resp.length is not None and self.resp.length > limit:
            self.close()
            return None
        chunks, size = [], 0
        try:
            while size <= limit:
                b = self.resp.read(min(1 << 20, limit + 1 - size))   # read(n): at the end, done with
                if not b:
                    return b"".join(chunks)
                chunks.append(b)
                size += len(b)
        except (OSError, http.client.HTTPException) as e:
            raise RegistryError(f"download interrupted: {e}", hint="try again") from None
        self.close()
        return None

    def drain(self) -> bytes:
        """Read what is left of a body we do not need (or an error's): b"" if it is too long."""
        return self.body() or b""

    def close(self) -> None:
        """Close; a body not read to its end also closes the connection (it cannot be reused)."""
        if not self.resp.isclosed():
            self.resp.close()
            self.conn.close()
            self.drop()


class RegistryClient:
    def __init__(self, domain: str, config=None, *, tls_verify: bool | None = None,
                 creds: tuple[str, str] | None = None, env: dict | None = None, reporter=None):
        from rootless.image import auth

        self.domain = domain
        self.host = "registry-1.docker.io" if domain == "docker.io" else domain
        insecure_list = tuple(config.insecure_registries) if config is not None else ()
        self.local = is_localhost(self.host)
        listed = self.host in insecure_list or domain in insecure_list
        self.insecure = tls_verify is False or (listed and tls_verify is None)
        self.verify = not self.insecure
        if tls_verify is True:
            self.schemes = ["https"]
        elif self.insecure:
            self.schemes = ["https", "http"]   # HTTPS without verification, else plain HTTP
        elif self.local:
            self.schemes = ["http"]            # as Docker: localhost and 127.0.0.0/8 speak plain HTTP
        else:
            self.schemes = ["https"]
        self.scheme = self.schemes[0]
        if creds is None and config is not None:
            creds = auth.lookup(config, domain, env, warn=reporter.warn if reporter is not None else None)
        self.creds = creds
        self._tls = threading.local()
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}
        self._auth_kind: str | None = None   # None (unknown/anonymous) | "bearer" | "basic"
        self._challenge: dict[str, str] = {}
        self._all_conns: list = []
        self._scheme_checked = len(self.schemes) == 1

    # connections -----------------------------------------------------------
    def _conns(self) -> dict:
        c = getattr(self._tls, "conns", None)
        if c is None:
            c = self._tls.conns = {}
        return c

    def _conn(self, scheme: str, netloc: str):
        key = (scheme, netloc)
        conns = self._conns()
        c = conns.get(key)
        if c is None:
            if scheme == "https":
                import ssl

                ctx = ssl.create_default_context()
                if not self.verify and netloc == self.host:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                c = http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=ctx, blocksize=1 << 20)
            else:
                c = http.client.HTTPConnection(netloc, timeout=TIMEOUT, blocksize=1 << 20)
            conns[key] = c
            with self._lock:
                self._all_conns.append(c)
        return key, c

    def close(self) -> None:
        with self._lock:
            for c in self._all_conns:
                try:
                    c.close()
                except Exception:
                    pass
            self._all_conns.clear()
        self._tls = threading.local()

    def _raw(self, method: str, url: str, headers: dict, body=None) -> Response:
        u = urlsplit(url)
        path = u.path + (f"?{u.query}" if u.query else "")
        for attempt in range(2):
            key, conn = self._conn(u.scheme, u.netloc)
            try:
                if body is not None and hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, path, body=body, headers={"User-Agent": USER_AGENT, **headers})
                return Response(conn.getresponse(), conn, lambda key=key: self._conns().pop(key, None))
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                    http.client.CannotSendRequest, http.client.ResponseNotReady) as e:
                conn.close()
                self._conns().pop(key, None)
                if attempt == 1:
                    raise RegistryError(f"connection to {u.netloc} lost: {e}", hint="try again") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._conns().pop(key, None)
                raise self._conn_error(u.netloc, e) from None
        raise AssertionError("unreachable")

    def _conn_error(self, netloc: str, e: Exception) -> RegistryError:
        import ssl

        if isinstance(e, ssl.SSLCertVerificationError):
            return RegistryError(f"the TLS certificate of {netloc} is not trusted: {e.verify_message}",
                                 hint=f"use --tls-verify=false, or add \"{netloc}\" to [registries] insecure in "
                                      "~/.config/rootless/config.toml")
        if isinstance(e, ssl.SSLError):
            return RegistryError(f"TLS handshake with {netloc} failed ({e.reason or e}): does it speak plain HTTP?",
                                 hint=f"add \"{netloc}\" to [registries] insecure in ~/.config/rootless/config.toml, "
                                      "or use --tls-verify=false")
        if isinstance(e, ConnectionRefusedError):
            return RegistryError(f"cannot connect to registry {netloc}: connection refused",
                                 hint="check the registry's host and port, and that it is running")
        if isinstance(e, socket.gaierror):
            return RegistryError(f"cannot resolve registry host {netloc}: {e.strerror or e}",
                                 hint="check the name and your network/DNS")
        if isinstance(e, (TimeoutError, socket.timeout)):
            return RegistryError(f"registry {netloc} did not answer within {TIMEOUT} s", hint="try again later")
        return RegistryError(f"cannot talk to registry {netloc}: {e}")

    # auth ------------------------------------------------------------------
    def _auth_header(self, scope: str | None) -> str | None:
        with self._lock:
            if self._auth_kind == "basic" and self.creds:
                return "Basic " + base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            if self._auth_kind == "bearer":
                t = self._tokens.get(scope or "")
                return f"Bearer {t}" if t else None
        return None

    def _fetch_token(self, params: dict[str, str], scope: str | None) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.host} asked for a Bearer token without a realm")
        q = []
        if params.get("service"):
            q.append(("service", params["service"]))
        for s in (scope or params.get("scope") or "").split(" "):
            if s:
                q.append(("scope", s))
        headers = {"Accept": "application/json"}
        if self.creds and not self._creds_may_go_to(realm):
            raise AuthError(f"registry {self.domain} sends us for a token to {realm}: refusing to send the "
                            "credentials there over plain HTTP",
                            hint=f"the registry's token server must use HTTPS; or log out of it: "
                                 f"rootless logout {self.domain}")
        if self.creds and self.creds[0] == TOKEN_USER:
            # an identity token: the OAuth2 refresh-token grant (distribution's spec/auth/oauth)
            form = [("grant_type", "refresh_token"), ("refresh_token", self.creds[1]), ("client_id", CLIENT_ID)]
            if params.get("service"):
                form.append(("service", params["service"]))
            scopes = " ".join(s for s in (scope or params.get("scope") or "").split(" ") if s)
            if scopes:
                form.append(("scope", scopes))
            data = urlencode(form).encode()
            r = self._raw("POST", realm, {**headers, "Content-Type": "application/x-www-form-urlencoded",
                                          "Content-Length": str(len(data))}, data)
            body = r.body()
            if r.status in (404, 405):
                raise AuthError(f"the token server of {self.domain} does not take identity tokens (OAuth2 POST "
                                f"answered {r.status})",
                                hint=f"log in with a user name and password: rootless login {self.domain}")
        else:
            url = realm + ("&" if "?" in realm else "?") + urlencode(q) if q else realm
            if self.creds:
                headers["Authorization"] = "Basic " + base64.b64encode(
                    f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            r = self._raw("GET", url, headers)
            body = r.body()
        if body is None:
            raise RegistryError(f"token server {urlsplit(realm).netloc} sent more than {SMALL_LIMIT >> 20} MiB: "
                                "refused", hint="the registry's token server is broken or hostile")
        if r.status in (401, 403):
            raise AuthError(f"authentication to {self.domain} failed: {_error_text(body) or r.status}",
                            hint=f"check your credentials: rootless login {self.domain}")
        if r.status != 200:
            raise RegistryError(f"token server {urlsplit(realm).netloc} answered {r.status}: {_error_text(body)}")
        try:
            d = json.loads(body)
            tok = d.get("token") or d.get("access_token")
        except (ValueError, AttributeError):
            tok = None
        if not tok:
            raise AuthError(f"token server of {self.domain} sent no token")
        return tok

    def _on_401(self, resp: Response, scope: str | None) -> bool:
        """Learn from a challenge; True when it makes sense to retry."""
        chal = resp.header("WWW-Authenticate") or ""
        kind, params = parse_challenge(chal) if chal else ("", {})
        if kind == "bearer":
            tok = self._fetch_token(params, scope)
            with self._lock:
                self._auth_kind = "bearer"
                self._challenge = params
                self._tokens[scope or ""] = tok
            return True
        if kind == "basic":
            if not self.creds:
                raise AuthError(f"registry {self.domain} needs a login",
                                hint=f"rootless login {self.domain}")
            if self.creds[0] == TOKEN_USER:
                raise AuthError(f"registry {self.domain} asks for a password, but the stored credentials are an "
                                "identity token", hint=f"log in with a user name and password: rootless login {self.domain}")
            with self._lock:
                if self._auth_kind == "basic":
                    return False
                self._auth_kind = "basic"
            return True
        return False

    # requests --------------------------------------------------------------
    def _base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def _ours(self, url: str) -> bool:
        """Whether ``url`` is on the registry's origin: scheme, host and port."""
        return _origin(url) == _origin(self._base())

    def _creds_may_go_to(self, realm: str) -> bool:
        """A token server gets our credentials over HTTPS; over plain HTTP only from a
        plain-HTTP registry (local, or insecure by configuration), on its host or the
        local host: never as a downgrade from HTTPS."""
        u = urlsplit(realm)
        if u.scheme == "https":
            return True
        if u.scheme != "http" or self.scheme != "http":
            return False
        host = u.hostname or ""
        return host == (urlsplit(self._base()).hostname or "") or is_localhost(host)

    def request(self, method: str, path: str, *, headers: dict | None = None, body=None,
                scope: str | None = None, follow: bool = True) -> Response:
        headers = dict(headers or {})
        if not self._scheme_checked:
            self._pick_scheme()
        tried_auth = False
        url = path if path.startswith(("http://", "https://")) else self._base() + path
        ours = self._ours(url)      # an upload location may be anywhere: no credentials there
        while True:
            h = dict(headers)
            a = self._auth_header(scope) if ours else None
            if a:
                h["Authorization"] = a
            r = self._raw(method, url, h, body)
            if r.status == 401 and not tried_auth and ours:
                r.drain()
                tried_auth = True
                if self._on_401(r, scope):
                    continue
                raise AuthError(f"registry {self.domain} refused the credentials",
                                hint=f"check them: rootless login {self.domain}")
            if r.status == 401:
                body_ = r.drain()
                if self.creds:
                    raise AuthError(f"registry {self.domain} refused access: {_error_text(body_) or 'unauthorized'}",
                                    hint=f"check your credentials and rights: rootless login {self.domain}")
                raise AuthError(f"registry {self.domain} refused anonymous access: {_error_text(body_) or 'unauthorized'}",
                                hint=f"the repository may not exist, or may need a login: rootless login {self.domain}")
            hops = 0
            while follow and r.status in (301, 302, 303, 307, 308) and hops < 5:
                loc = r.header("Location")
                r.drain()
                if not loc:
                    break
                target = urljoin(url, loc)
                h2 = {k: v for k, v in headers.items()}
                if a and _origin(target) == _origin(url):
                    h2["Authorization"] = a
                m = method if r.status in (307, 308) else "GET"
                r = self._raw(m, target, h2, body if m == method else None)
                url = target
                hops += 1
            return r

    def _pick_scheme(self) -> None:
        """Insecure registries: HTTPS without verification, else plain HTTP."""
        last = None
        for s in self.schemes:
            try:
                self._raw("GET", f"{s}://{self.host}/v2/", {}).drain()
                self.scheme = s
                self._scheme_checked = True
                return
            except RegistryError as e:
                last = e
        self._scheme_checked = True
        if last:
            raise last

    def _check(self, r: Response, what: str, ok=(200,)) -> Response:
        if r.status in ok:
            return r
        text = _error_text(r.drain())
        if r.status == 404:
            raise ImageNotFound(f"{what}: not found in registry {self.domain}" + (f" ({text})" if text else ""),
                                hint="check the name and the tag")
        if r.status == 403:
            raise AuthError(f"{what}: access denied by {self.domain}" + (f" ({text})" if text else ""),
                            hint=f"rootless login {self.domain}")
        if r.status == 429:
            raise RegistryError(f"{what}: registry {self.domain} is rate-limiting us (429)",
                                hint="wait a while, or log in (rootless login) for a higher limit")
        raise RegistryError(f"{what}: registry {self.domain} answered {r.status}" + (f": {text}" if text else ""))

    # the API ---------------------------------------------------------------
    @staticmethod
    def scope(path: str, push: bool = False) -> str:
        return f"repository:{path}:pull,push" if push else f"repository:{path}:pull"

    def ping(self) -> None:
        """GET /v2/ with our credentials (checks a login)."""
        r = self.request("GET", "/v2/")
        body = r.drain()
        if r.status == 401:
            raise AuthError(f"registry {self.domain} refused the login")
        if r.status not in (200,):
            raise RegistryError(f"registry {self.domain} answered {r.status} to /v2/: {_error_text(body)}")

    def login_check(self) -> None:
        """Verify credentials: Basic on /v2/, or a token fetched with them."""
        r = self.request("GET", "/v2/")
        r.drain()
        if r.status != 200:
            raise AuthError(f"login to {self.domain} failed ({r.status})", hint="check the user name and password")
        if self._auth_kind is None and self.creds:
            # anonymous /v2/ access allowed: nothing more to check
            return

    def get_manifest(self, path: str, reference: str, *, push: bool = False) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index."""
        r = self.request("GET", f"/v2/{path}/manifests/{reference}", headers={"Accept": oci.ACCEPT},
                         scope=self.scope(path, push))
        self._check(r, f"{self.domain}/{path}:{reference}" if not reference.startswith("sha256:")
                    else f"{self.domain}/{path}@{reference}")
        body = r.body(MANIFEST_LIMIT)
        if body is None:
            raise RegistryError(f"manifest of {path}:{reference} is larger than 4 MiB: refused",
                                hint="the registry is broken or hostile")
        mt = (r.header("Content-Type") or "").split(";")[0].strip()
        digest = oci.sha256_digest(body)
        return body, mt, digest

    def head_manifest(self, path: str, reference: str) -> str | None:
        r = self.request("HEAD", f"/v2/{path}/manifests/{reference}", headers={"Accept": oci.ACCEPT},
                         scope=self.scope(path))
        r.drain()
        if r.status == 200:
            return r.header("Docker-Content-Digest")
        return None

    def open_blob(self, path: str, digest: str, offset: int = 0) -> Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        r = self.request("GET", f"/v2/{path}/blobs/{digest}", headers=headers, scope=self.scope(path))
        return self._check(r, f"blob {digest} of {self.domain}/{path}", ok=(200, 206))

    def get_blob(self, path: str, digest: str, limit: int = 16 << 20) -> bytes:
        body = self.open_blob(path, digest).body(limit)
        if body is None:
            raise RegistryError(f"blob {digest} is larger than expected ({limit} bytes): refused")
        return body

    def blob_exists(self, path: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{path}/blobs/{digest}", scope=self.scope(path, push=True))
        r.drain()
        if r.status == 200:
            return True
        if r.status == 404:
            return False
        self._check(r, f"blob {digest}")
        return False

    def upload_blob(self, path: str, digest: str, size: int, fileobj) -> None:
        scope = self.scope(path, push=True)
        r = self.request("POST", f"/v2/{path}/blobs/uploads/", headers={"Content-Length": "0"}, scope=scope)
        r.drain()
        if r.status == 201:
            return  # mounted / already there
        self._check(r, f"starting the upload of {digest} to {self.domain}/{path}", ok=(202,))
        loc = r.header("Location")
        if not loc:
            raise RegistryError(f"registry {self.domain} gave no upload location")
        url = urljoin(self._base() + "/", loc)
        url += ("&" if "?" in url else "?") + urlencode({"digest": digest})
        r = self.request("PUT", url, headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(size)}, body=fileobj, scope=scope)
        r.drain()
        self._check(r, f"uploading blob {digest} to {self.domain}/{path}", ok=(201, 204))

    def put_manifest(self, path: str, reference: str, data: bytes, media_type: str) -> str:
        r = self.request("PUT", f"/v2/{path}/manifests/{reference}",
                         headers={"Content-Type": media_type, "Content-Length": str(len(data))}, body=data,
                         scope=self.scope(path, push=True))
        r.drain()
        self._check(r, f"pushing the manifest of {self.domain}/{path}:{reference}", ok=(201, 200, 202))
        return r.header("Docker-Content-Digest") or oci.sha256_digest(data)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit: where credentials may go."""
    u = urlsplit(url)
    try:
        port = u.port
    except ValueError:
        port = -1
    return u.scheme, (u.hostname or ""), port or {"http": 80, "https": 443}.get(u.scheme)

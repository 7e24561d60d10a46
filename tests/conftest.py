"""Shared fixtures: the test images, a real docker-registry, the CLI.

* ``images``: what ci/test-images built (``$ROOTLESS_TEST_IMAGES``, default
  /var/lib/rootless-ci/images): ``images.layout("busybox")``, digests.
* ``registry``: a docker-registry (Debian package) on 127.0.0.1 on a free
  port, session-wide, with every test image pushed by skopeo.
* ``rl``: run ``rootless`` as a subprocess with a private HOME, config,
  store and runtime dir (a fresh one per test): ``rl("run", "--rm", ref, "true")``.
* ``shared_rl``: the same with one store for the whole session (pull once).

When ``ROOTLESS_CI_NO_SKIP=1`` (set by ci/run-tests), a skipped integration
(or root) test counts as a failure: CI's host has every feature, so a skip
there means something is broken: skips while a test runs (set-up included)
and modules that skip while being collected (a collection error then).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = Path(os.environ.get("ROOTLESS_TEST_IMAGES", "/var/lib/rootless-ci/images"))


def _kind(nodeid: str) -> str | None:
    """"integration" or "root" for the tests under those directories, by the node id (relative
    to the rootdir: a checkout under /root does not make every test a root test)."""
    dirs = nodeid.split("::")[0].split("/")[:-1]
    for k in ("integration", "root"):
        if k in dirs:
            return k
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = _kind(item.nodeid)
        if kind == "integration":
            item.add_marker(pytest.mark.integration)
        elif kind == "root":
            item.add_marker(pytest.mark.root)


def _no_skip() -> bool:
    return os.environ.get("ROOTLESS_CI_NO_SKIP") == "1"


def _reason(rep) -> str:
    return rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if (rep.skipped and _no_skip()
            and ("integration" in item.keywords or "root" in item.keywords)
            and not hasattr(rep, "wasxfail")):
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI (ROOTLESS_CI_NO_SKIP=1), which must not happen: {_reason(rep)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips while being collected (module-level pytest.skip) never reaches
    pytest_runtest_makereport: under ROOTLESS_CI_NO_SKIP it is a collection error."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and _no_skip() and _kind(collector.nodeid):
        rep.outcome = "failed"
        rep.longrepr = (f"{collector.nodeid}: skipped while collected in CI (ROOTLESS_CI_NO_SKIP=1), "
                        f"which must not happen: {_reason(rep)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TestImages:
    root: Path
    data: dict

    def layout(self, name: str) -> Path:
        return Path(self.data["images"][name]["layout"])

    def info(self, name: str) -> dict:
        return self.data["images"][name]

    def has(self, name: str) -> bool:
        return name in self.data["images"]

    @property
    def host_arch(self) -> str:
        return self.data["host_arch"]


@pytest.fixture(scope="session")
def images() -> TestImages:
    f = IMAGES_DIR / "images.json"
    if not f.is_file():
        pytest.skip(f"no test images in {IMAGES_DIR}: run `bash ci/test-images` as root (or set ROOTLESS_TEST_IMAGES)")
    return TestImages(IMAGES_DIR, json.loads(f.read_text()))


class Registry:
    """A docker-registry process on 127.0.0.1:PORT with a private storage dir."""

    def __init__(self, workdir: Path, auth: dict | None = None, http_extra: dict | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        cfg = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
               "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
               "http": {"addr": self.host, "secret": "test-secret"}}
        if auth:
            cfg["auth"] = auth
        if http_extra:
            cfg["http"].update(http_extra)
        # the registry reads YAML; JSON is YAML
        self.config = workdir / "config.yml"
        self.config.write_text(json.dumps(cfg))
        exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        self.log = open(workdir / "registry.log", "wb")
        self.proc = subprocess.Popen([exe, "serve", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401 with auth: it is up
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(workdir / 'registry.log').read_text()}")
                time.sleep(0.05)

    def ref(self, name: str, tag: str = "latest") -> str:
        return f"{self.host}/{name}:{tag}"

    def push_layout(self, layout: Path, tag: str, name: str, dest_tag: str | None = None,
                    creds: str | None = None) -> None:
        skopeo = shutil.which("skopeo") or "/usr/bin/skopeo"
        cmd = [skopeo, "--insecure-policy", "copy", "--quiet", "--all", "--dest-tls-verify=false",
               f"oci:{layout}:{tag}", f"docker://{self.host}/{name}:{dest_tag or tag}"]
        if creds:
            cmd.insert(-2, f"--dest-creds={creds}")
        env = dict(os.environ, TMPDIR=str(self.workdir))
        cp = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if cp.returncode != 0:
            raise RuntimeError(f"skopeo push of {layout}:{tag} failed: {cp.stderr}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def push_all(reg: Registry, images: TestImages, names: tuple[str, ...] | None = None, creds: str | None = None):
    for name, info in images.data["images"].items():
        if names is not None and name not in names:
            continue
        for tag in info["tags"]:
            reg.push_layout(Path(info["layout"]), tag, name, creds=creds)


@pytest.fixture(scope="session")
def registry(images, tmp_path_factory) -> Registry:
    """Anonymous registry holding every test image (bench excluded)."""
    reg = Registry(tmp_path_factory.mktemp("registry"))
    try:
        push_all(reg, images, tuple(n for n in images.data["images"] if n != "bench"))
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def empty_registry(tmp_path_factory) -> Registry:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


class RL:
    """Runs the rootless CLI with a private environment."""

    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.runtime = base / "run"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        self.root = base / "store"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOTLESS_", "XDG_"))}
        self.env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.runtime), ROOTLESS_ROOT=str(self.root),
                        XDG_CONFIG_HOME=str(self.home / ".config"), PYTHONDONTWRITEBYTECODE="1",
                        PYTHONPATH=str(ROOT))
        if "ROOTLESS_TEST_IMAGES" in os.environ:
            self.env["ROOTLESS_TEST_IMAGES"] = os.environ["ROOTLESS_TEST_IMAGES"]

    @property
    def argv0(self) -> list[str]:
        return [sys.executable, "-m", "rootless"]

    def __call__(self, *args: str, input: bytes | str | None = None, timeout: float = 120,
                 check: bool | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        e = dict(self.env)
        if env:
            e.update(env)
        cp = subprocess.run([*self.argv0, *args], input=input, capture_output=True, timeout=timeout, env=e,
                            text=not isinstance(input, bytes))
        if check and cp.returncode != 0:
            raise AssertionError(f"rootless {' '.join(args)} exited {cp.returncode}\nstdout: {cp.stdout}\n"
                                 f"stderr: {cp.stderr}")
        return cp

    def ok(self, *args: str, **kw) -> str:
        """Run, assert exit status 0, return stdout."""
        return self(*args, check=True, **kw).stdout

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.argv0, *args], env=self.env, **kw)

    def cleanup(self) -> None:
        """Remove the store (files owned by subordinate ids: inside the userns)."""
        if self.root.exists():
            subprocess.run([*self.argv0, "unshare", "rm", "-rf", str(self.root)], env=self.env,
                           capture_output=True, timeout=120)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def rl(tmp_path) -> RL:
    r = RL(tmp_path / "rl")
    yield r
    r.cleanup()


@pytest.fixture(scope="session")
def shared_rl(tmp_path_factory) -> RL:
    r = RL(tmp_path_factory.mktemp("shared-rl"))
    yield r
    r.cleanup()


def doctor_check(name: str) -> dict:
    """One check of `rootless doctor --json` (as this user), for skip reasons."""
    cp = subprocess.run([sys.executable, "-m", "rootless", "doctor", "--json"], capture_output=True, text=True)
    for c in json.loads(cp.stdout)["checks"]:
        if c["name"] == name:
            return c
    return {"name": name, "status": "FAIL", "detail": "no such check", "fix": ""}


def require(*names: str) -> None:
    """Skip with the doctor's reason unless each named check is OK."""
    for n in names:
        c = doctor_check(n)
        if c["status"] != "OK":
            pytest.skip(f"{n}: {c['detail']} (fix: {c['fix']})")


@pytest.fixture(scope="session")
def unprivileged():
    if os.getuid() == 0:
        pytest.skip("integration tests run as an unprivileged user (ci/run-tests does it)")


# --- registries with authentication (images tests) --------------------------

AUTH_USER, AUTH_PASSWORD = "tester", "s3cret-pass"


@pytest.fixture(scope="session")
def basic_registry(images, tmp_path_factory) -> Registry:
    """docker-registry with htpasswd (bcrypt) Basic auth; busybox pushed."""
    work = tmp_path_factory.mktemp("basic-registry")
    cp = subprocess.run(["htpasswd", "-Bbn", AUTH_USER, AUTH_PASSWORD], capture_output=True, text=True, check=True)
    (work / "htpasswd").write_text(cp.stdout)
    reg = Registry(work, auth={"htpasswd": {"realm": "rootless-test", "path": str(work / "htpasswd")}})
    try:
        push_all(reg, images, ("busybox",), creds=f"{AUTH_USER}:{AUTH_PASSWORD}")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def token_registry(images, tmp_path_factory):
    """docker-registry with `auth: token` and our own token server on 127.0.0.1; busybox pushed.

    Yields (registry, token_server)."""
    from tests.imgtools import TokenServer

    work = tmp_path_factory.mktemp("token-registry")
    ts = TokenServer(work, {AUTH_USER: AUTH_PASSWORD})
    reg = Registry(work, auth=ts.registry_auth())
    try:
        push_all(reg, images, ("busybox",), creds=f"{AUTH_USER}:{AUTH_PASSWORD}")
        yield reg, ts
    finally:
        reg.stop()
        ts.stop()


@pytest.fixture(scope="session")
def tls_registry(images, tmp_path_factory) -> Registry:
    """docker-registry serving HTTPS on 127.0.0.1 with a self-signed certificate; busybox pushed."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    work = tmp_path_factory.mktemp("tls-registry")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (work / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (work / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                                     serialization.NoEncryption()))
    reg = Registry(work, http_extra={"tls": {"certificate": str(work / "cert.pem"), "key": str(work / "key.pem")}})
    try:
        push_all(reg, images, ("busybox",))
        yield reg
    finally:
        reg.stop()


def has_ipv6_loopback() -> bool:
    """Can this host bind ::1 (IPv6 on lo)?"""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False

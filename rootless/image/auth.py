"""Registry credentials: Docker's ``config.json`` ``auths`` format.

We write ``Config.auth_file`` (mode 0600, atomic) and read it first, then
``$REGISTRY_AUTH_FILE``, then ``~/.docker/config.json`` (so ``docker
login``'s credentials work). Docker Hub's key is ``https://index.docker.io/v1/``
in Docker's file; ``docker.io`` and ``registry-1.docker.io`` are accepted too.

Per file: ``credHelpers[registry]``, then the ``auths`` entry (``identitytoken``
before ``auth`` / ``username``+``password``), then ``credsStore``. A helper is
Docker's credential-helper protocol: ``docker-credential-NAME get`` reads the
server URL on stdin and prints ``{"ServerURL", "Username", "Secret"}``.

Credentials are ``(username, secret)``; the username ``<token>`` (Docker's
convention) marks an identity token, an OAuth2 refresh token that
``RegistryClient`` exchanges at the registry's token realm.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from rootless.errors import ConfigError

HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")
HUB_SERVER_URL = "https://index.docker.io/v1/"
TOKEN_USER = "<token>"          # the username of an identity token (Docker's convention)
HELPER_TIMEOUT = 30


def auth_key(domain: str) -> str:
    return "docker.io" if domain in HUB_KEYS else domain


def _candidates(key: str) -> tuple[str, ...]:
    if key == "docker.io":
        return HUB_KEYS
    return (key, f"https://{key}", f"http://{key}", f"https://{key}/v1/", f"https://{key}/v2/")


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = json.load(f)
    except FileNotFoundError:
        return {}
    except PermissionError:
        raise ConfigError(f"cannot read credentials file {path}: permission denied") from None
    except ValueError:
        raise ConfigError(f"credentials file {path} is not valid JSON",
                          hint=f"fix or remove it (rootless logout --all rewrites {path})") from None
    return d if isinstance(d, dict) else {}


def auth_files(config, env: dict | None = None) -> list[Path]:
    env = os.environ if env is None else env
    files = [Path(config.auth_file)]
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    files.append(Path(config.docker_auth_file))
    return files


def lookup(config, domain: str, env: dict | None = None, warn=None) -> tuple[str, str] | None:
    """(username, secret) for a registry, or None. ``warn(msg)``: a credential helper that
    is missing or fails is skipped with a warning (once per helper)."""
    key = auth_key(domain)
    warned: set[str] = set()

    def helper(name, field: str, path: Path):
        if not isinstance(name, str) or not name:
            return None
        try:
            return helper_get(name, HUB_SERVER_URL if key == "docker.io" else key, env)
        except ConfigError as e:
            if warn is not None and name not in warned:
                warned.add(name)
                warn(f"{e.message} ({field} in {path}); " + (e.hint or "its credentials are not used"))
            return None

    for path in auth_files(config, env):
        d = _read(path)
        helpers = d.get("credHelpers")
        if isinstance(helpers, dict):
            for k in _candidates(key):
                if k in helpers:
                    creds = helper(helpers[k], "credHelpers", path)
                    if creds:
                        return creds
                    break
        auths = d.get("auths")
        for k in _candidates(key) if isinstance(auths, dict) else ():
            e = auths.get(k)
            if not isinstance(e, dict):
                continue
            if e.get("identitytoken"):
                return TOKEN_USER, str(e["identitytoken"])
            if e.get("auth"):
                try:
                    user, _, pw = base64.b64decode(e["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ConfigError(f"credentials for {k} in {path} are malformed",
                                      hint=f"log in again: rootless login {key}") from None
                if user or pw:
                    return user, pw
            if e.get("username") and e.get("password"):
                return str(e["username"]), str(e["password"])
        if "credsStore" in d:
            creds = helper(d["credsStore"], "credsStore", path)
            if creds:
                return creds
    return None


def helper_get(name: str, server_url: str, env: dict | None = None) -> tuple[str, str] | None:
    """``docker-credential-NAME get``: (username, secret); None when it has none for the server.

    Raises ConfigError when the helper is missing, fails or answers garbage."""
    import shutil
    import subprocess

    env = dict(os.environ if env is None else env)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"credential helper name {name!r} is not valid")
    exe = shutil.which(f"docker-credential-{name}", path=env.get("PATH") or os.defpath)
    if exe is None:
        raise ConfigError(f"credential helper docker-credential-{name} is not installed",
                          hint="install it, or log in with `rootless login` instead")
    try:
        cp = subprocess.run([exe, "get"], input=server_url.encode(), capture_output=True, env=env,
                            timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"credential helper docker-credential-{name} did not answer within "
                          f"{HELPER_TIMEOUT} s") from None
    except OSError as e:
        raise ConfigError(f"cannot run credential helper {exe}: {e.strerror or e}") from None
    out = cp.stdout.decode(errors="replace").strip()
    err = cp.stderr.decode(errors="replace").strip()
    if cp.returncode != 0:
        if "credentials not found" in (out + err).lower():
            return None  # the protocol's answer for "nothing stored for this server"
        why = (err or out).splitlines()
        raise ConfigError(f"credential helper docker-credential-{name} failed (exit status {cp.returncode})"
                          + (f": {why[0]}" if why else ""))
    try:
        d = json.loads(out)
        user, secret = d.get("Username"), d.get("Secret")
    except (ValueError, AttributeError):
        raise ConfigError(f"credential helper docker-credential-{name} printed no credentials JSON") from None
    if not isinstance(secret, str) or not secret:
        return None
    return (user if isinstance(user, str) else ""), secret


def store(config, domain: str, username: str, password: str) -> Path:
    from rootless.image.locks import FileLock, atomic_write

    path = Path(config.auth_file)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(path.with_name(path.name + ".lock")):
        d = _read(path)
        auths = d.get("auths") if isinstance(d.get("auths"), dict) else {}
        auths[auth_key(domain)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
        d["auths"] = auths
        atomic_write(path, json.dumps(d, indent=1).encode() + b"\n", mode=0o600)
        os.chmod(path, 0o600)
    return path


def remove(config, domain: str | None) -> bool:
    """Remove the credentials of ``domain`` (all when None); True when something was removed."""
    from rootless.image.locks import FileLock, atomic_write

    path = Path(config.auth_file)
    if not path.exists():
        return False
    with FileLock(path.with_name(path.name + ".lock")):
        d = _read(path)
        auths = d.get("auths") if isinstance(d.get("auths"), dict) else {}
        if domain is None:
            removed = bool(auths)
            auths = {}
        else:
            removed = False
            for k in _candidates(auth_key(domain)):
                if k in auths:
                    del auths[k]
                    removed = True
        d["auths"] = auths
        atomic_write(path, json.dumps(d, indent=1).encode() + b"\n", mode=0o600)
    return removed

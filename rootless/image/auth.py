"""Registry credentials: Docker's ``config.json`` ``auths`` format.

We write ``Config.auth_file`` (mode 0600, atomic) and read it first, then
``$REGISTRY_AUTH_FILE``, then ``~/.docker/config.json`` (so ``docker
login``'s credentials work). Docker Hub's key is ``https://index.docker.io/v1/``
in Docker's file; ``docker.io`` and ``registry-1.docker.io`` are accepted too.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from rootless.errors import ConfigError

HUB_KEYS = ("docker.io", "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")


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


def lookup(config, domain: str, env: dict | None = None) -> tuple[str, str] | None:
    """(username, password) for a registry, or None."""
    key = auth_key(domain)
    for path in auth_files(config, env):
        auths = _read(path).get("auths")
        if not isinstance(auths, dict):
            continue
        for k in _candidates(key):
            e = auths.get(k)
            if not isinstance(e, dict):
                continue
            if e.get("auth"):
                try:
                    user, _, pw = base64.b64decode(e["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ConfigError(f"credentials for {k} in {path} are malformed",
                                      hint=f"log in again: rootless login {key}") from None
                return user, pw
            if e.get("username") and e.get("password"):
                return str(e["username"]), str(e["password"])
            if e.get("identitytoken"):
                return "<token>", str(e["identitytoken"])
    return None


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

"""SSH to a machine: its own ed25519 key, a pinned host key, no user config.

The host key is made on the host at ``machine init`` and handed to the guest
in the seed, so the very first connection is already verified
(StrictHostKeyChecking=yes against the machine's own known_hosts file).
"""

from __future__ import annotations

import os
from pathlib import Path

HOST_ALIAS = "rootless-machine-{name}"


def master_argv(base: list[str], control: Path) -> list[str]:
    """Start the master connection of a machine: backgrounds itself once logged in."""
    out = [a for a in base if a not in ("-t", "-T")]
    i = out.index("ControlMaster=no") if "ControlMaster=no" in out else -1
    if i >= 0:
        out[i - 1:i + 1] = []
        j = out.index(f"ControlPath={control}")
        out[j - 1:j + 1] = []
    return out + ["-o", f"ControlPath={control}", "-o", "ControlMaster=yes", "-o", "ControlPersist=yes",
                  "-N", "-f"]


def keygen(path: Path, comment: str, env: dict[str, str], probe) -> None:
    """An ed25519 key pair at ``path`` and ``path``.pub (no passphrase)."""
    from rootless import hosttools
    from vmhost.qemu import find_program

    exe = find_program("ssh-keygen", env, probe, "make the machine's SSH keys")
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    hosttools.run([exe, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                  f"make the SSH key {path}", timeout=60)
    os.chmod(path, 0o600)


def known_hosts_line(name: str, host_pub: str) -> str:
    kind, key = host_pub.split()[:2]
    return f"{HOST_ALIAS.format(name=name)} {kind} {key}\n"


def base_argv(ssh: str, name: str, key: Path, known_hosts: Path, port: int, user: str,
              *, tty: bool | None = None, connect_timeout: int = 10, control: Path | None = None) -> list[str]:
    """ssh options shared by every connection to machine ``name`` (pure).

    With ``control``, the connection goes through the master connection on
    that socket when there is one (no key exchange: ~10x faster under TCG),
    else directly.
    """
    argv = [ssh, "-F", "none",
            "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={HOST_ALIAS.format(name=name)}",
            "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={connect_timeout}",
            "-o", "ServerAliveInterval=30", "-o", "ExitOnForwardFailure=no",
            "-p", str(port), "-l", user]
    if control is not None:
        argv += ["-o", f"ControlPath={control}", "-o", "ControlMaster=no"]
    if tty is True:
        argv.append("-t")
    elif tty is False:
        argv.append("-T")
    return argv

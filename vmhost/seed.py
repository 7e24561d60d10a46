"""The per-machine seed: what a start hands the guest, as a cpio appended to
the image's initramfs (no cloud-init, no second disk, nothing to mount).

    /init                       stage 1 (vmhost/guest/init)
    /seed/boot, ready, halt     stage 2 scripts run by busybox init
    /seed/sshd_config, sshd_env.conf
    /seed/machine.env           user name, uid, gid, home, hostname, share tag
    /seed/authorized_keys       the machine's public key (user and root)
    /seed/ssh_host_ed25519_key  the pinned host key (0600)
    /seed/rootless.tar, rootless.hash   the host's rootless code

The guest copies /seed to /run/rootless-seed (a tmpfs) before switch_root.
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import tarfile
from pathlib import Path

from vmhost import cpio
from vmhost.spec import GUEST_STORE, SHARE_TAG

GUEST_DIR = Path(__file__).resolve().parent / "guest"
CODE_PACKAGES = ("rootless", "archsupport", "vmhost")


def code_tar() -> bytes:
    """The rootless packages this host runs, as a reproducible tar."""
    import rootless

    base = Path(rootless.__file__).resolve().parent.parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for pkg in CODE_PACKAGES:
            root = base / pkg
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for fn in sorted(filenames):
                    if fn.endswith((".pyc", ".pyo")):
                        continue
                    p = Path(dirpath) / fn
                    ti = tar.gettarinfo(str(p), arcname=str(p.relative_to(base)))
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    ti.mtime = 0
                    ti.mode = 0o755 if os.access(p, os.X_OK) else 0o644
                    with open(p, "rb") as f:
                        tar.addfile(ti, f)
    return buf.getvalue()


def machine_env(spec) -> str:
    values = {"RL_USER": spec.user, "RL_UID": str(spec.uid), "RL_GID": str(spec.gid), "RL_HOME": spec.home or
              f"/home/{spec.user}", "RL_HOSTNAME": spec.name, "RL_SHARE": SHARE_TAG if spec.home else ""}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def sshd_env(spec) -> str:
    return (f"Match User {spec.user}\n"
            f"    SetEnv ROOTLESS_ROOT={GUEST_STORE} XDG_RUNTIME_DIR=/run/user/{spec.uid} LANG=C.UTF-8\n")


def seed_entries(spec, authorized_key: str, host_key: bytes, code: bytes) -> list[cpio.Entry]:
    g = lambda n: (GUEST_DIR / n).read_bytes()  # noqa: E731
    return [
        cpio.file("init", g("init"), 0o755),
        cpio.directory("seed", 0o700),
        cpio.file("seed/boot", g("boot"), 0o755),
        cpio.file("seed/ready", g("ready"), 0o755),
        cpio.file("seed/halt", g("halt"), 0o755),
        cpio.file("seed/sshd_config", g("sshd_config"), 0o644),
        cpio.file("seed/sshd_env.conf", sshd_env(spec), 0o644),
        cpio.file("seed/machine.env", machine_env(spec), 0o644),
        cpio.file("seed/authorized_keys", authorized_key.strip() + "\n", 0o644),
        cpio.file("seed/ssh_host_ed25519_key", host_key, 0o600),
        cpio.file("seed/rootless.tar", code, 0o644),
        cpio.file("seed/rootless.hash", hashlib.sha256(code).hexdigest() + "\n", 0o644),
    ]


def write_initrd(dest: Path, base_initrd: Path, entries: list[cpio.Entry]) -> None:
    """dest = the image's initramfs + the seed archive (mode 0600, atomic)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            with open(base_initrd, "rb") as b:
                while True:
                    chunk = b.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
            pad = (4 - out.tell() % 4) % 4
            out.write(b"\0" * pad)
            cpio.write(out, entries, first_ino=100000)
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

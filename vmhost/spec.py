"""What a machine is (frozen, JSON at the edges) and where its files live.

State of machine NAME (nothing of one machine touches another's)::

    DATA_ROOT/machines/NAME/
        machine.json            the MachineSpec (written at init and set; atomic)
        disk.qcow2              the machine's disk: an overlay on the guest image
        id_ed25519[.pub]        the SSH key the host logs in with
        ssh_host_ed25519_key[.pub], known_hosts   the guest's pinned host key
        initrd.img              base initramfs + this start's seed (0600: holds the host key)
        seed.img                a cloud image's NoCloud seed disk, written at each start (0600)
        serial.log              the serial console of the last boot
        qemu.log                QEMU's own messages
        state.json              the running VM: pid, start time, ports (atomic)
        lock                    fcntl lock around start/stop/rm/set
    RUNTIME_DIR/machines/NAME/  qmp.sock, qemu.pid, ssh.sock (the SSH master
                                connection every command reuses); a short
                                /tmp/rootless-UID-m-HASH when that path is long
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from rootless.errors import MachineError, UsageError

DEFAULT_NAME = "default"
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")
SHARE_TAG = "home"
GUEST_STORE = "/var/lib/rootless/store"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"invalid machine name {name!r}",
                         hint="use letters, digits, '_', '.' and '-' (at most 63), starting with a letter or digit")
    return name


@dataclass(frozen=True)
class MachineSpec:
    name: str
    arch: str                 # guest = host architecture, uname -m (x86_64, aarch64)
    cpus: int
    memory_mib: int
    disk_gib: int
    accel: str                # "auto" (decided at each start) | kvm | hvf | whpx | tcg
    image: str                # guest image directory (kernel, initrd, rootfs.img)
    user: str                 # the guest user = the host user
    uid: int
    gid: int
    home: str                 # shared into the guest at the same path ("" = no share)
    created: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())

    def to_json(self) -> dict:
        d = asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "MachineSpec":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["extra"] = tuple(sorted((d.get("extra") or {}).items()))
        return cls(**kw)

    def with_changes(self, **kw) -> "MachineSpec":
        return replace(self, **kw)


@dataclass(frozen=True)
class MachinePaths:
    dir: Path
    run: Path

    @classmethod
    def of(cls, config, name: str) -> "MachinePaths":
        run = Path(config.runtime_dir) / "machines" / name
        if len(str(run)) > 72 and os.name != "nt":
            # unix socket paths are limited to 108 bytes (ssh adds 17 to its ControlPath while binding)
            import hashlib

            h = hashlib.sha256(str(run).encode()).hexdigest()[:12]
            run = Path("/tmp") / f"rootless-{os.getuid() if hasattr(os, 'getuid') else 0}-m-{h}"
        return cls(Path(config.data_root) / "machines" / name, run)

    @property
    def spec(self) -> Path:
        return self.dir / "machine.json"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def initrd(self) -> Path:
        return self.dir / "initrd.img"

    @property
    def seed_disk(self) -> Path:
        return self.dir / "seed.img"

    @property
    def serial_log(self) -> Path:
        return self.dir / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def lock(self) -> Path:
        return self.dir / "lock"

    @property
    def qmp(self) -> Path:
        return self.run / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.run / "qemu.pid"

    @property
    def ssh_control(self) -> Path:
        return self.run / "ssh.sock"


def machines_dir(config) -> Path:
    return Path(config.data_root) / "machines"


def write_json_atomic(path: Path, obj, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)      # (os.rename does not replace on Windows)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise MachineError(f"cannot read {what} {path}: {e}",
                           hint="remove the machine (rootless machine rm -f NAME) and create it again") from None

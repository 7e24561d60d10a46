"""Named and anonymous volumes: ``volumes/<name>/_data`` + ``volume.json``.

A volume's data directory belongs to the user (= root in the container);
what containers write there may belong to subordinate ids, so removal goes
through :func:`rootless.storage.remove_tree` (user namespace when needed).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rootless.errors import UsageError, VolumeError
from rootless.record import Record

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


class Volume(Record):
    name: str
    path: Path              # the volume's directory (…/volumes/<name>)
    created: str
    labels: tuple[tuple[str, str], ...] = ()
    anonymous: bool = False

    @property
    def data(self) -> Path:
        return self.path / "_data"

    def to_json(self) -> dict:
        return {"Name": self.name, "Driver": "local", "Mountpoint": str(self.data), "CreatedAt": self.created,
                "Labels": dict(self.labels), "Scope": "local", "Options": {},
                "Anonymous": self.anonymous}


class VolumeStore:
    def __init__(self, config):
        self.config = config
        self.root = Path(config.data_root) / "volumes"

    def _lock(self):
        from rootless.runtime.state import ContainerStore

        return ContainerStore(self.config).lock()

    def get(self, name: str) -> Volume:
        p = self.root / name
        try:
            d = json.loads((p / "volume.json").read_bytes())
        except FileNotFoundError:
            raise VolumeError(f"no such volume: {name}", hint="list volumes with `rootless volume ls`") from None
        except ValueError:
            raise VolumeError(f"volume {name}: volume.json is damaged") from None
        return Volume(d["name"], p, d.get("created", ""), tuple((d.get("labels") or {}).items()),
                      bool(d.get("anonymous")))

    def exists(self, name: str) -> bool:
        return (self.root / name / "volume.json").is_file()

    def create(self, name: str | None = None, labels: tuple[tuple[str, str], ...] = (),
               anonymous: bool = False, exist_ok: bool = True) -> tuple[Volume, bool]:
        """Create (or, for an existing named volume, return) a volume; (volume, created_now)."""
        from rootless.runtime.state import _atomic_write, now_iso

        if name is None:
            name = os.urandom(32).hex()
            anonymous = True
        elif not _NAME.match(name):
            raise UsageError(f"invalid volume name {name!r}", hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        with self._lock():
            if self.exists(name):
                if not exist_ok:
                    raise VolumeError(f"volume {name} already exists")
                return self.get(name), False
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{name}.tmp{os.getpid()}"
            (tmp / "_data").mkdir(parents=True)
            os.chmod(tmp / "_data", 0o755)
            created = now_iso()
            _atomic_write(tmp / "volume.json", json.dumps(
                {"name": name, "created": created, "labels": dict(labels), "anonymous": anonymous}).encode(),
                sync=True)
            os.rename(tmp, self.root / name)
        return Volume(name, self.root / name, created, labels, anonymous), True

    def list(self) -> list[Volume]:
        out = []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        for n in names:
            if n.startswith("."):
                continue
            try:
                out.append(self.get(n))
            except VolumeError:
                continue
        return out

    def users(self, name: str) -> list[str]:
        """Names of the containers that use the volume."""
        from rootless.runtime.state import ContainerStore

        out = []
        for c in ContainerStore(self.config).list():
            if any(m.kind == "volume" and m.source == name for m in c.spec.mounts) or name in c.anon_volumes:
                out.append(c.name)
        return out

    def remove(self, name: str, force: bool = False) -> None:
        from rootless.storage import remove_tree

        self.get(name)
        used = self.users(name)
        if used and not force:
            raise VolumeError(f"volume {name} is in use by container(s) {', '.join(used)}",
                              hint="remove the containers first (rootless rm), or use -f")
        with self._lock():
            gone = self.root / f".{name}.removing{os.getpid()}"
            try:
                os.rename(self.root / name, gone)
            except FileNotFoundError:
                return
        remove_tree(gone)

    def prune(self, all_: bool = False) -> tuple[list[str], int]:
        """Remove unused volumes (anonymous ones only unless ``all_``, like Docker 23+);
        (names, bytes freed)."""
        from rootless.diskusage import tree_size

        removed = []
        freed = 0
        for v in self.list():
            if not all_ and not v.anonymous:
                continue
            if self.users(v.name):
                continue
            size = tree_size(v.data)
            self.remove(v.name)
            removed.append(v.name)
            freed += size
        return removed, freed

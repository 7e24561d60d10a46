"""The layer cache index: ``buildcache.json`` next to ``images.json``.

``{"version": 1, "entries": {key: {"diff_id", "blob": descriptor, "empty", "created", "used"}}}``

A key (``rootless.build.cachekey``) maps to the layer a step produced (or
``empty`` when the step changed nothing).  The layers and blobs stay in the
store's ``layers/`` and ``blobs/``; ``Store.referenced`` counts the entries
here as references, so ``rmi``/``image prune`` keep cached layers;
``prune(store)`` drops the cache (or its entries no image uses) (then the store's GC frees what nothing
else uses).  Changes happen under the store lock, written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

FILE = "buildcache.json"
VERSION = 1


@dataclass(frozen=True)
class CacheEntry:
    diff_id: str
    blob: dict | None          # the layer blob's descriptor JSON
    empty: bool
    created: float = 0.0       # when the step ran (the image's times come from here: a cached
                               # rebuild makes the same image ID)

    def to_json(self) -> dict:
        return {"diff_id": self.diff_id, "blob": self.blob, "empty": self.empty, "created": self.created}


def _load(path) -> dict:
    try:
        with open(path, "rb") as f:
            d = json.load(f)
        if isinstance(d, dict) and d.get("version") == VERSION and isinstance(d.get("entries"), dict):
            return d
    except (OSError, ValueError):
        pass
    return {"version": VERSION, "entries": {}}


class BuildCache:
    def __init__(self, store):
        self.store = store
        self.path = store.root / FILE
        self._entries: dict | None = None

    def entries(self) -> dict:
        if self._entries is None:
            self._entries = _load(self.path)["entries"]
        return self._entries

    def get(self, key: str, pins) -> CacheEntry | None:
        """The entry of ``key``, its layer and blob pinned in ``pins`` (``Store.reserve_*``) before
        they are looked at: GC keeps them while the pins are held. None for a miss."""
        e = self.entries().get(key)
        if not isinstance(e, dict):
            return None
        created = float(e.get("created") or 0)
        if e.get("empty"):
            return CacheEntry("", None, True, created)
        diff = e.get("diff_id")
        blob = e.get("blob")
        if not diff or not isinstance(blob, dict):
            return None
        # a cached layer whose files were removed (by hand, or the cache pruned) is a miss
        has_layer = self.store.reserve_layer(pins, diff)
        if not has_layer or not self.store.reserve_blob(pins, blob.get("digest", "")):
            return None
        return CacheEntry(diff, blob, False, created)

    def put(self, key: str, entry: CacheEntry) -> None:
        from rootless.image.locks import atomic_write

        with self.store.lock():
            d = _load(self.path)
            rec = entry.to_json()
            if not rec["created"]:
                rec["created"] = time.time()
            d["entries"][key] = rec
            atomic_write(self.path, json.dumps(d, separators=(",", ":")).encode())
            self._entries = d["entries"]


def references(root) -> tuple[set[str], set[str]]:
    """(blob digests, diff_ids) the cache keeps (used by Store.referenced)."""
    blobs: set[str] = set()
    layers: set[str] = set()
    for e in _load(root / FILE)["entries"].values():
        if not isinstance(e, dict) or e.get("empty"):
            continue
        if isinstance(e.get("diff_id"), str):
            layers.add(e["diff_id"])
        b = e.get("blob")
        if isinstance(b, dict) and isinstance(b.get("digest"), str):
            blobs.add(b["digest"])
    return blobs, layers


def prune(store, *, unused_only: bool = False) -> tuple[int, int]:
    """Forget cache entries and free what nothing else uses; (entries dropped, bytes freed).

    ``unused_only`` keeps the entries whose layer an image still uses and the
    empty ones (dropping them would free nothing), as ``docker system prune``
    keeps the build cache in use; without it every entry goes (``-a``)."""
    from rootless.image.locks import atomic_write

    with store.lock():
        d = _load(store.root / FILE)
        entries = d["entries"]
        _, image_layers = store.referenced(store.db(fresh=True), cache=False)
        keep = {}
        if unused_only:
            keep = {k: e for k, e in entries.items()
                    if isinstance(e, dict) and (e.get("empty") or e.get("diff_id") in image_layers)}
        n = len(entries) - len(keep)
        atomic_write(store.root / FILE, json.dumps({"version": VERSION, "entries": keep},
                                                   separators=(",", ":")).encode())
    # what the collection removed (the dropped entries' layers and blobs nothing else uses)
    return n, store.gc().bytes

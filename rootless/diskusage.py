"""Disk usage of a store, as ``docker system df`` shows it.

``collect(config)`` reads the facts (images and their layers, containers and
their upper dirs, volumes, the build cache); ``summarize`` turns them into
the four rows (pure, unit-tested)::

    TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE
    Images          2         1         4.26MB    2.1MB (49%)
    Containers      1         0         12kB      12kB (100%)
    Local Volumes   1         1         0B        0B
    Build Cache     3         0         1.2MB     1.2MB

Sizes are apparent sizes (``st_size``, hard links once), like Docker's: the
uncompressed size of the layers, what containers wrote to their upper dirs,
what the volumes hold. A layer shared by several images counts once; an
image is active when a container uses it; the build cache counts the layers
only the cache keeps (what ``system prune`` frees).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rootless.record import Record


class Usage(Record):
    type: str               # Images, Containers, Local Volumes, Build Cache
    total: int
    active: int
    size: int
    reclaimable: int

    def reclaimable_text(self) -> str:
        from rootless.image.present import human_size

        text = human_size(self.reclaimable)
        if self.size > 0 and self.type != "Build Cache":
            text += f" ({self.reclaimable * 100 // self.size}%)"
        return text

    def to_json(self) -> dict:
        """Docker's ``system df --format json`` object (every value a string)."""
        from rootless.image.present import human_size

        return {"Type": self.type, "TotalCount": str(self.total), "Active": str(self.active),
                "Size": human_size(self.size), "Reclaimable": self.reclaimable_text()}


class Facts(Record):
    """What ``summarize`` needs, read from the store by ``collect``."""
    images: tuple[tuple[str, tuple[str, ...]], ...]      # (image id, diff_ids)
    layer_sizes: tuple[tuple[str, int], ...]             # diff_id -> uncompressed size
    containers: tuple[tuple[str, bool, int], ...]        # (id, running, upper dir size)
    container_images: tuple[str, ...] = ()               # image ids containers use
    volumes: tuple[tuple[str, bool, int], ...] = ()      # (name, in use, size)
    cache_entries: int = 0
    cache_layers: tuple[str, ...] = ()                   # diff_ids the build cache keeps


def summarize(f: Facts) -> list[Usage]:
    """The four rows of ``system df`` (pure)."""
    sizes = dict(f.layer_sizes)
    all_layers = {d for _, layers in f.images for d in layers}
    used = set(f.container_images)
    active_images = [i for i, _ in f.images if i in used]
    active_layers = {d for i, layers in f.images if i in used for d in layers}
    img_size = sum(sizes.get(d, 0) for d in all_layers)
    img_free = sum(sizes.get(d, 0) for d in all_layers - active_layers)

    c_size = sum(s for _, _, s in f.containers)
    c_free = sum(s for _, running, s in f.containers if not running)

    v_size = sum(s for _, _, s in f.volumes)
    v_free = sum(s for _, in_use, s in f.volumes if not in_use)

    cache_only = set(f.cache_layers) - all_layers
    cache_size = sum(sizes.get(d, 0) for d in cache_only)
    return [
        Usage("Images", len(f.images), len(active_images), img_size, img_free),
        Usage("Containers", len(f.containers), sum(1 for _, r, _ in f.containers if r), c_size, c_free),
        Usage("Local Volumes", len(f.volumes), sum(1 for _, u, _ in f.volumes if u), v_size, v_free),
        Usage("Build Cache", f.cache_entries, 0, cache_size, cache_size),
    ]


def tree_size(path: Path | str) -> int:
    """Apparent size of the files under ``path`` (hard links once; unreadable parts are skipped)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_size
    return total


def layer_size(store, diff_id: str, default: int = 0) -> int:
    """The uncompressed size recorded in ``layers/<hex>/layer.json``."""
    try:
        with open(store.layer_path(diff_id) / "layer.json", "rb") as f:
            return int(json.load(f).get("size", default))
    except (OSError, ValueError, TypeError, AttributeError):
        return default


def collect(config) -> Facts:
    """Read the store's facts for :func:`summarize`."""
    from rootless.build.cache import references
    from rootless.image.store import Store
    from rootless.runtime.state import ContainerStore
    from rootless.runtime.volumes import VolumeStore

    store = Store(config)
    db = store.db()
    images = []
    sizes: dict[str, int] = {}
    for iid, e in db["images"].items():
        layers = tuple(e.get("layers", ()))
        images.append((iid, layers))
        blob_sizes = [int(b.get("size", 0)) for b in e.get("blobs", ())]
        for i, d in enumerate(layers):
            if d not in sizes:
                sizes[d] = layer_size(store, d, blob_sizes[i] if i < len(blob_sizes) else 0)
    _, cache_layers = references(store.root)
    for d in cache_layers:
        if d not in sizes:
            sizes[d] = layer_size(store, d)
    from rootless.build.cache import FILE, _load

    cache_entries = len(_load(store.root / FILE)["entries"])

    ctrs = ContainerStore(config).list()
    containers = tuple((c.id, c.state.running, tree_size(c.dir / "upper")) for c in ctrs)
    volume_users: set[str] = set()
    for c in ctrs:
        volume_users.update(m.source for m in c.spec.mounts if m.kind == "volume")
        volume_users.update(c.anon_volumes)
    volumes = tuple((v.name, v.name in volume_users, tree_size(v.data)) for v in VolumeStore(config).list())
    return Facts(images=tuple(images), layer_sizes=tuple(sizes.items()), containers=containers,
                 container_images=tuple(c.image_id for c in ctrs), volumes=volumes,
                 cache_entries=cache_entries, cache_layers=tuple(sorted(cache_layers)))

"""Helpers for the runtime's integration tests: the image to run.

Once the image store exists (rootless.image.store), tests run images pulled
from the ``registry`` fixture; a root filesystem extracted from the busybox
OCI layout (inside a user namespace, like the store does) is used with
``--rootfs`` for the engine's own tests either way.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path


def have_store() -> bool:
    try:
        import rootless.image.store  # noqa: F401
    except ImportError:
        return False
    return True


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _extract(layout: str, manifest_digest: str, dest: str) -> None:
    lay = Path(layout)
    man = json.loads(_blob(lay, manifest_digest).read_bytes())
    os.makedirs(dest, exist_ok=True)
    for layer in man["layers"]:
        with tarfile.open(_blob(lay, layer["digest"])) as tf:
            for m in tf:
                if os.path.basename(m.name).startswith(".wh."):
                    continue  # the busybox layers have no whiteouts
                tf.extract(m, dest, set_attrs=True)


def busybox_rootfs(images, dest: Path) -> Path:
    """The host-arch busybox image extracted into ``dest`` (owners kept, in a userns)."""
    from rootless.userns import run_in_userns

    info = images.info("busybox")
    digest = info["manifests"][f"linux/{images.host_arch}"]
    run_in_userns(_extract, str(images.layout("busybox")), digest, str(dest))
    return dest

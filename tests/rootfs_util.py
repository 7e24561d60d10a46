"""Test helper: unpack an image of an OCI layout into a directory (not rootless code).

Plain files, directories and symbolic links only, whiteouts skipped: enough
for the busybox and debian test images, and independent of the image code
under test.
"""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path


def _blob(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":")
    return layout / "blobs" / algo / hexd


def extract_rootfs(layout: Path, platform: str, dest: Path) -> Path:
    """Unpack an image of the OCI layout (plain files, dirs, symlinks) - test helper, not rootless code."""
    index = json.loads((layout / "index.json").read_text())
    manifests = []
    for d in index["manifests"]:
        if d["mediaType"].endswith("index.v1+json"):
            manifests += json.loads(_blob(layout, d["digest"]).read_text())["manifests"]
        else:
            manifests.append(d)
    want_os, want_arch = platform.split("/")[:2]
    desc = next(m for m in manifests if m.get("platform", {}).get("architecture") == want_arch
                and m.get("platform", {}).get("os") == want_os)
    manifest = json.loads(_blob(layout, desc["digest"]).read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for layer in manifest["layers"]:
        with gzip.open(_blob(layout, layer["digest"])) as gz, tarfile.open(fileobj=gz, mode="r|") as tf:
            for m in tf:
                name = os.path.normpath(m.name).lstrip("/")
                if name.startswith("..") or os.path.basename(name).startswith(".wh."):
                    continue
                target = dest / name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif m.issym():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.is_symlink() or target.exists():
                        target.unlink()
                    os.symlink(m.linkname, target)
                elif m.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as f:
                        f.write(tf.extractfile(m).read())
                    os.chmod(target, m.mode & 0o755)
    (dest / "proc").mkdir(exist_ok=True)
    return dest

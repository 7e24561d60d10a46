"""Helpers of the build tests: write a context, read back what an image contains."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path


def write_context(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            p.write_text(data)
        else:
            p.write_bytes(data)
    return root


def save_archive(rl, ref: str, dest: Path) -> Path:
    rl.ok("save", "-o", str(dest), ref)
    return dest


def archive_image(path: Path) -> tuple[dict, list[bytes]]:
    """(config JSON, layer tars, lowest first) of a single-image docker-archive."""
    with tarfile.open(path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        assert len(manifest) == 1
        m = manifest[0]
        config = json.load(tf.extractfile(m["Config"]))
        layers = [tf.extractfile(p).read() for p in m["Layers"]]
    return config, layers


def merged_files(layers: list[bytes]) -> dict[str, dict]:
    """Apply the layers (with OCI whiteouts) and describe every path of the result."""
    files: dict[str, dict] = {}
    for data in layers:
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            members = tf.getmembers()
            # opaque directories first: they hide lower content
            for m in members:
                name = "/" + m.name.strip("/").removeprefix("./")
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    for k in [k for k in files if k.startswith(parent.rstrip("/") + "/")]:
                        del files[k]
            for m in members:
                name = "/" + m.name.strip("/").removeprefix("./")
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(parent, base[4:])
                    for k in [k for k in files if k == gone or k.startswith(gone + "/")]:
                        del files[k]
                    continue
                info = {"type": "dir" if m.isdir() else "link" if m.issym() else "hard" if m.islnk() else "file",
                        "mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid}
                if m.isreg():
                    info["data"] = tf.extractfile(m).read()
                elif m.issym() or m.islnk():
                    info["target"] = m.linkname
                files[name] = info
    return files


def image_files(rl, ref: str, tmp: Path) -> tuple[dict, dict[str, dict]]:
    cfg, layers = archive_image(save_archive(rl, ref, tmp / f"save-{abs(hash(ref))}.tar"))
    return cfg, merged_files(layers)

"""``build --output type=oci-archive`` of a multi-platform build: an OCI layout with the index.

``index.json`` points at the image index (annotated with the tag), which
lists one manifest per platform; every blob is under ``blobs/sha256``.
"""

from __future__ import annotations

import io
import json
import tarfile

from rootless.image import oci
from rootless.image.oci import digest_hex


def _ti(name: str, size: int, type_=tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.type = type_
    ti.mode = 0o755 if type_ == tarfile.DIRTYPE else 0o644
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti


def write_oci_index_archive(store, result, out) -> None:
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    written: set[str] = set()

    def add_bytes(name: str, data: bytes) -> None:
        tf.addfile(_ti(name, len(data)), io.BytesIO(data))

    def add_blob(digest: str) -> None:
        if digest in written:
            return
        written.add(digest)
        p = store.blob_path(digest)
        with open(p, "rb") as f:
            tf.addfile(_ti(f"blobs/sha256/{digest_hex(digest)}", p.stat().st_size), f)

    try:
        tf.addfile(_ti("blobs", 0, tarfile.DIRTYPE))
        tf.addfile(_ti("blobs/sha256", 0, tarfile.DIRTYPE))
        add_bytes("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for img in result.images:
            man = oci.parse_manifest(img.manifest_bytes)
            for layer in man.layers:
                add_blob(layer.digest)
            add_blob(img.image_id)
            add_blob(img.manifest_digest)
        add_blob(result.index_digest)
        ibytes = store.read_blob(result.index_digest)
        desc = {"mediaType": oci.OCI_INDEX, "digest": result.index_digest, "size": len(ibytes)}
        if result.tags:
            from rootless.image.reference import parse

            desc["annotations"] = {"org.opencontainers.image.ref.name": str(parse(result.tags[0]))}
        index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [desc]}
        add_bytes("index.json", json.dumps(index, separators=(",", ":")).encode())
    finally:
        tf.close()

"""Manifest lists (image indexes) assembled by hand, as ``podman manifest``.

A local manifest list is a tag of the store with one image per platform and
an OCI index blob recorded for it (``images.json``: ``tags[NAME]`` =
``{platform: image id}``, ``indexes[NAME]`` = the index descriptor), the same
form a multi-platform pull or build leaves. ``push`` then sends the index and
every image (``rootless.image.push``).
"""

from __future__ import annotations

import json

from archsupport.platform import Platform
from rootless.errors import ImageError, ImageNotFound
from rootless.image import oci
from rootless.image.reference import parse


def _index_bytes(store, members: dict[str, str]) -> bytes:
    manifests = []
    for _plat, iid in sorted(members.items()):
        rec = store.get(iid)
        d = {"mediaType": rec.manifest.media_type, "digest": rec.manifest.digest, "size": rec.manifest.size,
             "platform": rec.platform.to_json()}
        manifests.append(d)
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": manifests}
    return json.dumps(doc, separators=(",", ":")).encode()


def _write(store, name: str, members: dict[str, str]) -> str:
    data = _index_bytes(store, members)
    digest = oci.sha256_digest(data)
    store.write_blob(data, digest)
    ref = parse(name)

    def change(db):
        for iid in members.values():
            if iid not in db["images"]:
                raise ImageNotFound(f"No such image: {iid}")
        db["tags"][ref.tagged] = dict(members)
        db.setdefault("indexes", {})[ref.tagged] = {"mediaType": oci.OCI_INDEX, "digest": digest, "size": len(data)}

    store.update(change)
    return digest


def members(store, name: str) -> dict[str, str]:
    ref = parse(name)
    db = store.db(fresh=True)
    if ref.tagged not in db.get("indexes", {}):
        if ref.tagged in db["tags"]:
            raise ImageError(f"{ref.familiar} is an image, not a manifest list",
                             hint=f"create a list: rootless manifest create NAME {ref.familiar}")
        raise ImageNotFound(f"{ref.familiar}: no such manifest list",
                            hint=f"create it: rootless manifest create {ref.familiar}")
    return dict(db["tags"].get(ref.tagged, {}))


def create(store, name: str, images: list[str], *, all_platforms: bool = False, amend: bool = False,
           reporter=None) -> str:
    ref = parse(name)
    db = store.db(fresh=True)
    if ref.tagged in db["tags"] and not amend:
        raise ImageError(f"{ref.familiar} already exists", hint="use --amend to change it, or another name")
    current = dict(db["tags"].get(ref.tagged, {})) if amend else {}
    if ref.tagged in db["tags"] and ref.tagged not in db.get("indexes", {}):
        current = {}
    for img in images:
        current.update(_resolve(store, img, None, all_platforms, reporter))
    return _write(store, name, current)


def _resolve(store, image: str, platform: Platform | None, all_platforms: bool, reporter) -> dict[str, str]:
    from rootless.image.store import platform_key

    if all_platforms:
        try:
            r = parse(image)
            plats = store.db(fresh=True)["tags"].get(r.tagged)
        except Exception:  # noqa: BLE001 - an ID
            plats = None
        if plats:
            return dict(plats)
    rec = store.ensure_image(image, pull="missing", platform=platform, reporter=reporter)
    return {platform_key(rec.platform): rec.id}


def add(store, name: str, image: str, *, platform: Platform | None = None, all_platforms: bool = False,
        reporter=None) -> str:
    cur = members(store, name)
    new = _resolve(store, image, platform, all_platforms, reporter)
    for k in new:
        if k in cur and cur[k] != new[k] and reporter is not None:
            reporter.warn(f"{name}: replacing the {k} image")
    cur.update(new)
    return _write(store, name, cur)


def remove_platform(store, name: str, digest_or_id: str) -> str:
    cur = members(store, name)
    keep = {}
    for k, iid in cur.items():
        rec = store.get(iid)
        if digest_or_id in (iid, rec.manifest.digest) or iid[7:].startswith(digest_or_id.removeprefix("sha256:")):
            continue
        keep[k] = iid
    if len(keep) == len(cur):
        raise ImageNotFound(f"{name}: no image {digest_or_id} in the list")
    return _write(store, name, keep)


def inspect(store, name: str) -> dict:
    ref = parse(name)
    members(store, name)
    desc = store.db()["indexes"][ref.tagged]
    return json.loads(store.read_blob(desc["digest"]))


def remove(store, names: list[str]) -> list[str]:
    """Remove manifest lists (the images stay)."""
    out = []
    refs = [parse(n) for n in names]
    for n in names:
        members(store, n)

    def change(db):
        for r in refs:
            db["tags"].pop(r.tagged, None)
            db.get("indexes", {}).pop(r.tagged, None)
            out.append(r.familiar)

    store.update(change)
    return out

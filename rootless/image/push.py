"""Push: upload the blobs a registry lacks, then the manifest(s), then the index.

A tag stored for several platforms is pushed as an index: the original index
(same digest) when every image it lists is in the store, else a new OCI
index of the platforms we have. A single image is pushed with its original
manifest bytes, so its digest stays the same.
"""

from __future__ import annotations

import json

from rootless.errors import ImageNotFound, InvalidReference, StoreError
from rootless.image import oci
from rootless.image.reference import is_image_id, parse
from rootless.report import Reporter


def _short(d: str) -> str:
    return d.split(":", 1)[-1][:12]


def push(store, source: str, dest: str | None = None, *, reporter: Reporter | None = None,
         tls_verify: bool | None = None, platform=None) -> str:
    """Push ``source`` (a local image) to ``dest`` (default: its own name). Returns the pushed digest."""
    from concurrent.futures import ThreadPoolExecutor

    from rootless.image.registry import RegistryClient
    from rootless.image.store import platform_key

    reporter = reporter or Reporter()
    dref = parse(dest) if dest is not None else None
    if dref is not None and dref.digest:
        raise InvalidReference(f"cannot push to {dest}: a destination cannot have a digest",
                               hint="give HOST/NAME[:TAG]; the registry computes the digest of what is pushed")
    db = store.db()
    img = store.resolve(source, platform, reporter)
    # the source names a tag only when it resolved as one (not as an image ID or ID prefix)
    src_ref = None
    if not is_image_id(source):
        try:
            r = parse(source)
        except InvalidReference:
            r = None
        if r is not None and (r.digest or img.id in db["tags"].get(r.tagged, {}).values()):
            src_ref = r
    if dref is None:
        if src_ref is None:
            raise ImageNotFound(f"An image does not exist locally with the tag: {source}",
                                hint=f"{source} is an image ID: give a destination (rootless push {source} "
                                     f"HOST/NAME:TAG) or tag it first (rootless tag {source} HOST/NAME:TAG)")
        if src_ref.digest:
            raise ImageNotFound(f"cannot push {source}: give a destination NAME[:TAG]",
                                hint=f"rootless push {source} HOST/NAME:TAG, or tag it first (rootless tag)")
        dref = src_ref
    # which images: every platform of the source tag (unless one was asked for)
    members = {platform_key(img.platform): img.id}
    index_desc = None
    if platform is None and src_ref is not None and not src_ref.digest and src_ref.tagged in db["tags"]:
        plats = db["tags"][src_ref.tagged]
        if img.id in plats.values():
            members = dict(plats)
            index_desc = db.get("indexes", {}).get(src_ref.tagged)
    records = [store.get(i) for i in members.values()]
    client = RegistryClient(dref.domain, store.config, tls_verify=tls_verify, reporter=reporter)
    reporter.info(f"The push refers to repository [{dref.name}]")

    blobs: dict[str, oci.Descriptor] = {}
    for r in records:
        blobs[r.id] = oci.Descriptor(oci.OCI_CONFIG, r.id, store.blob_path(r.id).stat().st_size)
        for b in r.blobs:
            if not store.has_blob(b.digest):
                raise StoreError(f"blob {b.digest} of image {r.short_id} is not in the store",
                                 hint=f"pull the image again before pushing it (rootless pull {source})")
            blobs[b.digest] = b

    def upload(d: oci.Descriptor) -> None:
        item = _short(d.digest)
        if client.blob_exists(dref.path, d.digest):
            reporter.progress(item, "Layer already exists")
            return
        reporter.progress(item, "Pushing", 0, d.size)
        with open(store.blob_path(d.digest), "rb") as f:
            client.upload_blob(dref.path, d.digest, store.blob_path(d.digest).stat().st_size, f)
        reporter.progress(item, "Pushed")

    # the first request alone (it sets up authentication), then in parallel
    items = list(blobs.values())
    try:
        if items:
            upload(items[0])
        with ThreadPoolExecutor(max_workers=max(1, min(store.config.pull_parallel, len(items)))) as ex:
            for fu in [ex.submit(upload, d) for d in items[1:]]:
                fu.result()
    finally:
        reporter.done()

    tag = dref.tag or "latest"
    # the original index, when every image it lists is here
    idx_bytes = None
    idx_type = oci.OCI_INDEX
    if index_desc is not None and store.has_blob(index_desc["digest"]):
        data = store.read_blob(index_desc["digest"])
        idx = oci.parse_manifest(data)
        have = {r.manifest.digest for r in records}
        wanted = [m for m in idx.manifests if m.media_type not in oci.INDEX_TYPES]
        if all(m.digest in have for m in wanted):
            idx_bytes, idx_type = data, idx.media_type
    if len(records) == 1 and idx_bytes is None:
        r = records[0]
        data = store.read_blob(r.manifest.digest)
        digest = client.put_manifest(dref.path, tag, data, r.manifest.media_type)
        reporter.info(f"{tag}: digest: {digest} size: {len(data)}")
        return digest
    for r in records:
        data = store.read_blob(r.manifest.digest)
        client.put_manifest(dref.path, r.manifest.digest, data, r.manifest.media_type)
    if idx_bytes is None:
        doc = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
               "manifests": [oci.Descriptor(r.manifest.media_type, r.manifest.digest, r.manifest.size,
                                            r.platform).to_json() for r in records]}
        idx_bytes = json.dumps(doc, separators=(",", ":")).encode()
    digest = client.put_manifest(dref.path, tag, idx_bytes, idx_type)
    reporter.info(f"{tag}: digest: {digest} size: {len(idx_bytes)}")
    return digest

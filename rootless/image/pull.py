"""Pull: manifest -> platform -> config -> layers (parallel, verified, resumable).

The parent fetches the manifest(s) and the config (small). Layers that are
missing are fetched and extracted in ONE child running as root of the user
namespace (default mapping), by a bounded pool of threads; each layer is
downloaded and extracted in a single pass (the compressed bytes go to
``blobs/partial/<hex>`` while they are decompressed and extracted into a
staging directory), its blob digest and diff_id verified at the end; the
blob is then linked into ``blobs/sha256`` and the layer renamed into
``layers/<diffid>``. An interrupted download is resumed with an HTTP Range
request next time. On failure everything this pull added that nothing else
uses is removed again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from archsupport.platform import Platform, host_platform
from rootless.errors import DigestMismatch, ImageError, LayerError, PlatformNotFound, RegistryError, RootlessError
from rootless.image import oci
from rootless.image.compress import HashReader, check_digest, decompressed
from rootless.image.locks import FileLock, Pins, Staging
from rootless.image.oci import ConfigFile, Descriptor, Index, Manifest, digest_hex
from rootless.image.reference import Reference, parse
from rootless.report import Reporter


@dataclass(frozen=True)
class LayerJob:
    blob: Descriptor
    diff_id: str
    need_blob: bool
    need_layer: bool


@dataclass(frozen=True)
class PlatformImage:
    manifest_bytes: bytes
    manifest: Manifest
    digest: str
    media_type: str
    config: ConfigFile
    config_digest: str


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class _Limited:
    """Reads at most ``limit`` bytes, then fails: a blob may not be larger than its descriptor."""

    def __init__(self, raw, limit: int, digest: str):
        self.raw = raw
        self.left = limit
        self.digest = digest

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.left -= len(b)
        if self.left < 0:
            raise DigestMismatch(f"blob {self.digest} is larger than its descriptor says: refused")
        return b


# ---------------------------------------------------------------------------
# in the user namespace child

class LayerWorker:
    def __init__(self, store, client, path: str, reporter: Reporter, mapping, staging: Staging):
        self.store = store
        self.client = client
        self.path = path
        self.reporter = reporter
        self.staging = staging
        self.single = mapping.single
        self.max_uid = mapping.uid_count - 1
        self.max_gid = mapping.gid_count - 1
        self.created_blobs: list[str] = []
        self.created_layers: list[str] = []
        import threading

        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def warn(self, msg: str) -> None:
        with self._lock:
            if msg in self._warned:
                return  # once per pull, not once per layer
            self._warned.add(msg)
        self.reporter.warn(msg)

    def run(self, job: LayerJob) -> None:
        item = short(job.blob.digest)
        if job.need_layer:
            with FileLock(self.store.lock_path("layer", job.diff_id)):
                if not self.store.has_layer(job.diff_id):
                    with FileLock(self.store.lock_path("blob", job.blob.digest)):
                        self._layer(job, item)
                    self.reporter.progress(item, "Pull complete")
                    return
        if job.need_blob or not self.store.has_blob(job.blob.digest):
            with FileLock(self.store.lock_path("blob", job.blob.digest)):
                if not self.store.has_blob(job.blob.digest):
                    self._download(job, item, extract_to=None)
        self.reporter.progress(item, "Pull complete")

    def _layer(self, job: LayerJob, item: str) -> None:
        hexd = digest_hex(job.diff_id)
        work = self.staging.path / hexd
        if work.exists():
            self.store.remove_trees([work], in_userns=True)
        work.mkdir()
        (work / "diff").mkdir(mode=0o755)
        try:
            if self.store.has_blob(job.blob.digest):
                self.reporter.progress(item, "Extracting")
                with open(self.store.blob_path(job.blob.digest), "rb") as f:
                    size = self._extract(f, job, str(work / "diff"))
            else:
                size = self._download(job, item, extract_to=str(work / "diff"))
            info = {"diff_id": job.diff_id, "size": size, "blob": job.blob.digest, "created": time.time()}
            with open(work / "layer.json", "w") as f:
                json.dump(info, f)
            final = self.store.layer_path(job.diff_id)
            try:
                os.rename(work, final)
            except OSError:
                # a leftover without layer.json (never complete): replace it
                if (final / "layer.json").exists():
                    raise
                self.store.remove_trees([final], in_userns=True)
                os.rename(work, final)
            with self._lock:
                self.created_layers.append(job.diff_id)
        except BaseException:
            self.store.remove_trees([work], in_userns=True)
            raise

    def _extract(self, raw, job: LayerJob, dest: str) -> int:
        from rootless.image.extract import extract_tar

        diff = HashReader(decompressed(raw))
        extract_tar(diff, dest, max_uid=self.max_uid, max_gid=self.max_gid, single=self.single, warn=self.warn)
        diff.drain()
        if diff.digest() != job.diff_id:
            raise DigestMismatch(f"layer {job.blob.digest}: its uncompressed content ({diff.digest()}) does not match "
                                 f"the diff_id {job.diff_id} of the image configuration",
                                 hint="the image is corrupt; pull it again or report it to its publisher")
        return diff.count

    def _download(self, job: LayerJob, item: str, extract_to: str | None) -> int:
        """Fetch the blob into blobs/ (resuming a partial one); extract while streaming if asked."""
        store = self.store
        digest, size = job.blob.digest, job.blob.size
        partial = store.partial_path(digest)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        f = os.fdopen(fd, "r+b", buffering=0)
        usize = 0
        resp = None
        try:
            offset = os.fstat(fd).st_size
            if size >= 0 and offset > size:
                f.truncate(0)
                offset = 0
            hasher = None
            resp = None
            if offset:
                import hashlib

                hasher = hashlib.sha256()
                f.seek(0)
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    hasher.update(b)
            resp = None
            if size < 0 or offset < size:
                resp = self.client.open_blob(self.path, digest, offset)
                if offset and resp.status != 206:
                    # no Range support: start again
                    f.truncate(0)
                    offset = 0
                    import hashlib

                    hasher = hashlib.sha256()
                if offset:
                    self.reporter.progress(item, f"Resuming at {offset} bytes", offset, size)
            f.seek(offset)
            total = size if size >= 0 else 0

            def progress(n: int) -> None:
                self.reporter.progress(item, "Downloading", n, total)

            src = _Limited(resp, size - offset, digest) if (resp is not None and size >= 0) else resp
            tee = HashReader(src if src is not None else _Empty(), sink=f, progress=progress, start=offset,
                             hasher=hasher)
            if extract_to is not None and offset == 0:
                try:
                    usize = self._extract(tee, job, extract_to)
                except (LayerError, DigestMismatch, ImageError):
                    # corrupt bytes look like a broken tar: the digest tells which it is
                    tee.drain()
                    if size < 0 or tee.count == size:
                        check_digest(tee.digest(), digest, "blob")
                    raise
                tee.drain()
            else:
                tee.drain()
            f.flush()
            if size >= 0 and tee.count != size:
                raise RegistryError(f"blob {digest}: got {tee.count} bytes, expected {size}",
                                    hint="try again; the download resumes where it stopped")
            try:
                check_digest(tee.digest(), digest, "blob")
            except DigestMismatch:
                f.close()
                os.unlink(partial)
                raise
            f.close()
            final = store.blob_path(digest)
            if store.commit_file(partial, final):
                with self._lock:
                    self.created_blobs.append(digest)
            if extract_to is not None and offset != 0:
                self.reporter.progress(item, "Extracting")
                with open(final, "rb") as bf:
                    usize = self._extract(bf, job, extract_to)
            return usize
        except (DigestMismatch, LayerError):
            # the bytes are bad (or hostile): do not keep them for a resume
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
            raise
        finally:
            if not f.closed:
                f.close()
            if resp is not None:
                resp.close()


class _Empty:
    def read(self, n: int = -1) -> bytes:
        return b""


def _fetch_layers(store, client, path: str, jobs: list[LayerJob], reporter: Reporter, parallel: int, mapping,
                  parent: int):
    """Runs in the user-namespace child.

    The caller pins every job's blob and layer name (``Store.reserve_*``) before, and on
    failure discards what is not referenced after releasing them: the child cannot (its
    parent's pins keep GC away, its own included).
    """
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from rootless import syscalls

    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)  # the parent is already gone
    store.clean_stale(in_userns=True)
    staging = Staging(store.root / "tmp")
    worker = LayerWorker(store, client, path, reporter, mapping, staging)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs)))) as ex:
            futs = [ex.submit(worker.run, j) for j in jobs]
            err = None
            for fu in futs:
                try:
                    fu.result()
                except BaseException as e:  # noqa: BLE001 - first error wins, the others are cancelled
                    if err is None:
                        err = e
                        for other in futs:
                            other.cancel()
            if err is not None:
                raise err
    finally:
        staging.close()
        store.remove_trees([staging.path], in_userns=True)
        reporter.done()  # the child owns the display until here (see Reporter.done)
    return worker.created_blobs, worker.created_layers


def extract_layers(store, jobs: list[LayerJob], reporter: Reporter) -> tuple[list[str], list[str]]:
    """Extract layers whose blobs are already in the store (load), in the user namespace.

    The caller has reserved the jobs' names and discards them on failure (see _fetch_layers)."""
    from rootless.userns import default_mapping, run_in_userns

    mapping = default_mapping()
    reporter.done()  # the child draws from here on: one process draws at a time (Reporter.done)
    return run_in_userns(_fetch_layers, store, None, "", jobs, reporter, store.config.pull_parallel, mapping,
                         os.getpid())


# ---------------------------------------------------------------------------
# the parent

def _manifest(client, ref: Reference, reference: str, want_digest: str | None):
    body, mt, digest = client.get_manifest(ref.path, reference)
    if want_digest:
        check_digest(digest, want_digest, f"manifest of {ref.name}")
    return body, mt, digest, oci.parse_manifest(body, mt)


def _select(index: Index, ref: Reference, platform: Platform | None, all_platforms: bool) -> list[Descriptor]:
    if all_platforms:
        out = [m for m in index.manifests if m.platform is not None and m.platform.architecture != "unknown"
               and m.media_type not in oci.INDEX_TYPES]
        if not out:
            raise PlatformNotFound(f"{ref.familiar}: the index lists no platform images")
        return out
    want = platform or host_platform()
    d = index.select(want)
    if d is None:
        have = ", ".join(str(p) for p in index.platforms()) or "none"
        raise PlatformNotFound(f"{ref.familiar}: no image for platform {want} (the image has: {have})",
                               hint="choose one of those with --platform")
    return [d]


def pull(store, ref_str: str, *, platform: Platform | None = None, reporter: Reporter | None = None,
         all_platforms: bool = False, tls_verify: bool | None = None, client=None):
    """Pull ``ref_str``; returns the ImageRecord for the requested (or host) platform."""
    from rootless.image.registry import RegistryClient

    reporter = reporter or Reporter()
    ref = parse(ref_str)
    client = client or RegistryClient(ref.domain, store.config, tls_verify=tls_verify, reporter=reporter)
    store.ensure_dirs()
    reporter.info(f"Trying to pull {ref}...")
    body, mt, digest, m = _manifest(client, ref, ref.reference, ref.digest)
    index_desc = None
    images: list[PlatformImage] = []
    pins = Pins()
    created_blobs: list[str] = []
    jobs: dict[str, LayerJob] = {}
    try:
        if isinstance(m, Index):
            index_desc = Descriptor(m.media_type, digest, len(body))
            descs = _select(m, ref, platform, all_platforms)
            plats = []
            for d in descs:
                b2, mt2, dg2, m2 = _manifest(client, ref, d.digest, d.digest)
                if not isinstance(m2, Manifest):
                    raise ImageError(f"{ref.familiar}: nested image indexes are not supported")
                plats.append((b2, mt2 or d.media_type, dg2, m2))
        else:
            plats = [(body, mt, digest, m)]
        for b, mtype, dg, man in plats:
            cdig = man.config.digest
            # everything this pull uses or creates is pinned by name BEFORE it is looked at or made
            # visible: rmi / image prune running meanwhile keep it (store.discard)
            if store.reserve_blob(pins, cdig):
                cbytes = store.read_blob(cdig)
            else:
                cbytes = client.get_blob(ref.path, cdig, limit=64 << 20)
                check_digest(oci.sha256_digest(cbytes), cdig, "image configuration")
                if store.write_blob(cbytes, cdig):
                    created_blobs.append(cdig)
            cf = ConfigFile.from_bytes(cbytes)
            if len(cf.diff_ids) != len(man.layers):
                raise ImageError(f"{ref.familiar}: the manifest has {len(man.layers)} layers but the configuration "
                                 f"lists {len(cf.diff_ids)}", hint="the image is corrupt")
            if index_desc is None and platform is not None and not platform.matches(cf.platform) and reporter:
                from archsupport.platform import mismatch_warning

                reporter.warn(mismatch_warning(platform, cf.platform))
            for l in man.layers:
                if l.media_type and l.media_type not in oci.LAYER_TYPES and "tar" not in l.media_type:
                    raise ImageError(f"{ref.familiar}: unsupported layer type {l.media_type}")
            images.append(PlatformImage(b, man, dg, mtype or man.media_type, cf, cdig))

        for img in images:
            for l, diff in zip(img.manifest.layers, img.config.diff_ids):
                if diff in jobs:
                    continue
                has_layer = store.reserve_layer(pins, diff)
                has_blob = store.reserve_blob(pins, l.digest)
                if has_layer and has_blob:
                    reporter.progress(short(l.digest), "Already exists")
                    continue
                jobs[diff] = LayerJob(l, diff, not has_blob, not has_layer)
        if jobs:
            from rootless.userns import default_mapping, run_in_userns

            mapping = default_mapping()
            client.close()  # the child opens its own connections
            reporter.done()  # the child draws from here on: one process draws at a time (Reporter.done)
            blobs, layers = run_in_userns(_fetch_layers, store, client, ref.path, list(jobs.values()), reporter,
                                          store.config.pull_parallel, mapping, os.getpid())
            created_blobs += blobs
            for j in jobs.values():
                # ours or another pull's: reserved above, so nobody may have removed them
                if not (store.has_layer(j.diff_id) and store.has_blob(j.blob.digest)):
                    raise RootlessError(f"layer {j.diff_id} was removed while it was being pulled",
                                        hint="another rootless process removed it; pull again")
        for img in images:
            store.reserve_blob(pins, img.digest)
            if store.write_blob(img.manifest_bytes, img.digest):
                created_blobs.append(img.digest)
        if index_desc is not None:
            store.reserve_blob(pins, index_desc.digest)
            if store.write_blob(body, index_desc.digest):
                created_blobs.append(index_desc.digest)
        ids = commit(store, ref, images, index_desc, repo_digest=index_desc.digest if index_desc else digest)
    except BaseException:
        pins.release()
        # what this pull (or its child) created: absent when it was reserved; another pull that
        # created or needs it too holds its own pin, so discard leaves it alone
        blobs = created_blobs + [j.blob.digest for j in jobs.values() if j.need_blob]
        layers = [j.diff_id for j in jobs.values() if j.need_layer]
        if blobs or layers:
            try:
                store.discard(blobs, layers)
            except RootlessError:
                pass
        raise
    finally:
        pins.release()
        reporter.done()
    reporter.info(f"Digest: {index_desc.digest if index_desc else digest}")
    want = platform or host_platform()
    for img, iid in zip(images, ids):
        if want.matches(img.config.platform):
            return store.get(iid)
    return store.get(ids[0])


def commit(store, ref: Reference | None, images: list[PlatformImage], index_desc: Descriptor | None,
           repo_digest: str | None, *, tag: bool = True) -> list[str]:
    """Record the images (and their tag per platform) in images.json, under the store lock."""
    from rootless.image.store import platform_key

    sizes = {}
    for img in images:
        total = 0
        for d in img.config.diff_ids:
            if d not in sizes:
                try:
                    with open(store.layer_path(d) / "layer.json", "rb") as f:
                        sizes[d] = int(json.load(f).get("size", 0))
                except (OSError, ValueError):
                    sizes[d] = 0
            total += sizes[d]
        sizes[img.config_digest] = total

    def change(db):
        ids = []
        for img in images:
            iid = img.config_digest
            e = db["images"].get(iid)
            rd = f"{ref.name}@{repo_digest}" if (ref is not None and repo_digest) else None
            new = {
                "manifest": {"mediaType": img.media_type, "digest": img.digest, "size": len(img.manifest_bytes)},
                "platform": platform_key(img.config.platform),
                "layers": list(img.config.diff_ids),
                "blobs": [l.to_json() for l in img.manifest.layers],
                "size": sizes[iid],
                "added": e["added"] if e else time.time(),
                "repo_digests": list(e.get("repo_digests", [])) if e else [],
            }
            if rd and rd not in new["repo_digests"]:
                new["repo_digests"].append(rd)
            db["images"][iid] = new
            if tag and ref is not None and ref.tag and not ref.digest:
                db["tags"].setdefault(ref.tagged, {})[platform_key(img.config.platform)] = iid
            ids.append(iid)
        if tag and ref is not None and ref.tag and not ref.digest:
            if index_desc is not None:
                db.setdefault("indexes", {})[ref.tagged] = index_desc.to_json()
            else:
                db.setdefault("indexes", {}).pop(ref.tagged, None)
        return ids

    return store.update(change)

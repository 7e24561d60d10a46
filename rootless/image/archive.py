"""save / load: docker-archive (``docker save`` format) and oci-archive.

docker-archive: ``manifest.json`` ([{Config, RepoTags, Layers}]), the config
as ``<id>.json``, each layer uncompressed as ``<diff_id>/layer.tar``.
oci-archive: a tar of an OCI image layout (``oci-layout``, ``index.json``,
``blobs/sha256/...``), each image's manifest named by the annotation
``org.opencontainers.image.ref.name`` (the full reference).

Loading never uses a path from the archive on disk: every regular member is
copied to a numbered file of a private staging directory, and members are
then looked up by name (symlinks and hardlinks between members are resolved
in that table). Every blob is verified against its digest, every layer
against its diff_id; nothing is recorded before all of that succeeded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile

from rootless.errors import ImageError, RootlessError, UsageError
from rootless.image import oci
from rootless.image.compress import GZIP_MAGIC, ZSTD_MAGIC, check_digest, decompressed
from rootless.image.oci import ConfigFile, Descriptor, Manifest, digest_hex
from rootless.image.reference import Reference, parse
from rootless.report import Reporter

FORMATS = ("docker-archive", "oci-archive")
MTIME = 0


def _tarinfo(name: str, size: int, mode: int = 0o644, type_=tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = mode
    ti.type = type_
    ti.mtime = MTIME
    ti.uname = ti.gname = ""
    return ti


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


def _targets(store, names: list[str], platform, reporter) -> list[tuple[object, list[Reference]]]:
    """[(ImageRecord, [tag refs named on the command line])], one entry per image.

    A name counts as a tag only when it resolved as one: an image ID (prefix) or a
    digest reference names no tag (Docker writes no RepoTags for them)."""
    from rootless.errors import InvalidReference
    from rootless.image.reference import ID_RE

    out: dict[str, tuple[object, list[Reference]]] = {}
    for n in names:
        img = store.resolve(n, platform, reporter)
        refs = []
        if not ID_RE.match(n):
            try:
                r = parse(n)
            except InvalidReference:  # an ID prefix
                r = None
            if r is not None and not r.digest and img.id in store.db()["tags"].get(r.tagged, {}).values():
                refs.append(r)
        if img.id in out:
            out[img.id][1].extend(x for x in refs if x not in out[img.id][1])
        else:
            out[img.id] = (img, refs)
    return list(out.values())


def _layer_size(store, diff_id: str) -> int | None:
    try:
        with open(store.layer_path(diff_id) / "layer.json", "rb") as f:
            s = json.load(f).get("size")
        return int(s) if s is not None else None
    except (OSError, ValueError):
        return None


def save(store, names: list[str], out, fmt: str = "docker-archive", *, platform=None,
         reporter: Reporter | None = None) -> None:
    """Write one archive with every image in ``names`` to the binary stream ``out``."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown archive format {fmt!r}", hint="use docker-archive or oci-archive")
    reporter = reporter or Reporter()
    targets = _targets(store, names, platform, reporter)
    from rootless.errors import StoreError

    for img, _refs in targets:
        for d in [img.id] + [b.digest for b in img.blobs]:
            if not store.has_blob(d):
                raise StoreError(f"blob {d} of image {img.short_id} is missing from the store",
                                 hint="pull the image again (rootless pull IMAGE), then save it")
    tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
    try:
        if fmt == "docker-archive":
            _save_docker(store, targets, tf)
        else:
            _save_oci(store, targets, tf)
    finally:
        tf.close()


def _save_docker(store, targets, tf) -> None:
    manifest = []
    repos: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for img, refs in targets:
        layer_paths = []
        for diff, blob in zip(img.layers, img.blobs):
            h = digest_hex(diff)
            name = f"{h}/layer.tar"
            layer_paths.append(name)
            if h in written:
                continue
            written.add(h)
            _add_bytes(tf, f"{h}/VERSION", b"1.0")
            _add_bytes(tf, f"{h}/json", json.dumps({"id": h}).encode())
            size = _layer_size(store, diff)
            with open(store.blob_path(blob.digest), "rb") as f:
                if size is None:
                    # unknown uncompressed size: measure it first
                    r = decompressed(f)
                    size = 0
                    while True:
                        b = r.read(1 << 20)
                        if not b:
                            break
                        size += len(b)
                    f.seek(0)
                hasher = hashlib.sha256()

                class _Hashing:
                    def __init__(self, r):
                        self.r = r

                    def read(self, n=-1):
                        b = self.r.read(n)
                        hasher.update(b)
                        return b

                tf.addfile(_tarinfo(name, size), _Hashing(decompressed(f)))
                check_digest("sha256:" + hasher.hexdigest(), diff, f"layer of {img.short_id}")
        cfg_name = f"{img.id[7:]}.json"
        if cfg_name not in written:
            written.add(cfg_name)
            _add_bytes(tf, cfg_name, store.read_blob(img.id))
        tags = [r.familiar for r in refs]
        manifest.append({"Config": cfg_name, "RepoTags": tags or None, "Layers": layer_paths})
        for r in refs:
            from rootless.image.reference import familiar_name

            repos.setdefault(familiar_name(r.name), {})[r.tag or "latest"] = digest_hex(img.layers[-1]) if img.layers else ""
    _add_bytes(tf, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
    if repos:
        _add_bytes(tf, "repositories", json.dumps(repos, separators=(",", ":")).encode())


_OCI_LAYER = {oci.DOCKER_LAYER: oci.OCI_LAYER, oci.DOCKER_LAYER_GZIP: oci.OCI_LAYER_GZIP,
              oci.DOCKER_LAYER_FOREIGN: oci.OCI_LAYER_ND_GZIP}


def _save_oci(store, targets, tf) -> None:
    _add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    written: set[str] = set()

    def blob(digest: str) -> None:
        h = digest_hex(digest)
        if h in written:
            return
        written.add(h)
        p = store.blob_path(digest)
        with open(p, "rb") as f:
            tf.addfile(_tarinfo(f"blobs/sha256/{h}", os.fstat(f.fileno()).st_size), f)

    entries = []
    for img, refs in targets:
        blob(img.id)
        for b in img.blobs:
            blob(b.digest)
        if img.manifest.media_type == oci.OCI_MANIFEST:
            blob(img.manifest.digest)
            desc = Descriptor(img.manifest.media_type, img.manifest.digest, img.manifest.size, img.platform)
        else:
            # an OCI layout holds OCI manifests (readers skip others): convert, the image ID stays
            man = Manifest(oci.OCI_MANIFEST, Descriptor(oci.OCI_CONFIG, img.id, store.blob_path(img.id).stat().st_size),
                           tuple(Descriptor(_OCI_LAYER.get(b.media_type, b.media_type), b.digest, b.size)
                                 for b in img.blobs))
            data = json.dumps(man.to_json(), separators=(",", ":")).encode()
            d = oci.sha256_digest(data)
            if digest_hex(d) not in written:
                written.add(digest_hex(d))
                _add_bytes(tf, f"blobs/sha256/{digest_hex(d)}", data)
            desc = Descriptor(oci.OCI_MANIFEST, d, len(data), img.platform)
        if refs:
            for r in refs:
                d = desc.to_json()
                d["annotations"] = {"org.opencontainers.image.ref.name": str(r),
                                    "io.containerd.image.name": str(r)}
                entries.append(d)
        else:
            entries.append(desc.to_json())
    idx = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": entries}
    _add_bytes(tf, "index.json", json.dumps(idx, separators=(",", ":")).encode())


# load ------------------------------------------------------------------------

class _Members:
    """The archive's members as numbered private files; names resolved in a table."""

    def __init__(self, root: str):
        self.root = root
        self.files: dict[str, str] = {}
        self.links: dict[str, str] = {}

    @staticmethod
    def norm(name: str) -> str | None:
        n = posixpath.normpath("/" + name).lstrip("/")
        return n or None

    def add(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        name = self.norm(m.name)
        if name is None:
            return
        if m.isreg():
            path = os.path.join(self.root, str(len(self.files)))
            src = tf.extractfile(m)
            with open(path, "wb") as f:
                shutil.copyfileobj(src, f, 1 << 20)
            self.files[name] = path
        elif m.issym():
            self.links[name] = self.norm(posixpath.join(posixpath.dirname(name), m.linkname)) or ""
        elif m.islnk():
            self.links[name] = self.norm(m.linkname) or ""

    def path(self, name: str) -> str:
        n = self.norm(name) or ""
        for _ in range(16):
            if n in self.files:
                return self.files[n]
            if n not in self.links:
                break
            n = self.links[n]
        raise ImageError(f"the archive lacks {name!r}", hint="the archive is incomplete or corrupt")

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        p = self.path(name)
        if os.path.getsize(p) > limit:
            raise ImageError(f"{name!r} in the archive is too large")
        with open(p, "rb") as f:
            return f.read()

    def has(self, name: str) -> bool:
        try:
            self.path(name)
            return True
        except ImageError:
            return False


def _file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _diff_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        r = decompressed(f)
        while True:
            b = r.read(1 << 20)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


def _link_blob(store, src: str, digest: str) -> bool:
    """Make the verified file ``src`` the blob ``digest``; False when it was there already."""
    final = store.blob_path(digest)
    if final.exists():
        return False
    try:
        os.link(src, final)
        return True
    except FileExistsError:
        return False
    except OSError:
        tmp = str(final) + f".{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        return store.commit_file(tmp, final)


def load(store, inp, *, reporter: Reporter | None = None) -> list[str]:
    """Load every image of a docker-archive or oci-archive read from ``inp``; returns what was loaded."""
    from rootless.image.locks import Pins, Staging
    from rootless.image.pull import LayerJob, commit, extract_layers

    reporter = reporter or Reporter()
    store.ensure_dirs()
    staging = Staging(store.root / "tmp")
    pins = Pins()
    created: list[str] = []
    jobs: dict[str, LayerJob] = {}
    try:
        members = _Members(str(staging.path))
        try:
            tf = tarfile.open(fileobj=decompressed(inp), mode="r|")
            for m in tf:
                members.add(tf, m)
        except tarfile.TarError as e:
            raise ImageError(f"not a valid image archive: {e}",
                             hint="give a file written by rootless/docker/podman save") from None
        if members.has("manifest.json"):
            found = _docker_images(store, members)
        elif members.has("index.json"):
            found = _oci_images(store, members)
        else:
            raise ImageError("not an image archive: it has neither manifest.json (docker-archive) nor "
                             "index.json (oci-archive)")
        # verify and store blobs, then extract what is missing; every name is pinned before it
        # is looked at (GC keeps it), and what this load creates is discarded if it fails
        for img, _refs, files in found:
            for l, diff in zip(img.manifest.layers, img.config.diff_ids):
                if not store.reserve_blob(pins, l.digest) and _link_blob(store, files[l.digest], l.digest):
                    created.append(l.digest)
                if diff not in jobs and not store.reserve_layer(pins, diff):
                    jobs[diff] = LayerJob(l, diff, False, True)
            for data, digest in ((img.manifest_bytes, img.digest), (files["config_bytes"], img.config_digest)):
                store.reserve_blob(pins, digest)
                if store.write_blob(data, digest):
                    created.append(digest)
        if jobs:
            extract_layers(store, list(jobs.values()), reporter)
        out = []
        for img, refs, _files in found:
            if refs:
                for r in refs:
                    commit(store, r, [img], None, repo_digest=None)
                    out.append(f"Loaded image: {r.familiar}")
            else:
                commit(store, None, [img], None, repo_digest=None)
                out.append(f"Loaded image ID: {img.config_digest}")
        return out
    except BaseException:
        pins.release()
        # blobs other images share were there before (not in `created`); a concurrent pull/load
        # that needs one of these holds its own pin, so discard leaves it
        if created or jobs:
            try:
                store.discard(created, [j.diff_id for j in jobs.values()])
            except RootlessError:
                pass
        raise
    finally:
        pins.release()
        staging.close()
        shutil.rmtree(staging.path, ignore_errors=True)


def _media_for(path: str) -> str:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] == GZIP_MAGIC:
        return oci.DOCKER_LAYER_GZIP
    if magic == ZSTD_MAGIC:
        return oci.OCI_LAYER_ZSTD
    return oci.DOCKER_LAYER


def _docker_images(store, members: _Members):
    from rootless.image.pull import PlatformImage

    try:
        manifest = json.loads(members.read("manifest.json"))
        assert isinstance(manifest, list)
    except (ValueError, AssertionError):
        raise ImageError("docker-archive: manifest.json is malformed") from None
    found = []
    for entry in manifest:
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageError("docker-archive: manifest.json entry without Config")
        cfg_bytes = members.read(entry["Config"])
        iid = oci.sha256_digest(cfg_bytes)
        cf = ConfigFile.from_bytes(cfg_bytes)
        paths = entry.get("Layers") or []
        if len(paths) != len(cf.diff_ids):
            raise ImageError(f"docker-archive: image {iid[7:19]} lists {len(paths)} layers, its configuration "
                             f"{len(cf.diff_ids)}")
        layers = []
        files = {"config_bytes": cfg_bytes}
        for p, diff in zip(paths, cf.diff_ids):
            f = members.path(p)
            digest = _file_digest(f)
            mt = _media_for(f)
            if mt == oci.DOCKER_LAYER:
                check_digest(digest, diff, f"layer {p}")
            else:
                check_digest(_diff_digest(f), diff, f"layer {p} (uncompressed)")
            layers.append(Descriptor(mt, digest, os.path.getsize(f)))
            files[digest] = f
        man = Manifest(oci.DOCKER_MANIFEST, Descriptor(oci.DOCKER_CONFIG, iid, len(cfg_bytes)), tuple(layers))
        mbytes = json.dumps(man.to_json(), separators=(",", ":")).encode()
        refs = []
        for t in entry.get("RepoTags") or []:
            refs.append(parse(t))
        found.append((PlatformImage(mbytes, man, oci.sha256_digest(mbytes), oci.DOCKER_MANIFEST, cf, iid), refs, files))
    return found


def _oci_images(store, members: _Members):
    from rootless.image.pull import PlatformImage

    def blob(digest: str, limit: int = 64 << 20) -> bytes:
        data = members.read(f"blobs/sha256/{digest_hex(digest)}", limit)
        check_digest(oci.sha256_digest(data), digest, "blob")
        return data

    try:
        index = oci.parse_manifest(members.read("index.json"))
    except ImageError as e:
        raise ImageError(f"oci-archive: index.json: {e.message}") from None
    if not isinstance(index, oci.Index):
        raise ImageError("oci-archive: index.json is not an image index")
    found = []
    todo = [(d, d.annotation("io.containerd.image.name") or d.annotation("org.opencontainers.image.ref.name"))
            for d in index.manifests]
    seen: dict[str, int] = {}
    while todo:
        desc, name = todo.pop(0)
        data = blob(desc.digest)
        m = oci.parse_manifest(data, desc.media_type)
        if isinstance(m, oci.Index):
            todo.extend((d, name) for d in m.manifests
                        if members.has(f"blobs/sha256/{digest_hex(d.digest)}"))
            continue
        ref = None
        if name and (":" in name or "/" in name):
            try:
                ref = parse(name)
            except Exception:  # noqa: BLE001 - a plain tag name: the image stays untagged
                ref = None
        if desc.digest in seen:
            if ref is not None:
                found[seen[desc.digest]][1].append(ref)
            continue
        cfg_bytes = blob(m.config.digest)
        cf = ConfigFile.from_bytes(cfg_bytes)
        if len(cf.diff_ids) != len(m.layers):
            raise ImageError(f"oci-archive: image {m.config.digest[7:19]} has {len(m.layers)} layers, its "
                             f"configuration {len(cf.diff_ids)}")
        files = {"config_bytes": cfg_bytes}
        for l in m.layers:
            f = members.path(f"blobs/sha256/{digest_hex(l.digest)}")
            check_digest(_file_digest(f), l.digest, "layer blob")
            files[l.digest] = f
        seen[desc.digest] = len(found)
        found.append((PlatformImage(data, m, desc.digest, m.media_type, cf, m.config.digest),
                      [ref] if ref is not None else [], files))
    if not found:
        raise ImageError("oci-archive: no image in index.json")
    return found

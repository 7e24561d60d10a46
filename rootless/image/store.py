"""The local image store: blobs, extracted layers, and the image database.

Layout under ``Config.data_root`` (see docs/internals.md)::

    store.lock               flock, exclusive around every change of images.json
    images.json              {"version", "images": {id: ...}, "tags": {name:tag: {platform: id}},
                              "indexes": {name:tag: descriptor}}
    blobs/sha256/<hex>       verified blobs (written to blobs/partial/ first, renamed when verified)
    blobs/partial/<hex>      interrupted downloads (resumed with Range)
    layers/<hex>/diff        one extracted layer; layers/<hex>/layer.json written last
    locks/blob-<hex>, locks/layer-<hex>   flock: one process fetches / extracts a given blob / layer
    locks/pin-blob-<hex>, locks/pin-layer-<hex>   shared flock: a pull/load will use this blob / layer
    tmp/<pid>-<rand>/        staging; flock on the directory while in use; stale ones are removed

Concurrency: a process *pins* every blob and layer its image will use until
the image is in images.json: a shared flock on the blob file / layer.json,
or, for what it is about to create, on the name ``locks/pin-blob-<hex>`` /
``locks/pin-layer-<hex>`` taken BEFORE the content becomes visible. Garbage
collection removes only what nothing references and nobody pins (exclusive
non-blocking flocks on both). Flocks die with their process: a killed pull
leaves no pin behind.

The read path (``resolve``, ``layer_dirs``) is cheap: it reads images.json
once and the image's config blob, and imports nothing heavy.
"""

from __future__ import annotations

import json
import os
from rootless.record import Record
from pathlib import Path

from archsupport.platform import Platform, host_platform, native_platforms
from rootless.errors import ImageNotFound, InvalidReference, PlatformNotFound, StoreError
from rootless.image import reference as refmod
from rootless.image.oci import ConfigFile, Descriptor, HistoryEntry, ImageConfig, digest_hex

DB_VERSION = 1


class ImageRecord(Record):
    id: str                                 # "sha256:<config digest hex>"
    config: ImageConfig
    platform: Platform
    repo_tags: tuple[str, ...]              # familiar form: "busybox:latest"
    repo_digests: tuple[str, ...]           # "busybox@sha256:..."
    layers: tuple[str, ...]                 # diff_ids, lowest first
    created: str
    size: int                               # uncompressed bytes of all layers
    manifest: Descriptor                    # the platform manifest (its bytes are in blobs/)
    blobs: tuple[Descriptor, ...]           # layer blobs, as in the manifest
    history: tuple[HistoryEntry, ...] = ()
    author: str = ""
    added: float = 0.0
    variant: str = ""                       # the configuration's own "variant" ("v8"), for inspect

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def config_digest(self) -> str:
        return self.id


class Freed(Record):
    """What ``Store.discard``/``gc`` removed: the blob digests and diff_ids, and the bytes
    that freed (blob file sizes plus the layers' recorded uncompressed sizes)."""
    removed: tuple[str, ...] = ()
    bytes: int = 0


def _read_json(path: Path):
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        raise StoreError(f"{path} is corrupt (not JSON)",
                         hint=f"move it away and pull the images again: mv {path} {path}.bad") from None


def empty_db() -> dict:
    return {"version": DB_VERSION, "images": {}, "tags": {}, "indexes": {}}


def platform_key(p: Platform) -> str:
    return str(p)


def _parse_platform_key(s: str) -> Platform:
    parts = s.split("/")
    return Platform(parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")


class Store:
    """The image store of one data root. Cheap to create: no I/O until used."""

    def __init__(self, config):
        self.config = config
        self.root = Path(config.data_root)
        self._db_cache: dict | None = None

    # paths ---------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.root / "images.json"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.root / "blobs" / "partial" / digest_hex(digest)

    def layer_path(self, diff_id: str) -> Path:
        return self.root / "layers" / digest_hex(diff_id)

    def lock_path(self, kind: str, digest: str) -> Path:
        return self.root / "locks" / f"{kind}-{digest_hex(digest)}"

    def pin_path(self, kind: str, digest: str) -> Path:
        """The name pin of a blob (``kind`` "blob") or layer ("layer"): see ``locks.Pins.reserve``."""
        return self.lock_path(f"pin-{kind}", digest)

    def reserve_blob(self, pins, digest: str) -> bool:
        """Pin the blob's name (GC keeps it from now on, present or not); True when it is present."""
        pins.reserve(self.pin_path("blob", digest))
        return self.has_blob(digest)

    def reserve_layer(self, pins, diff_id: str) -> bool:
        """Pin the layer's name (GC keeps it from now on, present or not); True when it is complete."""
        pins.reserve(self.pin_path("layer", diff_id))
        return self.has_layer(diff_id)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def has_layer(self, diff_id: str) -> bool:
        return (self.layer_path(diff_id) / "layer.json").is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store",
                             hint="pull the image again (rootless pull IMAGE)") from None

    def ensure_dirs(self) -> None:
        from rootless.config import ensure_data_root

        ensure_data_root(self.root)
        for d in ("blobs/sha256", "blobs/partial", "layers", "locks", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)

    # the database (read path) --------------------------------------------
    def db(self, fresh: bool = False) -> dict:
        if self._db_cache is None or fresh:
            d = _read_json(self.db_path)
            if d is None:
                d = empty_db()
            elif not isinstance(d, dict) or d.get("version") != DB_VERSION:
                raise StoreError(f"{self.db_path}: unknown format (version {d.get('version') if isinstance(d, dict) else '?'})",
                                 hint="this store was written by another version of rootless")
            self._db_cache = d
        return self._db_cache

    def _record(self, db: dict, image_id: str) -> ImageRecord:
        e = db["images"].get(image_id)
        if e is None:
            raise ImageNotFound(f"No such image: {image_id}")
        try:
            cf = ConfigFile.from_bytes(self.read_blob(image_id))
        except StoreError:
            raise StoreError(f"image {image_id[7:19]} is damaged: its configuration blob is missing",
                             hint=f"remove it (rootless rmi -f {image_id[7:19]}) and pull it again") from None
        tags = []
        for t, plats in db["tags"].items():
            if image_id in plats.values():
                tags.append(refmod.familiar_name(t.rsplit(":", 1)[0]) + ":" + t.rsplit(":", 1)[1])
        digests = [refmod.familiar_name(x.split("@", 1)[0]) + "@" + x.split("@", 1)[1]
                   for x in e.get("repo_digests", [])]
        return ImageRecord(
            id=image_id, config=cf.config, platform=cf.platform, repo_tags=tuple(sorted(tags)),
            repo_digests=tuple(digests), layers=tuple(e["layers"]), created=cf.created,
            size=int(e.get("size", 0)), manifest=Descriptor.from_json(e["manifest"]),
            blobs=tuple(Descriptor.from_json(b) for b in e["blobs"]), history=cf.history,
            author=cf.author, added=float(e.get("added", 0)), variant=cf.variant)

    def get(self, image_id: str) -> ImageRecord:
        return self._record(self.db(), image_id)

    def images(self) -> list[ImageRecord]:
        db = self.db()
        return [self._record(db, i) for i in db["images"]]

    def _by_id_prefix(self, db: dict, s: str) -> str | None:
        h = s[7:] if s.startswith("sha256:") else s
        if len(h) < 4 or any(c not in "0123456789abcdef" for c in h):
            return None
        matches = [i for i in db["images"] if i[7:].startswith(h)]
        if len(matches) > 1:
            raise StoreError(f"image ID prefix {s!r} is ambiguous: {len(matches)} images match",
                             hint="give more characters of the ID")
        return matches[0] if matches else None

    def _pick_platform(self, plats: dict[str, str], name: str, platform: Platform | None, reporter) -> str:
        if platform is not None:
            for k, v in plats.items():
                if platform.matches(_parse_platform_key(k)):
                    return v
            raise ImageNotFound(f"{name}: no image for platform {platform} in the store (it has "
                                f"{', '.join(sorted(plats))})",
                                hint=f"pull it: rootless pull --platform {platform} {name}")
        host = host_platform()
        for want in native_platforms(host):
            for k, v in plats.items():
                if want.matches(_parse_platform_key(k)):
                    return v
        if len(plats) == 1:
            k, v = next(iter(plats.items()))
            if reporter is not None:
                reporter.warn(f"image {name} is for {k}, not for this host ({host}); using it")
            return v
        raise PlatformNotFound(f"{name}: the store has this image for {', '.join(sorted(plats))}, not for {host}",
                               hint="choose one with --platform")

    def resolve(self, ref: str, platform: Platform | None = None, reporter=None) -> ImageRecord:
        """Find a local image by reference, ID or ID prefix. Raises ImageNotFound."""
        db = self.db()
        m = refmod.ID_RE.match(ref)
        if m:
            iid = "sha256:" + m.group(1)
            if iid in db["images"]:
                return self._record(db, iid)
            raise ImageNotFound(f"No such image: {ref}")
        try:
            r = refmod.parse(ref)
        except InvalidReference:
            iid = self._by_id_prefix(db, ref)
            if iid:
                return self._record(db, iid)
            raise
        if r.digest:
            hits: dict[str, str] = {}
            for iid, e in db["images"].items():
                if e["manifest"]["digest"] == r.digest or f"{r.name}@{r.digest}" in e.get("repo_digests", []):
                    hits[e["platform"]] = iid
            if not hits:
                # the digest of an index: its platforms are under the tags that came from it
                for t, desc in db.get("indexes", {}).items():
                    if desc["digest"] == r.digest and t.rsplit(":", 1)[0] == r.name:
                        hits.update(db["tags"].get(t, {}))
            if not hits:
                raise ImageNotFound(f"No such image: {r.familiar}", hint=f"pull it: rootless pull {ref}")
            return self._record(db, self._pick_platform(hits, ref, platform, reporter))
        plats = db["tags"].get(r.tagged)
        if not plats:
            iid = self._by_id_prefix(db, ref)
            if iid:
                return self._record(db, iid)
            raise ImageNotFound(f"No such image: {r.familiar}", hint=f"pull it: rootless pull {ref}")
        return self._record(db, self._pick_platform(plats, ref, platform, reporter))

    def layer_dirs(self, img: ImageRecord) -> list[Path]:
        """The image's extracted layers (overlay lower dirs), LOWEST FIRST."""
        out = []
        for d in img.layers:
            p = self.layer_path(d)
            if not os.path.exists(p / "layer.json"):
                raise StoreError(f"layer {d[7:19]} of image {img.short_id} is missing from the store",
                                 hint=f"pull the image again (rootless pull {img.repo_tags[0] if img.repo_tags else img.short_id})")
            out.append(p / "diff")
        return out

    def ensure_image(self, ref: str, pull: str = "missing", platform: Platform | None = None,
                     reporter=None) -> ImageRecord:
        """Resolve ``ref``; pull it when missing (``pull``: missing | always | never | newer)."""
        if pull not in ("missing", "always", "never", "newer"):
            raise StoreError(f"unknown pull policy {pull!r}", hint="use always, missing, never or newer")
        if pull in ("missing", "never"):
            try:
                return self.resolve(ref, platform, reporter)
            except ImageNotFound:
                if pull == "never":
                    raise
            except PlatformNotFound:
                if pull == "never":
                    raise
        if refmod.is_image_id(ref):
            return self.resolve(ref, platform, reporter)
        from rootless.image.pull import pull as do_pull

        try:
            return do_pull(self, ref, platform=platform, reporter=reporter)
        except ImageNotFound:
            if pull == "newer":
                return self.resolve(ref, platform, reporter)
            raise

    # writing -------------------------------------------------------------
    def lock(self):
        """Exclusive flock around a change of images.json."""
        from rootless.image.locks import FileLock

        self.ensure_dirs()
        return FileLock(self.root / "store.lock")

    def write_db(self, db: dict) -> None:
        from rootless.image.locks import atomic_write

        atomic_write(self.db_path, json.dumps(db, indent=1, sort_keys=True).encode())
        self._db_cache = db

    def update(self, fn):
        """``fn(db)`` changes the database under the store lock; the result is written atomically."""
        with self.lock():
            db = self.db(fresh=True)
            result = fn(db)
            self.write_db(db)
            return result

    def list_containers_using(self) -> dict[str, list[str]]:
        """image id -> container ids/names using it (containers/*/config.json "image_id")."""
        out: dict[str, list[str]] = {}
        cdir = self.root / "containers"
        try:
            entries = list(os.scandir(cdir))
        except FileNotFoundError:
            return out
        for ent in entries:
            try:
                with open(os.path.join(ent.path, "config.json"), "rb") as f:
                    c = json.load(f)
            except (OSError, ValueError):
                continue
            iid = c.get("image_id") if isinstance(c, dict) else None
            if isinstance(iid, str):
                out.setdefault(iid, []).append(str(c.get("name") or ent.name))
        return out

    # blobs -----------------------------------------------------------------
    def write_blob(self, data: bytes, digest: str) -> bool:
        """Store verified bytes under their digest; False when it was already there."""
        from rootless.image.compress import check_digest
        from rootless.image.oci import sha256_digest

        check_digest(sha256_digest(data), digest, "blob")
        final = self.blob_path(digest)
        if final.is_file():
            return False
        self.ensure_dirs()
        import secrets

        tmp = self.root / "blobs" / "partial" / f".{digest_hex(digest)}.{os.getpid()}.{secrets.token_hex(4)}"
        with open(tmp, "wb") as f:
            f.write(data)
        return self.commit_file(tmp, final)

    @staticmethod
    def commit_file(tmp: Path, final: Path) -> bool:
        """Make ``tmp`` visible as ``final`` without ever replacing an existing file."""
        try:
            os.link(tmp, final)
            created = True
        except FileExistsError:
            created = False
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return created

    # garbage ---------------------------------------------------------------
    def referenced(self, db: dict, *, cache: bool = True) -> tuple[set[str], set[str]]:
        """(blob digests, diff_ids) that images.json (and, with ``cache``, the build cache) references."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for iid, e in db["images"].items():
            blobs.add(iid)
            blobs.add(e["manifest"]["digest"])
            blobs.update(b["digest"] for b in e["blobs"])
            layers.update(e["layers"])
            blobs.update(e.get("extra_blobs", []))
        for d in db.get("indexes", {}).values():
            blobs.add(d["digest"])
        if not cache:
            return blobs, layers
        # the layers the build cache keeps (rootless.build.cache, buildcache.json)
        from rootless.build.cache import references

        cb, cl = references(self.root)
        return blobs | cb, layers | cl

    def _unpin_name(self, kind: str, digest: str, fd: int) -> None:
        """Drop a name pin file GC holds exclusively (a waiting reserve() takes a new one)."""
        try:
            os.unlink(self.pin_path(kind, digest))
        except FileNotFoundError:
            pass
        os.close(fd)

    def discard(self, blobs=(), layers=(), *, in_userns: bool = False) -> Freed:
        """Remove the given blobs/layers unless referenced or pinned by someone.

        Pinned: a shared flock on its name (``Pins.reserve``: a pull, load or
        build that uses it or will make it visible); a flock on the file itself
        (a writer) counts too. Returns what went and the bytes that freed.
        """
        from rootless.diskusage import layer_size
        from rootless.image.locks import claim, try_exclusive

        removed: list[str] = []
        freed = 0
        doomed: list[Path] = []
        with self.lock():
            db = self.db(fresh=True)
            ref_blobs, ref_layers = self.referenced(db)
            for d in blobs:
                if d in ref_blobs:
                    continue
                name = claim(self.pin_path("blob", d))
                if name is None:
                    continue
                try:
                    p = self.blob_path(d)
                    fd = try_exclusive(p)
                    if fd is None:
                        continue
                    try:
                        size = os.fstat(fd).st_size
                        os.unlink(p)
                        removed.append(d)
                        freed += size
                    except FileNotFoundError:
                        pass
                    finally:
                        os.close(fd)
                finally:
                    self._unpin_name("blob", d, name)
            if layers:
                from rootless.image.locks import Staging

                st = None
                for d in layers:
                    if d in ref_layers:
                        continue
                    name = claim(self.pin_path("layer", d))
                    if name is None:
                        continue
                    try:
                        p = self.layer_path(d)
                        fd = try_exclusive(p / "layer.json")
                        if fd is None:
                            continue
                        try:
                            if st is None:
                                st = Staging(self.root / "tmp")
                            size = layer_size(self, d)
                            os.rename(p, st.path / digest_hex(d))
                            removed.append(d)
                            freed += size
                        except FileNotFoundError:
                            pass
                        finally:
                            os.close(fd)
                    finally:
                        self._unpin_name("layer", d, name)
                if st is not None:
                    doomed.append(st.path)
                    st.close()
        if doomed:
            self.remove_trees(doomed, in_userns=in_userns)
        return Freed(tuple(removed), freed)

    def remove_trees(self, paths: list[Path], *, in_userns: bool = False) -> None:
        """Remove directory trees owned by subordinate ids (inside the user namespace)."""
        import shutil

        def rm():
            for p in paths:
                shutil.rmtree(p, ignore_errors=True)

        if in_userns or not paths:
            rm()
            return
        from rootless.userns import run_in_userns

        run_in_userns(rm)

    def clean_stale(self, *, in_userns: bool = False) -> None:
        """Remove staging dirs of dead processes and stale partial temp files."""
        from rootless.image.locks import stale_staging

        stale = stale_staging(self.root / "tmp")
        if stale:
            self.remove_trees(stale, in_userns=in_userns)

    def gc(self, *, in_userns: bool = False) -> Freed:
        """Remove every blob and layer that no image references (and nobody pins)."""
        db = self.db(fresh=True)
        ref_blobs, ref_layers = self.referenced(db)
        blobs = []
        try:
            for e in os.scandir(self.root / "blobs" / "sha256"):
                d = "sha256:" + e.name
                if d not in ref_blobs and len(e.name) == 64:
                    blobs.append(d)
        except FileNotFoundError:
            pass
        layers = []
        try:
            for e in os.scandir(self.root / "layers"):
                d = "sha256:" + e.name
                if d not in ref_layers and len(e.name) == 64:
                    layers.append(d)
        except FileNotFoundError:
            pass
        freed = self.discard(blobs, layers, in_userns=in_userns) if (blobs or layers) else Freed()
        self.clean_stale(in_userns=in_userns)
        return freed

    # tags and removal --------------------------------------------------------
    def tag(self, source: str, target: str, platform: Platform | None = None, reporter=None) -> None:
        """Tag an image (every stored platform of a tag, or one image by ID)."""
        img = self.resolve(source, platform, reporter)
        dest = refmod.parse(target)
        if dest.digest:
            raise InvalidReference(f"cannot tag with a digest: {target}", hint="use NAME[:TAG]")
        src_plats: dict[str, str] = {}
        src_index = None
        if platform is None and not refmod.ID_RE.match(source):
            try:
                r = refmod.parse(source)
                if not r.digest:
                    src_plats = dict(self.db()["tags"].get(r.tagged, {}))
                    src_index = self.db().get("indexes", {}).get(r.tagged)
            except InvalidReference:
                pass
        if img.id not in src_plats.values():
            src_plats = {platform_key(img.platform): img.id}
            src_index = None

        def change(db):
            for iid in src_plats.values():
                if iid not in db["images"]:
                    raise ImageNotFound(f"No such image: {source}")
            db["tags"][dest.tagged] = dict(src_plats)
            if src_index:
                db.setdefault("indexes", {})[dest.tagged] = src_index
            else:
                db.setdefault("indexes", {}).pop(dest.tagged, None)

        self.update(change)

    def remove(self, names: list[str], *, force: bool = False, reporter=None) -> list[tuple[str, str]]:
        """``rmi``: untag / delete images; returns [("Untagged"|"Deleted", what)].

        As Docker: a tag removes that tag (and, when it was the repository's last tag on the
        image, the repository's digest references); ``NAME@DIGEST`` removes that digest
        reference; either deletes the image only when no reference is left. An ID deletes the
        image (``force`` when several tags name it). Refuses (ImageError) while a container
        uses an image that would be deleted. Layers and blobs nothing references any more
        are removed.
        """
        from rootless.errors import ImageError

        events: list[tuple[str, str]] = []
        users = self.list_containers_using()

        def repo_of(ref: str) -> str:
            return ref.rsplit("@", 1)[0] if "@" in ref else ref.rsplit(":", 1)[0]

        def familiar(ref: str) -> str:
            sep = "@" if "@" in ref else ":"
            name, rest = ref.rsplit(sep, 1)
            return f"{refmod.familiar_name(name)}{sep}{rest}"

        def check_unused(doomed, name: str) -> None:
            for i in doomed:
                if i in users:
                    raise ImageError(f"unable to remove {name}: image {i[7:19]} is in use by container "
                                     f"{', '.join(users[i])}",
                                     hint=f"remove the container first: rootless rm {users[i][0]}")

        def delete(db, i: str) -> None:
            for d in db["images"][i].get("repo_digests", []):
                events.append(("Untagged", familiar(d)))
            del db["images"][i]
            events.append(("Deleted", i))

        def change(db):
            for name in names:
                m = refmod.ID_RE.match(name)
                tag_key = digest_key = None
                iid = None
                if m:
                    iid = "sha256:" + m.group(1)
                else:
                    try:
                        r = refmod.parse(name)
                        if not r.digest and r.tagged in db["tags"]:
                            tag_key = r.tagged
                        elif r.digest and any(f"{r.name}@{r.digest}" in e.get("repo_digests", [])
                                              for e in db["images"].values()):
                            digest_key = f"{r.name}@{r.digest}"
                    except InvalidReference:
                        pass
                    if tag_key is None and digest_key is None:
                        iid = self._by_id_prefix(db, name)
                        if iid is None:
                            try:
                                iid = self.resolve(name).id
                            except (ImageNotFound, InvalidReference):
                                raise ImageNotFound(f"No such image: {name}") from None
                if iid is not None and iid not in db["images"]:
                    raise ImageNotFound(f"No such image: {name}")
                if tag_key is not None:
                    repo = repo_of(tag_key)
                    ids = sorted(i for i in set(db["tags"][tag_key].values()) if i in db["images"])
                    left = {}
                    for i in ids:
                        tags = [t for t, p in db["tags"].items() if t != tag_key and i in p.values()]
                        same_repo = any(repo_of(t) == repo for t in tags)
                        digests = [d for d in db["images"][i].get("repo_digests", [])
                                   if same_repo or repo_of(d) != repo]
                        left[i] = (tags, digests)
                    doomed = [i for i in ids if not left[i][0] and not left[i][1]]
                    check_unused(doomed, name)
                    del db["tags"][tag_key]
                    db.get("indexes", {}).pop(tag_key, None)
                    events.append(("Untagged", familiar(tag_key)))
                    for i in ids:
                        gone = [d for d in db["images"][i].get("repo_digests", []) if d not in left[i][1]]
                        db["images"][i]["repo_digests"] = left[i][1]
                        events.extend(("Untagged", familiar(d)) for d in gone)
                    for i in doomed:
                        delete(db, i)
                    continue
                if digest_key is not None:
                    holders = sorted(i for i, e in db["images"].items() if digest_key in e.get("repo_digests", []))
                    doomed = [i for i in holders if db["images"][i]["repo_digests"] == [digest_key]
                              and not any(i in p.values() for p in db["tags"].values())]
                    check_unused(doomed, name)
                    for i in holders:
                        db["images"][i]["repo_digests"].remove(digest_key)
                    events.append(("Untagged", familiar(digest_key)))
                    for i in doomed:
                        del db["images"][i]
                        events.append(("Deleted", i))
                    continue
                tags = [t for t, p in db["tags"].items() if iid in p.values()]
                if len(tags) > 1 and not force:
                    raise ImageError(f"unable to delete {iid[7:19]} (must be forced): image is referenced in "
                                     f"multiple repositories",
                                     hint=f"use rootless rmi -f {name}, or remove the tags one by one")
                if iid in users:
                    raise ImageError(f"unable to delete {iid[7:19]}: image is in use by container "
                                     f"{', '.join(users[iid])}",
                                     hint=f"remove the container first: rootless rm {users[iid][0]}")
                for t in tags:
                    p = db["tags"][t]
                    for k in [k for k, v in p.items() if v == iid]:
                        del p[k]
                    if not p:
                        del db["tags"][t]
                        db.get("indexes", {}).pop(t, None)
                    events.append(("Untagged", familiar(t)))
                delete(db, iid)

        self.update(change)
        if any(e[0] == "Deleted" for e in events):
            self.gc()
        return events

    def prune(self, *, all_images: bool = False) -> tuple[list[str], int]:
        """Remove dangling images (every unused one with ``all_images``); (ids, bytes freed).

        The bytes are what was removed from the disk: the blobs and layers no image uses any
        more (a layer another image shares stays and counts nothing), and abandoned downloads."""
        users = self.list_containers_using()
        removed: list[str] = []

        def change(db):
            tagged = {i for p in db["tags"].values() for i in p.values()}
            for iid in list(db["images"]):
                if iid in users:
                    continue
                if iid in tagged and not all_images:
                    continue
                del db["images"][iid]
                removed.append(iid)
            if all_images:
                for t in list(db["tags"]):
                    p = db["tags"][t]
                    for k in [k for k, v in p.items() if v in removed]:
                        del p[k]
                    if not p:
                        del db["tags"][t]
                        db.get("indexes", {}).pop(t, None)

        self.update(change)
        freed = self.gc().bytes
        freed += self.prune_partials()
        return removed, freed

    def prune_partials(self) -> int:
        """Remove interrupted downloads nobody is resuming now; returns the bytes freed."""
        import fcntl
        import time as _time

        freed = 0
        pdir = self.root / "blobs" / "partial"
        try:
            entries = list(os.scandir(pdir))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if e.name.startswith("."):
                # a temp file of write_blob: only when clearly abandoned
                if _time.time() - st.st_mtime > 3600:
                    try:
                        os.unlink(e.path)
                        freed += st.st_size
                    except FileNotFoundError:
                        pass
                continue
            try:
                lock = self.lock_path("blob", "sha256:" + e.name)
            except Exception:  # noqa: BLE001 - not one of ours
                continue
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # being downloaded right now
            try:
                os.unlink(e.path)
                freed += st.st_size
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return freed

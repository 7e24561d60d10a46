"""OCI and Docker image types as frozen records (rootless.record.Record), converted only at the edges.

``parse_manifest(bytes, media_type)`` -> Manifest | Index;
``ConfigFile.from_json`` / ``ImageConfig`` for the image configuration.
Pure: no I/O.
"""

from __future__ import annotations

import json
from rootless.record import Record

from archsupport.platform import Platform, normalize_arch
from rootless.errors import ImageError, UsageError

# media types -------------------------------------------------------------
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
LAYER_TYPES = (OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_ND, OCI_LAYER_ND_GZIP,
               DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))


def sha256_digest(data: bytes) -> str:
    import hashlib   # not on the start-up path of `run` (~2.5 ms)

    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r}", hint="only sha256 digests are supported")
    return hexpart


def to_json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def platform_from(os_: str, arch: str, variant: str = "") -> Platform:
    try:
        a, v = normalize_arch(arch or "amd64", variant or "")
    except UsageError:
        a, v = arch, variant or ""
    return Platform(os_ or "linux", a, v)


# descriptors, manifests, indexes -----------------------------------------

class Descriptor(Record):
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, d: dict) -> "Descriptor":
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
            raise ImageError("malformed descriptor in manifest: no digest")
        digest_hex(d["digest"])
        size = d.get("size", -1)
        if not isinstance(size, int) or isinstance(size, bool):
            raise ImageError(f"malformed descriptor {d['digest']}: size is not a number")
        plat = None
        p = d.get("platform")
        if isinstance(p, dict):
            plat = platform_from(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
        ann = d.get("annotations") or {}
        return cls(str(d.get("mediaType", "")), d["digest"], size, plat,
                   tuple(sorted((str(k), str(v)) for k, v in ann.items())) if isinstance(ann, dict) else (),
                   tuple(str(u) for u in d.get("urls") or ()))

    def to_json(self) -> dict:
        d: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform:
            d["platform"] = self.platform.to_json()
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.urls:
            d["urls"] = list(self.urls)
        return d

    def annotation(self, key: str) -> str | None:
        for k, v in self.annotations:
            if k == key:
                return v
        return None


class Manifest(Record):
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        d = {"schemaVersion": 2, "mediaType": self.media_type, "config": self.config.to_json(),
             "layers": [l.to_json() for l in self.layers]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


class Index(Record):
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict:
        d = {"schemaVersion": 2, "mediaType": self.media_type, "manifests": [m.to_json() for m in self.manifests]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def platforms(self) -> list[Platform]:
        return [m.platform for m in self.manifests if m.platform is not None and m.platform.architecture != "unknown"]

    def select(self, want: Platform) -> Descriptor | None:
        """The first manifest whose platform satisfies ``want`` (exact variant preferred)."""
        cands = [m for m in self.manifests if m.platform is not None and m.media_type not in INDEX_TYPES
                 and want.matches(m.platform)]
        for m in cands:
            if m.platform == want:
                return m
        return cands[0] if cands else None


def parse_manifest(data: bytes, media_type: str = "") -> Manifest | Index:
    """Parse a manifest or index (the media type from the body wins when present)."""
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ImageError("malformed manifest: not JSON") from None
    if not isinstance(d, dict):
        raise ImageError("malformed manifest: not a JSON object")
    mt = d.get("mediaType") or media_type or ""
    if mt in (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED) or d.get("schemaVersion") == 1:
        raise ImageError("this image uses the deprecated Docker schema 1 manifest, which is not supported",
                         hint="rebuild and push the image with a current Docker or Podman")
    if "manifests" in d or mt in INDEX_TYPES:
        if not isinstance(d.get("manifests"), list):
            raise ImageError("malformed image index: no manifests list")
        return Index(mt or OCI_INDEX, tuple(Descriptor.from_json(m) for m in d["manifests"]),
                     _ann(d))
    if "config" in d or mt in MANIFEST_TYPES:
        if not isinstance(d.get("layers", []), list):
            raise ImageError("malformed manifest: layers is not a list")
        return Manifest(mt or OCI_MANIFEST, Descriptor.from_json(d.get("config")),
                        tuple(Descriptor.from_json(l) for l in d.get("layers", [])), _ann(d))
    raise ImageError(f"unsupported manifest type {mt or '(none)'}")


def _ann(d: dict) -> tuple[tuple[str, str], ...]:
    a = d.get("annotations") or {}
    return tuple(sorted((str(k), str(v)) for k, v in a.items())) if isinstance(a, dict) else ()


# image configuration -----------------------------------------------------

def _strs(v) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list):
        return tuple(str(x) for x in v)
    return None


def _keys(v) -> tuple[str, ...]:
    if isinstance(v, dict):
        return tuple(str(k) for k in v)
    if isinstance(v, list):
        return tuple(str(k) for k in v)
    return ()


class Healthcheck(Record):
    test: tuple[str, ...] = ()
    interval: int = 0          # nanoseconds, as Docker stores them
    timeout: int = 0
    start_period: int = 0
    retries: int = 0

    def to_json(self) -> dict:
        d: dict = {"Test": list(self.test)}
        for k, v in (("Interval", self.interval), ("Timeout", self.timeout), ("StartPeriod", self.start_period),
                     ("Retries", self.retries)):
            if v:
                d[k] = v
        return d


class ImageConfig(Record):
    """The runtime part of an image configuration (``config`` in the JSON).

    ``entrypoint``/``cmd`` are None when the image does not set them (not
    the same as an empty list: an empty Entrypoint resets the base image's).
    """

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: dict = {}
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    shell: tuple[str, ...] | None = None
    on_build: tuple[str, ...] = ()
    args_escaped: bool = False

    @classmethod
    def from_json(cls, c: dict | None) -> "ImageConfig":
        if not isinstance(c, dict):
            return cls()
        hc = c.get("Healthcheck")
        health = None
        if isinstance(hc, dict):
            health = Healthcheck(_strs(hc.get("Test")) or (), int(hc.get("Interval") or 0),
                                 int(hc.get("Timeout") or 0), int(hc.get("StartPeriod") or 0),
                                 int(hc.get("Retries") or 0))
        labels = c.get("Labels") or {}
        return cls(
            env=_strs(c.get("Env")) or (),
            entrypoint=_strs(c.get("Entrypoint")),
            cmd=_strs(c.get("Cmd")),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            exposed_ports=_keys(c.get("ExposedPorts")),
            volumes=_keys(c.get("Volumes")),
            stop_signal=str(c.get("StopSignal") or ""),
            healthcheck=health,
            shell=_strs(c.get("Shell")),
            on_build=_strs(c.get("OnBuild")) or (),
            args_escaped=bool(c.get("ArgsEscaped")),
        )

    def to_json(self) -> dict:
        """Docker's keys (as ``docker inspect`` shows them under Config)."""
        d: dict = {
            "User": self.user,
            "ExposedPorts": {p: {} for p in self.exposed_ports} or None,
            "Env": list(self.env),
            "Entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "Cmd": list(self.cmd) if self.cmd is not None else None,
            "Volumes": {v: {} for v in self.volumes} or None,
            "WorkingDir": self.working_dir,
            "Labels": dict(self.labels) or None,
            "StopSignal": self.stop_signal or None,
        }
        if self.healthcheck:
            d["Healthcheck"] = self.healthcheck.to_json()
        if self.shell is not None:
            d["Shell"] = list(self.shell)
        if self.on_build:
            d["OnBuild"] = list(self.on_build)
        if self.args_escaped:
            d["ArgsEscaped"] = True
        return {k: v for k, v in d.items() if v is not None or k in ("Entrypoint", "Cmd")}

    def env_dict(self) -> dict[str, str]:
        out = {}
        for e in self.env:
            k, _, v = e.partition("=")
            out[k] = v
        return out


class HistoryEntry(Record):
    created: str = ""
    created_by: str = ""
    comment: str = ""
    author: str = ""
    empty_layer: bool = False

    def to_json(self) -> dict:
        d: dict = {}
        if self.created:
            d["created"] = self.created
        if self.created_by:
            d["created_by"] = self.created_by
        if self.author:
            d["author"] = self.author
        if self.comment:
            d["comment"] = self.comment
        if self.empty_layer:
            d["empty_layer"] = True
        return d


class ConfigFile(Record):
    """The whole image configuration blob (its digest is the image ID)."""

    platform: Platform
    config: ImageConfig
    diff_ids: tuple[str, ...]
    created: str = ""
    author: str = ""
    history: tuple[HistoryEntry, ...] = ()
    os_version: str = ""
    variant: str = ""               # as the configuration says it ("v8"); platform.variant is normalised

    @classmethod
    def from_bytes(cls, data: bytes) -> "ConfigFile":
        try:
            d = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise ImageError("malformed image configuration: not JSON") from None
        if not isinstance(d, dict):
            raise ImageError("malformed image configuration: not a JSON object")
        rootfs = d.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list):
            raise ImageError("malformed image configuration: no rootfs.diff_ids")
        for x in diff_ids:
            if not isinstance(x, str):
                raise ImageError("malformed image configuration: bad diff_id")
            digest_hex(x)
        hist = []
        for h in d.get("history") or []:
            if isinstance(h, dict):
                hist.append(HistoryEntry(str(h.get("created") or ""), str(h.get("created_by") or ""),
                                         str(h.get("comment") or ""), str(h.get("author") or ""),
                                         bool(h.get("empty_layer"))))
        return cls(platform=platform_from(str(d.get("os") or "linux"), str(d.get("architecture") or "amd64"),
                                          str(d.get("variant") or "")),
                   config=ImageConfig.from_json(d.get("config")),
                   diff_ids=tuple(diff_ids), created=str(d.get("created") or ""), author=str(d.get("author") or ""),
                   history=tuple(hist), os_version=str(d.get("os.version") or ""),
                   variant=str(d.get("variant") or ""))


def is_gzip_type(mt: str) -> bool:
    return mt.endswith("gzip")


def is_zstd_type(mt: str) -> bool:
    return mt.endswith("zstd")

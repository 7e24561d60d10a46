"""How images are shown: Docker-compatible inspect JSON, listings, history."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from rootless.image.store import ImageRecord


def human_size(n: float) -> str:
    """Docker's units (SI, 3 significant digits): 4.26MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            if unit == "B":
                return f"{int(n)}B"
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


def parse_time(s: str) -> float | None:
    if not s:
        return None
    t = s.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    # Python 3.11 parses at most 6 fractional digits
    if "." in t:
        head, _, rest = t.partition(".")
        frac = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            frac += rest[i]
            i += 1
        t = head + "." + (frac[:6] or "0") + rest[i:]
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def since(ts: float | None, now: float | None = None) -> str:
    """'2 weeks ago' as Docker says it."""
    if ts is None:
        return "N/A"
    d = (now or time.time()) - ts
    if d < 1:
        return "Less than a second ago"
    units = ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"), (86400, "day"), (3600, "hour"),
             (60, "minute"), (1, "second"))
    for sec, name in units:
        if d >= sec:
            n = int(d // sec)
            if name == "hour" and n == 1:
                return "About an hour ago"
            if name == "minute" and n == 1:
                return "About a minute ago"
            return f"{n} {name}{'s' if n != 1 else ''} ago"
    return "Less than a second ago"


def inspect_json(store, img: ImageRecord) -> dict:
    """``docker image inspect`` keys."""
    cfg = img.config.to_json()
    full_cfg = {"Hostname": "", "Domainname": "", "User": cfg.get("User", ""), "AttachStdin": False,
                "AttachStdout": False, "AttachStderr": False, "Tty": False, "OpenStdin": False,
                "StdinOnce": False, "Env": cfg.get("Env", []), "Cmd": cfg.get("Cmd"), "Image": "",
                "Volumes": cfg.get("Volumes"), "WorkingDir": cfg.get("WorkingDir", ""),
                "Entrypoint": cfg.get("Entrypoint"), "OnBuild": cfg.get("OnBuild"), "Labels": cfg.get("Labels"),
                "ExposedPorts": cfg.get("ExposedPorts"), "StopSignal": cfg.get("StopSignal")}
    for k in ("Healthcheck", "Shell", "ArgsEscaped"):
        if k in cfg:
            full_cfg[k] = cfg[k]
    full_cfg = {k: v for k, v in full_cfg.items() if v is not None or k in ("Cmd", "Entrypoint", "OnBuild", "Labels")}
    try:
        lowers = [str(p) for p in store.layer_dirs(img)]
    except Exception:  # noqa: BLE001 - inspect shows what it can
        lowers = []
    out = {
        "Id": img.id,
        "RepoTags": list(img.repo_tags),
        "RepoDigests": list(img.repo_digests),
        "Parent": "",
        "Comment": "",
        "Created": img.created,
        "DockerVersion": "",
        "Author": img.author,
        "Config": full_cfg,
        "Architecture": img.platform.architecture,
        "Variant": img.variant,     # the configuration's own; Docker omits it when empty (below)
        "Os": img.platform.os,
        "Size": img.size,
        "VirtualSize": img.size,
        "GraphDriver": {"Name": "overlay", "Data": {"LowerDir": ":".join(reversed(lowers))}},
        "RootFS": {"Type": "layers", "Layers": list(img.layers)},
        "Metadata": {"LastTagTime": datetime.fromtimestamp(img.added, timezone.utc).isoformat()
                     if img.added else ""},
        "ManifestDigest": img.manifest.digest,
        "ManifestMediaType": img.manifest.media_type,
    }
    if not img.variant:
        del out["Variant"]
    return out


def _layer_sizes(store, img: ImageRecord) -> list[int]:
    import json

    out = []
    for d, b in zip(img.layers, img.blobs):
        size = b.size
        if store is not None:
            try:
                with open(store.layer_path(d) / "layer.json", "rb") as f:
                    size = int(json.load(f).get("size", size))
            except (OSError, ValueError):
                pass
        out.append(size)
    return out


def history_rows(img: ImageRecord, store=None) -> list[dict]:
    """``docker history``: newest first; IMAGE is the image ID on the top row, <missing> below.

    Sizes are the layers' uncompressed sizes (as Docker shows them) when the store is given."""
    rows = []
    layer_sizes = _layer_sizes(store, img)
    li = 0
    for h in img.history:
        size = 0
        if not h.empty_layer and li < len(layer_sizes):
            size = layer_sizes[li]
            li += 1
        rows.append({"Created": h.created, "CreatedBy": h.created_by, "Comment": h.comment, "Size": size})
    if not rows:
        rows = [{"Created": img.created, "CreatedBy": "", "Comment": "", "Size": n} for n in layer_sizes]
    rows.reverse()
    for i, r in enumerate(rows):
        r["ID"] = img.id if i == 0 else "<missing>"
    return rows

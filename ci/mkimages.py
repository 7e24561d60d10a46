#!/usr/bin/env python3
"""Build the test images as OCI image layouts, from Debian packages only.

Independent of the code under test: the tar and JSON here are written with
the standard library (tarfile, gzip, hashlib, json) following the OCI image
spec. Run by ci/test-images; see its header for the images produced.

    mkimages.py OUTDIR --busybox-amd64 DEB --busybox-arm64 DEB
                [--rootfs-amd64 TAR --rootfs-arm64 TAR] [--bench]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 1700000000  # fixed mtimes: reproducible images


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs: list[dict] = []

    def blob(self, data: bytes, media_type: str, **extra) -> dict:
        d = hashlib.sha256(data).hexdigest()
        p = os.path.join(self.path, "blobs", "sha256", d)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{d}", "size": len(data)}
        desc.update(extra)
        return desc

    def json_blob(self, obj, media_type: str, **extra) -> dict:
        return self.blob(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode(), media_type, **extra)

    def tag(self, desc: dict, ref: str) -> None:
        d = dict(desc)
        d["annotations"] = {"org.opencontainers.image.ref.name": ref}
        self.refs.append(d)

    def finish(self) -> None:
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.refs}, f, indent=1)


class LayerTar:
    """A layer: a tar stream with explicit owners, modes and whiteouts."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, type_, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = type_
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = EPOCH
        return ti

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name: str, target: str) -> None:
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)

    def whiteout(self, path: str) -> None:
        d, b = os.path.split(path)
        self.file(os.path.join(d, ".wh." + b), b"", 0o644)

    def opaque(self, dirpath: str) -> None:
        self.file(os.path.join(dirpath, ".wh..wh..opq"), b"", 0o644)

    def add_tree(self, tf: tarfile.TarFile) -> None:
        """Copy every member of an existing tar (e.g. an mmdebstrap rootfs)."""
        for m in tf:
            name = m.name.lstrip("./") if m.name not in (".", "./") else ""
            if not name:
                continue
            m.name = name
            if m.isreg():
                self.tar.addfile(m, tf.extractfile(m))
            elif m.ischr() or m.isblk() or m.isfifo():
                continue  # device nodes: the runtime provides /dev
            else:
                self.tar.addfile(m)

    def finish(self) -> tuple[bytes, str]:
        """(gzip blob, diff_id)"""
        self.tar.close()
        raw = self.buf.getvalue()
        diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(raw)
        return out.getvalue(), diff_id


def image(layout: Layout, arch: str, layers: list[LayerTar], config: dict, variant: str = "",
          history: list[str] | None = None) -> dict:
    """Write layers, config and manifest; return the manifest descriptor (with platform)."""
    descs, diff_ids = [], []
    for lt in layers:
        blob, diff_id = lt.finish()
        descs.append(layout.blob(blob, MT_OCI_LAYER_GZ))
        diff_ids.append(diff_id)
    cfg = {
        "architecture": arch,
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": h} for h in
                    (history or [f"ci/mkimages.py layer {i}" for i in range(len(layers))])],
    }
    if variant:
        cfg["variant"] = variant
    cdesc = layout.json_blob(cfg, MT_OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cdesc, "layers": descs}
    plat = {"architecture": arch, "os": "linux"}
    if variant:
        plat["variant"] = variant
    return layout.json_blob(manifest, MT_OCI_MANIFEST, platform=plat)


def index(layout: Layout, manifests: list[dict]) -> dict:
    return layout.json_blob({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}, MT_OCI_INDEX)


# --------------------------------------------------------------------------
# busybox from busybox-static .debs

def busybox_binary(deb: str, workdir: str) -> bytes:
    d = tempfile.mkdtemp(dir=workdir)
    subprocess.run(["dpkg-deb", "-x", deb, d], check=True)
    with open(os.path.join(d, "bin", "busybox"), "rb") as f:
        return f.read()


def applets(amd64_busybox: bytes, workdir: str) -> list[str]:
    """Applet list from the host busybox (same version for every architecture)."""
    p = os.path.join(workdir, "busybox-host")
    with open(p, "wb") as f:
        f.write(amd64_busybox)
    os.chmod(p, 0o755)
    out = subprocess.run([p, "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted(set(x.strip() for x in out.split() if x.strip()))


PASSWD = (b"root:x:0:0:root:/root:/bin/sh\n"
          b"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          b"tester:x:1000:1000:Test User:/home/tester:/bin/sh\n"
          b"www:x:33:33:www:/var/www:/bin/false\n"
          b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = (b"root:x:0:\ndaemon:x:1:\nwww-data:x:33:\ntester:x:1000:\nstaff:x:50:tester\n"
         b"nogroup:x:65534:\n")


def busybox_layers(bb: bytes, names: list[str]) -> list[LayerTar]:
    base = LayerTar()
    for d, mode in (("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                    ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755), ("var/www", 0o755),
                    ("home", 0o755), ("proc", 0o555), ("sys", 0o555), ("dev", 0o755)):
        base.dir(d, mode)
    base.file("bin/busybox", bb, 0o755)
    for full in names:
        if full in ("bin/busybox",):
            continue
        # relative symlink to /bin/busybox from the applet's directory
        depth = full.count("/")
        base.symlink(full, "../" * depth + "bin/busybox" if depth > 1 else "busybox" if full.startswith("bin/") else "../bin/busybox")
    etc = LayerTar()
    etc.dir("etc", 0o755)
    etc.file("etc/passwd", PASSWD)
    etc.file("etc/group", GROUP)
    etc.dir("home/tester", 0o755, 1000, 1000)
    etc.file("home/tester/owned-by-1000", b"mine\n", 0o640, 1000, 1000)
    etc.file("etc/removed-me", b"this file is deleted by a later layer of 'layered'\n")
    etc.dir("opq", 0o755)
    etc.file("opq/a", b"a\n")
    etc.file("opq/b", b"b\n")
    return [base, etc]


BUSYBOX_CONFIG = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                  "Cmd": ["sh"], "Labels": {"org.opencontainers.image.title": "busybox (test image)"}}


def build_busybox(out: str, bb_amd64: bytes, bb_arm64: bytes, names: list[str]) -> dict:
    lay = Layout(os.path.join(out, "busybox"))
    m_amd = image(lay, "amd64", busybox_layers(bb_amd64, names), dict(BUSYBOX_CONFIG))
    m_arm = image(lay, "arm64", busybox_layers(bb_arm64, names), dict(BUSYBOX_CONFIG), variant="v8")
    idx = index(lay, [m_amd, m_arm])
    lay.tag(idx, "latest")
    lay.tag(m_amd, "amd64")
    lay.tag(m_arm, "arm64")
    lay.finish()
    return {"busybox": {"layout": lay.path, "tags": ["latest", "amd64", "arm64"], "index": idx["digest"],
                        "manifests": {"linux/amd64": m_amd["digest"], "linux/arm64": m_arm["digest"]}}}


def build_layered(out: str, bb: bytes, names: list[str], arch: str) -> dict:
    """Three layers exercising whiteouts, opaque dirs, owners, modes and links."""
    lay = Layout(os.path.join(out, "layered"))
    layers = busybox_layers(bb, names)
    top = LayerTar()
    top.whiteout("etc/removed-me")
    top.dir("opq", 0o755)
    top.opaque("opq")
    top.file("opq/c", b"c\n")
    top.dir("data", 0o755)
    top.file("data/owned", b"owned by 1000:50\n", 0o600, 1000, 50)
    top.hardlink("data/hard", "data/owned")
    top.symlink("data/link", "owned")
    top.file("data/suid", b"#!/bin/sh\necho suid\n", 0o4755)
    top.file("data/sgid-dir-file", b"x\n", 0o2644)
    top.dir("data/sticky", 0o1777)
    top.file("usr/bin/hello", b"#!/bin/sh\necho hello from layered \"$@\"\n", 0o755)
    layers.append(top)
    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi there"],
           "Entrypoint": ["/usr/bin/hello"], "Cmd": ["world"], "WorkingDir": "/work/created",
           "StopSignal": "SIGUSR1", "Volumes": {"/vol": {}}, "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
           "Labels": {"test.role": "layered", "org.opencontainers.image.title": "layered (test image)"}}
    m = image(lay, arch, layers, cfg, history=["busybox", "passwd and friends", "whiteouts, opaque, owners"])
    lay.tag(m, "latest")
    lay.finish()
    return {"layered": {"layout": lay.path, "tags": ["latest"], "manifests": {f"linux/{arch}": m["digest"]}}}


def build_debian(out: str, rootfs: dict[str, str]) -> dict:
    lay = Layout(os.path.join(out, "debian"))
    ms = {}
    descs = []
    for arch, tarpath in sorted(rootfs.items()):
        lt = LayerTar()
        with tarfile.open(tarpath) as tf:
            lt.add_tree(tf)
        cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
               "Cmd": ["bash"]}
        m = image(lay, arch, [lt], cfg, variant="v8" if arch == "arm64" else "",
                  history=[f"mmdebstrap bookworm {arch}"])
        ms[f"linux/{arch}"] = m["digest"]
        descs.append(m)
        lay.tag(m, arch)
    idx = index(lay, descs)
    lay.tag(idx, "bookworm")
    lay.finish()
    return {"debian": {"layout": lay.path, "tags": ["bookworm"] + sorted(rootfs), "index": idx["digest"],
                       "manifests": ms}}


def build_bench(out: str, bb: bytes, names: list[str], arch: str) -> dict:
    """~70 MB in 6 layers of incompressible data on top of busybox (bench/pull)."""
    lay = Layout(os.path.join(out, "bench"))
    layers = busybox_layers(bb, names)
    rnd = __import__("random").Random(42)
    for i in range(4):
        lt = LayerTar()
        lt.dir(f"data{i}")
        for j in range(4):
            lt.file(f"data{i}/blob{j}", rnd.randbytes(4 << 20))
        layers.append(lt)
    m = image(lay, arch, layers, dict(BUSYBOX_CONFIG))
    lay.tag(m, "latest")
    lay.finish()
    return {"bench": {"layout": lay.path, "tags": ["latest"], "manifests": {f"linux/{arch}": m["digest"]}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--busybox-amd64", required=True)
    ap.add_argument("--busybox-arm64", required=True)
    ap.add_argument("--rootfs-amd64")
    ap.add_argument("--rootfs-arm64")
    ap.add_argument("--bench", action="store_true")
    a = ap.parse_args()
    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
    tmp = tempfile.mkdtemp()
    try:
        new = a.out + ".new"
        shutil.rmtree(new, ignore_errors=True)
        os.makedirs(new)
        bb = {"amd64": busybox_binary(a.busybox_amd64, tmp), "arm64": busybox_binary(a.busybox_arm64, tmp)}
        names = applets(bb[host], tmp)
        summary = {}
        summary.update(build_busybox(new, bb["amd64"], bb["arm64"], names))
        summary.update(build_layered(new, bb[host], names, host))
        rootfs = {k: v for k, v in (("amd64", a.rootfs_amd64), ("arm64", a.rootfs_arm64)) if v}
        if rootfs:
            summary.update(build_debian(new, rootfs))
        if a.bench:
            summary.update(build_bench(new, bb[host], names, host))
        for info in summary.values():
            info["layout"] = os.path.join(a.out, os.path.basename(info["layout"]))
        with open(os.path.join(new, "images.json"), "w") as f:
            json.dump({"host_arch": host, "images": summary}, f, indent=2, sort_keys=True)
        # replace atomically-ish: a half-built set never looks complete
        old = a.out + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(a.out):
            os.rename(a.out, old)
        os.rename(new, a.out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OCI types, decompression and the read path of the Store (a hand-made store on disk)."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archsupport.platform import Platform, host_platform
from rootless.config import load_config
from rootless.errors import DigestMismatch, ImageError, ImageNotFound, LayerError, PlatformNotFound, StoreError
from rootless.image import oci
from rootless.image.compress import HashReader, check_digest, decompressed
from rootless.image.store import Store

ROOT = Path(__file__).resolve().parents[2]


def test_parse_index_and_select():
    idx = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 10,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 10,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "3" * 64, "size": 10,
         "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}]}
    m = oci.parse_manifest(json.dumps(idx).encode())
    assert isinstance(m, oci.Index)
    assert m.select(Platform("linux", "arm64")).digest == "sha256:" + "2" * 64
    assert m.select(Platform("linux", "amd64")).digest == "sha256:" + "1" * 64
    assert m.select(Platform("linux", "arm", "v7")).digest == "sha256:" + "3" * 64
    assert m.select(Platform("linux", "s390x")) is None
    assert [str(p) for p in m.platforms()] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def test_docker_manifest_and_schema1():
    man = {"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
           "config": {"mediaType": oci.DOCKER_CONFIG, "digest": "sha256:" + "a" * 64, "size": 5},
           "layers": [{"mediaType": oci.DOCKER_LAYER_GZIP, "digest": "sha256:" + "b" * 64, "size": 7}]}
    m = oci.parse_manifest(json.dumps(man).encode())
    assert isinstance(m, oci.Manifest) and m.layers[0].size == 7
    assert json.loads(json.dumps(m.to_json())) == man
    with pytest.raises(ImageError, match="schema 1"):
        oci.parse_manifest(b'{"schemaVersion": 1, "fsLayers": []}')
    with pytest.raises(ImageError):
        oci.parse_manifest(b"not json")
    with pytest.raises(ImageError):
        oci.parse_manifest(json.dumps({"manifests": [{"digest": "sha256:../../etc"}]}).encode())


def test_config_file():
    cfg = {"architecture": "arm64", "variant": "v8", "os": "linux", "created": "2024-01-02T03:04:05.123456789Z",
           "config": {"Env": ["A=1", "B=x=y"], "Entrypoint": ["/e"], "Cmd": None, "WorkingDir": "/w", "User": "1000",
                      "Labels": {"l": "v"}, "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/v": {}},
                      "StopSignal": "SIGTERM", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}},
           "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "c" * 64]},
           "history": [{"created_by": "x"}, {"created_by": "y", "empty_layer": True}]}
    cf = oci.ConfigFile.from_bytes(json.dumps(cfg).encode())
    assert cf.platform == Platform("linux", "arm64", "")
    assert cf.variant == "v8"  # as written, for inspect
    c = cf.config
    assert c.env == ("A=1", "B=x=y") and c.env_dict() == {"A": "1", "B": "x=y"}
    assert c.entrypoint == ("/e",) and c.cmd is None
    assert c.exposed_ports == ("80/tcp",) and c.volumes == ("/v",)
    assert c.healthcheck.test == ("CMD", "true")
    j = c.to_json()
    assert j["Entrypoint"] == ["/e"] and j["Cmd"] is None and j["Labels"] == {"l": "v"}
    assert len(cf.history) == 2 and cf.history[1].empty_layer
    with pytest.raises(ImageError, match="diff_ids"):
        oci.ConfigFile.from_bytes(b'{"architecture": "amd64"}')


def test_gzip_multi_member_and_plain():
    data = os.urandom(3000) + b"\0" * 100000
    blob = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    assert decompressed(io.BytesIO(blob)).read() == data
    r = decompressed(io.BytesIO(blob))
    out = b""
    while True:
        b = r.read(777)
        if not b:
            break
        out += b
    assert out == data
    assert decompressed(io.BytesIO(b"plain tar bytes")).read() == b"plain tar bytes"
    with pytest.raises(LayerError, match="truncated"):
        decompressed(io.BytesIO(gzip.compress(data)[:-20])).read()


def test_zstd_needs_module_or_works():
    try:
        import zstandard
    except ImportError:
        with pytest.raises(ImageError, match="zstandard") as e:
            decompressed(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"x" * 20))
        assert "pip install zstandard" in e.value.hint
        return
    data = os.urandom(1000) * 10
    blob = zstandard.ZstdCompressor().compress(data)
    assert decompressed(io.BytesIO(blob)).read() == data


def test_hash_reader_and_check():
    h = HashReader(io.BytesIO(b"hello"))
    h.drain()
    assert h.digest() == "sha256:" + hashlib.sha256(b"hello").hexdigest() and h.count == 5
    with pytest.raises(DigestMismatch, match="sha256:" + "0" * 64):
        check_digest(h.digest(), "sha256:" + "0" * 64, "blob")


def _blob(root: Path, data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / d).write_bytes(data)
    return "sha256:" + d


def make_store(tmp_path: Path, plats=("linux/amd64", "linux/arm64"), extra: dict | None = None) -> tuple[Store, dict]:
    root = tmp_path / "store"
    env = {"HOME": str(tmp_path), "ROOTLESS_ROOT": str(root), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    store = Store(load_config(env))
    db = {"version": 1, "images": {}, "tags": {}, "indexes": {}}
    ids = {}
    for p in plats:
        os_, arch = p.split("/")[:2]
        diff = "sha256:" + hashlib.sha256(p.encode()).hexdigest()
        cfg = json.dumps({"architecture": arch, "os": os_, "config": {"Cmd": ["sh"], "Env": [f"P={p}"]},
                          "rootfs": {"type": "layers", "diff_ids": [diff]}, **(extra or {}).get(p, {})}).encode()
        iid = _blob(root, cfg)
        ld = root / "layers" / diff[7:]
        (ld / "diff").mkdir(parents=True)
        (ld / "layer.json").write_text("{}")
        db["images"][iid] = {"manifest": {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "9" * 64, "size": 1},
                             "platform": p, "layers": [diff], "blobs": [
                                 {"mediaType": oci.OCI_LAYER_GZIP, "digest": "sha256:" + "8" * 64, "size": 3}],
                             "size": 3, "added": 1.0, "repo_digests": []}
        db["tags"].setdefault("docker.io/library/busybox:latest", {})[p] = iid
        ids[p] = iid
    (root / "images.json").write_text(json.dumps(db))
    return store, ids


def test_store_resolve_by_platform(tmp_path):
    store, ids = make_store(tmp_path)
    host = str(host_platform())
    img = store.resolve("busybox")
    assert img.id == ids[host]
    assert img.platform == host_platform()
    assert img.config.env == (f"P={host}",)
    assert img.repo_tags == ("busybox:latest",)
    arm = store.resolve("docker.io/library/busybox:latest", platform=Platform("linux", "arm64"))
    assert arm.id == ids["linux/arm64"]
    assert store.resolve(ids["linux/arm64"]).id == ids["linux/arm64"]
    assert store.resolve(ids["linux/arm64"][7:19]).id == ids["linux/arm64"]
    dirs = store.layer_dirs(img)
    assert dirs == [store.root / "layers" / img.layers[0][7:] / "diff"]
    with pytest.raises(ImageNotFound, match="No such image: other:latest"):
        store.resolve("other")
    with pytest.raises(ImageNotFound):
        store.resolve("busybox", platform=Platform("linux", "s390x"))


def test_inspect_variant_is_the_configurations_and_omitted_when_empty(tmp_path):
    from rootless.image.present import inspect_json

    store, ids = make_store(tmp_path, plats=("linux/amd64", "linux/arm64", "linux/arm"),
                            extra={"linux/arm64": {"variant": "v8"}, "linux/arm": {"variant": "v7"}})
    arm64 = inspect_json(store, store.resolve("busybox", platform=Platform("linux", "arm64")))
    assert arm64["Architecture"] == "arm64" and arm64["Variant"] == "v8"
    arm = inspect_json(store, store.resolve("busybox", platform=Platform("linux", "arm", "v7")))
    assert arm["Architecture"] == "arm" and arm["Variant"] == "v7"
    amd64 = inspect_json(store, store.resolve(ids["linux/amd64"]))
    assert amd64["Architecture"] == "amd64" and "Variant" not in amd64  # as Docker: omitted when empty


def test_store_single_foreign_platform_warns(tmp_path):
    store, ids = make_store(tmp_path, plats=("linux/s390x",))
    warnings = []

    class R:
        def warn(self, m):
            warnings.append(m)

    assert store.resolve("busybox", reporter=R()).id == ids["linux/s390x"]
    assert warnings and "linux/s390x" in warnings[0]
    store2, _ = make_store(tmp_path / "two", plats=("linux/s390x", "linux/ppc64le"))
    with pytest.raises(PlatformNotFound, match="--platform|linux/ppc64le"):
        store2.resolve("busybox")


def test_layer_dirs_missing_layer(tmp_path):
    store, ids = make_store(tmp_path)
    img = store.resolve("busybox")
    os.unlink(store.layer_path(img.layers[0]) / "layer.json")
    with pytest.raises(StoreError, match="missing"):
        store.layer_dirs(img)


def test_resolve_path_imports_nothing_heavy(tmp_path):
    """`rootless run` of a local image: no registry, http, ssl or threading imports."""
    make_store(tmp_path)
    code = ("import sys\nfrom rootless.config import load_config\nfrom rootless.image.store import Store\n"
            "s = Store(load_config())\ni = s.resolve('busybox')\ns.layer_dirs(i)\n"
            "bad = [m for m in ('http.client', 'ssl', 'threading', 'rootless.image.registry', 'tarfile', "
            "'concurrent.futures', 'socket') if m in sys.modules]\nprint(bad)")
    env = dict(os.environ, HOME=str(tmp_path), ROOTLESS_ROOT=str(tmp_path / "store"), PYTHONPATH=str(ROOT),
               XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "[]"


def test_corrupt_db(tmp_path):
    store, _ = make_store(tmp_path)
    store.db_path.write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        Store(store.config).resolve("busybox")


def test_the_data_root_is_private_to_the_user(tmp_path):
    """Layers and containers keep setuid files, and image uid 0 is the user: other users must
    not reach them. A new data root is made 0700 (whatever the umask), an older one open to
    others is tightened when the store or the containers are next used."""
    from rootless.runtime.state import ContainerStore
    from rootless.runtime.volumes import VolumeStore

    def containers(cfg):
        with ContainerStore(cfg).lock():
            pass

    old = os.umask(0o022)
    try:
        for i, make in enumerate((lambda c: Store(c).ensure_dirs(), lambda c: VolumeStore(c).create("v"),
                                  containers)):
            root = tmp_path / f"store{i}"
            cfg = load_config(env={"ROOTLESS_ROOT": str(root), "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)})
            make(cfg)
            assert oct(root.stat().st_mode & 0o777) == oct(0o700)
            os.chmod(root, 0o755)          # as made by an older version
            make(cfg)
            assert oct(root.stat().st_mode & 0o777) == oct(0o700)
    finally:
        os.umask(old)

"""tag, rmi, prune, history, push, save/load round trips, as the unprivileged user."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import RL
from tests.imgtools import store_consistent, store_sizes

pytestmark = pytest.mark.usefixtures("unprivileged")


def iid(rl, ref, *extra):
    return json.loads(rl.ok("image", "inspect", *extra, ref))[0]["Id"]


def test_save_rmi_load_roundtrip_docker_archive(rl, registry, tmp_path):
    ref = registry.ref("layered")
    before = iid(rl, ref) if rl("image", "inspect", ref).returncode == 0 else None
    rl.ok("pull", "-q", ref)
    before = iid(rl, ref)
    out = rl.home / "layered.tar"
    rl.ok("save", "-o", str(out), ref)
    # an independent reader agrees on the image
    cp = subprocess.run(["skopeo", "inspect", "--config", f"docker-archive:{out}"], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    assert "sha256:" + __import__("hashlib").sha256(cp.stdout.encode()).hexdigest() != "" and \
        json.loads(cp.stdout)["config"]["Entrypoint"] == ["/usr/bin/hello"]
    lines = rl.ok("rmi", ref).splitlines()
    assert f"Untagged: {ref}" in lines and f"Deleted: {before}" in lines
    assert os.listdir(rl.root / "layers") == [] and os.listdir(rl.root / "blobs" / "sha256") == []
    cp = rl("load", "-i", str(out))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"Loaded image: {ref}"
    assert iid(rl, ref) == before
    info = json.loads(rl.ok("image", "inspect", ref))[0]
    assert info["Config"]["Cmd"] == ["world"] and len(info["RootFS"]["Layers"]) == 3
    assert store_consistent(rl.root) == []


def test_save_an_image_with_a_large_layer_and_load_it_into_another_store(rl, registry, tmp_path):
    # debian's layer is ~29 MB of gzip: the decompressed stream crosses many buffer edges
    ref = registry.ref("debian", "bookworm")
    rl.ok("pull", "-q", ref)
    out = tmp_path / "debian.tar"
    cp = rl("save", "-o", str(out), ref)
    assert cp.returncode == 0, cp.stderr
    other = RL(tmp_path / "other")
    try:
        cp = other("load", "-i", str(out))
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.strip() == f"Loaded image: {ref}"
        assert iid(other, ref) == iid(rl, ref)
        assert store_consistent(other.root) == []
    finally:
        other.cleanup()


def _archive_member(path, name):
    import tarfile

    with tarfile.open(path) as tf:
        return json.loads(tf.extractfile(name).read())


def test_save_by_image_id_writes_no_tag(rl, registry, tmp_path):
    ref = registry.ref("busybox")
    rl.ok("pull", "-q", ref)
    full = iid(rl, ref)
    for i, name in enumerate([full[7:19], full, full[7:], full[:20]]):
        out = tmp_path / f"byid{i}.tar"
        rl.ok("save", "-o", str(out), name)
        (entry,) = _archive_member(out, "manifest.json")
        assert entry["RepoTags"] is None, (name, entry)
        out = tmp_path / f"byid{i}.oci.tar"
        rl.ok("save", "--format", "oci-archive", "-o", str(out), name)
        (m,) = _archive_member(out, "index.json")["manifests"]
        assert "annotations" not in m, (name, m)
    # by tag: the tag; by ID and by tag in one archive: the tag once
    out = tmp_path / "both.tar"
    rl.ok("save", "-o", str(out), full[7:19], ref)
    (entry,) = _archive_member(out, "manifest.json")
    assert entry["RepoTags"] == [ref]
    rl.ok("rmi", ref)
    cp = rl("load", "-i", str(tmp_path / "byid0.tar"))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"Loaded image ID: {full}"
    assert rl.ok("images", "--format", "{{.Repository}}:{{.Tag}}").strip() == "<none>:<none>"


def test_save_several_images_stdout_oci_and_load_stdin(rl, registry):
    a, b = registry.ref("layered"), registry.ref("busybox")
    rl.ok("pull", "-q", a)
    rl.ok("pull", "-q", b)
    ids = {a: iid(rl, a), b: iid(rl, b)}
    for fmt in ("docker-archive", "oci-archive"):
        cp = subprocess.run([*rl.argv0, "save", "--format", fmt, a, b], capture_output=True, env=rl.env)
        assert cp.returncode == 0, cp.stderr
        data = cp.stdout
        assert len(data) > 1_000_000
        if fmt == "oci-archive":
            p = rl.home / "x.oci.tar"
            p.write_bytes(data)
            # skopeo untars it, keeping the owners (root): as root of the user namespace
            cp2 = rl("unshare", "skopeo", "inspect", f"oci-archive:{p}:{a}")
            assert cp2.returncode == 0, cp2.stderr
            assert json.loads(cp2.stdout)["Architecture"]
        rl.ok("rmi", a, b)
        assert rl.ok("images", "-q") == ""
        cp = rl("load", input=data)
        assert cp.returncode == 0, cp.stderr
        assert sorted(cp.stdout.decode().splitlines()) == sorted([f"Loaded image: {a}", f"Loaded image: {b}"])
        assert {a: iid(rl, a), b: iid(rl, b)} == ids
    assert store_consistent(rl.root) == []


def test_load_rejects_garbage_and_corrupt_archives(rl, registry):
    cp = rl("load", input=b"this is not a tar archive" * 100)
    err = cp.stderr.decode()
    assert cp.returncode == 125 and "Error:" in err and "Traceback" not in err
    rl.ok("pull", "-q", registry.ref("busybox"))
    cp = subprocess.run([*rl.argv0, "save", registry.ref("busybox")], capture_output=True, env=rl.env)
    saved = cp.stdout
    rl.ok("rmi", registry.ref("busybox"))
    rl.ok("load", input=saved)  # now the store's layer blobs are the archive's
    # busybox's layers plus a hostile one: refused, and nothing of it stays (the blobs it shares do)
    blobs = sorted(os.listdir(rl.root / "blobs" / "sha256"))
    layers = sorted(os.listdir(rl.root / "layers"))
    cp = rl("load", input=_with_hostile_layer(saved))
    err = cp.stderr.decode()
    assert cp.returncode == 125 and "hostile layer" in err and "absolute path" in err, err
    assert sorted(os.listdir(rl.root / "blobs" / "sha256")) == blobs
    assert sorted(os.listdir(rl.root / "layers")) == layers and os.listdir(rl.root / "tmp") == []
    assert rl.ok("images", "-q").split() == [iid(rl, registry.ref("busybox"))[7:19]]
    assert store_consistent(rl.root) == []
    data = bytearray(saved)
    i = data.find(b"busybox\x00") if b"busybox\x00" in data else len(data) // 3
    data[i + 2000] ^= 0xFF  # flip a byte inside a layer
    rl.ok("rmi", registry.ref("busybox"))
    cp = rl("load", input=bytes(data))
    assert cp.returncode == 125 and "does not match" in cp.stderr.decode()
    assert rl.ok("images", "-q") == "" and os.listdir(rl.root / "layers") == []
    assert os.listdir(rl.root / "blobs" / "sha256") == []
    # the hostile archive into an empty store: its blobs (and the layers extracted before it) go again
    cp = rl("load", input=_with_hostile_layer(saved))
    assert cp.returncode == 125 and "hostile layer" in cp.stderr.decode()
    assert os.listdir(rl.root / "blobs" / "sha256") == [] and os.listdir(rl.root / "layers") == []
    assert os.listdir(rl.root / "tmp") == []
    cp = rl("save", "nothere:latest", "-o", str(rl.home / "n.tar"))
    assert cp.returncode == 125 and "No such image" in cp.stderr and not (rl.home / "n.tar").exists()


def _with_hostile_layer(docker_archive: bytes) -> bytes:
    """A docker-archive's image with one more layer that writes to an absolute path."""
    import hashlib
    import io
    import tarfile

    from tests.imgtools import Tar

    src = tarfile.open(fileobj=io.BytesIO(docker_archive))
    members = {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}
    (entry,) = json.loads(members["manifest.json"])
    cfg = json.loads(members[entry["Config"]])
    hostile = Tar().file("/tmp/pwned-by-load", b"x").bytes()
    cfg["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(hostile).hexdigest())
    cfg["history"] = cfg.get("history", []) + [{"created_by": "hostile"}]
    cfg_bytes = json.dumps(cfg).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        for layer in entry["Layers"]:
            add(layer, members[layer])
        add("hostile/layer.tar", hostile)
        cname = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
        add(cname, cfg_bytes)
        add("manifest.json", json.dumps([{"Config": cname, "RepoTags": ["hostile:latest"],
                                           "Layers": entry["Layers"] + ["hostile/layer.tar"]}]).encode())
    return out.getvalue()


def test_push_and_pull_back_same_digest(rl, registry, empty_registry, images):
    src = registry.ref("busybox")
    rl.ok("pull", "-q", src)
    dst = empty_registry.ref("mirror/busybox", "v1")
    rl.ok("tag", src, dst)
    cp = rl("push", dst)
    assert cp.returncode == 0, cp.stderr
    mdig = images.info("busybox")["manifests"][f"linux/{images.host_arch}"]
    assert f"v1: digest: {mdig}" in cp.stderr
    # the registry already has every blob now: a second push uploads nothing
    cp = rl("push", dst)
    assert cp.returncode == 0 and "Layer already exists" in cp.stderr and "Pushed" not in cp.stderr
    rl.ok("rmi", "-f", src, dst)
    rl.ok("pull", "-q", dst)
    info = json.loads(rl.ok("image", "inspect", dst))[0]
    assert info["RepoDigests"] == [f"{empty_registry.host}/mirror/busybox@{mdig}"]
    # a multi-platform image is pushed as an index with the same digest
    rl.ok("pull", "-q", "--all-platforms", src)
    multi = empty_registry.ref("multi", "latest")
    rl.ok("tag", src, multi)
    cp = rl("push", multi)
    assert cp.returncode == 0, cp.stderr
    assert f"latest: digest: {images.info('busybox')['index']}" in cp.stderr
    cp = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{multi}"],
                        capture_output=True, text=True)
    assert cp.returncode == 0 and len(json.loads(cp.stdout)["manifests"]) == 2


def _catalog(reg) -> list[str]:
    import urllib.request

    with urllib.request.urlopen(f"http://{reg.host}/v2/_catalog", timeout=10) as r:
        return json.loads(r.read())["repositories"]


def test_push_destination_has_no_digest_and_an_image_id_needs_a_destination(rl, registry, empty_registry):
    src = registry.ref("busybox")
    rl.ok("pull", "-q", src)
    short = iid(rl, src)[7:19]
    dig = "sha256:" + "a" * 64
    for dest in (f"{empty_registry.host}/x@{dig}", f"{empty_registry.host}/x:1@{dig}"):
        cp = rl("push", src, dest)
        assert cp.returncode == 125 and "a destination cannot have a digest" in cp.stderr, cp.stderr
    assert _catalog(empty_registry) == []
    # an image ID is no repository name (it would go to docker.io/library/<hex>)
    for name in (short, iid(rl, src), iid(rl, src)[7:]):
        cp = rl("push", name)
        assert cp.returncode == 125, cp.stderr
        assert f"Error: An image does not exist locally with the tag: {name}" in cp.stderr
        assert "docker.io" not in cp.stderr and "Traceback" not in cp.stderr
    # with a destination it is pushed
    cp = rl("push", short, empty_registry.ref("byid", "1"))
    assert cp.returncode == 0, cp.stderr
    assert _catalog(empty_registry) == ["byid"]


def test_tag_rmi_prune_history(rl, registry):
    ref = registry.ref("layered")
    rl.ok("pull", "-q", ref)
    i = iid(rl, ref)
    rl.ok("tag", ref, "mine:1")
    rl.ok("tag", i[7:19], "localhost/other:2")
    assert iid(rl, "mine:1") == i and iid(rl, "localhost/other:2") == i
    info = json.loads(rl.ok("image", "inspect", i))[0]
    assert sorted(info["RepoTags"]) == sorted([ref, "mine:1", "localhost/other:2"])
    # several tags: rmi by ID needs -f
    cp = rl("rmi", i[7:19])
    assert cp.returncode == 125 and "-f" in cp.stderr
    # untagging one tag keeps the image
    assert rl.ok("rmi", "mine:1").strip() == "Untagged: mine:1"
    # a container uses the image: refused, even with -f
    cdir = rl.root / "containers" / "c0ffee"
    cdir.mkdir(parents=True)
    (cdir / "config.json").write_text(json.dumps({"id": "c0ffee", "name": "busy_box", "image_id": i}))
    cp = rl("rmi", "-f", i)
    assert cp.returncode == 125 and "busy_box" in cp.stderr and "rootless rm" in cp.stderr
    assert iid(rl, ref) == i
    (cdir / "config.json").unlink()
    # history: newest first
    rows = rl.ok("history", ref).splitlines()
    assert rows[0].split()[:2] == ["IMAGE", "CREATED"]
    assert rows[1].startswith(i[7:19]) and "whiteouts, opaque, owners" in rows[1]
    assert "<missing>" in rows[2] and "busybox" in rows[3]
    assert rl.ok("history", "-q", "--no-trunc", ref).splitlines()[0] == i
    h = [json.loads(x) for x in rl.ok("history", "--format", "json", ref).splitlines()]   # JSON lines
    assert [x["CreatedBy"] for x in h] == ["whiteouts, opaque, owners", "passwd and friends", "busybox"]
    # a dangling image: prune removes it, and its layers
    rl.ok("rmi", ref)
    assert rl.ok("images", "-q") != ""
    rl.ok("rmi", "localhost/other:2")
    assert rl.ok("images", "-q") == ""
    assert os.listdir(rl.root / "layers") == []
    rl.ok("pull", "-q", ref)
    rl.ok("tag", ref, "keep:1")
    rl.ok("pull", "-q", registry.ref("busybox"))
    rl.ok("tag", registry.ref("busybox"), ref)  # the layered image loses its only registry tag
    out = rl.ok("image", "prune", "-f")
    assert "Total reclaimed space" in out and i not in out  # still tagged keep:1
    rl.ok("rmi", "keep:1")
    rl.ok("tag", registry.ref("busybox"), "x:1")
    rl.ok("rmi", registry.ref("busybox"))
    out = rl.ok("image", "prune", "-a", "-f")
    assert "deleted: sha256:" in out
    assert rl.ok("images", "-q") == "" and os.listdir(rl.root / "layers") == []
    assert store_consistent(rl.root) == []


def test_images_listing_options(rl, registry):
    ref = registry.ref("busybox")
    rl.ok("pull", "-q", ref)
    out = rl.ok("images", "--digests")
    assert "DIGEST" in out.splitlines()[0] and "sha256:" in out
    assert rl.ok("images", "--format", "{{.Repository}}") .strip() == f"{registry.host}/busybox"
    assert rl.ok("images", "-f", "dangling=true", "-q") == ""
    assert rl.ok("images", "nomatch") .splitlines()[1:] == []
    assert len(rl.ok("images", f"{registry.host}/busybox").splitlines()) == 2
    cp = rl("images", "-f", "bogus=1")
    assert cp.returncode == 125
    # -a: the same list (no intermediate images in this store), untagged images included either way
    layered = registry.ref("layered")
    rl.ok("pull", "-q", layered)
    untagged = json.loads(rl.ok("image", "inspect", layered))[0]["Id"]
    rl.ok("tag", ref, layered)  # layered loses its only tag
    plain = rl.ok("images", "--no-trunc")
    assert untagged in plain and len(plain.splitlines()) == 4  # header, busybox under two tags, layered <none>
    assert rl.ok("images", "-a", "--no-trunc") == plain == rl.ok("images", "--all", "--no-trunc")
    assert rl.ok("images", "-a", "-q") == rl.ok("images", "-q") and len(rl.ok("images", "-a", "-q").split()) == 2


def test_images_reference_matches_full_names_ports_and_globs(rl, registry):
    ref = registry.ref("busybox")
    rl.ok("pull", "-q", ref)
    for t in ("docker.io/library/x:1", "x:2", "ns/y:1"):
        rl.ok("tag", ref, t)

    def listed(*args):
        return sorted(rl.ok("images", "--format", "{{.Repository}}:{{.Tag}}", *args).split())

    host = registry.host
    assert listed(ref) == [ref]
    assert listed(f"{host}/busybox") == [ref]
    assert listed("-f", f"reference={host}/busybox:latest") == [ref]
    assert listed("-f", "reference=127.0.0.1:*/busybox:lat?st") == [ref]
    assert listed("-f", "reference=*/busybox") == [ref]
    assert listed("docker.io/library/x:1") == ["x:1"]
    assert listed("docker.io/library/x") == ["x:1", "x:2"]
    assert listed("x") == ["x:1", "x:2"]
    assert listed("-f", "reference=x:*") == ["x:1", "x:2"]
    assert listed("-f", "reference=*") == ["x:1", "x:2"]          # * does not cross '/'
    assert listed("-f", "reference=ns/*:1") == ["ns/y:1"]
    assert listed("-f", "reference=docker.io/*/y") == ["ns/y:1"]
    assert listed("-f", "reference=x:1", "-f", "reference=ns/y") == ["ns/y:1", "x:1"]
    assert listed("busybox") == []
    cp = rl("images", "-f", "reference=x[")
    assert cp.returncode == 125 and "syntax error in pattern" in cp.stderr and "Traceback" not in cp.stderr


def test_rmi_digest_reference_removes_only_that_reference(rl, registry, images):
    ref = registry.ref("busybox")
    name = f"{registry.host}/busybox"
    byd = f"{name}@{images.info('busybox')['index']}"
    rl.ok("pull", "-q", ref)
    i = iid(rl, ref)
    assert json.loads(rl.ok("image", "inspect", ref))[0]["RepoDigests"] == [byd]
    # the digest reference goes, the image and its tag stay
    assert rl.ok("rmi", byd).splitlines() == [f"Untagged: {byd}"]
    info = json.loads(rl.ok("image", "inspect", ref))[0]
    assert info["Id"] == i and info["RepoTags"] == [ref] and info["RepoDigests"] == []
    # the repository's last tag takes its digest references along, and then the image (Docker)
    rl.ok("pull", "-q", byd)
    assert json.loads(rl.ok("image", "inspect", ref))[0]["RepoDigests"] == [byd]
    assert rl.ok("rmi", ref).splitlines() == [f"Untagged: {ref}", f"Untagged: {byd}", f"Deleted: {i}"]
    assert rl.ok("images", "-q") == ""
    # a digest reference and a tag of another repository: each removal leaves the other
    rl.ok("pull", "-q", byd)
    rl.ok("tag", byd, "other:1")
    assert rl.ok("rmi", byd).splitlines() == [f"Untagged: {byd}"]
    assert rl.ok("images", "--format", "{{.Repository}}:{{.Tag}}").split() == ["other:1"]
    rl.ok("pull", "-q", byd)
    assert rl.ok("rmi", "other:1").splitlines() == ["Untagged: other:1"]
    assert rl.ok("images", "--format", "{{.Repository}}:{{.Tag}}").split() == [f"{name}:<none>"]
    # the last reference: the image goes with it
    assert rl.ok("rmi", byd).splitlines() == [f"Untagged: {byd}", f"Deleted: {i}"]
    assert rl.ok("images", "-q") == "" and os.listdir(rl.root / "layers") == []
    assert store_consistent(rl.root) == []


def test_prune_reclaims_what_it_removed_not_image_sizes(rl, registry):
    from rootless.image.present import human_size

    busybox, layered = registry.ref("busybox"), registry.ref("layered")
    rl.ok("pull", "-q", busybox)
    rl.ok("pull", "-q", layered)
    dangling = json.loads(rl.ok("image", "inspect", layered))[0]
    rl.ok("tag", busybox, layered)  # layered loses its tag; two of its three layers are busybox's
    before = store_sizes(rl.root)
    out = rl.ok("image", "prune", "-f")
    after = store_sizes(rl.root)
    assert f"deleted: {dangling['Id']}" in out
    gone = {k: v for k, v in before.items() if k not in after}
    assert len([k for k in gone if k.startswith("layer:")]) == 1  # only its own layer
    assert f"Total reclaimed space: {human_size(sum(gone.values()))}\n" in out
    assert sum(gone.values()) < dangling["Size"] // 10
    # nothing left to remove: nothing reclaimed
    assert rl.ok("image", "prune", "-f").strip() == "Total reclaimed space: 0B"


def test_images_digest_per_repository_row(rl, registry, images):
    name = f"{registry.host}/busybox"
    index = images.info("busybox")["index"]
    manifest = images.info("busybox")["manifests"][f"linux/{images.host_arch}"]

    def rows(*extra):
        return sorted(rl.ok("images", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}", *extra).splitlines())

    rl.ok("pull", "-q", f"{name}@{index}")
    rl.ok("tag", f"{name}@{index}", "other:1")
    # the repository with a digest reference only has its row next to the other repository's tag
    assert rows() == [f"{name} <none> {index}", "other 1 <none>"]
    rl.ok("pull", "-q", f"{name}@{manifest}")
    assert rows("--digests") == sorted([f"{name} <none> {index}", f"{name} <none> {manifest}", "other 1 <none>"])
    rl.ok("pull", "-q", registry.ref("busybox"))
    # the tag came from the index: its row shows the index's digest, not the latest one recorded
    assert rows() == [f"{name} latest {index}", "other 1 <none>"]
    assert rows("--digests") == sorted([f"{name} latest {index}", f"{name} latest {manifest}", "other 1 <none>"])
    table = rl.ok("images", "--digests").splitlines()
    assert table[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"] and len(table) == 4

"""Pull, images, inspect and the Store API against the real local registry, as the unprivileged user."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import require

pytestmark = pytest.mark.usefixtures("unprivileged")


def inspect(rl, *args):
    return json.loads(rl.ok("image", "inspect", *args))[0]


def test_pull_multiarch_index_picks_host_platform(rl, registry, images):
    ref = registry.ref("busybox")
    cp = rl("pull", ref)
    assert cp.returncode == 0, cp.stderr
    iid = cp.stdout.strip()
    assert iid.startswith("sha256:") and len(iid) == 71
    assert "Trying to pull" in cp.stderr and "Digest: " + images.info("busybox")["index"] in cp.stderr
    info = inspect(rl, ref)
    assert info["Id"] == iid
    assert info["Architecture"] == images.host_arch and info["Os"] == "linux"
    assert info["RepoTags"] == [ref]
    assert info["RepoDigests"] == [f"{registry.host}/busybox@{images.info('busybox')['index']}"]
    out = rl.ok("images")
    assert out.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert f"{registry.host}/busybox" in out and iid[7:19] in out
    # pulling again downloads nothing
    cp = rl("pull", ref)
    assert cp.returncode == 0 and cp.stdout.strip() == iid
    assert "Already exists" in cp.stderr and "Downloading" not in cp.stderr


def test_pull_index_picks_host_platform_not_the_first_entry(rl, empty_registry, images, tmp_path):
    """busybox's index lists amd64 first: an index with the host's image LAST tells choosing from taking."""
    import hashlib
    import shutil

    src = images.layout("busybox")
    lay = tmp_path / "layout"
    shutil.copytree(src, lay)
    top = json.loads((lay / "index.json").read_text())
    (entry,) = [m for m in top["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"]
    idx = json.loads((lay / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    host = f"linux/{images.host_arch}"
    plat = lambda m: f"{m['platform']['os']}/{m['platform']['architecture']}"  # noqa: E731
    idx["manifests"].sort(key=lambda m: plat(m) == host)  # the host's image last
    assert plat(idx["manifests"][0]) != host and plat(idx["manifests"][-1]) == host
    data = json.dumps(idx).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (lay / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    entry.update(digest=digest, size=len(data))
    top["manifests"] = [entry]
    (lay / "index.json").write_text(json.dumps(top))
    empty_registry.push_layout(lay, "latest", "hostlast")
    ref = empty_registry.ref("hostlast")
    iid = rl.ok("pull", "-q", ref).strip()
    host_manifest = images.info("busybox")["manifests"][host]
    man = json.loads((src / "blobs" / "sha256" / host_manifest[7:]).read_text())
    assert iid == man["config"]["digest"]
    info = inspect(rl, ref)
    assert info["Architecture"] == images.host_arch
    assert info["RepoDigests"] == [f"{empty_registry.host}/hostlast@{digest}"]


def test_platform_pull_keeps_host_tag(rl, registry, images):
    ref = registry.ref("busybox")
    host_id = rl.ok("pull", "-q", ref).strip()
    cp = rl("pull", "-q", "--platform", "linux/arm64", ref)
    assert cp.returncode == 0, cp.stderr
    arm_id = cp.stdout.strip()
    assert cp.stderr == ""  # -q: only the ID
    assert arm_id != host_id
    # the tag still means the host's image...
    assert inspect(rl, ref)["Id"] == host_id
    # ...and the arm64 one is there too, chosen by platform
    arm = inspect(rl, "--platform", "linux/arm64", ref)
    assert arm["Id"] == arm_id and arm["Architecture"] == "arm64"
    assert arm["Variant"] == "v8"  # the configuration's, as written
    assert "Variant" not in inspect(rl, ref)  # Docker omits an empty one
    ids = rl.ok("images", "-q", "--no-trunc").split()
    assert sorted(ids) == sorted([host_id, arm_id])
    rows = [json.loads(x) for x in rl.ok("images", "--format", "json").splitlines()]   # Docker: JSON lines
    assert {r["Platform"] for r in rows} == {f"linux/{images.host_arch}", "linux/arm64"}
    # the Store API the runtime uses
    from archsupport.platform import Platform
    from rootless.config import load_config
    from rootless.image.store import Store

    store = Store(load_config(rl.env))
    assert store.resolve(ref).id == host_id
    assert store.resolve(ref, platform=Platform("linux", "arm64")).id == arm_id


def test_missing_platform_lists_what_the_index_has(rl, registry):
    cp = rl("pull", "--platform", "linux/s390x", registry.ref("busybox"))
    assert cp.returncode == 125
    assert "linux/s390x" in cp.stderr and "linux/amd64" in cp.stderr and "linux/arm64" in cp.stderr
    assert "Traceback" not in cp.stderr
    assert rl.ok("images", "-q") == ""


def test_pull_by_digest(rl, registry, images):
    info = images.info("busybox")
    arm = info["manifests"]["linux/arm64"]
    cp = rl("pull", f"{registry.host}/busybox@{arm}")
    assert cp.returncode == 0, cp.stderr
    got = inspect(rl, f"{registry.host}/busybox@{arm}")
    assert got["Architecture"] == "arm64"
    assert f"{registry.host}/busybox@{arm}" in got["RepoDigests"]
    assert got["RepoTags"] == []  # a pull by digest tags nothing
    # the index digest with a tag: the digest is what is pulled
    idx = info["index"]
    cp = rl("pull", "-q", f"{registry.host}/busybox:whatever@{idx}")
    assert cp.returncode == 0, cp.stderr
    assert inspect(rl, f"{registry.host}/busybox@{idx}")["Architecture"] == images.host_arch
    # a digest the registry does not have
    cp = rl("pull", f"{registry.host}/busybox@sha256:{'0' * 64}")
    assert cp.returncode == 125 and "not found" in cp.stderr


def test_inspect_config_of_layered(rl, registry, images):
    ref = registry.ref("layered")
    rl.ok("pull", "-q", ref)
    c = inspect(rl, ref)
    assert c["Architecture"] == images.host_arch
    cfg = c["Config"]
    assert cfg["Entrypoint"] == ["/usr/bin/hello"] and cfg["Cmd"] == ["world"]
    assert cfg["WorkingDir"] == "/work/created" and cfg["StopSignal"] == "SIGUSR1"
    assert "GREETING=hi there" in cfg["Env"]
    assert cfg["Volumes"] == {"/vol": {}} and set(cfg["ExposedPorts"]) == {"80/tcp", "53/udp"}
    assert cfg["Labels"]["test.role"] == "layered" and cfg["User"] == ""
    assert len(c["RootFS"]["Layers"]) == 3 and c["Size"] > 1000000
    assert rl.ok("image", "inspect", "-f", "{{.Config.WorkingDir}} {{.Os}}", ref).strip() == "/work/created linux"
    out = rl.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}")
    assert out.startswith(f"{registry.host}/layered:latest ")


def test_errors(rl, registry):
    cp = rl("pull", "Not/Valid")
    assert cp.returncode == 125 and "invalid reference format" in cp.stderr and "Traceback" not in cp.stderr
    cp = rl("pull", registry.ref("busybox", "no-such-tag"))
    assert cp.returncode == 125 and "not found" in cp.stderr
    cp = rl("pull", "127.0.0.1:1/busybox")
    assert cp.returncode == 125 and "connection refused" in cp.stderr
    cp = rl("image", "inspect", "nothere")
    assert cp.returncode == 1 and "No such image: nothere" in cp.stderr


def test_layers_mount_as_overlay_with_whiteouts_and_owners(rl, registry):
    """Store.resolve + layer_dirs -> a real overlay mount in a user namespace (what `run` does)."""
    require("overlay")
    ref = registry.ref("layered")
    rl.ok("pull", "-q", ref)
    from rootless import syscalls
    from rootless.config import load_config
    from rootless.image.store import Store
    from rootless.userns import run_in_userns

    store = Store(load_config(rl.env))
    img = store.resolve(ref)
    lowers = store.layer_dirs(img)
    assert len(lowers) == 3 and all(p.is_dir() for p in lowers)
    mnt = rl.base / "mnt"
    mnt.mkdir()

    def look():
        syscalls.mount("overlay", str(mnt), "overlay", 0,
                       "lowerdir=" + ":".join(str(p) for p in reversed(lowers)) + ",userxattr")
        st = os.stat(mnt / "data" / "owned")
        link = os.stat(mnt / "data" / "hard")
        return {
            "removed": os.path.exists(mnt / "etc" / "removed-me"),
            "opq": sorted(os.listdir(mnt / "opq")),
            "owned": (st.st_uid, st.st_gid, st.st_mode & 0o7777),
            "hard_same_inode": (link.st_ino == st.st_ino),
            "link": os.readlink(mnt / "data" / "link"),
            "suid": os.stat(mnt / "data" / "suid").st_mode & 0o7777,
            "sticky": os.stat(mnt / "data" / "sticky").st_mode & 0o7777,
            "tester": os.stat(mnt / "home" / "tester" / "owned-by-1000").st_uid,
            "hello": (mnt / "usr" / "bin" / "hello").read_text(),
        }

    r = run_in_userns(look)
    assert r["removed"] is False
    assert r["opq"] == ["c"]
    assert r["owned"] == (1000, 50, 0o600)
    assert r["hard_same_inode"] and r["link"] == "owned"
    assert r["suid"] == 0o4755 and r["sticky"] == 0o1777
    assert r["tester"] == 1000
    assert "hello from layered" in r["hello"]


def test_ensure_image_policies(rl, registry, images):
    from rootless.config import load_config
    from rootless.errors import ImageNotFound
    from rootless.image.store import Store

    store = Store(load_config(rl.env))
    ref = registry.ref("busybox")
    with pytest.raises(ImageNotFound):
        store.ensure_image(ref, pull="never")
    img = store.ensure_image(ref, pull="missing")
    assert img.platform.architecture == images.host_arch
    assert [p.name for p in Store(load_config(rl.env)).layer_dirs(img)] == ["diff", "diff"]
    again = Store(load_config(rl.env)).ensure_image(ref, pull="always")
    assert again.id == img.id
    assert Store(load_config(rl.env)).ensure_image(img.id, pull="never").id == img.id

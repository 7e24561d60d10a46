"""A registry that lies, a pull killed halfway, many pulls at once, hostile layers, zstd."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rootless.image.present import human_size
from tests.conftest import ROOT
from tests.imgtools import Layout, Proxy, Tar, store_consistent, store_sizes

pytestmark = pytest.mark.usefixtures("unprivileged")


@pytest.fixture
def proxy(registry):
    p = Proxy(registry.host)
    yield p
    p.stop()


def _store_files(root: Path) -> dict[str, list[str]]:
    out = {}
    for sub in ("blobs/sha256", "blobs/partial", "layers", "tmp"):
        d = root / sub
        out[sub] = sorted(os.listdir(d)) if d.exists() else []
    return out


def test_blob_not_matching_its_digest(rl, proxy, images):
    layout = Path(images.layout("layered"))
    idx = json.loads((layout / "index.json").read_text())
    man = json.loads((layout / "blobs" / "sha256" / idx["manifests"][0]["digest"][7:]).read_text())
    bad = man["layers"][2]["digest"]  # the last layer: the others are fetched (and undone)
    proxy.corrupt.add(bad)
    cp = rl("pull", f"{proxy.host}/layered")
    assert cp.returncode == 125
    assert bad in cp.stderr and "does not match" in cp.stderr and "Traceback" not in cp.stderr
    files = _store_files(rl.root)
    assert files == {"blobs/sha256": [], "blobs/partial": [], "layers": [], "tmp": []}, files
    db = json.loads((rl.root / "images.json").read_text()) if (rl.root / "images.json").exists() else {"images": {}}
    assert db["images"] == {}
    # the same pull through an honest registry works
    proxy.corrupt.clear()
    assert rl("pull", "-q", f"{proxy.host}/layered").returncode == 0
    assert store_consistent(rl.root) == []


def _kill_pull_halfway(rl, proxy, images) -> tuple[dict, int]:
    """Pull busybox through the proxy, SIGKILL it with half its biggest blob in blobs/partial."""
    layout = Path(images.layout("busybox"))
    man = json.loads((layout / "blobs" / "sha256" / images.info("busybox")["manifests"][f"linux/{images.host_arch}"][7:]).read_text())
    big = max(man["layers"], key=lambda l: l["size"])
    proxy.stall[big["digest"]] = big["size"] // 2
    p = rl.popen("pull", f"{proxy.host}/busybox", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proxy.stalled.wait(30), "the download never started"
    partial = rl.root / "blobs" / "partial" / big["digest"][7:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < big["size"] // 2):
        time.sleep(0.05)
    got = partial.stat().st_size
    assert got == big["size"] // 2
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.2)  # the namespace child dies with it (PDEATHSIG)
    proxy.stall.clear()
    proxy.release.set()
    assert not (rl.root / "layers" / big["digest"][7:]).exists()
    return big, got


def test_pull_killed_halfway_resumes_with_range(rl, proxy, images):
    big, got = _kill_pull_halfway(rl, proxy, images)
    stale = os.listdir(rl.root / "tmp")
    assert stale, "the killed pull left its staging directory (to be cleaned)"
    n = len(proxy.requests)
    cp = rl("pull", "-q", f"{proxy.host}/busybox")
    assert cp.returncode == 0, cp.stderr
    ranges = [r for r in proxy.requests[n:] if big["digest"] in r[1] and r[0] == "GET"]
    assert ranges and ranges[0][2] == f"bytes={got}-", ranges
    assert store_consistent(rl.root) == []
    assert _store_files(rl.root)["blobs/partial"] == [] and _store_files(rl.root)["tmp"] == []
    info = json.loads(rl.ok("image", "inspect", f"{proxy.host}/busybox"))[0]
    assert info["Architecture"] == images.host_arch


def test_resume_restarts_when_the_registry_ignores_range(rl, proxy, images):
    big, got = _kill_pull_halfway(rl, proxy, images)
    proxy.ignore_range = True
    n, m = len(proxy.requests), len(proxy.answers)
    cp = rl("pull", "-q", f"{proxy.host}/busybox")
    assert cp.returncode == 0, cp.stderr
    asked = [r for r in proxy.requests[n:] if big["digest"] in r[1] and r[0] == "GET"]
    answered = [a for a in proxy.answers[m:] if big["digest"] in a[1] and a[0] == "GET"]
    assert [r[2] for r in asked] == [f"bytes={got}-"]     # it asked to resume...
    assert [a[2] for a in answered] == [200]               # ...got the whole blob, and started again
    assert store_consistent(rl.root) == []
    assert _store_files(rl.root)["blobs/partial"] == []
    assert hashlib.sha256((rl.root / "blobs" / "sha256" / big["digest"][7:]).read_bytes()).hexdigest() == big["digest"][7:]
    assert (rl.root / "layers").exists() and len(os.listdir(rl.root / "layers")) == 2


def test_ten_parallel_pulls_share_one_store(rl, registry, images):
    refs = [registry.ref("busybox"), registry.ref("layered"), registry.ref("busybox", images.host_arch),
            registry.ref("busybox", "arm64")] * 3
    refs = refs[:10]
    procs = [rl.popen("pull", "-q", r, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in refs]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e.decode()
    assert store_consistent(rl.root) == []
    files = _store_files(rl.root)
    assert files["blobs/partial"] == [] and files["tmp"] == []
    db = json.loads((rl.root / "images.json").read_text())
    want_blobs = set()
    want_layers = set()
    for iid, e in db["images"].items():
        want_blobs |= {iid[7:], e["manifest"]["digest"][7:]} | {b["digest"][7:] for b in e["blobs"]}
        want_layers |= {l[7:] for l in e["layers"]}
    want_blobs.add(images.info("busybox")["index"][7:])
    assert set(files["blobs/sha256"]) == want_blobs  # one copy of each blob, nothing else
    assert set(files["layers"]) == want_layers
    assert len(db["images"]) == 3  # busybox amd64 (= busybox:amd64), busybox arm64, layered
    assert json.loads(rl.ok("image", "inspect", registry.ref("busybox")))[0]["Architecture"] == images.host_arch


def _layout_image(images, name: str, platform: str) -> tuple[dict, dict]:
    layout = Path(images.layout(name))
    man = json.loads((layout / "blobs" / "sha256" / images.info(name)["manifests"][platform][7:]).read_text())
    cfg = json.loads((layout / "blobs" / "sha256" / man["config"]["digest"][7:]).read_text())
    return man, cfg


def _wait_held_with_layers(proxy, p, root, diff_ids) -> None:
    """Until the pull ``p`` waits for its held last layer with the layers ``diff_ids`` in the store."""
    assert proxy.holding.wait(60), "the pull never asked for its last layer"
    deadline = time.monotonic() + 60
    while not all((root / "layers" / d[7:] / "layer.json").exists() for d in diff_ids):
        assert time.monotonic() < deadline and p.poll() is None, "the pull's other layers never arrived"
        time.sleep(0.05)


def test_rmi_and_prune_during_a_pull_keep_what_it_fetched(rl, proxy, registry, images):
    """GC (rmi, image prune) while a pull is between fetching its layers and recording its image."""
    host = f"linux/{images.host_arch}"
    _, arm_cfg = _layout_image(images, "busybox", "linux/arm64")
    man, cfg = _layout_image(images, "layered", host)
    # an image that shares one layer with `layered` (the pull finds it present) and has one of its own
    other = registry.ref("busybox", "arm64")
    rl.ok("pull", "-q", "--platform", "linux/arm64", other)
    held = man["layers"][-1]["digest"]
    new = set(cfg["rootfs"]["diff_ids"][:-1]) - set(arm_cfg["rootfs"]["diff_ids"])
    assert new, "the test needs a layer only `layered` has"
    proxy.hold.add(held)
    p = rl.popen("pull", f"{proxy.host}/layered", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_held_with_layers(proxy, p, rl.root, new)
        rl.ok("rmi", other)
        rl.ok("image", "prune", "-a", "-f")
        for d in new:  # in the store, not yet in images.json: pinned by the pull
            assert (rl.root / "layers" / d[7:] / "layer.json").exists()
        assert (rl.root / "blobs" / "sha256" / man["config"]["digest"][7:]).exists()
    finally:
        proxy.unhold.set()
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    assert store_consistent(rl.root) == []
    assert set(os.listdir(rl.root / "layers")) == {d[7:] for d in cfg["rootfs"]["diff_ids"]}
    assert not any(d[7:] in os.listdir(rl.root / "layers") for d in set(arm_cfg["rootfs"]["diff_ids"]) - set(cfg["rootfs"]["diff_ids"]))
    db = json.loads((rl.root / "images.json").read_text())
    assert [e["platform"] for e in db["images"].values()] == [host]
    # nothing is pinned any more: the next prune frees everything (and the pins' name files)
    rl.ok("image", "prune", "-a", "-f")
    assert os.listdir(rl.root / "layers") == [] and os.listdir(rl.root / "blobs" / "sha256") == []
    assert [n for n in os.listdir(rl.root / "locks") if n.startswith("pin-")] == []

    # a pull killed while it holds its pins leaves none behind: prune frees what it fetched
    proxy.holding.clear()
    proxy.unhold.clear()
    p = rl.popen("pull", f"{proxy.host}/layered", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_held_with_layers(proxy, p, rl.root, new)
        children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        assert children, "the namespace child of the pull is not running"
        os.kill(p.pid, signal.SIGKILL)
        p.communicate(timeout=60)
        deadline = time.monotonic() + 60
        for c in children:  # it dies with its parent (PDEATHSIG); its flocks go with it
            while Path(f"/proc/{c}").exists() and "State:\tZ" not in _read_or_empty(f"/proc/{c}/status"):
                assert time.monotonic() < deadline, f"the pull's child {c} outlived it"
                time.sleep(0.05)
    finally:
        proxy.unhold.set()
    assert any((rl.root / "layers" / d[7:]).exists() for d in new)
    rl.ok("image", "prune", "-a", "-f")
    assert os.listdir(rl.root / "layers") == [] and os.listdir(rl.root / "blobs" / "sha256") == []
    assert os.listdir(rl.root / "tmp") == []


def _read_or_empty(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def test_parallel_downloads_are_bounded(rl, proxy, registry):
    (rl.home / ".config" / "rootless").mkdir(parents=True)
    (rl.home / ".config" / "rootless" / "config.toml").write_text("[pull]\nparallel = 2\n")
    proxy.delay = 0.4
    cp = rl("pull", "-q", f"{proxy.host}/layered")
    assert cp.returncode == 0, cp.stderr
    assert proxy.max_parallel_blobs == 2


HOSTILE = {
    "traversal": (lambda v: Tar().file("ok", b"1").file("../../../../../../" + str(v)[1:] + "/pwned-dotdot", b"x"),
                  "climbs out"),
    "absolute": (lambda v: Tar().file(str(v) + "/pwned-abs", b"x"), "absolute path"),
    "symlink": (lambda v: Tar().symlink("esc", str(v)).file("esc/pwned-symlink", b"x"), "not a directory"),
    "symlink-rel": (lambda v: Tar().dir("a").symlink("a/up", "../../../../../../../../../" + str(v)[1:])
                    .file("a/up/pwned-rel", b"x"), "not a directory"),
    "hardlink": (lambda v: Tar().hardlink("hl", "../../../../../../../" + str(v)[1:] + "/victim-file"), "climbs out"),
    "hardlink-abs": (lambda v: Tar().hardlink("hl", str(v) + "/victim-file"), "absolute path"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_layer_writes_nothing_outside(rl, empty_registry, tmp_path, kind):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "victim-file").write_text("original")
    make, msg = HOSTILE[kind]
    lay = Layout(tmp_path / "layout")
    base = Tar().dir("etc").file("etc/hostname", b"base\n").bytes()
    lay.image("latest", [base, make(victim).bytes()])
    empty_registry.push_layout(lay.path, "latest", "hostile")
    before = sorted(os.listdir(victim))
    cp = rl("pull", empty_registry.ref("hostile"))
    assert cp.returncode == 125, cp.stderr
    assert "hostile layer" in cp.stderr and msg in cp.stderr and "Traceback" not in cp.stderr
    assert sorted(os.listdir(victim)) == before
    assert (victim / "victim-file").read_text() == "original"
    files = _store_files(rl.root)
    assert files["layers"] == [] and files["tmp"] == [] and files["blobs/partial"] == []
    # nothing anywhere around the store either
    for d in (rl.base, rl.root.parent, Path("/tmp")):
        assert not any(n.startswith("pwned") for n in os.listdir(d))


def test_device_nodes_are_skipped(rl, empty_registry, tmp_path):
    lay = Layout(tmp_path / "layout")
    layer = Tar().dir("dev").device("dev/mem", major=1, minor=1).device("dev/sda", kind=b"4", major=8, minor=0) \
        .device("dev/wh", major=0, minor=0).file("ok", b"fine").bytes()
    lay.image("latest", [layer])
    empty_registry.push_layout(lay.path, "latest", "devices")
    cp = rl("pull", empty_registry.ref("devices"))
    assert cp.returncode == 0, cp.stderr
    assert "device node" in cp.stderr
    (layer_dir,) = (rl.root / "layers").iterdir()
    names = sorted(os.listdir(layer_dir / "diff" / "dev"))
    assert names == ["wh"]  # a 0/0 character device is an overlay whiteout: kept
    assert (layer_dir / "diff" / "ok").read_text() == "fine"


def test_xattrs_survive_pull(rl, empty_registry, tmp_path):
    import struct

    # security.capability, VFS_CAP_REVISION_2 with the effective flag: cap_net_raw (13) permitted
    cap = struct.pack("<IIIII", 0x02000000 | 1, 1 << 13, 0, 0, 0)
    lay = Layout(tmp_path / "layout")
    layer = Tar().file("bin/pinger", b"#!/bin/sh\n", 0o755, xattrs={"user.foo": b"bar", "security.capability": cap}) \
        .file("plain", b"x", xattrs={"user.overlay.opaque": b"y", "trusted.evil": b"1"}).bytes()
    lay.image("latest", [layer])
    empty_registry.push_layout(lay.path, "latest", "xattrs")
    cp = rl("pull", "-q", empty_registry.ref("xattrs"))
    assert cp.returncode == 0, cp.stderr
    (layer_dir,) = (rl.root / "layers").iterdir()
    diff = layer_dir / "diff"
    assert os.getxattr(diff / "bin" / "pinger", "user.foo") == b"bar"
    assert "user.overlay.opaque" not in os.listxattr(diff / "plain")  # an image may not steer overlay
    # the capability as the user namespace sees it (the kernel stores it for the namespace's root)
    code = ("import json, os, sys; p = sys.argv[1]; "
            "print(json.dumps([os.getxattr(p + '/bin/pinger', 'security.capability').hex(), "
            "os.getxattr(p + '/bin/pinger', 'user.foo').decode(), os.listxattr(p + '/plain')]))")
    got = json.loads(rl.ok("unshare", sys.executable, "-c", code, str(diff)))
    assert got == [cap.hex(), "bar", []]


def test_zstd_layers(rl, empty_registry, tmp_path):
    lay = Layout(tmp_path / "layout")
    lay.image("latest", [Tar().file("hello", b"zstd works\n").file("owned", b"x", 0o640, 1000, 1000).bytes()],
              how="zstd")
    empty_registry.push_layout(lay.path, "latest", "zstd")
    ref = empty_registry.ref("zstd")
    # without the module: a clear error naming it, nothing kept
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "zstandard.py").write_text("raise ImportError('blocked by the test')\n")
    cp = rl("pull", ref, env={"PYTHONPATH": f"{blocker}:{ROOT}"})
    assert cp.returncode == 125
    assert "zstandard" in cp.stderr and "pip install zstandard" in cp.stderr
    assert _store_files(rl.root)["layers"] == []
    cp = rl("pull", "-q", ref)
    assert cp.returncode == 0, cp.stderr
    (layer_dir,) = (rl.root / "layers").iterdir()
    assert (layer_dir / "diff" / "hello").read_text() == "zstd works\n"
    from rootless.userns import default_mapping

    st = (layer_dir / "diff" / "owned").stat()
    assert st.st_mode & 0o777 == 0o640
    assert st.st_uid == default_mapping().host_uid(1000)


def test_progress_on_a_tty_and_plain_lines_otherwise(rl, registry):
    import pexpect

    cp = rl("pull", registry.ref("layered"))
    assert cp.returncode == 0
    lines = cp.stderr.splitlines()
    assert "\x1b[" not in cp.stderr
    assert any(l.endswith(": Pull complete") for l in lines)
    rl.ok("rmi", registry.ref("layered"))
    child = pexpect.spawn(rl.argv0[0], rl.argv0[1:] + ["pull", registry.ref("busybox")], env=rl.env,
                          timeout=60)
    child.expect(pexpect.EOF)
    out = child.before.decode(errors="replace")
    child.close()
    assert child.exitstatus == 0, out
    assert "\x1b[" in out and "Pull complete" in out


def test_prune_removes_abandoned_partial_downloads(rl, proxy, images):
    man = json.loads((Path(images.layout("busybox")) / "blobs" / "sha256" /
                      images.info("busybox")["manifests"][f"linux/{images.host_arch}"][7:]).read_text())
    big = max(man["layers"], key=lambda l: l["size"])
    proxy.stall[big["digest"]] = 1000
    p = rl.popen("pull", f"{proxy.host}/busybox", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proxy.stalled.wait(30)
    partial = rl.root / "blobs" / "partial" / big["digest"][7:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 1000):
        time.sleep(0.05)
    # while the download runs, prune leaves it alone
    rl.ok("image", "prune", "-f")
    assert partial.exists()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.2)
    before = store_sizes(rl.root)
    assert before[f"partial:{big['digest'][7:]}"] == 1000
    out = rl.ok("image", "prune", "-f")
    # the partial download, and what the killed pull had completed (no image uses it)
    gone = sum(v for k, v in before.items() if k not in store_sizes(rl.root))
    assert not partial.exists() and f"Total reclaimed space: {human_size(gone)}\n" in out


def test_tty_progress_when_some_layers_exist_shows_each_layer_once(rl, registry):
    import pexpect

    from tests.imgtools import render_terminal

    rl.ok("pull", "-q", registry.ref("busybox"))  # layered's two lower layers
    child = pexpect.spawn(rl.argv0[0], rl.argv0[1:] + ["pull", registry.ref("layered")], env=rl.env,
                          timeout=60, dimensions=(50, 200))
    child.expect(pexpect.EOF)
    raw = child.before.decode(errors="replace")
    child.close()
    assert child.exitstatus == 0, raw
    lines = render_terminal(raw)
    layers = [l for l in lines if l[:12].isalnum() and l[12:14] == ": "]
    assert sorted(layers) == sorted(["a4b06934e58c: Already exists", "033e344c7412: Already exists",
                                     "6365c9960649: Pull complete"]), lines
    assert lines[0].startswith("Trying to pull") and lines[-2].startswith("Digest: sha256:"), lines

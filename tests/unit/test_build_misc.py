"""Builder helpers: times, overlay mount data, CLI argument parsing, cache index."""


import pytest

from archsupport.platform import Platform
from rootless.build.builder import _parse_time, rfc3339
from rootless.build.cache import BuildCache, CacheEntry, references
from rootless.build.filestep import overlay_data
from rootless.cli.build import parse_build_args, parse_output, parse_platforms, parse_pull
from rootless.errors import BuildError, UsageError


def test_times_round_trip():
    for t in (0.0, 1700000000.0, 1700000000.123456789, 1.5):
        assert abs(_parse_time(rfc3339(t)) - t) < 1e-6
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert _parse_time("2024-01-02T03:04:05+01:00") == _parse_time("2024-01-02T02:04:05Z")
    assert _parse_time("") == 0.0 and _parse_time("garbage") == 0.0


def test_overlay_data():
    d = overlay_data(["/s/layers/a/diff", "/s/layers/b/diff"], "/s/tmp/x/upper", "/s/tmp/x/work", "/s/layers")
    assert d == "lowerdir=b/diff:a/diff,upperdir=/s/tmp/x/upper,workdir=/s/tmp/x/work,userxattr"
    assert overlay_data(["/e", "/s/layers/a/diff"], None, None, "/s/layers") == "lowerdir=a/diff:/e,userxattr"
    with pytest.raises(BuildError, match="cannot express"):
        overlay_data(["/s/lay:ers/a"], None, None, "/s/layers")
    with pytest.raises(BuildError, match="too many layers"):
        overlay_data([f"/x/{'a' * 64}/diff/{i}" for i in range(80)], None, None, "/s/layers")


def test_cli_parsers():
    assert parse_build_args(["A=1", "B=", "C", "D"], {"C": "env"}) == (("A", "1"), ("B", ""), ("C", "env"))
    with pytest.raises(UsageError):
        parse_build_args(["=x"], {})
    assert parse_platforms(["linux/amd64,linux/arm64", "linux/amd64", "arm64"]) == (
        Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert parse_pull("always") == "always" and parse_pull("true") == "always" and parse_pull("never") == "never"
    with pytest.raises(UsageError):
        parse_pull("sometimes")
    assert parse_output("type=docker-archive,dest=/x.tar") == ("docker-archive", "/x.tar")
    assert parse_output("type=oci,dest=a.tar") == ("oci-archive", "a.tar")
    for bad in ("type=local,dest=d", "type=oci-archive", "dest=x", "out.tar", "type=oci-archive,dest=x,foo=1"):
        with pytest.raises(UsageError):
            parse_output(bad)


class FakeStore:
    config = None

    def __init__(self, root):
        self.root = root
        self.layers = set()
        self.blobs = set()

    # pins: a list of the names reserved (the real Store takes a shared flock on each)
    def reserve_layer(self, pins, d):
        pins.append(("layer", d))
        return self.has_layer(d)

    def reserve_blob(self, pins, d):
        pins.append(("blob", d))
        return self.has_blob(d)

    def lock(self):
        import contextlib

        return contextlib.nullcontext()

    def has_layer(self, d):
        return d in self.layers

    def has_blob(self, d):
        return d in self.blobs


def test_cache_index(tmp_path):
    st = FakeStore(tmp_path)
    c = BuildCache(st)
    pins: list = []
    assert c.get("k1", pins) is None
    blob = {"mediaType": "m", "digest": "sha256:" + "b" * 64, "size": 3}
    c.put("k1", CacheEntry("sha256:" + "a" * 64, blob, False, 12.5))
    c.put("k2", CacheEntry("", None, True, 13.0))
    assert c.get("k1", pins) is None, "a cached layer missing from the store is a miss"
    st.layers.add("sha256:" + "a" * 64)
    st.blobs.add(blob["digest"])
    pins.clear()
    assert BuildCache(st).get("k1", pins) == CacheEntry("sha256:" + "a" * 64, blob, False, 12.5)
    assert pins == [("layer", "sha256:" + "a" * 64), ("blob", blob["digest"])], "a hit is pinned (GC keeps it)"
    assert BuildCache(st).get("k2", pins) == CacheEntry("", None, True, 13.0)
    assert references(tmp_path) == ({blob["digest"]}, {"sha256:" + "a" * 64})
    (tmp_path / "buildcache.json").write_text("not json")
    assert BuildCache(st).get("k1", pins) is None and references(tmp_path) == (set(), set())


def test_base_image_is_pinned_and_looked_up_again_when_removed_meanwhile(tmp_path):
    from types import SimpleNamespace

    from rootless.build.builder import Builder

    st = FakeStore(tmp_path)
    st.blobs.add("sha256:b1")
    img = SimpleNamespace(layers=("sha256:l1",), blobs=(SimpleNamespace(digest="sha256:b1"),))
    calls = []
    comes_back = [True]

    def ensure_image(ref, pull, platform, reporter):
        calls.append((ref, pull))
        if len(calls) == 2 and comes_back[0]:
            st.layers.add("sha256:l1")      # pulled again after an rmi/prune took it
        return img

    st.ensure_image = ensure_image
    b = Builder(st)
    b._pins = []
    assert b._pinned_image("base", Platform("linux", "amd64"), "missing") is img
    assert calls == [("base", "missing")] * 2
    assert ("layer", "sha256:l1") in b._pins and ("blob", "sha256:b1") in b._pins
    st.layers.clear()
    calls.clear()
    comes_back[0] = False
    with pytest.raises(BuildError, match="base: the image's layers were removed while the build started") as e:
        b._pinned_image("base", Platform("linux", "amd64"), "never")
    assert len(calls) == 3 and "build again" in e.value.hint


def test_write_layer_tar(tmp_path):
    import gzip
    import hashlib
    import io
    import os
    import tarfile

    from rootless.build.snapshot import write_layer_tar

    up = tmp_path / "upper"
    (up / "b" / "c").mkdir(parents=True)
    (up / "a.txt").write_text("A")
    (up / "b" / "c" / "d").write_text("D")
    os.link(up / "a.txt", up / "z-hard")
    os.symlink("a.txt", up / "sym")
    os.chmod(up / "a.txt", 0o751)
    buf = io.BytesIO()
    info = write_layer_tar(str(up), buf)
    blob = buf.getvalue()
    assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest() and info.size == len(blob)
    tar = gzip.decompress(blob)
    assert info.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest() and info.usize == len(tar)
    assert not info.empty
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        ms = tf.getmembers()
    assert [m.name for m in ms] == ["a.txt", "b", "b/c", "b/c/d", "sym", "z-hard"]
    assert ms[0].mode == 0o751 and ms[0].uname == "" and ms[0].gname == ""
    assert ms[5].islnk() and ms[5].linkname == "a.txt" and ms[4].issym()
    # the same tree gives the same layer (deterministic)
    buf2 = io.BytesIO()
    assert write_layer_tar(str(up), buf2).diff_id == info.diff_id
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_layer_tar(str(empty), io.BytesIO()).empty


def test_failed_run_hint_says_where_the_output_is():
    from rootless.build.runstep import failure_hint

    out = "\n".join(f"line {i}" for i in range(10))
    assert failure_hint(out, shown=True) == "see the command's output above"
    assert failure_hint(out, shown=False) == "its last output:\nline 5\nline 6\nline 7\nline 8\nline 9"
    assert failure_hint("", shown=False) == failure_hint("\n", shown=True) == "the command printed nothing"

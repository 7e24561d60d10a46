"""`rootless system df`: the accounting (pure) and the tree walk."""

import os

from rootless.diskusage import Facts, Usage, summarize, tree_size

L1, L2, L3, L4 = (f"sha256:{c * 64}" for c in "1234")


def _rows(f: Facts) -> dict[str, Usage]:
    return {u.type: u for u in summarize(f)}


def test_shared_layers_count_once_and_active_images_are_not_reclaimable():
    f = Facts(images=(("sha256:a", (L1, L2)), ("sha256:b", (L1, L3))),
              layer_sizes=((L1, 1000), (L2, 200), (L3, 30), (L4, 4)),
              containers=(("c1", True, 10), ("c2", False, 5)),
              container_images=("sha256:a", "sha256:a"),
              volumes=(("v1", True, 7), ("v2", False, 3)),
              cache_entries=3, cache_layers=(L1, L4))
    r = _rows(f)
    assert list(r) == ["Images", "Containers", "Local Volumes", "Build Cache"]
    # L1 in both images: once; b's own layer L3 is what removing b frees
    assert (r["Images"].total, r["Images"].active, r["Images"].size, r["Images"].reclaimable) == (2, 1, 1230, 30)
    assert (r["Containers"].total, r["Containers"].active, r["Containers"].size,
            r["Containers"].reclaimable) == (2, 1, 15, 5)
    assert (r["Local Volumes"].total, r["Local Volumes"].active, r["Local Volumes"].size,
            r["Local Volumes"].reclaimable) == (2, 1, 10, 3)
    # the cache's L1 is an image layer: only L4 is the cache's own
    assert (r["Build Cache"].total, r["Build Cache"].size, r["Build Cache"].reclaimable) == (3, 4, 4)


def test_json_rows_as_docker_prints_them():
    r = _rows(Facts(images=(("sha256:a", (L1,)),), layer_sizes=((L1, 4_260_000),), containers=()))
    assert r["Images"].to_json() == {"Type": "Images", "TotalCount": "1", "Active": "0", "Size": "4.26MB",
                                     "Reclaimable": "4.26MB (100%)"}
    assert r["Containers"].to_json()["Reclaimable"] == "0B"        # no percentage of nothing
    assert Usage("Build Cache", 2, 0, 2000, 2000).to_json()["Reclaimable"] == "2kB"


def test_tree_size_counts_hard_links_once_and_skips_symlink_targets(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100)
    os.link(tmp_path / "d" / "a", tmp_path / "b")
    (tmp_path / "c").write_bytes(b"y" * 10)
    big = tmp_path.parent / f"{tmp_path.name}-outside"
    big.write_bytes(b"z" * 5000)
    os.symlink(big, tmp_path / "link")
    try:
        assert tree_size(tmp_path) == 110 + len(str(big))
        assert tree_size(tmp_path / "missing") == 0
    finally:
        big.unlink()

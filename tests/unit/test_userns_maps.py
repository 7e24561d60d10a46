from rootless.userns import IDMap, IDMapping, default_mapping, keep_id_mapping, subid_ranges


def test_subid_ranges_by_name_and_uid(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("# comment\nalice:100000:65536\nbob:200000:1000\n1234:300000:10\nbroken\nalice:500000:5\n")
    assert subid_ranges(str(f), "alice", 1000) == [(100000, 65536), (500000, 5)]
    assert subid_ranges(str(f), "carol", 1234) == [(300000, 10)]
    assert subid_ranges(str(f), "dave", 9) == []
    assert subid_ranges(str(tmp_path / "missing"), "alice", 1) == []


def test_default_mapping_puts_user_at_root(tmp_path):
    su = tmp_path / "subuid"
    sg = tmp_path / "subgid"
    su.write_text("4242:100000:65536\n")
    sg.write_text("4242:200000:65536\n")
    m = default_mapping(4242, 4343, str(su), str(sg))
    assert m.uids == (IDMap(0, 4242, 1), IDMap(1, 100000, 65536))
    assert m.gids == (IDMap(0, 4343, 1), IDMap(1, 200000, 65536))
    assert not m.single
    assert m.host_uid(0) == 4242 and m.host_uid(1000) == 100999 and m.host_uid(65537) is None
    assert m.uid_count == 65537


def test_no_subids_maps_only_self(tmp_path):
    m = default_mapping(4242, 4343, str(tmp_path / "none"), str(tmp_path / "none"))
    assert m.single and m.uids == (IDMap(0, 4242, 1),)


def test_keep_id_mapping():
    base = IDMapping((IDMap(0, 1001, 1), IDMap(1, 100000, 65536)), (IDMap(0, 1001, 1), IDMap(1, 100000, 65536)))
    k = keep_id_mapping(base, 1001, 1001)
    assert k.host_uid(1001) == 1001
    assert k.host_uid(0) == 100000
    assert k.host_uid(1000) == 101000
    assert k.host_uid(1002) == 101001
    # every subordinate id is used exactly once
    hosts = sorted(h for m in k.uids for h in range(m.host, m.host + m.size))
    assert hosts == sorted([1001] + list(range(100000, 165536)))


def test_mapping_json_roundtrip():
    m = IDMapping((IDMap(0, 5, 1),), (IDMap(0, 6, 1),), single=True)
    assert IDMapping.from_json(m.to_json()) == m

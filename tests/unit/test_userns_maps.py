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


def test_subid_fix_picks_the_first_range_free_in_both_files(tmp_path):
    from rootless.userns import first_free_subid_range, subid_entries, subid_fix

    assert subid_entries("# c\nalice:100000:65536\nbad line\nbob:x:1\nzero:5:0\n1001:300000:65536\n") == [
        (100000, 65536), (300000, 65536)]
    assert first_free_subid_range([]) == 100000
    assert first_free_subid_range([(100000, 65536)]) == 165536
    # a gap big enough between two ranges is taken; a smaller one is not
    assert first_free_subid_range([(100000, 65536), (300000, 65536)]) == 165536
    assert first_free_subid_range([(100000, 65536), (165536 + 1000, 10), (300000, 1)]) == 166546
    assert first_free_subid_range([(0, 1000), (150000, 10)]) == 150010             # below the minimum: ignored
    assert first_free_subid_range([(100000, 65536), (120000, 100000)]) == 220000   # overlapping entries
    sub_u, sub_g = tmp_path / "subuid", tmp_path / "subgid"
    sub_u.write_text("rltest:100000:65536\n")
    sub_g.write_text("rltest:100000:65536\nother:165536:65536\n")    # the gid file decides here
    assert subid_fix("me", (str(sub_u), str(sub_g))) == \
        "sudo usermod --add-subuids 231072-296607 --add-subgids 231072-296607 me"
    assert subid_fix("me", (str(tmp_path / "none"),)).endswith("100000-165535 me")

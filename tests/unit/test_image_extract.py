"""Pure parts of layer extraction: name checks and id clamping."""

import tarfile

import pytest

from rootless.errors import LayerError
from rootless.image.extract import Extractor, split_name


@pytest.mark.parametrize("name,parts", [("a/b/c", ["a", "b", "c"]), ("./a//b/", ["a", "b"]), ("./", []),
                                        (".", []), (".wh.x", [".wh.x"])])
def test_split_name(name, parts):
    assert split_name(name) == parts


@pytest.mark.parametrize("name,msg", [("/etc/passwd", "absolute"), ("../x", "climbs out"), ("a/../../x", "climbs out"),
                                      ("a/..", "climbs out")])
def test_split_name_refuses(name, msg):
    with pytest.raises(LayerError, match=msg) as e:
        split_name(name)
    assert repr(name) in e.value.message


def _m(uid, gid, name="f"):
    m = tarfile.TarInfo(name)
    m.uid, m.gid = uid, gid
    return m


def test_ids_kept_clamped_and_single(tmp_path):
    warnings = []
    ex = Extractor(str(tmp_path), max_uid=65535, max_gid=65535, single=False, warn=warnings.append)
    assert ex._ids(_m(1000, 50)) == (1000, 50)
    assert ex._ids(_m(70000, 50)) == (0, 50)
    assert ex._ids(_m(70001, 70001)) == (0, 0)
    assert len(warnings) == 1 and "/etc/subuid" in warnings[0]
    ex.close()
    warnings.clear()
    ex = Extractor(str(tmp_path), max_uid=0, max_gid=0, single=True, warn=warnings.append)
    assert ex._ids(_m(1000, 1000)) == (0, 0)
    assert ex._ids(_m(33, 33)) == (0, 0)
    assert len(warnings) == 1 and "no subordinate ids" in warnings[0]
    ex.close()

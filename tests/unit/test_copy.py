"""`cp` without a container: the extraction that takes a hostile tar stream."""

from __future__ import annotations

import io
import os
import tarfile

from rootless.errors import RootlessError
from rootless.runtime.copy import safe_extract


def _tar(*entries) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, arg in entries:
            m = tarfile.TarInfo(name)
            m.mtime = 1000
            if kind == "dir":
                m.type, m.mode = tarfile.DIRTYPE, arg
                tf.addfile(m)
            elif kind == "link":
                m.type, m.linkname = tarfile.SYMTYPE, arg
                tf.addfile(m)
            else:
                m.size, m.mode = len(arg), 0o4755
                tf.addfile(m, io.BytesIO(arg))
    buf.seek(0)
    return buf


def test_a_directory_replaced_by_a_symlink_gets_no_mode_through_it(tmp_path):
    """Directories get their modes at the end: a later entry of the same name, a symlink to
    a host directory, must not pass that chmod (and utime) on to the link's target."""
    dest, victim = tmp_path / "dest", tmp_path / "victim"
    dest.mkdir()
    victim.mkdir(mode=0o700)
    (victim / "y").mkdir(mode=0o700)
    before = victim.stat()
    for entries in ([("x", "dir", 0o777), ("x", "link", str(victim))],
                    [("x", "dir", 0o777), ("x/y", "dir", 0o777), ("x", "link", str(victim))]):
        try:
            safe_extract(_tar(*entries), str(dest))
        except RootlessError:
            pass
        for d in (victim, victim / "y"):
            assert oct(d.stat().st_mode & 0o7777) == oct(0o700), d
        assert victim.stat().st_mtime == before.st_mtime
        assert os.readlink(dest / "x") == str(victim)
        os.unlink(dest / "x")


def test_modes_and_times_are_set_on_what_was_extracted(tmp_path):
    safe_extract(_tar(("d", "dir", 0o750), ("d/f", "file", b"hi"), ("d/l", "link", "f"),
                      ("ro", "dir", 0o500), ("ro/g", "file", b"")), str(tmp_path))
    assert oct((tmp_path / "d").stat().st_mode & 0o7777) == oct(0o750)
    assert oct((tmp_path / "d" / "f").stat().st_mode & 0o7777) == oct(0o4755)
    assert (tmp_path / "d" / "f").read_bytes() == b"hi"
    assert (tmp_path / "d").stat().st_mtime == 1000 and (tmp_path / "d" / "f").stat().st_mtime == 1000
    assert os.readlink(tmp_path / "d" / "l") == "f"
    assert oct((tmp_path / "ro").stat().st_mode & 0o7777) == oct(0o500)
    assert (tmp_path / "ro" / "g").exists()
    os.chmod(tmp_path / "ro", 0o700)

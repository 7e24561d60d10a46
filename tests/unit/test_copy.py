"""`cp`'s two halves without a container: the extraction that takes a hostile tar stream,
and the container-side helper, which must run none of the container's code."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from rootless.errors import RootlessError
from rootless.runtime.copy import safe_extract

ROOT = Path(__file__).resolve().parents[2]


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


# The helper, as it runs after the switch to the container's root: a fresh interpreter
# records every module imported and every pwd/grp lookup (glibc's NSS would read the
# container's nsswitch.conf and load its libnss_*.so) after _preload.
_HELPER = r"""
import grp, json, os, pwd, sys
from rootless.runtime import copy

copy._preload()
seen = []
def lookup(kind):
    def f(*a):
        seen.append(kind)
        raise KeyError(a)
    return f
pwd.getpwuid, pwd.getpwnam, grp.getgrgid, grp.getgrnam = (lookup(k) for k in ("getpwuid", "getpwnam",
                                                                            "getgrgid", "getgrnam"))
sys.addaudithook(lambda event, args: seen.append("import " + args[0]) if event == "import" else None)
src, tar, dest = sys.argv[1:4]
copy._inside_out(src, os.open(tar, os.O_WRONLY | os.O_CREAT, 0o600), False)
rfd = os.open(tar, os.O_RDONLY)
assert os.read(rfd, 1) == b"d"   # the source's kind ("d"irectory / "f"ile), then the tar
copy._inside_in(dest, rfd, True, False, False)
print(json.dumps(seen))
"""


def test_the_container_side_helper_imports_nothing_and_resolves_no_names(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    (src / "l").symlink_to("sub/f")
    (tmp_path / "dest").mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cp = subprocess.run([sys.executable, "-c", _HELPER, str(src), str(tmp_path / "t.tar"), str(tmp_path / "dest")],
                        env=env, capture_output=True, text=True, check=False)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == []
    with tarfile.open(fileobj=io.BytesIO((tmp_path / "t.tar").read_bytes()[1:])) as tf:
        members = tf.getmembers()
    assert sorted(m.name for m in members) == ["src", "src/l", "src/sub", "src/sub/f"]
    assert {(m.uname, m.gname) for m in members} == {("", "")}
    assert (tmp_path / "dest" / "src" / "sub" / "f").read_text() == "x"

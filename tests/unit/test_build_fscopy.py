"""COPY/ADD file semantics: globs, symlinks scoped to the root, destinations, archives."""

import io
import os
import stat
import tarfile

import pytest

from rootless.build.dockerignore import ContextFilter
from rootless.build.fscopy import (ContextFS, CopyError, CopyOptions, SourceFS, contains_wildcards, copy_one,
                                   go_match, is_archive, prepare_dest, resolve_sources, root_path, split_wildcards,
                                   write_content)


@pytest.mark.parametrize("pattern,name,ok", [
    ("abc", "abc", True), ("*", "abc", True), ("*c", "abc", True), ("a*", "a", True), ("a*", "ab/c", False),
    ("a*/b", "abc/b", True), ("a*/b", "a/c/b", False), ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b?c*x", "abxbbxdbxebxczzx", True), ("a*b?c*x", "abxbbxdbxebxczzy", False), ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True), ("ab[e-g]", "abc", False), ("ab[^c]", "abc", False), ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True), ("a\\*b", "ab", False), ("a?b", "a☺b", True), ("a[^a]b", "a☺b", True),
    ("[a-ζ]*", "α", True), ("*[a-ζ]", "A", False), ("a?b", "a/b", False), ("a*b", "a/b", False),
    ("[\\]a]", "]", True), ("[\\-]", "-", True), ("[x\\-]", "x", True), ("[x\\-]", "z", False), ("*x", "xxx", True),
    ("*.txt", ".hidden.txt", True),
])
def test_go_match(pattern, name, ok):
    assert go_match(pattern, name) == ok


@pytest.mark.parametrize("bad", ["[", "[^", "a[", "\\", "[z-a]"])
def test_go_match_bad(bad):
    with pytest.raises(CopyError):
        go_match(bad, "a")


def test_wildcards_split():
    assert contains_wildcards("a*") and contains_wildcards("[ab]") and not contains_wildcards("a\\*")
    assert split_wildcards("/a/b*/c") == ("/a", "b*/c")
    assert split_wildcards("/x/y") == ("/x/y", "")
    assert split_wildcards("/*.txt") == ("/", "*.txt")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "a.txt").write_text("A")
    (root / "dir" / "sub" / "b.txt").write_text("B")
    (root / "f1.txt").write_text("one")
    (root / "f2.txt").write_text("two")
    (root / "g.md").write_text("md")
    (root / "x").mkdir()
    (root / "x" / "f3.txt").write_text("three")
    os.symlink("dir", root / "reldirlink")
    os.symlink("/dir/a.txt", root / "abslink")
    os.symlink("../../../../../etc/passwd", root / "escape")
    os.symlink("loop", root / "loop")
    os.chmod(root / "f1.txt", 0o741)
    os.link(root / "f2.txt", root / "x" / "hard")
    return root


def test_root_path(tree):
    fs = SourceFS(tree, "ctx")
    assert root_path(fs, "/reldirlink/a.txt") == "dir/a.txt"
    assert root_path(fs, "abslink") == "dir/a.txt"
    assert root_path(fs, "abslink", follow_last=False) == "abslink"
    assert root_path(fs, "escape") == "etc/passwd"          # never the host's /etc/passwd
    assert root_path(fs, "../../..") == ""
    assert root_path(fs, "/missing/../x/f3.txt") == "x/f3.txt"
    with pytest.raises(CopyError, match="too many levels of symbolic links"):
        root_path(fs, "loop")


def test_resolve_sources(tree):
    fs = SourceFS(tree, "ctx")
    got, empty = resolve_sources(fs, ["*.txt", "x/*", "nomatch*", "dir", "/abslink", "*/sub"])
    assert got == ["f1.txt", "f2.txt", "x/f3.txt", "x/hard", "dir", "dir/a.txt", "dir/sub"]
    assert empty == ["nomatch*"]
    with pytest.raises(CopyError, match=r"ctx: /nope/file.txt: not found"):
        resolve_sources(fs, ["nope/file.txt"])


def test_context_excludes(tree):
    cf = ContextFilter(tree, ["*.md", "x", "loop"])
    fs = ContextFS(tree, cf.walk())
    got, _ = resolve_sources(fs, ["*"])
    assert "g.md" not in got and "x" not in got and "f1.txt" in got
    with pytest.raises(CopyError) as ei:
        resolve_sources(fs, ["g.md"])
    assert "build context: /g.md: not found" in str(ei.value)
    assert ei.value.hint == "/g.md is excluded by .dockerignore"


def do_copy(fs, sources, dest_root, dest, **kw):
    opt = CopyOptions(**kw)
    rels, _ = resolve_sources(fs, sources)
    if len(rels) > 1 and not dest.endswith("/"):
        raise AssertionError("test misuse")
    d = prepare_dest(dest_root, dest, opt)
    for r in rels:
        copy_one(fs, r, dest_root, d, opt)
    return opt


def files(root):
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            rel = "/" + os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = open(p).read()
    return out


def test_copy_file_semantics(tree, tmp_path):
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(fs, ["f1.txt"], dst, "/new/name")          # file to a new name, parents created
    do_copy(fs, ["f2.txt"], dst, "/into/")             # trailing slash: into the directory
    (dst / "existing").mkdir()
    do_copy(fs, ["g.md"], dst, "/existing")            # existing dir without slash: into it
    assert files(dst) == {"/new": "dir", "/new/name": "one", "/into": "dir", "/into/f2.txt": "two",
                          "/existing": "dir", "/existing/g.md": "md"}
    assert stat.S_IMODE(os.stat(dst / "new" / "name").st_mode) == 0o741
    assert stat.S_IMODE(os.stat(dst / "new").st_mode) == 0o755
    assert os.stat(dst / "new" / "name").st_mtime_ns == os.stat(tree / "f1.txt").st_mtime_ns


def test_copy_dir_contents_and_globs(tree, tmp_path):
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(fs, ["dir"], dst, "/d")                    # contents of dir, not dir itself
    do_copy(fs, ["*.txt", "x"], dst, "/g/")
    do_copy(fs, ["reldirlink"], dst, "/viasym")        # a symlink source is followed
    assert files(dst) == {
        "/d": "dir", "/d/a.txt": "A", "/d/sub": "dir", "/d/sub/b.txt": "B",
        "/g": "dir", "/g/f1.txt": "one", "/g/f2.txt": "two", "/g/f3.txt": "three", "/g/hard": "two",
        "/viasym": "dir", "/viasym/a.txt": "A", "/viasym/sub": "dir", "/viasym/sub/b.txt": "B"}
    assert os.stat(dst / "g" / "f2.txt").st_ino == os.stat(dst / "g" / "hard").st_ino, "hard link kept"


def test_copy_keeps_symlinks_inside_dirs(tree, tmp_path):
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(fs, ["."], dst, "/all/")
    got = files(dst)
    assert got["/all/abslink"] == "-> /dir/a.txt" and got["/all/escape"] == "-> ../../../../../etc/passwd"


def test_chmod_applies_to_files_and_dirs(tree, tmp_path):
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(fs, ["dir"], dst, "/d/", mode=0o700)
    assert stat.S_IMODE(os.stat(dst / "d" / "a.txt").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dst / "d" / "sub").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dst / "d").st_mode) == 0o755   # created parent: 0755


def test_destination_symlinks_stay_inside_root(tree, tmp_path):
    """A symlink in the image pointing at an absolute path is resolved in the image, not on the host."""
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    dst.mkdir()
    (dst / "run").mkdir()
    os.symlink(str(outside), dst / "evil")              # absolute host path, as a hostile image could have
    os.symlink("/run", dst / "varrun")
    do_copy(fs, ["f1.txt"], dst, "/evil/")
    do_copy(fs, ["f2.txt"], dst, "/varrun/")
    do_copy(fs, ["dir"], dst, "/evil/deeper")
    assert os.listdir(outside) == []
    assert (dst / "run" / "f2.txt").read_text() == "two"
    assert (dst / str(outside).lstrip("/") / "f1.txt").read_text() == "one"
    # a destination that is a symlink is followed inside the root (BuildKit), never on the host
    os.symlink(str(outside / "victim"), dst / "target")
    do_copy(fs, ["g.md"], dst, "/target")
    assert not (outside / "victim").exists()
    assert (dst / str(outside).lstrip("/") / "victim").read_text() == "md"


def test_copy_errors(tree, tmp_path):
    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    (dst / "file").write_text("x")
    with pytest.raises(CopyError, match="a file of that name exists"):
        do_copy(fs, ["f1.txt"], dst, "/file/sub/x")
    (dst / "adir" / "f1.txt").mkdir(parents=True)
    with pytest.raises(CopyError, match="cannot replace directory /adir/f1.txt with file /f1.txt"):
        do_copy(fs, ["f1.txt"], dst, "/adir/")
    with pytest.raises(CopyError, match="too many levels of symbolic links"):
        do_copy(fs, ["loop"], dst, "/l")


def test_write_content(tmp_path):
    dst = tmp_path / "root"
    dst.mkdir()
    write_content(dst, "/etc/app.conf", "EOF", "k=v\n", CopyOptions())
    write_content(dst, "/opt/", "NAMED", "x", CopyOptions(mode=0o755))
    assert (dst / "etc" / "app.conf").read_text() == "k=v\n"
    assert stat.S_IMODE(os.stat(dst / "etc" / "app.conf").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(dst / "opt" / "NAMED").st_mode) == 0o755


def make_tar(path, members, compression=""):
    with tarfile.open(path, "w:" + compression) as tf:
        for name, kind, data in members:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = len(data)
                ti.mode = 0o640
                tf.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o750
                tf.addfile(ti)
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = data
                tf.addfile(ti)
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = data
                tf.addfile(ti)


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_add_extracts_archives(tmp_path, compression):
    src = tmp_path / "src"
    src.mkdir()
    make_tar(src / "a.tar", [("top/", "dir", None), ("top/f", "file", b"data"), ("top/l", "sym", "f"),
                             ("top/h", "hard", "top/f")], compression)
    assert is_archive(src / "a.tar")
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(SourceFS(src, "ctx"), ["a.tar"], dst, "/x", unpack=True)
    assert files(dst) == {"/x": "dir", "/x/top": "dir", "/x/top/f": "data", "/x/top/l": "-> f", "/x/top/h": "data"}
    assert stat.S_IMODE(os.stat(dst / "x" / "top").st_mode) == 0o750
    assert os.stat(dst / "x" / "top" / "f").st_ino == os.stat(dst / "x" / "top" / "h").st_ino


def test_add_archive_at_root_stays_inside_the_image(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    make_tar(src / "a.tar", [("/abs", "file", b"2"), ("link", "sym", str(outside)), ("link/b", "file", b"3"),
                             ("a/../c", "file", b"4")])
    dst = tmp_path / "root"
    dst.mkdir()
    do_copy(SourceFS(src, "ctx"), ["a.tar"], dst, "/", unpack=True)
    assert os.listdir(outside) == []
    assert (dst / "abs").read_text() == "2" and (dst / "c").read_text() == "4"
    assert (dst / str(outside).lstrip("/") / "b").read_text() == "3", "an absolute link resolves in the image"


@pytest.fixture
def image_root(tmp_path):
    dst = tmp_path / "root"
    (dst / "etc").mkdir(parents=True)
    (dst / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (dst / "opt").mkdir()
    return dst


@pytest.mark.parametrize("members,message", [
    ([("lnk", "sym", "/etc"), ("lnk/passwd-over", "file", b"pwned")],
     "entry 'lnk/passwd-over' goes through the symlink /opt/lnk -> /etc, which leads out of the destination /opt"),
    ([("up", "sym", "../.."), ("up/etc/passwd-over", "file", b"pwned")], "which leads out of the destination /opt"),
    ([("d/", "dir", None), ("d/l", "sym", "../../etc"), ("d/l/x/passwd-over", "file", b"pwned")],
     "goes through the symlink /opt/d/l -> ../../etc"),
    ([("../../escape.txt", "file", b"out")], "entry '../../escape.txt' climbs out of the destination /opt with '..'"),
    ([("a/../../etc/passwd-over", "file", b"out")], "climbs out of the destination /opt"),
    ([("f", "file", b"x"), ("h", "hard", "../etc/passwd")],
     "hard link 'h' -> '../etc/passwd' climbs out of the destination /opt"),
])
def test_add_archive_is_confined_to_its_destination(tmp_path, image_root, members, message):
    """Docker extracts chrooted at the destination: no entry lands outside it, through '..' or a symlink."""
    src = tmp_path / "src"
    src.mkdir()
    make_tar(src / "evil.tar", members)
    with pytest.raises(CopyError) as ei:
        do_copy(SourceFS(src, "ctx"), ["evil.tar"], image_root, "/opt/", unpack=True)
    assert message in str(ei.value) and "archive evil.tar" in str(ei.value)
    assert sorted(os.listdir(image_root / "etc")) == ["passwd"] and not (image_root / "escape.txt").exists()
    assert not (image_root / "opt" / "escape.txt").exists() and not (image_root / "opt" / "etc").exists()


def test_add_archive_symlinks_inside_the_destination_are_followed(tmp_path, image_root):
    src = tmp_path / "src"
    src.mkdir()
    make_tar(src / "ok.tar", [("real/", "dir", None), ("lib", "sym", "real"), ("lib/f", "file", b"1"),
                              ("abs", "sym", "/opt/real"), ("abs/g", "file", b"2"), ("out", "sym", "/etc/passwd"),
                              ("h", "hard", "lib/f")])
    do_copy(SourceFS(src, "ctx"), ["ok.tar"], image_root, "/opt/", unpack=True)
    got = files(image_root / "opt")
    assert got == {"/real": "dir", "/real/f": "1", "/real/g": "2", "/lib": "-> real", "/abs": "-> /opt/real",
                   "/out": "-> /etc/passwd", "/h": "1"}, "a link out of the destination is kept as a link"


def test_not_an_archive_is_copied(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain.tar.gz").write_bytes(b"not really")
    dst = tmp_path / "root"
    dst.mkdir()
    assert not is_archive(src / "plain.tar.gz")
    do_copy(SourceFS(src, "ctx"), ["plain.tar.gz"], dst, "/d/", unpack=True)
    assert (dst / "d" / "plain.tar.gz").read_bytes() == b"not really"


# ---------------------------------------------------------------------------
# --chmod: octal and symbolic (chmod(1), as BuildKit)

SYMBOLIC = ["u+x", "+x", "go-w", "a+X", "u=rw,g=r,o=r", "u+rw,g+r,o-x,o+w", "go=", "go=u-w",
            "u=rwx,go=u-w", "+w", "a-rwx,u+r", "g+s", "o=g", "ug+x,o-r", "u-x+w", "-r", "u+s,g-x"]


@pytest.mark.parametrize("spec", SYMBOLIC)
def test_symbolic_chmod_matches_chmod_1(tmp_path, spec):
    """The mode each copied entry gets is what chmod(1) (umask 022, as BuildKit's daemon) makes of its own."""
    from rootless.build.fscopy import parse_chmod

    import subprocess

    c = parse_chmod(spec)
    for is_dir in (False, True):
        for start in (0o666, 0o644, 0o755, 0o124, 0o000, 0o751):
            p = tmp_path / f"e-{int(is_dir)}-{start:o}"
            p.mkdir() if is_dir else p.touch()
            os.chmod(p, start)
            st_mode = os.stat(p).st_mode
            subprocess.run(["sh", "-c", 'umask 022 && chmod -- "$0" "$1"', spec, str(p)], check=True)
            want = stat.S_IMODE(os.stat(p).st_mode)
            os.chmod(p, 0o700)
            assert oct(c.apply(st_mode)) == oct(want), (spec, is_dir, oct(start))


def test_symbolic_chmod_bsd_where_gnu_differs():
    """BuildKit's parser is BSD's setmode: X tests the mode before any clause, X with = is ignored
    (GNU chmod looks at the mode so far and honours =X)."""
    from rootless.build.fscopy import parse_chmod

    assert parse_chmod("=rw,+X").apply(stat.S_IFREG | 0o755) == 0o755     # GNU: 0644
    assert parse_chmod("=rw,+X").apply(stat.S_IFREG | 0o644) == 0o644
    assert parse_chmod("a=rX").apply(stat.S_IFREG | 0o755) == 0o444       # GNU: 0555


def test_chmod_octal_and_errors():
    from rootless.build.fscopy import parse_chmod

    assert parse_chmod("0755").apply(stat.S_IFREG | 0o600) == 0o755
    assert parse_chmod("4755").apply(stat.S_IFDIR | 0o600) == 0o4755
    for bad in ("8", "07778", "10000", "1x"):
        with pytest.raises(CopyError, match="it should be octal string and between 0 and 07777"):
            parse_chmod(bad)
    for bad in ("u", "u+z", "x+u", "u+x,", "a+b", "ug", "+x,,-w"):
        with pytest.raises(CopyError, match="neither an octal mode"):
            parse_chmod(bad)


def test_symbolic_chmod_on_copy_and_archive(tree, tmp_path):
    """Relative to each entry's own mode: files and directories differ (X), archives too."""
    from rootless.build.fscopy import parse_chmod

    fs = SourceFS(tree, "ctx")
    dst = tmp_path / "root"
    dst.mkdir()
    os.chmod(tree / "dir" / "sub", 0o750)
    do_copy(fs, ["dir", "f1.txt"], dst, "/d/", mode=parse_chmod("go-w,a+X"))
    assert stat.S_IMODE(os.stat(dst / "d" / "a.txt").st_mode) == 0o644        # 0644 (umask), no x: no X
    assert stat.S_IMODE(os.stat(dst / "d" / "sub").st_mode) == 0o751         # a directory: X adds x
    assert stat.S_IMODE(os.stat(dst / "d" / "f1.txt").st_mode) == 0o751       # 0741 has x: X adds x
    src = tmp_path / "arch"
    src.mkdir()
    make_tar(src / "a.tar", [("top/", "dir", None), ("top/f", "file", b"data")])
    do_copy(SourceFS(src, "ctx"), ["a.tar"], dst, "/x", unpack=True, mode=parse_chmod("u+x"))
    assert stat.S_IMODE(os.stat(dst / "x" / "top").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dst / "x" / "top" / "f").st_mode) == 0o740
    write_content(dst, "/h", "EOF", "x", CopyOptions(mode=parse_chmod("+x")))
    assert stat.S_IMODE(os.stat(dst / "h").st_mode) == 0o755


# ---------------------------------------------------------------------------
# unreadable parts of the build context

@pytest.fixture
def locked_ctx(tmp_path):
    ctx = tmp_path / "ctx"
    for d in ("ok", "secret", "noexec", "open"):
        (ctx / d).mkdir(parents=True)
        (ctx / d / "f").write_text(d)
    (ctx / "open" / "private.key").write_text("k")
    os.chmod(ctx / "secret", 0)
    os.chmod(ctx / "noexec", 0o600)                     # listable, not searchable
    os.chmod(ctx / "open" / "private.key", 0)
    if os.access(ctx / "secret", os.R_OK):
        pytest.skip("running as root: nothing is unreadable")
    yield ctx
    for p in (ctx / "secret", ctx / "noexec", ctx / "open" / "private.key"):
        os.chmod(p, 0o700)


def test_unreadable_context_dirs_fail_the_copy_that_reaches_them(locked_ctx):
    from rootless.build.cachekey import FileHasher, content_digest

    cf = ContextFilter(locked_ctx, [])
    fs = ContextFS(locked_ctx, cf.walk(), unreadable=cf.unreadable)
    assert sorted(cf.unreadable) == ["noexec", "secret"]
    assert content_digest(fs, ["ok"], FileHasher())                      # other paths keep working
    for src, name in ((".", "/noexec"), ("secret", "/secret"), ("noexec", "/noexec"), ("*/f", "/noexec")):
        with pytest.raises(CopyError) as ei:
            content_digest(fs, [src], FileHasher())
        assert f"build context: cannot read the directory {name}: permission denied" in str(ei.value)
        assert ".dockerignore" in ei.value.hint
    with pytest.raises(CopyError, match="build context: cannot read /open/private.key: Permission denied"):
        content_digest(fs, ["open"], FileHasher())
    cf = ContextFilter(locked_ctx, ["secret", "noexec", "**/*.key"])   # excluded: never read, no error
    fs = ContextFS(locked_ctx, cf.walk(), unreadable=cf.unreadable)
    assert cf.unreadable == [] and content_digest(fs, ["."], FileHasher())


def test_source_fs_listdir_error_names_the_directory(locked_ctx):
    with pytest.raises(CopyError, match="stage x: cannot read the directory /secret: Permission denied"):
        SourceFS(locked_ctx, "stage x").listdir("secret")

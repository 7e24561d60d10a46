"""``rootless build -``: what stdin is (a tar, compressed or not, or a Dockerfile) and its safe extraction."""

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile

import pytest

from rootless.build.stdincontext import extract_context, read_dockerfile, read_head, sniff
from rootless.errors import BuildError, UsageError


def tar_bytes(members, fmt=tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, data, mode in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            if kind == "file":
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                ti.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                           "chr": tarfile.CHRTYPE}[kind]
                if kind in ("sym", "hard"):
                    ti.linkname = data
                tf.addfile(ti)
    return buf.getvalue()


CTX = [("./", "dir", None, 0o755), ("./Dockerfile", "file", b"FROM scratch\nCOPY . /\n", 0o644),
       ("./ro/", "dir", None, 0o555), ("./ro/f", "file", b"in a read-only dir", 0o444),
       ("./.wh.name", "file", b"a plain file here", 0o644), ("./l", "sym", "ro/f", 0o777),
       ("./h", "hard", "./ro/f", 0o444), ("./null", "chr", None, 0o666)]


def v7(data: bytes) -> bytes:
    """A tar whose first header has no ustar magic (old v7 format): recognised by its checksum."""
    b = bytearray(data)
    b[257:265] = b"\0" * 8
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\0 " % sum(b[:512])
    return bytes(b)


@pytest.mark.parametrize("data,kind", [
    (b"FROM scratch\nCOPY x /x\n", None),
    (b"FROM scratch\n" + b"# " * 400, None),
    (tar_bytes(CTX), "tar"),
    (tar_bytes(CTX, tarfile.USTAR_FORMAT), "tar"),
    (v7(tar_bytes(CTX, tarfile.USTAR_FORMAT)), "tar"),
    (gzip.compress(tar_bytes(CTX)), "gzip"),
    (bz2.compress(tar_bytes(CTX)), "bzip2"),
    (lzma.compress(tar_bytes(CTX)), "xz"),
    (b"\x28\xb5\x2f\xfd" + b"\0" * 20, "zstd"),
    (b"", None),
])
def test_sniff(data, kind):
    assert sniff(read_head(io.BytesIO(data))) == kind


def _extract(tmp_path, data, kind=None, warnings=None):
    dest = tmp_path / "ctx"
    dest.mkdir()
    stream = io.BytesIO(data)
    head = read_head(stream)
    extract_context(stream, head, kind or sniff(head), dest, (warnings if warnings is not None else []).append)
    return dest


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, bz2.compress, lzma.compress, "zstd"])
def test_extract_context(tmp_path, compress):
    if compress == "zstd":
        zstandard = pytest.importorskip("zstandard")
        compress = zstandard.ZstdCompressor().compress
    warnings: list = []
    dest = _extract(tmp_path, compress(tar_bytes(CTX)), warnings=warnings)
    try:
        assert (dest / "ro" / "f").read_bytes() == b"in a read-only dir"
        assert stat.S_IMODE(os.stat(dest / "ro").st_mode) == 0o555, "the directory's own mode, at the end"
        assert (dest / ".wh.name").read_bytes() == b"a plain file here", "no whiteouts in a context"
        assert os.readlink(dest / "l") == "ro/f" and os.stat(dest / "h").st_ino == os.stat(dest / "ro" / "f").st_ino
        assert not os.path.lexists(dest / "null") and "device node" in warnings[0]
        assert read_dockerfile(dest, None)[:2] == (b"FROM scratch\nCOPY . /\n", "Dockerfile")
    finally:
        os.chmod(dest / "ro", 0o755)


@pytest.mark.parametrize("members,message", [
    ([("../escape", "file", b"x", 0o644)], "climbs out"),
    ([("/abs", "file", b"x", 0o644)], "absolute path"),
    ([("lnk", "sym", "OUTSIDE", 0o777), ("lnk/f", "file", b"x", 0o644)], "which is not a directory"),
])
def test_extract_context_refuses_hostile_archives(tmp_path, members, message):
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [(n, k, str(outside) if d == "OUTSIDE" else d, m) for n, k, d, m in members]
    with pytest.raises(BuildError) as ei:
        _extract(tmp_path, tar_bytes(members))
    assert message in str(ei.value) and "the build context on stdin" in str(ei.value)
    assert "layer" not in str(ei.value)
    assert os.listdir(outside) == [] and not (tmp_path / "escape").exists()


def test_extract_context_broken_archives(tmp_path):
    with pytest.raises(BuildError, match="the build context on stdin \\(gzip\\) is not a valid tar archive"):
        _extract(tmp_path, gzip.compress(b"FROM scratch\n" * 100))
    (tmp_path / "b").mkdir()
    with pytest.raises(BuildError, match="the build context on stdin \\(xz\\) is not a valid tar archive"):
        _extract(tmp_path / "b", b"\xfd7zXZ\x00 but not really xz")


def test_read_dockerfile_stays_in_the_context(tmp_path):
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "Alt").write_text("FROM alt\n")
    (tmp_path / "host-file").write_text("FROM host\n")
    os.symlink(str(tmp_path / "host-file"), ctx / "Dockerfile")
    with pytest.raises(UsageError, match="the build context from stdin has no Dockerfile"):
        read_dockerfile(ctx, None)          # the link resolves inside the context, where nothing is
    assert read_dockerfile(ctx, "sub/Alt")[:2] == (b"FROM alt\n", "sub/Alt")
    assert read_dockerfile(ctx, "/../sub/Alt")[0] == b"FROM alt\n"
    (ctx / "Containerfile").write_text("FROM c\n")
    assert read_dockerfile(ctx, None)[:2] == (b"FROM c\n", "Containerfile")

"""The readers of rootless.image.compress keep the file-object contract tarfile.addfile needs:
read(n) returns n bytes unless the stream ends (a short read is taken for the end of data)."""

import gzip
import hashlib
import io
import random
import tarfile

import pytest

from rootless.image.compress import HashReader, decompressed


def _content(size: int) -> bytes:
    # half random (incompressible), half repetitive: output chunk edges fall everywhere
    rnd = random.Random(7)
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(300_000) + b"x" * rnd.randrange(1, 3_000_000)
    return bytes(out[:size])


class Dribble:
    """A raw stream that returns at most ``most`` bytes a read (a pipe, a socket)."""

    def __init__(self, data: bytes, most: int = 1000):
        self.f = io.BytesIO(data)
        self.most = most

    def read(self, n: int = -1) -> bytes:
        return self.f.read(min(n, self.most) if n is not None and n >= 0 else self.most)


def _compress(how: str, data: bytes) -> bytes:
    if how == "gzip":
        return gzip.compress(data, compresslevel=1)
    if how == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor(level=1).compress(data)
    return data


DATA = _content(13 << 20)


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("dribble", [False, True])
def test_reads_are_full_until_the_end(how, dribble):
    blob = _compress(how, DATA)
    raw = Dribble(blob, 4097) if dribble else io.BytesIO(blob)
    r = decompressed(raw)
    got = []
    for n in [16384, 1 << 20, 3, 5 << 20, 16384] * 100:
        b = r.read(n)
        got.append(b)
        if len(b) < n:
            assert r.read(n) == b""
            break
    assert b"".join(got) == DATA


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
def test_tarfile_addfile_copies_a_large_decompressed_layer(how):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tf:
        ti = tarfile.TarInfo("layer.tar")
        ti.size = len(DATA)
        tf.addfile(ti, decompressed(io.BytesIO(_compress(how, DATA))))
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r|") as tf:
        m = tf.next()
        assert hashlib.sha256(tf.extractfile(m).read()).digest() == hashlib.sha256(DATA).digest()


def test_hash_reader_reads_full_and_counts():
    seen = []
    h = HashReader(Dribble(DATA, 1000), progress=seen.append)
    assert len(h.read(1 << 20)) == 1 << 20
    rest = h.read()
    assert len(rest) == len(DATA) - (1 << 20) and h.read(10) == b""
    assert h.digest() == "sha256:" + hashlib.sha256(DATA).hexdigest() and h.count == len(DATA) == seen[-1]


def test_hash_reader_tees_each_piece_as_it_arrives():
    """The sink (blobs/partial/) gets every piece before the next raw read: a download killed
    while a full read waits keeps what came for a resume."""
    sink = io.BytesIO()
    seen = []

    class Watched(Dribble):
        def read(self, n=-1):
            seen.append(sink.tell())
            return super().read(n)

    h = HashReader(Watched(DATA[:5000], 1000), sink=sink)
    assert h.read(4096) == DATA[:4096]
    assert seen == [0, 1000, 2000, 3000, 4000]

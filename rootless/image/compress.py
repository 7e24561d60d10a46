"""Streams: hashing/counting readers and decompression (gzip, zstd, none) by magic.

Every reader here keeps the contract of a file: ``read(n)`` returns ``n``
bytes unless the stream ends, ``read()`` returns everything left.
``tarfile.addfile`` (``save``) takes a short read for the end of the data.
"""

from __future__ import annotations

import hashlib
import zlib

from rootless.errors import DigestMismatch, ImageError, LayerError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20


def _full(read, n: int) -> bytes:
    """``read(n)`` repeated until ``n`` bytes came or the stream ended."""
    b = read(n)
    if not b or len(b) >= n:
        return b
    parts = [b]
    got = len(b)
    while got < n:
        more = read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class HashReader:
    """Reads from ``raw``, hashing (sha256) and counting what passes through.

    ``sink`` (a file object) also gets every byte (tee); ``progress(n)``
    is called with the running total.
    """

    def __init__(self, raw, sink=None, progress=None, start: int = 0, hasher=None):
        self.raw = raw
        self.sink = sink
        self.progress = progress
        self.hasher = hasher or hashlib.sha256()
        self.count = start
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while True:
                b = self.read(CHUNK)
                if not b:
                    return b"".join(parts)
                parts.append(b)
        parts = []
        got = 0
        while got < n and not self.eof:
            b = self.raw.read(n - got)
            if not b:
                self.eof = True
                break
            # each piece goes to the sink as it comes: a killed download keeps it for a resume
            self.hasher.update(b)
            if self.sink is not None:
                self.sink.write(b)
            self.count += len(b)
            if self.progress is not None:
                self.progress(self.count)
            parts.append(b)
            got += len(b)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


class _GzipReader:
    """gzip (several members allowed) with zlib directly: faster than GzipFile."""

    def __init__(self, raw, first: bytes):
        self.raw = raw
        self.pending = first
        self.d = zlib.decompressobj(47)
        self.buf = b""
        self.pos = 0
        self.done = False

    def _fill(self) -> None:
        while not self.buf and not self.done:
            data = self.pending or self.raw.read(CHUNK)
            self.pending = b""
            if not data:
                if not self.d.eof:
                    raise LayerError("layer gzip stream is truncated")
                self.done = True
                return
            try:
                if self.d.eof:  # after a member: zero padding or another member
                    if data.strip(b"\0") == b"":
                        continue
                    self.d = zlib.decompressobj(47)
                # bounded output: a small blob may expand enormously
                out = self.d.decompress(data, 4 * CHUNK)
                self.pending = self.d.unconsumed_tail
                if self.d.eof and self.d.unused_data:
                    self.pending = self.d.unused_data
            except zlib.error as e:
                raise LayerError(f"layer is not valid gzip data: {e}") from None
            self.buf, self.pos = out, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while True:
                self._fill()
                if not self.buf:
                    return b"".join(chunks)
                chunks.append(self.buf[self.pos:] if self.pos else self.buf)
                self.buf, self.pos = b"", 0
        parts = []
        want = n
        while want > 0:
            if self.pos >= len(self.buf):
                self.buf, self.pos = b"", 0
                self._fill()
                if not self.buf:
                    break
            out = self.buf[self.pos:self.pos + want]
            self.pos += len(out)
            want -= len(out)
            parts.append(out)
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _Prefixed:
    def __init__(self, raw, first: bytes):
        self.raw = raw
        self.first = first

    def read(self, n: int = -1) -> bytes:
        if self.first:
            if n is None or n < 0:
                out = self.first + self.raw.read()
                self.first = b""
                return out
            out, self.first = self.first[:n], self.first[n:]
            if len(out) < n:
                out += _full(self.raw.read, n - len(out))
            return out
        if n is None or n < 0:
            return self.raw.read()
        return _full(self.raw.read, n)


class _FullReads:
    """Full reads from a reader that may return fewer bytes than asked for."""

    def __init__(self, raw):
        self.raw = raw

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.raw.read()
        return _full(self.raw.read, n)


def _zstd_reader(raw):
    try:
        import zstandard
    except ImportError:
        raise ImageError("this image has zstd-compressed layers and the Python module 'zstandard' is not installed",
                         hint="install it: pip install zstandard (or apt-get install python3-zstandard)") from None
    return _FullReads(zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, read_across_frames=True))


def decompressed(raw):
    """A reader of the uncompressed content of ``raw`` (detected by magic bytes)."""
    first = raw.read(4)
    while len(first) < 4:
        more = raw.read(4 - len(first))
        if not more:
            break
        first += more
    if first[:2] == GZIP_MAGIC:
        return _GzipReader(raw, first)
    if first[:4] == ZSTD_MAGIC:
        return _zstd_reader(_Prefixed(raw, first))
    return _Prefixed(raw, first)


def check_digest(got: str, want: str, what: str) -> None:
    if got != want:
        raise DigestMismatch(f"{what} {want} does not match its digest (content is {got})",
                             hint="the registry or the archive served corrupt data; try again, or report it to "
                                  "the registry's operator")

"""``rootless build -``: stdin is a Dockerfile, or a (compressed) tar of the build context.

As Docker: stdin that starts like a tar archive (a valid ustar/GNU/v7 header)
or a compressed stream (gzip, bzip2, xz, zstd magic) is the build context;
anything else is a Dockerfile, with no context at all.

The archive is extracted into a private directory with the layer extractor
(``rootless.image.extract.Extractor``: no name leaves the directory, no path
goes through a symlink), as the plain user: owners are not kept (COPY makes
them 0:0 anyway), ``.wh.*`` names are plain files, device nodes are skipped,
directories stay writable until the end so that read-only ones can be filled.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from rootless.errors import BuildError, ImageError, UsageError

COMPRESSIONS = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
HEAD = 512


def _tar_header(block: bytes) -> bool:
    """A valid tar header block (ustar, GNU or v7: its checksum matches), as Go's tar.Reader.Next."""
    if len(block) < HEAD:
        return False
    if block[257:262] == b"ustar":
        return True
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(field, 8)
    except ValueError:
        return False
    got = sum(block[:148]) + 8 * 32 + sum(block[156:HEAD])
    return block[0] != 0 and want == got


def sniff(head: bytes) -> str | None:
    """What stdin is from its first bytes: "tar", "gzip", "bzip2", "xz", "zstd", or None (a Dockerfile)."""
    for magic, kind in COMPRESSIONS:
        if head.startswith(magic):
            return kind
    return "tar" if _tar_header(head) else None


def read_head(stream) -> bytes:
    head = b""
    while len(head) < HEAD:
        b = stream.read(HEAD - len(head))
        if not b:
            break
        head += b
    return head


class _Chain:
    """``head`` then the rest of ``stream``; reads are full (up to EOF)."""

    def __init__(self, head: bytes, stream):
        self.head = head
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out, self.head = self.head + self.stream.read(), b""
            return out
        out, self.head = self.head[:n], self.head[n:]
        while len(out) < n:
            b = self.stream.read(n - len(out))
            if not b:
                break
            out += b
        return out


def _extractor_class():
    from rootless.image.extract import Extractor

    class ContextExtractor(Extractor):
        whiteouts = False

        def __init__(self, dest: str, warn):
            super().__init__(dest, max_uid=0, max_gid=0, single=True, warn=warn)
            self.modes: list[tuple[tuple[str, ...], int]] = []
            self.devices: list[str] = []

        def _ids(self, m):
            return -1, -1           # fchown(-1, -1): owners stay ours

        def _xattrs(self, fd, m):
            pass

        def member(self, tf, m):
            if m.ischr() or m.isblk():
                self.devices.append(m.name)
                return
            if m.isdir():
                import copy

                from rootless.image.extract import split_name

                key = tuple(split_name(m.name))
                if key:
                    self.modes.append((key, m.mode & 0o7777))
                m = copy.copy(m)
                m.mode = (m.mode & 0o7777) | 0o700   # writable and searchable while we fill it
            super().member(tf, m)

        def finish(self):
            from rootless.errors import LayerError

            super().finish()
            for key, mode in reversed(self.modes):       # children first; never through a symlink
                try:
                    os.fchmod(self._walk(key, "/".join(key), create=False), mode)
                except (LayerError, OSError):
                    pass                                 # replaced by a later entry
            if self.devices:
                self.warn(f"the build context from stdin has {len(self.devices)} device node(s) (e.g. "
                          f"{self.devices[0]!r}): skipped")

    return ContextExtractor


def _read_errors() -> tuple:
    import lzma
    import zlib

    errors: tuple = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    return errors


def extract_context(stream, head: bytes, kind: str, dest: Path, warn) -> None:
    """Extract the tar (``kind`` from ``sniff``) that ``head`` + ``stream`` make into ``dest`` (empty)."""
    raw = _Chain(head, stream)
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise UsageError("the build context on stdin is zstd-compressed and the Python module 'zstandard' is "
                             "not installed", hint="install it (apt-get install python3-zstandard) or send "
                                                   "the tar uncompressed or gzip-compressed") from None
        raw = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20, read_across_frames=True)
    ex = _extractor_class()(str(dest), warn)
    what = "the build context on stdin" + ("" if kind == "tar" else f" ({kind})")
    try:
        try:
            tf = tarfile.open(fileobj=raw, mode="r|*" if kind != "zstd" else "r|", errorlevel=2)
            n = 0
            for m in tf:
                ex.member(tf, m)
                n += 1
            if n == 0 and kind != "tar":
                raise BuildError(f"{what} is not a tar archive: it holds no entries")
            ex.finish()
        except _read_errors() as e:        # the archive or its compression is broken
            raise BuildError(f"{what} is not a valid tar archive: {e}",
                             hint="send a tar of the context (tar -c . | rootless build -), or a Dockerfile "
                                  "alone") from None
        except ImageError as e:    # LayerError of the extractor: a hostile or broken archive
            msg = e.message.replace("hostile layer", "hostile archive").replace("broken layer", "broken archive")
            msg = msg.replace("the layer", "the context").replace("layer entry", "entry")
            raise BuildError(f"{what}: {msg}", hint="nothing of it was used") from None
    finally:
        ex.close()


def read_dockerfile(context: Path, name: str | None) -> tuple[bytes, str, Path]:
    """The Dockerfile of an extracted context: ``name`` (-f, a path inside it) or Dockerfile / Containerfile;
    symlinks resolved inside the context, never on the host."""
    from rootless.build.fscopy import CopyError, SourceFS, root_path

    fs = SourceFS(context, "build context")
    candidates = [name] if name else ["Dockerfile", "Containerfile"]
    for c in candidates:
        try:
            rel = root_path(fs, c)
        except CopyError as e:
            raise UsageError(f"cannot read the Dockerfile {c!r} of the build context from stdin: {e.message}"
                             ) from None
        try:
            fd = os.open(context / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise UsageError(f"cannot read the Dockerfile {c!r} of the build context from stdin: "
                             f"{e.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"the Dockerfile {c!r} of the build context from stdin is not a file")
            return f.read(), c, context / rel
    raise UsageError(f"the build context from stdin has no {name or 'Dockerfile'}",
                     hint="put a Dockerfile at the top of the archive, or name it with -f PATH (inside the "
                          "archive)")

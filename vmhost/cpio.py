"""A cpio "newc" writer: the initramfs of the guest and its per-machine seed.

The kernel unpacks concatenated archives in order, so the per-machine seed
(scripts, keys, the rootless code) is simply appended to the cached base
archive (busybox and the modules that reach the root disk); a file in the
seed replaces one of the same name in the base.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterable

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    name: str            # path inside the archive, without a leading "/"
    mode: int            # full st_mode (type and permissions)
    data: bytes = b""    # file contents, or the symlink target
    uid: int = 0
    gid: int = 0
    mtime: int = 0


def file(name: str, data: bytes | str, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data.encode() if isinstance(data, str) else data)


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def _pad(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write(out: BinaryIO, entries: Iterable[Entry], first_ino: int = 1) -> int:
    """Write ``entries`` and the trailer; returns the next free inode number."""
    ino = first_ino
    for e in list(entries) + [Entry(TRAILER, 0)]:
        name = e.name.lstrip("/").encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        fields = (ino, e.mode, e.uid, e.gid, nlink, e.mtime, len(e.data), 0, 0, 0, 0, len(name), 0)
        hdr = b"070701" + b"".join(b"%08x" % v for v in fields)
        out.write(hdr + name + _pad(len(hdr) + len(name)))
        out.write(e.data + _pad(len(e.data)))
        ino += 1
    return ino


def tree(src: str, prefix: str, *, exclude: Iterable[str] = ()) -> list[Entry]:
    """Entries for the directory tree ``src`` under ``prefix`` (owners: root)."""
    skip = set(exclude)
    entries = [directory(prefix)]
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        rel_root = os.path.relpath(root, src)
        for n in sorted(dirs) + sorted(f for f in files if f not in skip):
            p = os.path.join(root, n)
            rel = os.path.normpath(os.path.join(prefix, rel_root, n))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                entries.append(symlink(rel, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(directory(rel, stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    entries.append(file(rel, f.read(), stat.S_IMODE(st.st_mode)))
    return entries


def read(data: bytes) -> list[Entry]:
    """Parse concatenated newc archives (for tests and inspection)."""
    entries: list[Entry] = []
    pos = 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != b"070701":
            # padding between concatenated archives
            if data[pos] == 0:
                pos += 1
                continue
            raise ValueError(f"not a newc cpio archive at offset {pos}")
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        start = pos + 110
        name = data[start:start + namesize - 1].decode()
        dstart = start + namesize
        dstart += (4 - dstart % 4) % 4
        body = data[dstart:dstart + filesize]
        pos = dstart + filesize
        pos += (4 - pos % 4) % 4
        if name == TRAILER:
            continue
        entries.append(Entry(name, f[1], body, f[2], f[3], f[5]))
    return entries

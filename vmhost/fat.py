"""A FAT12 image writer: the cloud-init NoCloud seed disk (label CIDATA) of a
machine booted from a cloud image, made without mkfs.vfat, mtools or an ISO
tool, on any host OS.

    data = fat.image([("meta-data", b"..."), ("user-data", b"...")], label="CIDATA")

Files go in the root directory with VFAT long names (Linux reads them as
given); no subdirectories. The cluster size grows with the content so that
the cluster count stays below 4085 (what makes a volume FAT12).
"""

from __future__ import annotations

import re
import struct

SECTOR = 512
ROOT_ENTRIES = 128            # 4 KiB of directory: label + ~40 files with long names
MAX_FAT12_CLUSTERS = 4084
_SHORT_OK = re.compile(r"[^A-Z0-9!#$%&'()@^_`{}~-]")
_DOS_DATE = (0 << 9) | (1 << 5) | 1   # 1980-01-01


def _short_names(names: list[str]) -> list[bytes]:
    out = []
    for i, n in enumerate(names, 1):
        base = _SHORT_OK.sub("", n.upper().replace(".", ""))[:6] or "FILE"
        tail = f"~{i}"
        out.append((base[:8 - len(tail)] + tail).ljust(8).encode() + b"   ")
    return out


def _checksum(short: bytes) -> int:
    s = 0
    for c in short:
        s = (((s & 1) << 7) + (s >> 1) + c) & 0xFF
    return s


def _lfn_entries(name: str, short: bytes) -> list[bytes]:
    units = list(name.encode("utf-16-le"))
    chars = [units[i] | (units[i + 1] << 8) for i in range(0, len(units), 2)]
    if len(chars) % 13:
        chars.append(0)
        while len(chars) % 13:
            chars.append(0xFFFF)
    parts = [chars[i:i + 13] for i in range(0, len(chars), 13)]
    csum = _checksum(short)
    entries = []
    for seq, part in enumerate(parts, 1):
        order = seq | (0x40 if seq == len(parts) else 0)
        e = struct.pack("<B5HBBB6HH2H", order, *part[:5], 0x0F, 0, csum, *part[5:11], 0, *part[11:13])
        entries.append(e)
    return list(reversed(entries))   # the last part comes first on disk


def _entry(name11: bytes, attr: int, cluster: int = 0, size: int = 0) -> bytes:
    return struct.pack("<11sBBBHHHHHHHI", name11, attr, 0, 0, 0, _DOS_DATE, _DOS_DATE, 0, 0, _DOS_DATE,
                       cluster, size)


def _pack_fat12(entries: list[int], nbytes: int) -> bytes:
    out = bytearray(nbytes)
    for i, v in enumerate(entries):
        off = i * 3 // 2
        if i % 2 == 0:
            out[off] = v & 0xFF
            out[off + 1] = (out[off + 1] & 0xF0) | ((v >> 8) & 0x0F)
        else:
            out[off] = (out[off] & 0x0F) | ((v << 4) & 0xF0)
            out[off + 1] = (v >> 4) & 0xFF
    return bytes(out)


def image(files: list[tuple[str, bytes]], label: str = "CIDATA", volume_id: int = 0x52544C53) -> bytes:
    """A FAT12 volume (no partition table) holding ``files`` in its root directory."""
    names = [n for n, _ in files]
    if len(set(n.lower() for n in names)) != len(names):
        raise ValueError("duplicate file names")
    for n in names:
        if not n or "/" in n or "\\" in n or len(n) > 255:
            raise ValueError(f"bad file name {n!r}")
    label11 = label.upper().encode("ascii")[:11].ljust(11)
    data_bytes = [len(d) for _, d in files]
    spc = 1
    while True:
        csize = spc * SECTOR
        needed = sum(-(-n // csize) for n in data_bytes)
        if needed + 8 <= MAX_FAT12_CLUSTERS:
            break
        spc *= 2
        if spc > 64:
            raise ValueError("too much data for a FAT12 seed volume")
    clusters = needed + 8
    fat_sectors = -(-((clusters + 2) * 3 // 2 + 1) // SECTOR)
    root_sectors = ROOT_ENTRIES * 32 // SECTOR
    reserved = 1
    data_start = reserved + 2 * fat_sectors + root_sectors
    total = data_start + clusters * spc
    boot = bytearray(SECTOR)
    boot[0:3] = b"\xEB\x3C\x90"
    boot[3:11] = b"MSWIN4.1"
    struct.pack_into("<HBHBHHBHHHII", boot, 11, SECTOR, spc, reserved, 2, ROOT_ENTRIES,
                     total if total < 65536 else 0, 0xF8, fat_sectors, 32, 64, 0, total if total >= 65536 else 0)
    struct.pack_into("<BBBI11s8s", boot, 36, 0x80, 0, 0x29, volume_id, label11, b"FAT12   ")
    boot[510:512] = b"\x55\xAA"

    fat = [0xFF8, 0xFFF]
    root = [_entry(label11, 0x08)]
    body = bytearray()
    for (name, data), short in zip(files, _short_names(names)):
        n = -(-len(data) // (spc * SECTOR))
        first = len(fat) if n else 0
        if n:
            fat += [first + k + 1 for k in range(n - 1)] + [0xFFF]
        root += _lfn_entries(name, short)
        root.append(_entry(short, 0x20, first, len(data)))
        body += data + b"\0" * (n * spc * SECTOR - len(data))
    if len(root) > ROOT_ENTRIES:
        raise ValueError("too many files for the seed volume's root directory")
    fat += [0] * (clusters + 2 - len(fat))
    fat_bytes = _pack_fat12(fat, fat_sectors * SECTOR)
    rootdir = b"".join(root).ljust(root_sectors * SECTOR, b"\0")
    out = bytes(boot) + fat_bytes + fat_bytes + rootdir + bytes(body)
    return out.ljust(total * SECTOR, b"\0")

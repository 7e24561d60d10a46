"""vmhost.cloud and vmhost.fat, pure parts: partition tables, ext4
superblocks, kernel formats, kernel choice, the NoCloud seed, the FAT image."""

from __future__ import annotations

import io
import json
import stat
import struct
import uuid
import zlib

import pytest

from vmhost import cloud as C
from vmhost import fat
from vmhost import qemu as Q
from vmhost.spec import MachineSpec

SPEC = MachineSpec(name="dev", arch="x86_64", cpus=2, memory_mib=2048, disk_gib=20, accel="auto",
                   image="/img", user="alice", uid=1000, gid=1000, home="/home/alice", created="2024-01-01T00:00:00Z")
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def _gpt(parts: list[tuple[str, int, int]]) -> bytes:
    disk = bytearray(64 * 1024)
    hdr = bytearray(92)
    hdr[0:8] = b"EFI PART"
    struct.pack_into("<QII", hdr, 72, 2, 128, 128)
    disk[512:512 + 92] = hdr
    for i, (t, first, last) in enumerate(parts):
        e = bytearray(128)
        e[0:16] = uuid.UUID(t).bytes_le
        struct.pack_into("<QQ", e, 32, first, last)
        off = 1024 + i * 128
        disk[off:off + 128] = e
    disk[510:512] = b"\x55\xaa"
    return bytes(disk)


def test_gpt_partitions():
    parts = C.read_partitions(io.BytesIO(_gpt([("21686148-6449-6E6F-744E-656564454649", 2048, 8191),
                                               (LINUX, 32768, 99999)])))
    assert parts == [C.Partition(1, 2048 * 512, 6144 * 512, "21686148-6449-6E6F-744E-656564454649"),
                     C.Partition(2, 32768 * 512, (99999 - 32768 + 1) * 512, LINUX)]


def test_mbr_partitions_skip_extended_and_empty():
    disk = bytearray(1024)
    for i, (t, lba, n) in enumerate([(0x83, 2048, 1000), (0x05, 5000, 100), (0, 0, 0), (0x0C, 9000, 50)]):
        struct.pack_into("<B3sB3sII", disk, 446 + 16 * i, 0, b"", t, b"", lba, n)
    disk[510:512] = b"\x55\xaa"
    assert C.read_partitions(io.BytesIO(bytes(disk))) == [C.Partition(1, 2048 * 512, 1000 * 512, "0x83"),
                                                          C.Partition(4, 9000 * 512, 50 * 512, "0x0c")]


def test_no_partition_table():
    assert C.read_partitions(io.BytesIO(b"\0" * 4096)) == []
    assert C.read_partitions(io.BytesIO(b"short")) == []


def test_damaged_gpt_is_an_error():
    disk = bytearray(_gpt([]))
    struct.pack_into("<QII", disk, 512 + 72, 2, 100000, 128)
    with pytest.raises(Exception, match="GPT header is damaged"):
        C.read_partitions(io.BytesIO(bytes(disk)))


def test_ext4_superblock():
    sb = bytearray(1024)
    sb[56:58] = b"\x53\xef"
    u = uuid.UUID("3f0c6a2e-5b1d-4c8e-9a27-6d4b1e0f7c55")
    sb[104:120] = u.bytes
    sb[120:136] = b"cloudimg-rootfs\0"
    assert C.ext4_superblock(bytes(sb)) == C.Ext4(str(u), "cloudimg-rootfs")
    assert C.ext4_superblock(b"\0" * 1024) is None


def test_kernel_arch():
    bz = bytearray(0x400)
    bz[0x202:0x206] = b"HdrS"
    arm = bytearray(0x400)
    arm[0x38:0x3C] = b"ARM\x64"
    co = zlib.compressobj(wbits=31)
    gz = co.compress(bytes(arm)) + co.flush()
    zboot = b"MZ\0\0zimg" + b"\0" * 100
    assert [C.kernel_arch(bytes(x)) for x in (bz, arm, gz, zboot, b"\0" * 1024)] == \
        ["x86_64", "aarch64", "aarch64", "aarch64", None]


def test_parse_debugfs_ls():
    text = ("/12/040755/0/0/.//\n/2/040755/0/0/..//\n/13/100644/0/0/vmlinuz-6.1.0-9-amd64/6/\n"
            "/14/120777/0/0/vmlinuz/20/\n/15/040755/0/0/grub//\n\n")
    assert C.parse_ls(text) == {"vmlinuz-6.1.0-9-amd64": 0o100644, "vmlinuz": 0o120777, "grub": 0o040755}


def test_pick_kernel():
    f, d, link = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777
    boot = {"vmlinuz-6.1.0-9-amd64": f, "initrd.img-6.1.0-9-amd64": f, "vmlinuz-6.1.0-10-amd64": f,
            "initrd.img-6.1.0-10-amd64": f, "vmlinuz-6.1.0-11-amd64": f, "vmlinuz": link, "initrd.img": link,
            "grub": d, "vmlinuz-6.5.0-1-amd64": f, "initrd.img-6.5.0-1-amd64": d,
            "vmlinuz-7.0-x y": f, "initrd.img-7.0-x y": f}
    assert C.pick_kernel(boot, {"6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-11-amd64", "6.5.0-1-amd64"}) == \
        ("vmlinuz-6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64", "6.1.0-10-amd64")
    assert C.pick_kernel(boot, {"6.1.0-9-amd64"})[2] == "6.1.0-9-amd64"
    # Fedora's names
    assert C.pick_kernel({"vmlinuz-6.8.5-301.fc40.x86_64": f, "initramfs-6.8.5-301.fc40.x86_64.img": f}, set()) == \
        ("vmlinuz-6.8.5-301.fc40.x86_64", "initramfs-6.8.5-301.fc40.x86_64.img", "6.8.5-301.fc40.x86_64")
    assert C.pick_kernel({"vmlinuz-6.1": f}, set()) is None


def test_cmdline_boots_the_root_uuid_with_nocloud():
    line = C.cmdline("ttyS0", "UUID=abc")
    assert line.split()[:3] == ["root=UUID=abc", "ro", "console=ttyS0"] and "ds=nocloud" in line.split()


def test_seed_user_data_is_cloud_config_json():
    ud = C.user_data()
    assert ud.startswith("#cloud-config\n")
    cfg = json.loads(ud.split("\n", 1)[1])
    assert cfg["users"] == [] and cfg["ssh_genkeytypes"] == [] and "rootless-guest: ready" in cfg["final_message"]
    assert "virtio-rootless-seed" in cfg["bootcmd"][0][2]
    md = json.loads(C.meta_data(SPEC))
    assert md["local-hostname"] == "dev" and md["instance-id"] == C.instance_id(SPEC)
    assert C.instance_id(SPEC) != C.instance_id(SPEC.with_changes(created="2025-01-01T00:00:00Z"))
    files = dict(C.seed_files(SPEC, "ssh-ed25519 AAAA k", b"HOSTKEY", b"code", "RL_USER=alice\n",
                              C.sshd_conf(SPEC, "/var/lib/rootless/store")))
    assert files["authorized_keys"] == b"ssh-ed25519 AAAA k\n" and files["ssh_host_ed25519_key"] == b"HOSTKEY"
    assert b"AuthorizedKeysFile /etc/ssh/authorized_keys/%u" in files["sshd.conf"]
    assert files["rootless-boot"].startswith(b"#!/bin/sh")


def test_qemu_argv_of_a_cloud_image():
    launch = Q.Launch(qemu="/q", accel="tcg", kernel="/img/vmlinuz-6.1", initrd="/img/initrd.img-6.1",
                      console="ttyS0", disk="/m/disk.qcow2", ssh_port=2222, qmp="/r/qmp", pidfile="/r/pid",
                      serial_log="/m/serial.log", append=C.cmdline("ttyS0", "UUID=u"), seed_disk="/m/seed.img")
    argv = Q.qemu_argv(SPEC, launch)
    assert argv[argv.index("-append") + 1] == C.cmdline("ttyS0", "UUID=u")
    assert argv[argv.index("-initrd") + 1] == "/img/initrd.img-6.1"
    assert "if=none,id=seed0,file=/m/seed.img,format=raw,readonly=on" in argv
    assert "virtio-blk-pci,drive=seed0,serial=rootless-seed" in argv


# ---------------------------------------------------------------- FAT

def _read_fat12(img: bytes) -> dict[str, bytes]:
    """A minimal independent reader: root directory + FAT chains."""
    bps, spc, res, nfats, rootents, tot16, _m, fatsz = struct.unpack_from("<HBHBHHBH", img, 11)
    assert img[510:512] == b"\x55\xaa" and bps == 512
    fat_off = res * bps
    root_off = fat_off + nfats * fatsz * bps
    data_off = root_off + rootents * 32
    fat_t = img[fat_off:fat_off + fatsz * bps]

    def nxt(c):
        v = struct.unpack_from("<H", fat_t, c * 3 // 2)[0]
        return (v >> 4) if c & 1 else (v & 0xFFF)

    out, lfn = {}, []
    for i in range(rootents):
        e = img[root_off + 32 * i:root_off + 32 * (i + 1)]
        if e[0] == 0:
            break
        if e[11] == 0x0F:
            name = (e[1:11] + e[14:26] + e[28:32]).decode("utf-16-le")
            lfn.insert(0, name.split("\0")[0])
            continue
        if e[11] & 0x08:
            out[":label"] = e[:11].rstrip()
            continue
        name = "".join(lfn)
        lfn = []
        c, size = struct.unpack_from("<H", e, 26)[0], struct.unpack_from("<I", e, 28)[0]
        data = b""
        while c and c < 0xFF8:
            off = data_off + (c - 2) * spc * bps
            data += img[off:off + spc * bps]
            c = nxt(c)
        out[name] = data[:size]
    return out


def test_fat_image_roundtrip():
    big = bytes(range(256)) * 20000   # 5 MB: clusters grow past 512 bytes
    files = [("meta-data", b"instance-id: x\n"), ("user-data", b"#cloud-config\n{}\n"), ("rootless.tar", big),
             ("empty", b""), ("a-long-name-with-more-than-thirteen-characters.txt", b"long")]
    img = fat.image(files, label="cidata")
    got = _read_fat12(img)
    assert got.pop(":label") == b"CIDATA"
    assert got == dict(files)
    assert img[54:62] == b"FAT12   " and img[43:54] == b"CIDATA     "
    # a FAT12 volume: fewer than 4085 clusters
    spc = img[13]
    tot = struct.unpack_from("<H", img, 19)[0] or struct.unpack_from("<I", img, 32)[0]
    assert tot // spc < 4085 and spc > 1


def test_fat_refuses_bad_names():
    with pytest.raises(ValueError):
        fat.image([("a/b", b"")])
    with pytest.raises(ValueError):
        fat.image([("x", b""), ("X", b"")])

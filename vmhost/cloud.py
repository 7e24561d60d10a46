"""Cloud images: ``rootless machine init --image debian-12-genericcloud-amd64.qcow2``.

A Debian/Ubuntu-style cloud disk image (qcow2 or raw; .img files are either)
boots with its own kernel and initramfs, provisioned by cloud-init from a
NoCloud seed, and gets the host's rootless code at every start, like the
project's own guest image.

Import (once per image content; cached next to the built guest images)::

    cache/cloud-KEY/  image.json, disk.qcow2, vmlinuz-VER, initrd.img-VER

``qemu-img info`` tells the format; the disk is copied into the cache
(qcow2 as it is, anything else converted to qcow2) so that machines keep
working when the download is deleted. A temporary raw view is read without
root: the partition table (GPT or MBR, parsed here), the ext4 file systems in
it (their superblocks give the UUIDs), the root one (it has /etc and /usr),
its newest kernel with an initramfs and modules (in /boot or on a separate
/boot partition), taken out with ``debugfs`` (e2fsprogs): no loop device, no
mount, no bootloader. Measured on this project's TCG host, a direct kernel
boot also skips the firmware and GRUB.

Boot: ``-kernel``/``-initrd`` from the image, ``root=UUID=...``, ``ds=nocloud``
and a second disk, the seed (FAT, label CIDATA, ``vmhost.fat``), rewritten
at every start::

    meta-data        instance-id (fixed per machine: cloud-init provisions once),
                     local-hostname
    user-data        #cloud-config: no default user, no generated host keys,
                     bootcmd = run rootless-boot from this disk at every boot,
                     final_message = "rootless-guest: ready ..." (what start waits for)
    rootless-boot    vmhost/guest/cloud-boot: the user (same name, uid, gid, home),
                     SSH (the machine's key, the pinned host key), subuid/subgid,
                     the packages rootless needs (apt-get, only when missing),
                     the home over 9p when the kernel has it, the rootless code
    machine.env, authorized_keys, ssh_host_ed25519_key, rootless.tar, rootless.hash

The user's keys go to /etc/ssh/authorized_keys/USER (never into the shared
home), and sshd gets its host key from the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rootless.errors import HelperFailed, MachineError

CLOUD_FORMAT = 1
GIB = 1 << 30
SEED_SERIAL = "rootless-seed"
GUEST_DIR = Path(__file__).resolve().parent / "guest"

_NAME_OK = re.compile(r"^[A-Za-z0-9._+~-]+\Z")
_KERNEL = re.compile(r"^(?:vmlinuz|vmlinux|Image)-(.+)\Z")
_INITRD = ("initrd.img-{v}", "initramfs-{v}.img", "initrd-{v}", "initrd-{v}.img")


# ---------------------------------------------------------------- reading a disk (pure)

@dataclass(frozen=True)
class Partition:
    number: int
    start: int          # bytes from the start of the disk
    size: int           # bytes
    type: str           # GPT type GUID (upper case) or MBR type as "0x83"


def read_partitions(f, sector: int = 512) -> list[Partition]:
    """The partitions of the disk in file object ``f`` (GPT, else MBR; [] without a table)."""
    f.seek(0)
    head = f.read(2 * sector)
    if len(head) < 2 * sector:
        return []
    if head[sector:sector + 8] == b"EFI PART":
        entries_lba, count, esize = struct.unpack_from("<QII", head, sector + 72)
        if not (0 < count <= 1024 and 128 <= esize <= 1024):
            raise MachineError("the disk's GPT header is damaged")
        f.seek(entries_lba * sector)
        table = f.read(count * esize)
        out = []
        for i in range(count):
            e = table[i * esize:(i + 1) * esize]
            if len(e) < 56 or e[:16] == b"\0" * 16:
                continue
            first, last = struct.unpack_from("<QQ", e, 32)
            if last < first:
                continue
            out.append(Partition(i + 1, first * sector, (last - first + 1) * sector,
                                 str(uuid.UUID(bytes_le=e[:16])).upper()))
        return out
    if head[510:512] != b"\x55\xaa":
        return []
    out = []
    for i in range(4):
        e = head[446 + 16 * i:446 + 16 * (i + 1)]
        ptype = e[4]
        lba, n = struct.unpack_from("<II", e, 8)
        if ptype == 0 or n == 0 or ptype in (0x05, 0x0F, 0x85, 0xEE):
            continue
        out.append(Partition(i + 1, lba * sector, n * sector, f"0x{ptype:02x}"))
    return out


@dataclass(frozen=True)
class Ext4:
    uuid: str
    label: str


def ext4_superblock(sb: bytes) -> Ext4 | None:
    """UUID and label from the 1 KiB at offset 1024 of an ext2/3/4 file system."""
    if len(sb) < 136 or sb[56:58] != b"\x53\xef":
        return None
    return Ext4(str(uuid.UUID(bytes=sb[104:120])), sb[120:136].split(b"\0")[0].decode("utf-8", "replace"))


def kernel_arch(data: bytes) -> str | None:
    """x86_64 for a bzImage, aarch64 for an arm64 Image (plain, gzip or EFI zboot)."""
    if data[0x202:0x206] == b"HdrS":
        return "x86_64"
    if data[0x38:0x3C] == b"ARM\x64":
        return "aarch64"
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        return "aarch64"
    if data[:2] == b"\x1f\x8b":
        import zlib

        head = zlib.decompressobj(31).decompress(data, 0x100)
        return "aarch64" if head[0x38:0x3C] == b"ARM\x64" else None
    return None


def parse_ls(text: str) -> dict[str, int]:
    """``debugfs -R 'ls -p DIR'`` -> {name: st_mode}."""
    out = {}
    for line in text.splitlines():
        parts = line.split("/")
        if len(parts) >= 7 and parts[0] == "" and parts[2]:
            try:
                out[parts[5]] = int(parts[2], 8)
            except ValueError:
                continue
    out.pop(".", None)
    out.pop("..", None)
    return out


def _version_key(v: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|[A-Za-z]+", v)]


def pick_kernel(boot: dict[str, int], module_versions: set[str]) -> tuple[str, str, str] | None:
    """(kernel file, initrd file, version): the newest kernel in ``boot`` (a
    directory listing) with an initramfs and modules."""
    import stat

    found = []
    for name, mode in boot.items():
        m = _KERNEL.match(name)
        if not m or not stat.S_ISREG(mode) or not _NAME_OK.match(name):
            continue
        v = m.group(1)
        if v.endswith((".old", ".bak")) or (module_versions and v not in module_versions):
            continue
        for pat in _INITRD:
            i = pat.format(v=v)
            if i in boot and stat.S_ISREG(boot[i]):
                found.append((v, name, i))
                break
    if not found:
        return None
    v, k, i = max(found, key=lambda t: _version_key(t[0]))
    return k, i, v


def cmdline(console: str, root: str) -> str:
    return " ".join([f"root={root}", "ro", f"console={console}", "ds=nocloud", "panic=-1", "net.ifnames=0",
                     "8250.nr_uarts=1", "random.trust_cpu=on"])


# ---------------------------------------------------------------- the seed (pure)

def instance_id(spec) -> str:
    return "rootless-" + hashlib.sha256(f"{spec.name}\0{spec.created}".encode()).hexdigest()[:16]


def meta_data(spec) -> str:
    return json.dumps({"instance-id": instance_id(spec), "local-hostname": spec.name}, indent=1) + "\n"


def user_data() -> str:
    """The #cloud-config (JSON is YAML): everything else is in rootless-boot."""
    boot = (f"d=/dev/disk/by-id/virtio-{SEED_SERIAL}; n=0; "
            f"while [ ! -e $d ] && [ $n -lt 100 ]; do n=$((n+1)); sleep 0.1; done; "
            "m=$(mktemp -d) && mount -o ro $d $m && rm -rf /run/rootless-seed && mkdir -m 0700 /run/rootless-seed "
            "&& cp -r $m/. /run/rootless-seed/; umount $m; rmdir $m; "
            "sh /run/rootless-seed/rootless-boot")
    cfg = {
        "users": [],
        "disable_root": False,
        "ssh_deletekeys": False,
        "ssh_genkeytypes": [],
        "preserve_hostname": False,
        "locale": "C.UTF-8",          # no locale generation on the first boot
        "bootcmd": [["sh", "-c", boot]],
        "final_message": "rootless-guest: ready in $UPTIME s (cloud-init $VERSION)",
    }
    return "#cloud-config\n" + json.dumps(cfg, indent=1) + "\n"


def seed_files(spec, authorized_key: str, host_key: bytes, code: bytes, machine_env: str,
               sshd_conf: str) -> list[tuple[str, bytes]]:
    return [
        ("meta-data", meta_data(spec).encode()),
        ("user-data", user_data().encode()),
        ("rootless-boot", (GUEST_DIR / "cloud-boot").read_bytes()),
        ("machine.env", machine_env.encode()),
        ("sshd.conf", sshd_conf.encode()),
        ("authorized_keys", (authorized_key.strip() + "\n").encode()),
        ("ssh_host_ed25519_key", host_key),
        ("rootless.tar", code),
        ("rootless.hash", (hashlib.sha256(code).hexdigest() + "\n").encode()),
    ]


def sshd_conf(spec, guest_store: str) -> str:
    """sshd drop-in of a cloud guest (Include'd first: first values win)."""
    return (f"# rootless machine {spec.name}\n"
            "HostKey /run/rootless-seed/ssh_host_ed25519_key\n"
            "AuthorizedKeysFile /etc/ssh/authorized_keys/%u\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\nPrintLastLog no\n"
            "MaxStartups 100:30:200\nMaxSessions 100\nAllowTcpForwarding yes\n"
            "AcceptEnv LANG LC_* TERM COLORTERM\n"
            f"SetEnv ROOTLESS_ROOT={guest_store} LANG=C.UTF-8\n")


def write_seed(dest: Path, files: list[tuple[str, bytes]]) -> None:
    """The seed disk (mode 0600: it holds the host key), atomically."""
    from vmhost import fat

    data = fat.image(files, label="CIDATA")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- import

def _qemu_img_info(qemu_img: str, path: Path) -> dict:
    from rootless import hosttools

    cp = hosttools.run([qemu_img, "info", "--output=json", str(path)], f"read the disk image {path} (qemu-img info)",
                       timeout=60, check=False)
    if cp.returncode != 0:
        raise MachineError(f"{path} is not a disk image qemu-img can read: "
                           f"{cp.stderr.decode(errors='replace').strip().splitlines()[-1:] or ''}",
                           hint="give --image a cloud image (.qcow2, .img, .raw) or a rootless guest image directory")
    return json.loads(cp.stdout)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Debugfs:
    def __init__(self, exe: str, raw: Path, offset: int):
        self.exe, self.dev = exe, f"{raw}?offset={offset}"

    def run(self, request: str, cwd: Path | None = None) -> str:
        from rootless import hosttools

        cp = hosttools.run([self.exe, "-c", "-R", request, self.dev], f"read the image's file system ({request})",
                           timeout=300, check=False, cwd=str(cwd) if cwd else None)
        if cp.returncode != 0:
            raise HelperFailed(f"read the image's file system ({request})", cp.returncode,
                               cp.stderr.decode(errors="replace"))
        return cp.stdout.decode(errors="replace")

    def ls(self, path: str) -> dict[str, int]:
        return parse_ls(self.run(f"ls -p {path}"))


def import_image(source: Path, cache: Path, env: dict[str, str], probe, reporter):
    """The cached import of cloud image ``source`` (made first when missing)."""
    from vmhost import lock
    from vmhost.image import GuestImage
    from vmhost.qemu import find_program

    qemu_img = find_program("qemu-img", env, probe, "read the cloud image")
    info = _qemu_img_info(qemu_img, source)
    fmt = info.get("format", "")
    if info.get("encrypted"):
        raise MachineError(f"{source} is encrypted", hint="give --image an unencrypted cloud image")
    reporter.info(f"Importing the cloud image {source} ({fmt}, {info.get('virtual-size', 0) / GIB:.1f} GiB)")
    key = _sha256(source)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"cloud-{key[:16]}"
    if (final / "image.json").is_file():
        return GuestImage.load(final)
    with lock.locked(cache / f".cloud-{key[:16]}.lock"):
        if (final / "image.json").is_file():
            return GuestImage.load(final)
        tmp = cache / f".tmp-{os.getpid()}-cloud-{key[:16]}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            meta = _import_into(tmp, source, info, key, qemu_img, env, probe)
            meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            (tmp / "image.json").write_text(json.dumps(meta, indent=2) + "\n")
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return GuestImage.load(final)


def _import_into(out: Path, source: Path, info: dict, key: str, qemu_img: str, env, probe) -> dict:
    from rootless import hosttools

    debugfs = _find_debugfs(env, probe)
    fmt = info.get("format", "")
    disk = out / "disk.qcow2"
    if fmt == "qcow2" and not info.get("backing-filename") and not info.get("full-backing-filename"):
        shutil.copyfile(source, disk)
    else:
        hosttools.run([qemu_img, "convert", "-q", "-O", "qcow2", str(source), str(disk)],
                      f"copy the cloud image {source} (qemu-img convert)", timeout=1800)
    raw = out / "view.raw"
    if fmt == "raw":
        raw = source
    else:
        hosttools.run([qemu_img, "convert", "-q", "-O", "raw", str(disk), str(raw)],
                      "read the cloud image's partitions (qemu-img convert)", timeout=1800)
    try:
        with open(raw, "rb") as f:
            parts = read_partitions(f) or [Partition(0, 0, os.path.getsize(raw), "")]
            found = []
            for p in parts:
                f.seek(p.start + 1024)
                sb = ext4_superblock(f.read(1024))
                if sb is not None:
                    found.append((p, sb))
        if not found:
            raise MachineError(f"{source} has no ext4 file system: cannot boot it directly",
                               hint="use a Debian or Ubuntu cloud image (their root file systems are ext4)")
        root = boot = None
        boot_dir = ""
        for p, sb in found:
            fs = _Debugfs(debugfs, raw, p.start)
            top = fs.ls("/")
            if "etc" in top and "usr" in top and root is None:
                root = (p, sb, fs)
            if boot is None:
                if "boot" in top:
                    listing = fs.ls("/boot")
                    if any(_KERNEL.match(n) for n in listing):
                        boot, boot_dir = (p, sb, fs, listing), "/boot"
                elif any(_KERNEL.match(n) for n in top):
                    boot, boot_dir = (p, sb, fs, top), ""
        if root is None:
            raise MachineError(f"{source}: no root file system (with /etc and /usr) among its ext4 partitions",
                               hint="use a Debian or Ubuntu cloud image")
        if boot is None:
            raise MachineError(f"{source}: no kernel (vmlinuz-*) in /boot", hint="use a Debian or Ubuntu cloud image")
        rfs = root[2]
        mods = set(rfs.ls("/usr/lib/modules")) | set(rfs.ls("/lib/modules"))
        picked = pick_kernel(boot[3], mods)
        if picked is None:
            raise MachineError(f"{source}: no kernel in /boot with both an initramfs and modules",
                               hint="use a Debian or Ubuntu cloud image")
        kname, iname, version = picked
        fs = boot[2]
        for name in (kname, iname):
            fs.run(f"dump {boot_dir}/{name} {name}", cwd=out)
            if not (out / name).is_file() or (out / name).stat().st_size == 0:
                raise MachineError(f"{source}: cannot read {boot_dir}/{name} from the image")
        arch = kernel_arch((out / kname).read_bytes()[:1 << 16])
        if arch is None:
            raise MachineError(f"{source}: {boot_dir}/{kname} is not a kernel QEMU can boot directly")
    finally:
        if raw != source:
            raw.unlink(missing_ok=True)
    return {"format": CLOUD_FORMAT, "kind": "cloud", "key": key, "arch": arch, "source": str(source),
            "disk": disk.name, "disk_format": "qcow2", "virtual_size": int(info.get("virtual-size") or 0),
            "kernel": kname, "initrd": iname, "kernel_version": version, "root": f"UUID={root[1].uuid}",
            "root_label": root[1].label, "console": "ttyS0" if arch == "x86_64" else "ttyAMA0"}


def _find_debugfs(env, probe) -> str:
    from vmhost.qemu import find_program

    extra = ["/usr/sbin", "/sbin", "/opt/homebrew/opt/e2fsprogs/sbin", "/usr/local/opt/e2fsprogs/sbin"]
    path = env.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(extra)
    exe = shutil.which("debugfs", path=path)
    if exe is None:
        return find_program("debugfs", env, probe, "read the kernel out of the cloud image")
    return exe

"""The guest image: built offline from Debian packages, cached per recipe.

What a guest image is (a directory in the image cache)::

    image.json     format, key, arch, suite, kernel version, packages
    vmlinux        the kernel, booted with -kernel (x86: the uncompressed ELF,
                   entered through its PVH note: no decompression at boot)
    initrd.cpio    busybox and the modules that reach the root disk; the
                   per-machine seed (vmhost.seed) is appended at each start
    rootfs.img     ext4 made without root (``mke2fs -d``) from an mmdebstrap
                   chroot; machines boot a qcow2 overlay on it

How it is built (``build``): ``mmdebstrap`` (unshare mode when unprivileged)
installs the packages from the Debian mirror that apt uses on this host, and
its customize hook (``vmhost/guest/build-hook``) takes the kernel out of its
package, keeps the modules a VM uses, and makes the ext4 image inside
mmdebstrap's user namespace, so files keep their owners without root.

The cache key is a hash of the recipe (packages, suites, kernel package, the
build hook): the same recipe is built once per user and reused by every
machine. The rootless code and the boot scripts are *not* in the image: they
come with the per-machine seed at every start, so code changes never need a
rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rootless.errors import HostError, MachineError

IMAGE_FORMAT = 1
GUEST_DIR = Path(__file__).resolve().parent / "guest"

# uname -m -> Debian architecture
DEBIAN_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
KERNEL_PACKAGE = {"amd64": "linux-image-amd64", "arm64": "linux-image-arm64"}

PACKAGES = (
    # the runtime and its host tools
    "python3", "python3-pyroute2", "uidmap", "passt", "slirp4netns", "fuse-overlayfs", "fuse3",
    "qemu-user-static", "iproute2", "procps", "ca-certificates",
    # the VM itself
    "openssh-server", "busybox-static", "kmod", "e2fsprogs", "nftables",
)

# qemu-user interpreters kept in the guest (OCI platforms Docker Hub publishes)
QEMU_USER_KEEP = ("aarch64", "arm", "i386", "x86_64", "ppc64le", "riscv64", "s390x", "mips64el", "loongarch64")

# kernel/<dir> kept in the guest: virtio, file systems, networking; no hardware drivers
MODULE_DIRS = (
    "drivers/virtio", "drivers/block/virtio_blk.ko", "drivers/block/loop.ko", "drivers/block/nbd.ko",
    "drivers/char/hw_random", "drivers/char/virtio_console.ko", "drivers/input/evdev.ko",
    "drivers/acpi/button.ko",
    "drivers/net/virtio_net.ko", "drivers/net/net_failover.ko", "drivers/net/tun.ko", "drivers/net/tap.ko",
    "drivers/net/veth.ko", "drivers/net/dummy.ko", "drivers/net/macvlan.ko", "drivers/net/ipvlan",
    "drivers/net/vxlan", "drivers/net/geneve.ko", "drivers/net/wireguard", "drivers/net/vrf.ko",
    "fs/ext4", "fs/jbd2", "fs/mbcache.ko", "fs/9p", "fs/overlayfs", "fs/fuse", "fs/binfmt_misc.ko",
    "fs/squashfs", "fs/isofs", "fs/fat", "fs/nls", "fs/netfs", "fs/fscache",
    "net/9p", "net/bridge", "net/netfilter", "net/ipv4", "net/ipv6", "net/8021q", "net/802", "net/llc",
    "net/core", "net/sched", "net/packet", "net/unix", "net/netlink", "net/vmw_vsock", "net/xfrm",
    "net/key", "net/tls", "net/dns_resolver", "net/udp_tunnel",
    "lib", "crypto", "arch/x86/crypto", "arch/arm64/crypto",
)

# modules the initramfs loads (with their dependencies) to mount /dev/vda
INITRD_MODULES = ("virtio_pci", "virtio_mmio", "virtio_blk", "crc32c_generic", "crc32c-intel", "ext4")

DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*", "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*", "path-exclude=/usr/share/bash-completion/*",
    "path-exclude=/usr/bin/qemu-*", "path-exclude=/usr/lib/binfmt.d/qemu-*",
    "path-exclude=/usr/libexec/qemu-binfmt/*",
)


def dpkg_options(host_qemu_arch: str) -> tuple[str, ...]:
    keep = [a for a in QEMU_USER_KEEP if a != host_qemu_arch]
    inc = []
    for a in keep:
        inc += [f"path-include=/usr/bin/qemu-{a}-static", f"path-include=/usr/lib/binfmt.d/qemu-{a}.conf",
                f"path-include=/usr/libexec/qemu-binfmt/{a}-binfmt-P"]
    return DPKG_EXCLUDES + tuple(inc)


@dataclass(frozen=True)
class Recipe:
    arch: str                    # Debian arch of the guest (= the host's)
    suite: str                   # e.g. bookworm
    suites: tuple[str, ...]      # suites apt may take packages from
    kernel_package: str
    packages: tuple[str, ...]
    dpkg_options: tuple[str, ...]
    module_dirs: tuple[str, ...]
    initrd_modules: tuple[str, ...]

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"format": IMAGE_FORMAT, **self.__dict__}, sort_keys=True).encode())
        h.update((GUEST_DIR / "build-hook").read_bytes())
        return h.hexdigest()

    @property
    def dirname(self) -> str:
        return f"{self.suite}-{self.arch}-{self.key()[:16]}"


def host_suite() -> str:
    """The Debian release to build: this host's when it is Debian, else bookworm."""
    try:
        info = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    except OSError:
        return "bookworm"
    if info.get("ID", "").strip('"') == "debian" and info.get("VERSION_CODENAME"):
        return info["VERSION_CODENAME"].strip('"')
    return "bookworm"


def make_recipe(machine_arch: str, suite: str | None = None) -> Recipe:
    arch = DEBIAN_ARCH.get(machine_arch)
    if arch is None:
        raise MachineError(f"no guest image for the {machine_arch} architecture",
                           hint="machines run on x86_64 and aarch64 hosts; use --image with your own image")
    suite = suite or host_suite()
    qemu_arch = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
    return Recipe(arch=arch, suite=suite, suites=(suite, f"{suite}-updates", f"{suite}-security"),
                  kernel_package=KERNEL_PACKAGE[arch], packages=PACKAGES, dpkg_options=dpkg_options(qemu_arch),
                  module_dirs=MODULE_DIRS, initrd_modules=INITRD_MODULES)


# ---------------------------------------------------------------- mirrors

def _parse_sources(text: str, deb822: bool) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of the ``deb`` entries of an apt sources file."""
    out = []
    if deb822:
        for para in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in para.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                out.append((uri, fields.get("suites", "").split(), fields.get("components", "main").split()))
    else:
        for line in text.splitlines():
            w = line.split("#", 1)[0].split()
            if not w or w[0] != "deb":
                continue
            w = w[1:]
            if w and w[0].startswith("["):
                while w and not w[0].endswith("]"):
                    w = w[1:]
                w = w[1:]
            if len(w) >= 2:
                out.append((w[0], [w[1]], w[2:] or ["main"]))
    return out


def mirror_lines(suites: tuple[str, ...], env: dict[str, str], apt_dir: Path = Path("/etc/apt")) -> list[str]:
    """The one-line sources mmdebstrap gets: the host's Debian mirrors for ``suites``.

    ``ROOTLESS_MACHINE_MIRROR`` (a URI) replaces them; without either, the
    Debian CDN.
    """
    if env.get("ROOTLESS_MACHINE_MIRROR"):
        uri = env["ROOTLESS_MACHINE_MIRROR"]
        return [f"deb {uri} {s} main" for s in suites if not s.endswith("-security")]
    entries = []
    files = [apt_dir / "sources.list"] + sorted((apt_dir / "sources.list.d").glob("*"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            entries += _parse_sources(text, True)
        elif f.suffix == ".list" or f.name == "sources.list":
            entries += _parse_sources(text, False)
    lines = []
    for uri, ss, comps in entries:
        for s in ss:
            if s in suites:
                lines.append(f"deb {uri} {s} {' '.join(comps)}")
    if not lines:
        lines = [f"deb http://deb.debian.org/debian {s} main" for s in suites if not s.endswith("-security")]
        lines += [f"deb http://deb.debian.org/debian-security {s} main" for s in suites if s.endswith("-security")]
    return lines


# ---------------------------------------------------------------- the image

@dataclass(frozen=True)
class GuestImage:
    path: Path
    arch: str
    key: str
    kernel_version: str
    cmdline_console: str

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.cpio"

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs.img"

    @classmethod
    def load(cls, path: Path) -> "GuestImage":
        try:
            meta = json.loads((path / "image.json").read_text())
        except (OSError, ValueError) as e:
            raise MachineError(f"{path} is not a rootless guest image ({e})",
                               hint="give --image a directory made by 'rootless machine init' "
                                    "(image.json, vmlinux, initrd.cpio, rootfs.img)") from None
        for f in ("vmlinux", "initrd.cpio", "rootfs.img"):
            if not (path / f).is_file():
                raise MachineError(f"guest image {path} lacks {f}", hint="rebuild it: remove the directory")
        return cls(path=path, arch=meta["arch"], key=meta.get("key", ""), kernel_version=meta.get("kernel_version", ""),
                   cmdline_console=meta.get("console", "ttyS0"))


def cache_dir(config, env: dict[str, str]) -> Path:
    """Where guest images live: ``ROOTLESS_MACHINE_IMAGES`` or DATA_ROOT/machine-images."""
    if env.get("ROOTLESS_MACHINE_IMAGES"):
        return Path(env["ROOTLESS_MACHINE_IMAGES"])
    return Path(config.data_root) / "machine-images"


def ensure_image(config, env: dict[str, str], machine_arch: str, reporter) -> GuestImage:
    """The cached image for this host's recipe, built first when missing."""
    import fcntl

    recipe = make_recipe(machine_arch)
    cache = cache_dir(config, env)
    final = cache / recipe.dirname
    if (final / "image.json").is_file():
        return GuestImage.load(final)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{recipe.dirname}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "image.json").is_file():
            return GuestImage.load(final)
        _remove_stale(cache)
        tmp = cache / f".tmp-{os.getpid()}-{recipe.dirname}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            build(recipe, tmp, env, reporter)
            os.rename(tmp, final)
        except BaseException:
            if (tmp / "build.log").is_file():
                os.replace(tmp / "build.log", failed_log(cache, recipe))
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return GuestImage.load(final)


def failed_log(cache: Path, recipe: Recipe) -> Path:
    return cache / f"{recipe.dirname}.failed.log"


def _remove_stale(cache: Path) -> None:
    """Remove build directories of processes that died (interrupted builds)."""
    for p in cache.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p, ignore_errors=True)


def build(recipe: Recipe, out: Path, env: dict[str, str], reporter) -> None:
    """Build the image of ``recipe`` into the (empty) directory ``out``."""
    from rootless import hosttools

    mmdebstrap = hosttools.find("mmdebstrap")
    if mmdebstrap is None:
        raise HostError("mmdebstrap not found: needed to build the guest image from Debian packages",
                        hint="install it (apt-get install mmdebstrap), or give 'machine init --image DIR' "
                             "an image built elsewhere")
    hosttools.require("mke2fs", "make the guest's ext4 image")
    start = time.monotonic()
    reporter.info(f"Building the guest image ({recipe.suite}/{recipe.arch}, {recipe.kernel_package}): "
                  f"this happens once and takes a minute or two")
    hook = GUEST_DIR / "build-hook"
    argv = [mmdebstrap, "--variant=minbase", f"--arch={recipe.arch}",
            "--include=" + ",".join(recipe.packages),
            "--aptopt=Acquire::Retries \"3\"",
            *[f"--dpkgopt={o}" for o in recipe.dpkg_options],
            f"--customize-hook=sh {_q(str(hook))} \"$1\" {_q(recipe.kernel_package)} "
            f"{_q(' '.join(recipe.module_dirs))}",
            f"--customize-hook=copy-out /tmp/rootless-out {_q(str(out))}",
            recipe.suite, "/dev/null", *mirror_lines(recipe.suites, env)]
    log = out / "build.log"
    benv = dict(os.environ)
    benv.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    benv["TMPDIR"] = env.get("TMPDIR") or "/tmp"
    _run_logged(argv, log, "build the guest image with mmdebstrap", benv, failed_log(out.parent, recipe))
    reporter.info("Guest image: kernel and initramfs")
    for p in (out / "rootless-out").iterdir():
        os.rename(p, out / p.name)
    (out / "rootless-out").rmdir()
    _dig_holes(out / "rootfs.img")
    kver = (out / "kernel-version").read_text().strip()
    console = "ttyS0" if recipe.arch == "amd64" else "ttyAMA0"
    _write_kernel(out / "vmlinuz", out / "vmlinux", recipe.arch)
    (out / "vmlinuz").unlink()
    _write_base_initrd(out, recipe.initrd_modules)
    shutil.rmtree(out / "modules")
    meta = {"format": IMAGE_FORMAT, "key": recipe.key(), "arch": recipe.arch, "suite": recipe.suite,
            "kernel_package": (out / "kernel-package").read_text().strip(), "kernel_version": kver,
            "console": console, "packages": list(recipe.packages),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - start, 1)}
    for f in ("kernel-version", "kernel-package", "busybox"):
        (out / f).unlink(missing_ok=True)
    tmp = out / "image.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.rename(tmp, out / "image.json")
    reporter.info(f"Guest image built in {time.monotonic() - start:.0f} s")


def _dig_holes(path: Path) -> None:
    """Make the copied-out (fully allocated) image sparse again."""
    from rootless import hosttools

    exe = hosttools.find("fallocate")
    if exe:
        hosttools.run([exe, "--dig-holes", str(path)], f"make {path} sparse", check=False)


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _run_logged(argv: list[str], log: Path, desc: str, env: dict[str, str], kept_log: Path) -> None:
    import subprocess

    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        from rootless.errors import HelperFailed

        hint = (f"full log: {kept_log}; mmdebstrap needs the Debian mirror "
                "(ROOTLESS_MACHINE_MIRROR=URI chooses one)")
        if any("newuidmap" in t or "subuid" in t for t in tail):
            hint = "unprivileged mmdebstrap needs /etc/subuid and /etc/subgid ranges for you (and uidmap)"
        raise HelperFailed(desc, rc, "\n".join(tail), hint=hint)


# ---------------------------------------------------------------- kernel

def _write_kernel(src: Path, dst: Path, arch: str) -> None:
    """x86: the ELF inside the bzImage when it has a PVH note (QEMU then boots
    it directly, without the slow real-mode set-up and decompression);
    arm64: the uncompressed Image."""
    data = src.read_bytes()
    if arch == "arm64":
        if data[:2] == b"\x1f\x8b":
            import gzip

            data = gzip.decompress(data)
        dst.write_bytes(data)
        return
    elf = extract_vmlinux(data)
    dst.write_bytes(elf if elf is not None and has_pvh_note(elf) else data)


def extract_vmlinux(bzimage: bytes) -> bytes | None:
    """The ELF kernel inside a bzImage (xz or gzip payload), or None."""
    import lzma
    import zlib

    for magic, kind in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08\x00", "gz")):
        pos = bzimage.find(magic)
        while 0 <= pos:
            try:
                if kind == "xz":
                    out = lzma.LZMADecompressor().decompress(bzimage[pos:])
                else:
                    out = zlib.decompressobj(31).decompress(bzimage[pos:])
            except (lzma.LZMAError, zlib.error):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            pos = bzimage.find(magic, pos + 1)
    return None


def has_pvh_note(elf: bytes) -> bool:
    """Does the ELF carry XEN_ELFNOTE_PHYS32_ENTRY (what QEMU's PVH boot needs)?"""
    import struct

    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False


# ---------------------------------------------------------------- initramfs

def module_closure(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Module files (relative to /lib/modules/VER) for ``wanted``, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        by_name[_modname(path)] = path
    order: list[str] = []

    def visit(path: str, seen: tuple[str, ...] = ()) -> None:
        if path in order or path in seen:
            return
        for d in deps.get(path, []):
            visit(d, seen + (path,))
        order.append(path)

    for w in wanted:
        p = by_name.get(w.replace("-", "_"))
        if p:
            visit(p)
    return order


def _modname(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    return base.replace("-", "_")


def _write_base_initrd(out: Path, wanted: tuple[str, ...]) -> None:
    from vmhost import cpio

    mods = out / "modules"
    order = module_closure((mods / "modules.dep").read_text(), wanted)
    entries = [cpio.directory("bin"), cpio.file("bin/busybox", (out / "busybox").read_bytes(), 0o755),
               cpio.directory("modules"), cpio.directory("seed")]
    names = []
    for rel in order:
        data = (mods / rel).read_bytes()
        if rel.endswith(".xz"):
            import lzma

            data = lzma.decompress(data)
        name = _modname(rel) + ".ko"
        names.append(name)
        entries.append(cpio.file(f"modules/{name}", data))
    entries.append(cpio.file("modules/order", " ".join(names) + "\n"))
    with open(out / "initrd.cpio", "wb") as f:
        cpio.write(f, entries)

"""The tests' "cloud-like" disk image: what `machine init --image X.qcow2` gets
from a user who downloaded a Debian/Ubuntu cloud image, built offline from
Debian packages (mmdebstrap in unshare mode + cloudimage-hook: sfdisk, mke2fs
-d; no root) and cached per recipe like the guest image.

    path = cloud_image(cache_dir)      # .../cloudlike-bookworm-amd64-KEY.qcow2

Nothing of rootless is inside: systemd, cloud-init, Debian's kernel and
initramfs, openssh-server without host keys, and the packages rootless needs
at run time (a real cloud image has internet and gets them with apt-get on
its first boot; here the guest must not depend on a mirror).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

HOOK = Path(__file__).resolve().parent / "cloudimage-hook"
FORMAT = 1
ROOT_UUID = "3f0c6a2e-5b1d-4c8e-9a27-6d4b1e0f7c55"
PACKAGES = (
    # a cloud image
    "systemd-sysv", "udev", "dbus", "cloud-init", "openssh-server", "sudo", "ifupdown", "isc-dhcp-client",
    "linux-image-amd64", "initramfs-tools", "e2fsprogs", "kmod", "procps", "iproute2", "ca-certificates",
    # what rootless needs in the guest
    "python3", "python3-pyroute2", "uidmap", "passt", "slirp4netns", "fuse-overlayfs", "fuse3",
    "qemu-user-static",
)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/bin/qemu-*", "path-include=/usr/bin/qemu-aarch64-static",
    "path-exclude=/usr/lib/binfmt.d/qemu-*", "path-include=/usr/lib/binfmt.d/qemu-aarch64.conf",
    "path-exclude=/usr/libexec/qemu-binfmt/*", "path-include=/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
    # the kernel's hardware drivers are not needed in a VM (smaller image, faster build)
    "path-exclude=/usr/lib/modules/*/kernel/drivers/gpu/*", "path-exclude=/lib/modules/*/kernel/drivers/gpu/*",
    "path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*",
    "path-exclude=/lib/modules/*/kernel/drivers/media/*", "path-exclude=/lib/modules/*/kernel/sound/*",
    "path-exclude=/lib/modules/*/kernel/drivers/infiniband/*", "path-exclude=/lib/modules/*/kernel/drivers/scsi/*",
    "path-exclude=/lib/modules/*/kernel/drivers/staging/*", "path-exclude=/lib/modules/*/kernel/drivers/bluetooth/*",
)


def recipe_key(suite: str) -> str:
    h = hashlib.sha256(json.dumps({"format": FORMAT, "suite": suite, "packages": PACKAGES, "dpkg": DPKG_OPTIONS,
                                   "uuid": ROOT_UUID}, sort_keys=True).encode())
    h.update(HOOK.read_bytes())
    return h.hexdigest()[:16]


def cloud_image(cache: Path, suite: str = "bookworm") -> Path:
    """The cached image for this recipe, built first when missing (a few minutes)."""
    from vmhost.image import mirror_lines

    key = recipe_key(suite)
    final = cache / f"cloudlike-{suite}-amd64-{key}.qcow2"
    if final.is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".cloudlike-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            return final
        for old in cache.glob("cloudlike-*.qcow2"):
            old.unlink()
        work = cache / f".cloudlike-build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            argv = ["mmdebstrap", "--variant=minbase", "--arch=amd64", "--include=" + ",".join(PACKAGES),
                    '--aptopt=Acquire::Retries "3"', *[f"--dpkgopt={o}" for o in DPKG_OPTIONS],
                    f"--customize-hook=sh {HOOK} \"$1\" {ROOT_UUID}",
                    f"--customize-hook=copy-out /tmp/cloud-out {work}",
                    suite, "/dev/null", *mirror_lines((suite, f"{suite}-updates", f"{suite}-security"), os.environ)]
            env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000", TMPDIR=os.environ.get("TMPDIR", "/tmp"))
            with open(work / "build.log", "wb") as log:
                rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    timeout=3000).returncode
            if rc != 0:
                tail = (work / "build.log").read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError("building the cloud-like test image failed:\n" + "\n".join(tail))
            tmp = cache / f".{final.name}.tmp"
            subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(work / "cloud-out" / "disk.raw"),
                            str(tmp)], check=True, timeout=600)
            os.chmod(tmp, 0o644)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final

"""`machine init --image X.qcow2`: a Debian/Ubuntu-style cloud image, for real.

* Import (no VM): small partitioned disks made here with sfdisk and
  ``mke2fs -d -E offset=`` hold fake kernels; the import must pick the
  right kernel and initramfs, the root file system's UUID, and refuse what
  it cannot boot with a clear error.
* Boot (``-m vm``, slow): the tests' "cloud-like" image (tests/integration/
  cloudimage.py: systemd, cloud-init, Debian's kernel and initramfs, sshd,
  nothing of rootless; built once and cached per recipe in
  ``$ROOTLESS_TEST_VM_IMAGES``) is imported, booted with its own kernel,
  provisioned by cloud-init from the NoCloud seed, and runs a container
  through ``--connection``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import RL

VM_IMAGES = os.environ.get("ROOTLESS_TEST_VM_IMAGES") or f"/var/tmp/rootless-test-vm-images-{os.getuid()}"
NAME = "cloudy"


def _fake_bzimage(tag: bytes) -> bytes:
    data = bytearray(4096)
    data[0x202:0x206] = b"HdrS"
    data[0x1000 - len(tag):] = tag
    return bytes(data)


def _disk(tmp: Path, trees: list[tuple[str, dict[str, bytes]]], label: str = "gpt") -> Path:
    """A raw disk: one partition per (fs type, {path: data}); fs type "ext4" or "empty"."""
    raw = tmp / "disk.raw"
    size_mib = 8 * len(trees) + 2
    with open(raw, "wb") as f:
        f.truncate(size_mib << 20)
    script = [f"label: {label}", "unit: sectors"]
    for i, _ in enumerate(trees):
        script.append(f"start={2048 + i * 16384}, size=16384, type={'linux' if label == 'gpt' else '83'}")
    subprocess.run(["sfdisk", "-q", str(raw)], input="\n".join(script) + "\n", text=True, check=True)
    for i, (kind, files) in enumerate(trees):
        if kind != "ext4":
            continue
        root = tmp / f"tree{i}"
        for path, data in files.items():
            p = root / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            if data is None:
                p.mkdir(exist_ok=True)
            else:
                p.write_bytes(data)
        root.mkdir(exist_ok=True)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-U", f"00000000-0000-4000-8000-00000000000{i}",
                        "-E", f"offset={(2048 + i * 16384) * 512}", "-d", str(root), "-F", str(raw), "7M"],
                       check=True, capture_output=True)
    return raw


@pytest.fixture
def rl_images(rl):
    rl.env["ROOTLESS_MACHINE_IMAGES"] = str(rl.base / "images")
    return rl


def _inspect(rl: RL, name: str) -> dict:
    return json.loads(rl.ok("machine", "inspect", name))[0]


# ---------------------------------------------------------------- import (no VM)

def test_import_picks_the_newest_kernel_with_initramfs_and_modules(rl_images, tmp_path, unprivileged):
    root = {"/etc/os-release": b"ID=debian\n", "/usr/bin/true": b"", "/usr/lib/modules/6.1.0-9-amd64/x": b"",
            "/usr/lib/modules/6.1.0-10-amd64/x": b"",
            "/boot/vmlinuz-6.1.0-9-amd64": _fake_bzimage(b"kernel-9"), "/boot/initrd.img-6.1.0-9-amd64": b"initrd-9",
            "/boot/vmlinuz-6.1.0-10-amd64": _fake_bzimage(b"kernel-10"),
            "/boot/initrd.img-6.1.0-10-amd64": b"initrd-10",
            # newer, but no modules / no initramfs: not bootable
            "/boot/vmlinuz-6.1.0-11-amd64": _fake_bzimage(b"kernel-11"),
            "/boot/vmlinuz-6.1.0-12-amd64": _fake_bzimage(b"kernel-12"),
            "/boot/initrd.img-6.1.0-11-amd64": b"initrd-11",
            "/usr/lib/modules/6.1.0-12-amd64/x": b""}
    raw = _disk(tmp_path, [("empty", {}), ("ext4", root)])
    img = tmp_path / "cloud.img"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(img)], check=True)
    cp = rl_images("machine", "init", NAME, "--image", str(img), "--disk-size", "2", "--no-share")
    assert cp.returncode == 0, cp.stderr
    assert "Importing the cloud image" in cp.stderr
    info = _inspect(rl_images, NAME)
    d = Path(info["Image"])
    meta = json.loads((d / "image.json").read_text())
    assert meta["kind"] == "cloud" and meta["kernel_version"] == "6.1.0-10-amd64"
    assert meta["root"] == "UUID=00000000-0000-4000-8000-000000000001"
    assert (d / meta["kernel"]).read_bytes().endswith(b"kernel-10")
    assert (d / meta["initrd"]).read_bytes() == b"initrd-10"
    # the machine's disk is an overlay on the imported copy, not on the download
    out = subprocess.run(["qemu-img", "info", "--output=json", str(rl_images.root / "machines" / NAME / "disk.qcow2")],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["backing-filename"] == str(d / "disk.qcow2")
    img.unlink()
    assert _inspect(rl_images, NAME)["State"] == "stopped"
    # a second machine from the same image reuses the import
    cp = rl_images("machine", "init", "other", "--image", str(d / "disk.qcow2"), "--disk-size", "2", "--no-share")
    assert cp.returncode == 0, cp.stderr
    assert _inspect(rl_images, "other")["Image"] == str(d)   # the same content: the same import
    assert len(list((rl_images.base / "images").glob("cloud-*"))) == 1
    rl_images.ok("machine", "rm", NAME)
    rl_images.ok("machine", "rm", "other")


def test_import_of_a_separate_boot_partition_and_mbr(rl_images, tmp_path, unprivileged):
    boot = {"/vmlinuz-5.15.0-1-generic": _fake_bzimage(b"k"), "/initrd.img-5.15.0-1-generic": b"i"}
    root = {"/etc/fstab": b"", "/usr/x": b"", "/lib/modules/5.15.0-1-generic/m": b"", "/boot": None}
    raw = _disk(tmp_path, [("ext4", root), ("ext4", boot)], label="dos")
    cp = rl_images("machine", "init", NAME, "--image", str(raw), "--disk-size", "2", "--no-share")
    assert cp.returncode == 0, cp.stderr
    meta = json.loads((Path(_inspect(rl_images, NAME)["Image"]) / "image.json").read_text())
    assert (meta["kernel"], meta["initrd"]) == ("vmlinuz-5.15.0-1-generic", "initrd.img-5.15.0-1-generic")
    assert meta["root"] == "UUID=00000000-0000-4000-8000-000000000000"


@pytest.mark.parametrize("case,message", [
    ("text", "has no ext4 file system"),
    ("no-kernel", "no kernel (vmlinuz-*) in /boot"),
    ("no-root", "no root file system"),
    ("arm-kernel", "is for aarch64"),
    ("too-small", "--disk-size 2: the image"),
    ("missing", "no such file or directory"),
])
def test_import_refuses_what_it_cannot_boot(rl_images, tmp_path, unprivileged, case, message):
    good_root = {"/etc/x": b"", "/usr/x": b"", "/usr/lib/modules/6.1/x": b""}
    if case == "text":
        src = tmp_path / "notes.img"
        src.write_text("not a disk\n" * 1000)
    elif case == "no-kernel":
        src = _disk(tmp_path, [("ext4", good_root)])
    elif case == "no-root":
        src = _disk(tmp_path, [("ext4", {"/boot/vmlinuz-6.1": _fake_bzimage(b"k"), "/boot/initrd.img-6.1": b"i"})])
    elif case == "arm-kernel":
        arm = bytearray(4096)
        arm[0x38:0x3C] = b"ARM\x64"
        src = _disk(tmp_path, [("ext4", {**good_root, "/boot/vmlinuz-6.1": bytes(arm), "/boot/initrd.img-6.1": b"i"})])
    elif case == "too-small":
        src = tmp_path / "big.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "3G"], check=True)
        raw = _disk(tmp_path, [("ext4", {**good_root, "/boot/vmlinuz-6.1": _fake_bzimage(b"k"),
                                          "/boot/initrd.img-6.1": b"i"})])
        subprocess.run(["qemu-img", "convert", "-n", "-O", "qcow2", str(raw), str(src)], check=True)
    else:
        src = tmp_path / "nowhere.qcow2"
    cp = rl_images("machine", "init", NAME, "--image", str(src), "--disk-size", "2")
    assert cp.returncode == 125, cp.stderr
    assert message in cp.stderr and "Hint:" in cp.stderr
    assert not (rl_images.root / "machines" / NAME).exists()
    assert not list((rl_images.base / "images").glob(".tmp-*")) if (rl_images.base / "images").exists() else True


def test_seed_disk_is_what_cloud_init_looks_for(tmp_path, unprivileged):
    """The FAT seed, checked with other tools: blkid (what cloud-init's NoCloud
    uses to find it: TYPE=vfat, LABEL=CIDATA), fsck.fat, mtools."""
    from vmhost import cloud
    from vmhost.spec import MachineSpec

    spec = MachineSpec(name="dev", arch="x86_64", cpus=1, memory_mib=512, disk_gib=4, accel="auto", image="/i",
                       user="alice", uid=1000, gid=1000, home="/home/alice", created="2024-01-01T00:00:00Z")
    code = os.urandom(3 << 20)
    seed = tmp_path / "seed.img"
    cloud.write_seed(seed, cloud.seed_files(spec, "ssh-ed25519 AAAA", b"KEY", code, "RL_USER=alice\n",
                                            cloud.sshd_conf(spec, "/var/lib/rootless/store")))
    assert seed.stat().st_mode & 0o777 == 0o600
    tags = subprocess.run(["blkid", "-p", "-o", "export", str(seed)], capture_output=True, text=True).stdout
    assert "TYPE=vfat" in tags.splitlines() and "LABEL=CIDATA" in tags.splitlines()
    fsck = subprocess.run(["fsck.fat", "-n", str(seed)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    listing = subprocess.run(["mdir", "-b", "-i", str(seed), "::"], capture_output=True, text=True,
                             env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout.split()
    assert {"::/meta-data", "::/user-data", "::/rootless-boot", "::/rootless.tar"} <= set(listing)
    got = subprocess.run(["mtype", "-i", str(seed), "::/user-data"], capture_output=True, text=True,
                         env=dict(os.environ, MTOOLS_SKIP_CHECK="1")).stdout
    assert got == cloud.user_data()
    out = tmp_path / "code.tar"
    subprocess.run(["mcopy", "-i", str(seed), "::/rootless.tar", str(out)], check=True,
                   env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    assert out.read_bytes() == code


# ---------------------------------------------------------------- boot (VM)

@pytest.fixture(scope="module")
def cloud_vm(tmp_path_factory, registry, unprivileged):
    from tests.integration.cloudimage import cloud_image

    source = cloud_image(Path(VM_IMAGES))
    rl = RL(tmp_path_factory.mktemp("cloudvm"))
    rl.env["ROOTLESS_MACHINE_IMAGES"] = str(rl.base / "images")
    init = rl("machine", "init", NAME, "--image", str(source), "--memory", "1536", timeout=600)
    assert init.returncode == 0, init.stderr
    t = time.monotonic()
    start = rl("machine", "start", NAME, timeout=1900)
    assert start.returncode == 0, start.stderr + (rl.root / "machines" / NAME / "serial.log").read_text()[-3000:]
    yield rl, source, init, start, time.monotonic() - t
    rl("machine", "rm", "-f", NAME, timeout=300)
    rl.cleanup()


@pytest.mark.vm
@pytest.mark.slow
def test_cloud_image_boots_provisioned_by_cloud_init(cloud_vm):
    rl, source, init, start, _secs = cloud_vm
    assert "Importing the cloud image" in init.stderr
    assert f"Machine {NAME} is ready" in start.stderr
    info = _inspect(rl, NAME)
    meta = json.loads((Path(info["Image"]) / "image.json").read_text())
    assert meta["kind"] == "cloud" and meta["source"] == str(source)
    # the image's own kernel, and cloud-init's NoCloud data source provisioned it
    ssh = lambda *a: rl.ok("machine", "ssh", NAME, *a, timeout=300)  # noqa: E731
    assert ssh("uname", "-r").strip() == meta["kernel_version"]
    assert "DataSourceNoCloud" in ssh("cat", "/run/cloud-init/status.json")
    # the user: the host's name, uid, gid and home; subordinate ids; the store
    import pwd

    me = pwd.getpwuid(os.getuid())
    assert ssh("id", "-un").strip() == me.pw_name
    assert ssh("id", "-u").strip() == str(os.getuid()) and ssh("id", "-g").strip() == str(os.getgid())
    assert ssh("sh", "-c", "echo $HOME").strip() == str(rl.home.resolve())
    assert f"{me.pw_name}:100000:65536" in ssh("cat", "/etc/subuid")
    assert ssh("hostname").strip() == NAME
    # the host's rootless code
    assert "Version:" in ssh("rootless", "version")
    serial = (rl.root / "machines" / NAME / "serial.log").read_text(errors="replace")
    assert "rootless-guest: provisioned at" in serial and "rootless-guest: failed" not in serial


@pytest.mark.vm
@pytest.mark.slow
def test_cloud_image_runs_containers_through_the_connection(cloud_vm, registry):
    rl = cloud_vm[0]
    cp = rl("--connection", NAME, "run", "--rm", registry.ref("busybox"), "sh", "-c", "echo in-cloud-vm; exit 7",
            timeout=600)
    assert cp.returncode == 7, cp.stderr
    assert cp.stdout == "in-cloud-vm\n"
    # the home is shared over 9p (Debian's kernel has it): a bind mount writes on the host
    project = rl.home / "cloudproject"
    project.mkdir()
    cp = rl("--connection", NAME, "run", "--rm", "-v", f"{project}:/src", registry.ref("busybox"),
            "sh", "-c", "echo from-cloud > /src/out.txt", timeout=600)
    assert cp.returncode == 0, cp.stderr
    assert (project / "out.txt").read_text() == "from-cloud\n"
    assert (project / "out.txt").stat().st_uid == os.getuid()


@pytest.mark.vm
@pytest.mark.slow
def test_a_kernel_upgrade_in_the_guest_is_booted_next_time(cloud_vm):
    """apt upgrade installs a kernel in the guest's /boot: `machine stop` copies it
    out, the next start boots it (simulated: the same kernel under a newer version)."""
    rl = cloud_vm[0]
    meta = json.loads((Path(_inspect(rl, NAME)["Image"]) / "image.json").read_text())
    v, new = meta["kernel_version"], "6.1.0-999-amd64"
    rl.ok("machine", "ssh", "--username", "root", NAME, "sh", "-c",
          f"cp /boot/vmlinuz-{v} /boot/vmlinuz-{new} && cp /boot/initrd.img-{v} /boot/initrd.img-{new} "
          f"&& ln -s {v} /usr/lib/modules/{new}", timeout=300)
    info = _inspect(rl, NAME)
    pid = info["PID"]
    cp = rl("machine", "stop", NAME, timeout=600)
    assert cp.returncode == 0, cp.stderr
    assert f"boots its new kernel {new}" in cp.stderr
    assert not os.path.exists(f"/proc/{pid}")
    own = rl.root / "machines" / NAME / "boot"
    assert (own / f"vmlinuz-{new}").read_bytes() == (Path(info["Image"]) / f"vmlinuz-{v}").read_bytes()
    # the second boot: no new provisioning, the machine's own kernel
    cp = rl("machine", "start", NAME, timeout=1900)
    assert cp.returncode == 0, cp.stderr
    argv = json.loads((rl.root / "machines" / NAME / "state.json").read_text())["qemu_argv"]
    assert argv[argv.index("-kernel") + 1] == str(own / f"vmlinuz-{new}")
    assert rl.ok("machine", "ssh", NAME, "uname", "-r", timeout=300).strip() == v
    # stopping again copies nothing
    cp = rl("machine", "stop", NAME, timeout=600)
    assert cp.returncode == 0 and "new kernel" not in cp.stderr, cp.stderr


@pytest.mark.vm
@pytest.mark.slow
def test_cloud_machine_is_removed_with_everything(cloud_vm):
    rl = cloud_vm[0]
    info = _inspect(rl, NAME)
    assert info["State"] == "stopped"
    images = Path(info["Image"])
    rl.ok("machine", "rm", NAME)
    assert not (rl.root / "machines" / NAME).exists()
    assert (images / "image.json").is_file()   # the import stays for the next machine

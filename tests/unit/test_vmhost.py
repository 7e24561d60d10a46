"""vmhost pure logic: QEMU command line, accelerator choice, forwarding plans,
cpio archives, module closure, apt sources, the seed."""

from __future__ import annotations

import io
import json
import shlex
import stat
import struct

import pytest

from rootless.errors import MachineError, UsageError
from vmhost import cpio
from vmhost import forward as F
from vmhost import image as I
from vmhost import qemu as Q
from vmhost import seed as S
from vmhost.spec import MachinePaths, MachineSpec, check_name

SPEC = MachineSpec(name="dev", arch="x86_64", cpus=2, memory_mib=2048, disk_gib=20, accel="auto",
                   image="/img", user="alice", uid=1000, gid=1000, home="/home/alice", created="2024-01-01T00:00:00Z")

LAUNCH = Q.Launch(qemu="/usr/bin/qemu-system-x86_64", accel="kvm", kernel="/img/vmlinux", initrd="/m/initrd.img",
                  console="ttyS0", disk="/m/disk.qcow2", ssh_port=40022, qmp="/run/m/qmp.sock",
                  pidfile="/run/m/qemu.pid", serial_log="/m/serial.log", share="/home/alice")


def _opt(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# ---------------------------------------------------------------- qemu command line

def test_qemu_argv_kvm_x86():
    argv = Q.qemu_argv(SPEC, LAUNCH)
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert _opt(argv, "-accel") == ["kvm"]
    assert _opt(argv, "-cpu") == ["host"]
    assert _opt(argv, "-smp") == ["2"] and _opt(argv, "-m") == ["2048M"]
    assert _opt(argv, "-kernel") == ["/img/vmlinux"] and _opt(argv, "-initrd") == ["/m/initrd.img"]
    append = _opt(argv, "-append")[0]
    assert "console=ttyS0" in append and "root=/dev/vda" in append and "panic=-1" in append
    netdev = _opt(argv, "-netdev")[0]
    assert netdev.startswith("user,id=net0") and "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert "local,id=fs0,path=/home/alice,security_model=none" in _opt(argv, "-fsdev")
    assert "virtio-9p-pci,fsdev=fs0,mount_tag=home" in _opt(argv, "-device")
    assert "socket,id=qmp0,path=/run/m/qmp.sock,server=on,wait=off" in _opt(argv, "-chardev")
    assert "file,id=serial0,path=/m/serial.log" in _opt(argv, "-chardev")
    assert "-daemonize" in argv and _opt(argv, "-pidfile") == ["/run/m/qemu.pid"]
    assert "-no-reboot" in argv
    drive = _opt(argv, "-drive")[0]
    assert "file=/m/disk.qcow2" in drive and "format=qcow2" in drive


def test_qemu_argv_is_pure_and_tcg_uses_max_cpu():
    tcg = Q.Launch(**{**LAUNCH.__dict__, "accel": "tcg", "share": "",
                      "forwards": (("tcp", "", 8080, 8080), ("udp", "127.0.0.1", 53, 5353))})
    a, b = Q.qemu_argv(SPEC, tcg), Q.qemu_argv(SPEC, tcg)
    assert a == b
    assert _opt(a, "-accel")[0].startswith("tcg") and _opt(a, "-cpu") == ["max"]
    assert "-fsdev" not in a
    netdev = _opt(a, "-netdev")[0]
    assert "hostfwd=tcp::8080-:8080" in netdev and "hostfwd=udp:127.0.0.1:53-:5353" in netdev


def test_qemu_argv_aarch64():
    spec = SPEC.with_changes(arch="aarch64")
    argv = Q.qemu_argv(spec, Q.Launch(**{**LAUNCH.__dict__, "console": "ttyAMA0", "accel": "hvf"}))
    assert _opt(argv, "-machine")[0].startswith("virt")
    assert _opt(argv, "-accel") == ["hvf"] and _opt(argv, "-cpu") == ["host"]
    assert "console=ttyAMA0" in _opt(argv, "-append")[0]


def test_qemu_argv_unknown_arch():
    with pytest.raises(MachineError):
        Q.qemu_argv(SPEC.with_changes(arch="riscv64"), LAUNCH)


# ---------------------------------------------------------------- accelerator

def _probe(**kw):
    base = dict(system="Linux", machine="x86_64", kvm_device=True, kvm_access=True, kvm_modules=("kvm_intel",),
                distro="debian")
    base.update(kw)
    return Q.HostProbe(**base)


def test_accel_kvm_when_usable():
    assert Q.choose_accel("auto", _probe()) == ("kvm", None)
    assert Q.choose_accel("kvm", _probe(kvm_modules=("kvm_amd",))) == ("kvm", None)


@pytest.mark.parametrize("kw,why", [
    (dict(kvm_device=False, kvm_access=False), "/dev/kvm does not exist"),
    (dict(kvm_access=False), "usermod -aG kvm"),
    (dict(kvm_modules=("kvm_pvm",)), "kvm_pvm"),
    (dict(kvm_modules=()), "neither kvm_intel nor kvm_amd"),
])
def test_accel_falls_back_to_tcg_with_a_warning(kw, why):
    accel, warning = Q.choose_accel("auto", _probe(**kw))
    assert accel == "tcg"
    assert why in warning and "TCG" in warning


def test_accel_explicit_request_that_cannot_work_is_an_error():
    with pytest.raises(MachineError) as e:
        Q.choose_accel("kvm", _probe(kvm_access=False))
    assert "kvm" in e.value.message and e.value.hint
    with pytest.raises(MachineError):
        Q.choose_accel("bogus", _probe())
    assert Q.choose_accel("tcg", _probe()) == ("tcg", None)


def test_accel_macos_and_aarch64():
    assert Q.choose_accel("auto", _probe(system="Darwin", machine="aarch64", hvf=True)) == ("hvf", None)
    accel, warning = Q.choose_accel("auto", _probe(system="Darwin", hvf=False))
    assert accel == "tcg" and "Hypervisor" in warning
    # arm64 Linux: KVM is built in, no kvm_intel/kvm_amd module
    assert Q.choose_accel("auto", _probe(machine="aarch64", kvm_modules=())) == ("kvm", None)


@pytest.mark.parametrize("probe,prog,cmd", [
    (dict(distro="debian"), "qemu-system-x86_64", "apt-get install qemu-system-x86"),
    (dict(distro="ubuntu debian"), "qemu-system-aarch64", "apt-get install qemu-system-arm"),
    (dict(distro="fedora"), "qemu-system-x86_64", "dnf install qemu-system-x86-core"),
    (dict(distro="arch"), "qemu-system-x86_64", "pacman -S qemu-base"),
    (dict(system="Darwin", distro=""), "qemu-system-aarch64", "brew install qemu"),
    (dict(system="Windows", distro=""), "qemu-system-x86_64", "winget install"),
    (dict(distro="debian"), "qemu-img", "apt-get install qemu-utils"),
])
def test_install_hint_names_the_command_for_the_host(probe, prog, cmd):
    assert cmd in Q.install_hint(prog, _probe(**probe))


def test_find_qemu_system_missing(tmp_path):
    from rootless.errors import HostError

    with pytest.raises(HostError) as e:
        Q.find_qemu_system("x86_64", {"PATH": str(tmp_path)}, _probe())
    assert "qemu-system-x86_64 not found" in e.value.message
    assert "apt-get install qemu-system-x86" in e.value.hint


# ---------------------------------------------------------------- forwarding plans

def test_plan_run_publish_is_forwarded_and_rewritten():
    plan = F.plan_forward(["run", "--rm", "-p", "127.0.0.1:8080:80", "-p8443:443/tcp", "--publish=53:53/udp",
                           "busybox", "httpd", "-p", "80"], "/tmp", "/home/alice")
    assert plan.ports == (("tcp", "127.0.0.1", 8080, 8080), ("tcp", "", 8443, 8443), ("udp", "", 53, 53))
    assert plan.remote_argv == ("run", "--rm", "-p", "8080:80", "-p8443:443/tcp", "--publish=53:53/udp",
                                "busybox", "httpd", "-p", "80")
    assert not plan.keep_ports  # foreground: the forwards go when it ends
    assert not plan.stdin and not plan.tty


def test_plan_detached_keeps_ports_and_flags_after_image_are_the_commands():
    plan = F.plan_forward(["container", "run", "-d", "--name", "web", "-e", "A=-p", "busybox", "sh", "-p", "1:2"],
                          "/", "/home/a")
    assert plan.ports == ()
    plan = F.plan_forward(["run", "-dp", "9000-9001:80-81", "img"], "/", "/home/a")
    assert [p[2] for p in plan.ports] == [9000, 9001]
    assert plan.remote_argv == ("run", "-dp", "9000-9001:80-81", "img")
    assert plan.keep_ports
    assert F.plan_forward(["create", "-p", "1:2", "img"], "/", "").keep_ports


def test_plan_publish_without_host_port_is_left_to_the_guest():
    plan = F.plan_forward(["run", "-p", "80", "-p", "127.0.0.1::81", "img"], "/", "")
    assert plan.ports == ()
    assert plan.remote_argv == ("run", "-p", "80", "-p", "81", "img")


def test_plan_ipv6_publish():
    assert F.parse_publish("[::1]:8080:80") == [("tcp", "::1", 8080, 8080)]
    assert F.guest_publish("[::1]:8080:80/udp") == "8080:80/udp"
    with pytest.raises(UsageError):
        F.parse_publish("abc:80")
    with pytest.raises(UsageError):
        F.parse_publish("8080:80/sctp")


def test_plan_tty_and_stdin():
    p = F.plan_forward(["run", "-it", "--rm", "img", "sh"], "/", "")
    assert p.tty and p.stdin
    p = F.plan_forward(["exec", "-i", "ctr", "cat"], "/", "")
    assert p.stdin and not p.tty
    p = F.plan_forward(["run", "img", "cat"], "/", "")
    assert not p.stdin
    assert F.plan_forward(["load"], "/", "").stdin
    assert F.plan_forward(["ps", "-a"], "/", "").stdin


def test_plan_loopback_registries_get_reverse_forwards():
    p = F.plan_forward(["run", "--rm", "127.0.0.1:5000/busybox", "true"], "/", "")
    assert p.reverse == (("127.0.0.1", 5000),)
    p = F.plan_forward(["pull", "localhost:5001/a/b:tag"], "/", "")
    assert p.reverse == (("localhost", 5001),)
    p = F.plan_forward(["login", "localhost:5002"], "/", "")
    assert p.reverse == (("localhost", 5002),)
    assert F.plan_forward(["run", "-p", "127.0.0.1:8080:80", "img"], "/", "").reverse == ()


def test_plan_cwd_and_bind_mounts_under_the_share():
    p = F.plan_forward(["run", "-v", "/home/a/src:/src", "--mount", "type=bind,source=/home/a/x,target=/x",
                        "img"], "/home/a/src", "/home/a")
    assert p.errors == () and p.cwd == "/home/a/src"
    assert F.remote_command(p).startswith("cd /home/a/src 2>/dev/null; exec python3 -m vmhost.guestrun run")
    p = F.plan_forward(["run", "-v", "/etc:/x", "img"], "/tmp", "/home/a")
    assert p.cwd == "" and p.errors and "/etc is not shared" in p.errors[0]
    p = F.plan_forward(["run", "-v", "data:/x", "--mount", "type=volume,source=v,target=/y", "img"], "/", "/home/a")
    assert p.errors == ()


def test_remote_command_quotes_every_argument():
    p = F.plan_forward(["run", "--rm", "img", "sh", "-c", "echo $HOME; exit 7"], "/", "")
    cmd = F.remote_command(p)
    assert shlex.split(cmd) == ["exec", "python3", "-m", "vmhost.guestrun", "run", "--rm", "img", "sh", "-c",
                                "echo $HOME; exit 7"]


# ---------------------------------------------------------------- cpio, modules, sources

def test_cpio_roundtrip_and_concatenation():
    buf = io.BytesIO()
    cpio.write(buf, [cpio.directory("bin"), cpio.file("bin/x", b"abc", 0o755), cpio.symlink("sh", "bin/x")])
    first = buf.getvalue()
    assert len(first) % 4 == 0
    buf2 = io.BytesIO()
    cpio.write(buf2, [cpio.file("bin/x", b"new", 0o700)], first_ino=100)
    entries = cpio.read(first + buf2.getvalue())
    assert [(e.name, stat.S_IFMT(e.mode)) for e in entries] == [
        ("bin", stat.S_IFDIR), ("bin/x", stat.S_IFREG), ("sh", stat.S_IFLNK), ("bin/x", stat.S_IFREG)]
    assert entries[1].data == b"abc" and entries[2].data == b"bin/x" and entries[3].data == b"new"
    assert stat.S_IMODE(entries[3].mode) == 0o700


def test_module_closure_orders_dependencies_first():
    dep = ("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n"
           "kernel/fs/jbd2/jbd2.ko:\nkernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\n"
           "kernel/drivers/virtio/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n"
           "kernel/drivers/virtio/virtio_ring.ko:\nkernel/drivers/virtio/virtio.ko:\n"
           "kernel/arch/x86/crypto/crc32c-intel.ko:\n")
    order = I.module_closure(dep, ("virtio_blk", "crc32c-intel", "ext4", "absent"))
    assert order.index("kernel/drivers/virtio/virtio.ko") < order.index("kernel/drivers/virtio/virtio_blk.ko")
    assert order.index("kernel/fs/jbd2/jbd2.ko") < order.index("kernel/fs/ext4/ext4.ko")
    assert "kernel/arch/x86/crypto/crc32c-intel.ko" in order
    assert len(order) == len(set(order)) == 8


def test_mirror_lines_from_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n")
    (tmp_path / "sources.list").write_text("deb [arch=amd64] https://other.example/apt cloud-sdk main\n")
    lines = I.mirror_lines(("bookworm", "bookworm-updates", "bookworm-security"), {}, tmp_path)
    assert lines == ["deb http://mirror.example/debian bookworm main",
                     "deb http://mirror.example/debian bookworm-updates main",
                     "deb http://mirror.example/debian-security bookworm-security main"]
    assert I.mirror_lines(("bookworm",), {"ROOTLESS_MACHINE_MIRROR": "http://m/debian"}, tmp_path) == [
        "deb http://m/debian bookworm main"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert I.mirror_lines(("trixie",), {}, empty) == ["deb http://deb.debian.org/debian trixie main"]


def test_recipe_key_changes_with_the_recipe():
    a = I.make_recipe("x86_64", "bookworm")
    b = I.make_recipe("x86_64", "trixie")
    assert a.key() == I.make_recipe("amd64", "bookworm").key()
    assert a.key() != b.key() and a.dirname.startswith("bookworm-amd64-")
    assert "path-include=/usr/bin/qemu-aarch64-static" in a.dpkg_options
    assert "path-include=/usr/bin/qemu-x86_64-static" not in a.dpkg_options
    with pytest.raises(MachineError):
        I.make_recipe("mips")


def _elf_with_note(name: bytes, ntype: int) -> bytes:
    desc = b"\0" * 4
    note = struct.pack("<III", len(name) + 1, len(desc), ntype) + name + b"\0" * (4 - len(name) % 4) + desc
    phoff = 64
    ehdr = bytearray(64)
    ehdr[:4] = b"\x7fELF"
    ehdr[4] = 2
    ehdr[5] = 1
    struct.pack_into("<Q", ehdr, 32, phoff)
    struct.pack_into("<HH", ehdr, 54, 56, 1)
    ph = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(ehdr) + ph + note


def test_pvh_note_detection_and_bzimage_extraction():
    import lzma

    elf = _elf_with_note(b"Xen", 18)
    assert I.has_pvh_note(elf)
    assert not I.has_pvh_note(_elf_with_note(b"GNU", 3))
    bz = b"MZ" + b"\0" * 500 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"\0" * 16
    assert I.extract_vmlinux(bz) == elf
    assert I.extract_vmlinux(b"no kernel here") is None


# ---------------------------------------------------------------- spec, seed, ssh

def test_spec_json_roundtrip_and_names():
    assert MachineSpec.from_json(json.loads(json.dumps(SPEC.to_json()))) == SPEC
    assert check_name("default") == "default"
    for bad in ("", "-x", "a/b", "a" * 64, "x y"):
        with pytest.raises(UsageError):
            check_name(bad)


def test_socket_paths_stay_short(tmp_path):
    class C:
        data_root = tmp_path / "data"
        runtime_dir = tmp_path / ("r" * 120)

    p = MachinePaths.of(C, "default")
    assert len(str(p.qmp)) < 108
    assert p.dir == tmp_path / "data" / "machines" / "default"


def test_seed_carries_user_keys_and_code():
    code = S.code_tar()
    entries = {e.name: e for e in S.seed_entries(SPEC, "ssh-ed25519 AAAA k", b"PRIVATE", code)}
    assert stat.S_IMODE(entries["seed/ssh_host_ed25519_key"].mode) == 0o600
    env = entries["seed/machine.env"].data.decode()
    assert "RL_USER=alice" in env and "RL_UID=1000" in env and "RL_HOME=/home/alice" in env and "RL_SHARE=home" in env
    assert b"ROOTLESS_ROOT=/var/lib/rootless/store" in entries["seed/sshd_env.conf"].data
    assert entries["init"].data.startswith(b"#!/bin/busybox sh")
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(entries["seed/rootless.tar"].data)).getnames()
    assert "rootless/cli/main.py" in names and "vmhost/forward.py" in names
    assert not any("__pycache__" in n for n in names)
    assert S.code_tar() == code  # reproducible: same code, same hash, no reinstall in the guest


def test_machine_env_is_shell_quoted():
    spec = SPEC.with_changes(home="/home/a b/$(x)")
    env = S.machine_env(spec)
    assert "RL_HOME='/home/a b/$(x)'" in env


def test_ssh_argv_pins_the_host_key(tmp_path):
    from vmhost import ssh

    argv = ssh.base_argv("/usr/bin/ssh", "dev", tmp_path / "k", tmp_path / "kh", 2222, "alice", tty=False)
    s = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in s and f"UserKnownHostsFile={tmp_path / 'kh'}" in s
    assert "HostKeyAlias=rootless-machine-dev" in s and "-F none" in s and "BatchMode=yes" in s
    assert argv[-1] == "-T" and "-p" in argv and "2222" in argv
    assert ssh.known_hosts_line("dev", "ssh-ed25519 AAAAC3 comment\n") == "rootless-machine-dev ssh-ed25519 AAAAC3\n"


def test_ssh_master_and_clients_share_the_control_socket(tmp_path):
    from vmhost import ssh

    ctl = tmp_path / "ssh.sock"
    client = ssh.base_argv("/usr/bin/ssh", "dev", tmp_path / "k", tmp_path / "kh", 2222, "alice", tty=True,
                           control=ctl)
    assert f"ControlPath={ctl}" in client and "ControlMaster=no" in client
    master = ssh.master_argv(client, ctl)
    assert master.count(f"ControlPath={ctl}") == 1 and "ControlMaster=no" not in master
    assert "ControlMaster=yes" in master and "ControlPersist=yes" in master
    assert master[-2:] == ["-N", "-f"] and "-t" not in master


def test_the_share_never_hides_the_guest_system():
    from vmhost.machine import _guest_system_path

    for p in ("/", "/usr", "/usr/local/x", "/etc", "/var", "/var/lib/rootless/store", "/run/user/1000", "/tmp"):
        assert _guest_system_path(p), p
    for p in ("/home/alice", "/Users/bob", "/tmp/pytest-1/home", "/var/tmp/h", "/root", "/srv/me"):
        assert not _guest_system_path(p), p

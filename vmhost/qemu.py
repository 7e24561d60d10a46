"""QEMU: which binary, which accelerator, and the command line.

``qemu_argv`` is a pure function of the frozen inputs (unit-tested without
QEMU); ``probe_host`` and ``find_qemu_system`` do the looking around.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

from rootless.errors import HostError, MachineError

QEMU_SYSTEM = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
ACCELS = ("auto", "kvm", "hvf", "whpx", "tcg")
GUEST_IP = "10.0.2.15"
HOST_LOOPBACK = "10.0.2.2"


# ---------------------------------------------------------------- host probing

@dataclass(frozen=True)
class HostProbe:
    system: str                     # platform.system(): Linux, Darwin, Windows
    machine: str                    # x86_64 | aarch64
    kvm_device: bool = False        # /dev/kvm exists
    kvm_access: bool = False        # ... and we may open it read-write
    kvm_modules: tuple[str, ...] = ()   # loaded among kvm_intel, kvm_amd, kvm_pvm
    hvf: bool = False               # macOS Hypervisor.framework (kern.hv_support)
    distro: str = ""                # /etc/os-release ID and ID_LIKE, space separated


def normalize_machine(m: str) -> str:
    return {"amd64": "x86_64", "arm64": "aarch64", "AMD64": "x86_64", "ARM64": "aarch64"}.get(m, m)


def probe_host() -> HostProbe:
    system = platform.system()
    machine = normalize_machine(platform.machine())
    kvm_device = os.path.exists("/dev/kvm")
    kvm_access = kvm_device and os.access("/dev/kvm", os.R_OK | os.W_OK)
    mods = tuple(m for m in ("kvm_intel", "kvm_amd", "kvm_pvm") if os.path.isdir(f"/sys/module/{m}"))
    hvf = False
    if system == "Darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "kern.hv_support"], capture_output=True, text=True, timeout=5)
            hvf = out.stdout.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            hvf = False
    distro = ""
    try:
        info = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        distro = " ".join(info.get(k, "").strip('"') for k in ("ID", "ID_LIKE")).strip()
    except OSError:
        pass
    return HostProbe(system, machine, kvm_device, kvm_access, mods, hvf, distro)


def choose_accel(requested: str, probe: HostProbe) -> tuple[str, str | None]:
    """(accelerator, warning) for ``requested`` (auto|kvm|hvf|whpx|tcg) on this host.

    An explicit request that cannot work is an error; ``auto`` falls back to
    TCG with a warning that says why and how to get acceleration.
    """
    if requested not in ACCELS:
        raise MachineError(f"unknown accelerator {requested!r}", hint="use one of " + ", ".join(ACCELS))
    if requested == "tcg":
        return "tcg", None
    why = None
    if probe.system == "Linux":
        if not probe.kvm_device:
            why = ("/dev/kvm does not exist (enable virtualization in the firmware settings and load "
                   "kvm_intel or kvm_amd)")
        elif not probe.kvm_access:
            why = "you may not open /dev/kvm (sudo usermod -aG kvm $USER, then log in again)"
        elif probe.machine == "x86_64" and not ({"kvm_intel", "kvm_amd"} & set(probe.kvm_modules)):
            if "kvm_pvm" in probe.kvm_modules:
                why = ("/dev/kvm is provided by kvm_pvm (nested paravirtualization), which runs a standard "
                       "guest kernel far slower than emulation")
            else:
                why = "neither kvm_intel nor kvm_amd is loaded"
        usable = "kvm" if why is None else None
    elif probe.system == "Darwin":
        usable = "hvf" if probe.hvf else None
        if not probe.hvf:
            why = "the Hypervisor framework is not available (kern.hv_support is 0)"
    elif probe.system == "Windows":
        usable = "whpx"
    else:
        usable = None
        why = f"no hardware accelerator known for {probe.system}"
    if requested == "auto":
        if usable:
            return usable, None
        return "tcg", f"no hardware acceleration: {why}; the machine runs under TCG emulation (several times slower)"
    if usable == requested:
        return requested, None
    raise MachineError(f"accelerator {requested} is not available here" + (f": {why}" if why else ""),
                       hint="use 'rootless machine set --accel auto NAME' (TCG emulation when nothing else works)")


# other programs a machine needs: package per package manager (same name when missing)
_OTHER = {
    "debugfs": {"brew": "e2fsprogs", "debian": "e2fsprogs", "fedora": "e2fsprogs"},
    "ssh": {"brew": "openssh", "debian": "openssh-client", "fedora": "openssh-clients", "arch": "openssh",
            "alpine": "openssh-client", "suse": "openssh-clients", "win": "OpenSSH.Client~~~~0.0.1.0"},
    "ssh-keygen": {"brew": "openssh", "debian": "openssh-client", "fedora": "openssh-clients", "arch": "openssh",
                   "alpine": "openssh-client", "suse": "openssh-clients", "win": "OpenSSH.Client~~~~0.0.1.0"},
}
_MANAGERS = {"debian": "sudo apt-get install", "ubuntu": "sudo apt-get install", "fedora": "sudo dnf install",
             "rhel": "sudo dnf install", "arch": "sudo pacman -S", "suse": "sudo zypper install",
             "alpine": "sudo apk add"}


def install_hint(program: str, probe: HostProbe) -> str:
    """The command that installs ``program`` (qemu-system-*, qemu-img, debugfs, ssh) on this host."""
    arch = "arm" if program.endswith("aarch64") else "x86"
    if program in _OTHER:
        pk = _OTHER[program]
        if probe.system == "Darwin":
            return f"install it: brew install {pk['brew']}"
        if probe.system == "Windows":
            if "win" in pk:
                return f"install it: Add-WindowsCapability -Online -Name {pk['win']} (PowerShell as administrator)"
            return f"install {program} (e2fsprogs, e.g. from MSYS2 or WSL) and add it to PATH"
        for k in probe.distro.split():
            for key, cmd in _MANAGERS.items():
                if k == key or k.startswith(key):
                    fam = "debian" if key == "ubuntu" else ("fedora" if key == "rhel" else key)
                    return f"install it: {cmd} {pk.get(fam, pk.get('debian', program))}"
        return f"install {program} with your system's package manager"
    if probe.system == "Darwin":
        return "install QEMU: brew install qemu"
    if probe.system == "Windows":
        return "install QEMU: winget install SoftwareFreedomConservancy.QEMU (and add it to PATH)"
    d = probe.distro.split()
    if program == "qemu-img":
        pk = {"debian": "sudo apt-get install qemu-utils", "ubuntu": "sudo apt-get install qemu-utils",
              "fedora": "sudo dnf install qemu-img", "rhel": "sudo dnf install qemu-img",
              "arch": "sudo pacman -S qemu-img", "suse": "sudo zypper install qemu-tools",
              "alpine": "sudo apk add qemu-img"}
    else:
        pk = {"debian": f"sudo apt-get install qemu-system-{arch}", "ubuntu": f"sudo apt-get install qemu-system-{arch}",
              "fedora": f"sudo dnf install qemu-system-{'aarch64' if arch == 'arm' else 'x86'}-core",
              "rhel": "sudo dnf install qemu-kvm",
              "arch": "sudo pacman -S qemu-base", "suse": f"sudo zypper install qemu-{'arm' if arch == 'arm' else 'x86'}",
              "alpine": f"sudo apk add {program}"}
    for k in d:
        for key, cmd in pk.items():
            if k == key or k.startswith(key):
                return f"install it: {cmd}"
    return f"install QEMU ({program}) with your system's package manager"


def _search_path(env: dict[str, str], probe: HostProbe) -> str:
    path = env.get("PATH", os.defpath)
    if probe.system == "Darwin":
        path += os.pathsep + "/opt/homebrew/bin" + os.pathsep + "/usr/local/bin"
    return path


def find_program(name: str, env: dict[str, str], probe: HostProbe, purpose: str) -> str:
    exe = shutil.which(name, path=_search_path(env, probe))
    if exe is None:
        raise HostError(f"{name} not found: needed to {purpose}", hint=install_hint(name, probe))
    return exe


def find_qemu_system(arch: str, env: dict[str, str], probe: HostProbe) -> str:
    name = QEMU_SYSTEM.get(arch)
    if name is None:
        raise MachineError(f"machines are not supported on {arch} hosts", hint="use an x86_64 or aarch64 host")
    return find_program(name, env, probe, "run the machine")


# ---------------------------------------------------------------- command line

@dataclass(frozen=True)
class Launch:
    """Everything the command line depends on, besides the spec."""
    qemu: str                   # qemu-system binary
    accel: str                  # kvm | hvf | whpx | tcg
    kernel: str
    initrd: str
    console: str                # ttyS0 | ttyAMA0
    disk: str
    ssh_port: int
    qmp: str
    pidfile: str
    serial_log: str
    share: str = ""             # host directory shared at the same path ("" = none)
    forwards: tuple[tuple[str, str, int, int], ...] = ()   # (proto, host ip, host port, guest port)
    append: str = ""            # the kernel command line ("" = the rootless guest's)
    seed_disk: str = ""         # a cloud image's NoCloud seed (raw, read-only; "" = none)
    host_system: str = "Linux"  # platform.system() of the host: Linux | Darwin | Windows


def kernel_cmdline(console: str, quiet: bool = True) -> str:
    parts = [f"console={console}", "root=/dev/vda", "rw", "panic=-1", "rootwait", "net.ifnames=0",
             "8250.nr_uarts=1", "tsc=reliable", "no_timer_check", "cryptomgr.notests", "random.trust_cpu=on"]
    if quiet:
        parts.append("quiet")
    return " ".join(parts)


def hostfwd_rule(proto: str, host_ip: str, host_port: int, guest_port: int) -> str:
    return f"{proto}:{host_ip}:{host_port}-:{guest_port}"


def _opt(value: str) -> str:
    """A value inside a QEMU option list (commas are doubled)."""
    return value.replace(",", ",,")


def qmp_chardev(address: str) -> str:
    """-chardev for the QMP socket: a unix socket path, or ``tcp:HOST:PORT`` (Windows)."""
    if address.startswith("tcp:"):
        host, port = address[4:].rsplit(":", 1)
        return f"socket,id=qmp0,host={host},port={port},server=on,wait=off"
    return f"socket,id=qmp0,path={_opt(address)},server=on,wait=off"


def qemu_argv(spec, launch: Launch) -> list[str]:
    """The QEMU command line for machine ``spec`` (pure).

    Per host OS: Linux and macOS QEMU daemonizes once set up (start-up errors
    come back synchronously) and QMP is a unix socket; Windows QEMU cannot
    daemonize (the caller starts it detached: vmhost.detach) and QMP is on a
    loopback TCP port; WHPX needs the in-kernel irqchip off.
    """
    arch = spec.arch
    accel = launch.accel
    argv = [launch.qemu, "-name", f"rootless-{spec.name},process=rootless-{spec.name}",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    if arch == "x86_64":
        argv += ["-machine", "q35,vmport=off,smbus=off,sata=off,usb=off"]
        cpu = "host" if accel in ("kvm", "hvf") else "max"
    elif arch == "aarch64":
        argv += ["-machine", "virt,gic-version=max" if accel != "hvf" else "virt"]
        cpu = "host" if accel in ("kvm", "hvf") else "max"
    else:
        raise MachineError(f"machines are not supported on {arch} hosts")
    if accel == "tcg":
        argv += ["-accel", "tcg,thread=multi,tb-size=256"]
    elif accel == "whpx":
        # WHPX cannot be probed before QEMU runs (Windows' optional "Windows Hypervisor
        # Platform" feature): QEMU uses the next -accel when one fails to initialize
        argv += ["-accel", "whpx,kernel-irqchip=off", "-accel", "tcg,thread=multi,tb-size=256"]
    else:
        argv += ["-accel", accel]
    argv += ["-cpu", cpu, "-smp", str(spec.cpus), "-m", f"{spec.memory_mib}M"]
    argv += ["-kernel", launch.kernel, "-initrd", launch.initrd,
             "-append", launch.append or kernel_cmdline(launch.console)]
    argv += ["-drive", f"if=none,id=disk0,file={_opt(launch.disk)},format=qcow2,discard=unmap,cache=writeback",
             "-device", "virtio-blk-pci,drive=disk0"]
    if launch.seed_disk:
        from vmhost.cloud import SEED_SERIAL

        argv += ["-drive", f"if=none,id=seed0,file={_opt(launch.seed_disk)},format=raw,readonly=on",
                 "-device", f"virtio-blk-pci,drive=seed0,serial={SEED_SERIAL}"]
    fwd = [f"hostfwd={hostfwd_rule('tcp', '127.0.0.1', launch.ssh_port, 22)}"]
    fwd += [f"hostfwd={hostfwd_rule(p, ip, hp, gp)}" for p, ip, hp, gp in launch.forwards]
    argv += ["-netdev", ",".join(["user", "id=net0", "ipv6=off"] + fwd),
             "-device", "virtio-net-pci,netdev=net0"]
    if launch.share:
        argv += ["-fsdev", f"local,id=fs0,path={_opt(launch.share)},security_model=none",
                 "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=home"]
    argv += ["-device", "virtio-rng-pci"]
    argv += ["-chardev", qmp_chardev(launch.qmp), "-mon", "chardev=qmp0,mode=control"]
    argv += ["-chardev", f"file,id=serial0,path={_opt(launch.serial_log)}", "-serial", "chardev:serial0"]
    argv += ["-pidfile", launch.pidfile]
    if launch.host_system != "Windows":
        argv.append("-daemonize")
    return argv

"""Which emulation mode runs an image's platform on this host.

Modes (docs/internals.md):

* ``native``    - the CPU runs it (amd64 and 386 on amd64; arm64, and arm
  where the CPU has AArch32, on arm64);
* ``host``      - the host already has an enabled binfmt_misc registration
  for the architecture with flag F (an admin ran `rootless binfmt install`,
  or the distribution's qemu-user-static/binfmt-support did). Nothing to do;
* ``sandboxed`` - the container's user namespace mounts its own
  binfmt_misc (Linux >= 6.7) and registers a static qemu-user with F (and P
  when qemu supports it) before pivot_root (``archsupport.binfmt.sandbox_register``);
* ``none``      - cannot run: ``Emulation.reason`` says why, ``.hint`` the fix;
  the runtime raises EmulationError (exit 125).

``choose(platform, config)`` = ``decide(platform, gather(platform, config),
config.emulation_mode)``: ``gather`` reads the host (binfmt_misc, qemu,
kernel), ``decide`` is pure and unit-tested with made-up facts.
``[emulation] mode`` = auto | host | sandboxed | none restricts the choice.
"""

from __future__ import annotations

from rootless.record import Record

# elf is imported here (cheap) so that exec_format_error works after pivot_root,
# when nothing can be imported from the host's filesystem any more
from archsupport import elf as _elf
from archsupport.platform import Platform, host_platform
from rootless.errors import CannotExecute

MODES = ("native", "host", "sandboxed", "none")
SANDBOX_KERNEL = (6, 7)


class EmulationFacts(Record):
    """What the decision depends on (gathered by ``gather``; made up in unit tests)."""
    host: Platform
    native: tuple[Platform, ...]
    kernel: tuple[int, int] = (0, 0)
    binfmt: object = None              # archsupport.binfmt.BinfmtState of the host (None: not read)
    qemu: object = None                # archsupport.qemu.QemuUser or None
    qemu_reason: str = ""              # where it came from / why there is none
    preserve_argv0: bool = False       # qemu and kernel support binfmt flag P
    sandbox_ok: bool | None = None     # a probe mounted binfmt_misc in a user namespace (None: not tried)
    sandbox_why: str = ""              # why that probe failed


class Emulation(Record):
    mode: str
    platform: Platform
    qemu: object = None                # QemuUser (sandboxed; host: None, the kernel has its own)
    flags: str = ""                    # binfmt flags of the sandboxed registration: "F" or "FP"
    host_entry: str = ""               # the host registration used (mode host)
    interpreter: str = ""              # the interpreter that will run the programs
    reason: str = ""                   # one line: why this mode
    hint: str = ""                     # the fix, when mode == "none"

    @property
    def foreign(self) -> bool:
        return self.mode != "native"

    def require(self) -> "Emulation":
        """Raise EmulationError (125) with the reason and the fix when the platform cannot run."""
        if self.mode == "none":
            from rootless.errors import EmulationError

            raise EmulationError(f"cannot run {self.platform} images: {self.reason}", hint=self.hint or None)
        return self

    def register_line(self) -> str:
        """The sandboxed registration this emulation makes (for logs, inspect and tests)."""
        from archsupport.binfmt import format_for, register_line

        if self.mode != "sandboxed" or self.qemu is None:
            return ""
        return register_line(format_for(self.platform.architecture), self.qemu.path, self.flags)

    def to_json(self) -> dict:
        return {"mode": self.mode, "platform": str(self.platform),
                "qemu": getattr(self.qemu, "path", "") or "", "flags": self.flags,
                "host_entry": self.host_entry, "interpreter": self.interpreter,
                "reason": self.reason, "hint": self.hint}


def _is_native(platform: Platform, native: tuple[Platform, ...]) -> bool:
    return any(n.matches(platform) for n in native)


def _install_hint(arch: str, qemu_target: str) -> str:
    return (f"install a static qemu-user: sudo apt-get install qemu-user-static (or set "
            f"[emulation.qemu] {arch} = \"/path/to/qemu-{qemu_target}-static\" in ~/.config/rootless/config.toml)")


def decide(platform: Platform, facts: EmulationFacts, setting: str = "auto") -> Emulation:
    """Pure: the emulation mode for ``platform`` given ``facts`` and ``[emulation] mode``."""
    from archsupport.binfmt import FORMATS
    from archsupport.qemu import qemu_name

    arch = platform.architecture
    if platform.os != "linux":
        return Emulation("none", platform, reason=f"{platform.os} images cannot run on Linux",
                         hint="use an image built for linux")
    if _is_native(platform, facts.native):
        return Emulation("native", platform, reason=f"the {facts.host.architecture} CPU runs {platform} natively")
    target = qemu_name(arch)
    admin_fix = f"an admin can register qemu on the host: sudo rootless binfmt install --arch {arch}"
    if arch not in FORMATS:
        return Emulation("none", platform, reason=f"rootless knows no binfmt_misc magic for {arch}",
                         hint="supported architectures: " + ", ".join(sorted(FORMATS)))
    if setting == "none":
        return Emulation("none", platform, reason="emulation is disabled ([emulation] mode = \"none\")",
                         hint="set [emulation] mode = \"auto\" in your config.toml")

    state = facts.binfmt
    entry = state.entry_for(arch, need_flags="F") if state is not None else None
    if entry is not None and setting in ("auto", "host"):
        return Emulation("host", platform, host_entry=entry.name, interpreter=entry.interpreter,
                         reason=f"host binfmt_misc entry {entry.name} runs {arch} with {entry.interpreter}")
    host_why = _host_why_not(arch, state)
    if setting == "host":
        return Emulation("none", platform, reason=f"[emulation] mode = \"host\", but {host_why}",
                         hint=admin_fix + ", or set [emulation] mode = \"auto\"")

    # sandboxed
    q = facts.qemu
    if q is None:
        return Emulation("none", platform, reason=f"no qemu-user for {arch}: {facts.qemu_reason}; and {host_why}",
                         hint=_install_hint(arch, target))
    if not q.static:
        return Emulation("none", platform, reason=f"{q.path} is dynamically linked: inside the container it would "
                                                  f"look for its libraries in the image; and {host_why}",
                         hint=_install_hint(arch, target))
    if facts.kernel < SANDBOX_KERNEL:
        k = ".".join(map(str, facts.kernel))
        return Emulation("none", platform,
                         reason=f"Linux {k} cannot register qemu inside a user namespace (sandboxed binfmt_misc "
                                f"needs Linux >= 6.7); and {host_why}",
                         hint=f"upgrade to Linux >= 6.7, or {admin_fix}")
    if facts.sandbox_ok is False:
        return Emulation("none", platform,
                         reason=f"binfmt_misc cannot be mounted in a user namespace here ({facts.sandbox_why}); "
                                f"and {host_why}",
                         hint=admin_fix)
    flags = "FP" if facts.preserve_argv0 else "F"
    extra = ""
    shadow = state.any_entry_for(arch) if state is not None and state.mounted else None
    if shadow is not None:
        extra = f" (host entry {shadow.name} is unusable in containers: " + (
            "disabled" if not shadow.enabled or not state.enabled else "no flag F") + ")"
    return Emulation("sandboxed", platform, qemu=q, flags=flags, interpreter=q.path,
                     reason=f"qemu-user {q.path} registered in the container's own binfmt_misc "
                            f"(flags {flags}){extra}")


def _host_why_not(arch: str, state) -> str:
    if state is None or not state.mounted:
        return "the host has no binfmt_misc registration (binfmt_misc not mounted)"
    if not state.enabled:
        return "binfmt_misc is disabled on the host"
    e = state.any_entry_for(arch)
    if e is None:
        return f"the host has no binfmt_misc registration for {arch}"
    if not e.enabled:
        return f"the host's binfmt_misc entry {e.name} is disabled"
    return f"the host's binfmt_misc entry {e.name} lacks flag F (its interpreter would be looked up in the image)"


def gather(platform: Platform, config, *, host: Platform | None = None, sandbox_ok: bool | None = None,
           sandbox_why: str = "") -> EmulationFacts:
    """Read what ``decide`` needs about the host; cheap for native platforms."""
    from archsupport.platform import host_platform, native_platforms
    from rootless.doctor import kernel_version

    host = host or host_platform()
    if platform.os != "linux" or host.matches(platform):
        return EmulationFacts(host, (host,))          # the common case: no probe, no I/O
    native = native_platforms(host)
    if _is_native(platform, native):
        return EmulationFacts(host, native)
    from archsupport.binfmt import read_state
    from archsupport.qemu import locate_qemu

    kernel = kernel_version()
    state = read_state()
    arch = platform.architecture
    q, why = locate_qemu(arch, config.qemu_path(arch) if config is not None else None)
    preserve = False
    # the version (a tiny subprocess) only matters when the sandboxed mode may be used
    if q is not None and q.static and state.entry_for(arch, need_flags="F") is None:
        preserve = q.supports_preserve_argv0(kernel)
    return EmulationFacts(host, native, kernel, state, q, why, preserve, sandbox_ok, sandbox_why)


def choose(platform: Platform, config, facts: EmulationFacts | None = None) -> Emulation:
    """The emulation for ``platform`` on this host (``facts`` for tests)."""
    setting = getattr(config, "emulation_mode", "auto") if config is not None else "auto"
    return decide(platform, facts or gather(platform, config), setting)


def arch_platform(arch: str) -> Platform:
    """The platform a bare architecture name stands for in tables (arm -> linux/arm/v7)."""
    return Platform("linux", arch, "v7" if arch == "arm" else "")


def emulation_table(config, *, sandbox_ok: bool | None = None, sandbox_why: str = "") -> dict:
    """Per known architecture: the mode ``run`` would use, the interpreter and why (``rootless info``)."""
    from archsupport.platform import KNOWN_ARCHES

    setting = getattr(config, "emulation_mode", "auto") if config is not None else "auto"
    out = {}
    for arch in KNOWN_ARCHES:
        p = arch_platform(arch)
        emu = decide(p, gather(p, config, sandbox_ok=sandbox_ok, sandbox_why=sandbox_why), setting)
        row = {"mode": emu.mode}
        if emu.interpreter:
            row["interpreter"] = emu.interpreter
        if emu.flags:
            row["flags"] = emu.flags
        if emu.mode != "native":
            row["reason"] = emu.reason
        if emu.hint:
            row["fix"] = emu.hint
        out[arch] = row
    return out


def foreign_binary(root, cmd: str, path_env: str | None = None, host: Platform | None = None):
    """(host path, ELF header, platform) of the program ``cmd`` in ``root`` when this host
    cannot run it natively; None when it can, or when it is no ELF program rootless knows.

    ``root``: the rootfs directory, or overlay layers top first
    (``archsupport.elf.resolve_in_root``). Reads one header: cheap enough for
    every ``run``, which checks the entrypoint against the image's platform
    with it (a mislabelled image: the config says amd64, the programs are arm64).
    """
    from archsupport.platform import native_platforms

    path, hdr = _elf.binary_architecture(root, cmd, path_env) if path_env else _elf.binary_architecture(root, cmd)
    if hdr is None or hdr.architecture is None:
        return None
    plat = arch_platform(hdr.architecture)
    host = host or host_platform()
    if host.architecture == plat.architecture or _is_native(plat, native_platforms(host)):
        return None
    return path, hdr, plat


def mislabelled_warning(cmd: str, hdr, image_platform: Platform | None, emu: Emulation,
                        host: Platform | None = None) -> str:
    """The warning of ``run`` when emulation runs an entrypoint that is foreign to the image's platform."""
    arch = hdr.architecture
    if image_platform is None:
        host = host or host_platform()
        return (f"{cmd} is {arch} ({hdr.describe()}), not {host.architecture} like this host: running it "
                f"emulated ({emu.mode}); say so with --platform linux/{arch}")
    return (f"the image says {image_platform}, but its {cmd} is {arch} ({hdr.describe()}) (mislabelled image): "
            f"running it emulated ({emu.mode}); run it as what it is: --platform linux/{arch}")


def explain_exec_format(cmd: str, hdr, image_platform: Platform | None, host: Platform | None = None):
    """The CannotExecute (126) for exec(cmd) failing with ENOEXEC, given its ELF header (None: not ELF).

    ``image_platform`` None: a --rootfs without --platform (nothing claimed).
    """
    host = host or host_platform()
    first = f"exec {cmd}: exec format error"
    if hdr is None:
        return CannotExecute(f"{first}: it is not a program rootless knows (no ELF header, or a script whose "
                             "interpreter is missing)", hint="check the image's entrypoint and command")
    arch = hdr.architecture
    if arch is None:
        return CannotExecute(f"{first}: it is {hdr.describe()}, an architecture rootless cannot emulate")
    what = _elf.explain_mismatch(cmd, hdr, host.architecture)
    fix = f"run it as what it is: --platform linux/{arch}"
    if image_platform is None:
        if arch == host.architecture:
            return CannotExecute(f"{first}: {cmd} is {hdr.describe()}, yet the kernel refused it",
                                 hint="the file may be damaged, or built for another kernel ABI")
        return CannotExecute(f"{first}: {what}, and no --platform was given", hint=fix)
    if arch != image_platform.architecture:
        return CannotExecute(f"{first}: {what}, but the image says {image_platform} (mislabelled image)", hint=fix)
    return CannotExecute(f"{first}: {what}, and {arch} emulation is not in effect",
                         hint="run `rootless doctor` to see the emulation mode for " + arch)


def exec_format_error(cmd: str, image_platform: Platform | None, *, path_env: str | None = None,
                      root: str = "/", host: Platform | None = None):
    """A CannotExecute (126) explaining why exec(cmd) failed with ENOEXEC, from its ELF header.

    Called by the runtime in the container (``root="/"``) or on its rootfs
    before pivot_root: "exec /bin/app: exec format error: /bin/app is arm64
    (ELF 64-bit LSB AArch64), the host is amd64, but the image says linux/amd64".
    """
    path, hdr = _elf.binary_architecture(root, cmd, path_env) if path_env else _elf.binary_architecture(root, cmd)
    return explain_exec_format(cmd, hdr, image_platform, host)

"""OCI platforms: os/arch/variant, normalisation, the host's platform.

``parse("linux/arm64")``, ``normalize_arch("aarch64") -> ("arm64", "")``,
``host_platform()``, ``native_platforms(host)``.
"""

from __future__ import annotations

import functools
import os
from rootless.record import Record

from rootless.errors import UsageError

# uname -m / common aliases -> (OCI arch, variant)
_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""), "armv8": ("arm64", ""), "armv8l": ("arm", "v7"),
    "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"), "armhf": ("arm", "v7"), "arm": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armv6": ("arm", "v6"), "armel": ("arm", "v5"), "armv5l": ("arm", "v5"),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""), "386": ("386", ""),
    "riscv64": ("riscv64", ""), "ppc64le": ("ppc64le", ""), "ppc64el": ("ppc64le", ""),
    "s390x": ("s390x", ""), "mips64le": ("mips64le", ""), "mips64el": ("mips64le", ""),
    "loong64": ("loong64", ""), "loongarch64": ("loong64", ""),
}

# OCI arch -> qemu-user / uname -m name
QEMU_ARCH: dict[str, str] = {
    "amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386", "riscv64": "riscv64",
    "ppc64le": "ppc64le", "s390x": "s390x", "mips64le": "mips64el", "loong64": "loongarch64",
}

KNOWN_ARCHES = tuple(QEMU_ARCH)
KNOWN_OS = ("linux",)


class Platform(Record):
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def uname_machine(self) -> str:
        """What ``uname -m`` prints on this platform (arm/v7 -> armv7l)."""
        if self.architecture == "arm":
            return {"v6": "armv6l", "v5": "armv5tel"}.get(self.variant, "armv7l")
        return QEMU_ARCH.get(self.architecture, self.architecture)

    def matches(self, other: "Platform") -> bool:
        """Does an image for ``other`` satisfy a request for ``self``?

        An empty variant on either side matches any variant (arm64 images
        carry "v8" or nothing).
        """
        if self.os != other.os or self.architecture != other.architecture:
            return False
        return not self.variant or not other.variant or normalize_variant(self.architecture, self.variant) == \
            normalize_variant(other.architecture, other.variant)

    def to_json(self) -> dict:
        d = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            d["variant"] = self.variant
        return d


def normalize_variant(arch: str, variant: str) -> str:
    if arch == "arm64" and variant in ("v8", "8"):
        return ""
    if variant and not variant.startswith("v") and variant.isdigit():
        return "v" + variant
    return variant


def normalize_arch(arch: str, variant: str = "") -> tuple[str, str]:
    a = arch.strip().lower()
    if a not in _ARCH_ALIASES:
        raise UsageError(f"unknown architecture {arch!r}",
                         hint="known: " + ", ".join(sorted(set(k for k in KNOWN_ARCHES))))
    oci, default_variant = _ARCH_ALIASES[a]
    v = normalize_variant(oci, variant.strip().lower()) if variant else default_variant
    if oci == "arm64":
        v = normalize_variant("arm64", v)
    return oci, v


def parse(spec: str, *, default_os: str = "linux") -> Platform:
    """``linux/arm64``, ``linux/arm/v7``, ``arm64``, ``linux/x86_64`` -> Platform."""
    s = spec.strip()
    if not s:
        raise UsageError("empty platform", hint="use os/arch[/variant], e.g. linux/arm64")
    parts = s.split("/")
    if len(parts) == 1:
        os_, arch, variant = default_os, parts[0], ""
    elif len(parts) == 2:
        os_, arch, variant = parts[0], parts[1], ""
    elif len(parts) == 3:
        os_, arch, variant = parts
    else:
        raise UsageError(f"invalid platform {spec!r}", hint="use os/arch[/variant], e.g. linux/arm64")
    os_ = os_.lower()
    if os_ not in KNOWN_OS:
        raise UsageError(f"unknown platform {spec!r}: os {os_!r} is not supported",
                         hint="known: " + ", ".join(known_platform_strings()))
    try:
        a, v = normalize_arch(arch, variant)
    except UsageError:
        raise UsageError(f"unknown platform {spec!r}",
                         hint="known: " + ", ".join(known_platform_strings())) from None
    return Platform(os_, a, v)


def known_platform_strings() -> list[str]:
    out = []
    for a in KNOWN_ARCHES:
        if a == "arm":
            out += ["linux/arm/v7", "linux/arm/v6"]
        else:
            out.append(f"linux/{a}")
    return out


def host_platform(machine: str | None = None) -> Platform:
    m = machine or os.uname().machine
    a, v = normalize_arch(m)
    return Platform("linux", a, v)


def native_platforms(host: Platform | None = None) -> tuple[Platform, ...]:
    """Platforms the host CPU runs without emulation.

    Besides the host's own: 386 on amd64 and arm (v7, v6) on arm64, when the
    kernel and CPU really execute them (Linux may be booted with
    ia32_emulation=0; many arm64 CPUs have no AArch32).
    """
    host = host or host_platform()
    out = [host]
    if host.architecture == "amd64" and _secondary_runs("386"):
        out.append(Platform("linux", "386"))
    elif host.architecture == "arm64" and _secondary_runs("arm"):
        out += [Platform("linux", "arm", "v7"), Platform("linux", "arm", "v6")]
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _secondary_runs(arch: str) -> bool:
    """Does the host execute ``arch`` programs without qemu?

    386 on amd64: unless the kernel was booted with ``ia32_emulation=0``
    (cheap: this is on every `run`'s path). arm on arm64: executes the tiny
    ``exit(42)`` program of archsupport.probe directly. A host binfmt_misc
    registration for arm would make that probe succeed through qemu, so then
    (and when the probe cannot be run at all) /proc/cpuinfo decides.
    """
    if arch == "386":
        try:
            with open("/proc/cmdline") as f:
                return "ia32_emulation=0" not in f.read().split()
        except OSError:
            return True
    from archsupport.binfmt import read_state

    if read_state().any_entry_for(arch) is None:
        got = _exec_probe(arch)
        if got is not None:
            return got
    return _arm32_in_cpuinfo()


def _exec_probe(arch: str) -> bool | None:
    """True/False if the probe ran/failed with ENOEXEC; None if it could not be tried."""
    import errno
    import tempfile

    from archsupport.probe import EXIT_CODE, probe_elf

    for d in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/dev/shm"):
        if not d or not os.path.isdir(d):
            continue
        try:
            fd, path = tempfile.mkstemp(prefix=".rootless-probe-", dir=d)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(probe_elf(arch))
            os.chmod(path, 0o700)
            try:
                pid = os.posix_spawn(path, [path], {})
            except OSError as e:
                if e.errno == errno.ENOEXEC:
                    return False
                continue      # noexec mount, EACCES: try the next directory
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) == EXIT_CODE
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
    return None


def _arm32_in_cpuinfo() -> bool:
    """Does this arm64 CPU execute AArch32 code (cpuinfo lists 32-bit features)?"""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return False
    return "CPU architecture: 7" in text or " thumb" in text or "half thumb" in text or "edsp" in text


def requested(platform: str | None = None, arch: str | None = None, variant: str | None = None,
              os_: str | None = None) -> Platform | None:
    """The platform asked for by ``--platform`` and/or Podman's ``--arch``/``--variant``/``--os``.

    ``--arch``/``--variant``/``--os`` override the parts of ``--platform``;
    None when nothing was asked (the host's platform is then preferred).
    Unknown values raise UsageError (exit 125) listing the known platforms.
    """
    if not (platform or arch or variant or os_):
        return None
    base = parse(platform) if platform else None
    o = (os_ or (base.os if base else "linux")).lower()
    if o not in KNOWN_OS:
        raise UsageError(f"unknown platform os {o!r}", hint="known: " + ", ".join(known_platform_strings()))
    if arch:
        try:
            a, v = normalize_arch(arch, variant or "")
        except UsageError:
            raise UsageError(f"unknown architecture {arch!r}",
                             hint="known: " + ", ".join(known_platform_strings())) from None
    elif base:
        a, v = base.architecture, (normalize_variant(base.architecture, variant) if variant else base.variant)
    else:
        h = host_platform()
        a, v = h.architecture, (normalize_variant(h.architecture, variant) if variant else h.variant)
    return Platform(o, a, v)


def mismatch_warning(wanted: Platform | None, actual: Platform, host: Platform | None = None) -> str | None:
    """The warning pull/run/create print when the image's platform is not the one asked for.

    With no platform asked for, Docker's warning when the host does not run
    the image natively (it runs emulated); None when all is well.
    """
    host = host or host_platform()
    if wanted is not None:
        if wanted.matches(actual):
            return None
        return f"image platform ({actual}) does not match the expected platform ({wanted})"
    if host.matches(actual) or (actual.architecture != host.architecture
                                and any(n.matches(actual) for n in native_platforms(host))):
        return None
    return (f"The requested image's platform ({actual}) does not match the detected host platform ({host}) "
            "and no specific platform was requested")


def select(available: list[Platform], wanted: Platform | None, host: Platform | None = None,
           ref: str = "the image") -> Platform:
    """Pick the entry of an index for ``wanted`` (or the host); raise PlatformNotFound listing the others.

    Without ``wanted``: the host's platform, else another natively run one
    (386 on amd64), else - like Docker - fail rather than silently emulate.
    """
    from rootless.errors import PlatformNotFound

    host = host or host_platform()
    linux = [p for p in available if p.os == "linux"] or list(available)
    if wanted is not None:
        exact = [p for p in linux if p == wanted]
        if exact:
            return exact[0]
        loose = [p for p in linux if wanted.matches(p)]
        if loose:
            return loose[0]
    else:
        for cand in (host, *native_platforms(host)[1:]):
            for p in linux:
                if cand.matches(p):
                    return p
    have = ", ".join(sorted({str(p) for p in available})) or "none"
    want = str(wanted or host)
    raise PlatformNotFound(f"{ref} has no {want} image (it has: {have})",
                           hint=f"choose one with --platform, e.g. --platform {sorted(str(p) for p in available)[0]}"
                           if available else None)

"""Host-wide binfmt_misc registrations, for administrators (`rootless binfmt`).

``install`` registers a static qemu-user for foreign architectures in the
host's binfmt_misc (mounting it at /proc/sys/fs/binfmt_misc when it is not),
with flag F (and P when qemu supports it), under the name
``rootless-qemu-<target>``; with ``persist`` it also writes
/etc/binfmt.d/rootless-qemu-<target>.conf for systemd-binfmt at boot.
Each new registration is proven by executing the architecture's probe
program (archsupport.probe) through it; one that does not work is removed at
once - a broken registration can hijack every program on the host.

``uninstall`` removes our registrations and configuration files, and
unmounts binfmt_misc again if ``install`` mounted it and nothing else is
registered: the host is left as it was.

``status`` lists every registration (ours and others'), what it runs, and
whether it works (the probe is executed through it).
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from dataclasses import dataclass

from archsupport.binfmt import (BINFMT_D, HOST_BINFMT_DIR, HOST_PREFIX, FORMATS, BinfmtState, check_safe,
                                format_for, read_state, register_line, remove_entry, write_register)
from rootless.errors import EmulationError, HostError, UsageError

LOCK_FILE = "/run/lock/rootless-binfmt.lock"     # flock'ed around install/uninstall
MOUNT_MARKER = "/run/rootless-binfmt.mounted"    # exists while binfmt_misc is mounted because of install


def entry_name(arch: str) -> str:
    return f"{HOST_PREFIX}{format_for(arch).name}"


def conf_path(arch: str, binfmt_d: str = BINFMT_D) -> str:
    return os.path.join(binfmt_d, f"{entry_name(arch)}.conf")


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HostError(f"binfmt {what} changes the host's binfmt_misc: it must run as root",
                        hint=f"sudo rootless binfmt {what} (users need no registration on Linux >= 6.7: "
                             "rootless registers qemu inside each container)")


@contextmanager
def _locked():
    import fcntl

    lock = LOCK_FILE if os.path.isdir(os.path.dirname(LOCK_FILE)) else "/run/rootless-binfmt.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_mounted(path: str = HOST_BINFMT_DIR) -> bool:
    """Mount binfmt_misc at ``path`` unless it is; True if this call mounted it."""
    from rootless import syscalls

    if read_state(path).mounted:
        return False
    try:
        syscalls.mount("binfmt_misc", path, "binfmt_misc",
                       syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    except OSError as e:
        raise HostError(f"cannot mount binfmt_misc on {path}: {os.strerror(e.errno or 0)}",
                        hint="load the module (modprobe binfmt_misc) and run as root") from None
    with open(MOUNT_MARKER, "w") as f:
        f.write(f"{path}\n")
    return True


def parse_arches(values: list[str] | None) -> list[str] | None:
    """``--arch arm64,riscv64 --arch linux/s390x`` -> OCI arch names (None: all)."""
    if not values:
        return None
    from archsupport.platform import normalize_arch, parse

    out: list[str] = []
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                arch = parse(item).architecture if "/" in item else normalize_arch(item)[0]
            except UsageError:
                raise UsageError(f"unknown architecture {item!r}", hint="known: " + ", ".join(FORMATS)) from None
            if arch not in FORMATS:
                raise UsageError(f"no binfmt_misc registration is known for {arch!r}",
                                 hint="known: " + ", ".join(FORMATS))
            if arch not in out:
                out.append(arch)
    return out


# ---------------------------------------------------------------------------
# probing a registration

def run_probe(arch: str) -> tuple[bool, str]:
    """Execute ``arch``'s probe program; (works, detail)."""
    import tempfile

    from archsupport.probe import EXIT_CODE, probe_elf

    last = "no directory allows executing a file"
    for d in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/dev/shm"):
        if not d or not os.path.isdir(d):
            continue
        try:
            fd, path = tempfile.mkstemp(prefix=f".probe-{arch}-", dir=d)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(probe_elf(arch))
            os.chmod(path, 0o755)
            try:
                pid = os.posix_spawn(path, [path], {})
            except OSError as e:
                if e.errno == errno.ENOEXEC:
                    return False, "exec format error: no working registration"
                last = f"cannot execute the probe in {d}: {e.strerror}"
                continue
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code == EXIT_CODE:
                return True, "probe program ran"
            return False, (f"probe program killed by signal {-code}" if code < 0 else
                           f"probe program exited {code}, expected {EXIT_CODE}")
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
    return False, last


# ---------------------------------------------------------------------------
# status

@dataclass(frozen=True)
class EntryStatus:
    name: str
    arch: str                # OCI arch it runs, "" if not an ELF architecture we know
    interpreter: str
    flags: str
    enabled: bool
    ours: bool
    persisted: str           # the binfmt.d file that recreates it at boot, or ""
    works: bool | None       # None: not tried (not an architecture we can probe)
    detail: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "arch": self.arch, "interpreter": self.interpreter, "flags": self.flags,
                "enabled": self.enabled, "rootless": self.ours, "persisted": self.persisted, "works": self.works,
                "detail": self.detail}


def _persisted_file(name: str, dirs=(BINFMT_D, "/run/binfmt.d", "/usr/lib/binfmt.d", "/lib/binfmt.d")) -> str:
    for d in dirs:
        try:
            files = sorted(os.listdir(d))
        except OSError:
            continue
        for f in files:
            if not f.endswith(".conf"):
                continue
            p = os.path.join(d, f)
            try:
                with open(p) as fh:
                    for line in fh:
                        line = line.strip()
                        if line and line[0] not in "#;" and line.split(":")[1:2] == [name]:
                            return p
            except OSError:
                continue
    return ""


def status(path: str = HOST_BINFMT_DIR, probe: bool = True) -> tuple[BinfmtState, list[EntryStatus]]:
    """The host's registrations and whether each works."""
    from archsupport.platform import host_platform, native_platforms

    state = read_state(path)
    native = {p.architecture for p in native_platforms(host_platform())}
    rows = []
    for e in state.entries:
        arch = e.architecture() or ""
        works: bool | None = None
        detail = ""
        if arch and probe and arch not in native:
            if not state.enabled:
                works, detail = False, "binfmt_misc is disabled (status)"
            elif not e.enabled:
                works, detail = False, "entry disabled"
            else:
                works, detail = run_probe(arch)
        elif arch in native:
            detail = "native architecture"
        rows.append(EntryStatus(e.name, arch, e.interpreter, e.flags, e.enabled, e.name.startswith(HOST_PREFIX),
                                _persisted_file(e.name), works, detail))
    return state, rows


# ---------------------------------------------------------------------------
# install / uninstall

@dataclass(frozen=True)
class Change:
    arch: str
    action: str          # registered | exists | skipped | removed | absent
    name: str = ""
    detail: str = ""


def default_arches(config) -> list[str]:
    """Every foreign architecture of the table that has a static qemu here."""
    from archsupport.platform import host_platform, native_platforms
    from archsupport.qemu import find_qemu

    native = {p.architecture for p in native_platforms(host_platform())}
    return [a for a in FORMATS if a not in native
            and (q := find_qemu(a, config.qemu_path(a) if config else None)) and q.static]


def install(arches: list[str] | None, config, *, persist: bool = False, path: str = HOST_BINFMT_DIR,
            binfmt_d: str = BINFMT_D, reporter=None) -> list[Change]:
    from archsupport.platform import host_platform, native_platforms

    _require_root("install")
    native = {p.architecture for p in native_platforms(host_platform())}
    explicit = arches is not None
    todo = arches if explicit else default_arches(config)
    if explicit:
        for a in todo:
            if a in native:
                raise UsageError(f"{a} is native on this host: it must not be registered",
                                 hint="registering the host's own architecture would send every program through qemu")
    if not todo:
        raise HostError("no static qemu-user found for any foreign architecture",
                        hint="sudo apt-get install qemu-user-static")
    changes: list[Change] = []
    with _locked():
        mounted = ensure_mounted(path)
        try:
            _install_locked(todo, explicit, config, persist, path, binfmt_d, native, changes, reporter)
        except BaseException:
            if mounted and not read_state(path).entries:
                _unmount_ours(path)
            raise
    return changes


def _install_locked(todo, explicit, config, persist, path, binfmt_d, native, changes, reporter) -> None:
    from archsupport.qemu import locate_qemu, qemu_name

    state = read_state(path)
    for arch in todo:
        name = entry_name(arch)
        existing = state.entry_for(arch, need_flags="F")
        if existing is not None:
            changes.append(Change(arch, "exists", existing.name,
                                  f"already registered ({existing.interpreter}, flags {existing.flags})"))
            if persist and existing.name == name:
                _write_conf(arch, _conf_line_of(existing, arch), binfmt_d)
            continue
        q, why = locate_qemu(arch, config.qemu_path(arch) if config else None)
        if q is None or not q.static:
            if explicit:
                raise HostError(f"cannot register {arch}: {why}", hint="sudo apt-get install qemu-user-static")
            changes.append(Change(arch, "skipped", name, why))
            continue
        fmt = format_for(arch)
        check_safe(fmt, q.path, native)
        flags = "FP" if q.supports_preserve_argv0() else "F"
        line = register_line(fmt, q.path, flags, name=name)
        if any(e.name == name for e in state.entries):
            remove_entry(path, name)         # ours, but disabled or without F: replace it
        write_register(path, line)
        ok, detail = run_probe(arch)
        if not ok:
            remove_entry(path, name)
            raise EmulationError(f"the registration for {arch} ({q.path}) does not work: {detail}; removed it",
                                 hint=f"check that {q.path} runs {qemu_name(arch)} programs")
        if persist:
            _write_conf(arch, line, binfmt_d)
        changes.append(Change(arch, "registered", name, f"{q.path} (flags {flags})"
                              + (f", persisted in {conf_path(arch, binfmt_d)}" if persist else "")))
        if reporter:
            reporter.info(f"registered {name}: {q.path} (flags {flags})")


def _conf_line_of(entry, arch: str) -> str:
    return register_line(format_for(arch), entry.interpreter, "".join(c for c in entry.flags if c in "PF"),
                         name=entry.name)


def _write_conf(arch: str, line: str, binfmt_d: str) -> None:
    os.makedirs(binfmt_d, mode=0o755, exist_ok=True)
    dest = conf_path(arch, binfmt_d)
    tmp = f"{dest}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write("# written by `rootless binfmt install --persist`; remove with `rootless binfmt uninstall`\n")
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)


def uninstall(arches: list[str] | None, *, path: str = HOST_BINFMT_DIR, binfmt_d: str = BINFMT_D,
              reporter=None) -> list[Change]:
    """Remove our registrations (all, or those of ``arches``) and their binfmt.d files."""
    _require_root("uninstall")
    changes: list[Change] = []
    with _locked():
        state = read_state(path)
        ours = {e.name for e in state.entries if e.name.startswith(HOST_PREFIX)}
        todo = arches if arches is not None else list(FORMATS)
        for arch in todo:
            name = entry_name(arch)
            removed = name in ours and remove_entry(path, name)
            conf = conf_path(arch, binfmt_d)
            had_conf = os.path.exists(conf)
            if had_conf:
                os.unlink(conf)
            if removed or had_conf:
                changes.append(Change(arch, "removed", name, ("registration" if removed else "")
                                      + (" and " if removed and had_conf else "") + (conf if had_conf else "")))
                if reporter:
                    reporter.info(f"removed {name}")
            elif arches is not None:
                changes.append(Change(arch, "absent", name, "not registered by rootless"))
        after = read_state(path)
        if not after.entries:
            _unmount_ours(path)
    return changes


def _unmount_ours(path: str) -> None:
    """Unmount binfmt_misc at ``path`` if ``install`` mounted it (the marker says so)."""
    from rootless import syscalls

    marker = MOUNT_MARKER
    if not os.path.exists(marker):
        return
    if read_state(path).mounted:
        try:
            syscalls.umount2(path, 0)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise HostError(f"cannot unmount {path}: {os.strerror(e.errno or 0)}") from None
    os.unlink(marker)

"""The container set-up as a list of steps (pure).

``plan(spec, host)`` writes the whole order once, like bubblewrap's op list;
``rootless.runtime.execute`` runs the list in the container's first process
(one loop, each syscall checked, each failure naming the step and the fix).

Order: rootfs (overlay) -> binfmt_misc (foreign images) -> /proc -> /dev
(tmpfs, device binds, pts, shm, mqueue) -> /sys -> volumes, tmpfs, /etc
files (and keep-id's /etc/passwd entry) -> working dir -> masked and
read-only paths -> read-only root -> pivot_root -> hostname -> (process:
user, capabilities, no_new_privs, fds, exec). The user namespace, its maps and the other namespaces are created
before the list runs (execute.py), since they need the parent's help.
"""

from __future__ import annotations

from rootless import syscalls as sc
from rootless.record import Record

# OCI runtime-spec defaults (runc/crun/Podman)
MASKED_PATHS = ("/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))
ETC_FILES = ("hosts", "hostname", "resolv.conf")

HINT_OVERLAY = ("kernel overlayfs in a user namespace needs Linux >= 5.11; install fuse-overlayfs "
                "(apt-get install fuse-overlayfs) or set [storage] driver = \"fuse-overlayfs\"")
HINT_PROC = "the host's /proc must be fully visible (no over-mounts) to mount a new one in a user namespace"


class Step(Record):
    """Base of all steps; ``what`` names the step in errors."""

    @property
    def what(self) -> str:
        return type(self).__name__

    hint = None


class MountRootfs(Step):
    driver: str                       # overlay | fuse-overlayfs | vfs
    lowers: tuple[str, ...]           # lowest first
    upper: str
    work: str
    target: str                       # mount point on the host side (containers/<id>/rootfs)
    cwd: str                          # lower paths are relative to this directory
    fuse: str = ""                    # fuse-overlayfs path (driver or fallback)
    uidmapping: str = ""              # fuse-overlayfs, keep-id
    gidmapping: str = ""
    fallback: tuple[str, ...] = ()    # drivers to try in turn when ``driver`` fails

    @property
    def what(self) -> str:
        return f"mounting the container's root filesystem ({self.driver})"

    hint = HINT_OVERLAY


class Binfmt(Step):
    """Register qemu-user in a sandboxed binfmt_misc (archsupport) for a foreign image."""
    platform: str

    @property
    def what(self) -> str:
        return f"registering emulation for {self.platform} (sandboxed binfmt_misc)"


class Mount(Step):
    target: str                       # inside the container
    fstype: str
    source: str = "none"
    flags: int = 0
    data: str = ""
    kind: str = "dir"                 # what to create at target: dir | file
    optional: bool = False            # failure is ignored (e.g. cgroup2 on a hybrid host)

    @property
    def what(self) -> str:
        return f"mounting {self.fstype} on {self.target}"


class Bind(Step):
    source: str                       # host path (before pivot_root)
    target: str                       # inside the container
    readonly: bool = False
    kind: str = "dir"                 # dir | file | auto (from the source)
    recursive: bool = True
    copy_up: bool = False             # fill an empty new volume with the image's content at target
    inside: bool = False              # source is a path inside the container (e.g. /dev/pts/0)

    @property
    def what(self) -> str:
        return f"bind-mounting {self.source} on {self.target}"


class Symlink(Step):
    path: str
    link: str

    @property
    def what(self) -> str:
        return f"creating the symlink {self.path} -> {self.link}"


class Mask(Step):
    path: str

    @property
    def what(self) -> str:
        return f"masking {self.path}"


class ReadOnly(Step):
    path: str

    @property
    def what(self) -> str:
        return f"making {self.path} read-only"


class PasswdEntry(Step):
    """--userns=keep-id (Podman): when the image's /etc/passwd has neither the user's uid nor
    their name, bind-mount a copy with their entry (``line``) added from ``file`` (userdata)."""
    uid: int
    gid: int
    name: str
    line: str                         # name:*:uid:gid:name:home:/bin/sh
    file: str                         # host path of the copy (containers/<id>/userdata/passwd)

    @property
    def what(self) -> str:
        return f"adding {self.name} (uid {self.uid}) to /etc/passwd (--userns=keep-id)"


def passwd_line(name: str, uid: int, gid: int, home: str) -> str:
    """Podman's keep-id entry (pure); "" when a field cannot go into a passwd line."""
    if not name or any(c in f for f in (name, home) for c in ":\n\0"):
        return ""
    return f"{name}:*:{uid}:{gid}:{name}:{home or '/'}:/bin/sh"


def passwd_has(text: str, uid: int, name: str) -> bool:
    """Whether a passwd text has an entry for ``uid`` or ``name`` (pure)."""
    for line in text.splitlines():
        f = line.split(":")
        if len(f) >= 3 and (f[0] == name or (f[2].isdigit() and int(f[2]) == uid)):
            return True
    return False


class Mkdir(Step):
    path: str

    @property
    def what(self) -> str:
        return f"creating the working directory {self.path}"


class LoopbackUp(Step):
    @property
    def what(self) -> str:
        return "bringing up the loopback interface"


class RootReadonly(Step):
    @property
    def what(self) -> str:
        return "making the root filesystem read-only (--read-only)"


class PivotRoot(Step):
    @property
    def what(self) -> str:
        return "pivot_root into the container's root filesystem"


class Hostname(Step):
    name: str

    @property
    def what(self) -> str:
        return f"setting the hostname to {self.name}"


class Process(Step):
    """The last step: who runs what (done by execute after the mounts)."""
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    caps: tuple[int, ...]
    no_new_privs: bool
    init: bool
    tty: bool

    @property
    def what(self) -> str:
        return "starting the container process"


class Host(Record):
    """What the plan needs to know about the host and the store (no I/O in plan)."""
    container_dir: str
    store_dir: str                    # relative lower paths are resolved from here
    lowers: tuple[str, ...]           # lowest first; relative to store_dir or absolute
    driver: str = "overlay"
    fuse: str = ""                    # fuse-overlayfs path if usable
    copy_fallback: bool = False       # [storage] driver = "auto": a copy (vfs) when no overlay mounts
    new_netns: bool = True
    single_mapping: bool = False
    volume_dirs: tuple[tuple[str, str, bool], ...] = ()   # (target, host dir, created new) per volume mount
    foreign_platform: str = ""        # set when the image needs emulation
    keep_id: tuple[int, int, int] = (0, 0, 0)             # (uid, gid, total ids) with --userns=keep-id
    keep_user: tuple = ()             # keep-id: (uid, gid, name, home) of the user, for /etc/passwd
    cgroup2_unified: bool = False     # /sys/fs/cgroup is a cgroup2 mount (pure v2 host)
    extra: dict = {}

    @property
    def rootfs(self) -> str:
        return f"{self.container_dir}/rootfs"


def plan(spec, host: Host) -> list[Step]:
    """The ordered set-up steps for ``spec`` on ``host`` (pure)."""
    from rootless.storage import keep_id_fuse_mapping

    steps: list[Step] = []
    cdir = host.container_dir
    driver = host.driver
    uidmap = gidmap = ""
    # auto: overlay -> fuse-overlayfs (its absence is noted in the warning) -> a copy
    fallback = ("fuse-overlayfs",) if driver == "overlay" and (host.fuse or host.copy_fallback) else ()
    if host.copy_fallback and driver != "vfs":
        fallback += ("vfs",)
    if spec.userns == "keep-id" and not host.single_mapping:
        if driver == "overlay":
            driver = "fuse-overlayfs"   # the kernel overlay cannot remap ids
        fallback = ()                   # nor can a copy
        uid, gid, total = host.keep_id
        uidmap = keep_id_fuse_mapping(uid, total)
        gidmap = keep_id_fuse_mapping(gid, total)
    steps.append(MountRootfs(driver, tuple(host.lowers), f"{cdir}/upper", f"{cdir}/work", host.rootfs,
                             host.store_dir, host.fuse, uidmap, gidmap, fallback))
    if host.foreign_platform:
        steps.append(Binfmt(host.foreign_platform))

    nosuid_nodev_noexec = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    steps.append(Mount("/proc", "proc", "proc", nosuid_nodev_noexec))
    steps.append(Mount("/dev", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k"))
    for d in DEVICES:
        steps.append(Bind(f"/dev/{d}", f"/dev/{d}", kind="file", recursive=False))
    for name, link in DEV_LINKS:
        steps.append(Symlink(f"/dev/{name}", link))
    pts = "newinstance,ptmxmode=0666,mode=0620" + ("" if host.single_mapping else ",gid=5")
    steps.append(Mount("/dev/pts", "devpts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, pts))
    steps.append(Mount("/dev/shm", "tmpfs", "shm", nosuid_nodev_noexec, "mode=1777,size=65536k"))
    steps.append(Mount("/dev/mqueue", "mqueue", "mqueue", nosuid_nodev_noexec))
    if host.new_netns:
        steps.append(Mount("/sys", "sysfs", "sysfs", nosuid_nodev_noexec | sc.MS_RDONLY))
        steps.append(LoopbackUp())
    else:
        # sysfs can only be mounted by the owner of the network namespace
        steps.append(Bind("/sys", "/sys", readonly=True))
    if host.cgroup2_unified:
        steps.append(Mount("/sys/fs/cgroup", "cgroup2", "cgroup2", nosuid_nodev_noexec | sc.MS_RDONLY,
                           optional=True))

    vols = {t: (d, new) for t, d, new in host.volume_dirs}
    for m in spec.mounts:
        if m.kind == "tmpfs":
            # Docker's and Podman's defaults: noexec,nosuid,nodev (exec/suid/dev turn them off)
            flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | (sc.MS_RDONLY if m.readonly else 0)
            clear = {"exec": sc.MS_NOEXEC, "suid": sc.MS_NOSUID, "dev": sc.MS_NODEV}
            data = []
            for o in m.options:
                if o in clear:
                    flags &= ~clear[o]
                elif o in ("noexec", "nosuid", "nodev"):
                    continue
                else:
                    data.append(o)
            steps.append(Mount(m.target, "tmpfs", "tmpfs", flags, ",".join(data)))
        elif m.kind == "bind":
            steps.append(Bind(m.source, m.target, readonly=m.readonly, kind="auto"))
        else:
            if m.target not in vols:
                from rootless.errors import VolumeError

                raise VolumeError(f"the volume for {m.target} was not prepared")
            d, new = vols[m.target]
            steps.append(Bind(d, m.target, readonly=m.readonly, copy_up=new))

    targets = {m.target for m in spec.mounts}
    for name in ETC_FILES:
        if f"/etc/{name}" not in targets:
            steps.append(Bind(f"{cdir}/userdata/{name}", f"/etc/{name}", kind="file", recursive=False))
    if spec.userns == "keep-id" and host.keep_user and "/etc/passwd" not in targets:
        uid, gid, name, home = host.keep_user
        line = passwd_line(name, uid, gid, home)
        if line:
            steps.append(PasswdEntry(uid, gid, name, line, f"{cdir}/userdata/passwd"))
    if spec.working_dir and spec.working_dir != "/":
        steps.append(Mkdir(spec.working_dir))
    for p in MASKED_PATHS:
        steps.append(Mask(p))
    for p in READONLY_PATHS:
        steps.append(ReadOnly(p))
    if spec.read_only:
        steps.append(RootReadonly())
    steps.append(PivotRoot())
    if spec.network != "host" and spec.hostname:
        steps.append(Hostname(spec.hostname))
    from rootless.runtime.spec import CAP_NUMBERS

    steps.append(Process(tuple(spec.argv), tuple(spec.env), spec.working_dir or "/", spec.user,
                         tuple(CAP_NUMBERS[c] for c in spec.caps), spec.no_new_privileges, spec.init, spec.tty))
    return steps

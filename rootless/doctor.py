"""Host checks: what `run` needs, what is optional, and how to fix each.

Every check performs a probe where one is possible (create a user
namespace, mount overlayfs and binfmt_misc inside one, open /dev/net/tun),
rather than inferring from a version number.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rootless.config import Config

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = True   # does `run` (default options) need it?

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix,
                "required": self.required}


@dataclass
class HostFacts:
    """What several checks share; computed once."""
    config: Config
    user: str
    uid: int
    gid: int
    kernel: tuple[int, int]
    kernel_release: str
    userns_ok: bool = False
    idmap_ok: bool = False
    subuid: list = field(default_factory=list)
    subgid: list = field(default_factory=list)
    emulation: dict = field(default_factory=dict)   # arch -> mode `run` would use (check_qemu)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def kernel_version(release: str | None = None) -> tuple[int, int]:
    rel = release or os.uname().release
    nums = []
    for part in rel.split("-")[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        nums.append(int(digits or 0))
    while len(nums) < 2:
        nums.append(0)
    return nums[0], nums[1]


# ---------------------------------------------------------------------------
# individual checks

def check_kernel(f: HostFacts) -> Check:
    k = f.kernel
    if k >= (5, 11):
        extra = "" if k >= (6, 7) else " (sandboxed binfmt_misc needs >= 6.7)"
        return Check("kernel", OK, f"Linux {f.kernel_release}{extra}")
    if k >= (4, 18):
        return Check("kernel", WARN, f"Linux {f.kernel_release}: overlayfs in a user namespace needs >= 5.11",
                     "upgrade the kernel, or install fuse-overlayfs (apt-get install fuse-overlayfs)")
    return Check("kernel", FAIL, f"Linux {f.kernel_release} is too old for rootless containers",
                 "upgrade to Linux >= 5.11")


def check_userns(f: HostFacts) -> Check:
    from rootless import syscalls

    problems = []
    fixes = []
    mx = _read("/proc/sys/user/max_user_namespaces")
    if mx is not None and mx.isdigit() and int(mx) == 0:
        problems.append("user.max_user_namespaces is 0")
        fixes.append("sudo sysctl -w user.max_user_namespaces=28633")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if clone == "0":
        problems.append("kernel.unprivileged_userns_clone is 0 (Debian)")
        fixes.append("sudo sysctl -w kernel.unprivileged_userns_clone=1")
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    # probe: fork, unshare a user namespace, report
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os._exit(0)
        except OSError as e:
            os._exit(e.errno or 1)
        finally:
            os._exit(99)
    _, st = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(st)
    if code == 0:
        f.userns_ok = True
        detail = "unprivileged user namespaces work"
        if apparmor == "1":
            detail += " (apparmor_restrict_unprivileged_userns=1, but not restricting this user)"
        return Check("userns", OK, detail)
    if apparmor == "1":
        problems.append("kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu)")
        fixes.append("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 "
                     "(or install an AppArmor profile allowing userns for rootless)")
    if not problems:
        problems.append(f"unshare(CLONE_NEWUSER) failed: {os.strerror(code)}")
        fixes.append("allow unprivileged user namespaces (a container or seccomp policy may forbid them)")
    return Check("userns", FAIL, "; ".join(problems), "; ".join(fixes))


def _subid_fix(user: str) -> str:
    from rootless.userns import subid_fix

    return subid_fix(user)


def check_subids(f: HostFacts, kind: str) -> Check:
    from rootless.userns import subid_ranges

    path = f"/etc/sub{kind}"
    ranges = subid_ranges(path, f.user, f.uid)
    if kind == "uid":
        f.subuid = ranges
    else:
        f.subgid = ranges
    total = sum(c for _, c in ranges)
    name = f"sub{kind}"
    if not ranges:
        return Check(name, FAIL, f"no range for user {f.user} in {path} (containers could map only one id)",
                     _subid_fix(f.user))
    desc = ", ".join(f"{s}-{s + c - 1}" for s, c in ranges)
    if total < 65536:
        return Check(name, FAIL, f"{path} gives {f.user} only {total} ids ({desc}); images need 65536",
                     _subid_fix(f.user))
    return Check(name, OK, f"{total} ids for {f.user} in {path} ({desc})")


def check_idmap_tools(f: HostFacts) -> Check:
    from rootless import hosttools

    bad = []
    paths = []
    for tool in ("newuidmap", "newgidmap"):
        p = hosttools.find(tool)
        if p is None:
            return Check("newuidmap", FAIL, f"{tool} not found", "sudo apt-get install uidmap")
        paths.append(p)
        st = os.stat(p)
        has_caps = False
        try:
            has_caps = bool(os.getxattr(p, "security.capability"))
        except OSError:
            pass
        if not ((st.st_mode & stat.S_ISUID and st.st_uid == 0) or has_caps):
            bad.append(p)
    if bad:
        return Check("newuidmap", FAIL, f"{', '.join(bad)} is neither setuid root nor has file capabilities",
                     "sudo chmod u+s " + " ".join(bad) + " (or reinstall: sudo apt-get install --reinstall uidmap)")
    if not f.userns_ok or not f.subuid or not f.subgid:
        return Check("newuidmap", OK, f"{' and '.join(paths)} present (mapping not tried: see above)")
    # probe: map the whole range
    from rootless.errors import RootlessError
    from rootless.userns import default_mapping, run_in_userns

    try:
        got = run_in_userns(_probe_ids, mapping=default_mapping(f.uid, f.gid), flags=0)
    except RootlessError as e:
        return Check("newuidmap", FAIL, f"mapping the subordinate ids failed: {e.message}",
                     e.hint or "check /etc/subuid and /etc/subgid")
    f.idmap_ok = True
    return Check("newuidmap", OK, f"mapped {got} ids with {paths[0]} and {paths[1]}")


def _probe_ids() -> int:
    m = open("/proc/self/uid_map").read().split("\n")
    return sum(int(line.split()[2]) for line in m if line.strip())


def _probe_base(config: Config) -> str:
    for d in (config.data_root, config.data_root.parent, Path("/tmp")):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return str(d)
        except OSError:
            continue
    return "/tmp"


def _probe_overlay(base: str, chown: bool) -> str:
    import shutil
    import tempfile

    from rootless import syscalls

    d = tempfile.mkdtemp(prefix=".doctor-", dir=base)
    try:
        for sub in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(d, sub))
        with open(os.path.join(d, "lower", "keep"), "w") as fh:
            fh.write("k")
        with open(os.path.join(d, "lower", "gone"), "w") as fh:
            fh.write("g")
        if chown:
            os.chown(os.path.join(d, "lower", "keep"), 1000, 1000)
        os.mknod(os.path.join(d, "upper", "gone"), stat.S_IFCHR | 0o000, os.makedev(0, 0))
        syscalls.mount("overlay", os.path.join(d, "merged"), "overlay", 0,
                       f"lowerdir={d}/lower,upperdir={d}/upper,workdir={d}/work,userxattr")
        try:
            names = sorted(os.listdir(os.path.join(d, "merged")))
            with open(os.path.join(d, "merged", "new"), "w") as fh:
                fh.write("n")
        finally:
            syscalls.umount2(os.path.join(d, "merged"), syscalls.MNT_DETACH)
        if names != ["keep"]:
            raise RuntimeError(f"whiteout not honoured (saw {names})")
        return "ok"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_overlay(f: HostFacts) -> Check:
    from rootless.errors import RootlessError
    from rootless.userns import default_mapping, run_in_userns

    if not f.userns_ok:
        return Check("overlay", FAIL, "not tried: no user namespaces", "see the userns check")
    mapping = default_mapping(f.uid, f.gid)
    try:
        run_in_userns(_probe_overlay, _probe_base(f.config), not mapping.single and f.idmap_ok,
                      mapping=mapping if f.idmap_ok else None)
    except (RootlessError, OSError) as e:
        return Check("overlay", WARN, f"kernel overlayfs in a user namespace failed: {e}",
                     "use Linux >= 5.11, or rootless falls back to fuse-overlayfs (apt-get install fuse-overlayfs)")
    return Check("overlay", OK, "kernel overlayfs mounts in a user namespace (whiteouts, userxattr)")


def check_fuse(f: HostFacts) -> Check:
    from rootless import hosttools

    prog = hosttools.find("fuse-overlayfs")
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
        dev_ok, dev_msg = True, ""
    except OSError as e:
        dev_ok, dev_msg = False, f"/dev/fuse: {e.strerror}"
    if prog and dev_ok:
        return Check("fuse-overlayfs", OK, f"{prog} and /dev/fuse usable", required=False)
    fixes = []
    if not prog:
        fixes.append("sudo apt-get install fuse-overlayfs")
    if not dev_ok:
        mode = ""
        try:
            mode = oct(os.stat("/dev/fuse").st_mode & 0o777)
        except OSError:
            pass
        fixes.append("sudo chmod 0666 /dev/fuse (distributions ship it 0666)" if mode else "sudo modprobe fuse")
        dev_msg += f" (mode {mode})" if mode else ""
    detail = "; ".join(x for x in ("fuse-overlayfs not installed" if not prog else "", dev_msg) if x)
    return Check("fuse-overlayfs", WARN, detail + " (fallback storage driver; needed for --userns=keep-id)",
                 "; ".join(fixes), required=False)


def check_tun(f: HostFacts) -> Check:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        os.close(fd)
        return Check("tun", OK, "/dev/net/tun usable (pasta, slirp4netns)")
    except OSError as e:
        mode = ""
        try:
            mode = oct(os.stat("/dev/net/tun").st_mode & 0o777)
        except OSError:
            pass
        if mode:
            return Check("tun", FAIL, f"/dev/net/tun is mode {mode}: {e.strerror} for {f.user} "
                                      "(networking needs it; --network none still works)",
                         "sudo chmod 0666 /dev/net/tun (distributions ship it 0666; "
                         "persist with a udev rule: KERNEL==\"tun\", MODE=\"0666\")")
        return Check("tun", FAIL, "/dev/net/tun missing (networking needs it; --network none still works)",
                     "sudo modprobe tun")


def check_network_backends(f: HostFacts) -> Check:
    from rootless import hosttools

    pasta = hosttools.find("pasta")
    slirp = hosttools.find("slirp4netns")
    if pasta and slirp:
        return Check("network", OK, f"pasta ({pasta}) default, slirp4netns ({slirp}) fallback")
    if pasta:
        return Check("network", OK, f"pasta ({pasta}); slirp4netns not installed (optional)")
    if slirp:
        return Check("network", WARN, f"slirp4netns ({slirp}); pasta is faster and keeps client addresses",
                     "sudo apt-get install passt")
    return Check("network", FAIL, "neither pasta nor slirp4netns is installed (--network none still works)",
                 "sudo apt-get install passt (or slirp4netns)")


def _probe_nft(nft: str) -> str:
    import subprocess

    ruleset = ("table inet rootless-doctor {\n chain post {\n  type nat hook postrouting priority 100;\n"
               "  oifname \"x\" masquerade\n }\n}\n")
    cp = subprocess.run([nft, "-f", "-"], input=ruleset.encode(), capture_output=True)
    if cp.returncode != 0:
        raise RuntimeError(cp.stderr.decode(errors="replace").strip().splitlines()[-1:] or "nft failed")
    return "ok"


def check_user_networks(f: HostFacts) -> Check:
    """User-defined networks: nftables (NAT, isolation) inside a user-owned network namespace."""
    from rootless import hosttools
    from rootless.errors import RootlessError
    from rootless.userns import run_in_userns

    nft = hosttools.find("nft")
    if nft is None:
        return Check("user-networks", WARN, "nft not found: user-defined networks (network create) unavailable",
                     "sudo apt-get install nftables", required=False)
    if not f.userns_ok:
        return Check("user-networks", WARN, "not tried: no user namespaces", "see the userns check", required=False)
    from rootless import syscalls

    try:
        run_in_userns(_probe_nft, nft, mapping=_self_only(f), flags=syscalls.CLONE_NEWNET)
    except (RootlessError, OSError, RuntimeError) as e:
        return Check("user-networks", WARN, f"nftables in a user namespace failed: {e}: user-defined networks "
                                            "unavailable", "sudo modprobe nf_tables nft_masq (or use a kernel with "
                                                           "nf_tables)", required=False)
    return Check("user-networks", OK, f"bridges, veths and nftables NAT in a user namespace ({nft})",
                 required=False)


def check_qemu(f: HostFacts, binfmt: Check | None = None) -> list[Check]:
    """One line per foreign architecture: its qemu-user and the emulation mode `run` would use."""
    from archsupport.emulation import arch_platform, decide, gather
    from archsupport.platform import KNOWN_ARCHES, host_platform, native_platforms
    from archsupport.qemu import locate_qemu

    host = host_platform()
    native = {p.architecture for p in native_platforms(host)}
    sandbox_ok = None if binfmt is None or f.kernel < (6, 7) else binfmt.status == OK
    out = []
    for arch in KNOWN_ARCHES:
        if arch in native:
            continue
        q, why = locate_qemu(arch, f.config.qemu_path(arch))
        p = arch_platform(arch)
        emu = decide(p, gather(p, f.config, host=host, sandbox_ok=sandbox_ok,
                               sandbox_why=binfmt.detail if binfmt else ""), f.config.emulation_mode)
        f.emulation[arch] = emu.mode
        if emu.mode == "host":
            mode = f"mode host (registration {emu.host_entry})"
        elif emu.mode == "sandboxed":
            mode = f"mode sandboxed (flags {emu.flags})"
        else:
            mode = "mode none"
        if emu.mode == "none":
            what = f"{q.path} {q.version}: " if q else ""
            out.append(Check(f"qemu-{arch}", WARN, f"{what}linux/{arch} images cannot run: {emu.reason}",
                             emu.hint, required=False))
        elif q is None:
            out.append(Check(f"qemu-{arch}", OK, f"{mode}; {emu.interpreter}", required=False))
        elif not q.static:
            out.append(Check(f"qemu-{arch}", WARN, f"{q.path} is not static (needs its libraries in every image); "
                                                   f"{mode}", "sudo apt-get install qemu-user-static",
                             required=False))
        else:
            out.append(Check(f"qemu-{arch}", OK, f"{q.path} {q.version}; {mode}", required=False))
    return out


def _probe_binfmt(base: str) -> str:
    import tempfile

    from rootless import syscalls

    d = tempfile.mkdtemp(prefix=".doctor-binfmt-", dir=base)
    try:
        syscalls.mount("binfmt_misc", d, "binfmt_misc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
        try:
            names = sorted(os.listdir(d))
            if "register" not in names:
                raise RuntimeError("no register file")
        finally:
            syscalls.umount2(d, syscalls.MNT_DETACH)
        return "ok"
    finally:
        os.rmdir(d)


def check_binfmt(f: HostFacts) -> Check:
    from rootless.errors import RootlessError
    from rootless.userns import run_in_userns

    if f.kernel < (6, 7):
        return Check("binfmt_misc", WARN, f"kernel {f.kernel_release} < 6.7: no sandboxed binfmt_misc; "
                                          "foreign images need a host registration",
                     "upgrade to Linux >= 6.7, or an admin runs `sudo rootless binfmt install`", required=False)
    if not f.userns_ok:
        return Check("binfmt_misc", WARN, "not tried: no user namespaces", "see the userns check", required=False)
    try:
        run_in_userns(_probe_binfmt, "/tmp", mapping=None if f.idmap_ok else _self_only(f))
    except (RootlessError, OSError) as e:
        return Check("binfmt_misc", WARN, f"mounting binfmt_misc in a user namespace failed: {e}",
                     "an admin can register qemu on the host: `sudo rootless binfmt install`", required=False)
    return Check("binfmt_misc", OK, "sandboxed binfmt_misc mounts in a user namespace (foreign images need no admin)",
                 required=False)


def binfmt_summary(binfmt: Check, f: HostFacts) -> Check:
    """Add to the binfmt_misc line which mode foreign images use, and the host's registrations."""
    from archsupport.binfmt import read_state

    modes: dict[str, list[str]] = {}
    for arch, mode in f.emulation.items():
        modes.setdefault(mode, []).append(arch)
    st = read_state()
    if not st.mounted:
        host = "host binfmt_misc not mounted (no host registrations)"
    else:
        ours = [e.name for e in st.entries if e.enabled and e.architecture()]
        host = "host registrations: " + (", ".join(ours) if ours else "none") + (
            "" if st.enabled else " (host binfmt_misc DISABLED)")
    used = "; ".join(f"{m}: {', '.join(a)}" for m, a in modes.items())
    return Check(binfmt.name, binfmt.status, f"{binfmt.detail}; {host}; foreign images use {used or 'nothing'}",
                 binfmt.fix, required=binfmt.required)


def _self_only(f: HostFacts):
    from rootless.userns import IDMap, IDMapping

    return IDMapping((IDMap(0, f.uid, 1),), (IDMap(0, f.gid, 1),), single=True)


def cgroup_v2_delegation() -> tuple[bool, str, str]:
    """(usable, detail, fix) for resource limits through cgroup v2."""
    mounts = _read("/proc/self/mountinfo") or ""
    unified = None
    for line in mounts.splitlines():
        parts = line.split(" - ")
        if len(parts) == 2 and parts[1].startswith("cgroup2 "):
            unified = line.split()[4]
            break
    if unified is None:
        return False, "no cgroup v2 hierarchy: limits (--memory, --cpus, --pids-limit) unavailable", \
            "boot with systemd.unified_cgroup_hierarchy=1"
    hybrid = unified != "/sys/fs/cgroup"
    cg = _read("/proc/self/cgroup") or ""
    rel = None
    for line in cg.splitlines():
        if line.startswith("0::"):
            rel = line[3:]
    if rel is None:
        return False, "not in a cgroup v2 group: limits unavailable", "boot with systemd.unified_cgroup_hierarchy=1"
    path = Path(unified) / rel.lstrip("/")
    from rootless.runtime.cgroups import delegation_root

    path = Path(delegation_root(str(path)))   # (a delegated subtree's own processes sit in its leaf "init")
    controllers = (_read(str(path / "cgroup.controllers")) or "").split()
    writable = os.access(path, os.W_OK) and os.access(path / "cgroup.subtree_control", os.W_OK)
    want = {"memory", "cpu", "pids"}
    missing = want - set(controllers)
    mode = "hybrid cgroups (v1 controllers + v2 tree)" if hybrid else "cgroup v2"
    if not writable:
        return False, f"{mode}: {path} is not delegated to this user: limits unavailable", \
            "run under a systemd user session with delegation (systemd-run --user --scope -p Delegate=yes ...)"
    if missing:
        return False, f"{mode}: controllers {', '.join(sorted(missing))} not delegated to {path}: limits unavailable", \
            "delegate them: /etc/systemd/system/user@.service.d/delegate.conf with Delegate=cpu cpuset io memory pids"
    return True, f"{mode}: {path} delegated with {' '.join(sorted(want))}", ""


def check_cgroups(f: HostFacts) -> Check:
    ok, detail, fix = cgroup_v2_delegation()
    return Check("cgroups", OK if ok else WARN, detail, fix, required=False)


def check_space(f: HostFacts) -> Check:
    p = f.config.data_root
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError as e:
        return Check("space", FAIL, f"cannot stat {p}: {e.strerror}", "set ROOTLESS_ROOT to a writable directory")
    free = st.f_bavail * st.f_frsize
    gib = free / (1 << 30)
    where = f"{f.config.data_root} ({gib:.1f} GiB free)"
    if free < 200 << 20:
        return Check("space", FAIL, f"store {where}: too little space", "free space or set ROOTLESS_ROOT elsewhere")
    if free < 2 << 30:
        return Check("space", WARN, f"store {where}: images may not fit", "free space or set ROOTLESS_ROOT elsewhere",
                     required=False)
    return Check("space", OK, f"store {where}")


def run_checks(config: Config) -> list[Check]:
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    rel = os.uname().release
    f = HostFacts(config=config, user=user, uid=uid, gid=gid, kernel=kernel_version(rel), kernel_release=rel)
    checks = [check_kernel(f), check_userns(f), check_subids(f, "uid"), check_subids(f, "gid"),
              check_idmap_tools(f), check_overlay(f), check_fuse(f)]
    overlay, fuse = checks[-2], checks[-1]
    if overlay.status != OK and fuse.status == OK:
        checks[-2] = Check("overlay", WARN, overlay.detail + "; fuse-overlayfs will be used", overlay.fix,
                           required=False)
    elif overlay.status != OK:
        checks[-2] = Check("overlay", FAIL, overlay.detail + "; and fuse-overlayfs is not usable either",
                           overlay.fix + "; " + fuse.fix)
    checks += [check_tun(f), check_network_backends(f), check_user_networks(f)]
    binfmt = check_binfmt(f)
    checks += check_qemu(f, binfmt)
    checks += [binfmt_summary(binfmt, f), check_cgroups(f), check_space(f)]
    return checks


def all_required_ok(checks: list[Check]) -> bool:
    return all(c.status != FAIL for c in checks if c.required)

"""Host checks: what `run` needs, what is optional, and how to fix each.

Every check performs a probe where one is possible (create a user
namespace and mount a tmpfs inside it, mount overlayfs, fuse-overlayfs and
binfmt_misc inside one, open /dev/net/tun, run pasta and slirp4netns),
rather than inferring from a version number.

Each ``check_*`` gathers the facts and runs its probe; the verdict comes
from a pure ``judge_*`` function of those facts (unit-tested with made-up
ones: tests/unit/test_doctor.py).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rootless.config import Config
from rootless.record import Record

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


USERNS_SYSCTLS = {
    "max_user_namespaces": "/proc/sys/user/max_user_namespaces",
    "unprivileged_userns_clone": "/proc/sys/kernel/unprivileged_userns_clone",
    "apparmor_restrict_unprivileged_userns": "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
}


def judge_userns(sysctl: dict[str, str | None], stage: str, error: str) -> Check:
    """The userns line (pure) from the sysctls and the probe: ``stage`` is "" when a user
    namespace was made and a tmpfs mounted inside it, else where that failed: "unshare"
    (no namespace), "map" (its id map), "caps" (made, but no capabilities inside it)."""
    apparmor = sysctl.get("apparmor_restrict_unprivileged_userns")
    if not stage:
        detail = "unprivileged user namespaces work (a tmpfs mounted inside one)"
        if apparmor == "1":
            detail += " (apparmor_restrict_unprivileged_userns=1, but not restricting this user)"
        return Check("userns", OK, detail)
    problems = []
    fixes = []
    mx = sysctl.get("max_user_namespaces")
    if mx is not None and mx.strip() == "0":
        problems.append("user.max_user_namespaces is 0")
        fixes.append("sudo sysctl -w user.max_user_namespaces=28633")
    if sysctl.get("unprivileged_userns_clone") == "0":
        problems.append("kernel.unprivileged_userns_clone is 0 (Debian)")
        fixes.append("sudo sysctl -w kernel.unprivileged_userns_clone=1")
    if apparmor == "1":
        problems.append("kernel.apparmor_restrict_unprivileged_userns is 1 (Ubuntu): "
                        + ("user namespaces are created without capabilities" if stage == "caps"
                           else "user namespaces are restricted"))
        fixes.append("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 "
                     "(or install an AppArmor profile allowing userns for rootless)")
    what = {"unshare": "unshare(CLONE_NEWUSER) failed",
            "map": "writing the id map of a new user namespace failed",
            "caps": "a new user namespace has no capabilities (mounting a tmpfs in it failed)"}.get(stage, stage)
    if not problems:
        return Check("userns", FAIL, f"{what}: {error}",
                     "allow unprivileged user namespaces (a container, seccomp or LSM policy may forbid them)")
    return Check("userns", FAIL, "; ".join(problems) + f" ({what}: {error})", "; ".join(fixes))


def probe_userns(uid: int, gid: int) -> tuple[str, str]:
    """Make a user namespace in a forked child, map our ids, then do what needs its
    capabilities: unshare a mount namespace and mount a tmpfs. ("", "") when all of it
    works, else (stage, error) with stage "unshare", "map" or "caps" (see judge_userns).

    AppArmor's apparmor_restrict_unprivileged_userns lets unshare succeed but takes
    the capabilities away: only the mount shows it."""
    from rootless import syscalls
    from rootless.errors import RootlessError
    from rootless.userns import IDMap, IDMapping, apply_mapping

    r_st, w_st = os.pipe()
    r_go, w_go = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r_st)
            os.close(w_go)
            stage = "unshare"
            try:
                syscalls.unshare(syscalls.CLONE_NEWUSER)
                os.write(w_st, b"U")
                os.read(r_go, 1)
                stage = "caps"
                syscalls.unshare(syscalls.CLONE_NEWNS)
                syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
                syscalls.mount("tmpfs", "/tmp", "tmpfs", 0, "size=16k")
                os.write(w_st, b"K")
            except OSError as e:
                os.write(w_st, f"E{stage}:{e.strerror or e}".encode()[:500])
        finally:
            os._exit(0)
    os.close(w_st)
    os.close(r_go)
    map_error = ""
    try:
        first = os.read(r_st, 1)
        if first == b"U":
            try:
                apply_mapping(pid, IDMapping((IDMap(0, uid, 1),), (IDMap(0, gid, 1),), single=True))
            except RootlessError as e:
                map_error = e.message
            os.write(w_go, b"1")
        os.close(w_go)
        rest = b""
        while True:
            b = os.read(r_st, 512)
            if not b:
                break
            rest += b
    finally:
        os.close(r_st)
        os.waitpid(pid, 0)
    msg = (first + rest).decode(errors="replace")
    if map_error:
        return "map", map_error
    if msg.endswith("K"):
        return "", ""
    if "E" in msg:
        stage, _, err = msg[msg.index("E") + 1:].partition(":")
        return stage, err
    return "unshare", "the probe process died"


def check_userns(f: HostFacts) -> Check:
    sysctl = {k: _read(p) for k, p in USERNS_SYSCTLS.items()}
    stage, error = probe_userns(f.uid, f.gid)
    c = judge_userns(sysctl, stage, error)
    f.userns_ok = c.status == OK
    return c


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


class ToolFile(Record):
    """What judge_idmap_binaries needs about newuidmap / newgidmap."""
    name: str
    path: str | None          # None: not found
    mode: int = 0
    uid: int = 0
    file_caps: bool = False


def judge_idmap_binaries(tools: list[ToolFile]) -> Check | None:
    """FAIL when newuidmap/newgidmap are missing or neither setuid root nor capable (pure);
    None when they can map ids."""
    for t in tools:
        if t.path is None:
            return Check("newuidmap", FAIL, f"{t.name} not found", "sudo apt-get install uidmap")
    bad = [t.path for t in tools if not ((t.mode & stat.S_ISUID and t.uid == 0) or t.file_caps)]
    if bad:
        return Check("newuidmap", FAIL, f"{', '.join(bad)} is neither setuid root nor has file capabilities",
                     "sudo chmod u+s " + " ".join(bad) + " (or reinstall: sudo apt-get install --reinstall uidmap)")
    return None


def _tool_file(name: str) -> ToolFile:
    from rootless import hosttools

    p = hosttools.find(name)
    if p is None:
        return ToolFile(name, None)
    st = os.stat(p)
    try:
        caps = bool(os.getxattr(p, "security.capability"))
    except OSError:
        caps = False
    return ToolFile(name, p, st.st_mode, st.st_uid, caps)


def check_idmap_tools(f: HostFacts) -> Check:
    tools = [_tool_file("newuidmap"), _tool_file("newgidmap")]
    bad = judge_idmap_binaries(tools)
    if bad is not None:
        return bad
    paths = [t.path for t in tools]
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


def _probe_tree(base: str, prefix: str) -> str:
    """A fresh directory under ``base`` with lower/ (holding a file "keep"), upper/, work/, merged/."""
    import tempfile

    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    for sub in ("lower", "upper", "work", "merged"):
        os.mkdir(os.path.join(d, sub))
    with open(os.path.join(d, "lower", "keep"), "w") as fh:
        fh.write("k")
    return d


def _probe_overlay(base: str, chown: bool) -> str:
    import shutil

    from rootless import syscalls

    d = _probe_tree(base, ".doctor-")
    try:
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


def judge_fuse(prog: str | None, dev_error: str, dev_mode: str, mount_error: str | None) -> Check:
    """The fuse-overlayfs line (pure): the program, /dev/fuse (its open error and mode, ""
    when it opened) and the mount probe (None: not tried, "": it mounted, else the error)."""
    if prog and not dev_error:
        if mount_error is None:
            return Check("fuse-overlayfs", OK, f"{prog} and /dev/fuse present (mount not tried: no user "
                                               "namespaces)", required=False)
        if mount_error:
            return Check("fuse-overlayfs", WARN, f"{prog} failed to mount in a user namespace: {mount_error} "
                                                 "(fallback storage driver; needed for --userns=keep-id)",
                         "check that the kernel has FUSE (sudo modprobe fuse) and fuse-overlayfs >= 1.0 "
                         "(sudo apt-get install fuse-overlayfs)", required=False)
        return Check("fuse-overlayfs", OK, f"{prog} mounts in a user namespace (/dev/fuse usable)", required=False)
    fixes = []
    if not prog:
        fixes.append("sudo apt-get install fuse-overlayfs")
    dev_msg = ""
    if dev_error:
        fixes.append("sudo chmod 0666 /dev/fuse (distributions ship it 0666)" if dev_mode else "sudo modprobe fuse")
        dev_msg = f"/dev/fuse: {dev_error}" + (f" (mode {dev_mode})" if dev_mode else "")
    detail = "; ".join(x for x in ("fuse-overlayfs not installed" if not prog else "", dev_msg) if x)
    return Check("fuse-overlayfs", WARN, detail + " (fallback storage driver; needed for --userns=keep-id)",
                 "; ".join(fixes), required=False)


def _probe_fuse(exe: str, base: str) -> str:
    """In a user namespace: mount fuse-overlayfs over a lower dir, write through it, unmount."""
    import shutil

    from rootless import hosttools, syscalls
    from rootless.storage import fuse_overlayfs_argv

    d = _probe_tree(base, ".doctor-fuse-")
    try:
        merged = os.path.join(d, "merged")
        hosttools.run(fuse_overlayfs_argv(exe, [os.path.join(d, "lower")], os.path.join(d, "upper"),
                                          os.path.join(d, "work"), merged), "fuse-overlayfs (doctor's probe)",
                      timeout=20)
        try:        # (it forked into the background once mounted; the unmount ends it)
            names = sorted(os.listdir(merged))
            with open(os.path.join(merged, "new"), "w") as fh:
                fh.write("n")
        finally:
            syscalls.umount2(merged, syscalls.MNT_DETACH)
        if names != ["keep"] or not os.path.exists(os.path.join(d, "upper", "new")):
            raise RuntimeError(f"the mount does not show the lower dir (saw {names})")
        return "ok"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def check_fuse(f: HostFacts) -> Check:
    from rootless import hosttools
    from rootless.errors import RootlessError

    prog = hosttools.find("fuse-overlayfs")
    dev_error = dev_mode = ""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        dev_error = e.strerror or str(e)
        try:
            dev_mode = oct(os.stat("/dev/fuse").st_mode & 0o777)
        except OSError:
            pass
    mount_error = None
    if prog and not dev_error and f.userns_ok:
        from rootless.userns import default_mapping, run_in_userns

        try:
            run_in_userns(_probe_fuse, prog, _probe_base(f.config),
                          mapping=default_mapping(f.uid, f.gid) if f.idmap_ok else _self_only(f))
            mount_error = ""
        except (RootlessError, OSError, RuntimeError) as e:
            mount_error = str(e)
    return judge_fuse(prog, dev_error, dev_mode, mount_error)


def judge_tun(user: str, error: str, mode: str) -> Check:
    """The tun line (pure): the error opening /dev/net/tun ("" when it opened) and its mode."""
    if not error:
        return Check("tun", OK, "/dev/net/tun usable (pasta, slirp4netns)")
    if mode:
        return Check("tun", FAIL, f"/dev/net/tun is mode {mode}: {error} for {user} "
                                  "(networking needs it; --network none still works)",
                     "sudo chmod 0666 /dev/net/tun (distributions ship it 0666; "
                     "persist with a udev rule: KERNEL==\"tun\", MODE=\"0666\")")
    return Check("tun", FAIL, "/dev/net/tun missing (networking needs it; --network none still works)",
                 "sudo modprobe tun")


def check_tun(f: HostFacts) -> Check:
    error = mode = ""
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as e:
        error = e.strerror or str(e)
        try:
            mode = oct(os.stat("/dev/net/tun").st_mode & 0o777)
        except OSError:
            pass
    return judge_tun(f.user, error, mode)


class ToolRun(Record):
    """A host program found and run with --version (judge_network)."""
    name: str
    path: str | None          # None: not installed
    error: str = ""           # why `PROG --version` failed ("" when it ran)
    version: str = ""


def judge_network(pasta: ToolRun, slirp: ToolRun, configured: str = "auto") -> Check:
    """The network line (pure): pasta (package passt) preferred, slirp4netns the fallback;
    with ``[network] backend`` set (``configured``), that one and no other."""
    def usable(t: ToolRun) -> bool:
        return t.path is not None and not t.error

    def desc(t: ToolRun) -> str:
        return f"{t.name} ({t.path}{', ' + t.version if t.version else ''})"

    broken = [f"{t.path} does not run: {t.error}" for t in (pasta, slirp) if t.path is not None and t.error]
    note = f"; {'; '.join(broken)}" if broken else ""
    if configured != "auto":
        want, other = (pasta, slirp) if configured == "pasta" else (slirp, pasta)
        package = "passt" if want.name == "pasta" else want.name
        if usable(want):
            return Check("network", OK, f"{desc(want)}, the network backend set in the configuration")
        instead = (f', or set [network] backend = "auto" to use {other.name} (installed)' if usable(other)
                   else "")
        state = "not installed" if want.path is None else f"unusable ({want.error})"
        return Check("network", FAIL, f"{want.name} {state}: it is the network backend set in the configuration "
                                      "([network] backend) (--network none still works)",
                     f"sudo apt-get install {'--reinstall ' if want.path else ''}{package}{instead}")
    if usable(pasta) and usable(slirp):
        return Check("network", OK, f"{desc(pasta)} default, {desc(slirp)} fallback")
    if usable(pasta):
        return Check("network", OK, f"{desc(pasta)}; slirp4netns " + (
            "not installed (optional)" if slirp.path is None else "unusable (optional)") + note)
    if usable(slirp):
        return Check("network", WARN, f"{desc(slirp)}; pasta " + (
            "not installed" if pasta.path is None else "unusable") + f": it is faster and keeps client "
                                                                      f"addresses{note}",
                     "sudo apt-get install passt" if pasta.path is None else "sudo apt-get install --reinstall passt")
    return Check("network", FAIL, "neither pasta (package passt) nor slirp4netns is usable" + (
        ", none installed" if not broken else note) + " (--network none still works)",
                 "sudo apt-get install passt (or slirp4netns)")


def _tool_run(name: str) -> ToolRun:
    from rootless import hosttools
    from rootless.errors import RootlessError

    p = hosttools.find(name)
    if p is None:
        return ToolRun(name, None)
    try:
        out = hosttools.spawn_capture([p, "--version"], f"{name} --version", timeout=5)
    except RootlessError as e:
        return ToolRun(name, p, e.message)
    first = out.decode(errors="replace").strip().splitlines()[:1]
    version = first[0].strip() if first else ""
    for prefix in (name + " version ", name + " "):
        if version.startswith(prefix):
            version = version[len(prefix):]
    return ToolRun(name, p, "", version if version and version != "unknown version" else "")


def check_network_backends(f: HostFacts) -> Check:
    return judge_network(_tool_run("pasta"), _tool_run("slirp4netns"), f.config.network_backend)


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
        out.append(judge_qemu(arch, q, q.version if q is not None else "", emu))
    return out


def judge_qemu(arch: str, q, version: str, emu) -> Check:
    """One qemu-ARCH line (pure): the qemu-user found (archsupport.qemu.QemuUser or None),
    its version, and the emulation mode `run` would use (archsupport.emulation.decide)."""
    if emu.mode == "host":
        mode = f"mode host (registration {emu.host_entry})"
    elif emu.mode == "sandboxed":
        mode = f"mode sandboxed (flags {emu.flags})"
    else:
        mode = "mode none"
    if emu.mode == "none":
        what = f"{q.path} {version}: " if q else ""
        return Check(f"qemu-{arch}", WARN, f"{what}linux/{arch} images cannot run: {emu.reason}",
                     emu.hint, required=False)
    if q is None:
        return Check(f"qemu-{arch}", OK, f"{mode}; {emu.interpreter}", required=False)
    if not q.static:
        return Check(f"qemu-{arch}", WARN, f"{q.path} is not static (needs its libraries in every image); "
                                           f"{mode}", "sudo apt-get install qemu-user-static", required=False)
    return Check(f"qemu-{arch}", OK, f"{q.path} {version}; {mode}", required=False)


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


SPACE_FAIL = 200 << 20      # below this, even a small image does not fit
SPACE_WARN = 2 << 30


def judge_space(store: Path, free: int) -> Check:
    """The space line (pure): free bytes where the store is (or would be made)."""
    gib = free / (1 << 30)
    where = f"{store} ({gib:.1f} GiB free)"
    if free < SPACE_FAIL:
        return Check("space", FAIL, f"store {where}: too little space", "free space or set ROOTLESS_ROOT elsewhere")
    if free < SPACE_WARN:
        return Check("space", WARN, f"store {where}: images may not fit", "free space or set ROOTLESS_ROOT elsewhere",
                     required=False)
    return Check("space", OK, f"store {where}")


def check_space(f: HostFacts) -> Check:
    p = f.config.data_root
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError as e:
        return Check("space", FAIL, f"cannot stat {p}: {e.strerror}", "set ROOTLESS_ROOT to a writable directory")
    return judge_space(f.config.data_root, st.f_bavail * st.f_frsize)


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

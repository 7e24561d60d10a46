"""ContainerSpec: what a container is, from the image config and the options (pure).

``build_spec(image_config, options)`` merges an image's config (Env,
Entrypoint, Cmd, WorkingDir, User, StopSignal, Volumes) with the user's
options the way Docker does; the parsers for ``-v``, ``--mount``,
``--tmpfs``, ``-e`` raise :class:`UsageError` (exit 125) with the reason.
The spec is stored in ``containers/<id>/config.json`` (``to_json``) and
read back (``from_json``).
"""

from __future__ import annotations

import re
from rootless.errors import UsageError
from rootless.record import Record

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Docker's default capability set (moby oci/caps/defaults.go)
DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE")

CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31, "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33, "CAP_SYSLOG": 34, "CAP_WAKE_ALARM": 35, "CAP_BLOCK_SUSPEND": 36, "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38, "CAP_BPF": 39, "CAP_CHECKPOINT_RESTORE": 40,
}

SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16, "CHLD": 17,
    "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
    "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
}

_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_ENV_NAME = re.compile(r"^[^=\0]+\Z")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})\Z")


def parse_signal(s: str | int | None, default: int = 15) -> int:
    """``SIGTERM``, ``TERM``, ``15`` -> 15."""
    if s is None or s == "":
        return default
    if isinstance(s, int):
        return s
    t = s.strip().upper()
    if t.isdigit():
        n = int(t)
        if 1 <= n <= 64:
            return n
    else:
        t = t[3:] if t.startswith("SIG") else t
        if t in SIGNALS:
            return SIGNALS[t]
        # real-time signals as Docker names them: RTMIN (34, glibc's), RTMIN+N, RTMAX-N, RTMAX (64)
        m = re.fullmatch(r"RTMIN(?:\+(\d+))?|RTMAX(?:-(\d+))?", t)
        if m:
            n = 34 + int(m.group(1) or 0) if t.startswith("RTMIN") else 64 - int(m.group(2) or 0)
            if 34 <= n <= 64:
                return n
    raise UsageError(f"invalid signal: {s}", hint="use a name (SIGTERM, KILL, RTMIN+3) or a number 1-64")


def normalize_cap(name: str) -> str:
    n = name.strip().upper()
    if n == "ALL":
        return "ALL"
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in CAP_NUMBERS:
        raise UsageError(f"unknown capability: {name}", hint="see capabilities(7), e.g. NET_ADMIN or CAP_SYS_PTRACE")
    return n


def effective_caps(add: tuple[str, ...], drop: tuple[str, ...]) -> tuple[str, ...]:
    """Docker's rules: start from the default set, drop, then add; ALL works on both sides."""
    caps = set(DEFAULT_CAPS)
    drop_n = {normalize_cap(c) for c in drop}
    add_n = {normalize_cap(c) for c in add}
    if "ALL" in drop_n:
        caps = set()
    caps -= drop_n
    if "ALL" in add_n:
        caps = set(CAP_NUMBERS)
    caps |= add_n - {"ALL"}
    return tuple(sorted(caps, key=lambda c: CAP_NUMBERS[c]))


class MountSpec(Record):
    """A volume, bind mount or tmpfs in the container.

    kind: ``bind`` (source = absolute host path), ``volume`` (source = volume
    name; empty = anonymous, named at create time), ``tmpfs``.
    """
    kind: str
    target: str
    source: str = ""
    readonly: bool = False
    options: tuple[str, ...] = ()   # tmpfs: size=, mode=; bind: propagation (ignored)

    def to_json(self) -> dict:
        return {"kind": self.kind, "target": self.target, "source": self.source, "readonly": self.readonly,
                "options": list(self.options)}

    @classmethod
    def from_json(cls, d: dict) -> "MountSpec":
        return cls(d["kind"], d["target"], d.get("source", ""), bool(d.get("readonly")), tuple(d.get("options", ())))


def _clean_target(t: str, what: str) -> str:
    if not t.startswith("/"):
        raise UsageError(f"invalid {what}: container path {t!r} must be absolute")
    parts = [p for p in t.split("/") if p and p != "."]
    if ".." in parts:
        raise UsageError(f"invalid {what}: container path {t!r} must not contain '..'")
    out = "/" + "/".join(parts)
    if out == "/":
        raise UsageError(f"invalid {what}: cannot mount over the container's root '/'")
    return out


def parse_volume(v: str) -> MountSpec:
    """``-v``: ``/host:/ctr[:opts]``, ``name:/ctr[:opts]``, ``/ctr`` (anonymous)."""
    if not v:
        raise UsageError("invalid volume specification: ''", hint="use -v /host/path:/container/path[:ro]")
    parts = v.split(":")
    if len(parts) == 1:
        return MountSpec("volume", _clean_target(parts[0], f"volume specification {v!r}"))
    if len(parts) > 3:
        raise UsageError(f"invalid volume specification: {v!r}", hint="use -v /host/path:/container/path[:ro]")
    src, dst = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 else []
    ro = False
    for o in opts:
        if o == "ro":
            ro = True
        elif o in ("rw", "z", "Z", "rprivate", "private", "rslave", "slave", "rshared", "shared", "nocopy",
                   "U", "O", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "bind", "rbind"):
            continue
        else:
            raise UsageError(f"invalid volume specification: {v!r}: unknown option {o!r}",
                             hint="options: ro, rw (z/Z and propagation flags are accepted and ignored)")
    target = _clean_target(dst, f"volume specification {v!r}")
    if not src:
        raise UsageError(f"invalid volume specification: {v!r}: empty source")
    if src.startswith("/"):
        return MountSpec("bind", target, src, ro)
    if src.startswith(".") or "/" in src:
        raise UsageError(f"invalid volume specification: {v!r}: a host path must be absolute",
                         hint=f"use $(pwd)/{src.lstrip('./')} or a volume name")
    if not _VOLUME_NAME.match(src):
        raise UsageError(f"invalid volume name {src!r}", hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return MountSpec("volume", target, src, ro)


def parse_mount(m: str) -> MountSpec:
    """``--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,tmpfs-size=..]``."""
    kv: dict[str, str] = {}
    for item in m.split(","):
        if not item:
            continue
        k, _, val = item.partition("=")
        kv[k.strip().lower()] = val if _ else "true"
    kind = kv.pop("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise UsageError(f"invalid --mount {m!r}: type must be bind, volume or tmpfs")
    src = kv.pop("source", kv.pop("src", ""))
    dst = kv.pop("target", kv.pop("destination", kv.pop("dst", "")))
    if not dst:
        raise UsageError(f"invalid --mount {m!r}: target is required")
    ro = False
    for k in ("readonly", "ro"):
        if k in kv:
            ro = kv.pop(k) not in ("false", "0")
    opts: list[str] = []
    if "tmpfs-size" in kv:
        opts.append(f"size={kv.pop('tmpfs-size')}")
    if "tmpfs-mode" in kv:
        opts.append(f"mode={kv.pop('tmpfs-mode')}")
    for ignored in ("bind-propagation", "consistency", "volume-nocopy", "relabel", "volume-driver"):
        kv.pop(ignored, None)
    if kv:
        raise UsageError(f"invalid --mount {m!r}: unknown key {next(iter(kv))!r}")
    target = _clean_target(dst, f"--mount {m!r}")
    if kind == "bind":
        if not src.startswith("/"):
            raise UsageError(f"invalid --mount {m!r}: bind source must be an absolute host path")
        return MountSpec("bind", target, src, ro)
    if kind == "tmpfs":
        if src:
            raise UsageError(f"invalid --mount {m!r}: tmpfs takes no source")
        return MountSpec("tmpfs", target, "", ro, tuple(opts))
    if src and not _VOLUME_NAME.match(src):
        raise UsageError(f"invalid volume name {src!r}", hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return MountSpec("volume", target, src, ro)


def parse_tmpfs(t: str) -> MountSpec:
    """``--tmpfs /path[:size=64m,mode=1777,ro,noexec]``."""
    path, _, opts = t.partition(":")
    ro = False
    out = []
    for o in (opts.split(",") if opts else []):
        if o == "ro":
            ro = True
        elif o == "rw" or not o:
            continue
        elif re.fullmatch(r"(size=\d+[kKmMgG%]?|mode=[0-7]{3,4}|nr_inodes=\d+[kKmMgG]?|uid=\d+|gid=\d+|"
                          r"noexec|exec|nosuid|suid|nodev|dev)", o):
            out.append(o)
        else:
            raise UsageError(f"invalid --tmpfs {t!r}: unknown option {o!r}",
                             hint="options: size=, mode=, nr_inodes=, uid=, gid=, ro, noexec, nosuid, nodev")
    return MountSpec("tmpfs", _clean_target(path, f"--tmpfs {t!r}"), "", ro, tuple(out))


def parse_env(items: list[str], host_env: dict[str, str]) -> list[str]:
    """``-e K=V`` and ``-e K`` (taken from the host's environment, dropped if unset)."""
    out = []
    for e in items:
        k, eq, v = e.partition("=")
        if not k or not _ENV_NAME.match(k) or k != k.strip() or " " in k:
            raise UsageError(f"invalid environment variable: {e!r}", hint="use -e NAME=VALUE or -e NAME")
        if eq:
            out.append(f"{k}={v}")
        elif k in host_env:
            out.append(f"{k}={host_env[k]}")
    return out


def parse_env_file_text(text: str, where: str, host_env: dict[str, str]) -> list[str]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.lstrip()
        if not s or s.startswith("#"):
            continue
        k = s.partition("=")[0]
        if not k or " " in k or "\t" in k:
            raise UsageError(f"invalid environment variable in {where}:{n}: {line!r}",
                             hint="each line is NAME=VALUE or NAME")
        items.append(s)
    return parse_env(items, host_env)


def merge_env(base: list[str] | tuple[str, ...], extra: list[str]) -> tuple[str, ...]:
    """Later NAME=VALUE entries replace earlier ones; the order of first appearance is kept."""
    d: dict[str, str] = {}
    for e in list(base) + list(extra):
        k, _, v = e.partition("=")
        d[k] = v
    return tuple(f"{k}={v}" for k, v in d.items())


def parse_labels(items: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for label in items:
        k, _, v = label.partition("=")
        if not k:
            raise UsageError(f"invalid label: {label!r}", hint="use --label key=value")
        out.append((k, v))
    return tuple(out)


def parse_bytes(s: str, what: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)b?\s*", s.lower())
    if not m:
        raise UsageError(f"invalid {what}: {s!r}", hint="use a number with an optional unit: 512m, 1g")
    mult = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult)


class ContainerSpec(Record):
    """Everything needed to set up and run one container (stored in config.json)."""
    image_id: str
    image_ref: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str = "/"
    user: str = ""                    # as given: name, uid, name:group, uid:gid ("" = root)
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    init: bool = False
    read_only: bool = False
    mounts: tuple[MountSpec, ...] = ()
    caps: tuple[str, ...] = DEFAULT_CAPS
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    userns: str = ""                  # "" (default mapping) | "keep-id"
    network: str = "default"          # default | none | host | other modes of rootless.network
    publish: tuple[str, ...] = ()     # -p specs (rootless.network)
    dns: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    stop_signal: int = 15
    stop_timeout: int = 10
    labels: tuple[tuple[str, str], ...] = ()
    auto_remove: bool = False
    platform: str = ""
    rootfs: str = ""                  # --rootfs: a directory used as the only (read-only) layer
    memory: int = 0                   # bytes, 0 = unlimited
    cpus: float = 0.0
    pids_limit: int = 0
    entrypoint: tuple[str, ...] | None = None   # as resolved (for inspect)
    cmd: tuple[str, ...] | None = None
    image_volumes: tuple[str, ...] = ()
    # networking (rootless.network): see plan_network
    network_aliases: tuple[str, ...] = ()
    ip: str = ""
    publish_all: bool = False
    exposed: tuple[str, ...] = ()     # EXPOSE of the image + --expose ("80/tcp")
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()

    def to_json(self) -> dict:
        d = self.to_dict()
        d["mounts"] = [m.to_json() for m in self.mounts]
        d["labels"] = dict(self.labels)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ContainerSpec":
        known = set(cls._fields)
        kw = {}
        for k, v in d.items():
            if k not in known:
                continue
            if k == "mounts":
                v = tuple(MountSpec.from_json(x) for x in v)
            elif k == "labels":
                v = tuple(v.items()) if isinstance(v, dict) else tuple(tuple(x) for x in v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)

    def with_(self, **kw) -> "ContainerSpec":
        return self.replace(**kw)


class RunOptions(Record):
    """The user's options for run/create, already split into lists (from the CLI)."""
    command: tuple[str, ...] = ()
    entrypoint: str | None = None     # "" clears the image's entrypoint
    env: tuple[str, ...] = ()         # parsed NAME=VALUE
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    init: bool = False
    read_only: bool = False
    mounts: tuple[MountSpec, ...] = ()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    userns: str = ""
    network: str = "default"
    publish: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    add_hosts: tuple[str, ...] = ()
    stop_signal: str = ""
    stop_timeout: int | None = None
    labels: tuple[tuple[str, str], ...] = ()
    auto_remove: bool = False
    rootfs: str = ""
    memory: int = 0
    cpus: float = 0.0
    pids_limit: int = 0
    network_aliases: tuple[str, ...] = ()
    ip: str = ""
    publish_all: bool = False
    expose: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra: dict = {}


def _seq(x) -> tuple[str, ...] | None:
    if x is None:
        return None
    if isinstance(x, str):
        return (x,)
    return tuple(str(i) for i in x)


def _img(cfg, name: str, default=None):
    """Read a field of the image's ImageConfig (dataclass) or, at the edges, of a JSON dict."""
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        alias = {"env": "Env", "entrypoint": "Entrypoint", "cmd": "Cmd", "working_dir": "WorkingDir",
                 "user": "User", "stop_signal": "StopSignal", "volumes": "Volumes", "labels": "Labels"}
        v = cfg.get(alias.get(name, name), cfg.get(name, default))
    else:
        v = getattr(cfg, name, default)
    return default if v is None else v


def build_spec(image_config, opts: RunOptions, *, image_id: str, image_ref: str, platform: str = "",
               default_hostname: str = "") -> ContainerSpec:
    """Merge the image config with the options (pure)."""
    img_ep = _seq(_img(image_config, "entrypoint")) or ()
    img_cmd = _seq(_img(image_config, "cmd")) or ()
    if opts.entrypoint is not None:
        import shlex

        ep = tuple(shlex.split(opts.entrypoint)) if opts.entrypoint else ()
        # Docker: --entrypoint resets the image's Cmd
        cmd = tuple(opts.command)
    else:
        ep = img_ep
        cmd = tuple(opts.command) if opts.command else img_cmd
    argv = ep + cmd
    if not argv:
        from rootless.errors import RootlessError

        raise RootlessError("no command specified", hint="the image has no Entrypoint or Cmd: give a command")

    env = list(_seq(_img(image_config, "env")) or ())
    env = list(merge_env(env, list(opts.env)))
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    hostname = opts.hostname or default_hostname
    if opts.hostname and not _HOSTNAME.match(opts.hostname):
        raise UsageError(f"invalid hostname {opts.hostname!r}", hint="letters, digits, '-' and '.', at most 63")
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    if hostname and not any(e.startswith("HOSTNAME=") for e in env):
        env.append(f"HOSTNAME={hostname}")

    workdir = opts.workdir or _img(image_config, "working_dir", "") or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"invalid working directory {workdir!r}: must be absolute")
    user = opts.user or _img(image_config, "user", "") or ""
    stop = parse_signal(opts.stop_signal or _img(image_config, "stop_signal", "") or None)

    if opts.userns not in ("", "keep-id", "host"):
        raise UsageError(f"unsupported --userns {opts.userns!r}", hint="use --userns=keep-id (or leave it out)")

    # anonymous volumes from the image, unless a user mount covers the path
    vols = _img(image_config, "volumes", ()) or ()
    image_volumes = tuple(sorted(vols.keys() if isinstance(vols, dict) else vols))
    mounts = list(opts.mounts)
    targets = {m.target for m in mounts}
    for v in image_volumes:
        t = _clean_target(v, "image volume")
        if t not in targets:
            mounts.append(MountSpec("volume", t))
            targets.add(t)
    seen = set()
    for m in mounts:
        if m.target in seen:
            raise UsageError(f"duplicate mount point: {m.target}")
        seen.add(m.target)

    # Docker and Podman: the container's labels are the image's, then --label (which wins)
    img_labels = _img(image_config, "labels", {}) or {}
    labels = dict((str(k), str(v)) for k, v in (img_labels.items() if isinstance(img_labels, dict) else ()))
    labels.update(opts.labels)

    caps = effective_caps(tuple(opts.cap_add), tuple(opts.cap_drop))
    exposed = _exposed(_img(image_config, "exposed_ports", ()) or (), opts.expose)
    if opts.cpus < 0 or opts.memory < 0 or opts.pids_limit < 0:
        raise UsageError("resource limits must not be negative")
    return ContainerSpec(
        image_id=image_id, image_ref=image_ref, argv=argv, env=tuple(env), working_dir=workdir, user=user,
        hostname=hostname, tty=opts.tty, interactive=opts.interactive, init=opts.init, read_only=opts.read_only,
        mounts=tuple(mounts), caps=caps, cap_add=tuple(opts.cap_add), cap_drop=tuple(opts.cap_drop),
        no_new_privileges=opts.no_new_privileges, userns=opts.userns, network=opts.network or "default",
        publish=tuple(opts.publish), dns=tuple(opts.dns), add_hosts=tuple(opts.add_hosts), stop_signal=stop,
        stop_timeout=10 if opts.stop_timeout is None else opts.stop_timeout, labels=tuple(labels.items()),
        auto_remove=opts.auto_remove, platform=platform, rootfs=opts.rootfs, memory=opts.memory,
        cpus=opts.cpus, pids_limit=opts.pids_limit, entrypoint=ep or None, cmd=cmd or None,
        image_volumes=image_volumes, network_aliases=tuple(opts.network_aliases), ip=opts.ip,
        publish_all=opts.publish_all, exposed=exposed, dns_search=tuple(opts.dns_search),
        dns_options=tuple(opts.dns_options))


def _exposed(image_ports, expose) -> tuple[str, ...]:
    """EXPOSE of the image (``{"80/tcp": {}}`` or a list) and ``--expose`` values, as ``PORT/PROTO``."""
    items = list(image_ports.keys() if isinstance(image_ports, dict) else image_ports) + list(expose)
    if not items:
        return ()
    from rootless.network.ports import parse_expose

    out: list[str] = []
    for e in items:
        for port, proto in parse_expose(str(e)):
            k = f"{port}/{proto}"
            if k not in out:
                out.append(k)
    return tuple(out)


# ---------------------------------------------------------------------------
# users: "name", "uid", "name:group", "uid:gid" against the image's passwd/group

class ResolvedUser(Record):
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_user(user: str, passwd: str | None, group: str | None) -> ResolvedUser:
    """Docker's rules (moby/sys/user GetExecUser), pure: texts of /etc/passwd and /etc/group."""
    from rootless.errors import ContainerError

    u, _, g = (user or "").partition(":")
    pw = []
    for line in (passwd or "").splitlines():
        f = line.split(":")
        if len(f) >= 7 and f[2].isdigit() and f[3].isdigit():
            pw.append((f[0], int(f[2]), int(f[3]), f[5]))
    gr = []
    for line in (group or "").splitlines():
        f = line.split(":")
        if len(f) >= 4 and f[2].isdigit():
            gr.append((f[0], int(f[2]), [x for x in f[3].split(",") if x]))
    uid, gid, home, name = 0, 0, "/", "root"
    if not u:
        u = "0"
    entry = None
    if u.isdigit():
        uid = int(u)
        entry = next((e for e in pw if e[1] == uid), None)
    else:
        entry = next((e for e in pw if e[0] == u), None)
        if entry is None:
            raise ContainerError(f"unable to find user {u}: no matching entries in passwd file",
                                 hint="use a numeric uid (-u 1000) or a user of the image's /etc/passwd")
        uid = entry[1]
    if entry is not None:
        name, gid, home = entry[0], entry[2], entry[3] or "/"
    if g:
        if g.isdigit():
            gid = int(g)
        else:
            ge = next((e for e in gr if e[0] == g), None)
            if ge is None:
                raise ContainerError(f"unable to find group {g}: no matching entries in group file",
                                     hint="use a numeric gid (-u 1000:1000) or a group of the image's /etc/group")
            gid = ge[1]
    supp = tuple(sorted({e[1] for e in gr if name in e[2] and e[1] != gid})) if entry is not None and not g else ()
    if uid >= 1 << 31 or gid >= 1 << 31:
        raise ContainerError(f"invalid user {user!r}: id out of range")
    return ResolvedUser(uid, gid, supp, home)

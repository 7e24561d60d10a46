"""Configuration: TOML files, XDG paths and environment overrides.

Order of precedence (highest first):

1. environment: ``ROOTLESS_ROOT`` (store root), ``ROOTLESS_RUNTIME_DIR``,
   ``ROOTLESS_CONFIG`` (the user's config file, instead of the XDG one);
2. the user's file ``$XDG_CONFIG_HOME/rootless/config.toml``
   (``~/.config/rootless/config.toml``);
3. the system file ``/etc/rootless/config.toml``;
4. built-in defaults.

Example::

    [storage]
    root = "/scratch/me/rootless"      # default ~/.local/share/rootless
    driver = "auto"                   # auto | overlay | fuse-overlayfs | vfs
    mount_program = "/usr/bin/fuse-overlayfs"   # default: fuse-overlayfs on PATH

    [network]
    backend = "auto"                  # auto | pasta | slirp4netns
    host_containers_internal = true

    [registries]
    insecure = ["registry.lan:5000"]  # plain HTTP / no TLS verification

    [pull]
    parallel = 4

    [emulation]
    mode = "auto"                     # auto | host | sandboxed | none
    [emulation.qemu]
    arm64 = "/opt/qemu/bin/qemu-aarch64"
"""

from __future__ import annotations

import os
import re
from rootless.record import Record
from pathlib import Path

from rootless.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/rootless/config.toml")

STORAGE_DRIVERS = ("auto", "overlay", "fuse-overlayfs", "vfs")
NETWORK_BACKENDS = ("auto", "pasta", "slirp4netns")
EMULATION_MODES = ("auto", "host", "sandboxed", "none")


class Config(Record):
    data_root: Path
    runtime_dir: Path
    config_dir: Path
    config_files: tuple[Path, ...] = ()
    storage_driver: str = "auto"
    mount_program: str = ""                   # fuse-overlayfs to use ("" = the one on PATH)
    network_backend: str = "auto"
    host_containers_internal: bool = True
    insecure_registries: tuple[str, ...] = ()
    pull_parallel: int = 4
    emulation_mode: str = "auto"
    qemu_paths: tuple[tuple[str, str], ...] = ()
    auth_file: Path = Path()
    home: Path = Path()

    def qemu_path(self, arch: str) -> str | None:
        for a, p in self.qemu_paths:
            if a == arch:
                return p
        return None

    @property
    def docker_auth_file(self) -> Path:
        return self.home / ".docker" / "config.json"


def _home(env: dict[str, str]) -> Path:
    h = env.get("HOME")
    if h:
        return Path(h)
    if os.name == "nt":                      # (the machine commands run on Windows)
        return Path(env.get("USERPROFILE") or Path.home())
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _xdg(env: dict[str, str], var: str, default: Path) -> Path:
    v = env.get(var)
    return Path(v) if v and os.path.isabs(v) else default


def default_runtime_dir(env: dict[str, str]) -> Path:
    """``$XDG_RUNTIME_DIR/rootless``, else a private directory under /tmp.

    The fallback ``/tmp/rootless-run-UID`` is created mode 0700 and must be
    owned by us (another user could have pre-created it to spy on us): every
    user of the runtime directory goes through :func:`runtime_subdir`.
    """
    x = env.get("XDG_RUNTIME_DIR")
    if x and os.path.isdir(x) and os.access(x, os.W_OK):
        return Path(x) / "rootless"
    if os.name == "nt":                      # the per-user temporary directory is private there
        return Path(env.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "rootless" / "run"
    return Path(env.get("TMPDIR") or "/tmp") / f"rootless-run-{os.getuid()}"


def private_dir_problem(st, uid: int) -> str | None:
    """Why a directory with this ``lstat`` result is not private to ``uid`` (pure); None when it is."""
    import stat

    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != uid:
        return f"belongs to uid {st.st_uid}, not to you (uid {uid})"
    if st.st_mode & 0o022:
        return f"is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def ensure_private_dir(path: Path | str) -> Path:
    """Make ``path`` (mode 0700) or check it: a directory of ours that nobody else can write to.

    The one check of the runtime directory (``/tmp/rootless-run-UID`` when
    XDG_RUNTIME_DIR is unset, which another user may have made first): one
    ``lstat`` when it exists. Raises ConfigError with the fix otherwise.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass                                # made at the same moment (by us or someone else)
        except OSError as e:
            raise ConfigError(f"cannot create the runtime directory {path}: {e.strerror}",
                              hint="set XDG_RUNTIME_DIR or ROOTLESS_RUNTIME_DIR to a directory you can write to"
                              ) from None
        st = os.lstat(path)
    if os.name == "nt":
        return path
    why = private_dir_problem(st, os.getuid())
    if why is not None:
        raise ConfigError(f"refusing to use the runtime directory {path}: it {why}",
                          hint=f"another user may have made it to see or change your containers' state: "
                               f"remove it if it is yours (rm -rf {path}), or set XDG_RUNTIME_DIR or "
                               f"ROOTLESS_RUNTIME_DIR to a private directory (mode 0700)")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def ensure_data_root(path: Path | str) -> Path:
    """The data root, mode 0700: made so, or tightened when it is ours and open to others.

    Other users must not reach into it: layers and containers keep setuid files that
    belong to us (image uid 0 is our uid), and volumes hold what containers wrote.
    Nothing needs another user to pass through it (the containers' processes see their
    files through mounts made by us). One ``stat`` when it is already private."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.stat(path)
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, st.st_mode & 0o700)
    return path


def runtime_subdir(runtime_dir: Path | str, name: str) -> Path:
    """``<runtime_dir>/<name>`` (mode 0700), the runtime directory checked first."""
    d = ensure_private_dir(runtime_dir) / name
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create {d}: {e.strerror}",
                          hint="set XDG_RUNTIME_DIR or ROOTLESS_RUNTIME_DIR to a directory you can write to") from None
    return d


_LINE_RE = re.compile(r"\(at line (\d+), column (\d+)\)")


def _not_a_file(path: Path) -> str:
    """Why ``path`` is no config file to read: "which does not exist", "which is a directory..."."""
    import stat

    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "which does not exist"
    except PermissionError:
        return "which cannot be reached: permission denied"
    except OSError as e:
        return f"which cannot be read: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "which is a directory, not a file"
    return "which is not a regular file"


def _read_toml(path: Path) -> dict:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {}   # the usual case: no tomllib import on the start-up path
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a file",
                          hint=f"remove or rename the directory {path}, or write the configuration there "
                               "as a TOML file") from None
    import tomllib

    try:
        with f:
            return tomllib.load(f)
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        text = str(e)
        m = _LINE_RE.search(text)
        reason = _LINE_RE.sub("", text).strip()
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"malformed config file {where}: {reason}" + (f" (line {m.group(1)})" if m else ""),
                          hint=f"fix the TOML syntax in {path}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"malformed config file {path}: not UTF-8 text") from None


_SCHEMA: dict[str, dict[str, type | tuple]] = {
    "storage": {"root": str, "driver": str, "mount_program": str},
    "network": {"backend": str, "host_containers_internal": bool},
    "registries": {"insecure": list},
    "pull": {"parallel": int},
    "emulation": {"mode": str, "qemu": dict},
}


_TABLE_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")


def _bare(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def key_line(text: str, section: str, key: str | None = None) -> int | None:
    """The line (1-based) of ``[section]`` (``key`` None) or of ``key = ...`` in that table,
    in a TOML text (pure): tomllib keeps no positions. Also finds ``section.key = ...`` and
    ``section = {...}`` at the top level. None when not found."""
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        m = _TABLE_RE.match(line)
        if m:
            current = _bare(m.group(1))
            if key is None and current == section:
                return n
            continue
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        k = _bare(line.split("=", 1)[0])
        if key is not None and current == section and k == key:
            return n
        if current == "" and (k == f"{section}.{key}" if key is not None else k.split(".")[0] == section):
            return n
        if key is not None and current == "" and k == section and re.search(rf"\b{re.escape(key)}\s*=", line):
            return n
    return None


def _where(path: Path, section: str, key: str | None = None) -> str:
    """``PATH:LINE`` of a table or key (``PATH`` when the line is not found)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return str(path)
    line = key_line(text, section, key)
    if line is None and key is not None:                        # a sub-table: [registries.more]
        line = key_line(text, f"{section}.{key}")
    if line is None and "." in section and key is not None:      # [emulation] qemu = {arm64 = ...}
        parent, _, sub = section.rpartition(".")
        line = key_line(text, parent, sub)
    return f"{path}:{line}" if line else str(path)


def _validate(path: Path, data: dict) -> None:
    for section, body in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"config file {_where(path, section)}: unknown section [{section}]",
                              hint="known sections: " + ", ".join(f"[{s}]" for s in _SCHEMA))
        if not isinstance(body, dict):
            raise ConfigError(f"config file {_where(path, section)}: '{section}' must be a table ([{section}])")
        for key, value in body.items():
            want = _SCHEMA[section].get(key)
            if want is None:
                raise ConfigError(f"config file {_where(path, section, key)}: unknown key '{key}' in [{section}]",
                                  hint="known keys: " + ", ".join(_SCHEMA[section]))
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                example = {str: '"..."', int: "4", bool: "true", list: '["..."]', dict: "{ ... }"}[want]
                raise ConfigError(f"config file {_where(path, section, key)}: [{section}] {key} must be of type "
                                  f"{want.__name__}, not {type(value).__name__}",
                                  hint=f"write it as {key} = {example}")


def _choice(path: Path, section: str, key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"config file {_where(path, section, key)}: [{section}] {key} = {value!r} is not one "
                          f"of {', '.join(choices)}")
    return value


def load_config(env: dict[str, str] | None = None) -> Config:
    """Build the :class:`Config` from files and environment (pure but for reads)."""
    env = dict(os.environ) if env is None else env
    home = _home(env)
    config_dir = _xdg(env, "XDG_CONFIG_HOME", home / ".config") / "rootless"
    data_home = _xdg(env, "XDG_DATA_HOME", home / ".local" / "share")
    user_file = Path(env["ROOTLESS_CONFIG"]) if env.get("ROOTLESS_CONFIG") else config_dir / "config.toml"
    if env.get("ROOTLESS_CONFIG") and not user_file.is_file():
        raise ConfigError(f"ROOTLESS_CONFIG points at {user_file}, {_not_a_file(user_file)}",
                          hint="set ROOTLESS_CONFIG to a TOML file (or unset it for "
                               f"{config_dir / 'config.toml'})")

    merged: dict[str, dict] = {}
    origin: dict[tuple[str, str], Path] = {}
    files: list[Path] = []
    # system first, then the user's file on top of it
    for path in (SYSTEM_CONFIG, user_file):
        data = _read_toml(path)
        if not data and not path.is_file():
            continue
        files.append(path)
        _validate(path, data)
        for section, body in data.items():
            merged.setdefault(section, {}).update(body)
            for key in body:
                origin[(section, key)] = path

    def get(section: str, key: str, default):
        return merged.get(section, {}).get(key, default)

    def src(section: str, key: str) -> Path:
        return origin.get((section, key), Path("<defaults>"))

    root = env.get("ROOTLESS_ROOT") or get("storage", "root", None)
    data_root = Path(os.path.expanduser(root)) if root else data_home / "rootless"
    if not data_root.is_absolute():
        raise ConfigError(f"storage root {data_root} must be an absolute path")
    runtime_dir = Path(env["ROOTLESS_RUNTIME_DIR"]) if env.get("ROOTLESS_RUNTIME_DIR") else default_runtime_dir(env)

    insecure = get("registries", "insecure", [])
    if not all(isinstance(x, str) for x in insecure):
        raise ConfigError(f"config file {_where(src('registries', 'insecure'), 'registries', 'insecure')}: "
                          "[registries] insecure must be a list of strings")
    qemu = get("emulation", "qemu", {})
    if not all(isinstance(v, str) for v in qemu.values()):
        bad = next(k for k, v in qemu.items() if not isinstance(v, str))
        raise ConfigError(f"config file {_where(src('emulation', 'qemu'), 'emulation.qemu', bad)}: "
                          f"[emulation.qemu] {bad} must be a path (a string)")
    parallel = get("pull", "parallel", 4)
    if parallel < 1 or parallel > 64:
        raise ConfigError(f"config file {_where(src('pull', 'parallel'), 'pull', 'parallel')}: "
                          "[pull] parallel must be between 1 and 64")

    return Config(
        data_root=data_root,
        runtime_dir=runtime_dir,
        config_dir=config_dir,
        config_files=tuple(files),
        storage_driver=_choice(src("storage", "driver"), "storage", "driver", get("storage", "driver", "auto"),
                               STORAGE_DRIVERS),
        mount_program=os.path.expanduser(get("storage", "mount_program", "")),
        network_backend=_choice(src("network", "backend"), "network", "backend", get("network", "backend", "auto"),
                                NETWORK_BACKENDS),
        host_containers_internal=get("network", "host_containers_internal", True),
        insecure_registries=tuple(insecure),
        pull_parallel=parallel,
        emulation_mode=_choice(src("emulation", "mode"), "emulation", "mode", get("emulation", "mode", "auto"),
                               EMULATION_MODES),
        qemu_paths=tuple(sorted(qemu.items())),
        auth_file=config_dir / "auth.json",
        home=home,
    )

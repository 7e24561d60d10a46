import os
from pathlib import Path

import pytest

from rootless.config import load_config
from rootless.errors import ConfigError


def env_for(tmp_path: Path, **extra) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    e = {"HOME": str(home)}
    e.update(extra)
    return e


def test_defaults_follow_xdg(tmp_path):
    c = load_config(env_for(tmp_path))
    home = tmp_path / "home"
    assert c.data_root == home / ".local/share/rootless"
    assert c.config_dir == home / ".config/rootless"
    assert c.storage_driver == "auto"
    assert c.auth_file == home / ".config/rootless/auth.json"


def test_xdg_and_env_overrides(tmp_path):
    rt = tmp_path / "xdg-run"
    rt.mkdir()
    c = load_config(env_for(tmp_path, XDG_DATA_HOME=str(tmp_path / "data"), XDG_RUNTIME_DIR=str(rt)))
    assert c.data_root == tmp_path / "data/rootless"
    assert c.runtime_dir == rt / "rootless"
    c = load_config(env_for(tmp_path, ROOTLESS_ROOT=str(tmp_path / "store")))
    assert c.data_root == tmp_path / "store"


def test_runtime_dir_fallback_without_xdg(tmp_path):
    c = load_config(env_for(tmp_path, TMPDIR=str(tmp_path)))
    assert c.runtime_dir == tmp_path / f"rootless-run-{os.getuid()}"


class _St:
    def __init__(self, mode, uid):
        self.st_mode, self.st_uid = mode, uid


@pytest.mark.parametrize("mode, uid, needle", [
    (0o040700, 1000, None),
    (0o040755, 1000, None),
    (0o040700, 0, "belongs to uid 0, not to you (uid 1000)"),
    (0o040777, 1000, "writable by other users (mode 0777)"),
    (0o041777, 1000, "writable by other users (mode 1777)"),
    (0o040770, 1000, "writable by other users (mode 0770)"),
    (0o120777, 1000, "symbolic link"),
    (0o100600, 1000, "not a directory"),
])
def test_private_dir_problem(mode, uid, needle):
    from rootless.config import private_dir_problem

    why = private_dir_problem(_St(mode, uid), 1000)
    assert why == needle if needle is None else needle in why


def test_runtime_dir_is_made_private_and_a_shared_one_is_refused(tmp_path):
    from rootless.config import ensure_private_dir, runtime_subdir

    rt = tmp_path / "a" / f"rootless-run-{os.getuid()}"
    d = runtime_subdir(rt, "exits")
    assert d == rt / "exits"
    assert rt.stat().st_mode & 0o777 == 0o700 and d.stat().st_mode & 0o777 == 0o700

    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    readable.chmod(0o755)
    ensure_private_dir(readable)                            # ours, only readable by others: tightened
    assert readable.stat().st_mode & 0o777 == 0o700

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)                                     # as another user could have prepared it
    with pytest.raises(ConfigError) as e:
        runtime_subdir(shared, "netns")
    assert "refusing to use the runtime directory" in e.value.message and "0777" in e.value.message
    assert "ROOTLESS_RUNTIME_DIR" in e.value.hint
    assert os.listdir(shared) == []                         # nothing written into it
    os.symlink(tmp_path / "a", tmp_path / "link")
    with pytest.raises(ConfigError, match="symbolic link"):
        ensure_private_dir(tmp_path / "link")


def test_user_file_overrides_values(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\ndriver = "vfs"\nroot = "/srv/x"\nmount_program = "/opt/fuse-overlayfs"\n'
                   '[registries]\ninsecure = ["a:5000"]\n[emulation.qemu]\narm64 = "/opt/q"\n')
    c = load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(cfg)))
    assert c.storage_driver == "vfs" and c.mount_program == "/opt/fuse-overlayfs"
    assert c.data_root == Path("/srv/x")
    assert c.insecure_registries == ("a:5000",)
    assert c.qemu_path("arm64") == "/opt/q"
    assert cfg in c.config_files
    # the environment beats the file
    c = load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(cfg), ROOTLESS_ROOT="/other"))
    assert c.data_root == Path("/other")


def test_xdg_config_file_is_read(tmp_path):
    d = tmp_path / "home/.config/rootless"
    d.mkdir(parents=True)
    (d / "config.toml").write_text('[network]\nbackend = "slirp4netns"\n')
    assert load_config(env_for(tmp_path)).network_backend == "slirp4netns"


def test_malformed_file_names_file_and_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[storage]\ndriver = "vfs"\nthis is not toml\n')
    with pytest.raises(ConfigError) as ei:
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(cfg)))
    assert str(cfg) in ei.value.message
    assert "line 3" in ei.value.message


@pytest.mark.parametrize("text,needle,line", [
    ('[nope]\nx = 1\n', "unknown section [nope]", 1),
    ('# mine\n[storage]\ndriver = "vfs"\nflavour = "x"\n', "unknown key 'flavour'", 4),
    ('[storage]\ndriver = "zfs"\n', "[storage] driver = 'zfs' is not one of", 2),
    ('[pull]\n\nparallel = "4"\n', "[pull] parallel must be of type int, not str", 3),
    ('[pull]\nparallel = 0\n', "between 1 and 64", 2),
    ('[network]\nbackend = "pasta"\n\n[storage]\n  root = 5  # a number\n', "[storage] root must be of type str", 5),
    ('storage.root = 5\n', "[storage] root must be of type str", 1),
    ('[emulation]\nmode = "auto"\nqemu = { arm64 = 7 }\n', "[emulation.qemu] arm64 must be a path", 3),
    ('[emulation.qemu]\narm = "/q"\n"arm64" = 7\n', "[emulation.qemu] arm64 must be a path", 3),
    ('[registries]\ninsecure = [\n  "a:5000",\n]\n[registries.more]\n', "unknown key 'more'", 5),
])
def test_invalid_values_name_the_file_and_line(tmp_path, text, needle, line):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(cfg)))
    assert needle in ei.value.message
    assert f"config file {cfg}:{line}: " in ei.value.message


def test_key_line():
    from rootless.config import key_line

    text = '[storage]\ndriver = "vfs"\n[ "emulation" . "qemu" ]\n"arm64" = "/q"\n'
    assert key_line(text, "storage") == 1
    assert key_line(text, "storage", "driver") == 2
    assert key_line(text, "emulation.qemu", "arm64") == 4
    assert key_line(text, "storage", "root") is None
    assert key_line(text, "network") is None


def test_missing_rootless_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(tmp_path / "missing.toml")))
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(tmp_path / "afile" / "config.toml")))


def test_rootless_config_or_config_file_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(tmp_path)))
    assert e.value.message == f"ROOTLESS_CONFIG points at {tmp_path}, which is a directory, not a file"
    assert "ROOTLESS_CONFIG" in e.value.hint
    with pytest.raises(ConfigError, match="which is not a regular file"):
        load_config(env_for(tmp_path, ROOTLESS_CONFIG="/dev/null"))
    # the default file: a directory there is an error too, not a traceback
    (tmp_path / "home" / ".config" / "rootless" / "config.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match="config.toml is a directory, not a file"):
        load_config(env_for(tmp_path))

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


@pytest.mark.parametrize("text,needle", [
    ('[nope]\nx = 1\n', "unknown section [nope]"),
    ('[storage]\nflavour = "x"\n', "unknown key 'flavour'"),
    ('[storage]\ndriver = "zfs"\n', "driver"),
    ('[pull]\nparallel = "4"\n', "parallel must be of type int"),
    ('[pull]\nparallel = 0\n', "between 1 and 64"),
])
def test_invalid_values(tmp_path, text, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(cfg)))
    assert needle in ei.value.message
    assert str(cfg) in ei.value.message


def test_missing_rootless_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(env_for(tmp_path, ROOTLESS_CONFIG=str(tmp_path / "missing.toml")))

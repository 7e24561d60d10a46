import subprocess
import sys

import pytest

from rootless import __version__
from rootless.cli.main import GROUPS, TOP, main


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rootless", *args], capture_output=True, text=True, env=env)


def test_version():
    cp = run_cli("--version")
    assert cp.returncode == 0
    assert cp.stdout.strip() == f"rootless version {__version__}"


def test_help_lists_command_groups():
    cp = run_cli("--help")
    assert cp.returncode == 0
    for g in ("container", "image", "network", "volume", "machine", "system"):
        assert f"\n  {g} " in cp.stdout
    for c in ("run", "pull", "ps", "doctor"):
        assert f"\n  {c} " in cp.stdout


def test_command_help():
    cp = run_cli("doctor", "--help")
    assert cp.returncode == 0
    assert "--json" in cp.stdout


def test_unknown_command_is_usage_error_without_traceback():
    cp = run_cli("frobnicate")
    assert cp.returncode == 125
    assert "Traceback" not in cp.stderr
    assert "'frobnicate' is not a rootless command" in cp.stderr


def test_bad_flag_is_usage_error():
    cp = run_cli("doctor", "--no-such-flag")
    assert cp.returncode == 125
    assert "unrecognized arguments: --no-such-flag" in cp.stderr
    assert "Traceback" not in cp.stderr
    cp = run_cli("--no-such-global")
    assert cp.returncode == 125
    assert "unknown flag" in cp.stderr


def test_malformed_config_is_one_line_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[storage\n")
    import os

    cp = run_cli("info", env=dict(os.environ, ROOTLESS_CONFIG=str(cfg)))
    assert cp.returncode == 125
    assert cp.stderr.startswith(f"Error: malformed config file {cfg}:1")
    assert "Traceback" not in cp.stderr


def test_every_group_subcommand_maps_to_a_top_module():
    """Every name `rootless --help` and `rootless GROUP --help` list has a command behind it
    (`system df`/`system prune` once were listed without one: a KeyError traceback)."""
    import importlib

    wanted = [(m, c) for m, c in TOP.values()]
    wanted += [(m, c) for m, subs in GROUPS.values() for c in subs.values()]
    missing = []
    for module, cmd in wanted:
        mod = importlib.import_module(f"rootless.cli.{module}")
        if cmd not in mod.COMMANDS:
            missing.append(f"{module}.{cmd}")
    assert not missing, missing
    assert {"containers", "images", "system"} <= {m for m, _ in wanted}


@pytest.mark.parametrize("argv", [["system", "df", "--help"], ["system", "prune", "--help"]])
def test_system_df_prune_help(argv):
    cp = run_cli(*argv)
    assert cp.returncode == 0 and "Traceback" not in cp.stderr
    assert "usage: rootless system " + argv[1] in cp.stdout


def test_main_in_process_returns_code(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


# optional-value flags (Docker's --pull, --tls-verify, -H): the next word is never their value

def _parse(module: str, name: str, *argv: str):
    import importlib

    return importlib.import_module(f"rootless.cli.{module}").COMMANDS[name].parser(f"rootless {name}").parse_args(
        list(argv))


def test_bare_pull_does_not_take_the_context():
    ns = _parse("build", "build", "-t", "x", "--pull", "ctx")
    assert (ns.pull, ns.context, ns.tag) == ("always", "ctx", ["x"])
    ns = _parse("build", "build", "--pull", ".")
    assert (ns.pull, ns.context) == ("always", ".")
    ns = _parse("build", "build", "--pull=never", ".")
    assert (ns.pull, ns.context) == ("never", ".")
    assert _parse("build", "build", ".").pull == "missing"


def test_bare_tls_verify_and_human_do_not_take_the_next_word():
    ns = _parse("images", "pull", "--tls-verify", "localhost:5000/img")
    assert (ns.tls_verify, ns.image) == ("true", "localhost:5000/img")
    assert _parse("images", "pull", "--tls-verify=false", "img").tls_verify == "false"
    ns = _parse("images", "push", "--tls-verify", "img", "localhost:5000/img")
    assert (ns.tls_verify, ns.image, ns.destination) == ("true", "img", "localhost:5000/img")
    ns = _parse("manifest", "push", "--tls-verify", "list", "localhost:5000/list")
    assert (ns.tls_verify, ns.name, ns.destination) == ("true", "list", "localhost:5000/list")
    ns = _parse("images", "history", "-H", "busybox")
    assert (ns.human, ns.image) == ("true", "busybox")
    assert _parse("images", "history", "--human=false", "busybox").human == "false"
    assert _parse("images", "history", "-H=false", "busybox").human == "false"


def test_expand_bare_flags_stops_at_double_dash():
    from rootless.cli.base import expand_bare_flags

    bare = {"--pull": "--pull=always"}
    assert expand_bare_flags(["--pull", "x", "--", "--pull"], bare) == ["--pull=always", "x", "--", "--pull"]
    assert expand_bare_flags(["--pull=never", "--pullx"], bare) == ["--pull=never", "--pullx"]


def test_os_error_becomes_one_line_with_a_hint():
    import errno

    from rootless.cli.main import os_error

    e = os_error(PermissionError(errno.EACCES, "Permission denied", "/srv/x/store/images.json"),
                 {"ROOTLESS_ROOT": "/srv/x/store"})
    assert e.message == "/srv/x/store/images.json: Permission denied" and e.exit_code == 125
    assert "--root" in e.hint and "ROOTLESS_ROOT" in e.hint
    e = os_error(PermissionError(errno.EACCES, "Permission denied", "/etc/secret"), {"ROOTLESS_ROOT": "/srv/x/store"})
    assert "ls -ld /etc/secret" in e.hint
    assert os_error(OSError(errno.EIO, "Input/output error"), {"ROOTLESS_ROOT": "/s"}).message == "Input/output error"

"""The installed `rootless` (ci/install: `pip install` into the venv that runs the tests),
as a user runs it: the console script and `python -m rootless`, from the installed
package, not from this checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _console_script() -> str | None:
    beside = Path(sys.executable).parent / "rootless"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rootless")


def test_installed_console_script_and_module(tmp_path):
    exe = _console_script()
    if exe is None:
        pytest.skip(f"rootless is not installed for {sys.executable} (ci/install installs it)")
    # no PYTHONPATH and a neutral cwd: the installed package answers
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HOME"] = str(tmp_path)

    def run(*argv):
        return subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    cp = run(exe, "--version")
    assert cp.returncode == 0 and re.fullmatch(r"rootless version \S+\n", cp.stdout), cp
    assert run(sys.executable, "-m", "rootless", "--version").stdout == cp.stdout
    cp = run(exe, "--help")
    assert cp.returncode == 0 and "Management Commands:" in cp.stdout and "\n  run " in cp.stdout
    cp = run(exe, "frobnicate")
    assert cp.returncode == 125 and "Traceback" not in cp.stderr
    # the three packages and vmhost's guest scripts come from the installation
    cp = run(sys.executable, "-c", "import archsupport, rootless, vmhost.seed as s; print(rootless.__file__); "
                                   "print(archsupport.__file__); print(s.GUEST_DIR)")
    files = cp.stdout.split()
    assert len(files) == 3, cp.stderr
    for f in files:
        assert not f.startswith(str(ROOT) + os.sep), f"{f} is this checkout, not the installed package"
    assert (Path(files[2]) / "init").is_file() and (Path(files[2]) / "build-hook").is_file()

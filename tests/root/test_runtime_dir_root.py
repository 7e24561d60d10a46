"""A runtime directory another user made first (the /tmp fallback without XDG_RUNTIME_DIR)
is refused, and nothing is written into it (run by ci/run-tests as root)."""

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

USER = os.environ.get("ROOTLESS_TEST_USER", "rltest")


@pytest.fixture(autouse=True)
def need_root():
    if os.getuid() != 0:
        pytest.skip("needs root (ci/run-tests runs this part as root)")


def test_runtime_dir_owned_by_another_user_is_refused():
    pw = pwd.getpwnam(USER)
    base = Path(f"/tmp/rootless-rtdir-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o755)
    (base / "home").mkdir()
    os.chown(base / "home", pw.pw_uid, pw.pw_gid)
    # "another user" (root here) made the fallback first, private to itself
    shared = base / f"rootless-run-{pw.pw_uid}"
    shared.mkdir(mode=0o755)
    env = {"HOME": str(base / "home"), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "TMPDIR": str(base), "ROOTLESS_ROOT": str(base / "home" / "store"), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        cp = subprocess.run(["runuser", "-u", USER, "--", sys.executable, "-m", "rootless", "network", "inspect",
                             "bridge"], capture_output=True, text=True, env=env, cwd="/", timeout=60)
        assert cp.returncode == 125, cp.stderr
        assert (f"Error: refusing to use the runtime directory {shared}: it belongs to uid 0, "
                f"not to you (uid {pw.pw_uid})") in cp.stderr
        assert "Traceback" not in cp.stderr
        assert os.listdir(shared) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)

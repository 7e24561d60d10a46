"""`run` for a user without subordinate ids: only the user is mapped (to root), one warning with the fix."""

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOSUB = os.environ.get("ROOTLESS_TEST_NOSUB_USER", "rltest-nosub")


@pytest.fixture(autouse=True)
def need_root():
    if os.getuid() != 0:
        pytest.skip("needs root (ci/run-tests runs this part as root)")


def test_run_without_subids_maps_only_the_user(registry, tmp_path):
    pw = pwd.getpwnam(NOSUB)
    base = Path(f"/tmp/rootless-nosub-run-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o700)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    env = {"HOME": str(base), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "ROOTLESS_ROOT": str(base / "store"), "XDG_RUNTIME_DIR": str(base), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}

    def rl(*args):
        return subprocess.run(["runuser", "-u", NOSUB, "--", sys.executable, "-m", "rootless", *args],
                              capture_output=True, text=True, env=env, cwd="/", timeout=120)

    try:
        ref = registry.ref("layered")
        cp = rl("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
                "id -u; stat -c %u /data/owned; cat /proc/self/uid_map; echo hi > /tmp/x; cat /tmp/x")
        assert cp.returncode == 0, cp.stderr
        out = cp.stdout.split("\n")
        assert out[0] == "0" and out[1] == "0"
        assert out[2].split() == ["0", str(pw.pw_uid), "1"]
        assert out[3] == "hi"
        assert "usermod --add-subuids" in cp.stderr
        cp = rl("run", "--rm", "--network", "none", ref)
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout == "hello from layered world\n"
        assert "no subordinate ids" not in cp.stderr      # warned once
        assert os.listdir(base / "store" / "containers") == []
    finally:
        subprocess.run(["rm", "-rf", str(base)])

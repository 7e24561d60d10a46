"""The store is the user's alone: another local user can neither list it nor run what it holds.

Layers keep setuid bits and image uid 0 is the user: a setuid file of a layer, reachable by
others, runs as the user (mode 4755 of an owner who is us).
"""

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

USER = os.environ.get("ROOTLESS_TEST_USER", "rltest")
OTHER = os.environ.get("ROOTLESS_TEST_NOSUB_USER", "rltest-nosub")


@pytest.fixture(autouse=True)
def need_root():
    if os.getuid() != 0:
        pytest.skip("needs root (ci/run-tests runs this part as root)")


def test_another_user_cannot_enter_the_store(registry):
    pw = pwd.getpwnam(USER)
    base = Path(f"/tmp/rootless-private-{os.getpid()}")
    subprocess.run(["rm", "-rf", str(base)])
    base.mkdir(mode=0o755)             # a home others may pass through, as most are
    os.chmod(base, 0o755)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    env = {"HOME": str(base), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "ROOTLESS_ROOT": str(base / "store"), "XDG_RUNTIME_DIR": str(base), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}

    def as_user(user, *argv):
        return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, env=env,
                              cwd="/", timeout=120)

    try:
        cp = as_user(USER, sys.executable, "-m", "rootless", "pull", "-q", registry.ref("busybox"))
        assert cp.returncode == 0, cp.stderr
        store = base / "store"
        assert oct(store.stat().st_mode & 0o777) == oct(0o700)
        (sh,) = [p for p in (store / "layers").glob("*/diff/bin/sh")]
        assert as_user(USER, "test", "-x", str(sh)).returncode == 0
        for argv in (["ls", str(store / "layers")], ["test", "-e", str(sh)]):
            cp = as_user(OTHER, *argv)
            assert cp.returncode != 0, (argv, cp.stdout)
        assert "Permission denied" in as_user(OTHER, "ls", str(store)).stderr
    finally:
        subprocess.run(["rm", "-rf", str(base)])

"""A user without subordinate ids: pulls still work, owners are clamped to root with one warning."""

import json
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


def test_pull_without_subids_clamps_owners(registry, tmp_path):
    pw = pwd.getpwnam(NOSUB)
    base = Path(f"/tmp/rootless-nosub-{os.getpid()}")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(mode=0o700)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    env = {"HOME": str(base), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
           "ROOTLESS_ROOT": str(base / "store"), "XDG_RUNTIME_DIR": str(base), "PYTHONPATH": str(ROOT),
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        cp = subprocess.run(["runuser", "-u", NOSUB, "--", sys.executable, "-m", "rootless", "pull",
                             registry.ref("layered")], capture_output=True, text=True, env=env, cwd="/")
        assert cp.returncode == 0, cp.stderr
        assert cp.stderr.count("no subordinate ids") == 1
        db = json.loads((base / "store" / "images.json").read_text())
        (img,) = db["images"].values()
        top = base / "store" / "layers" / img["layers"][-1][7:] / "diff"
        st = os.stat(top / "data" / "owned")
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)  # image uid 1000 -> the user (container root)
        assert st.st_mode & 0o7777 == 0o600
        assert os.stat(top / "etc" / "removed-me").st_rdev == 0  # the whiteout is there
        cp = subprocess.run(["runuser", "-u", NOSUB, "--", sys.executable, "-m", "rootless", "rmi",
                             registry.ref("layered")], capture_output=True, text=True, env=env, cwd="/")
        assert cp.returncode == 0, cp.stderr
        assert os.listdir(base / "store" / "layers") == []
    finally:
        shutil.rmtree(base, ignore_errors=True)

"""Doctor checks that need root to set up the host state (run by ci/run-tests as root)."""

import json
import re
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NOSUB = os.environ.get("ROOTLESS_TEST_NOSUB_USER", "rltest-nosub")
USER = os.environ.get("ROOTLESS_TEST_USER", "rltest")


@pytest.fixture(autouse=True)
def need_root():
    if os.getuid() != 0:
        pytest.skip("needs root (ci/run-tests runs this part as root)")


def doctor_as(user: str, *args: str, path: str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
              ) -> subprocess.CompletedProcess:
    pw = pwd.getpwnam(user)
    env = {"HOME": pw.pw_dir, "PATH": path, "LANG": "C.UTF-8",
           "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}      # this checkout's code
    return subprocess.run(["runuser", "-u", user, "--", sys.executable, "-m", "rootless", "doctor", *args],
                          capture_output=True, text=True, env=env, cwd="/")


def test_user_without_subids_fails_with_fix():
    cp = doctor_as(NOSUB)
    assert cp.returncode == 1, cp.stdout
    line = next(l for l in cp.stdout.splitlines() if l.split()[1:2] == ["subuid"])
    assert line.startswith("FAIL")
    m = re.search(rf"sudo usermod --add-subuids (\d+)-(\d+) --add-subgids (\d+)-(\d+) {NOSUB}$", line)
    assert m, line
    start, end = int(m.group(1)), int(m.group(2))
    assert end - start + 1 == 65536 and m.group(1, 2) == m.group(3, 4)
    # the suggested range overlaps no one's (the test user's is 100000-165535 on CI)
    for path in ("/etc/subuid", "/etc/subgid"):
        for entry in open(path).read().split():
            _, s, c = entry.split(":")
            assert end < int(s) or start >= int(s) + int(c), (path, entry, line)


def test_tun_0600_reported_with_fix():
    mode = os.stat("/dev/net/tun").st_mode & 0o777
    os.chmod("/dev/net/tun", 0o600)
    try:
        cp = doctor_as(USER, "--json")
    finally:
        os.chmod("/dev/net/tun", mode)
    d = json.loads(cp.stdout)
    tun = next(c for c in d["checks"] if c["name"] == "tun")
    assert tun["status"] == "FAIL"
    assert "0o600" in tun["detail"]
    assert "chmod 0666 /dev/net/tun" in tun["fix"]
    assert cp.returncode == 1


def test_newuidmap_without_setuid_fails_with_fix():
    """A copy of newuidmap/newgidmap without the setuid bit first on PATH (as a user's own
    build would be): FAIL with the chmod fix, and exit 1 (run cannot map the subordinate ids)."""
    import shutil

    bindir = Path(f"/tmp/rootless-doctor-bin-{os.getpid()}")      # (pytest's tmp_path is root's, 0700)
    shutil.rmtree(bindir, ignore_errors=True)
    bindir.mkdir(mode=0o755)
    try:
        for tool in ("newuidmap", "newgidmap"):
            shutil.copyfile(f"/usr/bin/{tool}", bindir / tool)
            os.chmod(bindir / tool, 0o755)
        cp = doctor_as(USER, "--json", path=f"{bindir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    d = json.loads(cp.stdout)
    c = next(c for c in d["checks"] if c["name"] == "newuidmap")
    assert c["status"] == "FAIL", c
    assert f"{bindir}/newuidmap, {bindir}/newgidmap is neither setuid root" in c["detail"]
    assert f"chmod u+s {bindir}/newuidmap {bindir}/newgidmap" in c["fix"]
    assert cp.returncode == 1 and d["ok"] is False

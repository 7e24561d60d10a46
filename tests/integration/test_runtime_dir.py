"""The runtime directory's fallback (/tmp/rootless-run-UID without XDG_RUNTIME_DIR) is
private: one that others can write to is refused, and nothing is written into it."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.usefixtures("unprivileged")


def test_fallback_runtime_dir_writable_by_others_is_refused(rl, registry, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"XDG_RUNTIME_DIR": "", "TMPDIR": str(tmp)}
    # the fallback, made first by "someone else" with mode 0777
    shared = tmp / f"rootless-run-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)

    cp = rl("network", "inspect", "bridge", env=env)
    assert cp.returncode == 125 and "Traceback" not in cp.stderr, cp.stderr
    assert f"Error: refusing to use the runtime directory {shared}: it is writable by other users (mode 0777)" \
        in cp.stderr
    assert "Hint: " in cp.stderr and "XDG_RUNTIME_DIR" in cp.stderr

    # run --rm records its exit status in the runtime dir (for a racing `wait`): not in this one
    cp = rl("run", "--rm", "--network", "none", registry.ref("busybox"), "true", env=env)
    assert cp.returncode == 0, cp.stderr
    assert os.listdir(shared) == []

    # once private, it is used
    shared.chmod(0o700)
    cp = rl("run", "--rm", "--network", "none", registry.ref("busybox"), "true", env=env)
    assert cp.returncode == 0, cp.stderr
    assert rl("network", "inspect", "bridge", env=env).returncode == 0
    assert "exits" in os.listdir(shared)

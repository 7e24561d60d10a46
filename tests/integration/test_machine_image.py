"""The guest image is reproducible: built twice from the same recipe and the
same mirror, its kernel, initramfs and ext4 root are the same bytes.

Two builds with mmdebstrap (about a minute each): marked vm and slow, run in
CI's VM step. Select with ``bash ci/dev-test -m vm tests/integration/test_machine_image.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vm, pytest.mark.slow]

OUTPUTS = ("vmlinux", "initrd.cpio", "rootfs.img", "config")


def _digests(d: Path) -> dict[str, str]:
    out = {}
    for name in OUTPUTS:
        h = hashlib.sha256()
        with open(d / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[name] = h.hexdigest()
    return out


def test_guest_image_builds_are_identical(tmp_path):
    from rootless.report import make_reporter
    from vmhost.image import build, make_recipe

    recipe = make_recipe(platform.machine())
    env = dict(os.environ)  # mmdebstrap works in $TMPDIR or /tmp: its subordinate root cannot enter tmp_path
    digests = []
    for n in (1, 2):
        out = tmp_path / f"build{n}"
        out.mkdir()
        build(recipe, out, env, make_reporter(io.StringIO(), tty=False))
        digests.append(_digests(out))
    assert digests[0] == digests[1]
    # the image carries no trace of the build that made it
    from subprocess import run

    listing = run(["debugfs", "-R", "ls -l /tmp", str(tmp_path / "build1" / "rootfs.img")],
                  capture_output=True, text=True, check=True).stdout
    assert "mmdebstrap" not in listing

"""The one wrapper around host programs: failures name the program and keep its stderr."""

import os

import pytest

from rootless import hosttools
from rootless.errors import HelperFailed


def test_spawn_wait_success_and_failure():
    hosttools.spawn_wait(["/bin/true"], "true")
    with pytest.raises(HelperFailed) as ei:
        hosttools.spawn_wait(["/bin/sh", "-c", "echo first >&2; echo last words >&2; exit 3"], "the helper")
    assert ei.value.status == 3
    assert ei.value.message == "the helper failed (exit status 3): last words"
    assert "first" in ei.value.stderr


def test_spawn_wait_missing_program_names_the_package():
    with pytest.raises(HelperFailed) as ei:
        hosttools.spawn_wait(["/nonexistent/newuidmap"], "newuidmap")
    assert ei.value.status is None
    assert "apt-get install uidmap" in ei.value.hint


def test_spawn_wait_all_reaps_every_helper_and_raises_the_first_failure(tmp_path):
    marker = tmp_path / "second-ran"
    with pytest.raises(HelperFailed) as ei:
        hosttools.spawn_wait_all([(["/bin/sh", "-c", "exit 4"], "first"),
                                  (["/bin/sh", "-c", f"sleep 0.2; touch {marker}; exit 5"], "second")])
    assert ei.value.desc == "first"
    assert marker.exists()           # the second one was waited for, not abandoned
    assert _zombie_children() == []  # and both were reaped


def _zombie_children() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                out.append(int(d))
    return out


def test_helpers_start_with_default_sigpipe():
    # Python ignores SIGPIPE; pasta (and others) must not inherit that
    with pytest.raises(HelperFailed) as ei:
        hosttools.spawn_wait(["/bin/sh", "-c", "grep SigIgn /proc/self/status >&2; exit 1"], "sh")
    ignored = int(ei.value.stderr.split()[-1], 16)
    assert not ignored & (1 << (13 - 1))  # SIGPIPE is 13


def test_package_for():
    assert hosttools.package_for("pasta") == "passt"
    assert hosttools.package_for("qemu-aarch64-static") == "qemu-user-static"
    assert hosttools.package_for("qemu-system-x86_64") == "qemu-system-x86"


def test_spawn_capture_restores_sigpipe_for_the_program():
    """Python ignores SIGPIPE; a helper must not inherit that (pasta --version refuses to run)."""
    import signal

    from rootless import hosttools

    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    out = hosttools.spawn_capture(["/bin/cat", "/proc/self/status"], "cat")
    ign = int(next(l for l in out.decode().splitlines() if l.startswith("SigIgn:")).split()[1], 16)
    assert not ign & (1 << (signal.SIGPIPE - 1))

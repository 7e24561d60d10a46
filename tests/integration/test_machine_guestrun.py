"""vmhost.guestrun (what runs ``rootless ARGV`` in the guest): the exit status
passes through, and the command ends when the host side goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

FAKE_CLI = """
import os, signal, sys, time
import rootless.cli.main as m
import vmhost.guestrun as g

def fake(argv):
    if argv[0] == "exit":
        return int(argv[1])
    signal.signal(signal.SIGINT, lambda *a: os._exit(42))
    print("started", flush=True)
    time.sleep(60)
    return 0

m.main = fake
sys.exit(g.main(sys.argv[1:]))
"""


def _run(*args, **kw):
    return subprocess.Popen([sys.executable, "-c", FAKE_CLI, *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            **kw)


def test_exit_status_passes_through():
    p = _run("exit", "7", stdout=subprocess.PIPE)
    p.communicate(timeout=30)
    assert p.returncode == 7


def test_the_command_gets_sigint_when_the_reader_goes_away():
    p = _run("serve", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"started\n"
    t = time.monotonic()
    p.stdout.close()
    p.stderr.close()
    assert p.wait(timeout=30) == 42
    assert time.monotonic() - t < 5


def test_signals_are_passed_on():
    p = _run("serve", stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"started\n"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 42
    p.stdout.close()


def test_the_real_cli_runs():
    cp = subprocess.run([sys.executable, "-m", "vmhost.guestrun", "version"], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert cp.returncode == 0 and "Version:" in cp.stdout
    cp = subprocess.run([sys.executable, "-m", "vmhost.guestrun", "no-such-command"], capture_output=True,
                        text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert cp.returncode == 125 and "is not a rootless command" in cp.stderr

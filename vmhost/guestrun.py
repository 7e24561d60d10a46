"""Runs in the guest: ``python3 -m vmhost.guestrun ARGV...`` = ``rootless ARGV``
that also ends when the host side goes away.

Without a TTY, sshd does not signal a command whose client disconnected
(Ctrl-C on the host ends the local ssh, not the remote ``rootless run``): the
container would keep running in the VM. So the command runs in a child
process while this parent watches its stdout and stderr pipes; when the
reader of either is gone (POLLERR: the session was closed) the child gets
SIGINT (``run`` passes it to the container, as Docker's sig-proxy does), then
SIGTERM and SIGKILL if it does not end. Signals sent to this process are
passed on too. The exit status is the child's.
"""

from __future__ import annotations

import os
import select
import signal
import sys

GRACE = (10.0, 5.0)  # seconds after SIGINT, then after SIGTERM


def _status(st: int) -> int:
    return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)


def main(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        rc = 125
        try:
            from rootless.cli.main import main as cli

            rc = cli(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
            os._exit(rc if isinstance(rc, int) else 1)

    def relay(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, relay)
    # SIGCHLD wakes the poll up at once (no polling delay on the exit status)
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    for fd in (1, 2):
        try:
            os.fstat(fd)
            poller.register(fd, 0)  # POLLERR/POLLHUP are always reported
        except OSError:
            pass
    gone_at = None
    step = 0
    import time

    while True:
        try:
            done, st = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 125
        if done:
            return _status(st)
        if gone_at is None:
            events = poller.poll(1000)
            try:
                os.read(rfd, 512)
            except BlockingIOError:
                pass
            if any(fd != rfd and ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for fd, ev in events):
                gone_at = time.monotonic()
                relay(signal.SIGINT, None)
        else:
            time.sleep(0.1)
            if step < len(GRACE) and time.monotonic() - gone_at > GRACE[step]:
                relay(signal.SIGTERM if step == 0 else signal.SIGKILL, None)
                gone_at = time.monotonic()
                step += 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

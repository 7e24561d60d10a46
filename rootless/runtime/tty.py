"""-it: the terminal side of a container's PTY.

The PTY lives in the container's devpts (opened by the container's first
process, the master handed to the monitor and the CLI over a unix socket).
Here: raw mode for the user's terminal, window size (now and on SIGWINCH),
and the relay of keystrokes with Docker's detach keys (ctrl-p ctrl-q).
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

DETACH_KEYS = b"\x10\x11"   # ctrl-p ctrl-q
_TIOCGWINSZ = 0x5413
_TIOCSWINSZ = 0x5414


def parse_detach_keys(spec: str) -> bytes:
    """Docker's --detach-keys syntax: "ctrl-p,ctrl-q", "ctrl-a,x"."""
    from rootless.errors import UsageError

    out = b""
    for k in spec.split(","):
        k = k.strip().lower()
        if k.startswith("ctrl-") and len(k) == 6:
            c = k[5]
            if "a" <= c <= "z":
                out += bytes([ord(c) - ord("a") + 1])
                continue
            special = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}
            if c in special:
                out += bytes([special[c]])
                continue
        elif len(k) == 1:
            out += k.encode()
            continue
        raise UsageError(f"invalid detach keys {spec!r}", hint="e.g. --detach-keys ctrl-p,ctrl-q")
    return out


def get_winsize(fd: int) -> bytes | None:
    import fcntl

    try:
        return fcntl.ioctl(fd, _TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def set_winsize(fd: int, ws: bytes | None) -> None:
    import fcntl

    if ws:
        try:
            fcntl.ioctl(fd, _TIOCSWINSZ, ws)
        except OSError:
            pass


@contextmanager
def raw_terminal(fd: int):
    """Put the user's terminal in raw mode (if it is one) and restore it afterwards."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class DetachFilter:
    """Finds the detach sequence in the keystroke stream (holds a partial match)."""

    def __init__(self, keys: bytes = DETACH_KEYS):
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on, detach?)"""
        out = b""
        for b in data:
            ch = bytes([b])
            cand = self.held + ch
            if self.keys.startswith(cand):
                if cand == self.keys:
                    self.held = b""
                    return out, True
                self.held = cand
                continue
            out += self.held
            self.held = b""
            if self.keys.startswith(ch):
                self.held = ch
            else:
                out += ch
        return out, False


def relay(master: int, *, stdin: int = 0, stdout: int | None = None, stop_fd: int | None = None,
          detach_keys: bytes = DETACH_KEYS) -> str:
    """Copy stdin -> master (and master -> stdout when given) until done.

    Returns "detached" (the keys were typed), "exited" (``stop_fd`` became
    readable: the monitor reports the exit) or "closed" (the PTY closed).
    """
    import select

    filt = DetachFilter(detach_keys) if detach_keys else None
    old = signal.getsignal(signal.SIGWINCH)

    def winch(_n, _f):
        set_winsize(master, get_winsize(stdin))

    if os.isatty(stdin):
        signal.signal(signal.SIGWINCH, winch)
        set_winsize(master, get_winsize(stdin))
    poller = select.poll()
    stdin_open = True
    poller.register(stdin, select.POLLIN)
    if stdout is not None:
        poller.register(master, select.POLLIN)
    if stop_fd is not None:
        poller.register(stop_fd, select.POLLIN)
    try:
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == stop_fd:
                    return "exited"
                if fd == master:
                    try:
                        data = os.read(master, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        return "closed"
                    _write_all(stdout, data)
                    continue
                if fd == stdin:
                    try:
                        data = os.read(stdin, 4096)
                    except OSError:
                        data = b""
                    if not data:
                        poller.unregister(stdin)
                        stdin_open = False
                        if stdout is None and stop_fd is None:
                            return "closed"
                        continue
                    if filt is not None:
                        data, detach = filt.feed(data)
                        if data:
                            _write_all(master, data)
                        if detach:
                            return "detached"
                    else:
                        _write_all(master, data)
    finally:
        if os.isatty(stdin):
            signal.signal(signal.SIGWINCH, old)
        _ = stdin_open


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        except OSError:
            return
        data = data[n:]

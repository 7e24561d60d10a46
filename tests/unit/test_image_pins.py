"""Pins of the store (rootless.image.locks): a name pin keeps GC's claim away; the pins a forked
child took and handed over (as run_in_userns(..., pins=) does) stay held after the child is gone."""

import fcntl
import os
import socket

from rootless.image.locks import Pins, claim


def _claimable(path) -> bool:
    fd = claim(path)
    if fd is None:
        return False
    os.close(fd)
    return True


def test_a_reserved_name_is_not_claimable_until_released(tmp_path):
    name = tmp_path / "locks" / "pin-layer-aa"
    pins = Pins()
    pins.reserve(name)
    assert not _claimable(name)
    pins.release()
    assert _claimable(name)


def test_pins_a_child_hands_over_outlive_it(tmp_path):
    a, b = tmp_path / "locks" / "pin-blob-1", tmp_path / "locks" / "pin-layer-2"
    mine = Pins()
    mine.reserve(a)                 # pinned here too: the child's copy of it is not kept twice
    p_sock, c_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            p_sock.close()
            child = Pins()
            child.reserve(a)
            child.reserve(b)
            child.hand_over(c_sock)
            code = 0
        finally:
            os._exit(code)
    c_sock.close()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not _claimable(b), "the child is gone, its pin is in flight"
    mine.take_over(p_sock)
    mine.take_over(p_sock)          # nothing more queued: returns at once
    p_sock.close()
    assert set(mine.fds) == {str(a), str(b)}
    assert all(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for fd in mine.fds.values())
    assert not _claimable(a) and not _claimable(b)
    mine.release()
    assert _claimable(a) and _claimable(b), "a pin outlived its release (a descriptor kept twice)"

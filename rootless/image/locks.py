"""File locks, pins, atomic writes and staging directories of the store."""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path


class FileLock:
    """``with FileLock(path):`` an exclusive (or shared) flock on a lock file."""

    def __init__(self, path: Path, shared: bool = False):
        self.path = Path(path)
        self.shared = shared
        self.fd = -1

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def try_exclusive(path: Path) -> int | None:
    """Open ``path`` and take an exclusive flock without waiting: the fd, or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    return _exclusive_now(fd)


def _exclusive_now(fd: int) -> int | None:
    """``fd`` once it holds an exclusive flock taken without waiting; else None (``fd`` closed)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def claim(path: Path) -> int | None:
    """GC's side of a name pin: an exclusive flock on ``path`` (created if missing) without
    waiting; the fd, or None when somebody pins the name. Call it under the store lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _exclusive_now(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))


class Pins:
    """Shared flocks on blobs/layers in use: GC skips what someone pins.

    ``pin(path)`` locks an existing blob file / layer.json. ``reserve(path)``
    locks a *name* (``locks/pin-blob-<hex>``, ``locks/pin-layer-<hex>``)
    whether or not the content exists yet: taken BEFORE a blob or layer is
    made visible, it keeps GC away from it until the image is recorded. The
    locks die with the process (a SIGKILLed pull leaves no live pin).
    ``hand_over``/``take_over`` move pins a namespace child took to its parent
    (``userns.run_in_userns(..., pins=)``).
    """

    def __init__(self):
        self.fds: dict[str, int] = {}

    def reserve(self, path: Path) -> None:
        """Pin the name ``path`` (a lock file, created if missing)."""
        key = str(path)
        if key in self.fds:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            # GC unlinks a name file while it holds it exclusively: then ours is stale, take the new one
            try:
                st = os.stat(path, follow_symlinks=False)
                fst = os.fstat(fd)
                if (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fds[key] = fd

    # handing pins from a namespace child to its parent ------------------------
    # A flock belongs to the open file description, not to the process: a descriptor sent over a
    # unix socket (SCM_RIGHTS) holds the same lock. So a child that reserves a name before it makes
    # the content visible hands the pin to its parent, which holds it after the child is gone.

    _BATCH = 200   # descriptors per message (the kernel takes at most 253)

    def hand_over(self, sock) -> None:
        """(child) Send every pin to the other end of the unix socket ``sock`` (see ``take_over``);
        they stay held here too until this process closes them or exits."""
        import socket

        items = list(self.fds.items())
        for i in range(0, len(items), self._BATCH):
            batch = items[i:i + self._BATCH]
            socket.send_fds(sock, ["\0".join(k for k, _ in batch).encode("utf-8", "surrogateescape")],
                            [fd for _, fd in batch])

    def take_over(self, sock) -> None:
        """(parent) Hold the pins a child sent with ``hand_over`` (everything queued on ``sock``)."""
        import array
        import socket

        while True:
            # not socket.recv_fds: Python 3.11's ignores its flags (it would wait here)
            try:
                data, anc, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(self._BATCH * 4),
                                               socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            fds = array.array("i")
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            fds = list(fds)
            if not data and not fds:
                return
            keys = data.decode("utf-8", "surrogateescape").split("\0")
            for key, fd in zip(keys, fds):
                if key in self.fds:
                    os.close(fd)
                else:
                    self.fds[key] = fd
            for fd in fds[len(keys):]:
                os.close(fd)

    def release(self) -> None:
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp file next to ``path``, fsync, rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class Staging:
    """A private staging directory ``tmp/<pid>-<rand>`` (flocked while alive)."""

    def __init__(self, tmp_root: Path):
        tmp_root.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        # locked BEFORE it shows under its real name: others never see it unlocked (stale)
        hidden = tmp_root / f".new-{name}"
        os.mkdir(hidden, 0o700)
        self.fd = os.open(hidden, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.path = tmp_root / name
        os.rename(hidden, self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def stale_staging(tmp_root: Path) -> list[Path]:
    """Staging dirs whose owner is gone (their flock is free)."""
    out = []
    try:
        entries = list(os.scandir(tmp_root))
    except FileNotFoundError:
        return out
    import time

    for e in entries:
        if not e.is_dir(follow_symlinks=False):
            continue
        if e.name.startswith("."):
            # being created (or its creator died between mkdir and rename: then it is empty and old)
            try:
                if time.time() - e.stat(follow_symlinks=False).st_mtime > 3600:
                    os.rmdir(e.path)
            except OSError:
                pass
            continue
        fd = try_exclusive(Path(e.path))
        if fd is not None:
            os.close(fd)
            out.append(Path(e.path))
    return out

"""An exclusive lock on a file, on POSIX hosts and on Windows.

    with locked(path):
        ...

fcntl.flock where there is fcntl (Linux, macOS), msvcrt.locking on Windows;
imported when used, so importing vmhost needs neither.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def locked(path: Path):
    f = open(path, "a+b")
    try:
        if os.name == "nt":
            import msvcrt
            import time

            f.seek(0)
            while True:
                try:
                    msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:      # LK_LOCK gives up after 10 s: keep waiting
                    time.sleep(0.1)
            try:
                yield f
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield f
    finally:
        f.close()

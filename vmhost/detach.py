"""Start a process that outlives its parent, on POSIX hosts and on Windows.

POSIX: a new session, stdin from /dev/null, output to a log file, no
inherited descriptors. Windows: DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
(no console, not ended by the parent's Ctrl-C) with the same redirections.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def detach_options(system_is_windows: bool) -> dict:
    """subprocess.Popen keyword arguments that detach the child (pure)."""
    if system_is_windows:
        flags = 0x00000008 | 0x00000200   # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP
        return {"creationflags": flags, "close_fds": True}
    return {"start_new_session": True, "close_fds": True}


def spawn_detached(argv: list[str], env: dict[str, str], *, log: Path | None = None) -> int:
    """Start ``argv`` detached; returns its pid (not waited for)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             **detach_options(os.name == "nt"))
    finally:
        if log is not None:
            out.close()
    return p.pid

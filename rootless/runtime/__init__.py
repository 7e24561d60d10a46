"""The container runtime: spec -> plan -> execution, the monitor, state, tty.

``ROOTLESS_TRACE=1`` prints a time stamp (ms since the process started) for
each phase of a start on stderr: the tool for keeping `run` fast.
"""

import os as _os

_TRACE = _os.environ.get("ROOTLESS_TRACE") == "1"


def trace(label: str) -> None:
    if _TRACE:
        import time

        t = time.clock_gettime(time.CLOCK_BOOTTIME) * 1000.0
        _os.write(2, f"[trace {_os.getpid()} {t:.1f}ms] {label}\n".encode())

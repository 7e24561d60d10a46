"""A small synchronous QMP client (JSON lines on QEMU's control socket).

    with QMP(path) as q:
        q.command("query-status")            -> {"running": True, "status": "running", ...}
        q.hmp("hostfwd_add net0 tcp:127.0.0.1:8080-:80")   -> "" or QEMU's error text

Only what rootless needs: the greeting, ``qmp_capabilities``, commands and
their replies (events in between are skipped).
"""

from __future__ import annotations

import json
import socket
import time

from rootless.errors import MachineError


class QMPError(MachineError):
    pass


class QMP:
    def __init__(self, path: str, timeout: float = 10.0):
        self.path = str(path)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._buf = b""

    def __enter__(self) -> "QMP":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            raise QMPError(f"cannot connect to the machine's control socket {self.path}: {e.strerror or e}",
                           hint="is the machine running? (rootless machine list)") from None
        self.sock = s
        greeting = self._read()
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _read(self) -> dict:
        assert self.sock is not None
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise QMPError("timed out waiting for QEMU's control socket")
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise QMPError("timed out waiting for QEMU's control socket") from None
            except OSError as e:
                raise QMPError(f"QEMU's control socket failed: {e}") from None
            if not chunk:
                raise QMPError("QEMU closed its control socket")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise QMPError(f"bad QMP message: {line[:200]!r}") from None

    def command(self, name: str, **arguments):
        if self.sock is None:
            raise QMPError("not connected")
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise QMPError(f"QEMU's control socket failed: {e}") from None
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"QEMU refused {name}: {err.get('desc', err)}")
            # an asynchronous event: skip it

    def hmp(self, line: str) -> str:
        """A human monitor command; returns its output ("" on success for most)."""
        return self.command("human-monitor-command", **{"command-line": line}) or ""

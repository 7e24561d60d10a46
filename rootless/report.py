"""How the library tells the user what it is doing, without printing itself.

The CLI makes a Reporter (``make_reporter``) and passes it down. Library code
calls ``info``/``warn``/``progress``; a TTY gets a live per-item progress
display, anything else gets plain lines, and a quiet reporter says nothing.
"""

from __future__ import annotations

import threading
import time


class Reporter:
    """Silent reporter; also the interface."""

    def info(self, msg: str) -> None:
        pass

    def warn(self, msg: str) -> None:
        pass

    def progress(self, item: str, status: str, current: int = 0, total: int = 0) -> None:
        pass

    def done(self) -> None:
        """Finish the live display: what it shows stays as plain lines and is forgotten.

        A forked child that reports (the pull's namespace child) has a copy of the display:
        only one process may draw. The parent calls done() before the fork, the child draws
        its own items and calls done() before it exits, and the parent goes on below that.
        """


class PlainReporter(Reporter):
    """One line per event; progress only on status changes (logs, CI)."""

    def __init__(self, stream):
        self.stream = stream
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def _line(self, s: str) -> None:
        with self._lock:
            try:
                self.stream.write(s + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def info(self, msg: str) -> None:
        self._line(msg)

    def warn(self, msg: str) -> None:
        self._line(f"WARNING: {msg}")

    def progress(self, item: str, status: str, current: int = 0, total: int = 0) -> None:
        if self._last.get(item) == status:
            return
        self._last[item] = status
        self._line(f"{item}: {status}")


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n:.1f}TB"


class TTYReporter(PlainReporter):
    """Docker-style live lines: one per item, rewritten in place."""

    def __init__(self, stream):
        super().__init__(stream)
        self._items: dict[str, str] = {}
        self._order: list[str] = []
        self._drawn = 0
        self._last_draw = 0.0

    def info(self, msg: str) -> None:
        with self._lock:
            self._clear()
            self.stream.write(msg + "\n")
            self._draw()

    def warn(self, msg: str) -> None:
        self.info(f"WARNING: {msg}")

    def progress(self, item: str, status: str, current: int = 0, total: int = 0) -> None:
        text = f"{item}: {status}"
        if total:
            width = 30
            filled = int(width * min(current, total) / total)
            text += f" [{'=' * filled}{'>' if filled < width else ''}{' ' * max(0, width - filled - 1)}] {_human(current)}/{_human(total)}"
        elif current:
            text += f" {_human(current)}"
        with self._lock:
            if item not in self._items:
                self._order.append(item)
            changed = self._items.get(item, "").split(" [")[0] != text.split(" [")[0]
            self._items[item] = text
            now = time.monotonic()
            if changed or now - self._last_draw > 0.1:
                self._last_draw = now
                self._clear()
                self._draw()

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}A\x1b[J")
            self._drawn = 0

    def _draw(self) -> None:
        for item in self._order:
            self.stream.write(self._items[item][:200] + "\n")
        self._drawn = len(self._order)
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def done(self) -> None:
        with self._lock:
            self._clear()
            self._draw()
            self._items.clear()
            self._order.clear()
            self._drawn = 0


def make_reporter(stream, tty: bool) -> Reporter:
    if stream is None:
        return Reporter()
    return TTYReporter(stream) if tty else PlainReporter(stream)

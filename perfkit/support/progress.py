"""Progress display for long work: what is running, how many cases are done and left, and an estimate of the time left.

On a terminal it redraws one bar line in place; otherwise (CI logs, pipes) it prints one line per finished case."""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts cases through `start(label)` / `done(status)`; writes to `stream` (stderr by default)."""

    def __init__(self, total: int, title: str = "", stream=None, enabled: bool = True, width: int = 24):
        self.total = total
        self.title = title
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.width = width
        self.count = 0
        self.started = time.monotonic()
        self.label = ""
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.statuses: dict[str, int] = {}

    def _eta(self) -> str:
        if not self.count:
            return "?"
        elapsed = time.monotonic() - self.started
        return _clock(elapsed / self.count * (self.total - self.count))

    def _bar(self) -> str:
        filled = int(self.width * self.count / self.total) if self.total else self.width
        return "#" * filled + "." * (self.width - filled)

    def start(self, label: str) -> None:
        self.label = label
        if self.enabled and self.tty:
            line = (f"\r{self.title} [{self._bar()}] {self.count}/{self.total} "
                    f"elapsed {_clock(time.monotonic() - self.started)} left ~{self._eta()} | {label}")
            self.stream.write(line[:200].ljust(120))
            self.stream.flush()

    def done(self, status: str, detail: str = "") -> None:
        self.count += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.enabled and not self.tty:
            width = len(str(self.total))
            self.stream.write(f"{self.title} [{self.count:>{width}}/{self.total}] left ~{self._eta()} "
                              f"{status:<9} {self.label}{'  ' + detail if detail else ''}\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
            end = "\r" if self.tty else ""
            self.stream.write(f"{end}{self.title} {self.count}/{self.total} cases in "
                              f"{_clock(time.monotonic() - self.started)}" + (f" ({counts})" if counts else "")
                              + " " * 40 + "\n")
            self.stream.flush()

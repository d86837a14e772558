"""A one-line progress bar with rate and ETA on a terminal; silent when output is piped."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, enabled: bool = True, stream=None, unit: str = "files"):
        self.stream = stream or sys.stderr
        self.enabled = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.total, self.unit = total, unit
        self.done = 0
        self.counts: dict[str, int] = {}
        self.started = time.monotonic()
        self.current = ""

    def start(self, label: str) -> None:
        self.current = label
        self._draw()

    def advance(self, status: str = "done") -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        eta = f"{(self.total - self.done) / rate:,.0f}s" if rate else "?"
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        counts = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit} "
                f"{rate:.2f}/s eta {eta} {counts} {self.current[:30]}")
        self.stream.write(line.ljust(100)[:120])
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

"""A progress bar with an ETA for the command line, without a dependency.

On a terminal it redraws one line on stderr (at most ten times a second) and clears it around
the log lines printed through `Progress.print`; elsewhere (a log file, CI) it prints a line at
most every `interval` seconds (and a last one when the work ends, if it printed any), so a long
job shows it is alive without flooding its log and a short one prints nothing.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_seconds(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class Progress:
    """`progress(done, total)` reports work done; `progress.print(msg)` prints a log line."""

    def __init__(self, label: str, stream: TextIO | None = None, unit: str = "steps",
                 width: int = 24, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, interval: float = 10.0) -> None:
        self.label, self.unit, self.width, self.clock = label, unit, width, clock
        self.stream = sys.stderr if stream is None else stream
        self.tty = (getattr(self.stream, "isatty", lambda: False)() if tty is None else tty)
        self._start: tuple[float, int] | None = None  # (time, done) of the first report
        self._last_draw = -1.0
        self.interval = interval
        self._last_line: float | None = None  # when the last non-terminal line was printed
        self._printed = False
        self._line = ""
        self.done = 0
        self.total = 0

    def restart(self, label: str, unit: str) -> None:
        """Report another piece of work from now on (its elapsed time and ETA its own)."""
        self.label, self.unit = label, unit
        self._start = None
        self.done = self.total = 0

    def eta(self) -> float | None:
        """Seconds left at the rate since the first report (None until there is a rate)."""
        if self._start is None or self.done <= self._start[1]:
            return None
        t0, d0 = self._start
        rate = (self.done - d0) / max(self.clock() - t0, 1e-9)
        return max(self.total - self.done, 0) / rate

    def text(self) -> str:
        total = max(self.total, 1)
        frac = min(max(self.done / total, 0.0), 1.0)
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = self.clock() - self._start[0] if self._start else 0.0
        eta = self.eta()
        left = "?" if eta is None else format_seconds(eta)
        return (f"{self.label} [{bar}] {self.done}/{self.total} {self.unit} {100 * frac:3.0f}% "
                f"{format_seconds(elapsed)} elapsed, ETA {left}")

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self._start is None:
            self._start = (now, done)
        self.done, self.total = int(done), int(total)
        if self.tty:
            if now - self._last_draw >= 0.1 or done >= total:
                self._draw()
                self._last_draw = now
            return
        if self._last_line is None:
            self._last_line = now
        if now - self._last_line >= self.interval or (done >= total and self._printed):
            print(self.text(), file=self.stream, flush=True)
            self._last_line, self._printed = now, done < total

    def _draw(self) -> None:
        line = self.text()
        pad = " " * max(len(self._line) - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._line = line

    def clear(self) -> None:
        if self.tty and self._line:
            self.stream.write("\r" + " " * len(self._line) + "\r")
            self.stream.flush()
            self._line = ""

    def print(self, msg: str, file: TextIO | None = None) -> None:
        """Print a log line (stdout by default) above the bar."""
        self.clear()
        print(msg, file=sys.stdout if file is None else file, flush=True)
        if self.tty and self._start is not None:
            self._draw()

    def close(self) -> None:
        """End the bar's line (on a terminal) so that what follows starts on its own."""
        if self.tty and self._line:
            self.stream.write("\n")
            self.stream.flush()
            self._line = ""

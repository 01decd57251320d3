"""Live progress of `matpipe run`: rows done of the rows to do (across shards), rate, time left and
failures so far — a bar on a terminal, a plain line every few seconds when stderr is a file or a pipe.

The job calls `start(total)` once it knows how many rows it will process, `advance(rows, failed)` for
every batch the driver writes (rows arrive in batches of a few, so the bar moves long before a
1000-row shard commits), and `finish()` at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO

PLAIN_INTERVAL_S = 10.0


class JobProgress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, rows: int, failed: int) -> None: ...
    def finish(self) -> None: ...


def format_duration(seconds: float) -> str:
    """'45s', '12m05s', '3h02m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class RowProgress:
    """Counts rows and failures, and renders them (rich bar on a TTY, plain lines otherwise)."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None,
                 interval_s: float = PLAIN_INTERVAL_S, clock=time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.interval_s = interval_s
        self.clock = clock
        self.total = 0
        self.done = 0
        self.failed = 0
        self._started = 0.0
        self._last_line = 0.0
        self._bar = None
        self._task = None

    # -- figures ----------------------------------------------------------------------------------

    def rate(self) -> float:
        elapsed = self.clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        """'rows 120/1000 (12%) · 2.10 rows/s · 7m00s left · 3 failed'."""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        eta = self.eta_s()
        left = format_duration(eta) + " left" if eta is not None else "time left unknown"
        return f"rows {self.done}/{self.total}{share} · {self.rate():.2f} rows/s · {left} · {self.failed} failed"

    # -- JobProgress ------------------------------------------------------------------------------

    def start(self, total: int) -> None:
        self.total, self._started = total, self.clock()
        self._last_line = self._started
        if not total:
            return
        if self.interactive:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn("run"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[rate]} rows/s"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[failed]} failed"),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("rows", total=total, rate="0.00", failed=0)
        else:
            print(f"rows 0/{total} to process", file=self.stream, flush=True)

    def advance(self, rows: int, failed: int) -> None:
        self.done += rows
        self.failed += failed
        if self._bar is not None:
            self._bar.update(self._task, advance=rows, rate=f"{self.rate():.2f}", failed=self.failed)
            return
        now = self.clock()
        if self.total and (now - self._last_line >= self.interval_s or self.done >= self.total):
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

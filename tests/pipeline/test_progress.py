"""`matpipe run`'s live progress: rows done of the total, rate, time left and failures, on a bar or as lines."""
from __future__ import annotations

import io

from pipeline.progress import RowProgress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_give_rows_rate_time_left_and_failures():
    stream, clock = io.StringIO(), FakeClock()
    progress = RowProgress(stream, interactive=False, interval_s=10, clock=clock)
    progress.start(1000)
    clock.now += 5
    progress.advance(10, 0)       # within the interval: no line yet
    clock.now += 5
    progress.advance(10, 2)       # 20 rows in 10 s
    clock.now += 40
    progress.advance(80, 1)       # 100 rows in 50 s: 2 rows/s, 900 left = 7m30s
    lines = stream.getvalue().splitlines()
    assert lines[0] == "rows 0/1000 to process"
    assert lines[1] == "rows 20/1000 (2%) · 2.00 rows/s · 8m10s left · 2 failed"
    assert lines[2] == "rows 100/1000 (10%) · 2.00 rows/s · 7m30s left · 3 failed"
    progress.finish()


def test_the_last_row_always_prints_a_line():
    stream, clock = io.StringIO(), FakeClock()
    progress = RowProgress(stream, interactive=False, interval_s=3600, clock=clock)
    progress.start(4)
    clock.now += 2
    progress.advance(4, 0)
    assert stream.getvalue().splitlines()[-1].startswith("rows 4/4 (100%) · 2.00 rows/s · 0s left")


def test_a_terminal_gets_a_bar(monkeypatch):
    stream = io.StringIO()
    progress = RowProgress(stream, interactive=True)
    progress.start(3)
    progress.advance(3, 1)
    progress.finish()
    assert "3/3" in stream.getvalue() and "1 failed" in stream.getvalue()


def test_durations_read_like_a_clock():
    assert [format_duration(s) for s in (0, 45, 725, 10_920)] == ["0s", "45s", "12m05s", "3h02m"]

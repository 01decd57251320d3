"""The exit rule shared by every command and the flow, and the capped list of failed rows."""
from __future__ import annotations

import argparse

import pyarrow as pa
import pytest

from pipeline.failures import failed_rows, split_error
from pipeline.outcome import add_allow_failures, outcome


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_allow_failures(parser)
    return parser.parse_args(list(argv)).allow_failures


def test_failed_rows_make_the_status_non_zero_unless_allowed():
    counts = {"ok": 95, "failed": 5, "skipped": 0}
    assert outcome(counts).exit_status == 1
    assert outcome(counts, parse("--allow-failures")).exit_status == 0           # any share
    assert outcome(counts, parse("--allow-failures", "0.05")).exit_status == 0   # up to 5 %
    assert outcome(counts, parse("--allow-failures", "0.04")).exit_status == 1
    assert outcome({"ok": 3, "skipped": 2}).exit_status == 0                     # skipped is not failed
    message = outcome(counts).message({"decode": 4, "mask": 1})
    assert message.startswith("5 of 100 rows failed (5.0%") and "decode 4, mask 1" in message
    assert "--allow-failures" in message


def test_allow_failures_rejects_ratios_outside_0_1():
    with pytest.raises(SystemExit):
        parse("--allow-failures", "5")
    assert parse() == 0.0


def test_failed_rows_are_listed_with_stage_and_message_and_capped():
    table = pa.table({"id": [f"r{i}" for i in range(30)],
                      "status": ["failed" if i % 2 else "ok" for i in range(30)],
                      "error": [f"decode: bad file {i}" if i % 2 else None for i in range(30)]})
    listed = failed_rows(table, limit=10)
    assert listed.total == 15 and listed.omitted == 5
    assert (listed.rows[0].id, listed.rows[0].stage, listed.rows[0].message) == ("r1", "decode", "bad file 1")
    assert listed.lines()[-1] == "… and 5 more failed row(s)"
    assert split_error("no stage here") == ("", "no stage here")

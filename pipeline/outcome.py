"""One rule for how a run ends, shared by every command, `flows.ray_entry` and the Prefect flow.

A run that could not do its work (bad configuration, missing input, an output holding another job)
exits 2 with a one-line error, like a usage error. A run that did its work but left failed rows exits 1,
unless the user allowed failures: `--allow-failures` allows any share, `--allow-failures 0.05` up to 5 % of the
rows. Skipped rows (duplicates, holes too large to trust) are not failures. The Prefect flow ends
Failed under the same rule, after publishing its report.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

EXIT_OK = 0
EXIT_ROWS_FAILED = 1  # more rows failed than allowed
EXIT_CANNOT_RUN = 2   # bad configuration, missing input, no checkpoint for engine 'mat', ...

ALLOW_ALL = 1.0


class RowsFailedError(RuntimeError):
    """More rows failed than the run allows; the message says how many and why."""


@dataclass(frozen=True)
class Outcome:
    """How many rows failed of how many, against the share allowed."""

    failed: int
    total: int
    allowed_ratio: float = 0.0

    @property
    def ratio(self) -> float:
        return self.failed / self.total if self.total else 0.0

    @property
    def acceptable(self) -> bool:
        return self.failed == 0 or self.ratio <= self.allowed_ratio

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.acceptable else EXIT_ROWS_FAILED

    def message(self, reasons: Mapping[str, int] | None = None) -> str:
        """One line for people: '2 of 6 rows failed (33.3 %; allowed 0 %): decode 2'."""
        if not self.failed:
            return f"all {self.total} rows done without failures"
        allowed = ("any share allowed" if self.allowed_ratio >= ALLOW_ALL
                   else f"allowed {self.allowed_ratio:.1%}")
        text = f"{self.failed} of {self.total} rows failed ({self.ratio:.1%}; {allowed})"
        if reasons:
            top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:5]
            text += ": " + ", ".join(f"{reason} {count}" for reason, count in top)
        if not self.acceptable:
            text += " — see the output's failed rows; pass --allow-failures [RATIO] to accept them"
        return text


def outcome(counts: Mapping[str, int], allowed_ratio: float = 0.0) -> Outcome:
    """The Outcome of status counts such as {"ok": 5, "failed": 1, "skipped": 0}."""
    return Outcome(int(counts.get("failed", 0)), int(sum(counts.values())), allowed_ratio)


def check_ratio(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"the allowed failure ratio must be in [0, 1], got {value}")
    return value


def _ratio_argument(text: str) -> float:
    try:
        return check_ratio(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_allow_failures(parser: argparse.ArgumentParser) -> None:
    """`--allow-failures [RATIO]` on a command: absent = 0, bare = any share, RATIO = up to that share."""
    parser.add_argument(
        "--allow-failures", nargs="?", type=_ratio_argument, const=ALLOW_ALL, default=0.0, metavar="RATIO",
        help="exit 0 even when rows failed: any share (bare flag) or up to RATIO of the rows (e.g. 0.05); "
             "by default any failed row makes the exit status 1 (2: the run could not start)",
    )

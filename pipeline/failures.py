"""The failed rows of a job output, for people: id, stage and message, capped with a count of the rest.

Error texts are written by the stages as "<stage>: <message>" (e.g. "decode: cannot identify image
file ..."); the report, the flow's markdown artifact and `matpipe run`'s summary all list them from here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class FailedRow:
    id: str
    stage: str
    message: str


@dataclass(frozen=True)
class FailedRows:
    """The first `limit` failed rows in output order, and how many more there are."""

    rows: list[FailedRow]
    omitted: int

    @property
    def total(self) -> int:
        return len(self.rows) + self.omitted

    def to_dict(self) -> dict:
        return {"rows": [asdict(row) for row in self.rows], "omitted": self.omitted}

    def lines(self) -> list[str]:
        """One `id [stage] message` line per listed row, then '… and N more' when capped."""
        lines = [f"{row.id} [{row.stage}] {row.message}" for row in self.rows]
        if self.omitted:
            lines.append(f"… and {self.omitted} more failed row(s)")
        return lines


def split_error(error: str) -> tuple[str, str]:
    """("decode", "cannot identify …") from "decode: cannot identify …"; ("", text) without a stage."""
    stage, separator, message = error.partition(":")
    if not separator or " " in stage.strip() or not stage.strip():
        return "", error.strip()
    return stage.strip(), message.strip()


def failed_rows(table: pa.Table, limit: int = DEFAULT_LIMIT) -> FailedRows:
    """The failed rows of an output table (columns id, status, error)."""
    failed = table.filter(pc.equal(table.column("status"), "failed")).select(["id", "error"])
    listed = []
    for row_id, error in zip(failed.column("id").to_pylist()[:limit], failed.column("error").to_pylist()[:limit]):
        stage, message = split_error(error or "")
        listed.append(FailedRow(str(row_id), stage or "unknown", message or "(no message)"))
    return FailedRows(listed, max(0, failed.num_rows - limit))

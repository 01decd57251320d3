"""What every stage shares: the batch format, row statuses, per-row errors, seeds and timing."""
from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

Batch = dict[str, np.ndarray]

PENDING, OK, FAILED, SKIPPED = "", "ok", "failed", "skipped"
NO_ALPHA = np.zeros((0, 0), np.uint8)
NO_IMAGE = np.zeros((0, 0, 3), np.uint8)
NO_HOLE = np.zeros((0, 0), bool)
FAULT_INJECTION_ENV = "MATPIPE_FAULT_INJECTION"


def objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding `values` as they are (np.array would stack equal-shape arrays)."""
    array = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        array[index] = value
    return array


def text(value: Any) -> str:
    """A string cell as str: Ray turns all-null string columns into float NaN, bytes stay bytes."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def row_count(batch: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def ensure_row_columns(batch: Batch) -> Batch:
    """Add `id`, `status` and `error` when a batch comes from elsewhere (e.g. `read_binary_files`)."""
    rows = row_count(batch)
    if "id" not in batch:
        batch["id"] = objects([text(p) for p in batch["path"]]) if "path" in batch else objects(
            [str(i) for i in range(rows)])
    for column in ("status", "error"):
        if column not in batch:
            batch[column] = objects([""] * rows)
        else:
            batch[column] = objects([text(value) for value in batch[column]])
    return batch


def stage_error(stage: str, exc: BaseException) -> str:
    """One line: which stage, which exception, why — what a person needs to triage a failed row."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{stage}: {type(exc).__name__}: {message}"[:500] if message else f"{stage}: {type(exc).__name__}"


def pending_rows(batch: Batch) -> list[int]:
    return [index for index, status in enumerate(batch["status"]) if text(status) == PENDING]


def fail_row(batch: Batch, index: int, reason: str) -> None:
    batch["status"][index] = FAILED
    batch["error"][index] = reason


def object_column(batch: Batch, name: str, fill: Any) -> np.ndarray:
    """The column `name` as a mutable object array, created with `fill` when absent."""
    if name in batch:
        return objects(list(batch[name]))
    return objects([fill] * row_count(batch))


def float_column(batch: Batch, name: str) -> np.ndarray:
    if name in batch:
        return np.asarray(batch[name], dtype=np.float64).copy()
    return np.full(row_count(batch), np.nan)


def row_seed(base_seed: int, row_id: str) -> int:
    """The row's seed: a hash of the job seed and the row id, so it does not depend on batching."""
    digest = hashlib.sha256(f"{base_seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@contextlib.contextmanager
def stage_timer(times: np.ndarray, rows: Sequence[int]) -> Iterator[None]:
    """Add the block's wall time to `times`, shared evenly between `rows`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if rows:
            share = (time.perf_counter() - start) / len(rows)
            for index in rows:
                times[index] = (0.0 if np.isnan(times[index]) else times[index]) + share


def run_stages(batch: Batch, stages: Sequence[Callable[[Batch], Batch]]) -> Batch:
    """Apply stages in order to one batch in this process."""
    for stage in stages:
        batch = stage(batch)
    return batch

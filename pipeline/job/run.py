"""Running the job: list the inputs, plan shards, stream pending shards through Ray Data, commit each.

`run_job(JobConfig) -> JobReport`. Ray is started locally (sized to the machine) unless an address is
given or Ray is already initialised. Pending shards go through one streaming pipeline per window of
`shards_per_pipeline` shards — fetch+decode (CPU tasks) → mask (actor pool) → inpaint (actor pool) →
metrics (actor pool) → encode (CPU tasks) — and the driver pulls finished rows with `iter_batches`,
streams them into per-shard Parquet writers and commits each shard as soon as its last row arrives.
Only metadata is materialised: images exist only as in-flight batches, bounded by Ray Data's
backpressure, so memory does not grow with the dataset.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import JobConfig
from pipeline.job.dataset import build_pipeline, window_table
from pipeline.job.engine import FALLBACK_BANNER, resolve_engine
from pipeline.job.errors import JobError
from pipeline.job.fit import fit_consistent_masks
from pipeline.job.plan import Plan, load_or_create_plan, open_output, summary_fields
from pipeline.job.resources import data_context, ray_session
from pipeline.job.summary import JobReport
from pipeline.output.layout import REPORT_FILE
from pipeline.output.lock import exclusive_driver
from pipeline.output.shards import ShardSpec, ShardStats, commit_shard, merge_stats
from pipeline.output.writer import ShardWriter
from pipeline.stages import consistent_fit_options

log = logging.getLogger(__name__)


def _split_by_shard(batch: dict[str, np.ndarray]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    shard_ids = np.asarray(batch["shard"])
    for shard_index in np.unique(shard_ids):
        rows = np.nonzero(shard_ids == shard_index)[0]
        if len(rows) == len(shard_ids):
            yield int(shard_index), batch
        else:
            yield int(shard_index), {name: column[rows] for name, column in batch.items()}


# Columns kept per shard for its statistics (not the image bytes).
_STATS_DROP = ("image", "mask", "mask_details", "source")


def _run_window(plan: Plan, shards: Sequence[ShardSpec],
                on_commit: Callable[[ShardStats], None] | None) -> int:
    """Stream `shards` through one pipeline; returns the rows committed."""
    by_index = {shard.index: shard for shard in shards}
    table = window_table(plan, shards)
    writers: dict[int, ShardWriter] = {}
    stats_parts: dict[int, list[pa.Table]] = {}
    started: dict[int, float] = {}
    committed_rows = 0
    try:
        with data_context(plan.config.execution):
            dataset = build_pipeline(plan, table, shards)
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                for shard_index, rows in _split_by_shard(batch):
                    shard = by_index[shard_index]
                    if shard_index not in writers:
                        writers[shard_index] = ShardWriter(plan.root, shard.name, plan.config.output)
                        stats_parts[shard_index], started[shard_index] = [], time.perf_counter()
                    written = writers[shard_index].write_batch(rows)
                    stats_parts[shard_index].append(written.drop_columns(list(_STATS_DROP)))
                    if writers[shard_index].rows == shard.rows:
                        committed_rows += _commit(plan, shard, writers.pop(shard_index),
                                                  stats_parts.pop(shard_index), started.pop(shard_index), on_commit)
                    elif writers[shard_index].rows > shard.rows:
                        raise JobError(f"{shard.name}: received more rows than it has ({shard.rows}); not committing")
        if writers:
            missing = ", ".join(f"{by_index[i].name} ({w.rows}/{by_index[i].rows} rows)" for i, w in writers.items())
            raise JobError(f"the pipeline ended before these shards were complete: {missing}")
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return committed_rows


def _commit(plan: Plan, shard: ShardSpec, writer: ShardWriter, parts: list[pa.Table], started: float,
            on_commit: Callable[[ShardStats], None] | None) -> int:
    files = writer.close()
    stats = ShardStats.from_table(shard, pa.concat_tables(parts), files, plan.config_hash,
                                  time.perf_counter() - started)
    commit_shard(plan.root, shard, stats)
    plan.manifest.states[shard.name] = "committed"
    plan.manifest.save(plan.root)
    log.info("committed %s: %d rows (%s)", shard.name, stats.rows,
             ", ".join(f"{k} {v}" for k, v in stats.counts.items()))
    if on_commit is not None:
        on_commit(stats)
    return stats.rows



def run_job(config: JobConfig, *, shards: Sequence[str] | None = None,
            on_commit: Callable[[ShardStats], None] | None = None) -> JobReport:
    """Run (or resume) the job described by `config`; returns its report.

    Committed shards of an earlier run with the same configuration are skipped without any model work;
    an output written with a different configuration is refused (ResumeConflictError).
    `shards` restricts the run to those shard names (orchestrators run one shard per task).
    `on_commit` is called on the driver after each shard commits (progress reporting).
    """
    started = time.perf_counter()
    engine = resolve_engine(config.engine)
    root = open_output(config)
    # One driver per output: held before a resume clears an interrupted run's temporary files.
    with exclusive_driver(root):
        return _run_locked(load_or_create_plan(config, engine, root), shards, on_commit, started)


def _run_locked(plan: Plan, shards: Sequence[str] | None, on_commit: Callable[[ShardStats], None] | None,
                started: float) -> JobReport:
    config, engine = plan.config, plan.engine
    markers = plan.manifest.refresh_states(plan.root)
    already = len(markers)
    pending = plan.manifest.pending()
    if shards is not None:
        known = {shard.name for shard in plan.manifest.shards}
        unknown = sorted(set(shards) - known)
        if unknown:
            raise JobError(f"unknown shard(s) {', '.join(unknown)}; this job has {len(known)} shards")
        wanted = set(shards)
        pending = [shard for shard in pending if shard.name in wanted]
    plan.manifest.save(plan.root)
    log.info("%d shards: %d committed, %d pending", len(plan.manifest.shards), already, len(pending))

    # Markers written by this run are the stats we just committed: no need to read every marker again
    # (on an object store that is one request per shard of the whole job).
    committed_now: dict[str, dict[str, Any]] = {}

    def record(stats: ShardStats) -> None:
        committed_now[stats.shard] = stats.to_dict()
        if on_commit is not None:
            on_commit(stats)

    processed = 0
    if pending:
        fit_options = consistent_fit_options(config.masks.method, config.masks.options)
        if fit_options is not None:
            plan.template_npz = fit_consistent_masks(plan, fit_options)
        with ray_session(config.execution):
            window = config.execution.shards_per_pipeline
            for start in range(0, len(pending), window):
                processed += _run_window(plan, pending[start:start + window], record)

    markers = {shard.name: markers.get(shard.name) or committed_now[shard.name]
               for shard in plan.manifest.shards if shard.name in markers or shard.name in committed_now}
    totals = merge_stats(markers.values())
    wall = time.perf_counter() - started
    report = JobReport(
        **summary_fields(plan), shards_total=len(plan.manifest.shards),
        shards_already_committed=already, shards_committed_now=len(markers) - already,
        rows_processed_now=processed, counts=totals["counts"], errors=totals["errors"], means=totals["means"],
        wall_s=round(wall, 3), rows_per_s=round(processed / wall, 3) if wall > 0 else 0.0,
        warnings=plan.warnings, finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        shard_stats=markers,
    )
    plan.manifest.save(plan.root)
    plan.root.write_json(REPORT_FILE, report.to_dict())
    if engine.warning:
        log.warning("\n%s\n%s\n%s", FALLBACK_BANNER, engine.warning, FALLBACK_BANNER)
    return report

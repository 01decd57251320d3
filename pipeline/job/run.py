"""Running the job: plan, then stream every pending shard through one Ray Data pipeline, commit each.

`run_job(JobConfig) -> JobReport`. Ray is started locally (sized to the machine) unless an address is
given or Ray is already initialised. All pending shards of the run go through one streaming pipeline
(pipeline.job.dataset), so actor pools and models are built once per run. Workers write each group of
rows to the output filesystem where it was made; the driver receives only statistics rows (no image
bytes), and when a shard's last row is in it has a worker join the shard's parts into its Parquet file,
then writes the shard's marker: the last step of its commit. The driver's memory and CPU do not grow with
the images, only (slightly) with the number of rows in flight.
"""
from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.config import JobConfig
from pipeline.job.dataset import build_pipeline, group_table, shard_groups
from pipeline.job.engine import resolve_engine
from pipeline.job.errors import JobError
from pipeline.job.fit import fit_consistent_masks
from pipeline.job.plan import Plan, load_or_create_plan, open_output, summary_fields
from pipeline.job.resources import data_context, ray_session
from pipeline.job.summary import JobReport
from pipeline.output.layout import PARTS_DIR, REPORT_FILE
from pipeline.output.lock import exclusive_driver
from pipeline.output.shards import ShardSpec, ShardStats, commit_shard, merge_stats
from pipeline.output.writer import ShardFiles, assemble_shard
from pipeline.progress import JobProgress
from pipeline.stages import consistent_fit_options

log = logging.getLogger(__name__)


@dataclass
class _ShardProgress:
    """What the driver holds for a shard in flight: its statistics rows (small columns only)."""

    shard: ShardSpec
    started: float
    parts: list[pa.Table] = field(default_factory=list)
    rows: int = 0


class _Committer:
    """Receives statistics rows, has a worker assemble each complete shard, writes its marker."""

    def __init__(self, plan: Plan, shards: Sequence[ShardSpec], on_commit: Callable[[ShardStats], None]) -> None:
        import ray

        self.plan = plan
        self.by_index = {shard.index: shard for shard in shards}
        self.on_commit = on_commit
        self.open: dict[int, _ShardProgress] = {}
        self.assembling: dict[Any, _ShardProgress] = {}  # ObjectRef → shard
        self.committed_rows = 0
        task_cpus = plan.config.execution.task_num_cpus
        self._assemble = ray.remote(num_cpus=task_cpus, max_retries=max(plan.config.execution.max_task_retries, 0))(
            assemble_shard)

    def add(self, table: pa.Table) -> None:
        shard_ids = table.column("shard").to_numpy()
        for shard_index in sorted(set(shard_ids.tolist())):
            rows = table.filter(pa.array(shard_ids == shard_index))
            shard = self.by_index[shard_index]
            progress = self.open.setdefault(shard_index, _ShardProgress(shard, time.perf_counter()))
            progress.parts.append(rows)
            progress.rows += rows.num_rows
            if progress.rows > shard.rows:
                raise JobError(f"{shard.name}: received more rows than it has ({shard.rows}); not committing")
            if progress.rows == shard.rows:
                del self.open[shard_index]
                groups = len(shard_groups(shard, self.plan.config.execution.batch_size.inpaint))
                self.assembling[self._assemble.remote(self.plan.config.output, shard.name, groups)] = progress
        self.collect(wait=False)

    def collect(self, wait: bool) -> None:
        """Commit the shards whose assembly finished (all of them when `wait`)."""
        import ray

        while self.assembling:
            done, _ = ray.wait(list(self.assembling), num_returns=1, timeout=None if wait else 0)
            if not done:
                return
            progress = self.assembling.pop(done[0])
            self._commit(progress, ray.get(done[0]))

    def _commit(self, progress: _ShardProgress, files: ShardFiles) -> None:
        shard = progress.shard
        stats = ShardStats.from_table(shard, pa.concat_tables(progress.parts), files, self.plan.config_hash,
                                      time.perf_counter() - progress.started)
        commit_shard(self.plan.root, shard, stats)
        self.plan.manifest.states[shard.name] = "committed"
        self.committed_rows += stats.rows
        log.info("committed %s: %d rows (%s)", shard.name, stats.rows,
                 ", ".join(f"{k} {v}" for k, v in stats.counts.items()))
        self.on_commit(stats)


def _statistics_tables(dataset: Any) -> Iterator[pa.Table]:
    """The pipeline's output blocks (small statistics tables) as they finish, read on this thread.

    `iter_batches` adds a prefetching thread that polls the executor's output queue every 10 ms for the
    whole job, and a batching layer, for tables that are already the unit the committer wants (measured
    in bench/cluster.py: main + prefetch thread 3.2 s of driver CPU per 150 s job, this 2.6 s).
    `iter_internal_ref_bundles` is a Ray Data DeveloperAPI (added mid-2024); older Rays, which pyproject
    admits, take the public `iter_batches` path (same tables, that thread's cost).
    """
    import ray
    from ray.data.block import BlockAccessor

    if not hasattr(dataset, "iter_internal_ref_bundles"):
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
        return
    for bundle in dataset.iter_internal_ref_bundles():
        for block in ray.get(bundle.block_refs):
            yield block if isinstance(block, pa.Table) else BlockAccessor.for_block(block).to_arrow()


def _run_shards(plan: Plan, shards: Sequence[ShardSpec], on_commit: Callable[[ShardStats], None],
                progress: JobProgress | None = None) -> int:
    """Stream `shards` through one pipeline; returns the rows committed."""
    committer = _Committer(plan, shards, on_commit)
    with data_context(plan.config.execution):
        dataset, _ = build_pipeline(plan, group_table(plan, shards))
        for table in _statistics_tables(dataset):
            committer.add(table)
            if progress is not None:  # a group's statistics rows: the bar moves long before a shard commits
                progress.advance(table.num_rows, table.column("status").to_pylist().count("failed"))
    committer.collect(wait=True)
    if committer.open:
        missing = ", ".join(f"{p.shard.name} ({p.rows}/{p.shard.rows} rows)" for p in committer.open.values())
        raise JobError(f"the pipeline ended before these shards were complete: {missing}")
    plan.root.delete_dir(PARTS_DIR)  # empty by now: each assembly deleted its shard's parts
    return committer.committed_rows


def run_job(config: JobConfig, *, shards: Sequence[str] | None = None,
            on_commit: Callable[[ShardStats], None] | None = None,
            progress: JobProgress | None = None) -> JobReport:
    """Run (or resume) the job described by `config`; returns its report.

    Committed shards of an earlier run with the same configuration are skipped without any model work;
    an output written with a different configuration is refused (ResumeConflictError).
    `shards` restricts the run to those shard names (orchestrators run one shard per task).
    `on_commit` is called on the driver after each shard commits (progress reporting); `progress` is
    told the rows to process and each finished group (rows, failed), e.g. `pipeline.progress.RowProgress`.
    """
    started = time.perf_counter()
    engine = resolve_engine(config.engine)
    root = open_output(config)
    # One driver per output: held before a resume clears an interrupted run's temporary files.
    with exclusive_driver(root):
        return _run_locked(load_or_create_plan(config, engine, root), shards, on_commit, started, progress)


def _run_locked(plan: Plan, shards: Sequence[str] | None, on_commit: Callable[[ShardStats], None] | None,
                started: float, progress: JobProgress | None = None) -> JobReport:
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
            if progress is not None:
                progress.start(sum(shard.rows for shard in pending))
            try:
                processed = _run_shards(plan, pending, record, progress)
            finally:
                if progress is not None:
                    progress.finish()

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
    return report

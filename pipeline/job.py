"""The dataset job: list the inputs, plan shards, stream pending shards through Ray Data, commit each.

`run_job(JobConfig) -> JobReport`. Ray is started locally (sized to the machine) unless an address is
given or Ray is already initialised. Pending shards go through one streaming pipeline per window of
`shards_per_pipeline` shards — fetch+decode (CPU tasks) → mask (actor pool) → inpaint (actor pool) →
metrics (actor pool) → encode (CPU tasks) — and the driver pulls finished rows with `iter_batches`,
streams them into per-shard Parquet writers and commits each shard as soon as its last row arrives.
Only metadata is materialised: images exist only as in-flight batches, bounded by Ray Data's
backpressure, so memory does not grow with the dataset.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import EngineConfig, ExecutionConfig, JobConfig, canonical_json
from pipeline.shards import (
    CONFIG_FILE,
    JOB_DIR,
    LISTING_FILE,
    REPORT_FILE,
    JobManifest,
    ShardSpec,
    ShardStats,
    check_resumable,
    commit_shard,
    load_manifest,
    merge_stats,
    remove_stale_temporaries,
)
from pipeline.sources import LISTING_SCHEMA, fetch_rows, is_process_local, list_inputs
from pipeline.stages import (
    DETECTING_METHODS,
    FAULT_INJECTION_ENV,
    FAILED,
    SKIPPED,
    DecodeStage,
    EncodeStage,
    FetchStage,
    InpaintStage,
    MaskStage,
    MetricsStage,
    build_mask_generator,
    consistent_fit_options,
    row_seed,
    run_stages,
    text,
)
from pipeline.driver_lock import exclusive_driver
from pipeline.writer import OutputRoot, ShardWriter

log = logging.getLogger(__name__)

TEMPLATE_FILE = f"{JOB_DIR}/consistent_template.npz"
_FALLBACK_BANNER = "!" * 100


class JobError(RuntimeError):
    """The job cannot run as configured (no checkpoint for engine 'mat', a failed fit, lost rows)."""


# --------------------------------------------------------------------------------------------------
# Engine resolution


@dataclass(frozen=True)
class ResolvedEngine:
    """The engine a job actually uses; `warning` is set when `auto` fell back to OpenCV."""

    name: str
    checkpoint_path: str | None = None
    checkpoint_sha256: str = ""
    warning: str | None = None


def resolve_engine(config: EngineConfig) -> ResolvedEngine:
    """`mat` needs a resolvable checkpoint; `auto` falls back to OpenCV, loudly, when there is none."""
    if config.name == "opencv":
        return ResolvedEngine("opencv")
    from matcore.registry import CheckpointUnavailableError, resolve_checkpoint

    try:
        path = resolve_checkpoint(config.checkpoint, cache_dir=config.cache_dir)
    except CheckpointUnavailableError as exc:
        if config.name == "mat":
            raise JobError(f"engine 'mat': {exc}") from None
        warning = (f"NO MAT CHECKPOINT: using the classical OpenCV engine instead of MAT; large holes will look "
                   f"smeared. {exc}")
        log.warning("\n%s\n%s\n%s", _FALLBACK_BANNER, warning, _FALLBACK_BANNER)
        return ResolvedEngine("opencv", warning=warning)
    from matcore.checkpoints import file_sha256

    return ResolvedEngine("mat", str(path), file_sha256(path))


# --------------------------------------------------------------------------------------------------
# Report


@dataclass
class JobReport:
    """What a run did and what the output holds (also saved as `_job/report.json`)."""

    output_uri: str
    config_hash: str
    engine: str
    checkpoint_sha256: str
    engine_warning: str | None
    total_rows: int
    shards_total: int
    shards_already_committed: int
    shards_committed_now: int
    rows_processed_now: int
    counts: dict[str, int]
    errors: dict[str, int]
    means: dict[str, float]
    wall_s: float
    rows_per_s: float
    warnings: list[str] = field(default_factory=list)
    finished_at: str = ""
    shard_stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # committed shards' `_stats.json`

    @property
    def complete(self) -> bool:
        return self.shards_already_committed + self.shards_committed_now == self.shards_total

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people (the CLI prints this)."""
        counts = ", ".join(f"{name} {self.counts.get(name, 0)}" for name in ("ok", "failed", "skipped"))
        lines = [
            f"output: {self.output_uri}",
            f"rows: {self.total_rows} ({counts})",
            f"shards: {self.shards_total} ({self.shards_already_committed} already committed, "
            f"{self.shards_committed_now} committed now)",
            f"engine: {self.engine}" + (f" (checkpoint sha256 {self.checkpoint_sha256[:12]}…)"
                                       if self.checkpoint_sha256 else ""),
            f"throughput: {self.rows_processed_now} rows in {self.wall_s:.1f} s ({self.rows_per_s:.2f} rows/s)",
        ]
        if self.errors:
            top = sorted(self.errors.items(), key=lambda item: -item[1])[:5]
            lines.append("failures by stage: " + ", ".join(f"{name} {count}" for name, count in top))
        for name in ("seam_score", "color_delta_e", "texture_ratio", "residual_hole_ratio", "psnr", "ssim"):
            if name in self.means:
                lines.append(f"mean {name}: {self.means[name]:.4g}")
        if self.engine_warning:
            lines.append(f"WARNING: {self.engine_warning}")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Ray session and resources


def _source_tree_pythonpath() -> str | None:
    """The folder holding `pipeline/` when it is imported from a checkout rather than installed:
    Ray workers do not inherit the driver's sys.path, so they need it on PYTHONPATH."""
    package_parent = Path(__file__).resolve().parents[1]
    if "site-packages" in package_parent.parts or "dist-packages" in package_parent.parts:
        return None
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([str(package_parent), existing]) if existing else str(package_parent)


@contextlib.contextmanager
def ray_session(execution: ExecutionConfig) -> Iterator[None]:
    """Use the running Ray, or start/join one for the duration of the job (and shut it down after)."""
    import ray

    if ray.is_initialized():
        yield
        return
    runtime_env: dict[str, Any] = {}
    pythonpath = _source_tree_pythonpath()
    if pythonpath and execution.ray_address is None:
        runtime_env["env_vars"] = {"PYTHONPATH": pythonpath}
    options: dict[str, Any] = {"include_dashboard": False, "runtime_env": runtime_env or None}
    if execution.ray_address is None:
        # "local" always starts a fresh instance, never a cluster some other process happens to run.
        options.update(address="local", num_cpus=execution.num_cpus or os.cpu_count() or 1)
    else:
        options["address"] = execution.ray_address
    log.info("starting Ray (%s)", "local" if execution.ray_address is None else execution.ray_address)
    ray.init(**options)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class _Resources:
    gpus_per_actor: float
    inpaint_actors: int
    inpaint_cpus: float
    inpaint_threads: int | None
    cpu_scale: float  # applied to every stage's logical CPUs so the actor pools fit the cluster


def _cpu_scale(execution: ExecutionConfig, inpaint_actors: int, inpaint_cpus: float, metrics_actors: int,
               cluster_cpus: float) -> float:
    """Actors hold their logical CPUs for the whole run; if they and one task do not fit the cluster,
    Ray Data would wait forever for the task. Shrink every request in proportion instead."""
    needed = (execution.mask_actors * execution.mask_num_cpus + inpaint_actors * inpaint_cpus
              + metrics_actors * execution.metrics_num_cpus + execution.task_num_cpus)
    if cluster_cpus <= 0 or needed <= cluster_cpus:
        return 1.0
    scale = cluster_cpus / needed * 0.99  # float sums must not land a hair above the total
    log.warning("the stages ask for %.2f CPUs but the cluster has %.2f: scaling their CPU requests by %.2f",
                needed, cluster_cpus, scale)
    return scale


def _plan_resources(execution: ExecutionConfig, engine: str, metrics_actors: int = 0) -> _Resources:
    import ray

    cluster = ray.cluster_resources()
    cluster_gpus = float(cluster.get("GPU", 0))
    gpus = execution.num_gpus_per_worker if execution.num_gpus_per_worker is not None else (1.0 if cluster_gpus else 0.0)
    if execution.inpaint_actors is not None:
        actors = execution.inpaint_actors
    elif gpus:
        actors = max(1, int(cluster_gpus // gpus))
    else:
        actors = 1
    threads = execution.inpaint_threads
    if threads is None and not gpus:
        # On a CPU-only node the inpainting model is the bottleneck: give its actors the node's cores.
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        node_cpus = max((int(node["Resources"].get("CPU", 1)) for node in nodes), default=os.cpu_count() or 1)
        threads = max(1, node_cpus // actors if actors <= node_cpus else 1)
    inpaint_cpus = execution.inpaint_num_cpus
    if inpaint_cpus is None:
        inpaint_cpus = 1.0 if engine == "mat" else 0.25
    scale = _cpu_scale(execution, actors, inpaint_cpus, metrics_actors, float(cluster.get("CPU", 0)))
    return _Resources(gpus, actors, inpaint_cpus, threads, scale)


class _FetchAndDecode:
    """Fetch then decode in one task (one pass over the batch, no intermediate block)."""

    def __init__(self, allow_external_paths: bool, max_pixels: int | None) -> None:
        self.stages = (FetchStage(allow_external_paths), DecodeStage(max_pixels=max_pixels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_stages(batch, self.stages)


@contextlib.contextmanager
def _data_context(execution: ExecutionConfig) -> Iterator[None]:
    """Ray Data settings for this job only (the context is process-global: restore it afterwards)."""
    from ray.data import DataContext, ExecutionResources

    context = DataContext.get_current()
    saved = (context.execution_options, context.enable_auto_log_stats)
    options = context.execution_options.__class__()
    options.preserve_order = execution.preserve_order
    if execution.object_store_memory is not None:
        options.resource_limits = ExecutionResources(object_store_memory=execution.object_store_memory)
    context.execution_options = options
    context.enable_auto_log_stats = False
    try:
        yield
    finally:
        context.execution_options, context.enable_auto_log_stats = saved


# --------------------------------------------------------------------------------------------------
# The job


@dataclass
class _Plan:
    """Everything resolved before streaming starts."""

    config: JobConfig
    engine: ResolvedEngine
    config_hash: str
    root: OutputRoot
    listing: pa.Table
    manifest: JobManifest
    template_npz: bytes | None = None
    warnings: list[str] = field(default_factory=list)


def _check_output_not_inside_inputs(config: JobConfig) -> None:
    """A rerun (or the next job) would list the outputs as inputs: refuse before creating anything."""
    from pipeline.sources import resolve_filesystem

    output_fs, output_path = resolve_filesystem(config.output.uri)
    if output_fs.type_name != "local":
        return
    output_real = os.path.realpath(output_path)
    for uri in config.inputs.uris:
        filesystem, path = resolve_filesystem(uri)
        if filesystem.type_name != "local":
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([real, output_real]) == real:
            raise JobError(f"the output {output_real} is inside the input {real}: its files would be listed as "
                           "inputs by the next run; choose an output folder outside it")


def _open_output(config: JobConfig) -> OutputRoot:
    """The output root, created if absent, once it is known not to lie inside an input."""
    _check_output_not_inside_inputs(config)
    return OutputRoot(config.output.uri)


def _load_or_create_plan(config: JobConfig, engine: ResolvedEngine, root: OutputRoot) -> _Plan:
    config_hash = config.content_hash({"engine": engine.name, "checkpoint_sha256": engine.checkpoint_sha256})
    manifest = load_manifest(root)
    if manifest is not None:
        check_resumable(manifest, config_hash, config.output.uri)
        removed = remove_stale_temporaries(root)
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", removed)
        with root.filesystem.open_input_file(root.path(LISTING_FILE)) as handle:
            listing = pq.read_table(handle)
        log.info("resuming the job in %s (inputs are not listed again)", config.output.uri)
    else:
        started = time.perf_counter()
        listing = list_inputs(config.inputs)
        log.info("listed %d rows in %.1f s", listing.num_rows, time.perf_counter() - started)
        buffer = io.BytesIO()
        pq.write_table(listing, buffer, compression="zstd")
        root.write_bytes(LISTING_FILE, buffer.getvalue())
        root.write_json(CONFIG_FILE, {
            "config": config.to_dict(), "config_hash": config_hash,
            "resolved": {"engine": engine.name, "checkpoint": engine.checkpoint_path,
                         "checkpoint_sha256": engine.checkpoint_sha256},
            "canonical_content": json.loads(canonical_json(config.content_dict())),
        })
        # The manifest goes last: its presence says the plan (listing + config) is complete.
        manifest = JobManifest.new(config_hash, listing.num_rows, config.execution.shard_size)
        manifest.save(root)
    return _Plan(config, engine, config_hash, root, listing, manifest)


def _fit_sample_rows(listing: pa.Table, size: int) -> list[int]:
    """Rows spread evenly over the listing (deterministic), leaving out duplicates and unreadable rows."""
    usable = [i for i, (dup, err) in enumerate(zip(listing.column("duplicate_of").to_pylist(),
                                                   listing.column("listing_error").to_pylist())) if not dup and not err]
    if len(usable) <= size:
        return usable
    return [usable[int(k * len(usable) / size)] for k in range(size)]


def _fit_consistent_masks(plan: _Plan, options: Mapping[str, Any]) -> bytes:
    """Fit the consistent-watermark generator (with `options`) once per job on a sample; the template is
    saved with the output so a resumed job masks with exactly the same template."""
    if plan.root.exists(TEMPLATE_FILE):
        return plan.root.read_bytes(TEMPLATE_FILE)
    masks = plan.config.masks
    rows = _fit_sample_rows(plan.listing, masks.fit_sample_size)
    sample = plan.listing.take(rows).to_pydict()
    batch = {name: np.array(values, dtype=object) for name, values in sample.items()}
    batch["status"] = np.array([""] * len(rows), dtype=object)
    batch = run_stages(batch, [FetchStage(plan.config.inputs.allow_external_paths),
                               DecodeStage(max_pixels=plan.config.inputs.max_pixels)])
    images = [image for image, status in zip(batch["image"], batch["status"]) if text(status) != FAILED]
    log.info("fitting the consistent-watermark masks on %d images", len(images))
    generator = build_mask_generator("consistent", options)
    try:
        report = generator.fit(images)
    except Exception as exc:  # noqa: BLE001 - a failed fit makes the whole job pointless
        raise JobError(f"fitting the consistent-watermark masks failed on {len(images)} images: {exc}") from exc
    log.info("consistent-watermark fit: %s", getattr(report, "as_dict", lambda: report)())
    buffer = io.BytesIO()
    generator.template.save(buffer)
    template_npz = buffer.getvalue()
    if plan.config.engine.invert == "auto" and plan.config.masks.method == "consistent":
        from pipeline.watermark.fit import fit_matte_into_template

        template_npz, warning = fit_matte_into_template(generator, images, template_npz)
        if warning:
            log.warning("%s", warning)
            plan.warnings.append(warning)
    plan.root.write_bytes(TEMPLATE_FILE, template_npz)
    return template_npz


def _window_table(plan: _Plan, shards: Sequence[ShardSpec]) -> pa.Table:
    """The listing rows of `shards` plus the per-row job columns (shard, seed, status, error)."""
    parts = []
    for shard in shards:
        part = plan.listing.slice(shard.start, shard.rows)
        parts.append(part.append_column("shard", pa.array([shard.index] * shard.rows, pa.int32())))
    table = pa.concat_tables(parts)
    ids = table.column("id").to_pylist()
    duplicate_of = table.column("duplicate_of").to_pylist()
    base_seed = plan.config.engine.seed
    table = table.append_column("seed", pa.array([row_seed(base_seed, row_id) for row_id in ids], pa.int64()))
    # Duplicates are decided at listing time: they never reach the readers or the models.
    statuses = [SKIPPED if dup else "" for dup in duplicate_of]
    errors = [f"duplicate of {dup!r} (listed earlier); not processed" if dup else "" for dup in duplicate_of]
    uris = table.column("fs_uri").to_pylist()
    process_local = {uri: is_process_local(uri) for uri in set(uris)}
    wanted = [i for i, uri in enumerate(uris) if process_local[uri] and not duplicate_of[i]]
    if wanted:
        # Another process cannot see this filesystem (fsspec memory://): read those rows here.
        rows = table.select(LISTING_SCHEMA.names).to_pylist()
        data: list[bytes | None] = [None] * table.num_rows
        for index, result in zip(wanted, fetch_rows([rows[i] for i in wanted], plan.config.inputs.allow_external_paths)):
            data[index] = result.data
            if result.error:
                statuses[index], errors[index] = FAILED, f"read: {result.error}"
        table = table.append_column("data", pa.array(data, pa.binary()))
    table = table.append_column("status", pa.array(statuses, pa.string()))
    return table.append_column("error", pa.array(errors, pa.string()))


def _blocks(table: pa.Table, shards: Sequence[ShardSpec], rows_per_block: int) -> list[pa.Table]:
    """Small blocks that never straddle shards, so work spreads over tasks from the first row."""
    blocks, offset = [], 0
    for shard in shards:
        for start in range(0, shard.rows, rows_per_block):
            blocks.append(table.slice(offset + start, min(rows_per_block, shard.rows - start)))
        offset += shard.rows
    return blocks


def _build_pipeline(plan: _Plan, table: pa.Table, shards: Sequence[ShardSpec]) -> Any:
    # Ray 2.60 deprecates remote args (max_retries, max_restarts, max_task_retries) in map_batches but
    # offers no other way to bound retries: silence that one warning while building.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
        return _chain_stages(plan, table, shards)


def _chain_stages(plan: _Plan, table: pa.Table, shards: Sequence[ShardSpec]) -> Any:
    """from_arrow(listing blocks) → fetch+decode → mask → inpaint → metrics → encode."""
    import ray.data

    config, execution = plan.config, plan.config.execution
    sizes = execution.batch_size
    rerun = config.metrics.enabled and (config.metrics.rerun_mask == "on" or (
        config.metrics.rerun_mask == "auto" and config.masks.method in DETECTING_METHODS))
    resources = _plan_resources(execution, plan.engine.name, execution.metrics_actors if rerun else 0)
    task_cpus = execution.task_num_cpus * resources.cpu_scale
    actor_args = {"max_restarts": execution.max_restarts, "max_task_retries": execution.max_task_retries}
    fault_injection = json.loads(os.environ.get(FAULT_INJECTION_ENV) or "{}")

    dataset = ray.data.from_arrow(_blocks(table, shards, sizes.decode))
    dataset = dataset.map_batches(
        _FetchAndDecode(config.inputs.allow_external_paths, config.inputs.max_pixels), batch_size=sizes.decode,
        # Tasks carry `max_retries`, actors `max_restarts`: unequal remote args, so Ray Data never fuses the
        # decoding into the mask actors (where it would run serially inside the small mask pool).
        num_cpus=task_cpus, max_retries=max(execution.max_task_retries, 0),
    )
    dataset = dataset.map_batches(
        MaskStage, batch_size=sizes.mask, compute=ray.data.ActorPoolStrategy(size=execution.mask_actors),
        fn_constructor_kwargs={"method": config.masks.method, "options": config.masks.options,
                               "postprocess": config.masks.postprocess, "template_npz": plan.template_npz},
        num_cpus=execution.mask_num_cpus * resources.cpu_scale, **actor_args,
    )
    dataset = dataset.map_batches(
        InpaintStage, batch_size=sizes.inpaint,
        compute=ray.data.ActorPoolStrategy(size=resources.inpaint_actors),
        fn_constructor_kwargs={
            "engine": plan.engine.name, "checkpoint": plan.engine.checkpoint_path,
            "checkpoint_sha256": plan.engine.checkpoint_sha256, "device": config.engine.device,
            "dtype": config.engine.dtype, "options": config.engine.options, "threads": resources.inpaint_threads,
            "base_seed": config.engine.seed, "batch_across_images": config.engine.batch_across_images,
            "fault_injection": fault_injection, "template_npz": plan.template_npz,
            "invert": config.engine.invert, "invert_options": config.engine.invert_options,
        },
        num_cpus=resources.inpaint_cpus * resources.cpu_scale, num_gpus=resources.gpus_per_actor or None,
        **actor_args,
    )
    if config.metrics.enabled:
        if rerun:
            # Re-detecting needs the mask model: an actor pool, like the mask stage.
            dataset = dataset.map_batches(
                MetricsStage, batch_size=sizes.metrics,
                compute=ray.data.ActorPoolStrategy(size=execution.metrics_actors),
                fn_constructor_kwargs={
                    "ring_px": config.metrics.ring_px, "rerun_method": config.masks.method,
                    "rerun_options": config.masks.options, "rerun_postprocess": config.masks.postprocess,
                    "template_npz": plan.template_npz,
                },
                num_cpus=execution.metrics_num_cpus * resources.cpu_scale, **actor_args,
            )
        else:
            # Without a model the figures are plain numpy: CPU tasks, fused with the encode tasks.
            dataset = dataset.map_batches(MetricsStage(ring_px=config.metrics.ring_px), batch_size=sizes.metrics,
                                          num_cpus=task_cpus, max_retries=max(execution.max_task_retries, 0))
    return dataset.map_batches(EncodeStage(config.output.jpeg_tables), batch_size=sizes.encode, num_cpus=task_cpus,
                               max_retries=max(execution.max_task_retries, 0))


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


def _run_window(plan: _Plan, shards: Sequence[ShardSpec],
                on_commit: Callable[[ShardStats], None] | None) -> int:
    """Stream `shards` through one pipeline; returns the rows committed."""
    by_index = {shard.index: shard for shard in shards}
    table = _window_table(plan, shards)
    writers: dict[int, ShardWriter] = {}
    stats_parts: dict[int, list[pa.Table]] = {}
    started: dict[int, float] = {}
    committed_rows = 0
    try:
        with _data_context(plan.config.execution):
            dataset = _build_pipeline(plan, table, shards)
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


def _commit(plan: _Plan, shard: ShardSpec, writer: ShardWriter, parts: list[pa.Table], started: float,
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


@dataclass(frozen=True)
class JobPlanSummary:
    """The shards of a job and their state, before any processing (what orchestrators schedule)."""

    output_uri: str
    config_hash: str
    engine: str
    checkpoint_sha256: str
    engine_warning: str | None
    total_rows: int
    shards: list[dict[str, Any]]  # {"name", "rows", "committed"} in order

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary_fields(plan: _Plan) -> dict[str, Any]:
    """The fields JobReport and JobPlanSummary share: which job, on what output, with which engine."""
    return {"output_uri": plan.config.output.uri, "config_hash": plan.config_hash, "engine": plan.engine.name,
            "checkpoint_sha256": plan.engine.checkpoint_sha256, "engine_warning": plan.engine.warning,
            "total_rows": plan.manifest.total_rows}


def plan_job(config: JobConfig) -> JobPlanSummary:
    """List the inputs (or reload the saved listing), cut them into shards, say which are committed."""
    engine = resolve_engine(config.engine)
    plan = _load_or_create_plan(config, engine, _open_output(config))
    markers = plan.manifest.refresh_states(plan.root)
    plan.manifest.save(plan.root)
    return JobPlanSummary(
        **_summary_fields(plan),
        shards=[{"name": s.name, "rows": s.rows, "committed": s.name in markers} for s in plan.manifest.shards],
    )


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
    root = _open_output(config)
    # One driver per output: held before a resume clears an interrupted run's temporary files.
    with exclusive_driver(root):
        return _run_locked(_load_or_create_plan(config, engine, root), shards, on_commit, started)


def _run_locked(plan: _Plan, shards: Sequence[str] | None, on_commit: Callable[[ShardStats], None] | None,
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
            plan.template_npz = _fit_consistent_masks(plan, fit_options)
        with ray_session(config.execution):
            window = config.execution.shards_per_pipeline
            for start in range(0, len(pending), window):
                processed += _run_window(plan, pending[start:start + window], record)

    markers = {shard.name: markers.get(shard.name) or committed_now[shard.name]
               for shard in plan.manifest.shards if shard.name in markers or shard.name in committed_now}
    totals = merge_stats(markers.values())
    wall = time.perf_counter() - started
    report = JobReport(
        **_summary_fields(plan), shards_total=len(plan.manifest.shards),
        shards_already_committed=already, shards_committed_now=len(markers) - already,
        rows_processed_now=processed, counts=totals["counts"], errors=totals["errors"], means=totals["means"],
        wall_s=round(wall, 3), rows_per_s=round(processed / wall, 3) if wall > 0 else 0.0,
        warnings=plan.warnings, finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        shard_stats=markers,
    )
    plan.manifest.save(plan.root)
    plan.root.write_json(REPORT_FILE, report.to_dict())
    if engine.warning:
        log.warning("\n%s\n%s\n%s", _FALLBACK_BANNER, engine.warning, _FALLBACK_BANNER)
    return report

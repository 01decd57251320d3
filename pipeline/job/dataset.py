"""The job's Ray Data dataset: one row per group of one shard (see pipeline.job.groups), streamed through
fetch+decode (tasks; masks read from files there too) → mask (actor pool) → inpaint (actor pool) → metrics → encode → write (tasks).

Every pending shard of a run goes through this one dataset, so the actor pools, and the models in them, are
built once per run. The last stage writes each group to the output filesystem where it was made and hands
back only statistics rows (no image bytes).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.job.groups import PAYLOAD, GroupSink, GroupStage, pack
from pipeline.job.plan import Plan
from pipeline.job.resources import Resources, plan_resources
from pipeline.output.shards import ShardSpec
from pipeline.sources import LISTING_SCHEMA, fetch_rows, is_process_local
from pipeline.stages import (
    DETECTING_METHODS,
    FAILED,
    FAULT_INJECTION_ENV,
    SKIPPED,
    Batch,
    DecodeStage,
    EncodeStage,
    FetchStage,
    InpaintStage,
    MaskStage,
    MetricsStage,
    row_seed,
    run_stages,
)
from pipeline.stages.write import WriteStage

# Enough blocks to spread the first stage over a large cluster, few enough that the driver's object
# store entries stay bounded whatever the job's size.
_MAX_SOURCE_BLOCKS = 4096


# Mask methods without a model (masks read from files): they run in the decoding tasks, where a pool of
# actors would only add processes to start and one more hop per group.
MODEL_FREE_METHODS = ("given",)


class FetchAndDecode:
    """Fetch then decode (then, for a model-free mask method, mask) in one task: one pass over the batch,
    no intermediate block. `mask` holds MaskStage's constructor arguments, or None."""

    def __init__(self, allow_external_paths: bool, max_pixels: int | None, mask: dict[str, Any] | None = None) -> None:
        self.stages = (FetchStage(allow_external_paths), DecodeStage(max_pixels=max_pixels),
                       *([MaskStage(**mask)] if mask is not None else []))

    def __call__(self, batch: Batch) -> Batch:
        return run_stages(batch, self.stages)


def shard_groups(shard: ShardSpec, group_rows: int) -> list[tuple[int, int, int]]:
    """(group index, first listing row, end) of each group of `shard`, in row order."""
    return [(group, start, min(start + group_rows, shard.stop))
            for group, start in enumerate(range(shard.start, shard.stop, group_rows))]


def _job_rows(plan: Plan, shard: ShardSpec) -> pa.Table:
    """The listing rows of `shard` plus the per-row job columns (shard, seed, status, error[, data])."""
    table = plan.listing.slice(shard.start, shard.rows)
    table = table.append_column("shard", pa.array([shard.index] * shard.rows, pa.int32()))
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
        rows = table.select([name for name in LISTING_SCHEMA.names if name in table.column_names]).to_pylist()
        data: list[bytes | None] = [None] * table.num_rows
        for index, result in zip(wanted, fetch_rows([rows[i] for i in wanted], plan.config.inputs.allow_external_paths)):
            data[index] = result.data
            if result.error:
                statuses[index], errors[index] = FAILED, f"read: {result.error}"
        table = table.append_column("data", pa.array(data, pa.binary()))
    table = table.append_column("status", pa.array(statuses, pa.string()))
    return table.append_column("error", pa.array(errors, pa.string()))


def group_table(plan: Plan, shards: Sequence[ShardSpec]) -> pa.Table:
    """One row per group of `shards`: shard, group, and the group's listing rows packed (metadata only)."""
    group_rows = plan.config.execution.batch_size.inpaint
    shard_ids, group_ids, payloads = [], [], []
    for shard in shards:
        rows = _job_rows(plan, shard)
        for group, start, stop in shard_groups(shard, group_rows):
            part = rows.slice(start - shard.start, stop - start)
            batch = {name: np.array(part.column(name).to_pylist(), dtype=object) for name in part.column_names}
            batch["group"] = np.full(stop - start, group, np.int32)
            shard_ids.append(shard.index)
            group_ids.append(group)
            payloads.append(pack(batch))
    return pa.table({"shard": pa.array(shard_ids, pa.int32()), "group": pa.array(group_ids, pa.int32()),
                     PAYLOAD: pa.array(payloads, pa.large_binary())})


def _source_dataset(table: pa.Table) -> Any:
    """The group rows as a Ray dataset, made in this process.

    `from_items` builds the blocks' metadata here; `from_arrow` would run a remote task to read it,
    which on a fresh cluster first waits seconds for a worker process to start and import pyarrow, while
    every model waits for its first batch.
    """
    import ray.data

    return ray.data.from_items(table.to_pylist(), override_num_blocks=max(1, min(table.num_rows, _MAX_SOURCE_BLOCKS)))


def build_pipeline(plan: Plan, groups: pa.Table) -> tuple[Any, Resources]:
    # Ray 2.60 deprecates remote args (max_retries, max_restarts, max_task_retries) in map_batches but
    # offers no other way to bound retries: silence that one warning while building.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
        return _chain_stages(plan, groups)


def _chain_stages(plan: Plan, groups: pa.Table) -> tuple[Any, Resources]:
    """group rows → fetch+decode → mask → inpaint → metrics → encode → write."""
    import ray
    import ray.data

    config, execution = plan.config, plan.config.execution
    rerun = config.metrics.enabled and (config.metrics.rerun_mask == "on" or (
        config.metrics.rerun_mask == "auto" and config.masks.method in DETECTING_METHODS))
    resources = plan_resources(execution, plan.engine.name, rerun_metrics=rerun)
    task_cpus = execution.task_num_cpus * resources.cpu_scale
    task_args = {"num_cpus": task_cpus, "max_retries": max(execution.max_task_retries, 0),
                 "compute": ray.data.TaskPoolStrategy(size=execution.task_concurrency)}
    actor_args = {"max_restarts": execution.max_restarts, "max_task_retries": execution.max_task_retries}
    fault_injection = json.loads(os.environ.get(FAULT_INJECTION_ENV) or "{}")
    template = [ray.put(plan.template_npz)] if plan.template_npz is not None else None  # see template_bytes

    def pool(size: tuple[int, int]) -> Any:
        # Two groups per actor: one computing, the next waiting at the actor. Ray's default of four lets the
        # first actor to start take the first four groups while the others, ready a moment later, wait.
        return ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1], max_tasks_in_flight_per_actor=2)

    mask_kwargs = {"method": config.masks.method, "options": config.masks.options,
                   "postprocess": config.masks.postprocess, "template_npz": template, "key_column": "key"}
    model_free = config.masks.method in MODEL_FREE_METHODS
    # batch_size=1: one group per call, so a task or an actor call is one model batch.
    dataset = _source_dataset(groups)
    dataset = dataset.map_batches(
        GroupStage(FetchAndDecode, {"allow_external_paths": config.inputs.allow_external_paths,
                                    "max_pixels": config.inputs.max_pixels, "mask": mask_kwargs if model_free else None}),
        batch_size=1,
        # Tasks carry `max_retries`, actors `max_restarts`: unequal remote args, so Ray Data never fuses the
        # decoding into the mask actors (where it would run serially inside the mask pool).
        **task_args,
    )
    if not model_free:
        dataset = dataset.map_batches(
            GroupStage, batch_size=1, compute=pool(resources.mask_pool),
            fn_constructor_kwargs={"stage": MaskStage, "kwargs": mask_kwargs},
            num_cpus=execution.mask_num_cpus * resources.cpu_scale, **actor_args,
        )
    dataset = dataset.map_batches(
        GroupStage, batch_size=1, compute=pool(resources.inpaint_pool),
        fn_constructor_kwargs={"stage": InpaintStage, "kwargs": {
            "config": plan.engine.stage_config(config.engine), "checkpoint": plan.engine.checkpoint,
            "threads": resources.inpaint_threads, "fault_injection": fault_injection,
            "template_npz": template}},
        num_cpus=resources.inpaint_cpus * resources.cpu_scale, num_gpus=resources.gpus_per_actor or None,
        **actor_args,
    )
    if config.metrics.enabled:
        if rerun:
            # Re-detecting needs the mask model: an actor pool, like the mask stage.
            dataset = dataset.map_batches(
                GroupStage, batch_size=1, compute=pool(resources.metrics_pool),
                fn_constructor_kwargs={"stage": MetricsStage, "kwargs": {
                    "ring_px": config.metrics.ring_px, "rerun_method": config.masks.method,
                    "rerun_options": config.masks.options, "rerun_postprocess": config.masks.postprocess,
                    "template_npz": template}},
                num_cpus=execution.metrics_num_cpus * resources.cpu_scale, **actor_args,
            )
        else:
            # Without a model the figures are plain numpy: CPU tasks, fused with the encode tasks.
            dataset = dataset.map_batches(GroupStage(MetricsStage, {"ring_px": config.metrics.ring_px}),
                                          batch_size=1, **task_args)
    dataset = dataset.map_batches(GroupStage(EncodeStage, {"jpeg_tables": config.output.jpeg_tables,
                                                              "jpeg": config.output.jpeg}),
                                  batch_size=1, **task_args)
    return dataset.map_batches(GroupSink(WriteStage, {"output": config.output}), batch_size=1,
                               **task_args), resources

"""The Ray Data dataset of a window of shards: listing blocks → fetch+decode → mask → inpaint → metrics → encode."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.job.plan import Plan
from pipeline.job.resources import plan_resources
from pipeline.output.shards import ShardSpec
from pipeline.sources import LISTING_SCHEMA, fetch_rows, is_process_local
from pipeline.stages import (
    DETECTING_METHODS,
    FAILED,
    FAULT_INJECTION_ENV,
    SKIPPED,
    DecodeStage,
    EncodeStage,
    FetchStage,
    InpaintStage,
    MaskStage,
    MetricsStage,
    row_seed,
    run_stages,
)


class _FetchAndDecode:
    """Fetch then decode in one task (one pass over the batch, no intermediate block)."""

    def __init__(self, allow_external_paths: bool, max_pixels: int | None) -> None:
        self.stages = (FetchStage(allow_external_paths), DecodeStage(max_pixels=max_pixels))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_stages(batch, self.stages)



def window_table(plan: Plan, shards: Sequence[ShardSpec]) -> pa.Table:
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


def build_pipeline(plan: Plan, table: pa.Table, shards: Sequence[ShardSpec]) -> Any:
    # Ray 2.60 deprecates remote args (max_retries, max_restarts, max_task_retries) in map_batches but
    # offers no other way to bound retries: silence that one warning while building.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated", category=DeprecationWarning)
        return _chain_stages(plan, table, shards)


def _chain_stages(plan: Plan, table: pa.Table, shards: Sequence[ShardSpec]) -> Any:
    """from_arrow(listing blocks) → fetch+decode → mask → inpaint → metrics → encode."""
    import ray.data

    config, execution = plan.config, plan.config.execution
    sizes = execution.batch_size
    rerun = config.metrics.enabled and (config.metrics.rerun_mask == "on" or (
        config.metrics.rerun_mask == "auto" and config.masks.method in DETECTING_METHODS))
    resources = plan_resources(execution, plan.engine.name, execution.metrics_actors if rerun else 0)
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

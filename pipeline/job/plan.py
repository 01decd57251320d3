"""Planning a job: the output root, the listing (made once, reloaded on resume), the shards and their state."""
from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import JobConfig, canonical_json
from pipeline.job.engine import ResolvedEngine, resolve_engine
from pipeline.job.errors import JobError
from pipeline.job.summary import JobPlanSummary
from pipeline.output.layout import CONFIG_FILE, LISTING_FILE
from pipeline.output.lock import exclusive_driver
from pipeline.output.root import OutputRoot
from pipeline.output.shards import JobManifest, check_resumable, load_manifest, remove_stale_temporaries
from pipeline.sources import is_process_local, list_inputs

log = logging.getLogger(__name__)


@dataclass
class Plan:
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


def open_output(config: JobConfig) -> OutputRoot:
    """The output root, created if absent, once it is known not to lie inside an input."""
    _check_output_not_inside_inputs(config)
    if is_process_local(config.output.uri):
        raise JobError(f"the output {config.output.uri} exists only in this process, but Ray workers write the "
                       "shards: use a local folder, a shared mount or an object store")
    return OutputRoot(config.output.uri)


def load_or_create_plan(config: JobConfig, engine: ResolvedEngine, root: OutputRoot) -> Plan:
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
    return Plan(config, engine, config_hash, root, listing, manifest)


def summary_fields(plan: Plan) -> dict[str, Any]:
    """The fields JobReport and JobPlanSummary share: which job, on what output, with which engine."""
    return {"output_uri": plan.config.output.uri, "config_hash": plan.config_hash, "engine": plan.engine.name,
            "checkpoint_sha256": plan.engine.checkpoint_sha256, "engine_warning": plan.engine.warning,
            "total_rows": plan.manifest.total_rows}


def plan_job(config: JobConfig) -> JobPlanSummary:
    """List the inputs (or reload the saved listing), cut them into shards, say which are committed.

    Holds the output's driver lock while it plans (OutputInUseError when a run is writing the output).
    """
    engine = resolve_engine(config.engine)
    root = open_output(config)
    # Planning a resume deletes an interrupted run's temporary files: never while another driver writes.
    with exclusive_driver(root):
        plan = load_or_create_plan(config, engine, root)
        markers = plan.manifest.refresh_states(plan.root)
        plan.manifest.save(plan.root)
    return JobPlanSummary(
        **summary_fields(plan),
        shards=[{"name": s.name, "rows": s.rows, "committed": s.name in markers} for s in plan.manifest.shards],
    )

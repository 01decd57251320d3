"""The `restore-dataset` Prefect flow: validate the job, plan its shards, run each shard as a task on Ray
(retries with backoff, timeout, cache), verify the output and publish artifacts.

Thin by design: every piece of work is `pipeline` code; this module only wires it into Prefect. Tasks take
small, explicit inputs (the config as plain data, shard names), never heavy objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.tasks import exponential_backoff

from pipeline.config import JobConfig
from pipeline.job import plan_job, ray_session, run_job
from pipeline.report import summarize_json, write_html_report
from pipeline.output.shards import committed_tables
from pipeline.stages import FAULT_INJECTION_ENV

SHARD_RETRIES = 2
SHARD_TIMEOUT_S = 6 * 3600


def load_config(config: dict[str, Any] | None = None, config_path: str | None = None,
                ray_address: str | None = None) -> JobConfig:
    """The job config from inline data or a YAML/JSON file, validated; `ray_address` overrides the file's."""
    if (config is None) == (config_path is None):
        raise ValueError("give exactly one of `config` (a mapping) or `config_path` (a YAML/JSON file)")
    job = JobConfig.from_file(config_path) if config_path else JobConfig.from_mapping(config)
    if ray_address is not None:
        job = job.replace(execution={"ray_address": ray_address})
    job.validate()
    return job


def shard_cache_key(_context: Any, parameters: dict[str, Any]) -> str:
    """Finished shards of the same job (same output, config, checkpoint) never run twice."""
    output = hashlib.sha256(parameters["output_uri"].encode()).hexdigest()[:16]
    names = parameters["shard_names"]
    # One shard keeps its readable name; a group is named by its first shard and a digest of all of them.
    group = names[0] if len(names) == 1 else f"{names[0]}+{len(names) - 1}-" + hashlib.sha256(
        "\n".join(names).encode()).hexdigest()[:12]
    return "-".join([
        "restore-shards", group, parameters["config_hash"][:16],
        parameters["checkpoint_sha256"][:16] or "no-checkpoint", output,
    ])


def check_shards_per_task(shards_per_task: int) -> None:
    if shards_per_task < 1:
        raise ValueError(f"shards_per_task must be at least 1, got {shards_per_task}")


def shard_groups(names: list[str], shards_per_task: int) -> list[list[str]]:
    """Consecutive shards, `shards_per_task` to a task (the last group may be smaller)."""
    check_shards_per_task(shards_per_task)
    return [names[i:i + shards_per_task] for i in range(0, len(names), shards_per_task)]


def _maybe_fail_once(shard_name: str) -> None:
    """Test hook: `$MATPIPE_FAULT_INJECTION` = {"flow_fail_shard_once": {"shard": NAME, "marker": PATH}}
    makes the first attempt at that shard raise, so the retry path is exercised for real."""
    spec = json.loads(os.environ.get(FAULT_INJECTION_ENV) or "{}").get("flow_fail_shard_once")
    if not spec or spec.get("shard") != shard_name:
        return
    marker = Path(spec["marker"])
    if not marker.exists():
        marker.write_text("failed once\n")
        raise RuntimeError(f"injected failure of {shard_name} (fault injection)")


@task(name="plan-shards", retries=1, retry_delay_seconds=5)
def plan_shards(config: dict[str, Any]) -> dict[str, Any]:
    """List the inputs (or reload the saved listing) and cut them into shards; nothing is processed."""
    return plan_job(JobConfig.from_mapping(config)).to_dict()


@task(
    name="restore-shards",
    task_run_name="restore-shards {shard_names[0]}",
    retries=SHARD_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    timeout_seconds=SHARD_TIMEOUT_S,
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def restore_shards(config: dict[str, Any], shard_names: list[str], config_hash: str, checkpoint_sha256: str,
                   output_uri: str) -> dict[str, dict[str, Any]]:
    """Process a group of shards on Ray in one pipeline and commit each; returns {shard: its `_stats.json`}.

    A retry redoes only the group's shards that did not commit: committed ones are skipped by `run_job`.
    """
    for name in shard_names:
        _maybe_fail_once(name)
    report = run_job(JobConfig.from_mapping(config), shards=shard_names)
    missing = [name for name in shard_names if name not in report.shard_stats]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} did not commit (report: {report.summary()})")
    return {name: report.shard_stats[name] for name in shard_names}


@task(name="verify-output")
def verify_output(output_uri: str, expected_rows: int) -> dict[str, Any]:
    """Counts reconcile and every id appears exactly once; raises otherwise."""
    table = committed_tables(output_uri)
    ids = table.column("id").to_pylist()
    duplicates = len(ids) - len(set(ids))
    summary = summarize_json(output_uri)
    counted = sum(summary["counts"].values())
    problems = []
    if table.num_rows != expected_rows:
        problems.append(f"{table.num_rows} output rows for {expected_rows} input rows")
    if duplicates:
        problems.append(f"{duplicates} duplicate id(s)")
    if counted != table.num_rows:
        problems.append(f"status counts {summary['counts']} do not add up to {table.num_rows}")
    if problems:
        raise RuntimeError(f"{output_uri}: " + "; ".join(problems))
    return summary


def _markdown_report(output_uri: str, plan: dict[str, Any], summary: dict[str, Any], shard_rows: list[dict],
                     wall_s: float) -> str:
    counts = summary["counts"]
    lines = [
        f"# Restored `{output_uri}`",
        "",
        f"- rows: **{summary['rows']}** — ok {counts.get('ok', 0)}, failed {counts.get('failed', 0)}, "
        f"skipped {counts.get('skipped', 0)}",
        f"- shards: {len(plan['shards'])}; engine: `{plan['engine']}`"
        + (f" (checkpoint sha256 `{plan['checkpoint_sha256'][:12]}…`)" if plan["checkpoint_sha256"] else ""),
        f"- wall time: {wall_s:.1f} s ({summary['rows'] / wall_s:.2f} rows/s)" if wall_s > 0 else "",
    ]
    if plan.get("engine_warning"):
        lines += ["", f"> **Warning:** {plan['engine_warning']}"]
    if summary["failures_by_reason"]:
        lines += ["", "## Failures by reason", "", "| reason | rows |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(summary["failures_by_reason"].items(),
                                                                key=lambda kv: -kv[1])]
    metric_names = sorted({k for row in shard_rows for k in row if k.startswith("mean_")})
    if metric_names:
        lines += ["", "## Metric means per shard", "", "| shard | " + " | ".join(metric_names) + " |",
                  "|---|" + "---|" * len(metric_names)]
        for row in shard_rows:
            values = " | ".join(f"{row[m]:.4g}" if isinstance(row.get(m), (int, float)) else "" for m in metric_names)
            lines.append(f"| {row['shard']} | {values} |")
    return "\n".join(line for line in lines if line is not None)


def _table_row(shard_name: str, stats: dict[str, Any]) -> dict[str, Any]:
    counts = stats.get("counts", {})
    row = {"shard": shard_name, "rows": stats.get("rows"), "ok": counts.get("ok", 0),
           "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0),
           "seconds": stats.get("wall_s")}
    for name, summary in (stats.get("metrics") or {}).items():
        if summary and summary.get("mean") is not None:
            row[f"mean_{name}"] = summary["mean"]
    return row


@flow(name="restore-dataset", log_prints=True)
def restore_dataset(config: dict[str, Any] | None = None, config_path: str | None = None,
                    ray_address: str | None = None, html_report: bool = True,
                    shards_per_task: int = 1) -> dict[str, Any]:
    """Restore a dataset: plan shards, run them on Ray as tasks (cached, retried), verify, report.

    Give the job either inline (`config`, the same mapping a job YAML holds) or as `config_path`.
    Ray is started locally unless `ray_address` (or the config's) says where to join one.
    `shards_per_task` groups consecutive shards into one task, which runs them through one pipeline:
    fewer actor and model start-ups for small shards, coarser retries and progress.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    job = load_config(config, config_path, ray_address)
    check_shards_per_task(shards_per_task)  # before any work
    job_data = job.to_dict()
    plan = plan_shards(job_data)
    groups = shard_groups([shard["name"] for shard in plan["shards"]], shards_per_task)
    logger.info("%d shards (%d already committed) in %d task(s)", len(plan["shards"]),
                sum(1 for s in plan["shards"] if s["committed"]), len(groups))

    progress_id = create_progress_artifact(progress=0.0, description=f"shards committed for {job.output.uri}")
    shard_rows = []
    committed = {shard["name"] for shard in plan["shards"] if shard["committed"]}
    with ray_session(job.execution):
        for group in groups:
            # The output is the truth: a group with a shard missing there is redone even if Prefect's cache
            # remembers it (the output was deleted or moved), and the fresh result replaces the cached one.
            run = restore_shards if committed.issuperset(group) else restore_shards.with_options(refresh_cache=True)
            stats = run(job_data, group, plan["config_hash"], plan["checkpoint_sha256"], job.output.uri)
            shard_rows += [_table_row(name, stats[name]) for name in group]
            update_progress_artifact(progress_id, progress=100.0 * len(shard_rows) / len(plan["shards"]))

    summary = verify_output(job.output.uri, plan["total_rows"])
    wall = time.perf_counter() - started
    create_table_artifact(table=shard_rows, key="shard-stats", description="per-shard counts, time and metrics")
    create_markdown_artifact(markdown=_markdown_report(job.output.uri, plan, summary, shard_rows, wall),
                             key="restore-report", description="job report")
    if html_report:
        summary["html_report"] = write_html_report(job.output.uri)
    summary["wall_s"] = round(wall, 3)
    return summary

"""The `restore-dataset` Prefect flow: validate the job, plan its shards, run them on Ray, verify the
output and publish artifacts.

Every pending shard streams through ONE `run_job` pipeline (task `run-shards`), so the whole cluster works
on all of them at once and each model loads once per actor. Each shard still has its own task
(`restore-shard <name>`: cache keyed by shard + config + checkpoint + output, retries with back-off, a
timeout): it waits for its shard to commit in that pipeline and returns its marker; when the pipeline
could not commit it (a failure, a retry), the task runs that shard alone.

Thin by design: every piece of work is `pipeline` code; this module only wires it into Prefect. Tasks take
small, explicit inputs (the config as plain data, shard names), never heavy objects.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
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
from pipeline.output.shards import ShardStats
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
    return "-".join([
        "restore-shard", parameters["shard_name"], parameters["config_hash"][:16],
        parameters["checkpoint_sha256"][:16] or "no-checkpoint", output,
    ])


class CommitBoard:
    """Where the flow's shard tasks learn that the shared pipeline committed their shard (one per output,
    in the flow's process; the pipeline's `on_commit` posts to it)."""

    def __init__(self, shard_names: list[str]) -> None:
        self._expected = set(shard_names)
        self._changed = threading.Condition()
        self._stats: dict[str, dict[str, Any]] = {}
        self._finished = False

    def commit(self, stats: ShardStats) -> None:
        with self._changed:
            self._stats[stats.shard] = stats.to_dict()
            self._changed.notify_all()

    def finish(self) -> None:
        """The pipeline ended (done or failed): waiters of shards it did not commit stop waiting."""
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def wait(self, shard_name: str) -> dict[str, Any] | None:
        """The shard's marker once committed, or None when the pipeline ended without it (or never had it)."""
        if shard_name not in self._expected:
            return None
        with self._changed:
            self._changed.wait_for(lambda: shard_name in self._stats or self._finished)
            return self._stats.get(shard_name)


_BOARDS: dict[str, CommitBoard] = {}  # output uri → the board of the pipeline writing it in this process
_ALONE = threading.Lock()  # shards redone alone take the output's driver lock one at a time


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


@task(name="run-shards")
def run_shards(config: dict[str, Any], shard_names: list[str], output_uri: str) -> int:
    """Stream the given shards through one pipeline, posting each commit to the output's board; returns
    the rows processed. Shards it leaves uncommitted are redone by their own tasks."""
    board = _BOARDS[output_uri]
    try:
        return run_job(JobConfig.from_mapping(config), shards=shard_names, on_commit=board.commit).rows_processed_now
    finally:
        board.finish()


@task(
    name="restore-shard",
    task_run_name="restore-shard {shard_name}",
    retries=SHARD_RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
    retry_jitter_factor=0.5,
    timeout_seconds=SHARD_TIMEOUT_S,
    cache_key_fn=shard_cache_key,
    persist_result=True,
)
def restore_shard(config: dict[str, Any], shard_name: str, config_hash: str, checkpoint_sha256: str,
                  output_uri: str) -> dict[str, Any]:
    """The shard's `_stats.json` once it is committed: by the flow's shared pipeline, else by this task
    running the shard alone (a retry, or the pipeline failed). Committed shards are never redone."""
    _maybe_fail_once(shard_name)
    board = _BOARDS.get(output_uri)
    stats = board.wait(shard_name) if board is not None else None
    if stats is not None:
        return stats
    with _ALONE:
        report = run_job(JobConfig.from_mapping(config), shards=[shard_name])
    if shard_name not in report.shard_stats:
        raise RuntimeError(f"{shard_name} did not commit (report: {report.summary()})")
    return report.shard_stats[shard_name]


@task(name="verify-output")
def verify_output(output_uri: str, expected_rows: int) -> dict[str, Any]:
    """Counts reconcile and every id appears exactly once; raises otherwise."""
    table = committed_tables(output_uri, columns=("id",))
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
                    ray_address: str | None = None, html_report: bool = True) -> dict[str, Any]:
    """Restore a dataset: plan shards, run them all on Ray in one pipeline, verify, report.

    Give the job either inline (`config`, the same mapping a job YAML holds) or as `config_path`.
    Ray is started locally unless `ray_address` (or the config's) says where to join one.
    """
    logger = get_run_logger()
    started = time.perf_counter()
    job = load_config(config, config_path, ray_address)
    job_data = job.to_dict()
    plan = plan_shards(job_data)
    names = [shard["name"] for shard in plan["shards"]]
    # The output is the truth: a shard missing there is redone even if Prefect's cache remembers it (the
    # output was deleted or moved), and the fresh result replaces the cached one.
    pending = [shard["name"] for shard in plan["shards"] if not shard["committed"]]
    logger.info("%d shards (%d already committed)", len(names), len(names) - len(pending))

    progress_id = create_progress_artifact(progress=0.0, description=f"shards committed for {job.output.uri}")
    shard_rows = []
    uri = job.output.uri
    with ray_session(job.execution):
        runner = None
        if pending:
            _BOARDS[uri] = CommitBoard(pending)
            runner = run_shards.submit(job_data, pending, uri)
        try:
            futures = {}
            for name in names:
                shard_task = restore_shard.with_options(refresh_cache=True) if name in pending else restore_shard
                futures[name] = shard_task.submit(job_data, name, plan["config_hash"], plan["checkpoint_sha256"], uri)
            for name in names:
                shard_rows.append(_table_row(name, futures[name].result()))
                update_progress_artifact(progress_id, progress=100.0 * len(shard_rows) / len(names))
            if runner is not None:
                runner.wait()
                if runner.state.is_failed():
                    logger.warning("the shared pipeline failed; its uncommitted shards were redone one by one")
        finally:
            _BOARDS.pop(uri, None)

    summary = verify_output(uri, plan["total_rows"])
    wall = time.perf_counter() - started
    create_table_artifact(table=shard_rows, key="shard-stats", description="per-shard counts, time and metrics")
    create_markdown_artifact(markdown=_markdown_report(uri, plan, summary, shard_rows, wall),
                             key="restore-report", description="job report")
    if html_report:
        summary["html_report"] = write_html_report(uri)
    summary["wall_s"] = round(wall, 3)
    return summary

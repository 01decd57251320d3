"""Overhead of the Prefect flow over a bare `run_job` on the same input (opencv engine, fresh outputs).

    python bench/flow_overhead.py [--images DIR] [--masks DIR] [--shard-size N] [--runs N] [--shards-per-task N ...]

Both variants run in this process against one shared local Ray (started once, not timed), so the
difference is Prefect itself: the ephemeral API's start-up (first flow run), task/state bookkeeping,
result persistence and artifacts, and one pipeline set-up per task (`--shards-per-task` sets how many
shards share one; each value given is a row). Prints a table with medians.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runnable from a checkout without installing


def _config(images: str, masks: str, output: str, shard_size: int) -> dict:
    return {"inputs": {"uris": [images]}, "masks": {"method": "given", "options": {"mask_dir": masks}},
            "engine": {"name": "opencv"}, "execution": {"shard_size": shard_size}, "output": {"uri": output}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(REPO / "samples" / "images"))
    parser.add_argument("--masks", default=str(REPO / "samples" / "masks"))
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shards-per-task", type=int, nargs="+", default=[1, 1000])
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="matpipe-bench-prefect-"))
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    import ray

    from flows.restore import restore_dataset
    from pipeline.config import JobConfig
    from pipeline.job import run_job

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    work = Path(tempfile.mkdtemp(prefix="matpipe-bench-flow-"))
    bare, flow, first_flow = [], {n: [] for n in args.shards_per_task}, None
    # Warm Ray's workers once so neither variant pays for them.
    run_job(JobConfig.from_mapping(_config(args.images, args.masks, str(work / "warm"), args.shard_size)))
    for i in range(args.runs + 1):
        started = time.perf_counter()
        run_job(JobConfig.from_mapping(_config(args.images, args.masks, str(work / f"bare{i}"), args.shard_size)))
        bare.append(time.perf_counter() - started)
        for per_task in args.shards_per_task:
            started = time.perf_counter()
            restore_dataset(config=_config(args.images, args.masks, str(work / f"flow{i}-{per_task}"),
                                           args.shard_size), html_report=False, shards_per_task=per_task)
            elapsed = time.perf_counter() - started
            if i == 0 and first_flow is None:
                first_flow = elapsed  # includes the ephemeral API server's start-up
            elif i > 0:
                flow[per_task].append(elapsed)
    bare_median = statistics.median(bare[1:])
    print(f"\n{'variant':<40}{'seconds':>10}{'overhead s':>12}{'overhead %':>12}")
    print(f"{'bare run_job (median)':<40}{bare_median:>10.2f}{'':>12}{'':>12}")
    for per_task, times in flow.items():
        median = statistics.median(times)
        label = f"flow, {per_task} shard(s)/task (median)"
        print(f"{label:<40}{median:>10.2f}{median - bare_median:>12.2f}{100 * (median - bare_median) / bare_median:>11.1f}%")
    print(f"{'flow, first run (API start-up)':<40}{first_flow:>10.2f}{first_flow - bare_median:>12.2f}"
          f"{100 * (first_flow - bare_median) / bare_median:>11.1f}%")
    ray.shutdown()


if __name__ == "__main__":
    main()

"""How busy the GPUs of a Ray cluster are during a job: a local multi-node cluster with simulated GPUs.

    python bench/cluster.py                                 # 3 GPU nodes, 2400 rows in 24 shards, 150 ms/row
    python bench/cluster.py --gpus 4 --rows 3200 --shards 32 --latency 0.15
    python bench/cluster.py --per-batch-delay               # the hook of older code (delay_s per batch)

A `ray.cluster_utils.Cluster` runs a head with 2 CPUs and `--gpus` worker nodes declaring one GPU and
`--worker-cpus` CPUs each (on a CPU-only machine a GPU is only a declared resource: Ray schedules on it, nothing
computes on it). The inpainting "model" is OpenCV on tiny images with a fixed latency per image added by the
inpainting stage's delay hook (`MATPIPE_FAULT_INJECTION` `{"delay_per_row_s": x}`, or with
`--per-batch-delay` `{"delay_s": x * batch}` for code that only has the per-batch form): the latency plays
the GPU forward, the rest of the pipeline is real. Keep the latency well above the per-row Python overhead of
this machine (100–200 ms/row on 2 shared cores), or the bench measures the CPUs, not the scheduling.

Reported, per run:
- ideal s: rows × latency / GPUs, the wall time if every GPU computed all the time;
- GPU busy %: simulated GPU-seconds (rows × latency) / (GPUs × wall);
- driver CPU %: CPU time of this (the driver's) process during `run_job` over its wall time;
- model loads: inpainting engines built during the job (counted through the `count_loads_dir` hook;
  "?" when the code under test does not have it);
- first s / busy in span / tail s: where the idle GPU time lies, from each inpainting actor's log of its
  simulated calls (the `busy_log_dir` hook): seconds until the last actor's first call (start-up), busy
  share between each actor's first and last call (starvation), seconds after the last call (commit).

On this 2-core machine the start-up (~18 s) is the cost of starting a dozen Ray worker processes (3 s CPU
each) of four simulated nodes on the same two cores; on a real cluster each node starts its own. The fixed
start-up weighs less the longer the job: compare `--rows 2400` with `--rows 4800 --shards 48`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/ itself, whose pipeline.py would shadow the package


def make_dataset(root: Path, rows: int, size: int) -> tuple[Path, Path]:
    """`rows` tiny JPEGs and their given masks (a box in the middle)."""
    from PIL import Image

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    hole = np.zeros((size, size), np.uint8)
    hole[size // 3: 2 * size // 3, size // 3: 2 * size // 3] = 255
    for index in range(rows):
        name = f"img{index:05d}"
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{name}.jpg", quality=90)
        Image.fromarray(hole).save(masks / f"{name}.png")
    return images, masks


def _forget_cluster_address(cluster: object) -> None:
    """cluster_utils records its head in /tmp/ray/ray_current_cluster, where every plain `ray.init()` on the
    machine would then find it and join it: on a shared machine, delete the record at once (if it is ours)."""
    from ray._common.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        with open(path) as handle:
            recorded = handle.read().strip()
    except OSError:
        return
    if recorded == cluster.gcs_address:
        os.remove(path)


def start_cluster(gpus: int, worker_cpus: int) -> object:
    from ray.cluster_utils import Cluster

    # The nodes' processes inherit this environment: workers import the package from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False})
    _forget_cluster_address(cluster)
    for _ in range(gpus):
        cluster.add_node(num_cpus=worker_cpus, num_gpus=1)
    cluster.wait_for_nodes()
    return cluster


def run_once(args: argparse.Namespace, work: Path, images: Path, masks: Path) -> dict:
    import ray

    from pipeline.config import JobConfig
    from pipeline.job import run_job

    loads_dir, busy_dir = work / "loads", work / "busy"
    loads_dir.mkdir()
    busy_dir.mkdir()
    batch = args.batch
    hook: dict[str, object] = {"count_loads_dir": str(loads_dir), "busy_log_dir": str(busy_dir)}
    if args.per_batch_delay:
        hook["delay_s"] = args.latency * batch
    else:
        hook["delay_per_row_s"] = args.latency
    os.environ["MATPIPE_FAULT_INJECTION"] = json.dumps(hook)
    config = JobConfig.from_mapping({
        "inputs": {"uris": [str(images)]}, "output": {"uri": str(work / "out")},
        "masks": {"method": "given", "options": {"mask_dir": str(masks)}},
        "engine": {"name": "opencv"},
        "metrics": {"enabled": True},
        "execution": {"shard_size": args.rows // args.shards, "batch_size": {"inpaint": batch},
                      **json.loads(args.execution)},
    })
    cluster = start_cluster(args.gpus, args.worker_cpus)
    try:
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "MATPIPE_FAULT_INJECTION": json.dumps(hook)}})
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        started, cpu_started, epoch = time.perf_counter(), time.process_time(), time.time()
        report = run_job(config)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        ray.shutdown()
        cluster.shutdown()
    if report.counts.get("ok", 0) != report.total_rows:
        raise RuntimeError(f"not every row was restored: {report.counts} {report.errors}")
    loads = len(list(loads_dir.iterdir()))
    ideal = report.total_rows * args.latency / args.gpus
    return {"gpus": args.gpus, "rows": report.total_rows, "wall_s": wall, "ideal_s": ideal,
            "gpu_busy": ideal / wall, "driver_cpu": cpu / wall, "model_loads": loads or "?",
            "rows_per_s": report.total_rows / wall, **timeline(busy_dir, epoch, wall)}


def timeline(busy_dir: Path, epoch: float, wall: float) -> dict:
    """Where the GPUs' idle time lies, from the actors' busy logs (see InpaintStage's `busy_log_dir`):
    first s = until the first model call on the last actor to start (start-up: planning, actors, models);
    busy in span = busy share between each actor's first call start and last call end (starvation);
    tail s = from the last call's end to the job's end (commit, markers, report)."""
    spans, ready = [], []
    for log in busy_dir.iterdir():
        entries = [line.split() for line in log.read_text().splitlines() if line.strip()]
        ready += [float(e[0]) - epoch for e in entries if int(e[2]) == 0]  # the actor's constructor finished
        calls = [(float(e[0]), float(e[1])) for e in entries if int(e[2]) > 0]
        if calls:
            spans.append((min(c[0] for c in calls), max(c[1] for c in calls), sum(c[1] - c[0] for c in calls)))
    if not spans:
        return {}
    print("inpainting actors ready at (s after the job started):", ", ".join(f"{r:.1f}" for r in sorted(ready)),
          "; first calls at:", ", ".join(f"{start - epoch:.1f}" for start, _, _ in sorted(spans)))
    span = sum(end - start for start, end, _ in spans)
    return {"first_s": max(start for start, _, _ in spans) - epoch, "busy_in_span": sum(b for *_, b in spans) / span,
            "tail_s": epoch + wall - max(end for _, end, _ in spans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=3, help="worker nodes, one simulated GPU each")
    parser.add_argument("--worker-cpus", type=int, default=2, help="CPUs each worker node declares")
    parser.add_argument("--rows", type=int, default=2400)
    parser.add_argument("--shards", type=int, default=24)
    parser.add_argument("--size", type=int, default=48, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16, help="execution.batch_size.inpaint")
    parser.add_argument("--latency", type=float, default=0.15, help="simulated GPU seconds per image")
    parser.add_argument("--per-batch-delay", action="store_true",
                        help="use the per-batch delay hook (delay_s = latency × batch) of older code")
    parser.add_argument("--execution", default="{}", help="extra execution config as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="matpipe-cluster-") as tmp:
        work = Path(tmp)
        images, masks = make_dataset(work / "data", args.rows, args.size)
        result = run_once(args, work, images, masks)
    header = f"{'GPUs':>4} {'rows':>6} {'wall s':>8} {'ideal s':>8} {'GPU busy':>9} {'driver CPU':>11} " \
             f"{'model loads':>11} {'rows/s':>8} {'first s':>8} {'busy in span':>12} {'tail s':>7}"
    print(header)
    print(f"{result['gpus']:>4} {result['rows']:>6} {result['wall_s']:>8.1f} {result['ideal_s']:>8.1f} "
          f"{result['gpu_busy']:>9.0%} {result['driver_cpu']:>11.1%} {result['model_loads']!s:>11} "
          f"{result['rows_per_s']:>8.2f} {result.get('first_s', float('nan')):>8.1f} "
          f"{result.get('busy_in_span', float('nan')):>12.0%} {result.get('tail_s', float('nan')):>7.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""End-to-end throughput of `matpipe run` next to the model alone, and memory at two dataset sizes.

    python bench/pipeline.py                      # OpenCV at 50 and 300 images, random-weight MAT-256 at 32
    python bench/pipeline.py --engines opencv --counts 50 300
    python bench/pipeline.py --engines mat --mat-count 48

For each engine the same synthetic JPEG dataset (photo-like pictures with a watermark-sized given mask)
is restored twice, each time in a fresh process: by the engine alone (images decoded up front, one
`inpaint` call per image, as the job's inpainting actor makes them, all cores) and by the whole job
(`run_job`: Ray Data streaming decode → mask → inpaint → metrics → encode → Parquet commit, on a local
Ray started beforehand so its start-up is not counted). Reported:

- model-only images/s (measured before and after the job, averaged: the CPUs may be shared) and
  end-to-end images/s (job wall time, including actor start and model load, on a Ray warmed up by a
  4-image job), their ratio, the
  steady-state end-to-end rate (slope of committed rows over time after the first commit: what a large
  dataset sees once the pipeline is full) and its ratio, and how busy the model was during the job
  (sum of the rows' inpainting time over the job's wall time);
- CPU seconds per image of the model alone and of the whole job (driver, Ray daemons and workers), and
  their ratio: unlike wall time this holds on a shared machine, and on a dedicated one the job's
  throughput is bounded by it (the share of the CPUs the job spends on the model);
- peak memory of the job: the driver's RSS and its private part (RSS counts the object store's pages the
  driver touched, shared with the workers), the driver's private memory at the first and at the last
  commit (growth while streaming: what a long job would accumulate), Ray's object-store use and the
  whole process tree's PSS (driver + Ray's daemons and workers, shared pages counted once), sampled every
  0.25 s.

MAT runs with random weights at 256² (the 512² network takes ~7 s per image on a 2-core CPU); speed does
not depend on the weights' values.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# ------------------------------------------------------------------------------------------------ data


def photo_like(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour fields plus fine texture: compresses and inpaints like a photo, not like noise."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (max(2, height // 64), max(2, width // 64), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(rng.normal(0, 18, (height, width)).astype(np.float32), (0, 0), 1.2)
    return np.clip(image + texture[..., None], 0, 255).astype(np.uint8)


def make_dataset(root: Path, count: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """`count` JPEGs and their given masks (a watermark-sized box in a corner, ~5 % of the image)."""
    from PIL import Image

    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    height, width = size
    for index in range(count):
        name = f"img{index:05d}"
        Image.fromarray(photo_like(height, width, index)).save(images / f"{name}.jpg", quality=92)
        hole = np.zeros((height, width), np.uint8)
        box_h, box_w = height // 6, width // 3
        top, left = height - box_h - height // 20, width - box_w - width // 20
        hole[top:top + box_h, left:left + box_w] = 255
        Image.fromarray(hole).save(masks / f"{name}.png")
    return images, masks


def make_random_mat(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from matcore import Generator

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in Generator(256).state_dict().items()}, str(path))
    return path


# ------------------------------------------------------------------------------------------------ measuring


def _proc_tree(root_pid: int) -> list[int]:
    """`root_pid` and all its descendants, from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, frontier = [root_pid], [root_pid]
    while frontier:
        children = [child for pid in frontier for child in parents.get(pid, [])]
        tree.extend(children)
        frontier = children
    return tree


def _proc_kib(pid: int, path: str, field: str) -> int:
    try:
        with open(f"/proc/{pid}/{path}") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # the process ended between sampling and reading: it holds no memory any more
        return 0
    return 0


def _tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of `root_pid` and its live descendants (all threads), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _proc_tree(root_pid):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


def driver_private_bytes() -> int:
    """This process's private memory (RSS less the pages it shares: libraries, the object store's mapping)."""
    return sum(_proc_kib(os.getpid(), "smaps_rollup", field) for field in ("Private_Clean", "Private_Dirty")) * 1024


class MemorySampler:
    """Peak driver RSS, process-tree PSS (Linux /proc) and Ray object-store use, sampled in a thread.

    The object store holds every batch in flight between stages: its peak is the direct measure of
    what backpressure bounds. The tree's PSS also moves with how many Ray worker processes happen to
    be alive (100–300 MiB each), which has nothing to do with the data.
    """

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.peak_driver_rss = 0
        self.peak_driver_private = 0
        self.peak_tree_pss = 0
        self.peak_object_store = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        self.peak_driver_rss = max(self.peak_driver_rss, _proc_kib(me, "status", "VmRSS") * 1024)
        self.peak_driver_private = max(self.peak_driver_private, driver_private_bytes())
        total = sum(_proc_kib(pid, "smaps_rollup", "Pss") for pid in _proc_tree(me)) * 1024
        self.peak_tree_pss = max(self.peak_tree_pss, total)
        import ray

        if ray.is_initialized():
            capacity = ray.cluster_resources().get("object_store_memory", 0)
            free = ray.available_resources().get("object_store_memory", capacity)
            self.peak_object_store = max(self.peak_object_store, int(capacity - free))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def model_only(images_dir: Path, masks_dir: Path, engine: str, checkpoint: str | None, precision: str) -> dict:
    """Images/s of the engine alone on pre-decoded images (one call per image, like the job's actor)."""
    import torch

    from pipeline.imageio import decode_image
    from pipeline.masks.maskio import read_mask_file
    from matcore.build import build_engine
    from pipeline.stages import row_seed

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)  # what the job gives its single CPU inpainting actor
    import cv2

    cv2.setNumThreads(threads)
    names = sorted(p.name for p in images_dir.iterdir())
    images = [decode_image(images_dir / name).rgb for name in names]
    holes = [read_mask_file(masks_dir / (Path(name).stem + ".png")) for name in names]
    model = build_engine(engine, checkpoint=checkpoint, device="cpu", precision=precision)
    model.inpaint([images[0]], [holes[0]], [0])  # warm-up (lazy init, allocator)
    start, cpu_start = time.perf_counter(), time.process_time()
    for name, image, hole in zip(names, images, holes):
        model.inpaint([image], [hole], [row_seed(0, name)])
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"images": len(names), "seconds": elapsed, "images_per_s": len(names) / elapsed,
            "cpu_s_per_image": cpu / len(names)}


def end_to_end(images_dir: Path, masks_dir: Path, output: Path, engine: str, checkpoint: str | None,
               shard_size: int, execution: dict | None = None, precision: str = "auto") -> dict:
    """Images/s of run_job with Ray already up, and the job's peak memory."""
    import ray

    from pipeline.config import JobConfig
    from pipeline.job import run_job

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False

    def job(images: Path, out: Path) -> JobConfig:
        return JobConfig.from_mapping({
            "inputs": {"uris": [str(images)]}, "output": {"uri": str(out)},
            "masks": {"method": "given", "options": {"mask_dir": str(masks_dir)}},
            "engine": {"name": engine, "dtype": precision, **({"checkpoint": checkpoint} if checkpoint else {})},
            "execution": {"shard_size": shard_size, **(execution or {})},
        })

    # Warm Ray up with a 4-image job first, as a long-running cluster is: its worker processes exist and
    # have imported the stages, so the measured job's memory and time are about the data, not about how
    # many idle Ray workers a short run happened to spawn.
    warm = output.parent / f"{output.name}-warm-images"
    warm.mkdir(parents=True)
    for source in sorted(images_dir.iterdir())[:4]:
        (warm / source.name).write_bytes(source.read_bytes())
    run_job(job(warm, output.parent / f"{output.name}-warm-out"))
    config = job(images_dir, output)
    commits: list[tuple[float, int]] = []
    private_at_commit: list[int] = []  # the driver's own memory as shards commit: does it grow with rows?

    def committed(stats: object) -> None:
        commits.append((time.perf_counter(), stats.rows))
        private_at_commit.append(driver_private_bytes())

    with MemorySampler() as memory:
        start, cpu_start = time.perf_counter(), _tree_cpu_seconds(os.getpid())
        report = run_job(config, on_commit=committed)
        # Idle workers are kept alive (see _measure), so the tree still holds everyone who worked.
        elapsed, cpu = time.perf_counter() - start, _tree_cpu_seconds(os.getpid()) - cpu_start
    ray.shutdown()
    if report.counts["ok"] != report.total_rows:
        raise RuntimeError(f"the benchmark job did not restore every image: {report.counts}")
    from pipeline.output.shards import committed_tables

    inpaint_seconds = sum(t or 0.0 for t in committed_tables(str(output)).column("time_inpaint_s").to_pylist())
    return {
        "images": report.total_rows, "ok": report.counts["ok"], "seconds": elapsed,
        "images_per_s": report.total_rows / elapsed, "steady_images_per_s": steady_rate(commits),
        "model_busy": inpaint_seconds / elapsed, "cpu_s_per_image": cpu / report.total_rows,
        "peak_driver_rss": memory.peak_driver_rss, "peak_driver_private": memory.peak_driver_private,
        "private_first_commit": private_at_commit[0], "private_last_commit": private_at_commit[-1],
        "peak_tree_pss": memory.peak_tree_pss,
        "peak_object_store": memory.peak_object_store,
    }


def steady_rate(commits: list[tuple[float, int]]) -> float | None:
    """Rows/s once the pipeline is full: the least-squares slope of rows committed against time over
    every commit after the first (start-up — Ray workers, actors, model load — lies before it; a slope
    rather than two end points, because shards finishing in the same batch commit in bursts)."""
    if len(commits) < 8:  # fewer points and the bursts dominate the slope
        return None
    times = np.array([t for t, _ in commits[1:]])
    rows = np.cumsum([count for _, count in commits])[1:]
    if np.ptp(times) <= 0:
        return None
    slope = np.polyfit(times - times[0], rows, 1)[0]
    return float(slope) if slope > 0 else None


# ------------------------------------------------------------------------------------------------ driver


def _child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints its result as JSON on the last line."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    images, masks = Path(args.images), Path(args.masks)
    if args.child == "model":
        result = model_only(images, masks, args.engine, args.checkpoint, args.dtype)
    else:
        result = end_to_end(images, masks, Path(args.output), args.engine, args.checkpoint, args.shard_size,
                            json.loads(args.execution or "{}"), args.dtype)
    print(json.dumps(result))


def _measure(kind: str, engine: str, images: Path, masks: Path, work: Path, checkpoint: str | None,
             shard_size: int, execution: str | None = None, dtype: str = "auto") -> dict:
    """Run one measurement in a fresh process (clean memory peaks, no state shared between runs)."""
    command = [sys.executable, __file__, "--child", kind, "--engine", engine, "--images", str(images),
               "--masks", str(masks), "--output", str(work / f"out-{kind}-{time.time_ns()}"),
               "--shard-size", str(shard_size), "--dtype", dtype]
    if checkpoint:
        command += ["--checkpoint", checkpoint]
    if execution and kind == "e2e":
        command += ["--execution", execution]
    # Idle Ray workers are kept for a minute instead of 1 s, so the process count (and with it the tree's
    # memory) does not depend on when workers happen to be recycled.
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_idle_worker_killing_time_threshold_ms": "60000"}
    if kind == "model":
        env["OMP_NUM_THREADS"] = "1"  # as Ray sets it in a 1-CPU actor; torch threads are set explicitly
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["opencv", "mat"], choices=["opencv", "mat"])
    parser.add_argument("--counts", nargs="+", type=int, default=[50, 300], help="dataset sizes for OpenCV")
    parser.add_argument("--mat-count", type=int, default=32, help="dataset size for MAT-256 (random weights)")
    parser.add_argument("--size", default="384x512", help="OpenCV image size HxW (MAT uses 256x256)")
    parser.add_argument("--shard-size", type=int, default=10)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                        help="MAT precision of both the model-only and the end-to-end runs (engine.dtype)")
    parser.add_argument("--execution", help='extra job `execution` settings as JSON, e.g. \'{"inpaint_actors": 2}\'')
    parser.add_argument("--child", choices=["model", "e2e"], help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    parser.add_argument("--masks", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return

    height, width = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="matpipe-bench-") as tmp:
        work = Path(tmp)
        plans = [("opencv", count, (height, width), None) for count in args.counts] if "opencv" in args.engines else []
        if "mat" in args.engines:
            plans.append(("mat", args.mat_count, (256, 256), str(make_random_mat(work / "mat256.safetensors"))))
        for engine, count, size, checkpoint in plans:
            images, masks = make_dataset(work / f"{engine}-{count}", count, size)
            # Model alone before and after the job, averaged: the machine's load drifts (shared CPUs).
            before = _measure("model", engine, images, masks, work, checkpoint, args.shard_size, dtype=args.dtype)
            e2e = _measure("e2e", engine, images, masks, work, checkpoint, args.shard_size, args.execution,
                           args.dtype)
            after = _measure("model", engine, images, masks, work, checkpoint, args.shard_size, dtype=args.dtype)
            model = {key: (before[key] + after[key]) / 2 for key in ("images_per_s", "cpu_s_per_image")}
            rows.append((engine, count, size, model, e2e))
            print(f"measured {engine} × {count}", file=sys.stderr, flush=True)

    label = {"opencv": "opencv (telea)", "mat": "MAT-256 (random weights)"}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nmachine: {os.cpu_count()} CPUs (load average {load:.1f} at the end), Ray local (started before "
          f"timing), shard size {args.shard_size}\n")
    print("| engine | images | size | model-only img/s | end-to-end img/s (wall) | ratio | end-to-end img/s "
          "(steady) | ratio | model busy in job | CPU-s/img model → job | model / job CPU | peak driver RSS "
          "| peak driver private | driver private, first → last commit | peak object store | peak tree PSS |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for engine, count, size, model, e2e in rows:
        steady = e2e["steady_images_per_s"]
        steady_cells = f"{steady:.2f} | {steady / model['images_per_s']:.0%}" if steady else "– | –"
        print(f"| {label[engine]} | {count} | {size[1]}×{size[0]} | {model['images_per_s']:.2f} | "
              f"{e2e['images_per_s']:.2f} | {e2e['images_per_s'] / model['images_per_s']:.0%} | {steady_cells} | "
              f"{e2e['model_busy']:.0%} | {model['cpu_s_per_image']:.3f} → {e2e['cpu_s_per_image']:.3f} | "
              f"{model['cpu_s_per_image'] / e2e['cpu_s_per_image']:.0%} | "
              f"{_mib(e2e['peak_driver_rss'])} | {_mib(e2e['peak_driver_private'])} | "
              f"{_mib(e2e['private_first_commit'])} → {_mib(e2e['private_last_commit'])} | "
              f"{_mib(e2e['peak_object_store'])} | {_mib(e2e['peak_tree_pss'])} |")
    opencv_rows = [row for row in rows if row[0] == "opencv"]
    if len(opencv_rows) >= 2:
        small, large = opencv_rows[0][4], opencv_rows[-1][4]
        print(f"\nmemory {opencv_rows[0][1]} → {opencv_rows[-1][1]} images: driver RSS "
              f"{large['peak_driver_rss'] / small['peak_driver_rss'] - 1:+.1%}, driver private "
              f"{large['peak_driver_private'] / small['peak_driver_private'] - 1:+.1%} (while streaming the "
              f"{opencv_rows[-1][1]}: {large['private_last_commit'] / large['private_first_commit'] - 1:+.1%} from the "
              f"first commit to the last), object store "
              f"{large['peak_object_store'] / max(small['peak_object_store'], 1) - 1:+.1%}, process tree PSS "
              f"{large['peak_tree_pss'] / small['peak_tree_pss'] - 1:+.1%}")


if __name__ == "__main__":
    main()

"""Bookkeeping at scale: plan, then resume, a job of 100,000 shards (no Ray, no model).

    python bench/plan_scale.py                  # 100,000 one-row shards, all committed before the resume
    python bench/plan_scale.py --shards 20000

The input is one Parquet file of tiny image blobs, cut into one-row shards. After the first plan every
shard is marked committed by writing its data file and marker directly (the setup is not timed), as a
finished run would leave them. Timed, each in this process: the first `plan_job` (listing, manifest), the
resumed `plan_job` (manifest and listing reloaded, markers checked), and a resumed `run_job` with nothing
left to do (plan, markers, report). Prints one table; CPU seconds (`process_time`) are the machine-load-proof
figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/ itself, whose pipeline.py would shadow the package


def timed(function, *args, **kwargs):
    started, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started, time.process_time() - cpu


def fake_commits(out: Path, shards: list[dict], config_hash: str) -> None:
    """What a finished run leaves: a data file and a marker per shard (plain writes: setup, not timed)."""
    (out / "data").mkdir(exist_ok=True)
    (out / "_shards").mkdir(exist_ok=True)
    for shard in shards:
        data = out / "data" / f"{shard['name']}.parquet"
        data.write_bytes(b"PAR1 not really\n")
        marker = {"shard": shard["name"], "rows": shard["rows"], "counts": {"ok": shard["rows"]},
                  "timings_s": {}, "metrics": {}, "errors": {}, "data_file": f"data/{shard['name']}.parquet",
                  "data_size": data.stat().st_size, "data_sha256": "", "image_files": 0,
                  "config_hash": config_hash, "wall_s": 0.0, "committed_at": ""}
        (out / "_shards" / f"{shard['name']}_stats.json").write_text(json.dumps(marker))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=100_000)
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import JobConfig
    from pipeline.job import plan_job, run_job

    with tempfile.TemporaryDirectory(prefix="matpipe-plan-") as tmp:
        work = Path(tmp)
        blob = b"\x89PNG tiny"
        pq.write_table(pa.table({"id": [f"row{i:06d}" for i in range(args.shards)],
                                 "image": pa.array([blob] * args.shards, pa.binary())}), work / "rows.parquet")
        config = JobConfig.from_mapping({
            "inputs": {"uris": [str(work / "rows.parquet")], "id_column": "id"}, "output": {"uri": str(work / "out")},
            "masks": {"method": "given", "options": {"mask_dir": str(work)}}, "engine": {"name": "opencv"},
            "execution": {"shard_size": 1},
        })
        first, first_s, first_cpu = timed(plan_job, config)
        fake_commits(work / "out", first.shards, first.config_hash)
        resumed, resume_s, resume_cpu = timed(plan_job, config)
        report, run_s, run_cpu = timed(run_job, config)
    assert all(shard["committed"] for shard in resumed.shards), "the resume did not see the commits"
    assert report.shards_committed_now == 0 and report.shards_already_committed == args.shards
    print(f"{'shards':>8} {'step':<28} {'wall s':>8} {'CPU s':>8}")
    for step, wall, cpu in (("plan (list, manifest)", first_s, first_cpu),
                            ("resume plan (all committed)", resume_s, resume_cpu),
                            ("resume run_job (no work)", run_s, run_cpu)):
        print(f"{args.shards:>8} {step:<28} {wall:>8.2f} {cpu:>8.2f}")


if __name__ == "__main__":
    main()

"""Entry point for running a job on an existing Ray cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m flows.ray_entry --config job.yaml
    ray submit docker/cluster.yaml flows/ray_entry.py --config job.yaml

It joins the cluster it runs in (`address="auto"`) and runs the job directly, or through the Prefect flow
with `--prefect` (artifacts, retries and cache then come along; PREFECT_API_URL selects the server).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.config import JobConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="job YAML/JSON")
    parser.add_argument("--address", default="auto", help="Ray address to join (default: the cluster this runs in)")
    parser.add_argument("--prefect", action="store_true", help="run through the restore-dataset Prefect flow")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.prefect:
        from flows.restore import restore_dataset

        summary = restore_dataset(config_path=args.config, ray_address=args.address)
        print(json.dumps(summary, indent=2))
        return 0 if summary["counts"].get("failed", 0) == 0 else 1

    from pipeline.job import run_job

    config = JobConfig.from_file(args.config)
    config = config.replace(execution={"ray_address": args.address})
    report = run_job(config)
    print(report.summary())
    return 0 if report.complete and report.counts.get("failed", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

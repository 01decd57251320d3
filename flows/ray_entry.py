"""Entry point for running a job on an existing Ray cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m flows.ray_entry --config job.yaml
    ray submit docker/cluster.yaml flows/ray_entry.py --config job.yaml

It joins the cluster it runs in (`address="auto"`) and runs the job directly, or through the Prefect flow
with `--prefect` (artifacts, retries and cache then come along; PREFECT_API_URL selects the server).
`ray job submit` runs it in a copy of the working directory, so the job's output must be a location
every node and you can reach (`--output s3://…`, a shared mount, or an absolute path on a one-node
cluster); a relative `output.uri` would land inside that copy.

Exit status, as for `matpipe run`: 0 done, 1 rows failed (unless `--allow-failures [RATIO]`), 2 the job
could not start.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.console import configure_console
from pipeline.outcome import EXIT_CANNOT_RUN, EXIT_ROWS_FAILED, RowsFailedError, add_allow_failures, outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="job YAML/JSON")
    parser.add_argument("--output", metavar="URI", help="override the config's output.uri")
    parser.add_argument("--address", default="auto", help="Ray address to join (default: the cluster this runs in)")
    parser.add_argument("--prefect", action="store_true", help="run through the restore-dataset Prefect flow")
    add_allow_failures(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and third-party INFO lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_console(args.verbose)  # before Ray is imported: it reads its log level then

    from matcore.registry import CheckpointUnavailableError
    from pipeline.config import ConfigError, JobConfig
    from pipeline.job import JobError
    from pipeline.output.lock import OutputInUseError
    from pipeline.output.shards import ResumeConflictError
    from pipeline.sources import SourceError

    cannot_run = (ConfigError, SourceError, JobError, ResumeConflictError, CheckpointUnavailableError,
                  OutputInUseError, OSError)
    try:
        config = JobConfig.from_file(args.config).replace(execution={"ray_address": args.address})
        if args.output:
            config = config.replace(output={"uri": args.output})
        if args.prefect:
            from flows.restore import restore_dataset

            try:
                summary = restore_dataset(config=config.to_dict(), ray_address=args.address,
                                          allow_failures=args.allow_failures)
            except RowsFailedError as exc:
                print(f"flows.ray_entry: {exc}", file=sys.stderr)
                return EXIT_ROWS_FAILED
            print(json.dumps(summary, indent=2))
            return 0

        from pipeline.console import quiet_ray_data_console
        from pipeline.job import run_job

        if not args.verbose:
            quiet_ray_data_console()
        report = run_job(config)
    except cannot_run as exc:
        print(f"flows.ray_entry: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(report.summary())
    if not report.complete:
        print("flows.ray_entry: the job did not commit every shard; run it again to resume", file=sys.stderr)
        return EXIT_ROWS_FAILED
    result = outcome(report.counts, args.allow_failures)
    if result.failed:
        print(f"flows.ray_entry: {result.message(report.errors)}", file=sys.stderr)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())

"""`matpipe run`: clean a whole dataset — list, shard, mask, inpaint, measure and write, resumably.

Flags override the matching fields of `--config job.yaml`. Rerunning the same command resumes: shards
already committed in the output are skipped. Expected failures (bad configuration, missing input, an
output holding a different job) end with a one-line message and exit status 2. Failed rows are
reported in the output and the summary, and make the exit status 1 unless `--allow-failures [RATIO]`
accepts them (the rule of every matpipe command: `pipeline.outcome`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pipeline.outcome import EXIT_CANNOT_RUN, add_allow_failures, outcome

log = logging.getLogger(__name__)


def parse_masks(spec: str) -> dict[str, Any]:
    """`text` | `consistent` | `given:URI` | `sam:SOURCE` → the `masks` config section (method, options).

    `given:` takes a folder of mask files mirroring the images, or a `.parquet` file with a mask column.
    `sam:` takes where SAM's prompts come from: a COCO annotations `.json`, a prompts table (`.parquet`,
    `.jsonl`), or `text` / `consistent` to prompt SAM with that detector's boxes.
    """
    method, _, argument = spec.partition(":")
    if method in ("text", "consistent"):
        if argument:
            raise ValueError(f"--masks {method} takes no argument, got {spec!r}")
        return {"method": method}
    if method == "given":
        if not argument:
            raise ValueError("--masks given needs a location: given:PATH (a mask folder or a .parquet file)")
        key = "parquet" if argument.lower().endswith(".parquet") else "mask_dir"
        return {"method": "given", "options": {key: argument}}
    if method == "sam":
        if not argument:
            raise ValueError("--masks sam needs prompts: sam:COCO.json, sam:PROMPTS.parquet|.jsonl, sam:text "
                             "or sam:consistent")
        if argument in ("text", "consistent"):
            return {"method": "sam", "options": {"refine": argument}}
        key = "coco" if argument.lower().endswith(".json") else "prompts"
        return {"method": "sam", "options": {key: argument}}
    raise ValueError(f"--masks must be text, consistent, given:URI or sam:SOURCE, got {spec!r}")


def build_config(args: argparse.Namespace) -> Any:
    """The JobConfig from `--config` (if any) with the command-line flags applied on top."""
    from pipeline.config import ConfigError, JobConfig

    data: dict[str, Any] = JobConfig.from_file(args.config).to_dict() if args.config else {}

    def section(name: str) -> dict[str, Any]:
        return data.setdefault(name, {})

    if args.input:
        section("inputs")["uris"] = list(args.input)
    if args.output:
        section("output")["uri"] = args.output
    if args.write_images:
        section("output")["write_images"] = True
    if args.jpeg_tables:
        section("output")["jpeg_tables"] = args.jpeg_tables
    if args.jpeg:
        section("output")["jpeg"] = args.jpeg
    if args.masks:
        try:
            masks = parse_masks(args.masks)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        section("masks").update(method=masks["method"], options=masks.get("options", {}))
    if args.engine:
        section("engine")["name"] = args.engine
    if args.checkpoint:
        section("engine")["checkpoint"] = args.checkpoint
    if args.seed is not None:
        section("engine")["seed"] = args.seed
    if args.invert:
        section("engine")["invert"] = args.invert
    if args.shard_size is not None:
        section("execution")["shard_size"] = args.shard_size
    if args.ray_address:
        section("execution")["ray_address"] = args.ray_address
    if args.num_gpus_per_worker is not None:
        section("execution")["num_gpus_per_worker"] = args.num_gpus_per_worker
    if getattr(args, "id_column", None):
        section("inputs")["id_column"] = args.id_column
    if getattr(args, "image_column", None):
        section("inputs")["image_column"] = args.image_column
    return JobConfig.from_mapping(data)


def _run(args: argparse.Namespace) -> int:
    from matcore.registry import CheckpointUnavailableError
    from pipeline.config import ConfigError
    from pipeline.output.lock import OutputInUseError
    from pipeline.job import JobError, run_job
    from pipeline.progress import RowProgress
    from pipeline.output.shards import ResumeConflictError
    from pipeline.sources import SourceError

    expected = (ConfigError, SourceError, JobError, ResumeConflictError, CheckpointUnavailableError,
                OutputInUseError)
    if not getattr(args, "verbose", False):
        from pipeline.console import quiet_ray_data_console

        quiet_ray_data_console()
    try:
        config = build_config(args)
        report = run_job(config, progress=RowProgress())
    except expected as exc:
        print(f"matpipe run: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(report.summary())
    result = outcome(report.counts, args.allow_failures)
    if result.failed:
        print(f"matpipe run: {result.message(report.errors)}", file=sys.stderr)
    return result.exit_status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run` to the `matpipe` parser."""
    parser = subparsers.add_parser("run", help="clean a dataset (resumable Ray job)", description=__doc__)
    parser.add_argument("--input", action="append", metavar="URI",
                        help="image folder, Parquet file/folder, local or URI (s3://, gs://, any fsspec URL); repeatable")
    parser.add_argument("--output", metavar="URI", help="output folder (Parquet shards, report, optional images)")
    parser.add_argument("--masks", metavar="SPEC",
                        help="text | consistent | given:URI | sam:COCO.json|PROMPTS.parquet|text|consistent")
    parser.add_argument("--engine", choices=("auto", "mat", "opencv"),
                        help="auto (default): MAT when the checkpoint resolves, else OpenCV with a warning")
    parser.add_argument("--checkpoint", help="MAT checkpoint file or registry name (default places512)")
    parser.add_argument("--seed", type=int, help="base seed of the per-row seeds (default 0)")
    parser.add_argument("--invert", choices=("auto", "off"),
                        help="auto (default): recover pixels under a semi-transparent `consistent` watermark by "
                             "inverting its blend, inpaint only the rest; off: inpaint the whole hole")
    parser.add_argument("--shard-size", type=int, help="rows per shard, the unit of commit and resume (default 1000)")
    parser.add_argument("--ray-address", metavar="ADDR", help="join a Ray cluster: auto | ray://host:10001")
    parser.add_argument("--num-gpus-per-worker", type=float,
                        help="GPUs per inpainting actor (default: 1 where the cluster has GPUs, else 0)")
    parser.add_argument("--write-images", action="store_true",
                        help="also write image files mirroring the input tree, in the input's format")
    parser.add_argument("--jpeg-tables", choices=("high", "source"),
                        help="re-encoded JPEGs (--jpeg reencode, or a source that cannot be spliced): high "
                             "(default; quality 95, finer where the source was) or source (the source's own tables)")
    parser.add_argument("--jpeg", choices=("splice", "reencode"),
                        help="restored JPEGs: splice (default; keep the source's compressed blocks, re-code only "
                             "the changed ones) or reencode (the whole image, see --jpeg-tables)")
    parser.add_argument("--id-column", metavar="NAME",
                        help="Parquet inputs: the column with each row's id (default: an `id` column, else the "
                             "image's path)")
    parser.add_argument("--image-column", metavar="NAME",
                        help="Parquet inputs: the column with the images (default: the Image feature, a "
                             "{bytes, path} struct, a column named `image`, else the first binary column)")
    add_allow_failures(parser)
    parser.add_argument("--config", metavar="FILE", help="job configuration (YAML or JSON); flags override it")
    parser.set_defaults(func=_run)

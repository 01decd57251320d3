"""`matpipe config`: print a commented job configuration, or check one.

    matpipe config --example                                  # every section, field and default
    matpipe config --example --input photos/ --output out/ --masks text > job.yaml
    matpipe config --check job.yaml                           # validate it (exit 1 with the bad field)

The example is written from the config classes themselves, so it always lists every field with its
true default (see `examples/sample-job.yaml`, made with this command).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="print a commented example job config, or check one",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--example", action="store_true", help="print a commented job config with every default")
    action.add_argument("--check", metavar="FILE", help="validate a job config file")
    parser.add_argument("--input", action="append", metavar="URI", help="with --example: set inputs.uris")
    parser.add_argument("--output", metavar="URI", help="with --example: set output.uri")
    parser.add_argument("--masks", metavar="SPEC", help="with --example: text | consistent | given:URI | sam:SOURCE")
    parser.add_argument("--write-images", action="store_true", help="with --example: set output.write_images")
    parser.set_defaults(func=_run)


def example_values(args: argparse.Namespace) -> dict[str, Any]:
    """The fields `--example` sets, from its flags (the same spelling as `matpipe run`'s)."""
    from pipeline.commands.run import parse_masks

    values: dict[str, Any] = {}
    if args.input:
        values["inputs"] = {"uris": list(args.input)}
    if args.output or args.write_images:
        values["output"] = {"uri": args.output or "", **({"write_images": True} if args.write_images else {})}
    if args.masks:
        values["masks"] = parse_masks(args.masks)
    return values


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError, JobConfig
    from pipeline.config_example import render_example

    try:
        if args.check:
            config = JobConfig.from_file(args.check)
            print(f"{args.check}: ok ({len(config.inputs.uris)} input(s), masks {config.masks.method}, "
                  f"engine {config.engine.name}, output {config.output.uri})")
            return 0
        values = example_values(args)
        if values and not ("inputs" in values and values.get("output", {}).get("uri")):
            raise ConfigError("--example with flags needs both --input and --output (a job must have them)")
        sys.stdout.write(render_example(values))
        return 0
    except (ConfigError, ValueError) as exc:
        print(f"matpipe config: error: {exc}", file=sys.stderr)
        return 1

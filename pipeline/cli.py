"""The `matpipe` command line: a thin dispatcher over the sub-command modules in `pipeline.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.console import configure_console

# Sub-command modules are imported lazily by name so that `matpipe --help` stays fast and a broken
# optional dependency of one command does not take the others down.
COMMAND_MODULES = ("weights", "inpaint", "masks", "run", "report", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matpipe", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and Ray/Ray Data/Prefect/httpx INFO lines (held back by default)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"pipeline.commands.{name}")
        except ModuleNotFoundError as exc:  # a command still being written must not break the others
            if exc.name and exc.name.startswith("pipeline.commands"):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_console(args.verbose)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

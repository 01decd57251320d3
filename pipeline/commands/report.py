"""`matpipe report OUTPUT`: write the HTML report of a job output (counts, failures, metrics, thumbnails)."""
from __future__ import annotations

import argparse

from pipeline.report import ReportOptions, write_html_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="HTML report of a job output folder",
                                   description=__doc__)
    parser.add_argument("output", help="the job's output folder or URI")
    parser.add_argument("--html", help="where to write the report (default: OUTPUT/report.html)")
    parser.add_argument("--sample", type=int, default=12, help="rows shown as a sample (default 12)")
    parser.add_argument("--worst", type=int, default=12, help="worst-scoring rows shown (default 12)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        path = write_html_report(args.output, args.html, ReportOptions(sample_rows=args.sample, worst_rows=args.worst))
    except FileNotFoundError as exc:
        print(f"matpipe report: error: {exc}")
        return 1
    print(path)
    return 0

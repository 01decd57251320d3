"""`matpipe weights`: convert checkpoints to safetensors, download known ones, list what is cached.

Expected failures (unsafe or corrupt files, no network, bad checksum) end with a one-line message on
stderr and exit status 1; only bugs produce a traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from matcore.checkpoints import UnsafeCheckpointError, convert_checkpoint
from matcore.registry import (
    KNOWN_CHECKPOINTS,
    OFFICIAL_LICENSE_NOTE,
    CheckpointUnavailableError,
    cached_path,
    default_cache_dir,
    download_checkpoint,
    verify_checkpoint_file,
)

log = logging.getLogger(__name__)

# What a user can cause and fix; anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (UnsafeCheckpointError, CheckpointUnavailableError, ValueError, OSError)


def _fail(message: object) -> int:
    print(f"matpipe weights: error: {message}", file=sys.stderr)
    return 1


def _convert(args: argparse.Namespace) -> int:
    try:
        metadata = convert_checkpoint(args.source, args.destination, network=args.network)
    except EXPECTED_ERRORS as exc:
        return _fail(exc)
    print(
        f"wrote {args.destination}: network {metadata['network']}, {metadata['tensor_count']} tensors, "
        f"source sha256 {metadata['source_sha256']}"
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    spec = KNOWN_CHECKPOINTS[args.name]
    try:
        target = cached_path(spec, args.cache_dir)
        if target.is_file() and not args.url:
            verify_checkpoint_file(spec, target)
            log.info("%s is already cached", spec.name)
        else:
            target = download_checkpoint(
                spec, args.cache_dir, url=args.url, timeout=args.timeout, progress=sys.stderr.isatty()
            )
    except EXPECTED_ERRORS as exc:
        return _fail(exc)
    print(target)  # alone on stdout so scripts can capture it
    return 0


def _list(args: argparse.Namespace) -> int:
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows = [("NAME", "RES", "FILE", "CACHED", "SOURCE")]
    for spec in KNOWN_CHECKPOINTS.values():
        cached = "yes" if cached_path(spec, cache_dir).is_file() else "no"
        source = spec.url or "by hand (see below)"
        rows.append((spec.name, str(spec.resolution), spec.filename, cached, source))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    print(f"cache: {cache_dir}")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    manual = sorted({spec.manual_source for spec in KNOWN_CHECKPOINTS.values() if not spec.url})
    for source in manual:
        print(f"by hand: download from {source} and put the file in the cache directory above")
    print(f"license: official MAT weights are for {OFFICIAL_LICENSE_NOTE}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `weights convert|download|list` to the `matpipe` parser."""
    parser = subparsers.add_parser(
        "weights", help="convert, download and list MAT checkpoints", description=__doc__.splitlines()[0]
    )
    actions = parser.add_subparsers(dest="weights_command", required=True, metavar="{convert,download,list}")

    convert = actions.add_parser(
        "convert", help="convert a .pkl/.pth/.safetensors checkpoint to safetensors (no code from it runs)"
    )
    convert.add_argument("source", type=Path, help="checkpoint to read")
    convert.add_argument("destination", type=Path, help="safetensors file to write")
    convert.add_argument("--network", default="G_ema", help="network to extract: G_ema (default), G or D")
    convert.set_defaults(func=_convert)

    download = actions.add_parser("download", help="download a known checkpoint into the cache and verify it")
    download.add_argument("name", choices=list(KNOWN_CHECKPOINTS), help="known checkpoint name")
    download.add_argument(
        "--cache-dir", type=Path, default=None,
        help="cache directory (default: $MATPIPE_CACHE_DIR, else ~/.cache/matpipe/checkpoints)",
    )
    download.add_argument("--url", default=None, help="download from this URL instead (a mirror)")
    download.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    download.set_defaults(func=_download)

    listing = actions.add_parser("list", help="list known checkpoints and whether they are cached")
    listing.add_argument("--cache-dir", type=Path, default=None, help="cache directory to look in")
    listing.set_defaults(func=_list)

"""`matpipe masks`: write a hole mask (PNG, white = hole) for every image of a folder, plus a sidecar.

    matpipe masks --input photos/ --output masks/ --method text --position corners
    matpipe masks --input photos/ --output masks/ --method consistent --fit-sample 64
    matpipe masks --input photos/ --output masks/ --method given --mask-dir painted/ --size-mismatch resize
    matpipe masks --input photos/ --output masks/ --method sam --coco instances.json --category person

Each mask keeps its image's relative path and stem (`a/b.jpg` → `a/b.png`). The sidecar
(`masks.jsonl` or `masks.parquet` in the output folder) has one row per image: status (ok / flagged /
failed), error, hole ratio, and the provenance (method, boxes, scores, details). A failing image does
not stop the run; the exit status is 1 when any image failed.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("text", "consistent", "given", "sam")
SIDECAR_NAME = "masks"


# ------------------------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "masks", help="write a hole mask per image (text, consistent watermark, given, SAM)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the mask PNGs and the sidecar")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--sidecar", choices=("jsonl", "parquet"), default="jsonl", help="sidecar format")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="any option of the method's config (value parsed as JSON if it can be); repeatable")

    post = parser.add_argument_group("post-processing (defaults: the method's benchmarked settings)")
    grow = post.add_mutually_exclusive_group()
    grow.add_argument("--dilate", type=int, metavar="PX", help="grow holes by this many pixels")
    grow.add_argument("--dilate-percent", type=float, metavar="P", help="grow holes by P%% of the shorter side")
    post.add_argument("--min-area", type=int, metavar="PX", help="drop hole components smaller than this")
    post.add_argument("--max-hole-ratio", type=float, metavar="R",
                      help="flag (do not trust) masks covering more than this fraction of the image")

    text = parser.add_argument_group("text")
    text.add_argument("--position", choices=("anywhere", "corners", "edges"))
    text.add_argument("--min-score", type=float, help="minimum detector confidence of a text region")
    text.add_argument("--max-area-ratio", type=float, help="drop text regions larger than this image fraction")
    text.add_argument("--fill", choices=("glyphs", "box"), help="mask the letters (default) or whole boxes")
    text.add_argument("--sessions", type=int, help="parallel ONNX Runtime sessions")
    text.add_argument("--batch-size", type=int, help="images per detector forward")

    consistent = parser.add_argument_group("consistent")
    consistent.add_argument("--fit-sample", type=int, help="images the watermark is estimated from (default 64)")
    consistent.add_argument("--min-match-score", type=float,
                            help="lowest match score that counts as the watermark (the fit may set it higher: chance)")
    consistent.add_argument("--search", choices=("anywhere", "expected"), help="where to look for the watermark")
    consistent.add_argument("--template", type=Path, help="load a fitted template (.npz) instead of fitting")
    consistent.add_argument("--save-template", type=Path, help="write the fitted template (.npz)")

    given = parser.add_argument_group("given")
    given.add_argument("--mask-dir", type=Path, help="folder of masks mirroring --input")
    given.add_argument("--mask-parquet", type=Path, help="Parquet file with a mask column")
    given.add_argument("--mask-column", help="Parquet column of encoded masks (default 'mask')")
    given.add_argument("--key-column", help="column with each image's relative path (default 'path')")
    given.add_argument("--mask-suffix", help="mask file stem = image stem + this (e.g. _mask)")
    given.add_argument("--hole-value", choices=("white", "black"), help="which mask colour is the hole")
    given.add_argument("--size-mismatch", choices=("error", "resize"))
    given.add_argument("--missing", choices=("error", "empty"), help="an image without a mask fails or is empty")

    sam = parser.add_argument_group("sam")
    sam.add_argument("--sam-checkpoint", type=Path, help="SAM .pth file (default: the model type's file in the cache)")
    sam.add_argument("--sam-model-type", choices=("vit_b", "vit_l", "vit_h"))
    sam.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    sam.add_argument("--prompts", type=Path, help="Parquet/JSON-lines table of boxes/points per image")
    sam.add_argument("--coco", type=Path, help="COCO annotations whose boxes are the prompts")
    sam.add_argument("--category", action="append", default=[], help="COCO category to keep; repeatable")
    sam.add_argument("--refine", choices=("text", "consistent"), help="prompt SAM with that generator's boxes")
    sam.add_argument("--no-verify-checksum", action="store_true", help="skip the md5 check of published files")
    parser.set_defaults(func=run)


# Flag → config field, per method. Only flags the user set are passed, so config defaults stay in one place.
_FLAG_OPTIONS: dict[str, dict[str, str]] = {
    "text": {"position": "position", "min_score": "min_score", "max_area_ratio": "max_area_ratio",
             "fill": "fill", "sessions": "sessions", "batch_size": "batch_size"},
    "consistent": {"fit_sample": "max_fit_images", "min_match_score": "min_match_score", "search": "search"},
    "given": {"mask_dir": "mask_dir", "mask_parquet": "parquet", "mask_column": "column",
              "key_column": "key_column", "mask_suffix": "suffix", "hole_value": "hole_value",
              "size_mismatch": "size_mismatch", "missing": "missing"},
    "sam": {"sam_checkpoint": "checkpoint", "sam_model_type": "model_type", "device": "device",
            "prompts": "prompts", "coco": "coco", "refine": "refine", "key_column": "key_column"},
}


def _parse_option(text: str) -> tuple[str, Any]:
    key, separator, raw = text.partition("=")
    if not separator or not key:
        raise ValueError(f"--option expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method's config options from its flags and `--option KEY=VALUE`s (the latter win)."""
    options = {field: getattr(args, flag) for flag, field in _FLAG_OPTIONS[args.method].items()
               if getattr(args, flag, None) is not None}
    if args.method == "sam":
        if args.category:
            options["categories"] = tuple(args.category)
        if args.no_verify_checksum:
            options["verify_checksum"] = False
    options.update(_parse_option(item) for item in args.option)
    return options


def postprocess_config(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from pipeline.masks import default_postprocess

    defaults = default_postprocess(args.method)
    changes: dict[str, Any] = {}
    if args.dilate is not None:
        changes.update(dilate_px=args.dilate, dilate_percent=0.0)
    if args.dilate_percent is not None:
        changes.update(dilate_percent=args.dilate_percent, dilate_px=0)
    if args.min_area is not None:
        changes["min_component_area"] = args.min_area
    if args.max_hole_ratio is not None:
        changes["max_hole_ratio"] = args.max_hole_ratio
    return replace(defaults, **changes)


# ------------------------------------------------------------------------------------------ listing


def list_images(root: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under `root` (or `root` itself), sorted by relative path; hidden entries skipped."""
    from pipeline.masks.maskio import IMAGE_SUFFIXES

    if root.is_file():
        return [root]
    found = []
    excluded = exclude.resolve() if exclude is not None else None
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (excluded is None or (Path(folder) / d).resolve() != excluded))
        found.extend(Path(folder) / name for name in filenames
                     if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


# ------------------------------------------------------------------------------------------ running


@dataclass
class _Row:
    """One sidecar row."""

    path: str
    mask: str | None
    status: str
    error: str | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    provenance: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        row = {"path": self.path, "mask": self.mask, "status": self.status, "error": self.error,
               "width": self.width, "height": self.height, "seconds": self.seconds}
        provenance = self.provenance or {}
        row.update(method=provenance.get("method"), hole_ratio=provenance.get("hole_ratio"),
                   flag=provenance.get("flag"), boxes=provenance.get("boxes", []), scores=provenance.get("scores", []),
                   details=provenance.get("details", {}))
        return row


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _write_sidecar(rows: list[_Row], output: Path, fmt: str) -> Path:
    """Write all rows atomically (temp file, then rename) so a crash never leaves half a sidecar."""
    target = output / f"{SIDECAR_NAME}.{fmt}"
    temporary = output / f".{SIDECAR_NAME}.{fmt}.tmp"
    records = [row.as_dict() for row in rows]
    if fmt == "jsonl":
        with temporary.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=_json_default) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for record in records:  # nested, per-method details do not fit one Arrow schema: keep them as JSON
            record["details"] = json.dumps(record["details"], default=_json_default)
        pq.write_table(pa.Table.from_pylist(records), temporary)
    os.replace(temporary, target)
    return target


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fit(generator: Any, images: list[Path]) -> None:
    """Fit a dataset-level generator on a seeded sample of the images (unreadable ones are skipped)."""
    from pipeline.masks.maskio import read_rgb

    sample_size = getattr(getattr(generator, "config", None), "max_fit_images", 64)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(images), min(sample_size, len(images)), replace=False))
    sample = []
    for index in chosen:
        try:
            sample.append(read_rgb(images[index]))
        except Exception as exc:  # noqa: BLE001 - an unreadable image is left out of the sample
            log.warning("fit sample: skipping %s (%s)", images[index], exc)
    report = generator.fit(sample)
    summary = report.as_dict() if hasattr(report, "as_dict") else report
    print(f"fitted on {len(sample)} images: {summary}", file=sys.stderr)


def _build_generator(args: argparse.Namespace, images: list[Path]) -> Any:
    """The configured generator, fitted on the images (or given its saved template) when it needs it."""
    from pipeline.masks import build_mask_generator

    options = generator_options(args)
    if args.method == "consistent" and args.template is not None:
        from pipeline.masks.consistent import ConsistentWatermarkGenerator, WatermarkTemplate
        from pipeline.masks.registry import make_config

        return ConsistentWatermarkGenerator(make_config("consistent", options), WatermarkTemplate.load(args.template))
    generator = build_mask_generator(args.method, options)
    if hasattr(generator, "fit") and not getattr(generator, "fitted", True):
        _fit(generator, images)
        if args.save_template is not None and getattr(generator, "template", None) is not None:
            generator.template.save(args.save_template)
    return generator


def _decode(batch: Sequence[Path], root: Path, claimed: dict[str, str],
            rows: list[_Row]) -> list[tuple[_Row, np.ndarray]]:
    """Append a row per file to `rows`; return (row, uint8 H×W×3 image) for the files that decoded."""
    from pipeline.masks.maskio import read_rgb

    decoded = []
    for path in batch:
        relative = path.relative_to(root).as_posix()
        mask_relative = Path(relative).with_suffix(".png").as_posix()
        row = _Row(path=relative, mask=None, status="failed")
        rows.append(row)
        if mask_relative in claimed:  # a.jpg and a.png in one folder would share a.png
            row.error = f"mask name {mask_relative} already used by {claimed[mask_relative]}"
            continue
        claimed[mask_relative] = relative
        try:
            image = read_rgb(path)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is this row's failure
            row.error = f"cannot read image: {exc}"
            continue
        row.height, row.width = image.shape[:2]
        decoded.append((row, image))
    return decoded


def _write(row: _Row, outcome: Any, post_config: Any, output: Path, seconds: float) -> None:
    """Post-process one generator outcome (a MaskResult or the exception it raised) into its row and PNG."""
    from pipeline.masks import postprocess
    from pipeline.masks.maskio import write_hole_png

    if isinstance(outcome, Exception):
        row.error = f"{type(outcome).__name__}: {outcome}"
        return
    final = postprocess(outcome, post_config)
    mask_relative = Path(row.path).with_suffix(".png").as_posix()
    try:
        write_hole_png(output / mask_relative, final.hole)
    except OSError as exc:
        row.error = f"cannot write mask: {exc}"
        return
    row.mask = mask_relative
    row.status = "flagged" if final.flag else "ok"
    row.provenance = final.provenance()
    row.seconds = round(seconds, 4)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from pipeline.masks import GeneratorSetupError, MaskGenerationError

    if not args.input.exists():
        print(f"matpipe masks: error: input {args.input} does not exist", file=sys.stderr)
        return 1
    root = args.input if args.input.is_dir() else args.input.parent
    images = list_images(args.input, exclude=args.output)
    if not images:
        print(f"matpipe masks: error: no images under {args.input}", file=sys.stderr)
        return 1
    try:
        post_config = postprocess_config(args)
        generator = _build_generator(args, images)
    except (ValueError, TypeError, OSError, MaskGenerationError, GeneratorSetupError) as exc:
        # Configuration and set-up errors (bad option, absent checkpoint, nothing to fit) end the run.
        print(f"matpipe masks: error: {exc}", file=sys.stderr)
        return 1

    args.output.mkdir(parents=True, exist_ok=True)
    rows: list[_Row] = []
    claimed: dict[str, str] = {}
    # Batches let the text generator stack images per forward and spread them over its sessions.
    config = getattr(generator, "config", None)
    batch_size = max(1, getattr(config, "batch_size", 1) * getattr(config, "sessions", 1))
    # Progress goes to stderr so stdout carries only the summary line.
    progress = Progress(TextColumn("masks [{task.fields[method]}]"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), disable=not sys.stderr.isatty())
    with progress:
        task = progress.add_task("masks", total=len(images), method=args.method)
        for batch in _batches(images, batch_size):
            decoded = _decode(batch, root, claimed, rows)
            start = time.perf_counter()
            outcomes = _generate(generator, decoded)
            seconds = (time.perf_counter() - start) / max(len(decoded), 1)
            for (row, _), outcome in zip(decoded, outcomes):
                _write(row, outcome, post_config, args.output, seconds)
            progress.advance(task, len(batch))

    sidecar = _write_sidecar(rows, args.output, args.sidecar)
    counts = {status: sum(row.status == status for row in rows) for status in ("ok", "flagged", "failed")}
    print(f"{len(rows)} images: {counts['ok']} ok, {counts['flagged']} flagged, {counts['failed']} failed; "
          f"masks in {args.output}, sidecar {sidecar}")
    for row in rows:
        if row.status == "failed":
            print(f"  failed: {row.path}: {row.error}", file=sys.stderr)
    return 1 if counts["failed"] else 0


def _generate(generator: Any, decoded: list[tuple[_Row, np.ndarray]]) -> list[Any]:
    """Results (or the exception) per decoded image; a batch failure is retried image by image."""
    if not decoded:
        return []
    images = [image for _, image in decoded]
    keys = [row.path for row, _ in decoded]
    if hasattr(generator, "generate_batch") and len(decoded) > 1:
        try:
            return list(generator.generate_batch(images, keys))
        except Exception:  # noqa: BLE001 - find out which image it was
            log.debug("batch failed; retrying image by image", exc_info=True)
    outcomes: list[Any] = []
    for image, key in zip(images, keys):
        try:
            outcomes.append(generator(image, key=key))
        except Exception as exc:  # noqa: BLE001 - recorded in the sidecar, the run goes on
            outcomes.append(exc)
    return outcomes

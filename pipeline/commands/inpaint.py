"""`matpipe inpaint`: restore a folder (or one file) of images with given masks, keeping each image's format.

    matpipe inpaint --image photos/ --mask masks/ --output restored/

Masks are matched by file stem in a folder mirroring the image tree (or one mask file serves every
image); white = hole unless `--mask-convention keep`. Outputs mirror the input tree in the input's own
format; existing outputs are skipped unless `--overwrite`. A bad file is reported and the run goes on;
the exit status is 1 when any file failed, 2 when the run could not start.
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.imageio import DecodedImage, decode_image, encode_image
from pipeline.masks.maskio import IMAGE_SUFFIXES

if TYPE_CHECKING:  # matcore pulls in torch, the writer pyarrow: only load them when a run needs them
    from rich.console import Console

    from matcore.engine import InpaintEngine
    from pipeline.output.root import OutputRoot

ENGINES = ("auto", "mat", "opencv")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_CHECKPOINT = "places512"
IO_THREADS = 4


class SetupError(RuntimeError):
    """The run cannot start (no images, no mask, no checkpoint for --engine mat); exit status 2."""


@dataclass(frozen=True)
class ImageTask:
    """One input file; `relative` (posix) is both its output path under --output and its mask's key."""

    source: Path
    relative: str


@dataclass(frozen=True)
class LoadedImage:
    task: ImageTask
    data: bytes
    decoded: DecodedImage
    hole: np.ndarray
    seed: int


@dataclass
class RunReport:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    windows: int = 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inpaint", help="restore a folder of images with given masks (MAT or OpenCV)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, type=Path, help="an image file or a folder of images")
    parser.add_argument("--mask", required=True, type=Path,
                        help="a folder of masks mirroring the image tree (same stems), or one mask for all images")
    parser.add_argument("--output", required=True, type=Path, help="output folder (mirrors the input tree)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="mat, opencv, or auto (default): MAT when the checkpoint is available, else OpenCV "
                             "with a warning")
    parser.add_argument("--checkpoint", default=None,
                        help=f"MAT checkpoint file or known name (default {DEFAULT_CHECKPOINT}; only the default may "
                             "fall back to OpenCV under --engine auto)")
    parser.add_argument("--cache-dir", default=None, help="where known checkpoints are cached")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="MAT compute precision")
    parser.add_argument("--batch-size", type=int, default=4, help="MAT windows per forward, images per step")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; each image's seed is derived from it and the image's relative path")
    parser.add_argument("--strategy", choices=("auto", "crop", "resize"), default="auto",
                        help="MAT windows: crop around holes, resize the whole image, or auto")
    parser.add_argument("--opencv-method", choices=("telea", "ns"), default="telea", help="OpenCV algorithm")
    parser.add_argument("--mask-convention", choices=("hole", "keep"), default="hole",
                        help="hole: white = remove (IOPaint); keep: black = remove (MAT's own mask files)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping")
    parser.add_argument("--jpeg-tables", choices=("high", "source"), default="high",
                        help="restored JPEGs: high (quality 95, finer where the source was) or source (the "
                             "source's own tables: same file sizes)")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ inputs


def list_image_tasks(image_path: Path, output_dir: Path) -> list[ImageTask]:
    """The images to process, sorted by relative path. Hidden folders and the output folder (when it
    lies inside the input) are skipped, and symlinked folders are not followed."""
    if image_path.is_file():
        return [ImageTask(image_path, image_path.name)]
    if not image_path.is_dir():
        raise SetupError(f"--image {image_path} does not exist")
    output_real = os.path.realpath(output_dir)
    tasks = []
    for folder, subfolders, files in os.walk(image_path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and os.path.realpath(os.path.join(folder, d)) != output_real)
        for name in files:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                source = Path(folder) / name
                tasks.append(ImageTask(source, source.relative_to(image_path).as_posix()))
    return sorted(tasks, key=lambda task: task.relative)


class MaskLookup:
    """The hole mask of each image: one shared mask file, or a folder mirroring the image tree.

    A mask whose size differs from its image is resized nearest-neighbour, with a warning for that file.
    """

    def __init__(self, mask_path: Path, convention: str) -> None:
        from pipeline.masks.given import GivenMaskConfig, GivenMaskGenerator
        from pipeline.masks.maskio import read_mask_file

        hole_value = "white" if convention == "hole" else "black"
        self._shared: np.ndarray | None = None
        self._given = None
        if mask_path.is_file():
            try:
                self._shared = read_mask_file(mask_path, hole_value=hole_value)
            except Exception as exc:
                raise SetupError(f"cannot read --mask {mask_path}: {exc}") from exc
        elif mask_path.is_dir():
            self._given = GivenMaskGenerator(
                GivenMaskConfig(mask_dir=mask_path, hole_value=hole_value, size_mismatch="resize")
            )
        else:
            raise SetupError(f"--mask {mask_path} does not exist")

    def hole_for(self, task: ImageTask, rgb: np.ndarray) -> tuple[np.ndarray, str | None]:
        """(bool H×W hole for the image, a warning or None)."""
        from pipeline.masks.maskio import resize_hole

        shape = rgb.shape[:2]
        if self._shared is not None:
            if self._shared.shape == shape:
                return self._shared, None
            return resize_hole(self._shared, shape), _resized_warning(self._shared.shape, shape)
        result = self._given(rgb, key=task.relative)
        resized_from = result.details.get("resized_from")
        return result.hole, _resized_warning(tuple(resized_from), shape) if resized_from else None


def _resized_warning(mask_shape: Sequence[int], image_shape: Sequence[int]) -> str:
    return (f"mask is {mask_shape[1]}×{mask_shape[0]} but the image is {image_shape[1]}×{image_shape[0]}: "
            "resized (nearest neighbour)")


# ------------------------------------------------------------------------------------------------ engine


def build_engine(args: argparse.Namespace) -> tuple[InpaintEngine, str | None]:
    """(the engine, the fallback warning when --engine auto could not use MAT).

    Only a missing default checkpoint falls back to OpenCV: a checkpoint the user named must exist.
    """
    from matcore.classical import ClassicalInpainter

    if args.engine == "opencv":
        return ClassicalInpainter(method=args.opencv_method), None
    from matcore.registry import CheckpointUnavailableError, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, cache_dir=args.cache_dir)
    except CheckpointUnavailableError as exc:
        if args.engine == "mat" or args.checkpoint is not None:
            raise SetupError(f"no MAT checkpoint: {exc}") from exc
        warning = (f"WARNING: MAT checkpoint unavailable ({exc}). FALLING BACK TO THE OPENCV ENGINE "
                   f"({args.opencv_method}): a classical baseline, not MAT. Provide the checkpoint, or pass "
                   "--engine opencv to choose it explicitly.")
        return ClassicalInpainter(method=args.opencv_method), warning

    import torch

    from matcore import Inpainter, load_generator

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        generator = load_generator(checkpoint, device)
        return Inpainter(generator, device=device, dtype=args.dtype, strategy=args.strategy,
                         batch_size=args.batch_size), None
    except Exception as exc:  # a corrupt or foreign file: the run cannot start, and must not fall back silently
        raise SetupError(f"cannot load MAT checkpoint {checkpoint}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    try:
        return _run(args, console)
    except SetupError as exc:
        _say(console, f"matpipe inpaint: error: {exc}")
        return 2


def _run(args: argparse.Namespace, console: Console) -> int:
    from pipeline.stages import row_seed
    from pipeline.output.root import OutputRoot

    if args.batch_size < 1:
        raise SetupError(f"--batch-size must be >= 1, got {args.batch_size}")
    tasks = list_image_tasks(args.image, args.output)
    if not tasks:
        raise SetupError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {args.image}")
    masks = MaskLookup(args.mask, args.mask_convention)
    output = OutputRoot(str(args.output))
    report = RunReport()

    pending = []
    for task in tasks:
        if not args.overwrite and output.exists(task.relative):
            report.skipped += 1
        else:
            pending.append(task)

    warning, engine_text, elapsed = None, "none needed", 0.0
    if pending:
        engine, warning = build_engine(args)
        engine_text = str(engine.info)
        if warning:
            _say(console, warning, "bold red")
        _say(console, f"engine: {engine_text}; {len(pending)} to do, {report.skipped} already done")
        started = time.perf_counter()
        FolderRun(engine, masks, output, lambda task: row_seed(args.seed, task.relative), args.batch_size, report,
                  console, jpeg_tables=args.jpeg_tables).run(pending)
        elapsed = time.perf_counter() - started

    rate = report.done / elapsed if elapsed > 0 and report.done else 0.0
    summary = (f"inpaint: {report.done} done, {report.skipped} skipped, {report.failed} failed in {elapsed:.1f} s "
               f"({rate:.2f} images/s); engine {engine_text}, {report.windows} windows")
    if warning:
        summary += " [OPENCV FALLBACK: no MAT checkpoint]"
    print(summary)
    return 1 if report.failed else 0


class FolderRun:
    """One pass over the pending files: decode one step ahead in threads, inpaint in steps of `batch_size`
    images, encode and write in threads while the next step computes. Every per-file problem becomes a
    reported failure; nothing a file contains can stop the run."""

    def __init__(self, engine: InpaintEngine, masks: MaskLookup, output: OutputRoot,
                 seed_of: Callable[[ImageTask], int], batch_size: int, report: RunReport, console: Console,
                 jpeg_tables: str = "high") -> None:
        self.engine = engine
        self.jpeg_tables = jpeg_tables
        self.masks = masks
        self.output = output
        self.seed_of = seed_of
        self.batch_size = batch_size
        self.report = report
        self.console = console
        self._advance = lambda: None

    def run(self, tasks: list[ImageTask]) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        columns = (TextColumn("inpaint"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=self.console) as progress, ThreadPoolExecutor(IO_THREADS) as pool:
            bar = progress.add_task("inpaint", total=len(tasks))
            self._advance = lambda: progress.advance(bar)
            steps = [tasks[i:i + self.batch_size] for i in range(0, len(tasks), self.batch_size)]
            loading = [pool.submit(self._load, task) for task in steps[0]]
            writing: list[tuple[LoadedImage, Future]] = []
            for index, step in enumerate(steps):
                loaded = [future.result() for future in loading]
                if index + 1 < len(steps):
                    loading = [pool.submit(self._load, task) for task in steps[index + 1]]
                ready = []
                for task, item in zip(step, loaded):
                    if isinstance(item, str):
                        self._fail(task, item)
                    else:
                        ready.append(item)
                restored = self._inpaint(ready)
                self._finish(writing)  # the previous step's writes ran while this step computed
                writing = [(item, pool.submit(self._save, item, restored[id(item)]))
                           for item in ready if id(item) in restored]
            self._finish(writing)

    def _load(self, task: ImageTask) -> LoadedImage | str:
        """The decoded image and its hole, or the reason it cannot be processed."""
        try:
            data = task.source.read_bytes()
            decoded = decode_image(data)
            hole, warning = self.masks.hole_for(task, decoded.rgb)
        except Exception as exc:  # unreadable, truncated, too large, missing mask, ...
            return _reason(exc)
        if warning:
            _say(self.console, f"warning {task.relative}: {warning}", "yellow")
        return LoadedImage(task, data, decoded, hole, self.seed_of(task))

    def _inpaint(self, ready: list[LoadedImage]) -> dict[int, np.ndarray | None]:
        """id(item) → restored image, or None for an image with an empty hole (nothing to do). Images the
        engine failed on are reported and left out."""
        with_holes = [item for item in ready if item.hole.any()]
        restored: dict[int, np.ndarray | None] = {id(item): None for item in ready if not item.hole.any()}
        if not with_holes:
            return restored
        try:
            results = self.engine.inpaint_results([item.decoded.rgb for item in with_holes],
                                                  [item.hole for item in with_holes],
                                                  [item.seed for item in with_holes])
        except Exception as exc:  # e.g. out of memory: these images fail, the run goes on
            for item in with_holes:
                self._fail(item.task, _reason(exc))
            return restored
        for item, result in zip(with_holes, results):
            restored[id(item)] = result.image
            self.report.windows += result.windows
        return restored

    def _save(self, item: LoadedImage, restored: np.ndarray | None) -> None:
        # An empty hole changes nothing: the original bytes are the faithful output (no JPEG re-encode).
        data = item.data if restored is None else encode_image(restored, item.decoded.alpha, item.decoded,
                                                               changed=item.hole, jpeg_tables=self.jpeg_tables)
        self.output.write_bytes(item.task.relative, data)

    def _finish(self, writes: list[tuple[LoadedImage, Future]]) -> None:
        for item, future in writes:
            try:
                future.result()
            except Exception as exc:  # unwritable target, a path escaping --output, a full disk
                self._fail(item.task, _reason(exc))
            else:
                self.report.done += 1
                self._advance()

    def _fail(self, task: ImageTask, reason: str) -> None:
        self.report.failed += 1
        _say(self.console, f"failed {task.relative}: {reason}", "red")
        self._advance()


def _say(console: Console, text: str, style: str | None = None) -> None:
    """One message on stderr, verbatim (file names may look like rich markup) and never wrapped."""
    console.print(text, style=style, markup=False, soft_wrap=True)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


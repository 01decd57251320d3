"""Single-thread speed of the text mask generator at about 1 MP (issue 11: >= 4 masks/s per CPU core).

    python bench/text_speed.py [--images N] [--side 1024 | --shape 866x1155] [--kinds clean,line,tiled] [--stages]
                               [--baseline DIR [--rounds N]]
                               [--passes plain] [--detector ppocrv6-small] [--max-side 1024] [--no-tile]

Times `TextMaskGenerator` (detector, recogniser check, overlay rule, glyph fill) with one ONNX Runtime
thread, in CPU seconds of this process (`time.process_time`), so a loaded machine inflates the figure
less than wall time would; prints the median per image and masks/s per core for each kind of image:
`clean` photos, photos with one `line` of overlay text, photos under `tiled` text (many regions: the
recogniser and the per-region work dominate). `--baseline DIR` first times the same images with the
`pipeline` package of another checkout (e.g. main's worktree) in a child process and prints both, so
before/after come from one run on the same machine load. `--stages` adds where the time goes
(detector forward, recogniser, glyph strokes, scene cues, tiled grouping) from a profiled pass.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and OpenCV load: one core's work

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "datasets" / "scenes"
KINDS = ("clean", "line", "tiled")


def bench_images(kind: str, count: int, shape: tuple[int, int]) -> list[np.ndarray]:
    """`count` uint8 H×W×3 photos (`shape` = (H, W)) of `kind` (fixed seed); textured noise without ../shared."""
    import watermarks  # bench/watermarks.py: the same overlays as the quality table

    paths = sorted(PHOTOS.glob("*.jpg"))[:count] if PHOTOS.is_dir() else []
    photos = [cv2.resize(watermarks.read_rgb(p), (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for p in paths]
    if not photos:
        rng = np.random.default_rng(0)
        photos = [cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (0, 0), 2)
                  for _ in range(count)]
    if kind == "clean":
        return photos
    fonts = watermarks.find_fonts()
    rng = np.random.default_rng([7, KINDS.index(kind)])
    if kind == "line":
        return [watermarks.text_line_overlay(p.shape[:2], rng, fonts).apply(p) for p in photos]
    return [watermarks.text_overlay(p.shape[:2], rng, fonts, opacity=float(rng.uniform(0.5, 0.9)), rotated=False,
                                    tiled=True).apply(p) for p in photos]


def image_shape(args: argparse.Namespace) -> tuple[int, int]:
    """(H, W) of the bench images: --shape HxW, else --side square."""
    if args.shape:
        height, width = (int(v) for v in args.shape.lower().split("x"))
        return height, width
    return args.side, args.side


def single_view(args: argparse.Namespace, config_type: type) -> dict:
    """--single-view-max-pixels as a config field; a checkout without the field (--baseline) runs its own rule."""
    if not args.single_view_max_pixels or "single_view_max_pixels" not in config_type.__dataclass_fields__:
        return {}
    return {"single_view_max_pixels": args.single_view_max_pixels}


def measure(args: argparse.Namespace) -> list[dict]:
    """Median CPU seconds per mask of each kind, with the `pipeline` package found first on sys.path."""
    from pipeline.masks import TextMaskConfig, TextMaskGenerator

    cv2.setNumThreads(1)  # per core: OpenCV's own worker threads would spread the glyph work
    config = TextMaskConfig(detector=args.detector, model_path=args.model_path,
                            passes=tuple(args.passes.split(",")), device="cpu",
                            threads_per_session=1, max_side=args.max_side, tile=not args.no_tile,
                            **single_view(args, TextMaskConfig))
    generator = TextMaskGenerator(config)
    rows = []
    for kind in args.kinds.split(","):
        images = bench_images(kind, args.images, image_shape(args))
        generator(images[0])  # warm-up: session initialisation and first-run allocations
        seconds, regions = [], []
        for image in images:
            start = time.process_time()
            result = generator(image)
            seconds.append(time.process_time() - start)
            regions.append(len(result.details["regions"]))
        row = {"kind": kind, "images": len(images), "seconds": statistics.median(seconds),
               "regions": statistics.median(regions)}
        if args.stages:
            row["stages"] = stage_seconds(generator, images)
        rows.append(row)
    return rows


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    """The rows of several rounds with each time replaced by its median over the rounds."""
    if not rounds:
        return []
    rows = []
    for same_kind in zip(*rounds):
        row = dict(same_kind[0], seconds=statistics.median(r["seconds"] for r in same_kind))
        if "stages" in row:
            row["stages"] = {stage: statistics.median(r["stages"].get(stage, 0.0) for r in same_kind)
                             for stage in same_kind[0]["stages"]}
        rows.append(row)
    return rows


# Where a mask's CPU time goes: function names (old and new spellings) per stage of the generator.
STAGES = {
    "detector forward": ("run@text_detector.py",),
    "network input": ("to_network_input@text_detector.py",),
    "recogniser": ("read@text_verify.py",),
    "glyph strokes": ("glyph_hole@glyphs.py", "glyph_strokes@glyphs.py", "hole@glyphs.py"),
    "scene cues": ("region_cues@text_overlay.py",),
    "tiled grouping": ("find_tiled_pattern@text_tiled.py",),
}


def stage_seconds(generator, images: list[np.ndarray]) -> dict[str, float]:
    """Mean CPU s/mask of each stage (cProfile with a CPU clock; its overhead inflates all a little)."""
    import cProfile
    import pstats

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for image in images:
        generator(image)
    profile.disable()
    totals: dict[str, float] = {}
    for (filename, _, function), (_, _, _, cumulative, _) in pstats.Stats(profile).stats.items():
        for stage, names in STAGES.items():
            # Cumulative times of nested names would count twice: `hole` is called outside
            # `glyph_strokes`, and `glyph_hole` of the new code calls both (not used by the generator).
            if f"{function}@{Path(filename).name}" in names:
                totals[stage] = totals.get(stage, 0.0) + cumulative / len(images)
    totals["total"] = sum(totals.values())
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--side", type=int, default=1024, help="photos are resized to side × side (1 MP at 1024)")
    parser.add_argument("--kinds", default="clean", help=f"comma-separated among {', '.join(KINDS)}")
    parser.add_argument("--baseline", type=Path, help="checkout whose `pipeline` package is timed first (before)")
    parser.add_argument("--rounds", type=int, default=1, help="with --baseline: alternate before/after this often")
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)  # the child's package root
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the child's output
    parser.add_argument("--stages", action="store_true", help="also profile where each kind's CPU time goes")
    parser.add_argument("--passes", default="plain")
    parser.add_argument("--detector", default="ppocrv6-small")
    parser.add_argument("--model-path", type=Path, help="a DB detector ONNX file instead (normalised like --detector)")
    parser.add_argument("--shape", help="HxW instead of --side: e.g. 866x1155 (a 4:3 photo of 1 MP)")
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--no-tile", action="store_true", help="downscale large images instead of tiling")
    parser.add_argument("--single-view-max-pixels", type=int, default=0,
                        help="TextMaskConfig.single_view_max_pixels (1048576: a ~1 MP photo in one view)")
    args = parser.parse_args(argv)
    if any(kind not in KINDS for kind in args.kinds.split(",")):
        parser.error(f"--kinds: comma-separated among {', '.join(KINDS)}")
    sys.path[:0] = [str(args.code), str(ROOT / "bench")]
    compare = args.baseline is not None and not args.json  # the child (--json) measures once: no recursion
    rounds_before, rounds_after = [], []
    # Before and after alternate, so a change in the machine's load hits both alike.
    for _ in range(args.rounds if compare else 1):
        if compare:
            child = [sys.executable, __file__, "--code", str(args.baseline.resolve()), "--json",
                     *[a for a in (argv if argv is not None else sys.argv[1:])]]
            environment = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
            output = subprocess.run(child, check=True, capture_output=True, text=True, env=environment).stdout
            rounds_before.append(json.loads(output.strip().splitlines()[-1]))
        rounds_after.append(measure(args))
    rows = median_rows(rounds_after)
    before = {row["kind"]: row for row in median_rows(rounds_before)} if rounds_before else {}
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"detector {args.model_path or args.detector}, passes {args.passes}, max_side {args.max_side}, "
          f"{'no tiles' if args.no_tile else 'tiles'}, single view up to {args.single_view_max_pixels} px, "
          f"images {'x'.join(map(str, image_shape(args)))}, one thread, CPU time")
    if before:
        print(f"before = {args.baseline}, after = {args.code}")
        print("| images | count | regions (median) | before CPU s/mask | after CPU s/mask | speed-up | "
              "after masks/s per core |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            old = before[row["kind"]]["seconds"]
            print(f"| {row['kind']} | {row['images']} | {row['regions']:g} | {old:.3f} | {row['seconds']:.3f} | "
                  f"{old / row['seconds']:.2f}x | {1 / row['seconds']:.2f} |")
    else:
        print("| images | count | regions (median) | median CPU s/mask | masks/s per core |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['kind']} | {row['images']} | {row['regions']:g} | {row['seconds']:.3f} | "
                  f"{1 / row['seconds']:.2f} |")
    if args.stages:
        print()
        print("CPU s/mask by stage (cProfile" + (", before → after)" if before else ")"))
        print("| images | " + " | ".join(list(STAGES) + ["sum of stages"]) + " |")
        print("|---|" + "---|" * (len(STAGES) + 1))
        for row in rows:
            cells = []
            for stage in [*STAGES, "total"]:
                after = row["stages"].get(stage, 0.0)
                cells.append(f"{before[row['kind']]['stages'].get(stage, 0.0):.3f} → {after:.3f}" if before
                             else f"{after:.3f}")
            print(f"| {row['kind']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Single-thread speed of the text mask generator at about 1 MP (issue 11: >= 4 masks/s per CPU core).

    python bench/text_speed.py [--images N] [--side 1024] [--passes plain] [--detector ppocrv6-small]

Times `TextMaskGenerator` (detector, recogniser check, overlay rule, glyph fill) with one ONNX Runtime
thread, in CPU seconds of this process (`time.process_time`), so a loaded machine inflates the figure
less than wall time would; prints the median per image and masks/s per core.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.masks import TextMaskConfig, TextMaskGenerator  # noqa: E402
from pipeline.masks.maskio import read_rgb  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "datasets" / "scenes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--side", type=int, default=1024, help="photos are resized to side × side (1 MP at 1024)")
    parser.add_argument("--passes", default="plain")
    parser.add_argument("--detector", default="ppocrv6-small")
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--no-tile", action="store_true", help="downscale large images instead of tiling")
    args = parser.parse_args(argv)
    paths = sorted(PHOTOS.glob("*.jpg"))[: args.images] if PHOTOS.is_dir() else []
    photos = [cv2.resize(read_rgb(p), (args.side, args.side), interpolation=cv2.INTER_AREA) for p in paths]
    if not photos:  # without ../shared: a textured synthetic picture
        rng = np.random.default_rng(0)
        photos = [cv2.GaussianBlur(rng.integers(0, 256, (args.side, args.side, 3), dtype=np.uint8), (0, 0), 2)
                  for _ in range(args.images)]
    config = TextMaskConfig(detector=args.detector, passes=tuple(args.passes.split(",")), device="cpu",
                            threads_per_session=1, max_side=args.max_side, tile=not args.no_tile)
    generator = TextMaskGenerator(config)
    generator(photos[0])  # warm-up: session initialisation and first-run allocations
    seconds = []
    for photo in photos:
        start = time.process_time()
        generator(photo)
        seconds.append(time.process_time() - start)
    median = statistics.median(seconds)
    print(f"| detector | passes | max_side | image | images | median CPU s/mask | masks/s per core |")
    print(f"|---|---|---|---|---|---|---|")
    print(f"| {args.detector} | {args.passes} | {args.max_side} | {args.side}x{args.side} | {len(photos)} | "
          f"{median:.3f} | {1 / median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

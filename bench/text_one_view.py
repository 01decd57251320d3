"""Text masks on ~1 MP photos wider than max_side: two overlapping tiles (the default) vs one
full-resolution view (`single_view_max_pixels=1024²`). Prints quality and CPU time of both on the same samples.

The tuning split's ~1024 px scene and urban photos are resized to `--megapixels` (their longer side then
exceeds 1024, which is where the two rules differ), then the issue-11 rows of `bench/watermarks.py` are
built on them: one line of overlay text (busy / calm background), tiled text, and the clean urban photos.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python bench/text_one_view.py [--split tune] [--megapixels 0.98]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import watermarks  # noqa: E402  (puts the repository first on sys.path)

ONE_VIEW = 1024 * 1024  # single_view_max_pixels: a ~1 MP photo in one full-resolution view


def resized(photo: np.ndarray, megapixels: float) -> np.ndarray:
    height, width = photo.shape[:2]
    scale = (megapixels * 1e6 / (height * width)) ** 0.5
    return cv2.resize(photo, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_CUBIC)


def rows(split: str, megapixels: float, tiled_count: int, limit: int = 0) -> dict[str, list]:
    fonts = watermarks.find_fonts()
    scenes = [resized(p, megapixels) for p in watermarks.split_photos("scenes", split, limit)]
    samples: dict[str, list] = {"line, busy": [], "line, calm": [], "tiled": [], "urban (clean)": []}
    rng = np.random.default_rng([0, 11, 99])
    for number, photo in enumerate(scenes):
        sample = watermarks.build_sample(f"{number}", photo, watermarks.text_line_overlay(photo.shape[:2], rng, fonts))
        samples["line, busy" if watermarks.is_busy(photo, sample.support) else "line, calm"].append(sample)
    rng = np.random.default_rng([0, 12, 99])
    for number, photo in enumerate(scenes[:tiled_count]):
        overlay = watermarks.text_overlay(photo.shape[:2], rng, fonts, opacity=float(rng.uniform(0.5, 0.9)),
                                          rotated=False, tiled=True)
        samples["tiled"].append(watermarks.build_sample(f"tiled {number}", photo, overlay))
    samples["urban (clean)"] = [resized(p, megapixels) for p in watermarks.split_photos("urban", split, limit)]
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=["tune", "holdout"], default="tune")
    parser.add_argument("--megapixels", type=float, default=0.98)
    parser.add_argument("--tiled", type=int, default=16, help="photos of the tiled-text row")
    parser.add_argument("--limit", type=int, default=0, help="only the first N photos of each set (0 = all)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    samples = rows(args.split, args.megapixels, args.tiled, args.limit)
    if not samples["line, busy"] and not samples["line, calm"]:
        raise SystemExit("no photos: ../shared/datasets is absent")
    generators = [watermarks.TextMaskGenerator(watermarks.TextMaskConfig(
        device="cpu", threads_per_session=1, single_view_max_pixels=pixels)) for pixels in (0, ONE_VIEW)]
    config = watermarks.default_postprocess("text")
    shape = (samples["line, busy"] or samples["line, calm"])[0].image.shape
    print(f"[{args.split}] photos resized to {args.megapixels} MP (e.g. {shape[1]}x{shape[0]}), one thread")
    print("| row | images | two tiles: F1 (P / R) | one view: F1 (P / R) | two tiles CPU s/mask | "
          "one view CPU s/mask |")
    print("|---|---|---|---|---|---|")
    for row, items in samples.items():
        cells, seconds = [], []
        for generator in generators:
            started = time.process_time()
            if row == "urban (clean)":
                results = [watermarks.postprocess(generator(image), config) for image in items]
                cells.append(f"{sum(r.hole.any() for r in results)} masked, hole "
                             f"{np.mean([r.hole_ratio for r in results]):.3%}")
            else:
                counts = watermarks.Counts()
                for sample in items:
                    counts.add(watermarks.postprocess(generator(sample.image), config).hole, sample)
                m = counts.metrics()
                cells.append(f"{m['f1']:.3f} ({m['precision']:.3f} / {m['recall']:.3f})")
            seconds.append((time.process_time() - started) / max(len(items), 1))
        print(f"| {row} | {len(items)} | {cells[0]} | {cells[1]} | {seconds[0]:.2f} | {seconds[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()

"""Synthetic watermark benchmark for the automatic mask generators (`pipeline.masks`).

Builds watermarked copies of clean photos with known ground truth, runs each generator, and prints
pixel precision / recall / F1 / IoU per method and condition, plus masks per second.

    /work/venv/bin/python bench/watermarks.py [--photos DIR] [--limit N] [--seed S] [--out DIR]
    bench/watermarks.py --only consistent-datasets [--logo-photos "held out"]   # logo datasets only

Ground truth: the pixels a user wants removed = the overlay's support (coverage alpha > 0.2, i.e. the
glyph or logo shape whatever its opacity) dilated by GT_DILATE_PX. Text generators predict filled text
boxes; the dilation is what makes a thin-stroke glyph support and a "remove this text" box comparable,
and it is also the margin an inpainter needs around anti-aliased strokes. The table therefore also
reports F1 against the *undilated* support ("F1@0") so the effect of that choice is visible.

Columns: hit = share of images where at least half of the ground truth is masked; precision / recall /
F1 / IoU = pixel counts summed over the condition's images (micro average); masks/s = generator time
only (decoding and post-processing excluded), on this machine's CPUs.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is first on sys.path, where bench/pipeline.py would shadow the package.
sys.path.insert(0, str(ROOT))

from pipeline.masks import (  # noqa: E402
    ConsistentWatermarkConfig,
    ConsistentWatermarkGenerator,
    MaskGenerationError,
    PostprocessConfig,
    TextMaskConfig,
    TextMaskGenerator,
    default_postprocess,
    postprocess,
)
from pipeline.masks.maskio import read_rgb  # noqa: E402
from pipeline.masks.postprocess import dilate_hole  # noqa: E402

GT_ALPHA_THRESHOLD = 0.2
GT_DILATE_PX = 4
DEFAULT_PHOTOS = (Path("/work/shared/datasets/cbsd68"), ROOT / "samples" / "images")

WATERMARK_TEXTS = (
    "© LumenStock", "SAMPLE", "PREVIEW", "www.shotbank.io", "© 2024 Marta Kowalski", "DO NOT COPY",
    "Photo by A. Rivera", "PROOF", "@travel.with.sam", "watermark", "pixelvault.com", "Licensed image",
    "CONFIDENTIAL", "© Northlight Studio", "draft 03", "stockframe",
)


# --------------------------------------------------------------------------------------------- data


@dataclass
class Overlay:
    """An overlay to composite: colour H×W×3 float in [0, 255], coverage alpha H×W in [0, 1], opacity."""

    color: np.ndarray
    alpha: np.ndarray
    opacity: float

    def apply(self, photo: np.ndarray) -> np.ndarray:
        weight = (self.alpha * self.opacity)[..., None]
        return np.clip(photo * (1.0 - weight) + self.color * weight + 0.5, 0, 255).astype(np.uint8)

    def ground_truth(self, dilate_px: int = GT_DILATE_PX) -> np.ndarray:
        return dilate_hole(self.alpha > GT_ALPHA_THRESHOLD, dilate_px)


@dataclass
class Sample:
    """One benchmark image: watermarked uint8 H×W×3, ground-truth hole, and its undilated support."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    support: np.ndarray


def find_photos(explicit: Path | None) -> list[Path]:
    folders = [explicit] if explicit else [p for p in DEFAULT_PHOTOS if p.is_dir()]
    for folder in folders:
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if photos:
            return photos
    raise SystemExit(f"no photos found in {', '.join(map(str, folders))}")


def find_fonts() -> list[str | None]:
    """TrueType files from fontconfig (DejaVu, Liberation), plus None for Pillow's built-in font."""
    try:
        listing = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        listing = ""
    files = sorted(
        path for path in (line.split(":")[0].strip() for line in listing.splitlines())
        if path.lower().endswith(".ttf") and ("dejavu" in path.lower() or "liberation" in path.lower())
    )
    # Math and extra-light faces are not what watermarks are set in.
    files = [f for f in files if "Math" not in f and "ExtraLight" not in f]
    return [None, *files]


def load_font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    kind = rng.choice(["white", "black", "grey", "colour"], p=[0.35, 0.25, 0.15, 0.25])
    if kind == "white":
        return (255, 255, 255)
    if kind == "black":
        return (0, 0, 0)
    if kind == "grey":
        level = int(rng.integers(90, 200))
        return (level, level, level)
    hue_rgb = np.array(Image.new("HSV", (1, 1), (int(rng.integers(0, 256)), 230, 255)).convert("RGB"))[0, 0]
    return tuple(int(v) for v in hue_rgb)


def text_tile(text: str, font: ImageFont.FreeTypeFont, angle: float) -> np.ndarray:
    """Coverage alpha (float H×W in [0, 1]) of `text` set in `font`, rotated by `angle` degrees."""
    left, top, right, bottom = font.getbbox(text)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), text, fill=255, font=font)
    if angle:
        canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    return np.asarray(canvas, np.float32) / 255.0


def paste_alpha(alpha: np.ndarray, tile: np.ndarray, x: int, y: int) -> None:
    """Max-composite `tile` into `alpha` with its top-left at (x, y), clipped to the canvas."""
    height, width = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + tile.shape[1], width), min(y + tile.shape[0], height)
    if x1 <= x0 or y1 <= y0:
        return
    region = alpha[y0:y1, x0:x1]
    np.maximum(region, tile[y0 - y : y1 - y, x0 - x : x1 - x], out=region)


def text_overlay(shape: tuple[int, int], rng: np.random.Generator, fonts: Sequence[str | None], *,
                 opacity: float, rotated: bool, tiled: bool) -> Overlay:
    """One text watermark (or a tiled pattern of one) at a random place, font, size and colour."""
    height, width = shape
    text = str(rng.choice(WATERMARK_TEXTS))
    font_path = fonts[int(rng.integers(len(fonts)))]
    size = int(rng.integers(16, 45 if not tiled else 30))
    angle = float(rng.uniform(15, 40) * rng.choice([-1, 1])) if rotated or tiled else 0.0
    tile = text_tile(text, load_font(font_path, size), angle)
    while tile.shape[1] > 0.85 * width and size > 12:  # a watermark fits its image
        size = int(size * 0.85)
        tile = text_tile(text, load_font(font_path, size), angle)
    alpha = np.zeros(shape, np.float32)
    if tiled:
        step_x, step_y = tile.shape[1] + int(rng.integers(20, 60)), tile.shape[0] + int(rng.integers(20, 60))
        for row, y in enumerate(range(-int(rng.integers(0, step_y)), height, step_y)):
            shift = (row % 2) * step_x // 2
            for x in range(-int(rng.integers(0, step_x)) - shift, width, step_x):
                paste_alpha(alpha, tile, x, y)
    else:
        margin = int(rng.integers(6, 24))
        free_x, free_y = max(width - tile.shape[1] - 2 * margin, 0), max(height - tile.shape[0] - 2 * margin, 0)
        # Watermarks sit mostly in corners and along the bottom; the centre is common for "SAMPLE".
        column, row = int(rng.integers(0, 3)), int(rng.choice([0, 1, 2], p=[0.3, 0.2, 0.5]))
        x = margin + column * free_x // 2 + int(rng.integers(-8, 9)) * (column == 1)
        y = margin + row * free_y // 2
        paste_alpha(alpha, tile, x, y)
    color = np.broadcast_to(np.array(random_color(rng), np.float32), (*shape, 3))
    return Overlay(color=color, alpha=alpha, opacity=opacity)


def make_logo(font_path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """A logo: a ring with a triangle inside and a bold word. Returns (alpha h×w, colour h×w×3) floats."""
    height, width = 64, 176
    alpha = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(alpha)
    draw.ellipse((4, 4, 58, 58), outline=255, width=6)
    draw.polygon([(31, 15), (48, 44), (14, 44)], fill=255)
    bold = next((f for f in find_fonts() if f and f.endswith("DejaVuSans-Bold.ttf")), font_path)
    draw.text((66, 32), "LUMEN", fill=255, font=load_font(bold, 30), anchor="lm")
    color = np.zeros((height, width, 3), np.float32) + 255.0  # white with a dark keyline below
    keyline = np.asarray(alpha.filter(_max_filter(5)), np.float32) / 255.0
    ring = np.clip(keyline - np.asarray(alpha, np.float32) / 255.0, 0, 1)
    color = color * (1 - ring[..., None]) + 30.0 * ring[..., None]
    return keyline, color


def _max_filter(size: int):
    from PIL import ImageFilter

    return ImageFilter.MaxFilter(size)


def logo_overlay(shape: tuple[int, int], logo: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, *,
                 opacity: float, placement: str, scale_jitter: float = 0.0) -> Overlay:
    """The logo at the bottom-right corner (or centre) with a few pixels of random jitter.

    scale_jitter: the logo is resized by a random factor in [1 − scale_jitter, 1 + scale_jitter].
    """
    logo_alpha, logo_color = logo
    if scale_jitter:
        import cv2

        factor = float(rng.uniform(1 - scale_jitter, 1 + scale_jitter))
        size = (round(logo_alpha.shape[1] * factor), round(logo_alpha.shape[0] * factor))
        logo_alpha = cv2.resize(logo_alpha, size, interpolation=cv2.INTER_LINEAR)
        logo_color = cv2.resize(logo_color, size, interpolation=cv2.INTER_LINEAR)
    height, width = shape
    jitter = rng.integers(-6, 7, size=2)
    if placement == "bottom-right":
        x, y = width - logo_alpha.shape[1] - 16 + jitter[0], height - logo_alpha.shape[0] - 16 + jitter[1]
    else:
        x, y = (width - logo_alpha.shape[1]) // 2 + jitter[0], (height - logo_alpha.shape[0]) // 2 + jitter[1]
    alpha = np.zeros(shape, np.float32)
    color = np.zeros((*shape, 3), np.float32)
    paste_alpha(alpha, logo_alpha, int(x), int(y))
    color[y : y + logo_alpha.shape[0], x : x + logo_alpha.shape[1]] = logo_color
    return Overlay(color=color, alpha=alpha, opacity=opacity)


def build_sample(name: str, photo: np.ndarray, overlay: Overlay) -> Sample:
    support = overlay.alpha > GT_ALPHA_THRESHOLD
    return Sample(name=name, image=overlay.apply(photo.astype(np.float32)), truth=overlay.ground_truth(),
                  support=support)


# ------------------------------------------------------------------------------------------ metrics


@dataclass
class Counts:
    """Pixel counts accumulated over a condition (micro-averaged metrics)."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0
    support_tp: int = 0
    support_fp: int = 0
    support_fn: int = 0
    images: int = 0
    found: int = 0
    hits: int = 0

    def add(self, predicted: np.ndarray, sample: Sample) -> None:
        self.true_positive += int((predicted & sample.truth).sum())
        self.false_positive += int((predicted & ~sample.truth).sum())
        self.false_negative += int((~predicted & sample.truth).sum())
        self.support_tp += int((predicted & sample.support).sum())
        self.support_fp += int((predicted & ~sample.support).sum())
        self.support_fn += int((~predicted & sample.support).sum())
        self.images += 1
        self.found += int(predicted.any())
        truth_pixels = int(sample.truth.sum())
        self.hits += int(truth_pixels > 0 and (predicted & sample.truth).sum() >= 0.5 * truth_pixels)

    @staticmethod
    def _f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / max(2 * tp + fp + fn, 1)

    def metrics(self) -> dict[str, float]:
        tp, fp, fn = self.true_positive, self.false_positive, self.false_negative
        return {
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1),
            "f1": self._f1(tp, fp, fn),
            "iou": tp / max(tp + fp + fn, 1),
            "f1_support": self._f1(self.support_tp, self.support_fp, self.support_fn),
            "found": self.found / max(self.images, 1),
            "hit": self.hits / max(self.images, 1),
        }


@dataclass
class Row:
    method: str
    condition: str
    counts: Counts
    seconds: float
    note: str = ""


# -------------------------------------------------------------------------------------------- runs


def run_text(samples: list[Sample], generator: TextMaskGenerator, config: PostprocessConfig) -> tuple[Counts, float]:
    counts = Counts()
    start = time.perf_counter()
    results = generator.generate_batch([s.image for s in samples])
    seconds = time.perf_counter() - start
    for sample, result in zip(samples, results):
        counts.add(postprocess(result, config).hole, sample)
    return counts, seconds


def clean_photo_note(generator: TextMaskGenerator, photos: list[np.ndarray], config: PostprocessConfig) -> str:
    """How often the generator puts a hole in a photo without any watermark."""
    clean = [postprocess(result, config) for result in generator.generate_batch(photos)]
    false_alarms = sum(result.hole.any() for result in clean) / len(clean)
    mean_ratio = float(np.mean([result.hole_ratio for result in clean]))
    return f"on the {len(clean)} clean photos: {false_alarms:.0%} got a mask (mean hole {mean_ratio:.2%})"


def text_conditions(photos: list[np.ndarray], fonts: list[str | None], seed: int) -> dict[str, list[Sample]]:
    conditions: dict[str, list[Sample]] = {}
    specs = [(f"opacity {op:.2f}", dict(opacity=op, rotated=False, tiled=False)) for op in (0.3, 0.5, 0.75, 1.0)]
    specs.append(("rotated, opacity 0.5-1", dict(opacity=None, rotated=True, tiled=False)))
    specs.append(("tiled, opacity 0.3-0.6", dict(opacity=None, rotated=False, tiled=True)))
    for index, (name, spec) in enumerate(specs):
        rng = np.random.default_rng([seed, index])
        samples = []
        for number, photo in enumerate(photos):
            opacity = spec["opacity"]
            if opacity is None:
                opacity = float(rng.uniform(0.3, 0.6) if spec["tiled"] else rng.uniform(0.5, 1.0))
            overlay = text_overlay(photo.shape[:2], rng, fonts, opacity=opacity,
                                   rotated=spec["rotated"], tiled=spec["tiled"])
            samples.append(build_sample(f"{name}/{number}", photo, overlay))
        conditions[name] = samples
    return conditions


def run_consistent(photos: list[np.ndarray], logo: tuple[np.ndarray, np.ndarray], *, opacity: float,
                   placement: str, fit_count: int, seed: int, scale_jitter: float = 0.0,
                   clean_in_fit: float = 0.0) -> tuple[Counts, float, float, float, str]:
    """Fit on the first `fit_count` watermarked photos, evaluate on the rest (and their clean versions).

    clean_in_fit: share of the fit images given without the logo (a dataset where not every image is
    watermarked).
    """
    rng = np.random.default_rng([seed, int(opacity * 100), placement == "center", int(scale_jitter * 100),
                                 int(clean_in_fit * 100)])
    order = rng.permutation(len(photos))
    samples = [build_sample(str(i), photos[i], logo_overlay(photos[i].shape[:2], logo, rng, opacity=opacity,
                                                            placement=placement, scale_jitter=scale_jitter))
               for i in order]
    fit_samples, test_samples = samples[:fit_count], samples[fit_count:]
    fit_images = [s.image for s in fit_samples]
    for index in range(round(clean_in_fit * fit_count)):
        fit_images[index] = photos[order[index]]
    generator = ConsistentWatermarkGenerator(ConsistentWatermarkConfig())
    start = time.perf_counter()
    report = generator.fit(fit_images)
    fit_seconds = time.perf_counter() - start
    config = default_postprocess("consistent")
    counts = Counts()
    start = time.perf_counter()
    for sample in test_samples:
        counts.add(postprocess(generator(sample.image), config).hole, sample)
    seconds = time.perf_counter() - start
    clean_found = 0
    for index in order[fit_count:]:
        clean_found += int(generator(photos[index]).hole.any())
    false_alarm = clean_found / max(len(test_samples), 1)
    return counts, seconds, fit_seconds, false_alarm, f"template {report.template_shape}"


# ---------------------------------------------------- consistent: logos applied as real datasets do

# (name, condition) of the `consistent` rows over mixed-size photos; see bench/logo_datasets.py.
LOGO_CONDITIONS = (
    ("bottom-right, jitter ±5%, white 0.5", dict(anchor="bottom-right")),
    ("top-left, jitter ±5%, white 0.5", dict(anchor="top-left")),
    ("centre, jitter ±5%, white 0.5", dict(anchor="center")),
    ("white, opacity 0.3", dict(opacity=(0.3, 0.3))),
    ("white, opacity 0.8", dict(opacity=(0.8, 0.8))),
    ("black, opacity 0.3-0.8", dict(color="black", opacity=(0.3, 0.8))),
    ("scale ±20%", dict(scale_jitter=0.2)),
    ("JPEG q70-95", dict(jpeg=(70, 95))),
    ("30% without the logo", dict(absent=0.3)),
    ("tiled grid from top-left, white 0.3-0.6", dict(lattice="grid", anchor="top-left", width_fraction=0.18,
                                                     opacity=(0.3, 0.6))),
    ("tiled diagonal (30°) from centre, white 0.3-0.6", dict(lattice="diagonal", anchor="center",
                                                             width_fraction=0.18, opacity=(0.3, 0.6))),
)


def consistent_dataset_rows(part: str, count: int, seed: int, only: set[int] | None = None) -> list[Row]:
    """`consistent` fitted on, and masking, each logo dataset (half cbsd68, half ~1024 px scenes, both
    orientations, logo 30 % of the width, 6 % from its anchor, ± 5 % jitter unless said otherwise).
    only: indices into LOGO_CONDITIONS to run (the photos drawn for each row do not depend on it)."""
    from logo_datasets import HELD_OUT_LOGO, LOGO_DESIGNS, LogoCondition, logo_dataset, photo_split

    rng = np.random.default_rng(seed)
    small, large = photo_split("cbsd68", part), photo_split("scenes", part)
    designs = LOGO_DESIGNS if part == "held out" else tuple(d for d in LOGO_DESIGNS if d != HELD_OUT_LOGO)
    rows = []
    for index, (name, spec) in enumerate(LOGO_CONDITIONS):
        paths = [*rng.choice(small, count // 2, replace=False), *rng.choice(large, count - count // 2, replace=False)]
        design = designs[index % len(designs)]
        if only is not None and index not in only:
            continue
        photos = [read_rgb(p) for p in paths]
        samples = logo_dataset(photos, design, LogoCondition(**spec), seed=seed + index)
        generator = ConsistentWatermarkGenerator(ConsistentWatermarkConfig())
        start = time.process_time()
        try:
            report = generator.fit([s.image for s in samples])
        except MaskGenerationError as exc:  # a refused fit is the row's result, not a crash of the bench
            counts = Counts()
            for sample in samples:
                if sample.support.any():
                    counts.add(np.zeros(sample.support.shape, bool), _as_sample(sample))
            rows.append(Row("consistent", f"{name} [{design}]", counts, 1.0, f"fit refused: {exc}"[:90]))
            print(f"  consistent / {name}: refused ({exc})", flush=True)
            continue
        fit_seconds = time.process_time() - start
        config = default_postprocess("consistent")
        counts, false_alarms, absent = Counts(), 0, 0
        start = time.process_time()
        results = [generator(sample.image) for sample in samples]
        seconds = time.process_time() - start
        holes = [postprocess(result, config).hole for result in results]
        for sample, hole in zip(samples, holes):
            if sample.support.any():
                counts.add(hole, _as_sample(sample))
            else:
                absent += 1
                false_alarms += int(hole.any())
        note = (f"fit {fit_seconds:.0f}s CPU; {report.anchor}/{report.normaliser}; "
                f"masked without logo {false_alarms}/{absent}")
        if getattr(report, "lattice", None) is not None:  # main before tiled watermarks has none
            counts_found = [r.details.get("instances", 0) for r in results]
            note += f"; tiled, {np.median(counts_found):.0f} tiles/image (median)"
        if spec.get("lattice"):  # every image carries the tiles: the same photos clean measure false alarms
            note += f"; clean photos masked {sum(generator(photo).hole.any() for photo in photos)}/{len(photos)}"
        rows.append(Row("consistent", f"{name} [{design}]", counts, seconds * counts.images / len(samples), note))
        print(f"  consistent / {name} [{design}]: IoU {counts.metrics()['iou']:.3f}; {note}", flush=True)
    return rows


def _as_sample(sample) -> Sample:
    return Sample(name=sample.name, image=sample.image, truth=dilate_hole(sample.support, GT_DILATE_PX),
                  support=sample.support)


def run_given(samples: list[Sample], folder: Path) -> tuple[Counts, float]:
    """Write the ground truth as mask PNGs and read it back through the given generator (speed)."""
    from pipeline.masks import GivenMaskConfig, GivenMaskGenerator
    from pipeline.masks.maskio import write_hole_png

    for index, sample in enumerate(samples):
        write_hole_png(folder / f"{index:03d}.png", sample.truth)
    generator = GivenMaskGenerator(GivenMaskConfig(mask_dir=folder))
    counts = Counts()
    start = time.perf_counter()
    holes = [generator(sample.image, key=f"{index:03d}.jpg").hole for index, sample in enumerate(samples)]
    seconds = time.perf_counter() - start
    for hole, sample in zip(holes, samples):
        counts.add(hole, sample)
    return counts, seconds


def run_sam(samples: list[Sample], checkpoint: Path | None, limit: int) -> tuple[Counts, float, str]:
    """SAM prompted with the text generator's boxes. Without a checkpoint: random vit_b weights, speed only."""
    from pipeline.masks import SamMaskConfig, SamMaskGenerator, SamPrompts, build_sam, published_architecture

    text = TextMaskGenerator()
    if checkpoint is not None:
        generator = SamMaskGenerator(SamMaskConfig(checkpoint=checkpoint, device="auto"))
        note = f"refines text boxes; {checkpoint.name}"
    else:
        model = build_sam(published_architecture("vit_b"))
        generator = SamMaskGenerator(SamMaskConfig(device="cpu"), model=model)
        note = "random vit_b weights (no checkpoint on this machine): speed only, quality meaningless"
        samples = samples[:limit]
    counts = Counts()
    seconds = 0.0
    config = default_postprocess("sam")
    for sample in samples:
        boxes = text(sample.image).boxes
        start = time.perf_counter()
        result = generator.segment(sample.image, SamPrompts(boxes=boxes))
        seconds += time.perf_counter() - start
        counts.add(postprocess(result, config).hole, sample)
    return counts, seconds, note + f"; {generator.device}; time excludes the text detector"


# ------------------------------------------------------------------ text on real photo sizes (issue 11)
# Overlay text as stock sites and photographers set it: one line, white or black, opacity 0.5-0.9, at a
# random place, on ~1024 px scene photos and ~480 px photos; tiled text over the whole picture; and a
# false-positive row on urban photos full of real signs. Photos are split: the first ones tune, the
# rest are held out (--split holdout) for the final table.

SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
# (folder, photos used for tuning); the remaining photos of each folder are the held-out part.
TEXT_PHOTO_SETS = {"scenes": ("scenes", 40), "small": ("cbsd68", 48), "urban": ("urban", 40)}
# A background is "busy" when the clean photo's mean gradient magnitude under the text exceeds this.
BUSY_GRADIENT = 10.0


def split_photos(name: str, split: str, limit: int = 0) -> list[np.ndarray]:
    """Photos of set `name` for `split` ("tune", "holdout" or "all"); empty when ../shared is absent."""
    folder, tuning = TEXT_PHOTO_SETS[name]
    directory = SHARED_DATASETS / folder
    if not directory.is_dir():
        return []
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = {"tune": paths[:tuning], "holdout": paths[tuning:], "all": paths}[split]
    return [read_rgb(p) for p in (paths[:limit] if limit else paths)]


def text_line_overlay(shape: tuple[int, int], rng: np.random.Generator, fonts: Sequence[str | None]) -> Overlay:
    """One line of white or black text, opacity 0.5-0.9, 2.5-6 % of the longer side high, anywhere."""
    height, width = shape
    text = str(rng.choice(WATERMARK_TEXTS))
    font_path = fonts[int(rng.integers(len(fonts)))]
    size = max(14, int(rng.uniform(0.025, 0.06) * max(height, width)))
    tile = text_tile(text, load_font(font_path, size), 0.0)
    while tile.shape[1] > 0.8 * width and size > 12:
        size = int(size * 0.85)
        tile = text_tile(text, load_font(font_path, size), 0.0)
    alpha = np.zeros(shape, np.float32)
    paste_alpha(alpha, tile, int(rng.integers(0, max(width - tile.shape[1], 1))),
                int(rng.integers(0, max(height - tile.shape[0], 1))))
    color = (255.0, 255.0, 255.0) if rng.random() < 0.5 else (0.0, 0.0, 0.0)
    return Overlay(color=np.broadcast_to(np.array(color, np.float32), (*shape, 3)), alpha=alpha,
                   opacity=float(rng.uniform(0.5, 0.9)))


def is_busy(photo: np.ndarray, support: np.ndarray) -> bool:
    """Whether the clean photo is textured under the text's bounding box."""
    import cv2

    ys, xs = np.nonzero(support)
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    patch = gray[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    gradient = np.hypot(cv2.Sobel(patch, cv2.CV_32F, 1, 0), cv2.Sobel(patch, cv2.CV_32F, 0, 1)) / 4
    return float(gradient.mean()) > BUSY_GRADIENT


def text_photo_conditions(split: str, fonts: list[str | None], seed: int,
                          limit: int = 0) -> dict[str, list[Sample]]:
    """The issue-11 text conditions, keyed by row name."""
    conditions: dict[str, list[Sample]] = {}
    for index, (label, name) in enumerate((("~1024 px", "scenes"), ("~480 px", "small"))):
        rng = np.random.default_rng([seed, 11, index])
        for number, photo in enumerate(split_photos(name, split, limit)):
            sample = build_sample(f"{label}/{number}", photo, text_line_overlay(photo.shape[:2], rng, fonts))
            background = "busy" if is_busy(photo, sample.support) else "calm"
            conditions.setdefault(f"line, {label}, {background} background, opacity 0.5-0.9", []).append(sample)
        rng = np.random.default_rng([seed, 12, index])
        for number, photo in enumerate(split_photos(name, split, limit)):
            overlay = text_overlay(photo.shape[:2], rng, fonts, opacity=float(rng.uniform(0.5, 0.9)),
                                   rotated=False, tiled=True)
            conditions.setdefault(f"tiled text, {label}, opacity 0.5-0.9", []).append(
                build_sample(f"tiled {label}/{number}", photo, overlay))
    return dict(sorted(conditions.items()))


def run_text_photo_suite(split: str, fonts: list[str | None], seed: int, sessions: int,
                         limit: int = 0, conditions: str = "") -> list[Row]:
    """Rows of the text conditions on real photo sizes, and the scene-text false-positive row.

    conditions: run only the rows whose name contains it ("line": the one-line rows; the tiled rows take
    most of the time); the urban false-positive row always runs.
    """
    rows: list[Row] = []
    generator = TextMaskGenerator(TextMaskConfig(sessions=sessions))
    config = default_postprocess("text")
    for condition, samples in text_photo_conditions(split, fonts, seed, limit).items():
        if conditions not in condition:
            continue
        counts, seconds = run_text(samples, generator, config)
        rows.append(Row("text", f"{condition} [{split}]", counts, seconds))
        print(f"  text / {condition}: F1 {counts.metrics()['f1']:.3f}", flush=True)
    urban = split_photos("urban", split, limit)
    if urban:
        start = time.perf_counter()
        results = [postprocess(r, config) for r in generator.generate_batch(urban)]
        seconds = time.perf_counter() - start
        masked = sum(r.hole.any() for r in results)
        counts = Counts(images=len(urban), found=masked)
        note = (f"clean urban photos with scene text: {masked}/{len(urban)} = {masked / len(urban):.0%} got a "
                f"mask (mean hole {np.mean([r.hole_ratio for r in results]):.3%})")
        rows.append(Row("text", f"clean urban photos (scene text) [{split}]", counts, seconds, note))
        print(f"  text / {note}", flush=True)
    return rows


# -------------------------------------------------------------------------------------------- table


def print_table(rows: list[Row]) -> None:
    header = ("method", "condition", "images", "hit", "precision", "recall", "F1", "IoU", "F1@0", "masks/s", "note")
    lines = [header]
    for row in rows:
        m = row.counts.metrics()
        lines.append((
            row.method, row.condition, str(row.counts.images), f"{m['hit']:.0%}", f"{m['precision']:.3f}",
            f"{m['recall']:.3f}", f"{m['f1']:.3f}", f"{m['iou']:.3f}", f"{m['f1_support']:.3f}",
            f"{row.counts.images / max(row.seconds, 1e-9):.2f}", row.note,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=Path, help="folder of clean photos (default: cbsd68, else samples/images)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit", type=int, default=20, help="images the consistent generator is fitted on")
    parser.add_argument("--only", choices=["text", "text-photos", "consistent", "consistent-datasets", "given", "sam"],
                        help="run one method only (text-photos: the issue-11 text conditions alone; "
                             "consistent-datasets: the logo dataset rows only)")
    parser.add_argument("--split", choices=["tune", "holdout", "all"], default="holdout",
                        help="which photos of ../shared/datasets the text-photos rows use (default: held out)")
    parser.add_argument("--sam-checkpoint", type=Path, help="SAM .pth; without it SAM is timed with random weights")
    parser.add_argument("--sam-images", type=int, default=3, help="images SAM is timed on without a checkpoint")
    parser.add_argument("--sessions", type=int, default=1, help="ONNX sessions of the text generator")
    parser.add_argument("--logo-photos", choices=["tuning", "held out"], default="tuning",
                        help="photos of the consistent logo datasets (held out: final table only)")
    parser.add_argument("--logo-images", type=int, default=24, help="images per consistent logo dataset")
    parser.add_argument("--logo-rows", help="comma-separated indices of the logo dataset rows to run (default all)")
    parser.add_argument("--conditions", default="",
                        help="text-photos: only the rows whose name contains this (e.g. 'line'); urban always runs")
    args = parser.parse_args(argv)

    paths = find_photos(args.photos)
    if args.limit:
        paths = paths[: args.limit]
    photos = [read_rgb(p) for p in paths]
    fonts = find_fonts()
    print(f"{len(photos)} photos from {paths[0].parent}; {len(fonts)} fonts "
          f"({', '.join(Path(f).stem for f in fonts if f)} + Pillow default); "
          f"ground truth = overlay support (alpha > {GT_ALPHA_THRESHOLD}) dilated by {GT_DILATE_PX} px; "
          f"{os.cpu_count()} CPUs", flush=True)
    rows: list[Row] = []
    if args.only == "consistent-datasets":
        only = {int(i) for i in args.logo_rows.split(",")} if args.logo_rows else None
        rows.extend(consistent_dataset_rows(args.logo_photos, args.logo_images, args.seed, only))
        print()
        print_table(rows)
        return 0
    if args.only in (None, "text-photos"):
        rows.extend(run_text_photo_suite(args.split, fonts, args.seed, args.sessions, args.limit, args.conditions))
        if args.only:
            print()
            print_table(rows)
            return 0
    text_samples = text_conditions(photos, fonts, args.seed)

    if args.only in (None, "text"):
        generator = TextMaskGenerator(TextMaskConfig(sessions=args.sessions))
        config = default_postprocess("text")
        for condition, samples in text_samples.items():
            counts, seconds = run_text(samples, generator, config)
            rows.append(Row("text", condition, counts, seconds))
            print(f"  text / {condition}: F1 {counts.metrics()['f1']:.3f}", flush=True)
        rows[0].note = clean_photo_note(generator, photos, config)
        # The same detector without the recogniser's check, to show what the check buys.
        unverified = TextMaskGenerator(TextMaskConfig(sessions=args.sessions, min_recognition_confidence=0.0))
        for index, condition in enumerate(("opacity 0.50", "opacity 1.00")):
            counts, seconds = run_text(text_samples[condition], unverified, config)
            note = clean_photo_note(unverified, photos, config) if index == 0 else ""
            rows.append(Row("text, detection only", condition, counts, seconds, note))

    if args.only in (None, "given"):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="matpipe-bench-given-") as folder:
            counts, seconds = run_given(text_samples["opacity 1.00"], Path(folder))
        rows.append(Row("given", "ground truth read back (PNG)", counts, seconds, "plumbing check and speed"))

    if args.only in (None, "sam"):
        counts, seconds, note = run_sam(text_samples["opacity 1.00"], args.sam_checkpoint, args.sam_images)
        rows.append(Row("sam", "text boxes as prompts, opacity 1.00", counts, seconds, note))

    if args.only in (None, "consistent"):
        logo = make_logo(None)
        if len(photos) <= args.fit:
            print(f"consistent: skipped, needs more than --fit {args.fit} photos")
        else:
            conditions = [
                *[(f"logo bottom-right, opacity {op:.1f}", dict(opacity=op, placement="bottom-right"))
                  for op in (0.3, 0.5, 0.8)],
                ("logo center, opacity 0.5", dict(opacity=0.5, placement="center")),
                ("logo bottom-right, opacity 0.5, scale 0.9-1.1",
                 dict(opacity=0.5, placement="bottom-right", scale_jitter=0.1)),
                ("logo bottom-right, opacity 0.5, 25% of fit images clean",
                 dict(opacity=0.5, placement="bottom-right", clean_in_fit=0.25)),
            ]
            for name, spec in conditions:
                counts, seconds, fit_seconds, false_alarm, note = run_consistent(
                    photos, logo, fit_count=args.fit, seed=args.seed, **spec)
                condition = f"{name}, fit {args.fit}"
                rows.append(Row("consistent", condition, counts, seconds,
                                f"fit {fit_seconds:.1f}s; found on clean {false_alarm:.0%}; {note}"))
                print(f"  consistent / {condition}: IoU {counts.metrics()['iou']:.3f}", flush=True)
        rows.extend(consistent_dataset_rows(args.logo_photos, args.logo_images, args.seed))

    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

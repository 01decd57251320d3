"""Restoration quality under semi-transparent watermarks: invert the blend vs inpaint the hole.

For each condition (logo colour, opacity, JPEG quality, placement jitter) every photo gets the same
keyline-free logo alpha-blended near its bottom-right corner; the `consistent` generator is fitted on
the watermarked set, the watermark's matte is estimated from it (pipeline.watermark), and each image is
restored. Scores are PSNR / SSIM *inside the watermark's footprint* (pixels the true α touched; SSIM
on the footprint's bounding box) against the clean photo, for:

    leave     the watermarked image as it is
    opencv    OpenCV Telea inpainting of the TRUE footprint (dilated 2 px)
    mat       MAT inpainting of the true footprint (only when a checkpoint resolves)
    invert    our inversion from the FITTED template and matte, the job's code path (InpaintStage):
              matched images inverted in their hole, OpenCV for what inversion hands back; images the
              template did not match are asked about by the matte at the generator's candidates (best
              match, best matches at the fit's size and offset: restore.confirm_watermark) and masked and
              inverted where it confirms the watermark, else left as they are;
              `inverted` = share of footprint pixels recovered by inversion
    invert matched  the same, over the images the consistent template matched only (the inversion's
              own quality, without the detection misses); the `invert` note gives how many unmatched
              images the matte confirmed and their matte gain (share of gradient energy the undo
              removes) next to the clean photo's at the same candidates

    PYTHONPATH=. /work/main/.venv/bin/python bench/restore_quality.py [--split holdout|dev|all]
        [--opacity 0.3 0.5 ...] [--jpeg 95 75] [--jitter on off] [--colors white black orange]
        [--layout single|tiled]

`--layout tiled`: the logo at half size tiled over the whole picture (stock previews): the consistent
generator fits the tile and its lattice, the matte is one tile's, estimated from its instances, and
each tile is aligned and inverted on its own (pipeline.watermark.fit / restore).

Photos: /work/shared/datasets/cbsd68 (68 photos, 481×321 either way round). `--split dev` = the first
40 in name order (used while developing), `holdout` = the other 28 (not looked at until the final
table). The whole split is the watermarked "dataset" the fit sees; scores are over all of it.

`--fit-extra N` makes the dataset bigger, as a job's is (it fits on up to `masks.fit_sample_size` = 200
images and solves the matte from up to `MatteEstimationConfig.max_images` = 64 of them): N more photos
(/work/shared/datasets/urban in name order, scaled to 481 px on the long side, watermarked the same way)
join the fit (the template and the matte are fitted on split + extra); the scores stay over the split's
photos.
The matte's precision is set by how many images it is solved from (its error falls about as 1/√N), so
the split alone (28 or 40 images) understates what a job of a real dataset gets.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/pipeline.py would shadow the package otherwise

from pipeline.masks import ConsistentWatermarkConfig, ConsistentWatermarkGenerator, default_postprocess, postprocess  # noqa: E402
from pipeline.metrics import ssim  # noqa: E402
from pipeline.watermark.restore import InversionStep  # noqa: E402

PHOTOS = Path("/work/shared/datasets/cbsd68")
EXTRA_PHOTOS = Path("/work/shared/datasets/urban")
DEV_COUNT = 40
COLORS = {"white": (255, 255, 255), "black": (0, 0, 0), "orange": (255, 140, 20)}
JITTER_PX = 6


def logo_coverage() -> np.ndarray:
    """A plain logo, no keyline: a ring with a triangle and a bold word. float32 64×200 in [0, 1]."""
    canvas = Image.new("L", (200, 64), 0)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((4, 4, 58, 58), outline=255, width=6)
    draw.polygon([(31, 15), (48, 44), (14, 44)], fill=255)
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 30)
    except OSError:
        font = ImageFont.load_default(size=30)
    draw.text((66, 32), "LUMEN", fill=255, font=font, anchor="lm")
    return np.asarray(canvas, np.float32) / 255.0


@dataclass
class Sample:
    clean: np.ndarray
    marked: np.ndarray
    alpha: np.ndarray


def tiled_alpha(shape: tuple[int, int], tile: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """float32 coverage of `tile` repeated on a grid from the top-left corner (16 px in, rows 2.4 and
    columns 1.6 tile sizes apart, every other row shifted by half a column), moved by (dy, dx)."""
    alpha = np.zeros(shape, np.float32)
    step_y, step_x = round(2.4 * tile.shape[0]), round(1.6 * tile.shape[1])
    for row, y in enumerate(range(16 + dy - 2 * step_y, shape[0], step_y)):
        for x in range(16 + dx - 2 * step_x + (row % 2) * step_x // 2, shape[1], step_x):
            y0, x0 = max(y, 0), max(x, 0)
            y1, x1 = min(y + tile.shape[0], shape[0]), min(x + tile.shape[1], shape[1])
            if y1 > y0 and x1 > x0:
                alpha[y0:y1, x0:x1] = np.maximum(alpha[y0:y1, x0:x1], tile[y0 - y : y1 - y, x0 - x : x1 - x])
    return alpha


def make_samples(photos: list[np.ndarray], coverage: np.ndarray, color: tuple[int, int, int], opacity: float,
                 quality: int, jitter: bool, seed: int, layout: str = "single") -> list[Sample]:
    rng = np.random.default_rng(seed)
    tile = cv2.resize(coverage, (coverage.shape[1] // 2, coverage.shape[0] // 2), interpolation=cv2.INTER_AREA)
    samples = []
    for photo in photos:
        height, width = photo.shape[:2]
        dy, dx = (rng.integers(-JITTER_PX, JITTER_PX + 1, 2) if jitter else (0, 0))
        if layout == "tiled":  # the whole lattice moved, by half the single logo's jitter
            alpha = tiled_alpha((height, width), tile, int(dy) // 2, int(dx) // 2) * opacity
        else:
            y = height - coverage.shape[0] - 16 + int(dy)
            x = width - coverage.shape[1] - 16 + int(dx)
            alpha = np.zeros((height, width), np.float32)
            alpha[y : y + coverage.shape[0], x : x + coverage.shape[1]] = coverage * opacity
        blended = photo * (1 - alpha[..., None]) + np.asarray(color, np.float32) * alpha[..., None]
        buffer = io.BytesIO()
        Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        samples.append(Sample(photo, np.asarray(Image.open(buffer).convert("RGB")), alpha))
    return samples


def scores(restored: np.ndarray, sample: Sample) -> tuple[float, float]:
    zone = sample.alpha > 0.01
    error = ((restored.astype(np.float64) - sample.clean) ** 2)[zone].mean()
    ys, xs = np.nonzero(zone)
    y0, y1, x0, x1 = max(ys.min() - 2, 0), ys.max() + 3, max(xs.min() - 2, 0), xs.max() + 3
    return 10 * np.log10(255.0**2 / max(error, 1e-10)), ssim(restored[y0:y1, x0:x1], sample.clean[y0:y1, x0:x1])


def true_hole(sample: Sample) -> np.ndarray:
    return cv2.dilate((sample.alpha > 0.01).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def mat_engine():
    """MAT when a checkpoint resolves here, else None (the row is left out)."""
    try:
        from matcore.registry import CheckpointUnavailableError, resolve_checkpoint
        from pipeline.stages import Engine

        path = resolve_checkpoint("places512")
    except (ImportError, CheckpointUnavailableError):
        return None
    return Engine("mat", str(path))


def extra_photos(count: int, long_side: int = 481) -> list[np.ndarray]:
    """The first `count` photos of EXTRA_PHOTOS, scaled to `long_side` px on their long side."""
    photos = []
    for path in sorted(EXTRA_PHOTOS.glob("*.jpg"))[:count]:
        image = Image.open(path).convert("RGB")
        factor = long_side / max(image.size)
        photos.append(np.asarray(image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)))
    if len(photos) < count:
        raise SystemExit(f"--fit-extra {count}: only {len(photos)} photos in {EXTRA_PHOTOS}")
    return photos


def run_condition(photos, coverage, color_name, opacity, quality, jitter, engines, seed=0,
                  extra: list[np.ndarray] = (), layout: str = "single") -> list[tuple]:
    samples = make_samples(photos, coverage, COLORS[color_name], opacity, quality, jitter, seed, layout)
    # The extra photos are drawn after the scored ones, so the scored samples do not depend on them.
    fit_only = make_samples(list(extra), coverage, COLORS[color_name], opacity, quality, jitter, seed + 1,
                            layout) if extra else []
    generator = ConsistentWatermarkGenerator(ConsistentWatermarkConfig())
    started = time.perf_counter()
    try:
        # the template and its matte, as the job fits them
        report = generator.fit([s.marked for s in samples] + [s.marked for s in fit_only])
        if generator.template.matte is None:
            raise RuntimeError(f"no matte: {report.matte_error}")
        step = InversionStep(generator.template.matte)
        fit_note = f"fit {time.perf_counter() - started:.0f}s, matte from {report.matte_images}"
    except Exception as exc:  # noqa: BLE001 - a refused fit is a result of the bench, not a crash
        step, fit_note = None, f"fit refused: {exc}"[:200]
    rows: dict[str, list[tuple[float, float]]] = {"leave": [], "opencv": [], "mat": [], "invert": [], "invert matched": []}
    inverted_share: list[float] = []
    missed_gain: list[tuple[float, float]] = []  # (watermarked, clean) matte gain where the fit did not match
    confirmed = 0
    post = default_postprocess("consistent")
    for index, sample in enumerate(samples):
        rows["leave"].append(scores(sample.marked, sample))
        hole = true_hole(sample)
        for name, engine in engines.items():
            rows[name].append(scores(engine.inpaint([sample.marked], [hole], [index])[0], sample))
        if step is None:  # no fit, no matte: the job leaves consistent watermarks alone (the row says why)
            rows["invert"].append(rows["leave"][-1])
            inverted_share.append(0.0)
            continue
        footprint = sample.alpha > 0.01
        mask = postprocess(generator(sample.marked), post)
        details = _provenance_json(mask)
        # The job's path (InpaintStage): the row is inverted in its mask's hole; the generator's mask of an
        # image its template did not match is the matte's footprint where the matte confirmed it there.
        hole, outcome = mask.hole, None
        if mask.hole.any():
            outcome = step(sample.marked, mask.hole, "consistent", details)
        if mask.details.get("matched") is not True:
            missed_gain.append(_missed_gains(step, sample, mask.details))
            confirmed += mask.details.get("matched") == "matte"
        restored = sample.marked
        if outcome is not None and outcome.inverted_px:
            restored = outcome.image
            if outcome.inpaint_hole.any():
                restored = engines["opencv"].inpaint([restored], [outcome.inpaint_hole], [index])[0]
            recovered = hole & ~outcome.inpaint_hole & footprint
            inverted_share.append(float(recovered.sum() / max(int(footprint.sum()), 1)))
        elif hole.any():
            restored = engines["opencv"].inpaint([sample.marked], [hole], [index])[0]
            inverted_share.append(0.0)
        else:
            inverted_share.append(0.0)
        rows["invert"].append(scores(restored, sample))
        if mask.details.get("matched") is True:
            rows["invert matched"].append(rows["invert"][-1])
    condition = f"{'tiled ' if layout == 'tiled' else ''}{color_name} α{opacity:.1f} q{quality} jit {'on' if jitter else 'off'}"
    matched = len(rows["invert matched"])
    miss_note = ""
    if missed_gain:
        marked_gain, clean_gain = np.median(np.asarray(missed_gain), axis=0)
        clean_max = max(clean for _, clean in missed_gain)
        miss_note = (f"; unmatched: {confirmed}/{len(missed_gain)} confirmed by the matte, median matte gain "
                     f"{marked_gain:.3f} (clean photos at the same candidates: median {clean_gain:.3f}, max {clean_max:.3f})")
    out = []
    for name, values in rows.items():
        if not values:
            continue
        psnr_values, ssim_values = zip(*values)
        note = ""
        if name == "invert":
            note = f"inverted {np.mean(inverted_share):.0%} of the footprint; matched {matched}/{len(samples)}; {fit_note}{miss_note}"
        elif name == "invert matched":
            note = f"only the {matched} images the consistent fit matched"
        out.append((condition, name, float(np.mean(psnr_values)), float(np.min(psnr_values)), float(np.mean(ssim_values)), note))
    return out


def _missed_gains(step: InversionStep, sample: Sample, details: dict) -> tuple[float, float]:
    """For an image the consistent template did not match: the share of gradient energy the matte's undo
    removes at the best of the candidates its mask recorded (what `confirm_watermark` tests), in the
    watermarked and in the clean photo. A clear gap says the watermark was there and findable."""
    from pipeline.watermark.restore import best_alignment, unmatched_candidates_from_provenance

    candidates = unmatched_candidates_from_provenance({"details": {**details, "matched": False}})
    if not candidates:
        return 0.0, 0.0
    marked = best_alignment(sample.marked, step.matte, candidates)
    clean = best_alignment(np.ascontiguousarray(sample.clean), step.matte, candidates)
    return marked.gain, clean.gain


def _provenance_json(mask) -> str:
    import json

    return json.dumps(mask.provenance(), default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "holdout", "all"), default="holdout")
    parser.add_argument("--opacity", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--jpeg", type=int, nargs="+", default=[95, 75])
    parser.add_argument("--jitter", choices=("on", "off"), nargs="+", default=["on", "off"])
    parser.add_argument("--colors", choices=tuple(COLORS), nargs="+", default=["white"])
    parser.add_argument("--fit-extra", type=int, default=0,
                        help="more photos (from ../shared/datasets/urban) in the fitted dataset, not scored")
    parser.add_argument("--layout", choices=("single", "tiled"), default="single",
                        help="one logo near the bottom-right corner, or the logo at half size tiled over the "
                             "whole picture (a staggered grid from the top-left corner, as stock previews)")
    args = parser.parse_args(argv)
    if not PHOTOS.is_dir():
        print(f"no photos at {PHOTOS}", file=sys.stderr)
        return 1
    names = sorted(PHOTOS.glob("*.jpg"))
    chosen = {"dev": names[:DEV_COUNT], "holdout": names[DEV_COUNT:], "all": names}[args.split]
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in chosen]
    from matcore.classical import ClassicalInpainter

    engines = {"opencv": ClassicalInpainter()}
    mat = mat_engine()
    if mat is not None:
        engines["mat"] = mat
    coverage = logo_coverage()
    extra = extra_photos(args.fit_extra) if args.fit_extra else []
    print(f"photos: {len(photos)} ({args.split} split of {PHOTOS}) + {len(extra)} fit-only ({EXTRA_PHOTOS.name}); "
          f"footprint = true α > 0.01; "
          f"MAT {'on' if mat else 'off (no checkpoint)'}", flush=True)
    print(f"| condition | method | PSNR dB (mean) | PSNR min | SSIM | note |\n|---|---|---|---|---|---|", flush=True)
    for color in args.colors:
        for quality in args.jpeg:
            for jitter in args.jitter:
                for opacity in args.opacity:
                    for row in run_condition(photos, coverage, color, opacity, quality, jitter == "on", engines,
                                             extra=extra, layout=args.layout):
                        print("| {} | {} | {:.2f} | {:.2f} | {:.4f} | {} |".format(*row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

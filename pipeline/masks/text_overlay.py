"""Overlay text (a watermark laid over the picture) versus scene text (signs, plates, lettering on objects).

A watermark is composited on top of the finished photo: `J = a·W + (1 − a)·I` with one colour W (nearly
always white, black or grey) and one opacity a, rendered at the image's own resolution. Scene text went
through the camera: it sits on a board (a sign, a fin, a plate) painted for legibility, has any paint
colour, and its edges carry the optics' blur. The cues measured per region:

- neutral: how well the strokes' colour shift from their background is a blend toward a grey level
  (residual of `d_c = a·g − a·B_c` over the three channels, relative to |d|); 0 = a perfect grey blend.
- translucency: the slope of the letters' core against the local background between them. Under a
  blend the scene shows through the letters (slope 1 − a, 0.1-0.5 at opacity 0.5-0.9); painted letters
  do not follow their board (slope ≈ 0), and letters that follow the scene's lighting more steeply than
  a blend can are part of the scene.
- sharpness: the steepest one-pixel step at the letters' rims (90th percentile) relative to the
  contrast of their core. A watermark is rendered at the image's own resolution: its anti-aliased rim
  steps by most of the contrast within one pixel (0.85-1.0). Lettering that went through a lens,
  demosaicing and JPEG has rims spread over two or more pixels (≤ 0.8 on the bundled samples' signs and
  car number). Above ~1.05 the step is larger than the letters' own contrast: the background's texture
  dominates the rims and the cue says nothing.
- board: background spread relative to the letters' contrast; reported in the provenance only (it did
  not separate overlay from scene text on the benchmark's photos).

The rule (`OverlayRule`) is explicit: tiled text is overlay; coloured lettering is scene; a grey blend the
scene shows through is overlay; letters following the lighting are scene. Grey text whose translucency
cannot decide (opaque-looking letters, or a background too uniform to see through) is decided by the
next strongest cue, its edges: synthetic one-pixel rims (sharpness in `synthetic_sharpness`) on strictly
grey letters (neutral ≤ `max_synthetic_neutral`) are overlay. What is still undecided is `ambiguous`
(scene by default: a white word with soft rims on a plain wall looks exactly like a painted sign).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

# The translucency cue's value when the background behind the letters is too uniform to measure it.
UNMEASURABLE = -9.0


@dataclass(frozen=True)
class OverlayRule:
    """Thresholds of the overlay-vs-scene decision (see the module docstring for the cues).

    Attributes:
        max_neutral_residual: a region whose colour shift departs more than this from a grey blend is
            scene text (a red sign, a yellow plate).
        min_translucency / max_translucency: letters whose core follows the background behind them with
            a slope in this range are a blend (slope 1 − a for opacity a): overlay. A steeper slope means
            the letters follow the scene's lighting: scene.
        ambiguous: the verdict on grey text that is opaque, or on a background too uniform to tell (a
            white word on a plain wall looks like a painted sign): "scene" keeps it, "overlay" masks it.
        min_stroke_pixels: regions with fewer stroke pixels are too small to measure: `ambiguous`.
        synthetic_sharpness: (low, high) range of the sharpness cue for rims rendered at the image's own
            resolution; grey text the translucency cue cannot decide is overlay when its sharpness is in
            this range. Tuned on the tuning photos (overlays 0.85-0.95 on calm backgrounds) against the
            bundled samples' grey scene text (≤ 0.80, or > 1.1 on textured boards; their one sharper
            sign, 0.94, is not grey enough for `max_synthetic_neutral`).
        max_synthetic_neutral: the edge cue applies only to letters this close to a grey blend (stricter
            than `max_neutral_residual`: printed lettering is often near-grey but rarely exactly).
    """

    max_neutral_residual: float = 0.2
    # Slopes 0.1-0.6 are blends of opacity 0.4-0.9, the range watermarks are set at.
    min_translucency: float = 0.1
    max_translucency: float = 0.6
    ambiguous: Literal["scene", "overlay"] = "scene"
    min_stroke_pixels: int = 12
    synthetic_sharpness: tuple[float, float] = (0.85, 1.05)
    max_synthetic_neutral: float = 0.05

    def __post_init__(self) -> None:
        if self.max_neutral_residual < 0 or not 0 <= self.min_translucency < self.max_translucency:
            raise ValueError("max_neutral_residual must be >= 0 and 0 <= min_translucency < max_translucency")
        if self.ambiguous not in ("scene", "overlay"):
            raise ValueError(f"ambiguous must be 'scene' or 'overlay', got {self.ambiguous!r}")
        if self.min_stroke_pixels < 1:
            raise ValueError(f"min_stroke_pixels must be >= 1, got {self.min_stroke_pixels}")
        low, high = self.synthetic_sharpness
        if not 0 <= low <= high:
            raise ValueError(f"synthetic_sharpness must be (low, high) with 0 <= low <= high, got {self.synthetic_sharpness}")
        if self.max_synthetic_neutral < 0:
            raise ValueError(f"max_synthetic_neutral must be >= 0, got {self.max_synthetic_neutral}")


@dataclass(frozen=True)
class Judgement:
    """The verdict on one region: overlay or scene, why, and the cue values it rests on."""

    overlay: bool
    reason: str
    cues: dict[str, float]


def region_cues(image: np.ndarray, polygon: np.ndarray,
                strokes: tuple[np.ndarray, tuple[int, int], bool]) -> dict[str, float] | None:
    """Cue values of one text region; None when its strokes could not be separated from the background.

    image: uint8 H×W×3; polygon: 4×2 (x, y) box; strokes: `glyphs.glyph_hole(image, polygon, margin_px=0)`.
    """
    stroke_crop, (y0, x0), used_box = strokes
    if used_box:
        return None
    height, width = stroke_crop.shape
    crop = image[y0 : y0 + height, x0 : x0 + width].astype(np.float32)
    inside = np.zeros((height, width), np.uint8)
    cv2.fillPoly(inside, [np.round(polygon - (x0, y0)).astype(np.int32)], 1)
    stroke = stroke_crop & (inside > 0)
    # Background between the letters: inside the box, two pixels clear of any stroke (anti-aliasing).
    background = (inside > 0) & ~(cv2.dilate(stroke.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
    if stroke.sum() < 4 or background.sum() < 4:
        return None
    stroke_mean, background_mean = crop[stroke].mean(axis=0), crop[background].mean(axis=0)
    shift = stroke_mean - background_mean
    contrast = float(np.abs(shift).max()) + 1e-3
    design = np.stack([np.ones(3), -background_mean], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, shift, rcond=None)
    neutral = float(np.linalg.norm(design @ coefficients - shift) / (np.linalg.norm(shift) + 1e-3))
    gray = crop.mean(axis=2)
    # One-pixel differences: a rendered, anti-aliased edge steps by most of the contrast within one
    # pixel; a 3×3 Sobel would blur every edge to two pixels and hide the difference.
    step = np.zeros_like(gray)
    step[:, :-1] = np.abs(np.diff(gray, axis=1))
    step[:-1, :] = np.maximum(step[:-1, :], np.abs(np.diff(gray, axis=0)))
    stroke_u8 = stroke.astype(np.uint8)
    ring = np.ones((3, 3), np.uint8)
    edge = (cv2.dilate(stroke_u8, ring) > 0) & ~(cv2.erode(stroke_u8, ring) > 0)
    # Contrast of the letters' core (their most extreme half), not their anti-aliased rims.
    deviation = gray[stroke] - float(gray[background].mean())
    core = np.abs(deviation) >= np.median(np.abs(deviation))
    luminance_contrast = float(np.abs(deviation[core]).mean()) + 1e-3
    sharpness = float(np.percentile(step[edge], 90) / luminance_contrast) if edge.any() else 0.0
    board = float(crop[background].std(axis=0).mean() / contrast)
    # Translucency: under a blended overlay the letters carry (1 − a) of the scene behind them, so the
    # letters' core follows the local background (slope k = 1 − a); painted letters do not (k ≈ 0).
    window = max(5, int(round(0.6 * min(cv2.minAreaRect(polygon.astype(np.float32))[1]))) | 1)
    weight = cv2.blur(background.astype(np.float32), (window, window))
    local = cv2.blur(gray * background, (window, window)) / np.maximum(weight, 1e-3)
    core_mask = np.zeros_like(stroke)
    core_mask[stroke] = core
    usable = core_mask & (weight > 0.05)
    translucency = UNMEASURABLE
    if usable.sum() >= 8 and local[usable].std() > 2.0:
        x, y = local[usable], gray[usable]
        translucency = float(np.cov(x, y)[0, 1] / (x.var() + 1e-6))
    return {"neutral": round(neutral, 3), "sharpness": round(sharpness, 3), "board": round(board, 3),
            "translucency": round(translucency, 3), "stroke_pixels": int(stroke.sum())}


def judge(cues: dict[str, float] | None, rule: OverlayRule, *, tiled: bool = False) -> Judgement:
    """Overlay or scene for one region's cues (None = unmeasurable), by `rule`."""
    if tiled:
        return Judgement(True, "overlay: repeated as a tiled pattern", cues or {})
    if cues is None or cues["stroke_pixels"] < rule.min_stroke_pixels:
        return Judgement(rule.ambiguous == "overlay",
                         f"{rule.ambiguous}: letters cannot be separated from their background (ambiguous)", cues or {})
    if cues["neutral"] > rule.max_neutral_residual:
        return Judgement(False, f"scene: coloured lettering, not a grey blend (neutral {cues['neutral']:.2f} > "
                                f"{rule.max_neutral_residual})", cues)
    translucency = cues["translucency"]
    if translucency == UNMEASURABLE:
        verdict = "background too uniform to see through the letters"
    elif translucency > rule.max_translucency:
        return Judgement(False, f"scene: the letters follow the scene's lighting (translucency {translucency:.2f} > "
                                f"{rule.max_translucency})", cues)
    elif translucency >= rule.min_translucency:
        return Judgement(True, f"overlay: grey blend the scene shows through (translucency {translucency:.2f})", cues)
    else:
        verdict = f"opaque letters (translucency {translucency:.2f} < {rule.min_translucency})"
    # Translucency cannot decide: the edges are the next strongest cue.
    low, high = rule.synthetic_sharpness
    if cues["neutral"] <= rule.max_synthetic_neutral and low <= cues["sharpness"] <= high:
        return Judgement(True, f"overlay: grey letters with synthetic one-pixel edges (sharpness "
                               f"{cues['sharpness']:.2f} in {low}-{high}); {verdict}", cues)
    return Judgement(rule.ambiguous == "overlay", f"{rule.ambiguous}: grey text, {verdict} (ambiguous)", cues)


def judge_regions(image: np.ndarray, polygons: Sequence[np.ndarray],
                  strokes: Sequence[tuple[np.ndarray, tuple[int, int], bool]], rule: OverlayRule, *,
                  tiled: Collection[int] = ()) -> list[Judgement]:
    """One Judgement per region; `tiled` holds the indices of regions that form a tiled watermark."""
    return [judge(region_cues(image, polygon, stroke), rule, tiled=index in tiled)
            for index, (polygon, stroke) in enumerate(zip(polygons, strokes))]

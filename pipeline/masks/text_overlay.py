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
- blend fit: `J_c = k·B_c + a·W_c` fitted jointly over the three channels on the letters' core (the
  strokes eroded by one pixel: chosen by shape, not by value, so the pixels where the scene happens to be
  darkest or brightest do not bias the slope) against the local background B around them. A composited
  overlay fits with k = 1 − a in the translucency band, one grey colour W (its channels within a few
  levels) and the same k on both halves of the word (one opacity for all letters). Lettering lit by the
  scene gives any W, usually tinted by the light, and a slope that changes along the sign. A blur mixes
  the background into an opaque letter's core and fakes a slope, so the fit only counts on rims that
  are not camera-soft (sharpness ≥ `min_blend_sharpness`).

The rule (`OverlayRule`) is explicit: tiled text is overlay; coloured lettering is scene; a blend fit of one
grey colour at one opacity over the scene is overlay; a grey blend the scene shows through is overlay;
letters following the lighting are scene. Grey text whose translucency
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
        blend_fit: use the blend fit (module docstring): grey letters whose fit has its slope in
            `min_translucency`-`max_translucency`, a colour W whose channels span at most
            `max_blend_colour_spread` grey levels and slopes on the word's two halves within
            `max_blend_slope_gap` of each other and rims at least `min_blend_sharpness` sharp are
            overlay, whatever the translucency and edge cues say. False = the rule without it (as before
            the fit existed).
        max_blend_colour_spread: largest range of the fitted colour's R, G, B (0-255 levels); a
            composited watermark colour is grey (white, black), lettering lit by the scene rarely is.
        max_blend_slope_gap: largest difference between the slopes fitted on the two halves of the word
            (one opacity for the whole overlay).
        min_blend_sharpness: the blend fit needs rims at least this sharp (the sharpness cue): 0.65 is
            the one-pixel step of an edge blurred by a Gaussian of about 0.55 px; opaque letters blurred by
            a lens (0.8-1.2 px) measure 0.37-0.55 and their cores fit a false slope of 0.14-0.29.
    """

    max_neutral_residual: float = 0.2
    # Slopes 0.1-0.6 are blends of opacity 0.4-0.9, the range watermarks are set at.
    min_translucency: float = 0.1
    max_translucency: float = 0.6
    ambiguous: Literal["scene", "overlay"] = "scene"
    min_stroke_pixels: int = 12
    synthetic_sharpness: tuple[float, float] = (0.85, 1.05)
    max_synthetic_neutral: float = 0.05
    blend_fit: bool = True
    # Chosen on the tuning photos: composited overlays whose slope the fit gets right have W's channels
    # within 0.3-5 levels; the scene lettering that fitted a slope in the band had them 2-63 levels apart,
    # and the two within 6 (a car's "33", a "BIOFOX" sign) had halves 0.48-0.61 apart. 3-10 levels and
    # 0.2-0.3 gave the same verdicts there.
    max_blend_colour_spread: float = 6.0
    max_blend_slope_gap: float = 0.3
    min_blend_sharpness: float = 0.65

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
        if min(self.max_blend_colour_spread, self.max_blend_slope_gap, self.min_blend_sharpness) < 0:
            raise ValueError("max_blend_colour_spread, max_blend_slope_gap and min_blend_sharpness must be >= 0, "
                             f"got {self.max_blend_colour_spread}, {self.max_blend_slope_gap}, "
                             f"{self.min_blend_sharpness}")


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
    cues = {"neutral": round(neutral, 3), "sharpness": round(sharpness, 3), "board": round(board, 3),
            "translucency": round(translucency, 3), "stroke_pixels": int(stroke.sum())}
    local_colour = cv2.blur(crop * background[..., None], (window, window)) / np.maximum(weight, 1e-3)[..., None]
    cues.update(blend_fit_cues(crop, local_colour, stroke, weight > 0.05, polygon - (x0, y0)))
    return cues


def blend_fit_cues(crop: np.ndarray, local: np.ndarray, stroke: np.ndarray, covered: np.ndarray,
                   polygon: np.ndarray) -> dict[str, float]:
    """The blend fit `J_c = k·B_c + m_c` (W = m / (1 − k)) of a region's letter core against its background.

    crop: float32 h×w×3 image crop; local: float32 h×w×3 local background colour B around each pixel;
    stroke: bool h×w letter pixels; covered: bool h×w where `local` has background to stand on;
    polygon: 4×2 (x, y) box in crop coordinates (its long side splits the word into halves).
    Returns blend_slope (k), blend_colour (mean of W), blend_colour_spread (range of W's channels) and
    blend_slope_gap (|k| difference between the halves): all UNMEASURABLE where the background varies
    too little under the letters to fit a slope, only the gap where that holds for one half.
    """
    unmeasurable = {"blend_slope": UNMEASURABLE, "blend_colour": UNMEASURABLE,
                    "blend_colour_spread": UNMEASURABLE, "blend_slope_gap": UNMEASURABLE}
    core = cv2.erode(stroke.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if core.sum() < 8:  # strokes one or two pixels wide: their whole width is the core
        core = stroke
    usable = core & covered
    fit = _fit_blend(crop[usable], local[usable])
    if fit is None:
        return unmeasurable
    slope, colour = fit
    # Halves along the box's long side: one opacity for all the letters of an overlay.
    edges = [polygon[1] - polygon[0], polygon[2] - polygon[1]]
    axis = max(edges, key=lambda edge: float(np.hypot(*edge)))
    ys, xs = np.nonzero(usable)
    position = xs * axis[0] + ys * axis[1]
    first = position <= np.median(position)
    halves = [_fit_blend(crop[ys[part], xs[part]], local[ys[part], xs[part]]) for part in (first, ~first)]
    gap = UNMEASURABLE if None in halves else abs(halves[0][0] - halves[1][0])
    return {"blend_slope": round(slope, 3), "blend_colour": round(float(colour.mean()), 1),
            "blend_colour_spread": round(float(np.ptp(colour)), 1),
            "blend_slope_gap": gap if gap == UNMEASURABLE else round(gap, 3)}


def _fit_blend(letters: np.ndarray, background: np.ndarray) -> tuple[float, np.ndarray] | None:
    """Least-squares (k, W) of `letters_c = k·background_c + (1 − k)·W_c` over n×3 pixels; None if unfit.

    One slope k shared by the three channels, one intercept per channel (m_c = (1 − k)·W_c).
    """
    count = len(letters)
    if count < 8 or background.mean(axis=1).std() <= 2.0:
        return None
    design = np.zeros((3 * count, 4), np.float64)
    design[:, 0] = background.reshape(-1)
    for channel in range(3):
        design[channel::3, 1 + channel] = 1.0
    solution, *_ = np.linalg.lstsq(design, letters.reshape(-1).astype(np.float64), rcond=None)
    slope = float(solution[0])
    if abs(1.0 - slope) < 1e-3:  # the letters are the background: no colour of their own
        return None
    return slope, solution[1:] / (1.0 - slope)


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
    if rule.blend_fit and _blend_fits(cues, rule):
        gap = cues["blend_slope_gap"]
        halves = "one half too flat to compare" if gap == UNMEASURABLE else f"halves' slopes within {gap:.2f}"
        return Judgement(True, f"overlay: one grey colour composited over the scene (blend fit: opacity "
                               f"{1 - cues['blend_slope']:.2f}, colour {cues['blend_colour']:.0f} ± "
                               f"{cues['blend_colour_spread'] / 2:.0f}, {halves})", cues)
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


def _blend_fits(cues: dict[str, float], rule: OverlayRule) -> bool:
    """Whether the region's blend fit is one grey colour at one opacity in the watermark range."""
    if cues.get("blend_slope", UNMEASURABLE) == UNMEASURABLE:
        return False
    # A half whose background is too flat to fit a slope on cannot contradict the whole word's fit.
    halves_agree = cues["blend_slope_gap"] == UNMEASURABLE or cues["blend_slope_gap"] <= rule.max_blend_slope_gap
    return (rule.min_translucency <= cues["blend_slope"] <= rule.max_translucency
            and cues["blend_colour_spread"] <= rule.max_blend_colour_spread and halves_agree
            and cues["sharpness"] >= rule.min_blend_sharpness)


def judge_regions(image: np.ndarray, polygons: Sequence[np.ndarray],
                  strokes: Sequence[tuple[np.ndarray, tuple[int, int], bool]], rule: OverlayRule, *,
                  tiled: Collection[int] = ()) -> list[Judgement]:
    """One Judgement per region; `tiled` holds the indices of regions that form a tiled watermark."""
    return [judge(region_cues(image, polygon, stroke), rule, tiled=index in tiled)
            for index, (polygon, stroke) in enumerate(zip(polygons, strokes))]

"""Per-image fit of a known watermark matte: sub-pixel position, scale and opacity factor.

The criterion is the natural-image prior of Dekel et al.: undoing the watermark with the right
placement and opacity leaves an image whose gradients are small and sparse; a misplaced or wrongly
scaled undo leaves ghost edges along the watermark's outline, which a robust (Charbonnier) gradient
energy penalises. The same energy tells an image that carries the watermark from one that does not.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .matte import Placement, WatermarkMatte

# Charbonnier ε (grey levels): below it gradients cost quadratically, above linearly (L1-like, robust).
_EPSILON = 2.0
# The energy is measured around the watermark only: pixels within this many px of α > _ALPHA_FLOOR.
_FOOTPRINT_PX = 3
_ALPHA_FLOOR = 0.01
# An image whose aligned undo removes less than this share of the gradient energy around the watermark
# does not carry it (there): the matte estimation, the inversion and the confirmation of faint watermarks
# all judge presence by this one figure (`AlignedWatermark.gain`).
MIN_GAIN = 0.02
# While fitting, α is capped so the undo stays finite (saturated pixels are inpainted later anyway).
_FIT_ALPHA_MAX = 0.9


def undo_blend(observed: np.ndarray, alpha: np.ndarray, premultiplied: np.ndarray, alpha_max: float) -> np.ndarray:
    """I = (J − α·W) / (1 − α), float32 h×w×3, with α capped at `alpha_max`. observed: float h×w×3."""
    if alpha.size and float(alpha.max()) <= alpha_max:
        # Nothing to cap (most placements of a semi-transparent watermark): the same values, fewer passes.
        return (observed - premultiplied) / (1.0 - alpha)[..., None]
    capped = np.minimum(alpha, alpha_max)[..., None]
    return (observed - premultiplied * np.where(alpha[..., None] > alpha_max, capped / np.maximum(alpha[..., None], 1e-6), 1.0)) / (1.0 - capped)


def _edge_weights(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An edge counts as much as the lesser weight of its two pixels: (horizontal, vertical) edges."""
    return np.minimum(weight[:, 1:], weight[:, :-1]), np.minimum(weight[1:], weight[:-1])


def _edge_energy(image: np.ndarray, weight_x: np.ndarray, weight_y: np.ndarray, keep: np.ndarray) -> float:
    """Σ edge weight · Charbonnier(keep · forward differences) of a float32 h×w×3 image.

    weight_x / weight_y: `_edge_weights` of where to measure; keep: h×w, the share 1 − α of the scene the
    observed image kept. Measuring the undo's gradients in the observed image's units (times `keep`)
    removes the pull towards α = 0 that the undo's amplified scene gradients would otherwise exert.
    It runs hundreds of times per alignment: in place, channels summed by hand (numpy reduces a
    length-3 last axis slowly), weights applied by one dot."""
    keep_x = keep[:, 1:] + keep[:, :-1]
    keep_x *= 0.5
    keep_y = keep[1:] + keep[:-1]
    keep_y *= 0.5
    return _charbonnier(image[:, 1:] - image[:, :-1], keep_x, weight_x) + \
        _charbonnier(image[1:] - image[:-1], keep_y, weight_y)


def _charbonnier(difference: np.ndarray, keep: np.ndarray, weight: np.ndarray) -> float:
    """Σ weight · Σ_channels sqrt((keep · difference)² + ε²); `difference` (float32 h×w×3) is overwritten."""
    difference *= keep[..., None]
    np.multiply(difference, difference, out=difference)
    difference += np.float32(_EPSILON**2)
    np.sqrt(difference, out=difference)
    per_edge = difference[..., 0] + difference[..., 1]
    per_edge += difference[..., 2]
    return float(np.vdot(per_edge, weight))


@dataclass(frozen=True)
class AlignedWatermark:
    """The best placement found, its energy, the energy of leaving the image as it is (no watermark),
    and the share of energy the undo removes (0: nothing; a clean image scores about 0)."""

    placement: Placement
    energy: float
    energy_untouched: float

    @property
    def gain(self) -> float:
        return 1.0 - self.energy / self.energy_untouched if self.energy_untouched > 0 else 0.0


class _Evaluator:
    """Energy of undoing the matte at candidate placements inside one fixed image box."""

    def __init__(self, image: np.ndarray, matte: WatermarkMatte, placement: Placement, reach: float) -> None:
        self.matte = matte
        box = matte.image_box(placement, image.shape[:2], margin=int(np.ceil(reach)) + _FOOTPRINT_PX + 2)
        self.box = box
        y0, x0, y1, x1 = box
        self.observed = image[y0:y1, x0:x1].astype(np.float32)
        alpha, _ = matte.placed(placement.moved(opacity=1.0), box)
        kernel = np.ones((2 * _FOOTPRINT_PX + 1,) * 2, np.uint8)
        self.weight = (cv2.dilate((alpha > _ALPHA_FLOOR).astype(np.uint8), kernel) > 0).astype(np.float32)
        self.edge_weights = _edge_weights(self.weight)
        self._warped: tuple[tuple[float, float, float], np.ndarray] | None = None

    def energy(self, placement: Placement) -> float:
        if self.observed.size == 0:
            return 0.0
        # The opacity grid and the opacity steps of the climb stay at one position: warp it once.
        position = (placement.y, placement.x, placement.scale)
        if self._warped is None or self._warped[0] != position:
            self._warped = (position, self.matte.warped(placement, self.box))
        alpha, premultiplied = self.matte.with_opacity(self._warped[1], placement.opacity)
        undone = undo_blend(self.observed, alpha, premultiplied, _FIT_ALPHA_MAX).astype(np.float32, copy=False)
        return _edge_energy(undone, *self.edge_weights, 1.0 - np.minimum(alpha, _FIT_ALPHA_MAX))


def align_watermark(image: np.ndarray, matte: WatermarkMatte, placement: Placement, *, shift_px: float = 1.5,
                    scale_range: float = 0.02, opacity_range: tuple[float, float] = (0.0, 2.0)) -> AlignedWatermark:
    """Refine `placement` (sub-pixel shift within about ±`shift_px`, scale within ±`scale_range`,
    opacity factor in `opacity_range`) to minimise the gradient energy of the undone image.

    image: uint8 or float H×W×3. Hill-climbing on a shrinking grid (1, ½, ¼, ⅛ px): at each step size
    the shift, scale and opacity move while that lowers the energy; the opacity is searched on a
    coarse grid again once the position is right. A few hundred evaluations of a watermark-sized box.
    """
    return Alignment(image, matte, placement, shift_px=shift_px, scale_range=scale_range,
                     opacity_range=opacity_range).finish()


class Alignment:
    """`align_watermark` in two steps, so that a caller with many starts can look at all of them before
    paying for any hill-climb: the constructor only searches the opacity on a coarse grid at the start's
    own position (`first_look`, ~20 evaluations); `finish` climbs (a few hundred). `finish()` gives
    exactly what `align_watermark` gives."""

    def __init__(self, image: np.ndarray, matte: WatermarkMatte, placement: Placement, *, shift_px: float = 1.5,
                 scale_range: float = 0.02, opacity_range: tuple[float, float] = (0.0, 2.0)) -> None:
        self.matte, self.start = matte, placement
        self.shift_px, self.scale_range, self.opacity_range = shift_px, scale_range, opacity_range
        self.evaluator = _Evaluator(image, matte, placement, reach=shift_px + 1 + scale_range * max(matte.shape))
        self.untouched = self.evaluator.energy(placement.moved(opacity=0.0))
        self.best, self.energy = placement, np.inf
        self._opacity_grid()
        # The best opacity at the start's own position (its gain is a lower bound of `finish()`'s).
        self.first_look = AlignedWatermark(self.best, float(self.energy), float(self.untouched))
        self._finished: AlignedWatermark | None = None

    def _consider(self, candidate: Placement) -> bool:
        low, high = self.opacity_range
        if not low <= candidate.opacity <= high:
            return False
        start = self.start
        if abs(candidate.y - start.y) > self.shift_px + 1 or abs(candidate.x - start.x) > self.shift_px + 1:
            return False
        if abs(candidate.scale / start.scale - 1) > self.scale_range + 1e-9:
            return False
        energy = self.evaluator.energy(candidate)
        if energy < self.energy:
            self.best, self.energy = candidate, energy
            return True
        return False

    def _opacity_grid(self) -> None:
        current = self.best
        for opacity in np.linspace(*self.opacity_range, 21):
            self._consider(current.moved(opacity=float(opacity)))

    def finish(self) -> AlignedWatermark:
        """The hill-climb from the first look (done once; later calls return the same result)."""
        if self._finished is not None:
            return self._finished
        low, high = self.opacity_range
        opacity_step = (high - low) / 20
        for level, step in enumerate((1.0, 0.5, 0.25, 0.125)):
            for _ in range(8):
                best = self.best
                moved = False
                for dy, dx in ((-step, 0.0), (step, 0.0), (0.0, -step), (0.0, step)):
                    moved |= self._consider(best.moved(dy=dy, dx=dx))
                if self.scale_range > 0:
                    for factor in (1.0 - self.scale_range * step / 2, 1.0 + self.scale_range * step / 2):
                        # About the watermark's centre, so that a scale step does not also shift it.
                        moved |= self._consider(_scaled_about_centre(self.best, self.matte, factor))
                for delta in (-opacity_step, opacity_step):
                    moved |= self._consider(self.best.moved(opacity=self.best.opacity + delta))
                if not moved:
                    break
            if level == 0:
                self._opacity_grid()
            opacity_step /= 2
        self._finished = AlignedWatermark(self.best, float(self.energy), float(self.untouched))
        return self._finished


def scan_shifts(image: np.ndarray, matte: WatermarkMatte, placement: Placement, radius: int,
                keep: int = 2) -> list[Placement]:
    """The `keep` whole-pixel shifts of `placement` within ±`radius` px (y and x) whose undo (at the
    matte's own opacity) leaves the least gradient energy, best first: starts for `align_watermark`,
    whose hill-climb only reaches about ±1.5 px (a thin logo's energy has a narrow basin)."""
    evaluator = _Evaluator(image, matte, placement, reach=radius + 1 + 0.02 * max(matte.shape))
    start = placement.moved(opacity=1.0)
    scored = sorted((evaluator.energy(start.moved(dy=float(dy), dx=float(dx))), dy, dx)
                    for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1))
    return [placement.moved(dy=float(dy), dx=float(dx)) for _, dy, dx in scored[:keep]]


def _scaled_about_centre(placement: Placement, matte: WatermarkMatte, factor: float) -> Placement:
    height, width = matte.shape
    centre_y = (matte.origin[0] + height / 2) * placement.scale
    centre_x = (matte.origin[1] + width / 2) * placement.scale
    return Placement(placement.y + centre_y * (1 - factor), placement.x + centre_x * (1 - factor),
                     placement.scale * factor, placement.opacity)

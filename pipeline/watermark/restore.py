"""Watermark inversion as a step of the restoration: from a row's consistent-watermark mask to the
recovered image and the (usually much smaller) hole left for the inpainting engine.

    step = InversionStep.from_template(template_npz, {"alpha_max": 0.95})
    outcome = step(image, hole, mask_method, mask_details_json)
    # outcome.image: inverted pixels in place; outcome.inpaint_hole: what the engine must still fill
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np

from .align import MIN_GAIN, AlignedWatermark, Alignment, align_watermark, scan_shifts
from .invert import InversionConfig, invert_watermark
from .matte import Placement, WatermarkMatte, load_matte

log = logging.getLogger(__name__)

INVERT_MODES = ("auto", "off")
# Mask methods whose masks come with the watermark's placement and a matte estimated with them.
INVERTIBLE_METHODS = ("consistent",)
# An unmatched image's candidates (template matches a few px apart, ± the fit's margin) are scanned this
# far in whole pixels before alignment: the matte's energy has a basin of only about ±1.5 px.
UNMATCHED_SCAN_PX = 3
# An unmatched image is only hill-climbed when the first look at one of its starts (the best opacity at
# the start's own position, `Alignment.first_look`) already removes this share of `min_gain`. Measured on
# the tuning logo datasets (bench/watermarks.py, 4 rows, 31 unmatched images): a clean photo's first looks
# remove nothing (0.0000 in 7 of 7: the best opacity is 0; climbed, 0.0021 at most); the images the matte
# confirmed had first looks of 0.016 or more; and on images with the watermark the climb raised the best
# first look at most 3.2× (0.0036 → 0.0114). So a climb that would have to lift every start from below a
# quarter of `min_gain` to `min_gain` is not paid for — on every clean image of a dataset.
FIRST_LOOK_SHARE = 0.25
# A tiled watermark's tile inverts the hole pixels within this many px of its own footprint (the mask's
# tiles are drawn from the fitted lattice, the footprint from the tile's own alignment).
_TILE_ZONE_PX = 3


def inversion_config(options: Mapping[str, Any] | None) -> InversionConfig:
    """InversionConfig from a plain mapping; unknown keys are an error naming the valid ones."""
    options = dict(options or {})
    valid = {item.name for item in fields(InversionConfig)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown inversion option(s) {', '.join(unknown)} (valid: {', '.join(sorted(valid))})")
    return InversionConfig(**options)


def placement_from_provenance(provenance: Mapping[str, Any]) -> Placement | None:
    """The template's placement recorded by the consistent generator (first box, details.scale)."""
    boxes = provenance.get("boxes") or []
    details = provenance.get("details") or {}
    if not boxes or details.get("matched") is False:
        return None
    x0, y0 = float(boxes[0][0]), float(boxes[0][1])
    return Placement(y=y0, x=x0, scale=float(details.get("scale", 1.0)))


def tile_placements(provenance: Mapping[str, Any]) -> list[Placement]:
    """The template's placement at every tile of a tiled watermark a consistent mask matched
    (details.tiles, details.tile_scale); empty for any other mask."""
    details = provenance.get("details") or {}
    if not details.get("tiled") or details.get("matched") is not True:
        return []
    scale = float(details["tile_scale"])
    return [Placement(float(y), float(x), scale) for y, x in details.get("tiles") or []]


def unmatched_placement_from_provenance(provenance: Mapping[str, Any]) -> Placement | None:
    """The consistent generator's best match in an image it did not match (details.best_yx), or None."""
    candidates = unmatched_candidates_from_provenance(provenance)
    return candidates[0] if candidates else None


def unmatched_candidates_from_provenance(provenance: Mapping[str, Any]) -> list[Placement]:
    """Where to ask the matte about an image the consistent generator did not match: its best match
    anywhere (details.best_yx, at details.scale), then its best matches at the size and offset the fit
    images had (details.fit_geometry: [y, x, scale] each). Empty for a matched image or no record."""
    details = provenance.get("details") or {}
    if details.get("matched") is not False:
        return []
    candidates = []
    best = details.get("best_yx")
    if best:
        candidates.append(Placement(y=float(best[0]), x=float(best[1]), scale=float(details.get("scale", 1.0))))
    for entry in details.get("fit_geometry") or []:
        candidates.append(Placement(y=float(entry[0]), x=float(entry[1]), scale=float(entry[2])))
    return candidates


def best_alignment(image: np.ndarray, matte: WatermarkMatte, candidates: Placement | Sequence[Placement],
                   scan_px: int = 0, first_look_gain: float = 0.0) -> AlignedWatermark | None:
    """The matte aligned at each candidate start (`align_watermark`); the one whose undo removes the most
    gradient energy (highest gain), or None without candidates. With `scan_px`, each candidate is first
    scanned ±`scan_px` whole pixels (`scan_shifts`) and aligned from its best shifts. With
    `first_look_gain`, no start is hill-climbed unless one's first look (`Alignment.first_look`) removes
    at least that much: the best first look is returned instead, a lower bound of what climbing gives."""
    starts = [candidates] if isinstance(candidates, Placement) else list(candidates)
    if scan_px > 0:
        starts = [shifted for start in starts for shifted in scan_shifts(image, matte, start, scan_px)]
    # Candidates a pixel or two apart scan onto the same shifts: align each start (to ½ px) once.
    seen: set[tuple[int, int, float]] = set()
    alignments: list[Alignment] = []
    for start in starts:
        key = (round(start.y * 2), round(start.x * 2), round(start.scale, 3))
        if key not in seen:
            seen.add(key)
            alignments.append(Alignment(image, matte, start))
    if not alignments:
        return None
    # max() keeps the first of equal gains: the order of the starts breaks ties.
    look = max((alignment.first_look for alignment in alignments), key=lambda aligned: aligned.gain)
    if look.gain < first_look_gain:
        return look
    return max((alignment.finish() for alignment in alignments), key=lambda aligned: aligned.gain)


@dataclass
class ConfirmedWatermark:
    """A watermark the matte found where the template match could not: its refined alignment and its
    footprint (bool H×W, `WatermarkMatte.footprint`)."""

    aligned: AlignedWatermark
    hole: np.ndarray


def confirm_watermark(image: np.ndarray, matte: WatermarkMatte, candidates: Placement | Sequence[Placement],
                      min_gain: float = MIN_GAIN) -> ConfirmedWatermark | None:
    """Whether `image` carries the watermark at one of the `candidates` (template matches too faint to
    count): the matte is aligned at each, after a ±`UNMATCHED_SCAN_PX` whole-pixel scan, and the best
    undo must remove at least `min_gain` of the gradient energy around it — the test by which the matte
    estimation tells the images that carry the watermark. None when it does not (an image none of whose
    starts' first looks removes `FIRST_LOOK_SHARE` × `min_gain` is not hill-climbed). The consistent
    generator (its masks) and `InversionStep.invert_unmatched` (the job's inversion) both ask here."""
    aligned = best_alignment(image, matte, candidates, scan_px=UNMATCHED_SCAN_PX,
                             first_look_gain=FIRST_LOOK_SHARE * min_gain)
    if aligned is None or aligned.gain < min_gain:
        return None
    return ConfirmedWatermark(aligned, matte.footprint(aligned.placement, image.shape[:2]))


@dataclass
class InversionOutcome:
    """image: uint8 H×W×3 with the inverted pixels; inpaint_hole: bool H×W, what the engine must still
    fill (the whole hole when nothing could be inverted); inverted_px / inpainted_px: hole pixels of
    each kind; residual: the outline correlation after inversion (NaN when not inverted); note: why
    pixels went to inpainting."""

    image: np.ndarray
    inpaint_hole: np.ndarray
    inverted_px: int
    inpainted_px: int
    residual: float
    opacity: float
    note: str


class InversionStep:
    """Inverts rows whose mask came from the consistent generator, given the matte saved with its template."""

    def __init__(self, matte: WatermarkMatte, config: InversionConfig | None = None) -> None:
        self.matte = matte
        self.config = config or InversionConfig()

    @classmethod
    def from_template(cls, template_npz: bytes | None, options: Mapping[str, Any] | None = None) -> InversionStep | None:
        """The step for a template `.npz` that holds a matte; None when there is none (nothing to invert)."""
        if not template_npz:
            return None
        matte = load_matte(template_npz)
        return None if matte is None else cls(matte, inversion_config(options))

    def __call__(self, image: np.ndarray, hole: np.ndarray, mask_method: str, mask_details: str) -> InversionOutcome | None:
        """The inversion of one row, or None when the row's mask is not an invertible watermark."""
        if mask_method not in INVERTIBLE_METHODS or not hole.any():
            return None
        provenance = json.loads(mask_details) if mask_details else {}
        tiles = tile_placements(provenance)
        if tiles:
            return self._tiled_outcome(image, hole, tiles)
        placement = placement_from_provenance(provenance)
        if placement is None:
            return None
        aligned = align_watermark(image, self.matte, placement)
        return self._outcome(image, hole, aligned)

    def confirm_unmatched(self, image: np.ndarray, mask_method: str,
                          mask_details: str) -> tuple[np.ndarray, InversionOutcome] | None:
        """`invert_unmatched` for one row whose consistent mask is empty (the template matched below its
        threshold), at the candidates its mask details record; None when the row is not such a row or
        the matte does not confirm the watermark. The inpainting stage and bench/restore_quality.py
        both come through here."""
        if mask_method not in INVERTIBLE_METHODS:
            return None
        provenance = json.loads(mask_details) if mask_details else {}
        if (provenance.get("details") or {}).get("matte_checked"):
            return None  # the consistent generator asked its matte (the same one) already: not there
        candidates = unmatched_candidates_from_provenance(provenance)
        return self.invert_unmatched(image, candidates) if candidates else None

    def invert_unmatched(self, image: np.ndarray,
                         candidates: Placement | Sequence[Placement]) -> tuple[np.ndarray, InversionOutcome] | None:
        """A second opinion for an image the consistent generator did not match (its template score fell
        below the presence threshold): undo the matte at each candidate placement (the generator's best
        match, and its best matches at the fit's size and offset) and keep the one that removes the most
        gradient energy; if that is at least `min_gain` — the same test that tells the matte estimation
        which images carry the watermark — the watermark is there and is inverted.

        Returns (hole, outcome): hole, bool H×W, the matte's footprint at the refined placement (dilated
        by a pixel, what the row's mask must then say was touched); None when the matte does not
        confirm the watermark (the image stays untouched).

        The matte's check is far more sensitive than the template match at low opacity: on photos
        whose 0.3-opacity logo the match missed, the undo removed a median 8 % of the energy, against
        0 % at the same place in the clean photos (bench/restore_quality.py, dev split).
        """
        confirmed = confirm_watermark(image, self.matte, candidates, self.config.min_gain)
        if confirmed is None:
            return None
        outcome = self._outcome(image, confirmed.hole, confirmed.aligned)
        return (confirmed.hole, outcome) if outcome.inverted_px else None

    def _tiled_outcome(self, image: np.ndarray, hole: np.ndarray, tiles: Sequence[Placement]) -> InversionOutcome:
        """A tiled watermark inverted tile by tile: each tile is aligned on its own (a tool that tiles
        rounds positions to whole pixels, so tiles drift by a pixel or so from the lattice), and inverts
        the hole pixels near its footprint that no earlier tile took. A tile's pixels the inversion does
        not trust, and slivers of tiles at the border, are left to inpainting."""
        restored = image
        taken = np.zeros(hole.shape, bool)
        inverted = np.zeros(hole.shape, bool)
        inpaint = np.zeros(hole.shape, bool)
        residuals, opacities, refused = [], [], []
        near = np.ones((2 * _TILE_ZONE_PX + 1, 2 * _TILE_ZONE_PX + 1), np.uint8)
        for placement in tiles:
            y0, x0, y1, x1 = self.matte.image_box(placement, hole.shape)
            if y1 - y0 < 3 or x1 - x0 < 3:  # a sliver at the border: too little to align, inpainted
                sliver = np.zeros(hole.shape, bool)
                sliver[y0:y1, x0:x1] = True
                inpaint |= sliver & hole & ~taken
                taken |= sliver & hole
                continue
            aligned = align_watermark(image, self.matte, placement)
            zone = cv2.dilate(self.matte.footprint(aligned.placement, hole.shape).astype(np.uint8), near) > 0
            tile_hole = hole & zone & ~taken
            if not tile_hole.any():
                continue
            taken |= tile_hole
            result = invert_watermark(restored, tile_hole, self.matte, aligned, self.config)
            restored = result.restored
            inverted |= result.inverted & tile_hole
            inpaint |= result.inpaint & tile_hole
            if np.isfinite(result.residual):
                residuals.append(result.residual)
            opacities.append(aligned.placement.opacity)
            if result.reason:
                refused.append(result.reason)
        # Hole pixels near no tile's matte are left as they are, as for one logo (the mask's dilation).
        note = f"{len(refused)} of {len(opacities)} tiles left pixels to inpainting (first: {refused[0]})" if refused else ""
        return InversionOutcome(image=restored, inpaint_hole=inpaint, inverted_px=int(inverted.sum()),
                                inpainted_px=int(inpaint.sum()), residual=max(residuals) if residuals else float("nan"),
                                opacity=float(np.median(opacities)) if opacities else 0.0, note=note)

    def _outcome(self, image: np.ndarray, hole: np.ndarray, aligned) -> InversionOutcome:
        result = invert_watermark(image, hole, self.matte, aligned, self.config)
        inpaint_hole = result.inpaint & hole
        return InversionOutcome(image=result.restored, inpaint_hole=inpaint_hole,
                                inverted_px=int((result.inverted & hole).sum()), inpainted_px=int(inpaint_hole.sum()),
                                residual=result.residual, opacity=aligned.placement.opacity, note=result.reason)

"""Tiled text watermarks: one word repeated in a grid or diagonally over the whole picture (stock previews).

Scene text rarely repeats the same word, at the same size and slant, all over a photo; a tiled
watermark does exactly that. Regions are grouped by what the recogniser read (similar strings), their
text height and their angle; a group with enough members spread over the picture is a tiled pattern.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# A pattern needs this many repeats, of text heights within this ratio and angles within this many
# degrees, whose centres span at least this share of the picture's width or height.
MIN_REPEATS = 4
HEIGHT_RATIO = 1.35
ANGLE_TOLERANCE_DEG = 6.0
MIN_SPREAD = 0.45
# Readings at least this similar (difflib ratio) count as the same word; partial detections of a
# faint repeat are often read with a letter or two missing.
MIN_TEXT_SIMILARITY = 0.6


@dataclass(frozen=True)
class TiledPattern:
    """A tiled watermark: the indices of its member regions, the word read most often, size and angle."""

    members: frozenset[int]
    text: str
    height_px: float
    angle_deg: float

    def describe(self) -> dict[str, Any]:
        return {"repeats": len(self.members), "text": self.text, "height_px": round(self.height_px, 1),
                "angle_deg": round(self.angle_deg, 1)}


def _normalised(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _geometry(polygon: np.ndarray) -> tuple[float, float, float, float]:
    """(centre x, centre y, text height, reading angle in degrees within (−90, 90]) of a 4×2 box."""
    (center_x, center_y), (width, height), angle = cv2.minAreaRect(polygon.astype(np.float32))
    if height > width:  # minAreaRect's width is along its angle; the reading direction is the long side
        width, height, angle = height, width, angle - 90.0
    angle = (angle + 90.0) % 180.0 - 90.0
    return center_x, center_y, height, angle


def find_tiled_pattern(polygons: Sequence[np.ndarray], texts: Sequence[str],
                       shape: tuple[int, int]) -> TiledPattern | None:
    """The largest tiled pattern among text regions (4×2 polygons with their readings), or None.

    shape: (H, W) of the image. Readings may be empty (no recogniser): then size and angle alone group.
    """
    if len(polygons) < MIN_REPEATS:
        return None
    geometry = [_geometry(p) for p in polygons]
    words = [_normalised(t) for t in texts] if texts else [""] * len(polygons)
    height_px, width_px = shape
    best: TiledPattern | None = None
    for seed in range(len(polygons)):
        _, _, seed_height, seed_angle = geometry[seed]
        members = []
        for other, (_, _, other_height, other_angle) in enumerate(geometry):
            similar_size = max(seed_height, other_height) <= HEIGHT_RATIO * min(seed_height, other_height)
            angle_gap = abs((seed_angle - other_angle + 90.0) % 180.0 - 90.0)
            same_word = not words[seed] or not words[other] or \
                difflib.SequenceMatcher(None, words[seed], words[other]).ratio() >= MIN_TEXT_SIMILARITY
            if similar_size and angle_gap <= ANGLE_TOLERANCE_DEG and same_word:
                members.append(other)
        if len(members) < MIN_REPEATS or (best is not None and len(members) <= len(best.members)):
            continue
        centres = np.array([geometry[m][:2] for m in members])
        spread_x = np.ptp(centres[:, 0]) / width_px
        spread_y = np.ptp(centres[:, 1]) / height_px
        if max(spread_x, spread_y) < MIN_SPREAD:
            continue
        readings = [words[m] for m in members if words[m]]
        text = max(set(readings), key=readings.count) if readings else ""
        best = TiledPattern(frozenset(members), text, float(np.median([geometry[m][2] for m in members])),
                            float(np.median([geometry[m][3] for m in members])))
    return best

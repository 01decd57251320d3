"""Tiled text watermarks: one word repeated in a grid or diagonally over the whole picture (stock previews).

Scene text rarely repeats the same word, at the same size and slant, all over a photo; a tiled
watermark does exactly that. Regions are grouped by what the recogniser read (similar strings), their
text height and their angle; a group with enough members spread over the picture is a tiled pattern.
"""
from __future__ import annotations

import difflib
from collections import Counter
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
    Every region seeds a group of the regions like it; the largest group spread over the picture wins
    (on equal size, the first seeded).
    """
    if len(polygons) < MIN_REPEATS:
        return None
    geometry = np.array([_geometry(p) for p in polygons], np.float64)
    words = [_normalised(t) for t in texts] if texts else [""] * len(polygons)
    height_px, width_px = shape
    # Size and angle of every pair at once (n×n); only pairs alike in both are compared as words.
    heights, angles = geometry[:, 2], geometry[:, 3]
    similar_size = np.maximum.outer(heights, heights) <= HEIGHT_RATIO * np.minimum.outer(heights, heights)
    angle_gap = np.abs((angles[:, None] - angles[None, :] + 90.0) % 180.0 - 90.0)
    alike = similar_size & (angle_gap <= ANGLE_TOLERANCE_DEG)
    same_word = _WordSimilarity()
    best: TiledPattern | None = None
    for seed in range(len(polygons)):
        candidates = np.flatnonzero(alike[seed])
        # Word checks only narrow the group down: a seed with too few alike regions cannot win.
        if len(candidates) < MIN_REPEATS or (best is not None and len(candidates) <= len(best.members)):
            continue
        members = [int(other) for other in candidates if same_word(words[seed], words[other])]
        if len(members) < MIN_REPEATS or (best is not None and len(members) <= len(best.members)):
            continue
        centres = geometry[members, :2]
        spread_x = np.ptp(centres[:, 0]) / width_px
        spread_y = np.ptp(centres[:, 1]) / height_px
        if max(spread_x, spread_y) < MIN_SPREAD:
            continue
        readings = [words[m] for m in members if words[m]]
        # The most frequent reading; ties go to the one read first (a set's order changes between runs).
        text = Counter(readings).most_common(1)[0][0] if readings else ""
        best = TiledPattern(frozenset(members), text, float(np.median(geometry[members, 2])),
                            float(np.median(geometry[members, 3])))
    return best


class _WordSimilarity:
    """Whether two normalised readings are the same word (an empty reading matches anything).

    A tiled watermark is read as the same few strings again and again, so each ordered pair of strings
    is compared once (difflib's ratio is not always symmetric, hence ordered).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], bool] = {}

    def __call__(self, seed_word: str, other_word: str) -> bool:
        if not seed_word or not other_word or seed_word == other_word:
            return True
        key = (seed_word, other_word)
        if key not in self._known:
            self._known[key] = difflib.SequenceMatcher(None, seed_word, other_word).ratio() >= MIN_TEXT_SIMILARITY
        return self._known[key]

"""Glyph strokes inside a detected text box: a tighter hole than the whole box.

Text strokes are thin structures of one polarity (brighter or darker than what surrounds them). A
morphological top-hat with a structuring element wider than a stroke isolates them; Otsu's threshold
inside the box separates strokes from background. Inpainting then has to invent only the pixels under
the letters (plus a margin for anti-aliasing), not the whole rectangle.

Which polarity is the text: the top-hat of the other polarity picks the narrow background between and
inside the letters, and on a textured background the grains of the texture. So the letters are the
polarity whose strokes fall into fewer pieces (a word is a dozen solid letters; gaps and texture grains
are many specks). How clearly Otsu separates each polarity only breaks ties: on busy backgrounds the
texture's grains separate as clearly as the letters (on the 80 overlay boxes of the benchmark's tuning
photos, separation picked the wrong polarity in 27, fragments in 6).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .postprocess import dilate_hole, remove_small_components

# Strokes are rarely wider than a third of the text height; the top-hat must be wider than a stroke.
_STROKE_SE_FRACTION = 0.35
# Below this share of the box, stroke extraction failed (flat or faint text); the box is used instead.
_MIN_GLYPH_FRACTION = 0.03
# Stroke pieces smaller than this (px) are specks: removed, and not counted as fragments.
_SPECK_PX = 4

Polarity = Literal["auto", "bright", "dark"]
POLARITIES = ("auto", "bright", "dark")


@dataclass(frozen=True)
class GlyphStrokes:
    """The stroke pixels of one text box, extracted once and grown to any margin on demand.

    strokes: bool h×w crop of the image at `origin` (y0, x0), the box plus the top-hat's reach
    (`kernel` px) on each side, clipped to the image; True on strokes (on the whole filled box when
    `used_box`). inside: the filled box on the same crop. rect: (x, y, w, h) of the box's corners;
    image_shape: (H, W). polarity: "bright" or "dark" letters, "box" when `used_box`.
    """

    strokes: np.ndarray
    inside: np.ndarray
    origin: tuple[int, int]
    used_box: bool
    kernel: int
    rect: tuple[int, int, int, int]
    image_shape: tuple[int, int]
    polarity: str = "box"

    def hole(self, margin_px: float) -> tuple[np.ndarray, tuple[int, int], bool]:
        """The strokes grown by `margin_px`: (bool crop, (y0, x0) of the crop, used_box).

        The crop spans the box plus `kernel + ceil(margin_px)` px, so the grown strokes fit in it;
        this is exactly `glyph_hole(image, polygon, margin_px=margin_px)`.
        """
        y0, x0, y1, x1 = _window(self.rect, self.kernel + int(np.ceil(margin_px)), self.image_shape)
        sy, sx = self.origin[0] - y0, self.origin[1] - x0
        height, width = self.strokes.shape

        def placed(mask: np.ndarray) -> np.ndarray:
            if (sy, sx) == (0, 0) and mask.shape == (y1 - y0, x1 - x0):
                return mask.copy()
            out = np.zeros((y1 - y0, x1 - x0), bool)
            out[sy : sy + height, sx : sx + width] = mask
            return out

        inside = placed(self.inside)
        if self.used_box:
            return inside, (y0, x0), True
        return dilate_hole(placed(self.strokes), margin_px) & dilate_hole(inside, margin_px), (y0, x0), False


def _window(rect: tuple[int, int, int, int], pad: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of `rect` (x, y, w, h) grown by `pad` px, clipped to an image of `shape` (H, W)."""
    x, y, w, h = rect
    return max(y - pad, 0), max(x - pad, 0), min(y + h + pad, shape[0]), min(x + w + pad, shape[1])


def glyph_strokes(image: np.ndarray, polygon: np.ndarray, *, min_contrast: float = 10.0,
                  polarity: Polarity = "auto") -> GlyphStrokes:
    """Stroke pixels of the text inside `polygon` (float 4×2 (x, y) corners) of the uint8 H×W×3 image.

    Strokes are the brighter or darker top-hat above Otsu's level and `min_contrast`, without specks;
    the filled box (`used_box`) when they cannot be separated. polarity: "bright" or "dark" letters
    only, or "auto": the polarity whose strokes fall into fewer pieces, ties to the one Otsu separates
    better (module docstring).
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    shape = image.shape[:2]
    corners = np.round(polygon).astype(np.int32)
    short_side = min(cv2.minAreaRect(polygon.astype(np.float32))[1])
    kernel = int(max(3, round(short_side * _STROKE_SE_FRACTION))) | 1
    rect = cv2.boundingRect(corners)
    # The top-hat at a box pixel sees at most kernel − 1 px around it, so a crop `kernel` px wider than
    # the box gives the same strokes as the whole image would.
    y0, x0, y1, x1 = _window(rect, kernel, shape)
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [corners - (x0, y0)], 1)
    inside_bool = inside > 0

    def result(strokes: np.ndarray, used_box: bool, kind: str = "box") -> GlyphStrokes:
        return GlyphStrokes(strokes, inside_bool, (y0, x0), used_box, kernel, rect, shape, kind)

    if inside_bool.sum() < 16:
        return result(inside_bool, True)
    # Opening and closing only pick minima and maxima, so they are exact on uint8 (and several times
    # faster than on float32); the top-hats are non-negative by construction.
    crop = image[y0:y1, x0:x1]
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    bright = cv2.subtract(crop, cv2.morphologyEx(crop, cv2.MORPH_OPEN, element)).max(axis=-1)
    dark = cv2.subtract(cv2.morphologyEx(crop, cv2.MORPH_CLOSE, element), crop).max(axis=-1)

    candidates: list[tuple[int, float, str, np.ndarray]] = []
    for kind, response in (("bright", bright), ("dark", dark)):
        if polarity not in ("auto", kind):
            continue
        values = response[inside_bool]
        level, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        level = max(float(level), min_contrast)
        values = values.astype(np.float32)
        strokes = values > level
        share = float(strokes.mean())
        if share == 0.0 or share == 1.0:
            continue
        # Otsu's between-class spread: contrast between classes weighted by how balanced they are.
        separation = (values[strokes].mean() - values[~strokes].mean()) * np.sqrt(share * (1 - share))
        mask = (response > level) & inside_bool
        candidates.append((_fragments(mask), float(separation), kind, mask))
    if not candidates:
        return result(inside_bool, True)
    # Fewer pieces first; equal counts go to the clearer separation.
    fragments, separation, kind, mask = min(candidates, key=lambda c: (c[0], -c[1]))
    strokes = remove_small_components(mask, _SPECK_PX)
    if strokes.sum() < _MIN_GLYPH_FRACTION * inside_bool.sum():
        return result(inside_bool, True)
    return result(strokes, False, kind)


def _fragments(mask: np.ndarray) -> int:
    """Number of 8-connected pieces of the bool mask with at least `_SPECK_PX` pixels."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int((stats[1:, cv2.CC_STAT_AREA] >= _SPECK_PX).sum())


def glyph_hole(
    image: np.ndarray, polygon: np.ndarray, *, margin_px: float = 4.0, min_contrast: float = 10.0,
    polarity: Polarity = "auto",
) -> tuple[np.ndarray, tuple[int, int], bool]:
    """Stroke pixels of the text inside `polygon`, grown by `margin_px`.

    image: uint8 H×W×3; polygon: float 4×2 (x, y) corners of the text box in image coordinates.
    Returns (hole crop bool h×w, (y0, x0) of the crop in the image, used_box) where used_box is True
    when strokes could not be separated and the crop is the filled polygon. The margin may reach past
    the box by as much: DB boxes can cut through a stroke's anti-aliased edge, and that edge must go too.
    """
    return glyph_strokes(image, polygon, min_contrast=min_contrast, polarity=polarity).hole(margin_px)

"""Glyph strokes inside a detected text box: a tighter hole than the whole box.

Text strokes are thin structures of one polarity (brighter or darker than what surrounds them). A
morphological top-hat with a structuring element wider than a stroke isolates them; Otsu's threshold
inside the box separates strokes from background. Inpainting then has to invent only the pixels under
the letters (plus a margin for anti-aliasing), not the whole rectangle.
"""
from __future__ import annotations

import cv2
import numpy as np

from .postprocess import dilate_hole, remove_small_components

# Strokes are rarely wider than a third of the text height; the top-hat must be wider than a stroke.
_STROKE_SE_FRACTION = 0.35
# Below this share of the box, stroke extraction failed (flat or faint text); the box is used instead.
_MIN_GLYPH_FRACTION = 0.03


def glyph_hole(
    image: np.ndarray, polygon: np.ndarray, *, margin_px: float = 4.0, min_contrast: float = 10.0
) -> tuple[np.ndarray, tuple[int, int], bool]:
    """Stroke pixels of the text inside `polygon`, grown by `margin_px`.

    image: uint8 H×W×3; polygon: float 4×2 (x, y) corners of the text box in image coordinates.
    Returns (hole crop bool h×w, (y0, x0) of the crop in the image, used_box) where used_box is True
    when strokes could not be separated and the crop is the filled polygon.
    """
    height, width = image.shape[:2]
    corners = np.round(polygon).astype(np.int32)
    short_side = min(cv2.minAreaRect(polygon.astype(np.float32))[1])
    kernel = int(max(3, round(short_side * _STROKE_SE_FRACTION))) | 1
    x, y, w, h = cv2.boundingRect(corners)
    pad = kernel + int(np.ceil(margin_px))
    x0, y0 = max(x - pad, 0), max(y - pad, 0)
    x1, y1 = min(x + w + pad, width), min(y + h + pad, height)
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [corners - (x0, y0)], 1)
    inside_bool = inside > 0
    if inside_bool.sum() < 16:
        return inside_bool, (y0, x0), True

    crop = image[y0:y1, x0:x1].astype(np.float32)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    bright = (crop - cv2.morphologyEx(crop, cv2.MORPH_OPEN, element)).max(axis=-1)
    dark = (cv2.morphologyEx(crop, cv2.MORPH_CLOSE, element) - crop).max(axis=-1)

    best: tuple[float, np.ndarray] | None = None
    for response in (bright, dark):  # the text's polarity is whichever separates better
        values = response[inside_bool]
        level, _ = cv2.threshold(np.clip(values, 0, 255).astype(np.uint8).reshape(-1, 1), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        level = max(float(level), min_contrast)
        strokes = values > level
        share = float(strokes.mean())
        if share == 0.0 or share == 1.0:
            continue
        # Otsu's between-class spread: contrast between classes weighted by how balanced they are.
        separation = (values[strokes].mean() - values[~strokes].mean()) * np.sqrt(share * (1 - share))
        if best is None or separation > best[0]:
            best = (separation, (response > level) & inside_bool)
    if best is None:
        return inside_bool, (y0, x0), True
    strokes = remove_small_components(best[1], 4)
    if strokes.sum() < _MIN_GLYPH_FRACTION * inside_bool.sum():
        return inside_bool, (y0, x0), True
    # Grow by the margin, which may reach past the box by as much: DB boxes can cut through a stroke's
    # anti-aliased edge, and that edge must go too.
    return dilate_hole(strokes, margin_px) & dilate_hole(inside_bool, margin_px), (y0, x0), False


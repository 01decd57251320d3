"""The text generator's fast paths give exactly what the plain definitions give: strokes extracted once
(on uint8) grow into the same holes as a float32 extraction per margin, the vectorised tiled grouping
finds the same pattern as comparing every pair, and the planar network input is the normalised image."""
from __future__ import annotations

import difflib

import cv2
import numpy as np
import pytest

from pipeline.masks.glyphs import glyph_hole, glyph_strokes
from pipeline.masks.postprocess import dilate_hole, remove_small_components
from pipeline.masks.text_detector import DETECTOR_MODELS, to_network_input
from pipeline.masks.text_tiled import find_tiled_pattern

from .conftest import paint_text


def _float_glyph_hole(image, polygon, margin_px, min_contrast=10.0):
    """Stroke extraction as first written: float32 top-hats on a crop padded for this margin."""
    height, width = image.shape[:2]
    corners = np.round(polygon).astype(np.int32)
    kernel = int(max(3, round(min(cv2.minAreaRect(polygon.astype(np.float32))[1]) * 0.35))) | 1
    x, y, w, h = cv2.boundingRect(corners)
    pad = kernel + int(np.ceil(margin_px))
    x0, y0, x1, y1 = max(x - pad, 0), max(y - pad, 0), min(x + w + pad, width), min(y + h + pad, height)
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(inside, [corners - (x0, y0)], 1)
    inside = inside > 0
    if inside.sum() < 16:
        return inside, (y0, x0), True
    crop = image[y0:y1, x0:x1].astype(np.float32)
    element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    bright = (crop - cv2.morphologyEx(crop, cv2.MORPH_OPEN, element)).max(axis=-1)
    dark = (cv2.morphologyEx(crop, cv2.MORPH_CLOSE, element) - crop).max(axis=-1)
    best = None
    for response in (bright, dark):
        values = response[inside]
        level, _ = cv2.threshold(np.clip(values, 0, 255).astype(np.uint8).reshape(-1, 1), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        level = max(float(level), min_contrast)
        strokes = values > level
        share = float(strokes.mean())
        if share in (0.0, 1.0):
            continue
        separation = (values[strokes].mean() - values[~strokes].mean()) * np.sqrt(share * (1 - share))
        mask = (response > level) & inside
        # The letters are the polarity whose strokes fall into fewer pieces of >= 4 px; ties: separation.
        _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        pieces = int((np.bincount(labels[mask]) >= 4).sum()) if mask.any() else 0
        if best is None or (pieces, -separation) < (best[0], -best[1]):
            best = (pieces, separation, mask)
    if best is None:
        return inside, (y0, x0), True
    strokes = remove_small_components(best[2], 4)
    if strokes.sum() < 0.03 * inside.sum():
        return inside, (y0, x0), True
    return dilate_hole(strokes, margin_px) & dilate_hole(inside, margin_px), (y0, x0), False


def _rotated(center, size, angle):
    return cv2.boxPoints((center, size, angle)).astype(np.float32)


def test_strokes_extracted_once_grow_into_the_same_holes_as_an_extraction_per_margin(photo):
    image, _ = paint_text(photo, "SAMPLE", (30, 40), size=40, opacity=0.7)
    image, _ = paint_text(image, "proof", (300, 250), size=30, color=(10, 10, 10), opacity=0.8)
    image, _ = paint_text(image, "EDGE", (430, 2), size=26, opacity=0.9)
    height, width = image.shape[:2]
    polygons = [
        _rotated((110, 65), (170, 52), 0.0),        # the bright word
        _rotated((350, 272), (110, 40), 4.0),       # the dark word, slightly rotated
        _rotated((460, 15), (90, 40), 0.0),         # cut by the top and right borders
        _rotated((240, 160), (200, 60), 30.0),      # plain photo: strokes or a filled box
        _rotated((5, 300), (6, 6), 0.0),            # too small: the filled box
    ]
    for polygon in polygons:
        strokes = glyph_strokes(image, polygon)
        for margin in (0.0, 1.5, 4.0, 7.0):
            expected, expected_origin, expected_box = _float_glyph_hole(image, polygon, margin)
            got, origin, used_box = strokes.hole(margin)
            assert origin == expected_origin and used_box == expected_box
            assert got.shape == expected.shape and np.array_equal(got, expected), (polygon.tolist(), margin)
            assert np.array_equal(glyph_hole(image, polygon, margin_px=margin)[0], expected)
            assert origin[0] + got.shape[0] <= height and origin[1] + got.shape[1] <= width
    # The words themselves are found as strokes, not boxes.
    assert not glyph_strokes(image, polygons[0]).used_box and not glyph_strokes(image, polygons[1]).used_box


def _pairwise_tiled_pattern(polygons, texts, shape):
    """Tiled grouping as first written: every seed compared with every region, one by one."""
    if len(polygons) < 4:
        return None
    geometry = []
    for polygon in polygons:
        (cx, cy), (w, h), angle = cv2.minAreaRect(polygon.astype(np.float32))
        if h > w:
            w, h, angle = h, w, angle - 90.0
        geometry.append((cx, cy, h, (angle + 90.0) % 180.0 - 90.0))
    words = ["".join(ch for ch in t.lower() if ch.isalnum()) for t in texts]
    best = None
    for seed in range(len(polygons)):
        _, _, sh, sa = geometry[seed]
        members = [o for o, (_, _, oh, oa) in enumerate(geometry)
                   if max(sh, oh) <= 1.35 * min(sh, oh) and abs((sa - oa + 90.0) % 180.0 - 90.0) <= 6.0
                   and (not words[seed] or not words[o]
                        or difflib.SequenceMatcher(None, words[seed], words[o]).ratio() >= 0.6)]
        if len(members) < 4 or (best is not None and len(members) <= len(best[0])):
            continue
        centres = np.array([geometry[m][:2] for m in members])
        if max(np.ptp(centres[:, 0]) / shape[1], np.ptp(centres[:, 1]) / shape[0]) < 0.45:
            continue
        best = (frozenset(members), float(np.median([geometry[m][2] for m in members])),
                float(np.median([geometry[m][3] for m in members])))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_tiled_grouping_finds_the_pattern_of_the_pairwise_definition(seed):
    rng = np.random.default_rng(seed)
    shape = (768, 1024)
    count = int(rng.integers(3, 40))
    words = ["SAMPLE", "SAMPLF", "SAMP", "proof", "PR00F", "", "Do not copy", "EXIT"]
    polygons = [_rotated((rng.uniform(0, 1024), rng.uniform(0, 768)), (rng.uniform(60, 200), rng.uniform(18, 34)),
                         float(rng.choice([-30.0, -28.0, 0.0, 2.0, 30.0]) + rng.uniform(-2, 2))) for _ in range(count)]
    texts = [str(rng.choice(words)) for _ in range(count)]
    expected = _pairwise_tiled_pattern(polygons, texts, shape)
    pattern = find_tiled_pattern(polygons, texts, shape)
    if expected is None:
        assert pattern is None
    else:
        assert pattern is not None
        assert (pattern.members, pattern.height_px, pattern.angle_deg) == expected


def test_the_tiled_word_is_the_most_frequent_reading_and_ties_go_to_the_first_read():
    grid = [_rotated((90 + 220 * col, 60 + 150 * row), (120, 30), 0.0) for row in range(4) for col in range(4)]
    texts = ["SAMPLF", "SAMPLE"] * 8
    assert find_tiled_pattern(grid, texts, (640, 960)).text == "samplf"
    assert find_tiled_pattern(grid, texts[1:] + texts[:1], (640, 960)).text == "sample"
    assert find_tiled_pattern(grid, ["SAMPLE"] * 9 + ["SAMPLF"] * 7, (640, 960)).text == "sample"


@pytest.mark.parametrize("detector", sorted(DETECTOR_MODELS))
def test_the_network_input_is_the_normalised_bgr_image_in_planar_layout(photo, detector):
    model = DETECTOR_MODELS[detector]
    expected = ((photo[:, :, ::-1].astype(np.float32) * (1.0 / 255.0) - np.float32(model.mean))
                / np.float32(model.std)).transpose(2, 0, 1)
    network_input = to_network_input(photo, model)
    assert network_input.dtype == np.float32 and network_input.flags.c_contiguous
    assert np.array_equal(network_input, expected)

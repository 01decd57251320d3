"""Shared post-processing: exact dilation, small-component removal, and the hole-ratio guard."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.masks import MaskResult, PostprocessConfig, dilate_hole, postprocess, remove_small_components


def single_pixel(shape=(7, 7), at=(3, 3)) -> np.ndarray:
    hole = np.zeros(shape, bool)
    hole[at] = True
    return hole


def test_dilation_by_one_pixel_is_the_four_neighbour_cross():
    expected = np.zeros((7, 7), bool)
    expected[3, 2:5] = True
    expected[2:5, 3] = True
    np.testing.assert_array_equal(dilate_hole(single_pixel(), 1), expected)


def test_dilation_by_two_pixels_is_the_euclidean_disc():
    grown = dilate_hole(single_pixel(), 2)
    ys, xs = np.mgrid[:7, :7]
    np.testing.assert_array_equal(grown, (ys - 3) ** 2 + (xs - 3) ** 2 <= 4)
    assert grown.sum() == 13


def test_zero_dilation_and_empty_masks_are_unchanged():
    hole = single_pixel()
    np.testing.assert_array_equal(dilate_hole(hole, 0), hole)
    assert not dilate_hole(np.zeros((4, 4), bool), 3).any()


def test_dilation_in_percent_uses_the_shorter_side():
    config = PostprocessConfig(dilate_percent=10)  # 10 % of 10 px = 1 px
    assert config.dilation_radius((10, 40)) == pytest.approx(1.0)
    result = postprocess(MaskResult(hole=single_pixel((10, 40), (5, 20)), method="given"), config)
    assert result.hole.sum() == 5


def test_min_component_area_drops_specks_but_keeps_diagonal_neighbours_together():
    hole = np.zeros((6, 6), bool)
    hole[0, 0] = True                # 1-pixel speck: dropped
    hole[3, 3] = hole[4, 4] = True   # 2 pixels touching diagonally: one 8-connected component, kept
    kept = remove_small_components(hole, 2)
    expected = np.zeros((6, 6), bool)
    expected[3, 3] = expected[4, 4] = True
    np.testing.assert_array_equal(kept, expected)


def test_small_components_are_removed_before_dilation():
    hole = single_pixel((9, 9), (4, 4))
    result = postprocess(MaskResult(hole=hole, method="text"), PostprocessConfig(dilate_px=3, min_component_area=2))
    assert not result.hole.any()


def test_hole_ratio_guard_flags_only_above_the_limit():
    hole = np.zeros((10, 10), bool)
    hole[:5] = True  # exactly 50 %
    at_limit = postprocess(MaskResult(hole=hole, method="given"), PostprocessConfig(max_hole_ratio=0.5))
    assert at_limit.flag is None
    hole[5, 0] = True  # 51 %
    above = postprocess(MaskResult(hole=hole, method="given"), PostprocessConfig(max_hole_ratio=0.5))
    assert above.flag is not None and "51.0%" in above.flag
    np.testing.assert_array_equal(above.hole, hole)  # flagged, not altered: a reviewer sees what was found


@pytest.mark.parametrize("options", [
    {"dilate_px": 2, "dilate_percent": 1.0},
    {"dilate_px": -1},
    {"max_hole_ratio": 0.0},
    {"max_hole_ratio": 1.5},
])
def test_invalid_postprocess_settings_are_rejected(options):
    with pytest.raises(ValueError):
        PostprocessConfig(**options)

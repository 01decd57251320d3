"""EXIF orientation as array operations: the same turn as Pillow's, and exactly undone."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.jpeg.orientation import normal_orientation, to_stored, to_upright


@pytest.mark.parametrize("orientation", range(1, 9))
def test_matches_pillow_and_round_trips(orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))

    assert np.array_equal(to_upright(stored, orientation), expected)
    assert np.array_equal(to_stored(expected, orientation), stored)
    assert np.array_equal(to_stored(expected[..., 0] > 100, orientation), stored[..., 0] > 100)


def test_values_pillow_ignores_mean_upright():
    assert [normal_orientation(v) for v in (None, 0, 9, "6", 6)] == [1, 1, 1, 1, 6]

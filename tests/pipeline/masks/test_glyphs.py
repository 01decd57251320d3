"""Glyph strokes inside a text box: the letters' polarity is found on a textured photo, or given."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.masks import TextMaskConfig
from pipeline.masks.glyphs import glyph_strokes

from .conftest import paint_text

# Dark and white words at places of the fixture photo (x, y) where the photo's texture behind the box
# separates as clearly as the letters: picking the polarity by Otsu separation alone took the
# background between the letters there (stroke recall 0.01-0.07).
PLACES = [(120, 40), (150, 260), (30, 180), (240, 0)]


def _box(support: np.ndarray, pad: int = 5) -> np.ndarray:
    """A detector-like box around the glyph support: 4×2 float32 (x, y) corners."""
    ys, xs = np.nonzero(support)
    x0, y0, x1, y1 = xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad
    return np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def _stroke_recall(image: np.ndarray, support: np.ndarray, **options) -> tuple[float, str]:
    strokes = glyph_strokes(image, _box(support), **options)
    crop, (y0, x0), _ = strokes.hole(0.0)
    truth = support[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]]
    return float((crop & truth).sum() / truth.sum()), strokes.polarity


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(("word", "colour", "polarity"), [("pixelvault.com", (0, 0, 0), "dark"),
                                                         ("SAMPLE", (255, 255, 255), "bright")])
def test_the_letters_polarity_is_found_over_a_textured_photo(photo, place, word, colour, polarity):
    image, support = paint_text(photo, word, place, size=28, color=colour, opacity=0.75)
    recall, found = _stroke_recall(image, support)
    assert found == polarity
    assert recall > 0.8


def test_the_polarity_can_be_given_and_is_validated(photo):
    image, support = paint_text(photo, "pixelvault.com", PLACES[0], size=28, color=(0, 0, 0), opacity=0.75)
    assert _stroke_recall(image, support, polarity="dark") == _stroke_recall(image, support)
    recall, found = _stroke_recall(image, support, polarity="bright")
    assert found == "bright" and recall < 0.3  # told the wrong polarity, it takes the gaps
    with pytest.raises(ValueError, match="polarity"):
        glyph_strokes(image, _box(support), polarity="white")
    with pytest.raises(ValueError, match="glyph_polarity"):
        TextMaskConfig(glyph_polarity="black")
    # A box too small to separate anything is filled whole, with no polarity.
    tiny = glyph_strokes(image, np.float32([[5, 5], [8, 5], [8, 8], [5, 8]]))
    assert tiny.used_box and tiny.polarity == "box"

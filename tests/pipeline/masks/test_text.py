"""Text generator: the bundled ONNX detector finds painted text offline; filters and fill modes behave."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.masks import TextMaskConfig, TextMaskGenerator, dilate_hole

from .conftest import paint_text

GT_MARGIN_PX = 4  # the benchmark's ground truth: glyph support grown by 4 px


# These tests are about detection and fills; the opaque painted texts here would be judged ambiguous by
# the overlay-vs-scene rule (tested in test_text_scene.py), so every text counts.
ALL_TEXT = {"keep_scene_text": False}


@pytest.fixture(scope="module")
def generator() -> TextMaskGenerator:
    return TextMaskGenerator(TextMaskConfig(**ALL_TEXT))


@pytest.fixture(scope="module")
def two_texts(photo):
    """The photo with a corner watermark and a text in the middle, and each text's glyph support."""
    image, corner = paint_text(photo, "WATERMARK 2024", (250, 270), size=28)
    image, middle = paint_text(image, "SAMPLE", (160, 200), size=36, color=(255, 255, 0), opacity=0.8)
    return image, corner, middle


@pytest.fixture(scope="module")
def found(generator, two_texts):
    return generator(two_texts[0])


def recall(hole: np.ndarray, support: np.ndarray) -> float:
    truth = dilate_hole(support, GT_MARGIN_PX)
    return float((hole & truth).sum() / truth.sum())


def test_the_detector_ships_with_the_wheel(generator):
    assert generator.model_path.is_file() and generator.model_path.suffix == ".onnx"


def test_painted_text_is_masked_tightly(found, two_texts):
    _, corner, middle = two_texts
    assert recall(found.hole, corner) > 0.8
    assert recall(found.hole, middle) > 0.8
    truth = dilate_hole(corner | middle, GT_MARGIN_PX)
    precision = (found.hole & truth).sum() / found.hole.sum()
    assert precision > 0.85
    assert len(found.boxes) == 2 and (found.scores > 0.5).all()
    assert all(confidence > 0.5 for confidence in found.details["recognition_confidence"])


def test_a_photo_without_text_gets_an_empty_mask(generator, photo):
    result = generator(photo)
    assert not result.hole.any() and len(result.boxes) == 0


def test_position_filter_keeps_only_corner_text(two_texts):
    image, corner, middle = two_texts
    result = TextMaskGenerator(TextMaskConfig(position="corners", **ALL_TEXT))(image)
    assert recall(result.hole, corner) > 0.8
    assert recall(result.hole, middle) == 0.0
    assert result.details["dropped"]["position"] == 1


def test_glyph_fill_is_tighter_than_box_fill(two_texts, found):
    image, corner, middle = two_texts
    boxes = TextMaskGenerator(TextMaskConfig(fill="box", **ALL_TEXT))(image)
    # Glyph margins may reach past a box by the margin (a box can cut an anti-aliased stroke edge).
    assert not (found.hole & ~dilate_hole(boxes.hole, TextMaskConfig().glyph_margin_px)).any()
    truth = dilate_hole(corner | middle, GT_MARGIN_PX)
    glyph_false = (found.hole & ~truth).sum()
    box_false = (boxes.hole & ~truth).sum()
    assert box_false > glyph_false, (box_false, glyph_false)


def test_batched_sessions_give_the_same_masks_as_single_calls(two_texts, found, photo):
    pooled = TextMaskGenerator(TextMaskConfig(sessions=2, batch_size=1, **ALL_TEXT))
    results = pooled.generate_batch([two_texts[0], photo, two_texts[0][:200]])
    np.testing.assert_array_equal(results[0].hole, found.hole)
    assert not results[1].hole.any()
    assert results[2].hole.shape == (200, 481)


def test_wrong_input_is_refused(generator):
    with pytest.raises(ValueError, match="uint8 H×W×3"):
        generator(np.zeros((10, 10), np.uint8))


def test_recogniser_reads_text_confidently_and_texture_not(two_texts, photo):
    from pipeline.masks.text_verify import TextVerifier

    image, _, _ = two_texts
    text_box = np.array([[250, 272], [472, 272], [472, 300], [250, 300]], np.float32)
    noise = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    verifier = TextVerifier()
    (readable,), (texture,) = verifier.confidences(image, [text_box]), verifier.confidences(noise, [text_box])
    assert readable > 0.8 and texture < 0.5


@pytest.mark.parametrize(("place", "opacity"), [((120, 40), 0.6), ((150, 260), 0.75)])
def test_a_black_watermark_over_a_textured_photo_is_masked_by_its_letters(photo, place, opacity):
    # Default config, scene rule on. The box's bright top-hat holds the background between the dark
    # letters and the photo's texture; taken for the strokes, the "letters" were the coloured photo
    # (judged coloured scene lettering, nothing masked). Now the dark letters are the strokes.
    image, support = paint_text(photo, "pixelvault.com", place, size=28, color=(0, 0, 0), opacity=opacity)
    result = TextMaskGenerator(TextMaskConfig())(image)
    assert recall(result.hole, support) > 0.9
    assert [region["strokes"] for region in result.details["regions"] if region["kept"]] == ["dark"]
    near = dilate_hole(support, 2 * GT_MARGIN_PX)
    assert (result.hole & near).sum() / result.hole.sum() > 0.85

"""Consistent watermark: fitted on images sharing a logo at shifted places, it finds that logo in new
images, leaves images without it alone, and survives a save/load round trip."""
from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline.masks import (
    ConsistentWatermarkGenerator,
    MaskGenerationError,
    WatermarkTemplate,
    default_postprocess,
    dilate_hole,
    postprocess,
)
from pipeline.masks.fields import normalised_correlation
from pipeline.masks.poisson import forward_gradients, poisson_reconstruct

from .conftest import iou, logo_alpha, paint_logo, scenes

SHAPE = (160, 220)


@pytest.fixture(scope="module")
def dataset(photo):
    """14 scenes with the logo near the bottom-right corner (±5 px jitter) and 2 clean scenes."""
    rng = np.random.default_rng(2)
    alpha = logo_alpha()
    images, supports = [], []
    for scene in scenes(photo, 16, SHAPE, seed=2):
        y = SHAPE[0] - alpha.shape[0] - 10 + int(rng.integers(-5, 6))
        x = SHAPE[1] - alpha.shape[1] - 10 + int(rng.integers(-5, 6))
        image, support = paint_logo(scene, alpha, (y, x), opacity=0.6)
        images.append(image)
        supports.append(support)
    return images, supports, scenes(photo, 16, SHAPE, seed=2)


@pytest.fixture(scope="module")
def fitted(dataset) -> ConsistentWatermarkGenerator:
    images, _, _ = dataset
    generator = ConsistentWatermarkGenerator()
    generator.fit(images[:12])
    return generator


def test_poisson_reconstruction_inverts_forward_gradients():
    image = np.random.default_rng(0).normal(size=(23, 31)).astype(np.float32)
    gx, gy = forward_gradients(image)
    np.testing.assert_allclose(poisson_reconstruct(gx, gy), image - image.mean(), atol=1e-4)


def test_normalised_correlation_peaks_at_one_where_the_template_was_cut():
    field = np.random.default_rng(1).normal(size=(40, 50, 2)).astype(np.float32)
    scores = normalised_correlation(field, field[12:22, 30:45])
    assert np.unravel_index(np.argmax(scores), scores.shape) == (12, 30)
    assert scores.max() == pytest.approx(1.0, abs=1e-5) and scores.min() >= -1.0 - 1e-5


def test_fit_finds_a_template_the_size_of_the_logo(fitted):
    report = fitted.report
    assert report is not None and report.images == 12
    height, width = report.template_shape
    assert 40 <= height <= 60 and 96 <= width <= 116  # the logo is 40×96; the template adds a small margin
    assert report.as_dict()["match_score_median"] > 0.5


@pytest.mark.parametrize("held_out", [12, 13])
def test_logo_on_a_held_out_image_is_masked(fitted, dataset, held_out):
    images, supports, _ = dataset
    result = postprocess(fitted(images[held_out]), default_postprocess("consistent"))
    assert result.details["matched"] and result.scores[0] > 0.5
    # Compare as the benchmark does: both masks grown by the same 4 px.
    assert iou(result.hole, dilate_hole(supports[held_out], 4)) > 0.8


def test_an_image_without_the_logo_gets_an_empty_mask(fitted, dataset):
    _, _, clean = dataset
    for scene in clean[12:]:
        result = fitted(scene)
        assert not result.hole.any()
        assert not result.details["matched"] and result.details["match_score"] < 0.35


def test_saved_template_gives_the_same_masks(fitted, dataset):
    images, _, _ = dataset
    buffer = io.BytesIO()
    fitted.template.save(buffer)
    buffer.seek(0)
    reloaded = ConsistentWatermarkGenerator(template=WatermarkTemplate.load(buffer))
    np.testing.assert_array_equal(reloaded(images[14]).hole, fitted(images[14]).hole)


def test_unfitted_generator_and_tiny_samples_are_refused(dataset):
    images, _, _ = dataset
    with pytest.raises(MaskGenerationError, match="fitted first"):
        ConsistentWatermarkGenerator()(images[0])
    with pytest.raises(MaskGenerationError, match="at least 3 images"):
        ConsistentWatermarkGenerator().fit(images[:2])


@pytest.mark.parametrize("kind", ["noise", "photo crops"])
def test_images_sharing_nothing_do_not_produce_a_watermark(photo, kind):
    if kind == "noise":
        images = [np.random.default_rng(seed).integers(0, 256, (*SHAPE, 3), dtype=np.uint8) for seed in range(6)]
    else:
        images = scenes(photo, 12, SHAPE, seed=5)
    with pytest.raises(MaskGenerationError, match="could not be reconstructed|no watermark|do not share"):
        ConsistentWatermarkGenerator().fit(images)

"""Quality figures: each one moves the way a person looking at the restoration would expect."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.metrics import (
    color_delta_e,
    psnr,
    residual_detection,
    restoration_metrics,
    seam_score,
    ssim,
    texture_ratio,
)

from .conftest import hole_box


@pytest.fixture
def scene():
    """A photo-like picture (slow colour drift + fine texture) and a 40×40 hole in its middle."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    drift = np.stack([90 + xx * 0.6, 120 + yy * 0.4, 150 - xx * 0.3], axis=-1)
    texture = cv2.GaussianBlur(rng.normal(0, 25, (96, 128)).astype(np.float32), (0, 0), 1.0)[..., None]
    image = np.clip(drift + texture, 0, 255).astype(np.uint8)
    return image, hole_box(96, 128, (40, 30, 80, 70))


def test_a_perfect_fill_is_seamless_consistent_and_equally_textured(scene):
    image, hole = scene
    assert seam_score(image, hole) == pytest.approx(1.0, abs=0.25)
    assert color_delta_e(image, hole) < 5.0
    assert texture_ratio(image, hole) == pytest.approx(1.0, abs=0.3)


def test_a_brightness_step_at_the_outline_raises_the_seam_score(scene):
    image, hole = scene
    stepped = image.copy()
    stepped[hole] = np.clip(stepped[hole].astype(int) + 60, 0, 255).astype(np.uint8)
    assert seam_score(stepped, hole) > 2 * seam_score(image, hole)
    assert color_delta_e(stepped, hole) > 4 * color_delta_e(image, hole)


def test_a_flat_fill_has_far_less_texture_than_its_context(scene):
    image, hole = scene
    flat = image.copy()
    flat[hole] = image[~hole].mean(axis=0).astype(np.uint8)
    blurred = image.copy()
    blurred[hole] = cv2.GaussianBlur(image, (15, 15), 6)[hole]
    assert texture_ratio(flat, hole) < 0.2
    assert texture_ratio(flat, hole) < texture_ratio(blurred, hole) < texture_ratio(image, hole)


def test_figures_are_none_without_a_hole(scene):
    image, _ = scene
    empty = np.zeros(image.shape[:2], bool)
    metrics = restoration_metrics(image, empty)
    assert (metrics.seam_score, metrics.color_delta_e, metrics.texture_ratio) == (None, None, None)
    assert residual_detection(empty, empty) is None


def test_residual_detection_is_the_share_of_the_hole_still_found(scene):
    _, hole = scene
    half = hole.copy()
    half[:, :60] = False
    assert residual_detection(hole, np.zeros_like(hole)) == 0.0
    assert residual_detection(hole, hole) == 1.0
    assert residual_detection(hole, half) == pytest.approx(0.5)


def test_psnr_and_ssim_against_a_reference(scene):
    image, hole = scene
    noisy = np.clip(image.astype(int) + np.random.default_rng(0).normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    assert psnr(image, image) == 100.0 and ssim(image, image) == pytest.approx(1.0)
    mse = np.mean((noisy.astype(float) - image.astype(float)) ** 2)
    assert psnr(noisy, image) == pytest.approx(10 * np.log10(255**2 / mse))
    assert 0.3 < ssim(noisy, image) < 0.95
    figures = restoration_metrics(noisy, hole, reference=image)
    assert figures.psnr == pytest.approx(psnr(noisy, image)) and figures.ssim == pytest.approx(ssim(noisy, image))
    with pytest.raises(ValueError, match="reference is"):
        psnr(image, image[:10])


def test_figures_on_the_crop_around_the_hole_equal_those_on_the_whole_image(scene):
    image, hole = scene
    figures = restoration_metrics(image, hole, ring_px=8)
    assert figures.seam_score == pytest.approx(seam_score(image, hole, 8), rel=1e-5)
    assert figures.color_delta_e == pytest.approx(color_delta_e(image, hole, 8), rel=1e-5)
    assert figures.texture_ratio == pytest.approx(texture_ratio(image, hole, 8), rel=1e-5)

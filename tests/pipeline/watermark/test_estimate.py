"""Multi-image matting recovers a watermark's exact α and colour from the images that carry it."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.watermark import MatteEstimationConfig, MatteEstimationError, Placement, estimate_matte

from .conftest import blend


def _rough_placements(data, seed: int = 3) -> list[Placement]:
    """What the consistent locator gives: the template's top-left, off by up to a pixel."""
    rng = np.random.default_rng(seed)
    return [Placement(y + int(rng.integers(-1, 2)), x + int(rng.integers(-1, 2))) for y, x in data.offsets]


def _placed_alpha_error(fit, data) -> float:
    """RMS of (fitted matte at each image's fitted placement − that image's true α) on the logo."""
    errors = []
    for index, aligned in enumerate(fit.alignments):
        if aligned is None:
            continue
        box = fit.matte.image_box(aligned.placement, data.marked[index].shape[:2])
        alpha, _ = fit.matte.placed(aligned.placement, box)
        truth = data.alpha[index][box[0]:box[2], box[1]:box[3]]
        zone = truth > 0.05
        errors.append(((alpha - truth)[zone] ** 2).mean())
    return float(np.sqrt(np.mean(errors)))


@pytest.mark.slow
@pytest.mark.parametrize("color", [(255, 255, 255), (40, 90, 230)], ids=["white", "blue"])
def test_recovers_alpha_and_color(many_scenes, color):
    data = blend(many_scenes, opacity=0.5, color=color)
    fit = estimate_matte(data.marked, _rough_placements(data), data.coverage > 0.2)
    assert fit.images_used == len(many_scenes)
    assert _placed_alpha_error(fit, data) < 0.04
    strong = fit.matte.alpha > 0.3
    assert np.abs(fit.matte.color[strong] - np.asarray(color)).mean() < 10
    # Each image's fitted placement lands on the truth (sub-pixel), whatever the locator's error.
    for (y, x), aligned in zip(data.offsets, fit.alignments):
        assert aligned is not None
    offsets = np.array([(a.placement.y - y, a.placement.x - x) for (y, x), a in zip(data.offsets, fit.alignments)])
    assert np.abs(offsets - np.median(offsets, axis=0)).max() < 0.6


@pytest.mark.slow
def test_per_image_opacity_and_images_without_the_watermark(many_scenes):
    rng = np.random.default_rng(5)
    opacities = [float(v) for v in rng.uniform(0.35, 0.65, len(many_scenes))]
    present = [index % 5 != 0 for index in range(len(many_scenes))]  # a fifth of the images lack it
    data = blend(many_scenes, opacity=opacities, present=present)
    fit = estimate_matte(data.marked, _rough_placements(data), data.coverage > 0.2)
    kept = [aligned is not None for aligned in fit.alignments]
    assert kept == present
    factors = np.array([a.placement.opacity for a in fit.alignments if a is not None])
    truth = np.array([o for o, p in zip(opacities, present) if p])
    # Opacity factors are relative to the matte's typical opacity: compare them up to that scale. Measured
    # here: within ±31 % of the truth (a wide opacity range blurs the common matte); images without the
    # watermark are told apart exactly (above).
    ratio = factors / truth
    assert np.abs(ratio / np.median(ratio) - 1).max() < 0.35


def test_too_few_images_is_refused(many_scenes):
    data = blend(many_scenes[:2], opacity=0.5)
    with pytest.raises(MatteEstimationError, match="at least"):
        estimate_matte(data.marked, [Placement(y, x) for y, x in data.offsets], data.coverage > 0.2,
                       MatteEstimationConfig(passes=1))


def _placed_luma_error(fit, data) -> tuple[float, float, float, float]:
    """(actual, predicted) RMS error of α and of α·W's luma on the logo, at each image's placement."""
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    actual_alpha, actual_luma, predicted_alpha, predicted_luma = [], [], [], []
    for index, aligned in enumerate(fit.alignments):
        if aligned is None:
            continue
        box = fit.matte.image_box(aligned.placement, data.marked[index].shape[:2])
        alpha, premultiplied = fit.matte.placed(aligned.placement, box)
        moments = fit.matte.placed_error_moments(aligned.placement, box)
        truth = data.alpha[index][box[0]:box[2], box[1]:box[3]]
        zone = truth > 0.05
        actual_alpha.append(((alpha - truth)[zone] ** 2).mean())
        actual_luma.append(((premultiplied @ luma - truth * float(data.color @ luma))[zone] ** 2).mean())
        predicted_alpha.append(moments[..., 0][zone].mean())
        predicted_luma.append(moments[..., 2][zone].mean())
    return tuple(float(np.sqrt(np.mean(v))) for v in (actual_alpha, predicted_alpha, actual_luma, predicted_luma))


@pytest.mark.slow
def test_the_matte_says_how_far_it_may_be_off(many_scenes):
    """The error the estimation reports with the matte (solved again from each half of the images) is
    the size of its actual error against the exact α and W, and shrinks with more images."""
    errors = {}
    for count in (12, 40):
        data = blend(many_scenes[:count], opacity=0.5, color=(40, 90, 230))
        fit = estimate_matte(data.marked, _rough_placements(data), data.coverage > 0.2, MatteEstimationConfig(passes=2))
        errors[count] = _placed_luma_error(fit, data)
        actual_alpha, predicted_alpha, actual_luma, predicted_luma = errors[count]
        assert 0.6 < predicted_alpha / actual_alpha < 1.6, errors[count]
        assert 0.6 < predicted_luma / actual_luma < 1.6, errors[count]
    assert errors[40][1] < errors[12][1] and errors[40][3] < errors[12][3]
    # It travels with the matte in the template's .npz.
    from pipeline.watermark import add_matte_to_template, load_matte

    from .conftest import template_npz_bytes

    stored = load_matte(add_matte_to_template(template_npz_bytes(data.coverage > 0.2), fit.matte))
    np.testing.assert_array_equal(stored.error_moments, fit.matte.error_moments)


@pytest.mark.slow
def test_a_penalty_closer_to_l1_gives_a_more_precise_matte(many_scenes):
    """Scene edges sit in a different place in every crop; a gradient penalty that is linear above a
    small ε (the default) lets them pull the matte less than a wider quadratic zone does."""
    data = blend(many_scenes[:20], opacity=0.5, color=(40, 90, 230))
    errors = {}
    for epsilon in (0.7, 2.0):
        fit = estimate_matte(data.marked, _rough_placements(data), data.coverage > 0.2,
                             MatteEstimationConfig(charbonnier_eps=epsilon, error_moments=False))
        errors[epsilon] = _placed_alpha_error(fit, data)
    assert MatteEstimationConfig().charbonnier_eps == 0.7
    assert errors[0.7] < 0.9 * errors[2.0], errors

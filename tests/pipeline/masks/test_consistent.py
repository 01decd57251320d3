"""Consistent watermark: fitted on images sharing a logo at shifted places, it finds that logo in new
images, leaves images without it alone, and survives a save/load round trip; a plain keyline-free
logo sized with the image, jittered and missing from some images of mixed sizes is found too, and
images that share nothing are refused."""
from __future__ import annotations

import io
from dataclasses import replace

import cv2
import numpy as np
import pytest

from pipeline.masks import (
    ConsistentWatermarkConfig,
    ConsistentWatermarkGenerator,
    MaskGenerationError,
    WatermarkTemplate,
    default_postprocess,
    dilate_hole,
    postprocess,
)
from pipeline.masks.fields import normalised_correlation
from pipeline.masks.poisson import forward_gradients, poisson_reconstruct

from .conftest import iou, logo_alpha, paint_logo, plain_logo_alpha, scenes

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


def test_fit_finds_a_template_the_size_of_the_logo(fitted, dataset):
    report = fitted.report
    assert report is not None and report.images == 12 and report.anchor == "bottom-right"
    _, supports, _ = dataset
    # The images are all 160×220, so template pixels are image pixels: the logo's support, nearly.
    assert abs(int(fitted.template.support.sum()) - int(supports[0].sum())) < 0.25 * supports[0].sum()
    assert report.as_dict()["match_score_median"] > 0.5 and report.present_share == 1.0


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
        assert not result.details["matched"] and result.details["match_score"] < fitted.template.match_threshold


def test_saved_template_gives_the_same_masks(fitted, dataset):
    images, _, _ = dataset
    buffer = io.BytesIO()
    fitted.template.save(buffer)
    buffer.seek(0)
    reloaded = ConsistentWatermarkGenerator(template=WatermarkTemplate.load(buffer))
    np.testing.assert_array_equal(reloaded(images[14]).hole, fitted(images[14]).hole)
    # The matte travels in the same file (plain arrays): a worker asks the same matte about faint logos.
    np.testing.assert_array_equal(reloaded.template.matte.alpha, fitted.template.matte.alpha)
    np.testing.assert_array_equal(reloaded.template.matte.color, fitted.template.matte.color)


def test_the_matte_check_can_be_turned_off(dataset, fitted):
    images, _, clean_scenes = dataset
    generator = ConsistentWatermarkGenerator(ConsistentWatermarkConfig(matte_check=False))
    report = generator.fit(images[:12])
    assert generator.template.matte is None and report.matte_images == 0
    # A template that carries a matte all the same (the job adds one for its inversion) is not asked
    # either: the unmatched image's mask is the template match's alone, and the inversion may ask later.
    assert fitted.template.matte is not None
    generator.template = fitted.template
    clean = clean_scenes[-1]
    assert fitted(clean).details.get("matte_checked") is True
    unchecked = generator(clean)
    assert "matte_checked" not in unchecked.details and not unchecked.hole.any()


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
    with pytest.raises(MaskGenerationError, match="they do not share a watermark"):
        ConsistentWatermarkGenerator().fit(images)


# ------------------------------------------------ plain logo, sized with the image, jittered, mixed sizes

MIXED_SHAPES = ((150, 220), (220, 150), (180, 270), (270, 180))


def _plain_logo_dataset(photo: np.ndarray, count: int, *, seed: int, color: tuple[int, int, int],
                        opacity: float, absent: set[int], jpeg: int | None = None):
    """`count` images of mixed sizes/orientations; the logo is 35 % of the width (±15 %), 6 % from the
    bottom-right corner with ±4 % jitter, keyline-free; images in `absent` have none."""
    rng = np.random.default_rng(seed)
    images, supports = [], []
    for index in range(count):
        shape = MIXED_SHAPES[index % len(MIXED_SHAPES)]
        scene = scenes(photo, 1, shape, seed=seed * 100 + index)[0]
        if index in absent:
            images.append(scene)
            supports.append(np.zeros(shape, bool))
            continue
        width = round(0.35 * shape[1] * rng.uniform(0.85, 1.15))
        alpha = plain_logo_alpha(width)
        y = shape[0] - alpha.shape[0] - round(0.06 * shape[0]) + round(rng.uniform(-0.04, 0.04) * shape[0])
        x = shape[1] - alpha.shape[1] - round(0.06 * shape[1]) + round(rng.uniform(-0.04, 0.04) * shape[1])
        image, support = paint_logo(scene, alpha, (y, x), opacity=opacity, color=color)
        if jpeg is not None:
            ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg])
            image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].copy()
        images.append(image)
        supports.append(support)
    return images, supports


@pytest.fixture(scope="module")
def plain_white(photo):
    """20 images (4 without the logo) with a white half-opacity plain logo; the last two are held out."""
    images, supports = _plain_logo_dataset(photo, 20, seed=7, color=(255, 255, 255), opacity=0.5, absent={2, 7, 11, 16})
    generator = ConsistentWatermarkGenerator()
    generator.fit(images[:18])
    return generator, images, supports


def test_plain_logo_with_jitter_and_scale_over_mixed_sizes_is_fitted(plain_white):
    generator, _, _ = plain_white
    report = generator.report
    assert report.anchor == "bottom-right" and report.normaliser == "width"
    # The images without the logo are recognised as such during the fit.
    assert [not p.present for p in report.placements] == [i in {2, 7, 11, 16} for i in range(18)]


def test_plain_logo_is_masked_in_every_image_that_has_it(plain_white):
    generator, images, supports = plain_white
    config = default_postprocess("consistent")
    for image, support in zip(images, supports):
        result = postprocess(generator(image), config)
        if support.any():
            assert result.details["matched"] and iou(result.hole, dilate_hole(support, 4)) > 0.75
        else:
            assert not result.hole.any() and not result.details["matched"]


def test_placements_map_the_template_onto_each_image(plain_white):
    """The fit's per-image placements are what the masks use: crops there show the same watermark."""
    generator, images, supports = plain_white
    template = generator.template
    placements = generator.report.placements
    crops = [template.crop(images[i], p) for i, p in enumerate(placements) if p.present]
    assert all(crop.shape == (*template.shape, 3) for crop in crops)
    # A white logo: inside its support the aligned crops are brighter than just outside it.
    ring = cv2.dilate(template.support.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~template.support
    brighter = [crop[template.support].mean() > crop[ring].mean() for crop in crops]
    assert np.mean(brighter) > 0.8
    for index in (0, 5):
        placement = generator.locate(images[index])
        drawn = template.support_mask(images[index].shape[:2], placement)
        assert iou(dilate_hole(drawn, 2), dilate_hole(supports[index], 2)) > 0.7


@pytest.mark.slow
def test_faint_logo_after_jpeg_is_masked(photo):
    images, supports = _plain_logo_dataset(photo, 16, seed=9, color=(255, 255, 255), opacity=0.35, absent={3, 10},
                                           jpeg=75)
    generator = ConsistentWatermarkGenerator()
    generator.fit(images)
    config = default_postprocess("consistent")
    scores = [iou(postprocess(generator(image), config).hole, dilate_hole(support, 4))
              for image, support in zip(images, supports) if support.any()]
    assert np.median(scores) > 0.75
    assert not generator(images[3]).hole.any() and not generator(images[10]).hole.any()


def test_mixed_size_photos_without_a_shared_logo_are_refused(photo):
    images, _ = _plain_logo_dataset(photo, 14, seed=11, color=(255, 255, 255), opacity=0.5, absent=set(range(14)))
    with pytest.raises(MaskGenerationError, match="they do not share a watermark"):
        ConsistentWatermarkGenerator().fit(images)


def test_the_fit_does_not_depend_on_the_order_of_its_images(dataset):
    """File names, shards and sources list images in any order: the same images give the same template,
    and the clean ones are recognised wherever they are listed."""
    images, _, clean = dataset
    listed = [*clean[:2], *images[:10]]
    first, second = ConsistentWatermarkGenerator(), ConsistentWatermarkGenerator()
    first.fit(listed)
    order = [5, 11, 0, 7, 2, 9, 1, 4, 10, 3, 8, 6]
    second.fit([listed[i] for i in order])
    for name in ("gradients", "support", "orientation", "offsets", "scales"):
        assert np.array_equal(getattr(first.template, name), getattr(second.template, name)), name
    assert first.template.frame == second.template.frame
    # Placements come back in the order the images were given.
    assert [p.present for p in first.report.placements] == [False, False] + [True] * 10
    assert [p.score for p in second.report.placements] == [first.report.placements[i].score for i in order]
    assert not first(clean[0]).hole.any() and not first(clean[1]).hole.any()


def test_an_unmatched_image_records_candidates_at_the_fits_size_and_offset(fitted, photo):
    """A faint logo (opacity 0.1, below what the template matches) at the fit's usual place: the details
    carry the best matches at the size and offset the fit images had, one of them on the logo (where the
    watermark's matte is asked about it)."""
    alpha = logo_alpha()
    scene = scenes(photo, 1, SHAPE, seed=41)[0]
    top_left = (SHAPE[0] - alpha.shape[0] - 10, SHAPE[1] - alpha.shape[1] - 10)
    faint, _ = paint_logo(scene, alpha, top_left, opacity=0.1)
    plain, _ = paint_logo(scene, alpha, top_left, opacity=0.6)
    truth = fitted.locate(plain)  # the template's own top-left at this logo
    assert truth.present and not fitted.locate(faint).present
    result = fitted(faint)
    candidates = result.details["fit_geometry"]
    assert 1 <= len(candidates) <= 4
    # All at the fit images' scale (one image size here: 1) and within their offsets (±5 px jitter).
    for y, x, scale in candidates:
        assert abs(scale - truth.scale) < 0.02 and abs(y - truth.y) <= 12 and abs(x - truth.x) <= 12
    assert min(abs(y - truth.y) + abs(x - truth.x) for y, x, _ in candidates) <= 2
    # A matched image records none: its placement is the match itself.
    assert "fit_geometry" not in fitted(plain).details


def test_the_matte_finds_faint_logos_the_template_misses_and_leaves_clean_images_alone(fitted, photo):
    """The fit estimates the logo's matte; an image whose logo is too faint for the template match
    (opacity 0.1 against the fit's 0.6) is masked where undoing the matte removes the logo's edges,
    with the logo's footprint (`matched` = "matte", its refined place and opacity); the same scenes
    without the logo stay unmasked. Without the matte check the faint logos get no mask at all."""
    assert fitted.template.matte is not None and fitted.report.matte_images >= 10
    alpha = logo_alpha()
    top_left = (SHAPE[0] - alpha.shape[0] - 10, SHAPE[1] - alpha.shape[1] - 10)
    without_check = ConsistentWatermarkGenerator(template=replace(fitted.template, matte=None))
    found = 0
    for seed in (41, 42, 44):
        scene = scenes(photo, 1, SHAPE, seed=seed)[0]
        faint, support = paint_logo(scene, alpha, top_left, opacity=0.1)
        assert not fitted.locate(faint).present
        result = fitted(faint)
        if result.details["matched"] == "matte":
            found += 1
            assert iou(postprocess(result, default_postprocess("consistent")).hole, dilate_hole(support, 4)) > 0.75
            assert result.details["opacity"] < 0.35 and result.details["matte_gain"] >= 0.02
            x0, y0 = result.boxes[0][:2]
            assert abs(y0 - top_left[0]) <= 3 and abs(x0 - top_left[1]) <= 3
        clean = fitted(scene)
        assert not clean.hole.any() and clean.details["matched"] is False and clean.details["matte_checked"]
        assert not without_check(faint).hole.any()
    assert found >= 2


def test_a_single_logo_is_fitted_without_a_lattice(fitted, plain_white):
    """The tiled search (on by default) leaves datasets with one logo per image to the single fit."""
    for generator in (fitted, plain_white[0]):
        assert generator.template.lattice is None and "lattice" not in generator.report.as_dict()
        assert "tiled" not in generator(plain_white[1][0]).details


def test_a_matte_confirmed_mask_has_the_logos_shape_not_a_wider_rim(fitted, photo):
    """A faint logo the matte confirms is masked with the logo's shape (the matte above the share of its
    strength the template's support keeps), as tight as the template's own mask of a clearer copy: the
    matte's whole footprint (α > 1/255) holds its solve's rim and noise, pixels wider all round."""
    alpha = logo_alpha()
    top_left = (SHAPE[0] - alpha.shape[0] - 10, SHAPE[1] - alpha.shape[1] - 10)
    config = default_postprocess("consistent")
    confirmed = 0
    for seed in (41, 42, 44):
        scene = scenes(photo, 1, SHAPE, seed=seed)[0]
        faint, support = paint_logo(scene, alpha, top_left, opacity=0.1)
        result = fitted(faint)
        if result.details["matched"] != "matte":
            continue
        confirmed += 1
        hole, truth = postprocess(result, config).hole, dilate_hole(support, 4)
        # (main, with the footprint: precision 0.68, 1.47× the area of the template's mask of the same logo)
        assert (hole & truth).sum() / hole.sum() > 0.85 and iou(hole, truth) > 0.85
        plain, _ = paint_logo(scene, alpha, top_left, opacity=0.6)
        matched = postprocess(fitted(plain), config).hole
        assert fitted(plain).details["matched"] is True and hole.sum() < 1.2 * matched.sum()
    assert confirmed >= 2


def _faint_majority(photo: np.ndarray, clear: int, faint: int, faint_opacity: float | None):
    """`clear` scenes with the logo at opacity 0.6 near the bottom-right corner (±5 px), then `faint` at
    `faint_opacity` (None: without the logo); and each image's logo support."""
    rng = np.random.default_rng(12)
    alpha = logo_alpha()
    images, supports = [], []
    for index, scene in enumerate(scenes(photo, clear + faint, SHAPE, seed=12)):
        opacity = 0.6 if index < clear else faint_opacity
        if opacity is None:
            images.append(scene)
            supports.append(np.zeros(SHAPE, bool))
            continue
        y = SHAPE[0] - alpha.shape[0] - 10 + int(rng.integers(-5, 6))
        x = SHAPE[1] - alpha.shape[1] - 10 + int(rng.integers(-5, 6))
        image, support = paint_logo(scene, alpha, (y, x), opacity=opacity)
        images.append(image)
        supports.append(support)
    return images, supports


@pytest.mark.slow
def test_a_logo_the_template_matches_in_few_images_is_fitted_when_the_matte_sees_it_in_the_rest(photo):
    """A logo too faint in most images for the template match (5 clear, 7 at opacity 0.1): the fit is not
    refused, the matte estimated from the clear ones confirms the faint ones, and those are masked."""
    images, supports = _faint_majority(photo, 5, 7, 0.1)
    generator = ConsistentWatermarkGenerator()
    report = generator.fit(images)
    assert report.present_share < 0.5 and report.matte_confirmed >= 1
    assert report.as_dict()["matte_confirmed"] == report.matte_confirmed
    config = default_postprocess("consistent")
    faint = [postprocess(generator(image), config) for image in images[5:]]
    assert sum(result.details["matched"] == "matte" for result in faint) >= 4
    scores = [iou(result.hole, dilate_hole(support, 4)) for result, support in zip(faint, supports[5:])
              if result.details["matched"] == "matte"]
    assert min(scores) > 0.75


@pytest.mark.slow
def test_a_logo_in_too_few_images_is_still_refused(photo):
    """The same 5 clear logos among 7 images without it: the matte confirms none of the rest, so the
    sample does not share a watermark (fewer than `min_present_share` of it carry one)."""
    images, _ = _faint_majority(photo, 5, 7, None)
    generator = ConsistentWatermarkGenerator()
    with pytest.raises(MaskGenerationError, match="they do not share a watermark"):
        generator.fit(images)
    assert generator.template is None

"""Consistent watermark, tiled: a keyline-free logo repeated on one lattice over whole pictures of mixed
sizes (as stock previews do) is fitted as one tile and its lattice, and every tile of every image that
carries it is masked, partial ones at the border included; clean images stay unmasked, the lattice
survives a save/load round trip, and a dataset with a single logo gets no lattice."""
from __future__ import annotations

import io

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
from pipeline.masks.consistent_tiled import find_lattices
from pipeline.masks.frames import ANCHORS, NORMALISERS, candidate_frames

from .conftest import iou, plain_logo_alpha, scenes

SHAPES = ((200, 300), (300, 200), (210, 315), (315, 210))


def _tiled_dataset(photo: np.ndarray, count: int, *, lattice: str, seed: int, opacity: float = 0.4):
    """`count` images of mixed sizes and orientations under one white logo tiled on a lattice fixed in
    proportion to the width: "grid" from the top-left corner, or "diagonal" (rows shifted by half a
    column) from the centre. Returns images, supports (bool, every instance) and per image the number of
    tiles that touch it."""
    images, supports, tiles = [], [], []
    for index in range(count):
        shape = SHAPES[index % len(SHAPES)]
        height, width = shape
        scene = scenes(photo, 1, shape, seed=seed * 100 + index)[0]
        alpha_tile = plain_logo_alpha(round(0.22 * width))
        # Spacing in proportion to the width, like the tile (whose size is rounded to whole pixels).
        step_x, step_y = 1.6 * 0.22 * width, (2.4 if lattice == "grid" else 2.0) * 0.3 * 0.22 * width
        shift = 0.5 * step_x if lattice == "diagonal" else 0.0
        if lattice == "grid":
            y0, x0 = 0.05 * width, 0.05 * width
        else:
            y0, x0 = (height - alpha_tile.shape[0]) / 2, (width - alpha_tile.shape[1]) / 2
        alpha = np.zeros(shape, np.float32)
        touching = 0
        for row in range(-20, 21):
            for col in range(-20, 21):
                y, x = round(y0 + row * step_y), round(x0 + row * shift + col * step_x)
                ty0, tx0 = max(y, 0), max(x, 0)
                ty1, tx1 = min(y + alpha_tile.shape[0], height), min(x + alpha_tile.shape[1], width)
                if ty1 <= ty0 or tx1 <= tx0:
                    continue
                piece = alpha_tile[ty0 - y : ty1 - y, tx0 - x : tx1 - x]
                touching += int((piece > 0.2).any())
                np.maximum(alpha[ty0:ty1, tx0:tx1], piece, out=alpha[ty0:ty1, tx0:tx1])
        weight = (alpha * opacity)[..., None]
        images.append(np.clip(scene * (1 - weight) + 255.0 * weight + 0.5, 0, 255).astype(np.uint8))
        supports.append(alpha > 0.2)
        tiles.append(touching)
    return images, supports, tiles


@pytest.fixture(scope="module")
def tiled_grid(photo):
    """14 images under a tiled grid (the last two held out) and a generator fitted on the first 12."""
    images, supports, tiles = _tiled_dataset(photo, 14, lattice="grid", seed=3)
    generator = ConsistentWatermarkGenerator()
    generator.fit(images[:12])
    return generator, images, supports, tiles


def _mask(generator: ConsistentWatermarkGenerator, image: np.ndarray):
    return postprocess(generator(image), default_postprocess("consistent"))


def test_a_tiled_grid_is_fitted_as_one_tile_and_its_lattice(tiled_grid):
    generator, images, _, _ = tiled_grid
    report = generator.report
    assert generator.template.lattice is not None and report.lattice is not None
    assert report.present_share >= 0.9 and report.anchor in ("top-left", "top-right")
    # Lattice vectors in the frame (the width is `resolution` px): a column step of 1.6 tile widths and a
    # row step of 2.4 tile heights, 0.22 and 0.066 of the width.
    steps = sorted(np.abs(generator.template.lattice.vectors).max(axis=1) / generator.template.frame.resolution)
    assert steps == pytest.approx([2.4 * 0.066, 1.6 * 0.22], rel=0.06)


@pytest.mark.parametrize("held_out", [12, 13])
def test_every_tile_of_a_held_out_image_is_masked(tiled_grid, held_out):
    generator, images, supports, tiles = tiled_grid
    result = generator(images[held_out])
    truth = supports[held_out]
    # One logo instance covers less than a tenth of the watermark: masking one, or a few, fails this.
    # (Against the support grown by a pixel: its anti-aliased rim belongs to the hole.)
    assert iou(result.hole, dilate_hole(truth, 1)) > 0.65
    assert (_mask(generator, images[held_out]).hole & truth).sum() > 0.95 * truth.sum()
    assert result.details["tiled"] and result.details["matched"]
    assert abs(result.details["instances"] - tiles[held_out]) <= 0.15 * tiles[held_out]
    assert set(result.details["lattice"]) == {"vectors_px", "origin_px", "shift_px"}


def test_clean_images_stay_unmasked_under_a_tiled_template(tiled_grid, photo):
    generator = tiled_grid[0]
    for clean in (scenes(photo, 1, shape, seed=900 + k)[0] for k, shape in enumerate(SHAPES)):
        result = generator(clean)
        assert not result.hole.any() and not result.details["matched"]


def test_a_saved_tiled_template_keeps_its_lattice_and_masks(tiled_grid):
    generator, images, _, _ = tiled_grid
    buffer = io.BytesIO()
    generator.template.save(buffer)
    buffer.seek(0)
    loaded = WatermarkTemplate.load(buffer)
    assert loaded.lattice is not None
    np.testing.assert_array_equal(loaded.lattice.vectors, generator.template.lattice.vectors)
    np.testing.assert_array_equal(loaded.lattice.cell_support, generator.template.lattice.cell_support)
    again = ConsistentWatermarkGenerator(template=loaded)
    np.testing.assert_array_equal(again(images[13]).hole, generator(images[13]).hole)


@pytest.mark.slow
def test_a_diagonal_lattice_from_the_centre_is_masked(photo):
    images, supports, _ = _tiled_dataset(photo, 14, lattice="diagonal", seed=5, opacity=0.35)
    generator = ConsistentWatermarkGenerator()
    report = generator.fit(images[:12])
    assert report.lattice is not None and report.anchor == "center"
    for held_out in (12, 13):
        assert iou(generator(images[held_out]).hole, dilate_hole(supports[held_out], 1)) > 0.65


def test_a_single_logo_repeats_on_no_lattice(photo):
    """The lattice search alone (what a tiled fit starts from) over images sharing one logo."""
    from .test_consistent import _plain_logo_dataset

    images, _ = _plain_logo_dataset(photo, 12, seed=7, color=(255, 255, 255), opacity=0.6, absent=set())
    shapes = [image.shape[:2] for image in images]
    assert find_lattices(images, candidate_frames(shapes, ANCHORS, NORMALISERS, 150)) == []


def test_tiled_must_be_a_boolean():
    with pytest.raises(ValueError, match="tiled"):
        ConsistentWatermarkConfig(tiled="yes")  # type: ignore[arg-type]

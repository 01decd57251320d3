"""The matte of a watermark tiled over the whole picture (stock previews), estimated from its tiles
across the dataset and inverted tile by tile: known answer (exact α, W and I)."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest

from pipeline.masks import ConsistentWatermarkConfig, ConsistentWatermarkGenerator, default_postprocess, postprocess
from pipeline.watermark.fit import fit_matte, tile_instances
from pipeline.watermark.restore import InversionStep, tile_placements

from .conftest import TILED_OPACITY, TILED_SHAPE, footprint_psnr, tiled_blend

@pytest.fixture(scope="module")
def tiled_fit():
    clean, marked, alphas = tiled_blend(16)
    generator = ConsistentWatermarkGenerator(ConsistentWatermarkConfig(matte_check=False))
    report = generator.fit(marked[:14])
    return generator, report, clean, marked, alphas


@pytest.mark.slow
def test_a_tiled_watermarks_matte_is_estimated_from_its_tiles_and_inverted_tile_by_tile(tiled_fit):
    generator, report, clean, marked, alphas = tiled_fit
    assert report.lattice is not None and not report.matte_error
    instances, placements = tile_instances(generator, marked[:14])
    assert len(placements) >= 14 and len(instances) == len(placements)  # several whole tiles per image
    fit = fit_matte(generator, marked[:14])
    matte = fit.matte
    # Placed where each tile was aligned, the matte is that tile's exact α (RMS over the logo), and white.
    errors = []
    for image, aligned in zip(instances, fit.alignments):
        if aligned is None:
            continue
        box = matte.image_box(aligned.placement, TILED_SHAPE)
        placed, _ = matte.placed(aligned.placement, box)
        truth = alphas[next(i for i, m in enumerate(marked) if m is image)][box[0] : box[2], box[1] : box[3]]
        errors.append(((placed - truth)[truth > 0.05] ** 2).mean())
    assert len(errors) >= 14 and float(np.sqrt(np.mean(errors))) < 0.06
    assert np.abs(matte.color[matte.alpha > 0.5 * TILED_OPACITY] - 255).mean() < 10

    template = generator.template
    template.matte = matte
    buffer = io.BytesIO()
    template.save(buffer)
    step = InversionStep.from_template(buffer.getvalue())
    for index in (14, 15):  # images the fit never saw
        mask = postprocess(generator(marked[index]), default_postprocess("consistent"))  # as the job's mask stage
        tiles = tile_placements(mask.provenance())
        assert len(tiles) >= 9
        outcome = step(marked[index], mask.hole, "consistent", json.dumps(mask.provenance()))
        alpha = alphas[index]
        assert outcome is not None and outcome.inverted_px > 0.5 * (alpha > 0.05).sum()  # most of the logo
        assert not (outcome.inpaint_hole & ~mask.hole).any()
        # Pixels outside the hole are the input's; inside, the recovered scene beats inpainting it.
        assert np.array_equal(outcome.image[~mask.hole], marked[index][~mask.hole])
        filled = cv2.inpaint(outcome.image, outcome.inpaint_hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        restored = np.where(outcome.inpaint_hole[..., None], filled, outcome.image)
        inpainted = cv2.inpaint(marked[index], mask.hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        assert footprint_psnr(restored, clean[index], alpha) > footprint_psnr(inpainted, clean[index], alpha) + 3
        assert footprint_psnr(restored, clean[index], alpha) > footprint_psnr(marked[index], clean[index], alpha) + 8


@pytest.mark.slow
def test_the_tiled_fit_estimates_the_matte_itself_when_the_matte_check_is_on(tiled_fit):
    _, _, _, marked, _ = tiled_fit
    generator = ConsistentWatermarkGenerator()
    report = generator.fit(marked[:14])
    assert report.lattice is not None and generator.template.matte is not None
    assert report.matte_images >= 14 and not report.matte_error
    # Saved and loaded with the template, as a job's workers get it.
    buffer = io.BytesIO()
    generator.template.save(buffer)
    assert InversionStep.from_template(buffer.getvalue()) is not None

"""Dataset-level step: estimate the matte of the watermark the consistent generator just fitted, from
the same images, and store it with the template (one `.npz`)."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .estimate import MatteEstimationConfig, MatteEstimationError, MatteFit, estimate_matte
from .matte import Placement, add_matte_to_template
from .restore import placement_from_provenance

log = logging.getLogger(__name__)


def locate_in_images(generator: Any, images: Sequence[np.ndarray]) -> list[Placement | None]:
    """The fitted consistent generator's placement of its template in each image (None: no match).

    Its sub-pixel `locate` when it has one, else the (whole-pixel) box its masks record."""
    if not hasattr(generator, "locate"):
        return [placement_from_provenance(generator(image).provenance()) for image in images]
    placements: list[Placement | None] = []
    for image in images:
        found = generator.locate(image)
        placements.append(Placement(float(found.y), float(found.x), float(found.scale)) if found.present else None)
    return placements


def fit_matte(generator: Any, images: Sequence[np.ndarray], config: MatteEstimationConfig | None = None) -> MatteFit:
    """The matte of `generator`'s fitted watermark (a fitted ConsistentWatermarkGenerator), from `images`."""
    if generator.template is None:
        raise MatteEstimationError("the consistent generator must be fitted before its matte is estimated")
    started = time.perf_counter()
    fit = estimate_matte(images, locate_in_images(generator, images), generator.template.support, config)
    log.info("watermark matte from %d of %d images in %.1f s (α max %.2f)", fit.images_used, len(images),
             time.perf_counter() - started, float(fit.matte.alpha.max()))
    return fit


def fit_matte_into_template(generator: Any, images: Sequence[np.ndarray], template_npz: bytes,
                            config: MatteEstimationConfig | None = None) -> tuple[bytes, str | None]:
    """The template with the matte added, and None; or the template unchanged and a warning saying why
    inversion is off (the watermark will be inpainted instead)."""
    try:
        fit = fit_matte(generator, images, config)
    except MatteEstimationError as exc:
        return template_npz, f"watermark inversion is off for this job (holes are inpainted): {exc}"
    return add_matte_to_template(template_npz, fit.matte), None

"""Dataset-level step: estimate the matte of the watermark the consistent generator just fitted, from
the same images, and store it with the template (one `.npz`)."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .estimate import MatteEstimationConfig, MatteEstimationError, MatteFit, estimate_matte
from .matte import Placement, add_matte_to_template
from .restore import placement_from_provenance, tile_placements

log = logging.getLogger(__name__)

# A tiled watermark's matte is estimated from at most this many whole tiles of each image: tiles of one
# image share its lighting and noise, so images add more than tiles do (and each tile costs an alignment).
TILES_PER_IMAGE = 4


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


def _inside(placement: Placement, shape: tuple[int, int], image_shape: tuple[int, int], margin: float) -> bool:
    """Whether the template box at `placement`, grown by `margin` of its size, lies inside the image."""
    height, width = shape[0] * placement.scale, shape[1] * placement.scale
    return (placement.y - margin * height >= 0 and placement.x - margin * width >= 0
            and placement.y + (1 + margin) * height <= image_shape[0]
            and placement.x + (1 + margin) * width <= image_shape[1])


def tile_instances(generator: Any, images: Sequence[np.ndarray], per_image: int = TILES_PER_IMAGE,
                   margin: float = 0.2) -> tuple[list[np.ndarray], list[Placement]]:
    """For a tiled template: up to `per_image` whole tile instances of each image the template matches
    (their template box grown by `margin` inside the image: the matte's crop must not run off it),
    spread over the picture. Returns the image of each instance (the same array repeated) and its placement."""
    chosen_images: list[np.ndarray] = []
    placements: list[Placement] = []
    for image in images:
        whole = [p for p in tile_placements(generator(image).provenance())
                 if _inside(p, generator.template.shape, image.shape[:2], margin)]
        if not whole:
            continue
        picks = sorted({round(k * (len(whole) - 1) / max(per_image - 1, 1)) for k in range(min(per_image, len(whole)))})
        chosen_images.extend(image for _ in picks)
        placements.extend(whole[k] for k in picks)
    return chosen_images, placements


def _bounding_box(support: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def fit_matte(generator: Any, images: Sequence[np.ndarray], config: MatteEstimationConfig | None = None) -> MatteFit:
    """The matte of `generator`'s fitted watermark (a fitted ConsistentWatermarkGenerator), from `images`.

    A tiled watermark's matte is one tile's, estimated from its instances (several per image): each is
    one more "image" of the same watermark to the multi-image matting."""
    if generator.template is None:
        raise MatteEstimationError("the consistent generator must be fitted before its matte is estimated")
    started = time.perf_counter()
    if generator.template.lattice is not None:
        fit = _fit_tile_matte(generator, images, config)
    else:
        fit = estimate_matte(images, locate_in_images(generator, images), generator.template.support, config)
    log.info("watermark matte from %d %s of %d images in %.1f s (α max %.2f)", fit.images_used,
             "tiles" if generator.template.lattice is not None else "images", len(images),
             time.perf_counter() - started, float(fit.matte.alpha.max()))
    return fit


def _fit_tile_matte(generator: Any, images: Sequence[np.ndarray], config: MatteEstimationConfig | None) -> MatteFit:
    """`estimate_matte` over the tile instances, solved in the tight box of the tile's support (the
    tile template spans a whole lattice cell; its margin would take in the neighbouring tiles) and
    returned in the template's coordinates, so a tile's placement places its matte."""
    instance_images, placements = tile_instances(generator, images)
    y0, x0, y1, x1 = _bounding_box(generator.template.support)
    tight = [p.moved(dy=y0 * p.scale, dx=x0 * p.scale) for p in placements]
    fit = estimate_matte(instance_images, tight, generator.template.support[y0:y1, x0:x1], config)
    matte = dataclasses.replace(fit.matte, origin=(fit.matte.origin[0] + y0, fit.matte.origin[1] + x0))
    alignments = [None if a is None else dataclasses.replace(
        a, placement=a.placement.moved(dy=-y0 * a.placement.scale, dx=-x0 * a.placement.scale)) for a in fit.alignments]
    return MatteFit(matte, alignments)


def fit_matte_into_template(generator: Any, images: Sequence[np.ndarray], template_npz: bytes,
                            config: MatteEstimationConfig | None = None) -> tuple[bytes, str | None]:
    """The template with the matte added, and None; or the template unchanged and a warning saying why
    inversion is off (the watermark will be inpainted instead)."""
    try:
        fit = fit_matte(generator, images, config)
    except MatteEstimationError as exc:
        return template_npz, f"watermark inversion is off for this job (holes are inpainted): {exc}"
    return add_matte_to_template(template_npz, fit.matte), None

"""The first, jitter-proof guess of a shared watermark: a patch that recurs near one place in most images.

A per-pixel median over images only keeps a watermark that sits at the same pixel everywhere; with a
few percent of placement jitter (tens of pixels at 1024 px) it averages away. Instead, in a few
reference images, small patches near the anchor are searched for in the other images within a window
of ± the jitter allowance. A watermark patch finds itself in most of them; a scene patch only finds
chance lookalikes. Chance is measured the same way, with the search window moved to the opposite side
of the image where the watermark is not, so busy scenes do not pass for a watermark.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .fields import color_gradients, orientation_field
from .frames import Frame

# Null region for each anchor: the region on the opposite side, where that watermark is not.
_NULL_ANCHOR = {"top-left": "bottom-right", "bottom-right": "top-left", "top-right": "bottom-left",
                "bottom-left": "top-right", "center": "top-left"}


@dataclass(frozen=True)
class SeedSettings:
    """Sizes in frame pixels (see `Frame`) of the seed search.

    region: side of the square searched next to the anchor (centred on it for "center");
    patch: side of the patches compared; radius: ± search window (the jitter allowance);
    references / others: how many images provide patches and how many are searched;
    patches: candidate patches per reference (those that recur best in `screen_others` images);
    null_checks: how many of the best-recurring patches per reference are checked against chance.
    """

    region: int = 88
    patch: int = 24
    radius: int = 14
    stride: int = 6
    references: int = 4
    others: int = 8
    patches: int = 16
    screen_others: int = 3
    null_checks: int = 5
    blur: float = 1.2

    @classmethod
    def for_resolution(cls, resolution: float, jitter: float) -> SeedSettings:
        """Settings for a frame of `resolution` px and a placement jitter of ± `jitter` of the image side.

        The window radius covers the jitter plus the shift of a patch inside a logo scaled by ±20 %.
        """
        patch = max(8, round(0.15 * resolution))
        return cls(region=round(0.55 * resolution), patch=patch, radius=max(4, round((jitter + 0.04) * resolution)),
                   stride=max(2, patch // 4))


@dataclass
class Seed:
    """The best recurring patch under one frame.

    score: median over the searched images of the patch's best normalised correlation; null: the
    same with windows where the watermark is not; positions: per image (score, y, x) of the patch's
    best match, frame coordinates of its top-left relative to the anchor.
    """

    frame: Frame
    score: float
    null: float
    reference: int
    patch_yx: tuple[int, int]
    positions: list[tuple[float, int, int]]

    @property
    def margin(self) -> float:
        return self.score - self.null


def _region_origin(anchor: str, size: int) -> tuple[int, int]:
    """Frame (y, x) of the region's top-left for `anchor` (the region lies inside the image)."""
    vertical, _, horizontal = anchor.partition("-")
    y = {"top": 0, "bottom": -size}.get(vertical, -size // 2)
    x = {"left": 0, "right": -size}.get(horizontal, -size // 2)
    return y, x


def crop(array: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """array[y:y+height, x:x+width] with zeros where the window leaves the array."""
    out = np.zeros((height, width, *array.shape[2:]), array.dtype)
    sy0, sx0 = max(y, 0), max(x, 0)
    sy1, sx1 = min(y + height, array.shape[0]), min(x + width, array.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = array[sy0:sy1, sx0:sx1]
    return out


def _region(field: np.ndarray, frame: Frame, shape: tuple[int, int], anchor: str, settings: SeedSettings,
            flip: bool) -> np.ndarray:
    """The searched region (plus `radius` around it) of an image's frame-scale field."""
    size, radius = settings.region, settings.radius
    origin = Frame(anchor, frame.normaliser, frame.resolution, frame.reference).origin(shape)
    ry, rx = _region_origin(anchor, size)
    region = crop(field, origin[0] + ry - radius, origin[1] + rx - radius, size + 2 * radius, size + 2 * radius)
    return region[::-1, ::-1].copy() if flip else region


def _best_match(window: np.ndarray, patch: np.ndarray) -> tuple[float, int, int]:
    scores = cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED)
    _, peak, _, (x, y) = cv2.minMaxLoc(scores)
    return float(peak), y, x


def frame_fields(images: list[np.ndarray], frame: Frame, blur: float) -> list[np.ndarray]:
    """Orientation fields (H'×W'×2, see `orientation_field`) of the images at frame scale."""
    fields = []
    for image in images:
        field = orientation_field(color_gradients(frame.resize(image)), blur=blur)
        # Natural images favour horizontal and vertical edges; without each image's mean orientation
        # that bias does not correlate patches of different scenes.
        fields.append(np.ascontiguousarray(field - field.mean(axis=(0, 1))))
    return fields


def find_seed(images: list[np.ndarray], fields: list[np.ndarray], frame: Frame, settings: SeedSettings) -> Seed | None:
    """The patch near `frame.anchor` that recurs in most images (see the module docstring).

    images: the fit images (for their shapes); fields: `frame_fields(images, frame, settings.blur)`.
    """
    shapes = [image.shape[:2] for image in images]
    regions = [_region(f, frame, s, frame.anchor, settings, False) for f, s in zip(fields, shapes)]
    nulls = [_region(f, frame, s, _NULL_ANCHOR[frame.anchor], settings, True) for f, s in zip(fields, shapes)]
    count, size, radius, side = len(images), settings.patch, settings.radius, settings.region
    references = sorted({int(i) for i in np.linspace(0, count - 1, min(settings.references, count))})
    best: tuple[float, float, int, int, int] | None = None
    grid = range(0, side - size + 1, settings.stride)
    for reference in references:
        others = [i for i in np.linspace(0, count - 1, min(settings.others + 1, count)).astype(int) if i != reference]
        others = sorted(set(others))[: settings.others]
        # Screen every patch against a few images first: a faint logo's patch need not be among the
        # most textured, but it recurs.
        screen = others[:: max(1, len(others) // settings.screen_others)][: settings.screen_others]
        candidates = []
        for y in grid:
            for x in grid:
                patch = regions[reference][radius + y : radius + y + size, radius + x : radius + x + size]
                if not (patch * patch).sum() > 0:
                    continue
                patch = np.ascontiguousarray(patch)
                window = slice(y, y + size + 2 * radius), slice(x, x + size + 2 * radius)
                candidates.append((float(np.median([_best_match(regions[j][window], patch)[0] for j in screen])), y, x))
        candidates.sort(reverse=True)
        scored = []
        for _, y, x in candidates[: settings.patches]:
            patch = np.ascontiguousarray(regions[reference][radius + y : radius + y + size, radius + x : radius + x + size])
            window = slice(y, y + size + 2 * radius), slice(x, x + size + 2 * radius)
            scored.append((float(np.median([_best_match(regions[j][window], patch)[0] for j in others])), y, x, patch))
        # Chance only for the patches that recur best: a patch must first recur to be a watermark.
        scored.sort(key=lambda item: -item[0])
        for real, y, x, patch in scored[: settings.null_checks]:
            window = slice(y, y + size + 2 * radius), slice(x, x + size + 2 * radius)
            chance = float(np.median([_best_match(nulls[j][window], patch)[0] for j in others]))
            if best is None or real - chance > best[0] - best[1]:
                best = (real, chance, reference, y, x)
    if best is None:
        return None
    score, null, reference, y, x = best
    patch = np.ascontiguousarray(regions[reference][radius + y : radius + y + size, radius + x : radius + x + size])
    window = slice(y, y + size + 2 * radius), slice(x, x + size + 2 * radius)
    ry, rx = _region_origin(frame.anchor, side)
    positions = []
    for region in regions:
        peak, dy, dx = _best_match(region[window], patch)
        positions.append((peak, ry + y + dy - radius, rx + x + dx - radius))
    return Seed(frame=frame, score=score, null=null, reference=reference, patch_yx=(ry + y, rx + x),
                positions=positions)

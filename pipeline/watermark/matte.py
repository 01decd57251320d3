"""The estimated watermark itself: its matte α and colour W in the template's frame, saved with the
consistent template in one `.npz` (plain arrays, never pickled), and placed into any image.

Model (alpha blending): J = α·W + (1 − α)·I. An image may carry the watermark at its own opacity
factor γ (α_image = γ·α) and at a slightly different position and scale than the template's match.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

_PREFIX = "matte_"


@dataclass(frozen=True)
class Placement:
    """Where the template sits in one image: its top-left (y, x) in image pixels (float: sub-pixel),
    the template-to-image scale, and the image's opacity factor γ (1 = the matte as estimated)."""

    y: float
    x: float
    scale: float = 1.0
    opacity: float = 1.0

    def moved(self, dy: float = 0.0, dx: float = 0.0, scale: float = 1.0, opacity: float | None = None) -> Placement:
        return Placement(self.y + dy, self.x + dx, self.scale * scale, self.opacity if opacity is None else opacity)


@dataclass
class WatermarkMatte:
    """alpha: float32 h×w in [0, 1]; color: float32 h×w×3 in [0, 255] (meaningful where α > 0);
    origin: (y, x) of the matte's top-left pixel in template pixels (negative: the matte has a margin
    around the template); fit_opacity: the opacity factor estimated for each fit image (median 1);
    error_moments: float32 h×w×3 or None, how far the estimate may be off at each pixel — the expected
    products E[δα²], E[δα·δb], E[δb²] of the errors δα of α and δb of the luma b of α·W (grey levels),
    measured by the estimation (see estimate_matte). An undo of an image whose scene has luma I is then
    off by about √(E[δb²] − 2·I·E[δα·δb] + I²·E[δα²]) / (1 − α) grey levels (`inversion_error_variance`)."""

    alpha: np.ndarray
    color: np.ndarray
    origin: tuple[float, float]
    fit_opacity: np.ndarray
    error_moments: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.alpha.shape)  # type: ignore[return-value]

    @property
    def premultiplied(self) -> np.ndarray:
        """α·W, float32 h×w×3: what the watermark adds to an image (before (1 − α) scales the image)."""
        return self.alpha[..., None] * self.color

    # --------------------------------------------------------------------------------- geometry

    def to_image_matrix(self, placement: Placement) -> np.ndarray:
        """2×3 affine map from matte pixel (col, row) to image pixel (x, y), pixel centres aligned the
        way cv2.resize aligns them (the consistent generator's crops)."""
        s = placement.scale
        tx = placement.x + (self.origin[1] + 0.5) * s - 0.5
        ty = placement.y + (self.origin[0] + 0.5) * s - 0.5
        return np.array([[s, 0.0, tx], [0.0, s, ty]], np.float64)

    def image_box(self, placement: Placement, image_shape: tuple[int, int], margin: int = 2) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the image pixels the placed matte can touch, clipped to the image."""
        matrix = self.to_image_matrix(placement)
        height, width = self.shape
        x0, y0 = matrix[:, 2] - margin
        x1, y1 = matrix[:, 2] + matrix[0, 0] * np.array([width, height]) + margin
        return (max(int(np.floor(y0)), 0), max(int(np.floor(x0)), 0),
                min(int(np.ceil(y1)), image_shape[0]), min(int(np.ceil(x1)), image_shape[1]))

    def placed(self, placement: Placement, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(α, α·W) of the image pixels in `box`, float32 (y1−y0)×(x1−x0)(×3), opacity factor applied."""
        return self.with_opacity(self.warped(placement, box), placement.opacity)

    def warped(self, placement: Placement, box: tuple[int, int, int, int]) -> np.ndarray:
        """(α, α·W) of the image pixels in `box` at opacity factor 1: float32 (y1−y0)×(x1−x0)×4. The
        warp does not depend on the opacity factor, so a caller trying many opacities at one position
        warps once (`with_opacity`)."""
        y0, x0, y1, x1 = box
        matrix = self.to_image_matrix(placement)
        matrix[:, 2] -= (x0, y0)
        inverse = cv2.invertAffineTransform(matrix)
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(self._warp_source, inverse, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped.reshape(size[1], size[0], 4)

    @staticmethod
    def with_opacity(warped: np.ndarray, opacity: float) -> tuple[np.ndarray, np.ndarray]:
        """(α, α·W) of a `warped` matte at `opacity`: what `placed` returns."""
        return np.clip(warped[..., 0] * opacity, 0.0, 1.0), warped[..., 1:] * opacity

    @functools.cached_property
    def _warp_source(self) -> np.ndarray:
        """float32 h×w×4 (α, α·W) that `placed` warps, built once: an alignment places the matte hundreds
        of times (a matte is not changed once made: estimation makes a new one per pass)."""
        return np.concatenate([self.alpha[..., None], self.premultiplied], axis=-1).astype(np.float32)

    def footprint(self, placement: Placement, image_shape: tuple[int, int]) -> np.ndarray:
        """bool H×W: the image pixels the placed watermark touches (α > 1/255), grown by one pixel (its
        resampled rim): what a mask must say was touched where the watermark is inverted."""
        box = self.image_box(placement, image_shape)
        alpha, _ = self.placed(placement, box)
        hole = np.zeros(image_shape, bool)
        y0, x0, y1, x1 = box
        hole[y0:y1, x0:x1] = cv2.dilate((alpha > 1.0 / 255.0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        return hole

    def support(self, placement: Placement, image_shape: tuple[int, int], level: float) -> np.ndarray:
        """bool H×W: the image pixels where the placed watermark is more than `level` (0–1) of its own
        strength (α above `level` × the matte's robust maximum α, so whatever the opacity factor): the
        watermark's shape, as a template's support is its reconstruction above a share of its maximum.

        The footprint (α > 1/255) also holds the matte's estimation noise and the rim its solve may
        spread α into (`MatteEstimationConfig.support_px`), several pixels wider than the watermark."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        nonzero = self.alpha[self.alpha > 0]
        peak = float(np.percentile(nonzero, 99.5)) if nonzero.size else 0.0
        hole = np.zeros(image_shape, bool)
        if peak <= 0.0:
            return hole
        box = self.image_box(placement, image_shape)
        alpha, _ = self.placed(placement.moved(opacity=1.0), box)
        y0, x0, y1, x1 = box
        hole[y0:y1, x0:x1] = alpha > level * peak
        return hole

    def placed_error_moments(self, placement: Placement, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """`error_moments` of the image pixels in `box` (float32 (y1−y0)×(x1−x0)×3, opacity factor
        applied: α and α·W both scale with it), or None when the matte has none."""
        if self.error_moments is None:
            return None
        y0, x0, y1, x1 = box
        matrix = self.to_image_matrix(placement)
        matrix[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(np.ascontiguousarray(self.error_moments, np.float32), matrix, size,
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return warped.reshape(size[1], size[0], 3) * np.float32(placement.opacity**2)

    def crop(self, image: np.ndarray, placement: Placement) -> np.ndarray:
        """The image resampled into the matte's frame at `placement`: float32 h×w×3 (edges replicated)."""
        matrix = self.to_image_matrix(placement)
        height, width = self.shape
        crop = cv2.warpAffine(np.ascontiguousarray(image, np.float32), matrix, (width, height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        return crop.reshape(height, width, -1)

    # -------------------------------------------------------------------------------- storage

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"{_PREFIX}alpha": self.alpha.astype(np.float32), f"{_PREFIX}color": self.color.astype(np.float32),
                f"{_PREFIX}origin": np.asarray(self.origin, np.float64),
                f"{_PREFIX}fit_opacity": np.asarray(self.fit_opacity, np.float32),
                **({} if self.error_moments is None else {f"{_PREFIX}error_moments": self.error_moments.astype(np.float32)})}

    @classmethod
    def from_arrays(cls, data: object) -> WatermarkMatte | None:
        """The matte stored in an opened `.npz` (or any mapping of arrays); None when it holds none."""
        if f"{_PREFIX}alpha" not in data:  # type: ignore[operator]
            return None
        get = data.__getitem__  # type: ignore[attr-defined]
        origin = get(f"{_PREFIX}origin")
        return cls(alpha=np.asarray(get(f"{_PREFIX}alpha"), np.float32),
                   color=np.asarray(get(f"{_PREFIX}color"), np.float32),
                   origin=(float(origin[0]), float(origin[1])),
                   fit_opacity=np.asarray(get(f"{_PREFIX}fit_opacity"), np.float32),
                   error_moments=(np.asarray(get(f"{_PREFIX}error_moments"), np.float32)
                                  if f"{_PREFIX}error_moments" in data else None))  # type: ignore[operator]


def add_matte_to_template(template_npz: bytes, matte: WatermarkMatte) -> bytes:
    """The consistent template's `.npz` bytes with the matte's arrays added (one file, one fit)."""
    with np.load(io.BytesIO(template_npz), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files if not name.startswith(_PREFIX)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, **matte.arrays())
    return buffer.getvalue()


def load_matte(source: bytes | str | Path | BinaryIO) -> WatermarkMatte | None:
    """The matte saved in a template `.npz` (bytes, path or file), or None if it has none."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with np.load(handle, allow_pickle=False) as data:
        return WatermarkMatte.from_arrays(data)

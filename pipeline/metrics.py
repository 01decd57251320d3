"""Per-row quality figures of a restoration, cheap enough to compute for every row.

No-reference figures judge the fill against its own surroundings: a seam score (is the hole's outline
visible as a gradient discontinuity?), colour and texture consistency of the fill with a ring of
context around it, and — computed in `pipeline.stages.MetricsStage` with these helpers — how much of
the hole the mask generator still detects on the restored image. With a clean reference image PSNR
and SSIM (Wang et al., 2004) are reported too.

Conventions: images uint8 H×W×3 RGB; `hole` bool H×W, True = pixel that was filled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Gradient magnitudes are in Sobel units of 0–255 luma; this floor keeps the ratios finite on flat
# (synthetic, cartoon) images, where a difference of one grey level is noise.
_GRADIENT_FLOOR = 1.0
_PSNR_CAP_DB = 100.0  # identical images: a finite value keeps means and summaries meaningful


def _luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), _disc(radius)) > 0


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask.copy()
    return cv2.erode(mask.astype(np.uint8), _disc(radius), borderType=cv2.BORDER_CONSTANT, borderValue=1) > 0


def context_ring(hole: np.ndarray, ring_px: int) -> np.ndarray:
    """Pixels outside the hole within `ring_px` of it: the context a fill should agree with."""
    return _dilate(hole, ring_px) & ~hole


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of the luma, float32 H×W."""
    luma = _luma(image)
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def seam_score(restored: np.ndarray, hole: np.ndarray, ring_px: int = 12) -> float | None:
    """Gradient on the hole's outline relative to the gradient just inside and outside it.

    ≈ 1: the outline is as busy as its neighbourhood (no visible seam); ≫ 1: the fill meets the
    context with a step (a seam, a halo); < 1 happens where the fill smooths over real edges.
    None when the hole is empty or covers the image (there is no outline).
    """
    if not hole.any() or hole.all():
        return None
    magnitude = gradient_magnitude(restored)
    outline = _dilate(hole, 1) & ~_erode(hole, 1)
    near = _dilate(hole, max(ring_px, 3)) & ~_erode(hole, max(ring_px, 3)) & ~(_dilate(hole, 2) & ~_erode(hole, 2))
    if not near.any():
        near = ~outline
    return float((magnitude[outline].mean() + _GRADIENT_FLOOR) / (magnitude[near].mean() + _GRADIENT_FLOOR))


def color_delta_e(restored: np.ndarray, hole: np.ndarray, ring_px: int = 12) -> float | None:
    """CIE76 ΔE between the mean Lab colour of the fill's outer band and of the context ring just
    outside it (0 = same colour; ~2.3 is a just-noticeable difference).

    Both bands are `ring_px` wide on either side of the outline: photos drift in colour across a large
    hole, but a fill that matches its surroundings agrees with them where they meet.
    None without a hole or without context.
    """
    ring = context_ring(hole, ring_px)
    band = hole & ~_erode(hole, ring_px)
    if not band.any():
        band = hole
    if not band.any() or not ring.any():
        return None
    lab = cv2.cvtColor(restored.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    difference = lab[band].mean(axis=0) - lab[ring].mean(axis=0)
    return float(np.sqrt((difference**2).sum()))


def texture_ratio(restored: np.ndarray, hole: np.ndarray, ring_px: int = 12) -> float | None:
    """High-frequency energy (std of the Laplacian) of the fill over that of its context ring.

    ≈ 1: the fill is as textured as its surroundings; < 1: blurrier (the classic inpainting failure);
    > 1: noisier. The hole's own outline is left out so a seam does not count as texture.
    """
    ring = context_ring(hole, ring_px)
    inner = _erode(hole, 2)
    if not inner.any():
        inner = hole
    if not inner.any() or not ring.any():
        return None
    laplacian = cv2.Laplacian(_luma(restored), cv2.CV_32F, ksize=3)
    return float((laplacian[inner].std() + _GRADIENT_FLOOR) / (laplacian[ring].std() + _GRADIENT_FLOOR))


def residual_detection(hole: np.ndarray, redetected_hole: np.ndarray) -> float | None:
    """Fraction of the original hole that the mask generator still detects on the restored image.

    0 = what was removed is no longer found; near 1 = the watermark (or its ghost) is still there.
    None when there was no hole.
    """
    total = int(hole.sum())
    if total == 0:
        return None
    return float((hole & redetected_hole).sum() / total)


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels (capped at 100 for identical images)."""
    _check_same_shape(image, reference)
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    if mse == 0.0:
        return _PSNR_CAP_DB
    return min(_PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean structural similarity of the luma (Wang et al. 2004: Gaussian window σ = 1.5, K1 = 0.01,
    K2 = 0.03, L = 255), in [-1, 1], 1 = identical."""
    _check_same_shape(image, reference)
    x = _luma(image).astype(np.float64)
    y = _luma(reference).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    sigma_x = blur(x * x) - mu_x**2
    sigma_y = blur(y * y) - mu_y**2
    sigma_xy = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return float(np.mean(numerator / denominator))


def _check_same_shape(image: np.ndarray, reference: np.ndarray) -> None:
    if image.shape != reference.shape:
        raise ValueError(f"reference is {reference.shape[1]}×{reference.shape[0]}, image is "
                         f"{image.shape[1]}×{image.shape[0]}")


@dataclass
class RowMetrics:
    """The quality figures of one row; None where a figure does not apply."""

    seam_score: float | None = None
    color_delta_e: float | None = None
    texture_ratio: float | None = None
    residual_hole_ratio: float | None = None
    rerun_hole_ratio: float | None = None
    psnr: float | None = None
    ssim: float | None = None


def around_hole(restored: np.ndarray, hole: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """The crop of (image, hole) that holds the hole and `margin` pixels of context around it.

    The no-reference figures only look that far from the hole, so computing them on the crop gives the
    same values for a fraction of the work (a watermark covers a few percent of an image).
    """
    ys, xs = np.nonzero(hole)
    if len(ys) == 0:
        return restored, hole
    y0, y1 = max(int(ys.min()) - margin, 0), min(int(ys.max()) + 1 + margin, hole.shape[0])
    x0, x1 = max(int(xs.min()) - margin, 0), min(int(xs.max()) + 1 + margin, hole.shape[1])
    return restored[y0:y1, x0:x1], hole[y0:y1, x0:x1]


def restoration_metrics(restored: np.ndarray, hole: np.ndarray, *, ring_px: int = 12,
                        reference: np.ndarray | None = None) -> RowMetrics:
    """The no-reference figures of a restored image, plus PSNR/SSIM when a same-size reference is given."""
    # Everything the figures read lies within ring_px (+ the 3×3 filters' reach) of the hole; the extra
    # margin keeps the crop's border out of the filters' view.
    crop, crop_hole = around_hole(restored, hole, max(ring_px, 3) + 4)
    metrics = RowMetrics(
        seam_score=seam_score(crop, crop_hole, ring_px),
        color_delta_e=color_delta_e(crop, crop_hole, ring_px),
        texture_ratio=texture_ratio(crop, crop_hole, ring_px),
    )
    if reference is not None:
        metrics.psnr = psnr(restored, reference)
        metrics.ssim = ssim(restored, reference)
    return metrics

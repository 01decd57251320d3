"""Undo an alpha-blended watermark in one image, where the original pixels are still there.

J = α·W + (1 − α)·I gives I = (J − α·W)/(1 − α) wherever α < 1, but the division amplifies the
image's noise (JPEG, 8-bit rounding) by 1/(1 − α). The recovered image is therefore the solution of a
small regularised least-squares problem on the watermark's footprint,

    min_I  Σ (1 − α)² (I − I₀)² + λ Σ |∇I|²,    I = J outside the footprint,

whose data term weighs each pixel by how much of the scene survived there: where α is small the
inversion I₀ is kept as is, where it is large the prior takes over. Pixels that cannot be trusted —
α at or above `alpha_max` (nothing left to recover), an inversion far outside [0, 255] (clipped
values, wrong matte) — are handed to an inpainting engine instead, and so is the whole hole when the
result still shows the watermark's outline (misalignment).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .align import MIN_GAIN, AlignedWatermark
from .matte import WatermarkMatte
from .solve import GridProblem, solve_grid

_ALPHA_FLOOR = 1.0 / 255.0  # below this the watermark changes no 8-bit value: nothing to undo
_OUTLINE_STEP = 0.1  # an α step between neighbours this large counts as the watermark's outline
_ROBUST_PASSES = 3  # reweighting passes of the edge-preserving prior


@dataclass(frozen=True)
class InversionConfig:
    """Settings of the per-image inversion.

    Attributes:
        alpha_max: pixels whose α reaches this are saturated: inpainted, not inverted.
        smoothness: λ of the gradient prior relative to the data term (0 = plain division).
        outline_smoothness: extra λ across the watermark's outline (α steps of 0.1 or more).
        chroma_factor: the prior is this many times stronger on chroma than on luma.
        edge_level: grey-level step above which the outline prior lets a scene edge through.
        range_margin: an inversion more than this many grey levels outside [0, 255] is untrusted.
        max_residual: if the inverted footprint's edges still correlate with the watermark's outline
            by more than this (normalised correlation of gradient magnitudes), the inversion is not
            trusted and the whole hole is inpainted.
        min_gain: an image whose aligned undo removes less than this share of the gradient energy
            around the watermark is not inverted (the watermark is not where it was matched).
        noise_ratio: the pixels of an α band whose inversion adds more noise than this share of the
            scene's own variation around the watermark (see `noise_dominated`) are inpainted: there
            1/(1 − α) has amplified the image's noise (JPEG) beyond what inpainting would get wrong.
            0 leaves the noise out of the test (the matte's error, below, still counts).
        matte_error_ratio: the same test for the matte's own error (WatermarkMatte.error_moments, where
            the estimation measured it), counted next to the image's noise: both are amplified by
            1/(1 − α), and a smooth misfit of α·W is invisible to a noise measure on the inverted
            image. A band goes to inpainting when (noise / noise_ratio)² + (matte error /
            matte_error_ratio)² exceeds the scene's variation². 0 leaves the matte's error out.
        iterations: conjugate-gradient iterations of the regularised solve.
    """

    alpha_max: float = 0.95
    smoothness: float = 0.003
    outline_smoothness: float = 0.3
    chroma_factor: float = 4.0
    edge_level: float = 2.0
    range_margin: float = 24.0
    max_residual: float = 0.3
    min_gain: float = MIN_GAIN
    noise_ratio: float = 0.5
    matte_error_ratio: float = 0.5
    iterations: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.alpha_max < 1:
            raise ValueError(f"alpha_max must be in (0, 1), got {self.alpha_max}")
        if min(self.smoothness, self.outline_smoothness, self.chroma_factor, self.range_margin) < 0 or self.iterations < 1 \
                or self.edge_level <= 0:
            raise ValueError("smoothness, outline_smoothness, chroma_factor and range_margin must be >= 0, iterations >= 1")
        if not 0 < self.max_residual <= 1 or not 0 <= self.min_gain < 1 or self.noise_ratio < 0 \
                or self.matte_error_ratio < 0:
            raise ValueError("max_residual must be in (0, 1], min_gain in [0, 1), noise_ratio and "
                             "matte_error_ratio >= 0")


@dataclass
class InversionResult:
    """restored: uint8 H×W×3 (unchanged outside the hole and where `inpaint` is set: the engine fills
    those); inverted: bool H×W, hole pixels recovered by inversion; inpaint: bool H×W, hole pixels left
    to the inpainting engine; residual: outline correlation after inversion (see InversionConfig);
    reason: why pixels went to inpainting ("" when none did)."""

    restored: np.ndarray
    inverted: np.ndarray
    inpaint: np.ndarray
    residual: float
    reason: str = ""


def outline_residual(image: np.ndarray, alpha: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """Normalised correlation of the gradient magnitudes of `image` (float h×w×3) and of `alpha` (h×w).

    A clean image has edges of its own, unrelated to the watermark's outline: about 0. An image that
    still carries the watermark, or a misaligned inversion (a ghost along the outline), scores high.
    `exclude` (bool h×w): pixels not to judge (and their surroundings).
    """
    def magnitude(values: np.ndarray) -> np.ndarray:
        values = values if values.ndim == 3 else values[..., None]
        gx = cv2.Sobel(values, cv2.CV_32F, 1, 0, ksize=3).reshape(values.shape)
        gy = cv2.Sobel(values, cv2.CV_32F, 0, 1, ksize=3).reshape(values.shape)
        return cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy).sum(-1), (0, 0), 1.0)

    outline = magnitude(alpha.astype(np.float32))
    edges = magnitude(image.astype(np.float32))
    zone = outline > 0.05 * float(outline.max()) if outline.max() > 0 else np.zeros(outline.shape, bool)
    if zone.sum() < 8:
        return 0.0
    # Compare the two on the outline and its surroundings only; elsewhere both are scene or nothing.
    zone = cv2.dilate(zone.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    if exclude is not None:  # pixels left to inpainting: their outline is not the inversion's doing
        zone &= ~(cv2.dilate(exclude.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)
        if zone.sum() < 8:
            return 0.0
    a, b = outline[zone] - outline[zone].mean(), edges[zone] - edges[zone].mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


# α bands in which `noise_dominated` measures the inversion's noise, and the least pixels it measures on.
_NOISE_BANDS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
_NOISE_MIN_PIXELS = 24
# Immerkær's noise operator (two Laplacians): zero on planes, |response|/6 has the noise's σ on white noise.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _noise_sigma(values: np.ndarray) -> float:
    """Robust σ (MAD) of the noise operator's responses `values` (already divided by 6)."""
    return float(np.median(np.abs(values)) / 0.6745) if values.size else 0.0


def _fill_distance(footprint: np.ndarray) -> int:
    """How far (px) an inpainting must reach into `footprint`: its largest distance to the outside."""
    inside = np.pad(footprint.astype(np.uint8), 1)
    return max(1, int(np.ceil(float(cv2.distanceTransform(inside, cv2.DIST_L2, 3).max()))))


def _variation_at(values: np.ndarray, where: np.ndarray, lag: int) -> float:
    """RMS change of `values` (h×w) between pixels `lag` px apart (across and down), both in `where`:
    how much the scene varies over the distance an inpainting has to guess across."""
    changes = []
    for a, b, inside in ((values[:, lag:], values[:, :-lag], where[:, lag:] & where[:, :-lag]),
                         (values[lag:], values[:-lag], where[lag:] & where[:-lag])):
        changes.append((a - b)[inside])
    both = np.concatenate(changes)
    return float(np.sqrt(np.mean(both * both))) if both.size else 0.0


def noise_dominated(direct: np.ndarray, observed: np.ndarray, alpha: np.ndarray, footprint: np.ndarray,
                    ratio: float, matte_variance: np.ndarray | None = None, matte_ratio: float = 1.0) -> np.ndarray:
    """bool h×w: footprint pixels whose α band is inverted with more error than inpainting would make.

    The plain division `direct` (float h×w×3) multiplies the image's noise by 1/(1 − α); JPEG noise
    is largest right at the watermark's own edges (ringing), so it is measured where it is: in each α
    band, the robust high-frequency level of the division's luma (where α itself is flat, so that the
    matte's outline does not count) minus that of the scene around the watermark (`observed` where
    α = 0: scene texture plus noise at 1×). `matte_variance` (h×w, grey levels², optional) is the
    expected squared error of the undo's numerator J − α·W that the matte's own error causes at each
    pixel (see WatermarkMatte.error_moments); divided by (1 − α)² it is the band's matte error. A band
    whose (noise / `ratio`)² + (matte error / `matte_ratio`)² exceeds the square of the scene's RMS
    change around the watermark over the distance an inpainting has to bridge (the footprint's largest
    distance to its outside) — about what an inpainting gets wrong — goes to inpainting, and so does
    every band above it (the amplification only grows with α). A ratio of 0 leaves its term out.
    """
    out = np.zeros(alpha.shape, bool)
    if matte_ratio <= 0:
        matte_variance = None
    if (ratio <= 0 and matte_variance is None) or not footprint.any():
        return out
    luma = lambda image: (image @ _TO_YCC[0].astype(np.float32)).astype(np.float32)  # noqa: E731
    response_direct = cv2.filter2D(luma(direct), cv2.CV_32F, _NOISE_KERNEL) / 6.0
    observed_luma = luma(observed)
    response_observed = cv2.filter2D(observed_luma, cv2.CV_32F, _NOISE_KERNEL) / 6.0
    grown = cv2.dilate((alpha > _ALPHA_FLOOR).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ring = ~grown
    ring[:1], ring[-1:], ring[:, :1], ring[:, -1:] = False, False, False, False
    if ring.sum() < _NOISE_MIN_PIXELS:
        return out
    scene_sigma = _noise_sigma(response_observed[ring])
    scene_spread = _variation_at(observed_luma, ring, _fill_distance(footprint))
    flat = (cv2.dilate(alpha, np.ones((3, 3), np.uint8)) - cv2.erode(alpha, np.ones((3, 3), np.uint8))) < 0.02
    for low, high in zip(_NOISE_BANDS[:-1], _NOISE_BANDS[1:]):
        band = footprint & (alpha > max(low, _ALPHA_FLOOR)) & (alpha <= high)
        measured = band & flat
        if band.sum() < _NOISE_MIN_PIXELS:
            continue
        score = 0.0  # the band's error in units of what an inpainting would get wrong, squared
        if ratio > 0 and measured.sum() >= _NOISE_MIN_PIXELS:
            score += max(_noise_sigma(response_direct[measured]) ** 2 - scene_sigma**2, 0.0) / ratio**2
        elif matte_variance is None:
            continue
        if matte_variance is not None:
            misfit = float(np.mean(matte_variance[band] / np.square(1.0 - np.minimum(alpha[band], 0.99))))
            score += misfit / matte_ratio**2
        if score > scene_spread**2:
            out |= footprint & (alpha > max(low, _ALPHA_FLOOR))
            break
    return out


# RGB → luma/chroma (JPEG's YCbCr without offsets): compression noise and its amplification hit the
# chroma hardest (4:2:0 subsampling), while natural chroma is smooth; luma keeps the texture.
_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_FROM_YCC = np.linalg.inv(_TO_YCC)


def _regularised(target: np.ndarray, keep: np.ndarray, alpha: np.ndarray, untrusted: np.ndarray, fixed: np.ndarray,
                 config: InversionConfig) -> np.ndarray:
    """The regularised inversion (see the module docstring), float h×w×3 RGB.

    The prior's weight on an edge grows with the watermark's own α step there: the scene has no reason
    to change along the watermark's outline, where the inversion's noise and any residual misfit
    concentrate; elsewhere a light prior keeps the texture.
    """
    if config.smoothness <= 0 and config.outline_smoothness <= 0:
        return target
    data_weight = np.where(untrusted, 0.0, keep * keep)[..., None]

    channel_factor = np.array([1.0, config.chroma_factor, config.chroma_factor])

    def edge_weights(alpha_step: np.ndarray, image_step: np.ndarray) -> np.ndarray:
        # Robust (Charbonnier, reweighted): a real scene edge along the outline, far above the noise,
        # is kept; small steps (noise, a slight misfit) are smoothed.
        outline = np.minimum(np.abs(alpha_step) / _OUTLINE_STEP, 1.0)[..., None]
        robust = 1.0 / np.sqrt(1.0 + (image_step / config.edge_level) ** 2)
        return (config.smoothness + config.outline_smoothness * outline * robust) * channel_factor

    alpha_x, alpha_y = np.zeros_like(alpha), np.zeros_like(alpha)
    alpha_x[:, :-1] = alpha[:, 1:] - alpha[:, :-1]
    alpha_y[:-1] = alpha[1:] - alpha[:-1]
    ycc = target @ _TO_YCC.T
    solved = ycc
    for _ in range(_ROBUST_PASSES):
        step_x, step_y = np.zeros_like(solved), np.zeros_like(solved)
        step_x[:, :-1] = solved[:, 1:] - solved[:, :-1]
        step_y[:-1] = solved[1:] - solved[:-1]
        solved = solve_grid(GridProblem(data_weight=data_weight, target=ycc, weight_x=edge_weights(alpha_x, step_x),
                                        weight_y=edge_weights(alpha_y, step_y), fixed=fixed),
                            initial=solved, iterations=config.iterations)
    return solved @ _FROM_YCC.T


def _matte_variance(matte: WatermarkMatte, aligned: AlignedWatermark, box: tuple[int, int, int, int],
                    direct: np.ndarray) -> np.ndarray | None:
    """Expected squared error (grey levels², h×w) of J − α·W in `box` due to the matte's own error, at
    this image's scene luma (the plain division's, clipped): E[(δb − I·δα)²]; None without moments."""
    moments = matte.placed_error_moments(aligned.placement, box)
    if moments is None:
        return None
    scene = np.clip(direct, 0.0, 255.0) @ _TO_YCC[0].astype(np.float32)
    variance = moments[..., 2] - 2.0 * scene * moments[..., 1] + scene * scene * moments[..., 0]
    return np.maximum(variance, 0.0).astype(np.float32)


def invert_watermark(image: np.ndarray, hole: np.ndarray, matte: WatermarkMatte, aligned: AlignedWatermark,
                     config: InversionConfig | None = None) -> InversionResult:
    """Recover the pixels under the watermark in `image` (uint8 H×W×3) inside `hole` (bool H×W).

    `aligned` is the watermark's fitted placement in this image (see align_watermark). Pixels outside
    the hole are never changed.
    """
    config = config or InversionConfig()
    restored = image.copy()
    shape = image.shape[:2]
    inverted = np.zeros(shape, bool)
    if aligned.gain < config.min_gain:
        return InversionResult(restored, inverted, hole.copy(), float("nan"),
                               reason=f"no watermark found to invert (energy gain {aligned.gain:.3f})")
    box = matte.image_box(aligned.placement, shape)
    y0, x0, y1, x1 = box
    alpha, premultiplied = matte.placed(aligned.placement, box)
    observed = image[y0:y1, x0:x1].astype(np.float32)
    hole_box = hole[y0:y1, x0:x1]
    keep = 1.0 - alpha
    saturated = alpha >= config.alpha_max
    direct = (observed - premultiplied) / np.maximum(keep, 1.0 - config.alpha_max)[..., None]
    footprint = (alpha > _ALPHA_FLOOR) & hole_box
    out_of_range = footprint & ((direct < -config.range_margin) | (direct > 255 + config.range_margin)).any(-1)
    noisy = noise_dominated(direct, observed, alpha, footprint, config.noise_ratio,
                            _matte_variance(matte, aligned, box, direct) if config.matte_error_ratio > 0 else None,
                            config.matte_error_ratio)
    untrusted = cv2.dilate((saturated | out_of_range).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    untrusted = (untrusted | noisy) & footprint
    fixed = ~footprint
    target = np.where(fixed[..., None], observed, np.clip(direct, 0.0, 255.0))
    solved = _regularised(target, keep, alpha, untrusted, fixed, config)
    recovered = np.clip(np.rint(solved), 0, 255).astype(np.uint8)
    residual = outline_residual(recovered.astype(np.float32), alpha, exclude=untrusted)
    if residual > config.max_residual:
        return InversionResult(restored, inverted, hole.copy(), residual,
                               reason=f"the inversion still shows the watermark's outline (residual {residual:.2f})")
    region = restored[y0:y1, x0:x1]
    region[footprint] = recovered[footprint]
    inverted[y0:y1, x0:x1] = footprint & ~untrusted
    inpaint = np.zeros(shape, bool)
    inpaint[y0:y1, x0:x1] = untrusted
    reason = ""
    if untrusted.any():
        reason = (f"{int(saturated[footprint].sum())} saturated, {int(out_of_range.sum())} out-of-range, "
                  f"{int(noisy.sum())} noise-dominated pixels")
    return InversionResult(restored, inverted, inpaint, residual, reason)

"""Multi-image matting: the watermark's matte α and colour W from many images that carry it.

Following Dekel et al. (CVPR 2017), the watermark is what, removed from every aligned crop at once,
leaves natural images behind — images whose gradients are small and sparse. Writing the undo as
I_k = u·J_k − v with u = 1/(1 − α) and v = α·W/(1 − α), the gradients of every I_k are linear in
(u, v), so the joint problem

    min_{u, v}  Σ_k Σ_edges ρ(∇(u·J_k) − ∇v)        (ρ: Charbonnier, robust to scene edges)

with u = 1, v = 0 on the crop's border (outside the watermark) is convex. It is solved by iteratively
reweighted least squares; each reweighted step is a sparse quadratic problem on the crop grid, solved
by conjugate gradients with a 4×4 block-Jacobi preconditioner, and needs only six weighted moments of
the crops per edge (not the crops themselves). Images with their own opacity factor γ_k are brought to
the common opacity with the current estimate and the fit repeated; images that turn out not to carry
the watermark (γ_k ≈ 0) are dropped from the next pass.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .align import MIN_GAIN, AlignedWatermark, align_watermark
from .matte import Placement, WatermarkMatte

log = logging.getLogger(__name__)

_TV_DELTA = 0.01  # smoothing of the total-variation prior, in units of u (v: of u·255)


@dataclass(frozen=True)
class MatteEstimationConfig:
    """Settings of the matte estimation.

    Attributes:
        margin: matte margin around the template, as a fraction of its larger side (at least 6 px):
            the matte must reach beyond the template support, where α is zero, on every side.
        passes: estimate → align each image (sub-pixel shift, scale, opacity) → estimate again.
        irls_iterations / cg_iterations: inner solver effort per pass.
        min_gain: images whose best undo removes less than this share of their gradient energy
            around the watermark are taken not to carry it (excluded from the next pass).
        min_images: fewer usable images than this and the estimate is refused.
        support_px: α may be non-zero up to this many pixels outside the template's support (its
            anti-aliased rim, a support found a little too small, placement jitter).
        smoothness: strength of the total-variation prior on the matte (relative to the data's
            curvature): watermarks are mostly flat shapes with sharp outlines, the scenes' leftovers
            are not.
        max_images: the matte is solved from at most this many images (the best-matching ones); every
            fit image is still aligned and checked. More images cost time and add little once the
            scenes vary enough to cancel out.
        charbonnier_eps: ε (grey levels) of the robust gradient penalty √(r² + ε²): below it a residual
            costs quadratically, above it linearly. Smaller is closer to L1 — scene edges, which
            every crop has in different places, pull the matte less (chosen on the dev split: ε 0.7
            against 2: α 0.3 JPEG 95 +0.24 dB, α 0.5 +0.48 dB).
        error_moments: also measure how far the matte may be off at each pixel (WatermarkMatte.
            error_moments), by solving it again from each half of the images: the inversion hands to
            inpainting the α bands whose undo this error, amplified by 1/(1 − α), would spoil. Costs
            about one more solve.
        error_blur_px: the halves' squared differences are averaged over a Gaussian of this σ (px): one
            difference per pixel is a single draw of the error, not its size.
    """

    margin: float = 0.1
    passes: int = 3
    irls_iterations: int = 8
    cg_iterations: int = 80
    min_gain: float = MIN_GAIN
    min_images: int = 3
    max_images: int = 64
    support_px: int = 4
    smoothness: float = 0.0
    charbonnier_eps: float = 0.7
    error_moments: bool = True
    error_blur_px: float = 2.0

    def __post_init__(self) -> None:
        if self.error_blur_px < 0 or self.charbonnier_eps <= 0:
            raise ValueError("error_blur_px must be >= 0 and charbonnier_eps > 0")
        if self.support_px < 0 or not 0 <= self.margin <= 1 or self.passes < 1 or self.irls_iterations < 1 or self.cg_iterations < 1:
            raise ValueError("margin in [0, 1], passes, irls_iterations, cg_iterations >= 1")
        if self.min_images < 2:
            raise ValueError("min_images must be >= 2")


class MatteEstimationError(RuntimeError):
    """The matte cannot be estimated (too few images that carry the watermark)."""


@dataclass
class MatteFit:
    """The matte and what the estimation saw: each fit image's aligned placement (None = dropped)."""

    matte: WatermarkMatte
    alignments: list[AlignedWatermark | None]

    @property
    def images_used(self) -> int:
        return sum(a is not None for a in self.alignments)


def _edge_parts(axis: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Index of each edge's first pixel p and second pixel q along `axis` (1 = x, 0 = y)."""
    if axis == 1:
        return (slice(None), slice(None, -1)), (slice(None), slice(1, None))
    return (slice(None, -1), slice(None)), (slice(1, None), slice(None))


def _residuals(crops: np.ndarray, x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Residuals r_k (K×h'×w'×3) of the edges along `axis` at x = (u, v), and 1/ū per edge.

    r = ∇(u·J_k − v) / ū with ū the mean u of the edge's two pixels: the undo's gradient in the
    observed image's units. Measured in the undo's own units the energy would fall by shrinking u (a
    trivial minimum); this way it is invariant to a common scale of (u, v), which the border fixes.
    """
    p, q = _edge_parts(axis)
    u, v = x[..., 0], x[..., 1:]
    inverse_mean = (2.0 / (u[p] + u[q]))[..., None]
    numerator = u[q][None, ..., None] * crops[(slice(None), *q)] - u[p][None, ..., None] * crops[(slice(None), *p)]
    return (numerator - (v[q] - v[p])[None]) * inverse_mean[None], inverse_mean


def _energy(crops: np.ndarray, x: np.ndarray, epsilon: float) -> float:
    return float(sum(np.sqrt(_residuals(crops, x, axis)[0] ** 2 + epsilon**2).sum() for axis in (1, 0)))


def _linearise(crops: np.ndarray, x: np.ndarray, axis: int, epsilon: float) -> dict[str, np.ndarray]:
    """Gauss–Newton moments of the reweighted, linearised residuals along `axis`.

    r ≈ r0 + A·du_p + B·du_q + C·(dv_p − dv_q) with A = −(J_p + r0/2)·C, B = (J_q − r0/2)·C, C = 1/ū;
    IRLS weights w = 1/√(r0² + ε²). Returns the per-edge sums over images of w, wA, wB, wAA, wBB,
    wAB, w·r0, w·r0·A, w·r0·B (each h'×w'×3) and C.
    """
    p, q = _edge_parts(axis)
    r0, c = _residuals(crops, x, axis)
    weight = 1.0 / np.sqrt(r0 * r0 + epsilon**2)
    a = -(crops[(slice(None), *p)] + r0 / 2) * c[None]
    b = (crops[(slice(None), *q)] - r0 / 2) * c[None]
    wa, wb, wr = weight * a, weight * b, weight * r0
    return {"c": c, "w": weight.sum(0), "wa": wa.sum(0), "wb": wb.sum(0), "waa": (wa * a).sum(0),
            "wbb": (wb * b).sum(0), "wab": (wa * b).sum(0), "wr": wr.sum(0), "wra": (wr * a).sum(0),
            "wrb": (wr * b).sum(0)}


def _normal_terms(x: np.ndarray, m: dict[str, np.ndarray], axis: int, out: np.ndarray, *, rhs: bool) -> None:
    """Add the edges' share of H·x (or, with `rhs`, of the right-hand side −Σ w·r0·g) to `out`."""
    p, q = _edge_parts(axis)
    c = m["c"]
    if rhs:
        along_a, along_b, along_c = -m["wra"], -m["wrb"], -m["wr"] * c
    else:
        du_p, du_q = x[p][..., :1], x[q][..., :1]
        dv = x[p][..., 1:] - x[q][..., 1:]
        along_a = m["waa"] * du_p + m["wab"] * du_q + m["wa"] * c * dv
        along_b = m["wab"] * du_p + m["wbb"] * du_q + m["wb"] * c * dv
        along_c = (m["wa"] * du_p + m["wb"] * du_q) * c + m["w"] * c * c * dv
    out[p + (0,)] += along_a.sum(-1)
    out[q + (0,)] += along_b.sum(-1)
    out[p + (slice(1, None),)] += along_c
    out[q + (slice(1, None),)] -= along_c


def _smoothing(x: np.ndarray, axis: int, weights: np.ndarray, out: np.ndarray) -> None:
    """Add the edges' share of ∇ᵀ(weights·∇x) (the total-variation prior's reweighted Hessian) to `out`."""
    p, q = _edge_parts(axis)
    diff = (x[q] - x[p]) * weights
    out[q] += diff
    out[p] -= diff


def _apply(x: np.ndarray, moments: dict[int, dict[str, np.ndarray]], prior: dict[int, np.ndarray]) -> np.ndarray:
    """H·x for x = h×w×4 (u, v_R, v_G, v_B) of the linearised, reweighted problem with its prior."""
    out = np.zeros_like(x)
    for axis, m in moments.items():
        _normal_terms(x, m, axis, out, rhs=False)
        _smoothing(x, axis, prior[axis], out)
    return out


def _block_preconditioner(moments: dict[int, dict[str, np.ndarray]], shape: tuple[int, int],
                          prior: dict[int, np.ndarray]) -> np.ndarray:
    """Inverse of each pixel's 4×4 diagonal block of H: h×w×4×4."""
    block = np.zeros((*shape, 4, 4))
    for axis, m in moments.items():
        p, q = _edge_parts(axis)
        c = m["c"]
        for part, uu, uv, sign in ((p, m["waa"], m["wa"], 1.0), (q, m["wbb"], m["wb"], -1.0)):
            sub = block[part]
            sub[..., 0, 0] += uu.sum(-1) + prior[axis][..., 0]
            for channel in range(3):
                coupling = sign * uv[..., channel] * c[..., 0]
                sub[..., 0, 1 + channel] += coupling
                sub[..., 1 + channel, 0] += coupling
                sub[..., 1 + channel, 1 + channel] += m["w"][..., channel] * c[..., 0] ** 2 + prior[axis][..., 1 + channel]
            block[part] = sub
    block += np.eye(4) * 1e-9
    return np.linalg.inv(block)


def _conjugate_gradients(x: np.ndarray, moments: dict[int, dict[str, np.ndarray]], fixed: np.ndarray,
                         prior: dict[int, np.ndarray], iterations: int) -> np.ndarray:
    """The Gauss–Newton step dx (h×w×4, zero on `fixed` pixels) from x."""
    shape = fixed.shape
    free = (~fixed)[..., None]
    inverse_block = _block_preconditioner(moments, shape, prior)
    residual = np.zeros((*shape, 4))
    for axis, m in moments.items():
        _normal_terms(residual, m, axis, residual, rhs=True)
        smoothing = np.zeros_like(residual)
        _smoothing(x, axis, prior[axis], smoothing)
        residual -= smoothing
    residual *= free
    step_x = np.zeros_like(residual)
    z = np.einsum("hwij,hwj->hwi", inverse_block, residual) * free
    direction = z.copy()
    rz = float((residual * z).sum())
    start = np.sqrt(float((residual**2).sum()))
    for _ in range(iterations):
        if start == 0 or rz <= 0:
            break
        product = _apply(direction, moments, prior) * free
        curvature = float((direction * product).sum())
        if curvature <= 0:
            break
        step = rz / curvature
        step_x += step * direction
        residual -= step * product
        if np.sqrt(float((residual**2).sum())) < 1e-4 * start:
            break
        z = np.einsum("hwij,hwj->hwi", inverse_block, residual) * free
        rz_next = float((residual * z).sum())
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    return step_x


def _prior_energy(x: np.ndarray, strength: np.ndarray) -> float:
    """Σ strength · √(Δx² + δ²) over both axes: a smoothed total variation of u and of v."""
    total = 0.0
    for axis in (1, 0):
        p, q = _edge_parts(axis)
        total += float((strength * np.sqrt((x[q] - x[p]) ** 2 + _TV_DELTA**2)).sum())
    return total


def _prior_weights(x: np.ndarray, strength: np.ndarray) -> dict[int, np.ndarray]:
    weights = {}
    for axis in (1, 0):
        p, q = _edge_parts(axis)
        weights[axis] = strength / np.sqrt((x[q] - x[p]) ** 2 + _TV_DELTA**2)
    return weights


def _solve_uv(crops: np.ndarray, fixed: np.ndarray, config: MatteEstimationConfig) -> tuple[np.ndarray, np.ndarray]:
    """(u h×w, v h×w×3) minimising the robust gradient energy of the undone crops plus a total-variation
    prior on u and v (Gauss–Newton + IRLS, with backtracking so the objective never rises)."""
    _, height, width, _ = crops.shape
    x = np.zeros((height, width, 4))
    x[..., 0] = 1.0
    first = _linearise(crops, x, 1, config.charbonnier_eps)
    # The prior's strength is relative to the data's curvature, so it means the same whatever the
    # number of images or their contrast; v is in grey levels, u in units of 1/(1 − α): scale δ too.
    unit = np.array([1.0, 255.0, 255.0, 255.0])
    curvature = np.array([float(np.mean(first["waa"])), *[float(np.mean(first["w"] * first["c"] ** 2))] * 3])
    # At small differences the prior's curvature is `smoothness` times the data's.
    strength = config.smoothness * curvature * _TV_DELTA * unit**2

    def objective(candidate: np.ndarray) -> float:
        return _energy(crops, candidate, config.charbonnier_eps) + _prior_energy(candidate / unit, strength)

    energy = objective(x)
    for _ in range(config.irls_iterations):
        moments = {axis: _linearise(crops, x, axis, config.charbonnier_eps) for axis in (1, 0)}
        prior = {axis: w / unit**2 for axis, w in _prior_weights(x / unit, strength).items()}
        step = _conjugate_gradients(x, moments, fixed, prior, config.cg_iterations)
        for _ in range(6):
            candidate = x + step
            candidate[..., 0] = np.maximum(candidate[..., 0], 1.0)  # α ≥ 0
            candidate_energy = objective(candidate)
            if candidate_energy <= energy:
                break
            step = step / 2
        else:
            break
        x, energy = candidate, candidate_energy
        log.debug("matte objective %.6g, max u %.3f", energy, float(x[..., 0].max()))
    return x[..., 0], x[..., 1:]


def _matte_from_uv(u: np.ndarray, v: np.ndarray, origin: tuple[float, float], fit_opacity: np.ndarray) -> WatermarkMatte:
    """α = 1 − 1/u, α·W = v/u; W where α is too small to tell is filled from its surroundings."""
    u = np.maximum(u, 1.0)  # α ≥ 0
    alpha = np.clip(1.0 - 1.0 / u, 0.0, 0.995)
    premultiplied = v / u[..., None]
    color = np.clip(premultiplied / np.maximum(alpha[..., None], 1e-6), 0.0, 255.0)
    unknown = alpha < 0.02
    if unknown.any() and (~unknown).any():
        # Only α·W matters for the undo; W itself is filled smoothly for display and for opacity changes.
        color = cv2.inpaint(np.clip(color, 0, 255).astype(np.uint8), unknown.astype(np.uint8), 5,
                            cv2.INPAINT_TELEA).astype(np.float32)
        color[~unknown] = np.clip(premultiplied[~unknown] / alpha[~unknown][..., None], 0, 255)
    alpha = np.where(alpha < 0.004, 0.0, alpha)
    return WatermarkMatte(alpha=alpha.astype(np.float32), color=color.astype(np.float32), origin=origin,
                          fit_opacity=np.asarray(fit_opacity, np.float32))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _error_moments(crops: np.ndarray, fixed: np.ndarray, config: MatteEstimationConfig,
                   origin: tuple[float, float]) -> np.ndarray | None:
    """E[δα²], E[δα·δb], E[δb²] per pixel (h×w×3 float32) of a matte solved from `crops` (K×h×w×3), b
    the luma of α·W; None with fewer than 2·`min_images` crops.

    Solved again from the even and from the odd crops, the two halves' difference d has, per pixel,
    the full estimate's error variance in d²/4 (each half has twice the full set's variance; their
    errors are independent, the scenes being different). The error is what the scenes leave in the
    matte (few images, textured places, JPEG) and shows up where it is, unlike a noise measure on the
    inverted image: a smooth misfit of α·W passes any high-frequency test but is multiplied by
    1/(1 − α) in the undo.
    """
    if len(crops) < 2 * config.min_images:
        return None
    halves = []
    for half in (crops[0::2], crops[1::2]):
        u, v = _solve_uv(half, fixed, config)
        matte = _matte_from_uv(u, v, origin, np.ones(1))
        halves.append((matte.alpha, matte.premultiplied @ _LUMA))
    delta_alpha = (halves[0][0] - halves[1][0]) / 2
    delta_luma = (halves[0][1] - halves[1][1]) / 2
    moments = np.stack([delta_alpha * delta_alpha, delta_alpha * delta_luma, delta_luma * delta_luma], -1)
    if config.error_blur_px > 0:
        moments = cv2.GaussianBlur(moments.astype(np.float32), (0, 0), config.error_blur_px)
    return moments.astype(np.float32)


def _to_common_opacity(crop: np.ndarray, matte: WatermarkMatte, opacity: float) -> np.ndarray:
    """A crop blended at opacity factor γ re-blended at factor 1, with the current matte estimate."""
    if abs(opacity - 1.0) < 1e-3:
        return crop
    alpha = matte.alpha[..., None]
    alpha_image = np.clip(alpha * opacity, 0, 0.95)
    clean = (crop - matte.premultiplied * opacity) / (1 - alpha_image)
    return (1 - alpha) * clean + matte.premultiplied


def _edge_magnitude(crop: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(crop, cv2.CV_32F, 1, 0, ksize=3).reshape(crop.shape)
    gy = cv2.Sobel(crop, cv2.CV_32F, 0, 1, ksize=3).reshape(crop.shape)
    return np.sqrt(gx * gx + gy * gy).sum(-1)


def parabola_vertex(low: float, mid: float, high: float) -> float:
    """Offset (within ±½ px) of the peak of the parabola through three neighbouring samples; 0 if none:
    the sub-pixel refinement of a correlation peak."""
    curvature = low - 2 * mid + high
    return 0.0 if curvature >= 0 else float(np.clip(0.5 * (low - high) / curvature, -0.5, 0.5))


def _coalign(images: Sequence[np.ndarray], placements: list[Placement | None], frame: WatermarkMatte,
             reach: int = 2, rounds: int = 2) -> list[Placement | None]:
    """Register the images on each other before any matte exists, by the watermark's edges alone.

    The median of the crops' edge magnitudes keeps the watermark's outline and drops the scenes (Dekel
    et al.); each crop is then shifted by the integer offset within ±`reach` px that correlates best
    with that median, refined to sub-pixel by a parabola through the neighbouring scores. The
    consistent locator is typically off by a pixel, which would blur the first matte.
    """
    placements = list(placements)
    size = 2 * reach + 1
    for _ in range(rounds):
        used = [i for i, p in enumerate(placements) if p is not None]
        crops = {i: _edge_magnitude(frame.crop(images[i], placements[i])) for i in used}  # type: ignore[arg-type]
        template = np.median(np.stack(list(crops.values())), axis=0)
        inner = template[reach:-reach, reach:-reach]
        inner = (inner - inner.mean()).astype(np.float32)
        for i in used:
            scores = cv2.matchTemplate(crops[i].astype(np.float32), inner, cv2.TM_CCOEFF_NORMED)
            if scores.shape != (size, size):
                continue
            py, px = np.unravel_index(int(np.argmax(scores)), scores.shape)
            dy = py - reach + (parabola_vertex(scores[py - 1, px], scores[py, px], scores[py + 1, px])
                               if 0 < py < size - 1 else 0.0)
            dx = px - reach + (parabola_vertex(scores[py, px - 1], scores[py, px], scores[py, px + 1])
                               if 0 < px < size - 1 else 0.0)
            scale = placements[i].scale  # type: ignore[union-attr]
            placements[i] = placements[i].moved(dy=dy * scale, dx=dx * scale)  # type: ignore[union-attr]
    return placements


def estimate_matte(images: Sequence[np.ndarray], placements: Sequence[Placement | None], support: np.ndarray,
                   config: MatteEstimationConfig | None = None) -> MatteFit:
    """Estimate the watermark's matte from images and the template's placement in each.

    images: uint8 H×W×3 (sizes may differ); placements: the consistent template's top-left and scale
    in each image (None = the template did not match: not used); support: bool h×w, the template's
    support (where the consistent fit saw the watermark): α is estimated within `support_px` of it
    and is zero elsewhere. Raises MatteEstimationError with fewer than `min_images` usable images.
    """
    config = config or MatteEstimationConfig()
    template_shape = support.shape
    margin = max(6, round(config.margin * max(template_shape)), config.support_px + 2)
    shape = (template_shape[0] + 2 * margin, template_shape[1] + 2 * margin)
    origin = (-float(margin), -float(margin))
    near_support = np.zeros(shape, np.uint8)
    near_support[margin:margin + template_shape[0], margin:margin + template_shape[1]] = support
    size = 2 * config.support_px + 1
    near_support = cv2.dilate(near_support, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
    # Outside the (dilated) support the scenes alone decide: α = 0 there is the watermark's boundary.
    fixed = ~near_support
    fixed[:2], fixed[-2:], fixed[:, :2], fixed[:, -2:] = True, True, True, True
    current: list[Placement | None] = [p.moved(opacity=1.0) if p is not None else None for p in placements]
    alignments: list[AlignedWatermark | None] = [None] * len(images)
    matte = WatermarkMatte(np.zeros(shape, np.float32), np.zeros((*shape, 3), np.float32), origin, np.zeros(0))
    current = _coalign(images, current, matte)
    for pass_index in range(config.passes):
        used = [i for i, p in enumerate(current) if p is not None]
        if len(used) < config.min_images:
            raise MatteEstimationError(f"only {len(used)} images carry the watermark; at least {config.min_images} "
                                       "are needed to estimate its matte")
        solve_from = used[: config.max_images] if pass_index == 0 else sorted(
            used, key=lambda i: -(alignments[i].gain if alignments[i] else 0.0))[: config.max_images]
        crops = np.stack([matte.crop(images[i], current[i]) for i in solve_from])  # type: ignore[arg-type]
        if pass_index > 0:
            crops = np.stack([_to_common_opacity(crop, matte, current[i].opacity)  # type: ignore[union-attr]
                              for crop, i in zip(crops, solve_from)])
        u, v = _solve_uv(crops, fixed, config)
        matte = _matte_from_uv(u, v, origin, np.ones(len(used)))
        alignments = [None] * len(images)
        last = pass_index == config.passes - 1
        for i in used:
            aligned = align_watermark(images[i], matte, current[i])  # type: ignore[arg-type]
            if aligned.gain >= config.min_gain and aligned.placement.opacity >= 0.2:
                alignments[i] = aligned
                current[i] = aligned.placement
            elif last:
                current[i] = None  # it does not carry the watermark (or not where the template matched)
            # An early, still blurred matte may not yet explain an image: keep it for the next pass.
        gains = [a.gain for a in alignments if a is not None]
        log.info("matte pass %d: %d images, %d kept, α max %.3f, median gain %.3f", pass_index + 1, len(used),
                 sum(c is not None for c in current), float(matte.alpha.max()), float(np.median(gains)) if gains else 0.0)
    kept = [a for a in alignments if a is not None]
    if len(kept) < config.min_images:
        raise MatteEstimationError(f"only {len(kept)} images carry the watermark; at least {config.min_images} "
                                   "are needed to estimate its matte")
    # The last pass's crops (the ones the matte was solved from) tell how far it may be off.
    moments = _error_moments(crops, fixed, config, origin) if config.error_moments else None
    matte.error_moments = moments
    # Express the matte at the typical opacity (median factor 1), so an image without its own fit gets it.
    typical = float(np.median([a.placement.opacity for a in kept]))
    if typical > 0:
        alpha = np.clip(matte.alpha * typical, 0.0, 0.995)
        matte = WatermarkMatte(alpha.astype(np.float32), matte.color, origin,
                               np.array([a.placement.opacity / typical for a in kept], np.float32),
                               None if moments is None else (moments * np.float32(typical**2)))
        alignments = [None if a is None else AlignedWatermark(a.placement.moved(opacity=a.placement.opacity / typical),
                                                              a.energy, a.energy_untouched) for a in alignments]
    return MatteFit(matte, alignments)

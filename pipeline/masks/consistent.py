"""A watermark repeated across a dataset, found without knowing what it looks like.

Dekel et al., CVPR 2017, "On the Effectiveness of Visible Watermarks": over many images that carry
the same overlay, the per-pixel median of image gradients keeps the overlay's edges while the varying
scenes cancel. We

1. pick the frame in which the overlay is aligned (images may differ in size, so the overlay is
   anchored to a corner or the centre) by the median of sign-free, blurred edge-orientation fields,
   which survives a few pixels of placement jitter; sharpen that template by re-aligning the images
   with it at decreasing blur;
2. cut crops aligned on the template from every fit image and take the median of their signed colour
   gradients — the watermark's gradient field;
3. keep the edges stronger than chance (the same median over deliberately misaligned crops) and
   Poisson-reconstruct the watermark from them to get its support (filled shapes, not just outlines);
   repeat 2–3 with the sharper template;
4. per image, locate the template by normalised cross-correlation of edge-orientation fields over a
   few scales; the mask is the template support at the best match, or empty below `min_match_score`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import cv2
import numpy as np

from .base import BatchMixin, MaskGenerationError, MaskResult, check_image
from .fields import color_gradients, normalised_correlation, orientation_field
from .poisson import poisson_reconstruct
from .postprocess import remove_small_components

log = logging.getLogger(__name__)

ANCHORS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
# Gaussian sigma (px) of the orientation fields in fine matching: tolerates sub-pixel misplacement.
FINE_BLUR = 1.0
# Context cut around the current template when re-estimating it: the template can grow by this much
# per pass (a coarse template may hold only the strongest part of a watermark).
_CONTEXT_MIN_PX = 16
_CONTEXT_FRACTION = 0.25
# Parts of a watermark closer than this belong together (a logo's symbol and its word).
_TEMPLATE_MERGE_PX = 12
# Edge specks smaller than this are chance alignments of scene edges, not watermark outlines.
_MIN_EDGE_PIXELS = 4
# Aligned images must show this many times more edge pixels than misaligned ones to hold a watermark.
_SIGNIFICANCE = 4.0
# At least this share of the fit images must match the template at the same place (± jitter).
_MIN_CONSISTENT_SHARE = 0.5
# The coarse template keeps structure above this fraction of the strongest (see _structure_threshold).
_COARSE_FRACTION = 0.35
# A "watermark" covering more of the frame than this is the scenes' shared structure, not an overlay.
_MAX_TEMPLATE_SHARE = 0.6

# Where a template matched in one image: (score, y, x, scale) with (y, x) its top-left corner.
Placement = tuple[float, int, int, float]


@dataclass(frozen=True)
class ConsistentWatermarkConfig:
    """Settings of the consistent-watermark generator.

    Attributes:
        max_fit_images: at most this many images (a seeded random sample) are used by `fit`.
        anchors: frames tried for aligning images of different sizes.
        coarse_blur: Gaussian sigma (px) of the orientation fields used to find the overlay in the first
            pass; about the placement jitter the data may have.
        edge_threshold: edges of the median gradient field are pixels whose magnitude exceeds both
            chance (the same median over misaligned images) and this fraction of its robust maximum.
        support_threshold: the template support is where the Poisson-reconstructed watermark departs
            from its background by more than this fraction of its robust maximum.
        refine_iterations: re-localise-and-re-estimate passes after the first template.
        scales: template scales tried per image (a placement that is slightly larger or smaller).
        min_match_score: normalised correlation below which an image is deemed to carry no watermark
            (on the benchmark, images without the logo score ≤ 0.28, logos at opacity ≥ 0.5 ≥ 0.48).
        search: "anywhere" searches the whole image; "expected" only the region where fit images had it
            (plus `search_margin` px), which is faster and avoids matches on lookalike structures.
        search_margin: see `search`.
        seed: seed of the fit sample and of the misalignments that measure chance.
    """

    max_fit_images: int = 64
    anchors: tuple[str, ...] = ANCHORS
    coarse_blur: float = 3.0
    edge_threshold: float = 0.12
    support_threshold: float = 0.2
    refine_iterations: int = 2
    scales: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)
    min_match_score: float = 0.35
    search: Literal["anywhere", "expected"] = "anywhere"
    search_margin: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.anchors) - set(ANCHORS)
        if not self.anchors or unknown:
            raise ValueError(f"anchors must be a non-empty subset of {ANCHORS}, got {self.anchors}")
        if self.max_fit_images < 3:
            raise ValueError("max_fit_images must be >= 3 (a median needs several images)")
        if not 0 < self.edge_threshold < 1 or not 0 < self.support_threshold < 1:
            raise ValueError("edge_threshold and support_threshold must be in (0, 1)")
        if not self.scales or any(not 0.5 <= s <= 2.0 for s in self.scales):
            raise ValueError(f"scales must be in [0.5, 2], got {self.scales}")
        if not -1.0 <= self.min_match_score <= 1.0:
            raise ValueError(f"min_match_score must be in [-1, 1], got {self.min_match_score}")
        if self.search not in ("anywhere", "expected"):
            raise ValueError(f"search must be 'anywhere' or 'expected', got {self.search!r}")
        if self.coarse_blur <= 0 or self.refine_iterations < 0 or self.search_margin < 0:
            raise ValueError("coarse_blur must be > 0, refine_iterations and search_margin >= 0")


def anchor_origin(shape: tuple[int, int], frame: tuple[int, int], anchor: str) -> tuple[int, int]:
    """Top-left (y, x) of a `frame`-sized window anchored at `anchor` in an image of `shape`."""
    (height, width), (frame_h, frame_w) = shape, frame
    y = {"top": 0, "bottom": height - frame_h}.get(anchor.split("-")[0], (height - frame_h) // 2)
    x = {"left": 0, "right": width - frame_w}.get(anchor.split("-")[-1], (width - frame_w) // 2)
    return y, x


def _structure_threshold(strength: np.ndarray) -> float:
    """Level above which a median-field pixel is shared structure rather than residual scene noise.

    Both a fraction of the strongest structure and a margin over the noise (median + 5 robust standard
    deviations) must be exceeded: with few fit images the noise is high, with many the fraction rules.
    """
    median = float(np.median(strength))
    noise = 1.4826 * float(np.median(np.abs(strength - median)))
    return max(_COARSE_FRACTION * _robust_max(strength), median + 5.0 * noise)


def _robust_max(values: np.ndarray) -> float:
    """A maximum that ignores the few most extreme pixels (99.5th percentile of the non-zero values)."""
    nonzero = values[values > 0]
    return float(np.percentile(nonzero, 99.5)) if nonzero.size else 0.0


def _main_component_box(strength: np.ndarray, threshold: float, merge_px: int) -> tuple[int, int, int, int] | None:
    """Box (y0, x0, y1, x1) of the strongest group of above-threshold pixels.

    Pixels closer than `merge_px` belong to the same group (a logo's ring and its word), and the group
    with the largest summed strength wins, so stray consistent specks elsewhere do not widen the box.
    """
    above = (strength > threshold).astype(np.uint8)
    if not above.any():
        return None
    merged = cv2.dilate(above, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * merge_px + 1,) * 2))
    count, labels = cv2.connectedComponents(merged, connectivity=8)
    totals = np.bincount(labels.ravel(), weights=(strength * above).ravel(), minlength=count)
    totals[0] = 0
    best = labels == int(np.argmax(totals))
    ys, xs = np.nonzero(best & (above > 0))
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


# ---------------------------------------------------------------------------------------- template


@dataclass
class WatermarkTemplate:
    """What `fit` learns.

    gradients: float32 h×w×6 median colour gradients of the watermark (the template's frame).
    support: bool h×w, the pixels the watermark covers.
    orientation: float32 h×w×2 orientation field used for matching (see `orientation_field`).
    anchor: the image frame the watermark is attached to.
    offsets: int K×2 (dy, dx) of the template's top-left relative to the anchor point in fit images.
    """

    gradients: np.ndarray
    support: np.ndarray
    orientation: np.ndarray
    anchor: str
    offsets: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.support.shape)  # type: ignore[return-value]

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write the template as .npz to a path or binary file object (fit once, apply in many workers)."""
        np.savez_compressed(path, gradients=self.gradients, support=self.support, orientation=self.orientation,
                            anchor=np.array(self.anchor), offsets=self.offsets)

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> WatermarkTemplate:
        """Read a template written by `save` (never unpickles: plain arrays only)."""
        with np.load(path, allow_pickle=False) as data:
            return cls(gradients=data["gradients"], support=data["support"], orientation=data["orientation"],
                       anchor=str(data["anchor"]), offsets=data["offsets"])


@dataclass
class FitReport:
    """Summary of a fit: images used, anchor, template size, the fit images' match scores, and the share
    of them that match at a consistent place."""

    images: int
    anchor: str
    template_shape: tuple[int, int]
    support_pixels: int
    match_scores: list[float] = field(default_factory=list)
    consistent_share: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        scores = np.asarray(self.match_scores) if self.match_scores else np.zeros(1)
        return {
            "images": self.images, "anchor": self.anchor, "template_shape": list(self.template_shape),
            "support_pixels": self.support_pixels,
            "match_score_median": round(float(np.median(scores)), 4),
            "match_score_min": round(float(scores.min()), 4),
            "consistent_share": round(self.consistent_share, 3),
        }


def _null_magnitude(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How strong the median gradient gets by chance: its magnitude over deliberately misaligned crops.

    crops: N×h×w×6 aligned gradient crops. Each crop is rolled by its own random offset (at least a
    quarter of the crop), which destroys the alignment but keeps the scenes' statistics. Returns the
    h×w magnitude of that median; real watermark edges must stand out from it.
    """
    count, height, width = crops.shape[:3]
    rolled = np.empty_like(crops)
    for index in range(count):
        dy = int(rng.integers(height // 4, height - height // 4 + 1))
        dx = int(rng.integers(width // 4, width - width // 4 + 1))
        rolled[index] = np.roll(crops[index], (dy, dx), axis=(0, 1))
    return np.sqrt((np.median(rolled, axis=0) ** 2).sum(-1))


def _template_from_gradients(
    median_gradients: np.ndarray, null_magnitude: np.ndarray, config: ConsistentWatermarkConfig
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Support (bool, same frame) of the watermark whose median gradients are given, and its box.

    Edges are pixels of the median field stronger than chance (the 99.5th percentile of
    `null_magnitude`, see `_null_magnitude`) and than a fraction of the strongest edge; there must be
    clearly more of them than chance produces, or there is no watermark. The Poisson reconstruction
    from those edges alone is flat inside and outside the overlay, so its departure from the
    background fills the shapes (a ring stays a ring).
    """
    magnitude = np.sqrt((median_gradients**2).sum(-1))
    level = max(float(np.percentile(null_magnitude, 99.5)), config.edge_threshold * _robust_max(magnitude))
    edges = remove_small_components(magnitude > level, _MIN_EDGE_PIXELS)
    chance_edges = int(remove_small_components(null_magnitude > level, _MIN_EDGE_PIXELS).sum())
    if edges.sum() < max(_SIGNIFICANCE * chance_edges, 2 * _MIN_EDGE_PIXELS):
        return None
    # Let a stroke's edges include the pixel on each side before integrating.
    edge_zone = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    masked = median_gradients * edge_zone[..., None]
    reconstruction = np.stack(
        [poisson_reconstruct(masked[..., c], masked[..., 3 + c]) for c in range(3)], axis=-1
    )
    background = np.median(reconstruction[~edge_zone], axis=0) if (~edge_zone).any() else 0.0
    departure = np.sqrt(((reconstruction - background) ** 2).sum(-1))
    support = (departure > config.support_threshold * _robust_max(departure)) | edges
    support = cv2.morphologyEx(support.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
    box = _main_component_box(support.astype(np.float32) * (magnitude + departure), 0.5, merge_px=_TEMPLATE_MERGE_PX)
    if box is None:
        return None
    return support, box


class ConsistentWatermarkGenerator(BatchMixin):
    """Finds the watermark shared by a dataset (fit on a sample), then masks it per image."""

    method = "consistent"

    def __init__(self, config: ConsistentWatermarkConfig | None = None,
                 template: WatermarkTemplate | None = None) -> None:
        self.config = config or ConsistentWatermarkConfig()
        self.template = template
        self.report: FitReport | None = None
        self._matcher_of: tuple[WatermarkTemplate, _Matcher] | None = None

    @property
    def fitted(self) -> bool:
        return self.template is not None

    # ------------------------------------------------------------------------------------------ fit

    def fit(self, images: Iterable[np.ndarray]) -> FitReport:
        """Estimate the watermark from uint8 H×W×3 images that (mostly) carry it.

        Raises MaskGenerationError when fewer than 3 images are given or no consistent structure is
        found (the sample may not share a watermark).
        """
        sample = [check_image(image) for image in images]
        if len(sample) > self.config.max_fit_images:
            rng = np.random.default_rng(self.config.seed)
            sample = [sample[i] for i in sorted(rng.choice(len(sample), self.config.max_fit_images, replace=False))]
        if len(sample) < 3:
            raise MaskGenerationError(f"the consistent generator needs at least 3 images to fit, got {len(sample)}")
        gradients = [color_gradients(image) for image in sample]

        anchor, matcher = self._coarse_matcher(gradients)
        # Sharpen the alignment step by step: each sharper median needs the previous one's alignment.
        for blur in (matcher.blur / 2, FINE_BLUR):
            if blur < matcher.blur:
                matcher = self._sharper_matcher(gradients, matcher, blur)
        template: WatermarkTemplate | None = None
        for _ in range(1 + self.config.refine_iterations):
            placements = [_locate(grad, matcher, scales=self.config.scales) for grad in gradients]
            refined = self._estimate_template(gradients, placements, matcher.shape, anchor)
            if refined is None:
                break
            template = refined
            matcher = _Matcher.from_template(template)
        if template is None:
            raise MaskGenerationError("the watermark could not be reconstructed from the fit images")
        final = [_locate(grad, matcher, scales=self.config.scales) for grad in gradients]
        scores = [score for score, _, _, _ in final]
        if float(np.median(scores)) < self.config.min_match_score:
            raise MaskGenerationError(
                f"the fit images hardly match their own template (median score {np.median(scores):.2f} < "
                f"min_match_score {self.config.min_match_score}): they do not share a watermark"
            )
        consistent_share = _placement_consistency(final, gradients, anchor, template.shape)
        if consistent_share < _MIN_CONSISTENT_SHARE:
            # Any template matches *something* in every image; a watermark matches at the same place.
            raise MaskGenerationError(
                f"the template matches only {consistent_share:.0%} of the fit images at a consistent place: "
                "they do not share a watermark"
            )
        self.template = template
        self.report = FitReport(images=len(sample), anchor=anchor, template_shape=template.shape,
                                support_pixels=int(template.support.sum()), match_scores=[float(s) for s in scores],
                                consistent_share=consistent_share)
        log.info("consistent watermark: %s", self.report.as_dict())
        return self.report

    def _coarse_matcher(self, gradients: list[np.ndarray]) -> tuple[str, _Matcher]:
        """Pick the anchor frame whose blurred orientation median shows the most structure.

        Blurring by about the placement jitter lets a watermark that moves by a few pixels still add
        up in the median; the resulting template is only good enough to align the images.
        """
        frame = (min(g.shape[0] for g in gradients), min(g.shape[1] for g in gradients))
        blur = self.config.coarse_blur
        # Natural images favour horizontal and vertical edges; removing each image's mean orientation
        # keeps that bias from surviving the median as fake shared structure.
        fields = [field - field.mean(axis=(0, 1)) for field in (orientation_field(g, blur=blur) for g in gradients)]
        best: tuple[float, str, np.ndarray] | None = None
        seen_origins: set[tuple[tuple[int, int], ...]] = set()
        for anchor in self.config.anchors:
            origins = tuple(anchor_origin(f.shape[:2], frame, anchor) for f in fields)
            if origins in seen_origins:  # same-size images: several anchors are one and the same frame
                continue
            seen_origins.add(origins)
            median = np.median(
                np.stack([f[y : y + frame[0], x : x + frame[1]] for f, (y, x) in zip(fields, origins)]), axis=0
            )
            score = float(np.percentile(np.sqrt((median**2).sum(-1)), 99.9))
            if best is None or score > best[0]:
                best = (score, anchor, median)
        assert best is not None
        _, anchor, median = best
        strength = np.sqrt((median**2).sum(-1))
        box = _main_component_box(strength, _structure_threshold(strength), merge_px=6)
        if box is None:
            raise MaskGenerationError("no watermark shared by the fit images was found")
        if (box[2] - box[0]) * (box[3] - box[1]) > _MAX_TEMPLATE_SHARE * strength.size:
            raise MaskGenerationError(
                "no distinct watermark: structure shared by the fit images covers most of the frame "
                "(too few or too similar images?)"
            )
        y0, x0, y1, x1 = _pad_box(box, 8, strength.shape)
        return anchor, _Matcher(np.ascontiguousarray(median[y0:y1, x0:x1]), np.ones((y1 - y0, x1 - x0), bool), blur)

    def _sharper_matcher(self, gradients: list[np.ndarray], matcher: _Matcher, blur: float) -> _Matcher:
        """Re-estimate the orientation template at a smaller blur from crops aligned with `matcher`."""
        placements = [_locate(grad, matcher, scales=self.config.scales) for grad in gradients]
        crops = [_aligned_crop(orientation_field(gradients[index], blur=blur), y, x, scale, matcher.shape, 0)
                 for index, (_, y, x, scale) in self._best_placements(placements)]
        return _Matcher(np.ascontiguousarray(np.median(np.stack(crops), axis=0)), matcher.support, blur)

    @staticmethod
    def _best_placements(placements: list[Placement]) -> list[tuple[int, Placement]]:
        """(index, placement) of the best-matching three quarters (at least 3) of the fit images.

        Some images of a dataset may lack the watermark; their crops would only blur the median.
        """
        order = np.argsort([-placement[0] for placement in placements])
        keep = order[: max(3, (3 * len(order) + 3) // 4)]
        return [(int(index), placements[index]) for index in keep]

    def _estimate_template(self, gradients: list[np.ndarray], placements: list[Placement],
                           shape: tuple[int, int], anchor: str) -> WatermarkTemplate | None:
        """Median of signed gradients over crops aligned at `placements`, then edges → Poisson → support."""
        pad = max(_CONTEXT_MIN_PX, round(_CONTEXT_FRACTION * max(shape)))
        crops, offsets = [], []
        for index, (_, y, x, scale) in self._best_placements(placements):
            crops.append(_aligned_crop(gradients[index], y, x, scale, shape, pad))
            origin = anchor_origin(gradients[index].shape[:2], (0, 0), anchor)
            offsets.append((y - round(pad * scale) - origin[0], x - round(pad * scale) - origin[1]))
        stack = np.stack(crops)
        median = np.median(stack, axis=0)
        null_magnitude = _null_magnitude(stack, np.random.default_rng(self.config.seed))
        found = _template_from_gradients(median, null_magnitude, self.config)
        if found is None:
            return None
        support, box = found
        y0, x0, y1, x1 = _pad_box(box, 3, support.shape)
        median = np.ascontiguousarray(median[y0:y1, x0:x1])
        return WatermarkTemplate(
            gradients=median, support=np.ascontiguousarray(support[y0:y1, x0:x1]),
            orientation=orientation_field(median), anchor=anchor,
            offsets=np.array(offsets, np.int64).reshape(-1, 2) + np.array([y0, x0]),
        )

    # -------------------------------------------------------------------------------------- detect

    def _search_window(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """Region (y0, x0, y1, x1) of an image of `shape` to search; None = the whole image."""
        if self.config.search == "anywhere" or self.template is None:
            return None
        origin = anchor_origin(shape, (0, 0), self.template.anchor)
        offsets, (height, width), margin = self.template.offsets, self.template.shape, self.config.search_margin
        y0 = origin[0] + int(offsets[:, 0].min()) - margin
        x0 = origin[1] + int(offsets[:, 1].min()) - margin
        y1 = origin[0] + int(offsets[:, 0].max()) + round(height * max(self.config.scales)) + margin
        x1 = origin[1] + int(offsets[:, 1].max()) + round(width * max(self.config.scales)) + margin
        return max(y0, 0), max(x0, 0), min(y1, shape[0]), min(x1, shape[1])

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3. Hole = template support at its best match, or empty if the score is low."""
        check_image(image)
        if self.template is None:
            raise MaskGenerationError("the consistent generator must be fitted first (call fit(images))")
        matcher = self._matcher
        shape = image.shape[:2]
        score, y, x, scale = _locate(color_gradients(image), matcher, scales=self.config.scales,
                                     window=self._search_window(shape))
        details: dict[str, Any] = {"match_score": round(score, 4), "scale": scale, "anchor": self.template.anchor}
        if score < self.config.min_match_score:
            details["matched"] = False
            return MaskResult(hole=np.zeros(shape, bool), method=self.method, details=details)
        support = matcher.scaled(scale)[1]
        height, width = support.shape
        hole = np.zeros(shape, bool)
        hole[y : y + height, x : x + width] = support[: shape[0] - y, : shape[1] - x]
        details["matched"] = True
        return MaskResult(hole=hole, method=self.method, boxes=[[x, y, x + width, y + height]], scores=[score],
                          details=details)

    @property
    def _matcher(self) -> _Matcher:
        """The matcher of the current template, built once per template (it caches rescaled copies).

        Keyed on the template object because callers may assign `template` directly (a template fitted
        elsewhere and loaded in a worker).
        """
        assert self.template is not None
        if self._matcher_of is None or self._matcher_of[0] is not self.template:
            self._matcher_of = (self.template, _Matcher.from_template(self.template))
        return self._matcher_of[1]


def _placement_consistency(placements: list[Placement], gradients: list[np.ndarray],
                           anchor: str, shape: tuple[int, int]) -> float:
    """Share of images whose best match lies near the typical place (relative to the anchor).

    "Near" allows the placement jitter and the shift a ±10 % scale change causes at the far side of
    the template: max(12 px, 15 % of the template's larger side), per axis.
    """
    offsets = np.array([
        (y - anchor_origin(grad.shape[:2], (0, 0), anchor)[0], x - anchor_origin(grad.shape[:2], (0, 0), anchor)[1])
        for (_, y, x, _), grad in zip(placements, gradients)
    ], np.float64)
    tolerance = max(12.0, 0.15 * max(shape))
    distance = np.abs(offsets - np.median(offsets, axis=0)).max(axis=1)
    return float((distance <= tolerance).mean())


def _crop(array: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """array[y:y+height, x:x+width] with zeros where the window leaves the array."""
    out = np.zeros((height, width, *array.shape[2:]), array.dtype)
    sy0, sx0 = max(y, 0), max(x, 0)
    sy1, sx1 = min(y + height, array.shape[0]), min(x + width, array.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = array[sy0:sy1, sx0:sx1]
    return out


def _aligned_crop(array: np.ndarray, y: int, x: int, scale: float, shape: tuple[int, int], pad: int) -> np.ndarray:
    """The window of `array` (H×W×C) where a template of `shape` matched at (y, x) and `scale`, plus
    `pad` template pixels around it, resampled to the template's frame: (h + 2·pad)×(w + 2·pad)×C."""
    height, width = shape[0] + 2 * pad, shape[1] + 2 * pad
    if scale == 1.0:
        return _crop(array, y - pad, x - pad, height, width)
    window = _crop(array, y - round(pad * scale), x - round(pad * scale), round(height * scale), round(width * scale))
    resized = cv2.resize(window, (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(height, width, *array.shape[2:])


def _locate(gradients: np.ndarray, matcher: _Matcher, *, scales: tuple[float, ...],
            window: tuple[int, int, int, int] | None = None) -> Placement:
    """Best (score, y, x, scale) of the matcher's template in an image given by its H×W×6 gradients.

    (y, x) is the template's top-left in image coordinates; score is -1 when nothing fits the window.
    """
    y0, x0, y1, x1 = window or (0, 0, gradients.shape[0], gradients.shape[1])
    image_field = orientation_field(gradients[y0:y1, x0:x1], blur=matcher.blur)
    best = (-1.0, 0, 0, 1.0)
    for scale in scales:
        template = matcher.scaled(scale)[0]
        if image_field.shape[0] < template.shape[0] or image_field.shape[1] < template.shape[1]:
            continue
        _, peak, _, (px, py) = cv2.minMaxLoc(normalised_correlation(image_field, template))
        if peak > best[0]:
            best = (float(peak), y0 + py, x0 + px, scale)
    return best


@dataclass
class _Matcher:
    """A template orientation field (h×w×2, already blurred by `blur`) and its support.

    Images are blurred by the same `blur` before matching, so template and image fields compare like
    with like. Rescaled copies are cached per scale.
    """

    orientation: np.ndarray
    support: np.ndarray
    blur: float
    _cache: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_template(cls, template: WatermarkTemplate, blur: float = FINE_BLUR) -> _Matcher:
        return cls(cv2.GaussianBlur(template.orientation, (0, 0), blur), template.support, blur)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.support.shape)  # type: ignore[return-value]

    def scaled(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(orientation h'×w'×2, support h'×w') resized by `scale`."""
        if scale not in self._cache:
            if scale == 1.0:
                self._cache[scale] = (self.orientation, self.support)
            else:
                size = (max(1, round(self.shape[1] * scale)), max(1, round(self.shape[0] * scale)))
                orientation = cv2.resize(self.orientation, size, interpolation=cv2.INTER_LINEAR)
                support = cv2.resize(self.support.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
                self._cache[scale] = (orientation, support)
        return self._cache[scale]


def _pad_box(box: tuple[int, int, int, int], pad: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = box
    return max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, shape[0]), min(x1 + pad, shape[1])

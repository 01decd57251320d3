"""A watermark repeated across a dataset, found without knowing what it looks like.

Dekel et al., CVPR 2017, "On the Effectiveness of Visible Watermarks": over many images that carry
the same overlay, the per-pixel median of image gradients keeps the overlay's edges while the varying
scenes cancel. That needs the overlay aligned in every image, which real datasets do not give: sizes
and orientations differ, the logo is sized in proportion to the image, placed with jitter, and some
images lack it. So we

1. try frames (`frames.Frame`: an anchor — corner or centre — and a size normaliser — width, height,
   short/long side or pixels) and, in each, look for a patch near the anchor that recurs in most
   images within ± the jitter allowance (`consistent_seed`); the frame whose patch beats chance by the
   widest margin wins, and the patch's best matches give a first alignment of every image;
2. grow a template around the patch from the median of the aligned orientation fields, then
   re-align every image to it (position and scale, in a small window) and re-estimate, first at a
   coarse then at a finer frame resolution; images that match no better than chance (the same search
   where the watermark is not) count as without it and stay out of the medians;
3. from the median signed colour gradients of the aligned crops, keep the edges stronger than chance
   and Poisson-reconstruct the watermark's support (`watermark_support`);
4. estimate the watermark's matte α and colour W from the matched images (multi-image matting,
   `pipeline.watermark.estimate`) and keep it with the template;
5. per image, match the template at its expected place (or anywhere) over a range of scales; the mask
   is the support at the best match. Below the fitted threshold a faint watermark is still asked about
   at the best match and at the fit's size and offset: where undoing the matte there removes the
   gradient energy it should (`pipeline.watermark.restore.confirm_watermark`), the mask is the matte
   above `support_threshold` of its strength (`details.matched = "matte"`), else it is empty.

A watermark tiled over the whole picture (stock previews: one logo or word on a grid or diagonal
lattice shared by the dataset) is looked for first (`consistent_tiled`): when the images' aligned
median repeats on a 2-D lattice, the template is one tile and its `Lattice`, and every image's mask is
the tile repeated over the lattice (partial tiles at the border included); otherwise steps 1–5 run as
described.

The fit's result for downstream use (e.g. estimating the watermark's colour and opacity and inverting
it): `WatermarkTemplate` (median gradients, support, frame) and, per fit image, a `Placement` in
`FitReport.placements`; `ConsistentWatermarkGenerator.locate(image)` gives the placement in any image
and `WatermarkTemplate.crop(image, placement)` the image resampled onto the template's pixels.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import cv2
import numpy as np

from .base import BatchMixin, MaskGenerationError, MaskResult, check_image
from .consistent_seed import Seed, SeedSettings, find_seed, frame_fields
from .consistent_tiled import (Lattice, LatticeGuess, cell_grid, find_lattices, fit_cell, fold, instance_corners,
                               instance_tile, match_phase, periodic_orientation, refine_vectors)
from .fields import color_gradients, orientation_field
from .frames import ANCHORS, NORMALISERS, Frame, candidate_frames
from .watermark_support import main_component_box, null_magnitude, structure_threshold, support_from_gradients

if TYPE_CHECKING:
    from pipeline.watermark.matte import WatermarkMatte

log = logging.getLogger(__name__)

# Frame resolution (px of the normalising side) of the seed search and the coarse alignment.
_SEED_RESOLUTION = 160
# Gaussian sigma (px) of the orientation fields in matching: tolerates sub-pixel misplacement.
MATCH_BLUR = 1.0
# A seed patch must beat chance (its median correlation where the watermark is not) by this much.
_MIN_SEED_MARGIN = 0.12
# Seeds (best first) grown into coarse templates to choose the frame.
_SEEDS_GROWN = 10
# Frames (best first) taken to the final resolution until one gives a template its images match.
_FINE_FITS = 3
# An image carries the watermark when its match beats the fit images' chance level (95th percentile
# of their null scores) by this much, and `min_match_score` in any case.
_PRESENCE_MARGIN = 0.1
# ... and, when the watermarked images match far above chance, this share of the way from chance to
# their median score (see `_Alignment.threshold`).
_PRESENCE_SHARE = 0.4
# Frames whose coarse alignment is within this of the best count as equally good; of those, the one in
# which the watermark keeps the most constant size wins (see `_coarse_fit`).
_FRAME_QUALITY_TIE = 0.08
# A "watermark" covering more of the frame than this is the scenes' shared structure, not an overlay.
_MAX_TEMPLATE_SHARE = 0.6
# An image the template did not match is searched again at the fit images' own sizes and offsets, this
# share of the frame side around them; up to this many candidates, at least `_GEOMETRY_APART` of the frame
# side from each other (see `locate_at_fit_geometry`).
_GEOMETRY_MARGIN = 0.004
_GEOMETRY_CANDIDATES = 4
_GEOMETRY_APART = 0.006
# Tiled watermarks: the lattice is looked for in frames of this resolution, and the tile estimated at
# most at this one (many instances per image make up for the lower resolution; masks are drawn at the
# image's own pixels); this many lattice guesses (best first) are fitted and the best matching kept.
_TILED_DETECT_RESOLUTION = 256
_TILED_RESOLUTION = 640
_TILED_GUESSES = 2
# An image's lattice is searched ± this share of the frame side around the fitted one.
_TILED_PHASE_SEARCH = 0.01
# ... and scaled by up to ± this (tile sizes rounded to whole pixels by the tool that tiled them drift
# the lattice by a pixel per row or two), in this many steps.
_TILED_SCALE_SEARCH = 0.03
_TILED_SCALE_STEPS = 5
# The lowest tiled match score (`_tiled_match`) that counts as the watermark, whatever chance is.
_TILED_MIN_SCORE = 0.12


@dataclass(frozen=True)
class ConsistentWatermarkConfig:
    """Settings of the consistent-watermark generator.

    Attributes:
        max_fit_images: at most this many images (a seeded random sample) are used by `fit`.
        anchors: where the watermark may be attached (corners, centre); all are tried.
        normalisers: how its size may follow the image ("width", "height", "short", "long" side, or
            fixed "pixels"); all are tried, those that scale every fit image alike count once.
        max_jitter: placement jitter tolerated, ± this fraction of the image side.
        scale_range: per-image size changes tolerated, ± this fraction (on top of the normaliser).
        resolution: the template is estimated in a frame whose normalising side has at most this many
            pixels (images are resized to it; the masks are mapped back to each image's pixels).
        edge_threshold: edges of the median gradient field are pixels whose magnitude exceeds both
            chance (the same median over misaligned images) and this fraction of its robust maximum.
        support_threshold: the template support is where the Poisson-reconstructed watermark departs
            from its background by more than this fraction of its robust maximum.
        refine_iterations: gradient-template re-estimations at the final resolution.
        min_match_score: the lowest normalised correlation that can count as a match; the fitted
            threshold is higher when the fit images' chance level is (see `WatermarkTemplate`).
        min_present_share: at least this share of the fit images must carry the watermark.
        search: "expected" looks where the fit images had it (± `search_margin` of the frame side);
            "anywhere" searches the whole image.
        matte_check: estimate the watermark's matte with the template and let it confirm faint
            watermarks the template match misses (low opacity, JPEG, busy backgrounds). Off: an image
            below the match threshold gets an empty mask (also with a template that carries a matte:
            the job adds one for its inversion, which may then ask it).
        tiled: first look for a watermark tiled over the whole picture on one lattice (a grid or diagonal
            repeat of a logo or word, as on stock previews) and, when the fit images share one, mask every
            tile; off: only a single watermark is fitted.
        seed: seed of the fit sample and of the misalignments that measure chance.
    """

    max_fit_images: int = 64
    anchors: tuple[str, ...] = ANCHORS
    normalisers: tuple[str, ...] = NORMALISERS
    max_jitter: float = 0.06
    scale_range: float = 0.25
    resolution: int = 1024
    edge_threshold: float = 0.12
    support_threshold: float = 0.2
    refine_iterations: int = 2
    min_match_score: float = 0.3
    min_present_share: float = 0.5
    search: Literal["anywhere", "expected"] = "expected"
    search_margin: float = 0.03
    matte_check: bool = True
    tiled: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.anchors or set(self.anchors) - set(ANCHORS):
            raise ValueError(f"anchors must be a non-empty subset of {ANCHORS}, got {self.anchors}")
        if not self.normalisers or set(self.normalisers) - set(NORMALISERS):
            raise ValueError(f"normalisers must be a non-empty subset of {NORMALISERS}, got {self.normalisers}")
        if self.max_fit_images < 3:
            raise ValueError("max_fit_images must be >= 3 (a median needs several images)")
        if not 0 < self.edge_threshold < 1 or not 0 < self.support_threshold < 1:
            raise ValueError("edge_threshold and support_threshold must be in (0, 1)")
        if not 0 <= self.max_jitter <= 0.25 or not 0 <= self.scale_range <= 0.5:
            raise ValueError("max_jitter must be in [0, 0.25] and scale_range in [0, 0.5]")
        if not -1.0 <= self.min_match_score <= 1.0 or not 0 < self.min_present_share <= 1:
            raise ValueError("min_match_score must be in [-1, 1] and min_present_share in (0, 1]")
        if self.search not in ("anywhere", "expected"):
            raise ValueError(f"search must be 'anywhere' or 'expected', got {self.search!r}")
        if self.resolution < 64 or self.refine_iterations < 0 or self.search_margin < 0:
            raise ValueError("resolution must be >= 64, refine_iterations and search_margin >= 0")
        if not isinstance(self.matte_check, bool) or not isinstance(self.tiled, bool):
            raise ValueError(f"matte_check and tiled must be true or false, got {self.matte_check!r}, {self.tiled!r}")


class _FewMatched(MaskGenerationError):
    """A frame's template was reconstructed, but its match alone finds it in fewer than
    `min_present_share` of the fit images: the refusal, unless the matte confirms enough of the rest."""

    def __init__(self, message: str, template: WatermarkTemplate, report: FitReport, matched: np.ndarray) -> None:
        super().__init__(message)
        # matched: bool per fit image in the fit's own order (that of its sample), template match above threshold.
        self.template, self.report, self.matched = template, report, matched


# ---------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Placement:
    """Where the template lies in one image.

    score: normalised correlation of the best match; present: score ≥ the template's threshold.
    y, x: top-left of the template in image pixels; scale: image pixels per template pixel (so the
    watermark covers `scale · template.shape` pixels); frame_yx / frame_scale: the same in the frame.
    """

    score: float
    present: bool
    y: float
    x: float
    scale: float
    frame_yx: tuple[float, float]
    frame_scale: float

    def box(self, template_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) image-pixel box of the watermark."""
        height, width = template_shape
        return (round(self.x), round(self.y), round(self.x + width * self.scale), round(self.y + height * self.scale))

    def as_dict(self) -> dict[str, Any]:
        return {"score": round(self.score, 4), "present": self.present, "y": round(self.y, 2), "x": round(self.x, 2),
                "scale": round(self.scale, 4)}


@dataclass
class WatermarkTemplate:
    """What `fit` learns.

    gradients: float32 h×w×6 median colour gradients (gx R,G,B then gy R,G,B) of the watermark, in
        template pixels (the frame at `frame.resolution`).
    support: bool h×w, the pixels the watermark covers.
    orientation: float32 h×w×2 orientation field used for matching (see `orientation_field`).
    frame: anchor and size normaliser the watermark follows (see `frames.Frame`).
    offsets: float K×2 frame (y, x) of the template's top-left relative to the anchor in the fit images
        that carry it; scales: float K, their template-to-frame scales.
    match_threshold: score from which an image counts as carrying the watermark.
    matte: the watermark's matte α and colour W estimated from the fit images (None: not estimated, or
        too few images carried it); saved in the same `.npz` (`pipeline.watermark.matte`).
    lattice: for a watermark tiled over the picture, its tile and lattice (`consistent_tiled.Lattice`);
        gradients / support / orientation are then one instance of the tile. None: a single watermark.
    """

    gradients: np.ndarray
    support: np.ndarray
    orientation: np.ndarray
    frame: Frame
    offsets: np.ndarray
    scales: np.ndarray
    match_threshold: float
    matte: WatermarkMatte | None = None
    lattice: Lattice | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.support.shape)  # type: ignore[return-value]

    @property
    def anchor(self) -> str:
        return self.frame.anchor

    def support_mask(self, shape: tuple[int, int], placement: Placement) -> np.ndarray:
        """bool H×W: the support drawn at `placement` in an image of `shape` (empty if not present)."""
        hole = np.zeros(shape, bool)
        if not placement.present:
            return hole
        x0, y0, x1, y1 = placement.box(self.shape)
        if x1 <= x0 or y1 <= y0:
            return hole
        drawn = cv2.resize(self.support.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 0.5
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, shape[0]), min(x1, shape[1])
        if sy1 > sy0 and sx1 > sx0:
            hole[sy0:sy1, sx0:sx1] = drawn[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
        return hole

    def crop(self, image: np.ndarray, placement: Placement, pad: int = 0) -> np.ndarray:
        """float32 (h+2·pad)×(w+2·pad)×C: `image` around `placement` resampled onto template pixels.

        Pixels outside the image repeat its border. This is how fit crops are aligned; use it to
        bring every image's watermark into one frame (e.g. to estimate its colour and opacity).
        """
        height, width = self.shape[0] + 2 * pad, self.shape[1] + 2 * pad
        ys = placement.y + (np.arange(height, dtype=np.float32) - pad + 0.5) * placement.scale - 0.5
        xs = placement.x + (np.arange(width, dtype=np.float32) - pad + 0.5) * placement.scale - 0.5
        map_x, map_y = np.meshgrid(xs, ys)
        resampled = cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return resampled.reshape(height, width, *image.shape[2:])

    def save(self, path: str | Path | BinaryIO) -> None:
        """Write the template as .npz to a path or binary file object (fit once, apply in many workers)."""
        np.savez_compressed(
            path, gradients=self.gradients, support=self.support, orientation=self.orientation,
            anchor=np.array(self.frame.anchor), normaliser=np.array(self.frame.normaliser),
            frame_sizes=np.array([self.frame.resolution, self.frame.reference], np.float64),
            offsets=self.offsets, scales=self.scales, match_threshold=np.array(self.match_threshold),
            **(self.matte.arrays() if self.matte is not None else {}),
            **(self.lattice.arrays() if self.lattice is not None else {}),
        )

    @classmethod
    def load(cls, path: str | Path | BinaryIO) -> WatermarkTemplate:
        """Read a template written by `save`, with its matte if it has one (never unpickles: plain arrays)."""
        from pipeline.watermark.matte import WatermarkMatte

        with np.load(path, allow_pickle=False) as data:
            resolution, reference = (float(v) for v in data["frame_sizes"])
            return cls(gradients=data["gradients"], support=data["support"], orientation=data["orientation"],
                       frame=Frame(str(data["anchor"]), str(data["normaliser"]), resolution, reference),
                       offsets=data["offsets"], scales=data["scales"], match_threshold=float(data["match_threshold"]),
                       matte=WatermarkMatte.from_arrays(data), lattice=Lattice.from_arrays(data))


@dataclass
class FitReport:
    """Summary of a fit: images used, frame, template size, and per fit image (`indices` into the images
    given, ascending) its placement and score, and the share carrying it. matte_confirmed: when the
    template matched fewer than `min_present_share` of the fit images, how many of the others its
    matte confirmed to accept the fit (checked until that share was reached; 0 otherwise)."""

    images: int
    anchor: str
    normaliser: str
    template_shape: tuple[int, int]
    support_pixels: int
    match_threshold: float
    seed_margin: float
    indices: list[int] = field(default_factory=list)
    placements: list[Placement] = field(default_factory=list)
    matte_images: int = 0
    matte_error: str = ""
    lattice: dict[str, Any] | None = None
    matte_confirmed: int = 0

    @property
    def match_scores(self) -> list[float]:
        return [p.score for p in self.placements]

    @property
    def present_share(self) -> float:
        return float(np.mean([p.present for p in self.placements])) if self.placements else 0.0

    def as_dict(self) -> dict[str, Any]:
        scores = np.asarray(self.match_scores) if self.placements else np.zeros(1)
        return {
            "images": self.images, "anchor": self.anchor, "normaliser": self.normaliser,
            "template_shape": list(self.template_shape), "support_pixels": self.support_pixels,
            "match_threshold": round(self.match_threshold, 4), "seed_margin": round(self.seed_margin, 4),
            "match_score_median": round(float(np.median(scores)), 4),
            "match_score_min": round(float(scores.min()), 4),
            "present_share": round(self.present_share, 3),
            "matte_images": self.matte_images, **({"matte_error": self.matte_error} if self.matte_error else {}),
            **({"matte_confirmed": self.matte_confirmed} if self.matte_confirmed else {}),
            **({"lattice": self.lattice} if self.lattice is not None else {}),
        }


# ------------------------------------------------------------------------------------------ matching


def _crop_replicate(array: np.ndarray, y: int, x: int, height: int, width: int) -> np.ndarray:
    """array[y:y+height, x:x+width], repeating the border outside (no false edges at the image side)."""
    ys = np.clip(np.arange(y, y + height), 0, array.shape[0] - 1)
    xs = np.clip(np.arange(x, x + width), 0, array.shape[1] - 1)
    return array[ys][:, xs]


def _scale_grid(scale_range: float, steps: int) -> tuple[float, ...]:
    if scale_range == 0:
        return (1.0,)
    return tuple(float(s) for s in np.geomspace(1 / (1 + scale_range), 1 + scale_range, steps))


@dataclass
class _FramedImage:
    """An image resized to a frame, its anchor point there, and its 180°-rotated copy (for chance)."""

    resized: np.ndarray
    origin: tuple[int, int]
    shape: tuple[int, int]
    scale: float

    anchor: str

    @classmethod
    def of(cls, image: np.ndarray, frame: Frame) -> _FramedImage:
        return cls(frame.resize(image), frame.origin(image.shape[:2]), image.shape[:2], frame.scale(image.shape[:2]),
                   frame.anchor)

    def null_view(self) -> tuple[np.ndarray, tuple[int, int]]:
        """(image, origin) where a search at the watermark's frame window finds only chance: the image
        rotated by 180° (the opposite corner's scene), for the centre also shifted by a third of the width
        (a rotated centred logo would still be there)."""
        rotated = self.resized[::-1, ::-1]
        if self.anchor != "center":
            return rotated, self.origin
        return rotated, (self.origin[0], self.origin[1] + rotated.shape[1] // 3)

    def to_placement(self, score: float, present: bool, frame_yx: tuple[float, float], frame_scale: float) -> Placement:
        ratio_y = self.shape[0] / self.resized.shape[0]
        ratio_x = self.shape[1] / self.resized.shape[1]
        return Placement(score=score, present=present, y=(frame_yx[0] + self.origin[0]) * ratio_y,
                         x=(frame_yx[1] + self.origin[1]) * ratio_x, scale=frame_scale * (ratio_y + ratio_x) / 2,
                         frame_yx=frame_yx, frame_scale=frame_scale)


@dataclass
class _Matcher:
    """A template orientation field (h×w×2, blurred by `blur`) with rescaled copies cached per scale."""

    orientation: np.ndarray
    blur: float
    _cache: dict[float, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.orientation.shape[:2])  # type: ignore[return-value]

    def scaled(self, scale: float) -> np.ndarray:
        if scale not in self._cache:
            size = (max(2, round(self.shape[1] * scale)), max(2, round(self.shape[0] * scale)))
            resized = self.orientation if scale == 1.0 else cv2.resize(self.orientation, size, interpolation=cv2.INTER_LINEAR)
            self._cache[scale] = np.ascontiguousarray(resized)
        return self._cache[scale]


def _window_field(resized: np.ndarray, origin: tuple[int, int], matcher: _Matcher, window: tuple[int, int, int, int],
                  largest: float) -> np.ndarray:
    """Orientation field of the part of `resized` that templates (up to scale `largest`) with their top-left
    in `window` can cover; edges replicated where the window leaves the image."""
    y0, x0, y1, x1 = window
    height, width = matcher.shape
    region_h, region_w = y1 - y0 + round(height * largest) + 2, x1 - x0 + round(width * largest) + 2
    region = _crop_replicate(resized, origin[0] + y0, origin[1] + x0, region_h, region_w)
    return orientation_field(color_gradients(region), blur=matcher.blur)


def _match(resized: np.ndarray, origin: tuple[int, int], matcher: _Matcher, window: tuple[int, int, int, int],
           scales: tuple[float, ...]) -> tuple[float, int, int, float]:
    """Best (score, y, x, scale) of the template with its top-left in `window` = (y0, x0, y1, x1) frame
    coordinates (relative to `origin`) of the frame-scale image `resized`; score -1 if nothing fits."""
    y0, x0, y1, x1 = window
    field_ = _window_field(resized, origin, matcher, window, max(scales))
    best = (-1.0, y0, x0, 1.0)
    for scale in scales:
        template = matcher.scaled(scale)
        scores = cv2.matchTemplate(field_, template, cv2.TM_CCOEFF_NORMED)
        scores = scores[: y1 - y0 + 1, : x1 - x0 + 1]
        _, peak, _, (px, py) = cv2.minMaxLoc(scores)
        if np.isfinite(peak) and peak > best[0]:
            best = (float(peak), y0 + py, x0 + px, scale)
    return best


def _match_peaks(resized: np.ndarray, origin: tuple[int, int], matcher: _Matcher, window: tuple[int, int, int, int],
                 scales: tuple[float, ...], count: int, apart: float) -> list[tuple[float, int, int, float]]:
    """Up to `count` (score, y, x, scale) best template matches in `window` (as `_match`), best first, each
    at least `apart` frame pixels (in y or x) from the ones before it."""
    y0, x0, y1, x1 = window
    field_ = _window_field(resized, origin, matcher, window, max(scales))
    found: list[tuple[float, int, int, float]] = []
    for scale in scales:
        scores = cv2.matchTemplate(field_, matcher.scaled(scale), cv2.TM_CCOEFF_NORMED)[: y1 - y0 + 1, : x1 - x0 + 1]
        scores = np.where(np.isfinite(scores), scores, -1.0)
        found.extend((float(scores[py, px]), y0 + int(py), x0 + int(px), scale) for py, px in zip(*np.nonzero(scores > -1.0)))
    found.sort(key=lambda item: -item[0])
    peaks: list[tuple[float, int, int, float]] = []
    for candidate in found:
        if all(abs(candidate[1] - p[1]) >= apart or abs(candidate[2] - p[2]) >= apart for p in peaks):
            peaks.append(candidate)
            if len(peaks) == count:
                break
    return peaks


def _geometry_spread(alignment: _Alignment, resolution: float, shapes: list[tuple[int, int]]) -> float:
    """How much the watermark's size and place vary over the images in a frame: median absolute
    deviations of the position (in frame sides) and of log scale, plus the gap between the median log
    scales of landscape and portrait images. Over all images, not only those that match well: in a wrong
    frame the images of one orientation fit only at the edge of the search, or not at all, and must count
    (images without the watermark are a minority and add the same noise anywhere). The gap is what tells
    a width- from a long-side-normalised watermark when most images share one orientation."""
    def deviation(values: np.ndarray) -> float:
        return float(np.median(np.abs(values - np.median(values))))

    log_scale = np.log(alignment.scale)
    landscape = np.array([width >= height for height, width in shapes])
    gap = 0.0
    if min(landscape.sum(), (~landscape).sum()) >= 3:
        gap = abs(float(np.median(log_scale[landscape])) - float(np.median(log_scale[~landscape])))
    return deviation(log_scale) + gap + deviation(alignment.y / resolution) + deviation(alignment.x / resolution)


def _content_key(image: np.ndarray) -> bytes:
    """A digest of an image's shape and pixels: the order in which `fit` considers its images."""
    digest = hashlib.blake2b(str(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    return digest.digest()


def _window_around(y: float, x: float, radius: int) -> tuple[int, int, int, int]:
    return round(y) - radius, round(x) - radius, round(y) + radius, round(x) + radius


# ------------------------------------------------------------------------------------------- fitting


@dataclass
class _Alignment:
    """Per fit image: frame (y, x) of the template's top-left, its scale, match score and chance score."""

    y: np.ndarray
    x: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    null: np.ndarray

    def threshold(self, floor: float) -> float:
        """Score from which an image counts as carrying the watermark.

        At least chance (the 95th percentile of the chance scores) plus a margin; and where the images
        that clear that match far better than chance, a share of the way up to their median: a clean
        image that happens to resemble the watermark a little must not pass for one that carries it.
        """
        chance = float(np.percentile(self.null, 95))
        base = max(floor, chance + _PRESENCE_MARGIN)
        above = self.score[self.score >= base]
        if above.size == 0:
            return base
        return max(base, chance + _PRESENCE_SHARE * (float(np.median(above)) - chance))

    def rescaled(self, factor: float) -> _Alignment:
        return _Alignment(self.y * factor, self.x * factor, self.scale.copy(), self.score.copy(), self.null.copy())


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
        """Estimate the watermark from uint8 H×W×3 images of which most carry it (any sizes).

        Raises MaskGenerationError when fewer than 3 images are given or they share no watermark.
        """
        given = [check_image(image) for image in images]
        # The fit sees the images in an order set by their content, not by how they were listed: the
        # same images give the same template whatever their order (file names, shards, sources).
        indices = sorted(range(len(given)), key=lambda i: _content_key(given[i]))
        if len(indices) > self.config.max_fit_images:
            rng = np.random.default_rng(self.config.seed)
            chosen = sorted(int(i) for i in rng.choice(len(indices), self.config.max_fit_images, replace=False))
            indices = [indices[i] for i in chosen]
        sample = [given[i] for i in indices]
        if len(sample) < 3:
            raise MaskGenerationError(f"the consistent generator needs at least 3 images to fit, got {len(sample)}")
        shapes = [image.shape[:2] for image in sample]
        if self.config.tiled:
            tiled = self._tiled_fit(sample, shapes, indices)
            if tiled is not None:
                return tiled

        # The preferred frame first; when its watermark cannot be reconstructed or hardly matches its own
        # images, the next ones (a scene structure that recurs near one corner can win the coarse stage).
        candidates = self._coarse_fit(sample, shapes)
        refusal: MaskGenerationError | None = None
        few_matched: list[_FewMatched] = []
        for seed, _, matcher, alignment in candidates[:_FINE_FITS]:
            try:
                report = self._fine_fit(sample, shapes, indices, seed, matcher, alignment)
            except MaskGenerationError as exc:
                log.debug("consistent frame %s/%s refused: %s", seed.frame.anchor, seed.frame.normaliser, exc)
                refusal = refusal or exc
                if isinstance(exc, _FewMatched):
                    few_matched.append(exc)
                continue
            if self.config.matte_check:
                self._estimate_matte(sample, report)
            return report
        # A faint watermark (low opacity over busy scenes) can be matched by its template in only a few
        # of the images that carry it; the matte estimated from those few sees it in the others.
        if self.config.matte_check and few_matched:
            best = max(few_matched, key=lambda exc: (exc.report.present_share, -few_matched.index(exc)))
            previous = self.template, self.report
            report = self._matte_completed(sample, best)
            if report is not None:
                return report
            self.template, self.report = previous  # refused: as if this fit had not been tried
        assert refusal is not None
        raise refusal

    def _matte_completed(self, sample: list[np.ndarray], provisional: _FewMatched) -> FitReport | None:
        """The provisional fit accepted when its template's matches and the matte's confirmations of
        the other fit images (the same check as at mask time) together reach `min_present_share`;
        None (refused) when they do not, or no matte can be estimated from the matched images."""
        self.template, report = provisional.template, provisional.report
        self._estimate_matte(sample, report)
        if self.template.matte is None:
            return None
        matched = int(provisional.matched.sum())
        needed = int(np.ceil(self.config.min_present_share * len(sample))) - matched
        confirmed = 0
        for image, present in zip(sample, provisional.matched):
            if confirmed >= needed:
                break  # enough: the rest are checked when masked
            if not present and self(image).details.get("matched") == "matte":
                confirmed += 1
        share = (matched + confirmed) / len(sample)
        if confirmed < needed:
            log.info("consistent watermark refused: its template matches %d and its matte confirms %d of "
                     "%d fit images", matched, confirmed, len(sample))
            return None
        report.matte_confirmed = confirmed
        self.report = report
        log.info("consistent watermark (the template matched %d fit images, the matte confirmed %d more: "
                 "%.0f%%): %s", matched, confirmed, 100 * share, report.as_dict())
        return report

    def _tiled_fit(self, sample: list[np.ndarray], shapes: list[tuple[int, int]], indices: list[int]
                   ) -> FitReport | None:
        """The template of a watermark tiled over the picture, if the fit images share one (see
        `consistent_tiled`); None (and the single-watermark fit runs) when their aligned medians do not
        repeat on a lattice or its tile does not match most of them."""
        resolution = min(float(_TILED_DETECT_RESOLUTION), float(np.median([min(s) for s in shapes])))
        guesses = find_lattices(sample, candidate_frames(shapes, self.config.anchors, self.config.normalisers,
                                                         resolution))
        best: tuple[float, Frame, Lattice, _Alignment] | None = None
        for guess in guesses[:_TILED_GUESSES]:
            fitted = self._fit_lattice(sample, shapes, guess)
            if fitted is None:
                continue
            frame, lattice, alignment = fitted
            # The mean, not the median: a frame that fits only one orientation of the images must lose.
            quality = float(np.mean(alignment.score - alignment.null))
            log.debug("tiled guess %s/%s: strength %.3f, quality %.3f", frame.anchor, frame.normaliser,
                      guess.strength, quality)
            if best is None or quality > best[0]:
                best = (quality, frame, lattice, alignment)
        if best is None:
            return None
        _, frame, lattice, alignment = best
        # The tiled score counts only the tiles' edge zone, over the whole picture: lower than one logo's
        # for the same evidence, and its chance level (the lattice moved by half a cell) is steady.
        threshold = max(_TILED_MIN_SCORE, float(np.percentile(alignment.null, 95)) + _PRESENCE_MARGIN)
        present = alignment.score >= threshold
        if float(np.median(alignment.score)) < threshold or present.mean() < self.config.min_present_share:
            log.info("the fit images repeat on a lattice, but too few match its tile (%.0f%% above %.2f): "
                     "fitting a single watermark", 100 * present.mean(), threshold)
            return None
        gradients, support = instance_tile(lattice)
        corner = lattice.origin + lattice.half_cell() - np.array(support.shape) / 2
        self.template = WatermarkTemplate(
            gradients=gradients, support=support, orientation=orientation_field(gradients), frame=frame,
            offsets=corner[None, :].astype(np.float64), scales=np.ones(1), match_threshold=threshold,
            lattice=lattice,
        )
        framed = [_FramedImage.of(image, frame) for image in sample]
        # The instance nearest the anchor, where each image's lattice (scaled about the anchor) puts it.
        placements = [image.to_placement(float(s), bool(p), (float(corner[0] * k + y), float(corner[1] * k + x)),
                                         float(k))
                      for image, s, p, y, x, k in zip(framed, alignment.score, present, alignment.y, alignment.x,
                                                      alignment.scale)]
        self.report = FitReport(images=len(sample), anchor=frame.anchor, normaliser=frame.normaliser,
                                template_shape=support.shape, support_pixels=int(support.sum()),
                                match_threshold=threshold, seed_margin=0.0, indices=sorted(indices),
                                placements=[placements[k] for k in np.argsort(indices)],
                                lattice=lattice.as_dict(frame))
        if self.config.matte_check:
            # One tile's matte, from its instances in the fit images (pipeline.watermark.fit): the holes
            # of a semi-transparent tiled watermark are then inverted, not inpainted.
            self._estimate_matte(sample, self.report)
        log.info("consistent watermark (tiled): %s", self.report.as_dict())
        return self.report

    def _fit_lattice(self, sample: list[np.ndarray], shapes: list[tuple[int, int]], guess: LatticeGuess
                     ) -> tuple[Frame, Lattice, _Alignment] | None:
        """Tile and lattice at the final resolution in the frame of `guess`, and each fit image's match."""
        typical_size = float(np.percentile([guess.frame.normalising_size(s) for s in shapes], 90))
        resolution = max(min(float(self.config.resolution), float(_TILED_RESOLUTION), typical_size),
                         guess.frame.resolution)
        frame = guess.frame.with_resolution(resolution)
        vectors = refine_vectors(sample, frame, guess.vectors * resolution / guess.frame.resolution)
        framed = [_FramedImage.of(image, frame) for image in sample]
        grid = Lattice(vectors, np.zeros(2), np.zeros((*cell_grid(vectors), 6), np.float32),
                       np.zeros(cell_grid(vectors), bool))
        folded = [fold(color_gradients(image.resized), image.origin, grid) for image in framed]
        lattice = fit_cell(folded, vectors, self.config.edge_threshold, self.config.support_threshold,
                           self.config.seed)
        if lattice is None:
            return None
        matches = [self._tiled_match(image, lattice) for image in framed]
        return frame, lattice, _Alignment(
            y=np.array([m[1] for m in matches], np.float64), x=np.array([m[2] for m in matches], np.float64),
            scale=np.array([m[3] for m in matches]), score=np.array([m[0] for m in matches]),
            null=np.array([m[4] for m in matches]))

    def _tiled_match(self, framed: _FramedImage, lattice: Lattice) -> tuple[float, float, float, float, float]:
        """(score, dy, dx, scale, chance) of the tiled watermark in one frame-scale image: the best normalised
        correlation of the image's orientation field with the lattice drawn over it, scaled by up to
        ± `_TILED_SCALE_SEARCH` and shifted by up to ± `_TILED_PHASE_SEARCH` of the frame side; and the same
        at that scale with the lattice moved by half a cell (where the tiles are not: chance)."""
        radius = max(2, round(_TILED_PHASE_SEARCH * max(framed.resized.shape[:2])))
        shape = framed.resized.shape[:2]
        image_field = orientation_field(color_gradients(framed.resized), blur=MATCH_BLUR)
        best = (-1.0, 0, 0, 1.0)
        for scale in _scale_grid(_TILED_SCALE_SEARCH, _TILED_SCALE_STEPS):
            model = periodic_orientation(lattice.placed(0.0, 0.0, scale), shape, framed.origin, MATCH_BLUR)
            score, dy, dx = match_phase(image_field, model, radius)
            if score > best[0]:
                best = (score, dy, dx, scale)
        score, dy, dx, scale = best
        chance_lattice = lattice.placed(*(lattice.half_cell() * scale), scale)
        chance = match_phase(image_field, periodic_orientation(chance_lattice, shape, framed.origin, MATCH_BLUR),
                             radius)[0]
        return score, float(dy), float(dx), scale, chance

    def _tiled_mask(self, image: np.ndarray, framed: _FramedImage) -> MaskResult:
        """Every tile of the fitted lattice in one image (partial ones at its border included), or nothing
        when the tiled watermark does not match it better than the fit's threshold."""
        assert self.template is not None and self.template.lattice is not None
        template, lattice = self.template, self.template.lattice
        score, dy, dx, scale, chance = self._tiled_match(framed, lattice)
        present = score >= template.match_threshold
        height, width = image.shape[:2]
        ratio_y, ratio_x = framed.resized.shape[0] / height, framed.resized.shape[1] / width
        details: dict[str, Any] = {"match_score": round(score, 4), "chance_score": round(chance, 4),
                                   "anchor": template.anchor, "matched": bool(present), "tiled": True}
        if not present:
            return MaskResult(hole=np.zeros((height, width), bool), method=self.method, details=details)
        # Image pixel centres in frame coordinates (the frame is the resized image, anchor at `origin`).
        frame_y = (np.arange(height, dtype=np.float64) + 0.5) * ratio_y - 0.5 - framed.origin[0]
        frame_x = (np.arange(width, dtype=np.float64) + 0.5) * ratio_x - 0.5 - framed.origin[1]
        grid_y, grid_x = np.meshgrid(frame_y, frame_x, indexing="ij")
        placed = lattice.placed(dy, dx, scale)
        hole = placed.render(placed.cell_support.astype(np.float32), grid_y, grid_x) > 0.5
        instances = len(np.unique(placed.cell_indices(grid_y[hole], grid_x[hole]), axis=0)) if hole.any() else 0
        to_image = np.array([1 / ratio_y, 1 / ratio_x])
        frame_box = (-framed.origin[0], -framed.origin[1], framed.resized.shape[0] - framed.origin[0],
                     framed.resized.shape[1] - framed.origin[1])
        corners = instance_corners(placed, template.shape, scale, frame_box)
        # Each instance as the template's placement in image pixels (as `to_placement` converts one
        # logo's): what the watermark's matte is estimated from and inverted at, tile by tile.
        tiles = (corners + np.array(framed.origin)) * to_image
        details.update(tiles=np.round(tiles, 2).tolist(), tile_scale=round(scale * float(to_image.mean()), 4))
        details.update(instances=instances, scale=round(scale, 4), lattice={
            "vectors_px": np.round(placed.vectors * to_image, 2).tolist(),
            "origin_px": np.round((placed.origin + np.array(framed.origin)) * to_image, 2).tolist(),
            "shift_px": [round(dy / ratio_y, 2), round(dx / ratio_x, 2)]})
        return MaskResult(hole=hole, method=self.method, details=details)

    def _estimate_matte(self, sample: list[np.ndarray], report: FitReport) -> None:
        """The fitted template's matte from the fit images; a refusal (too few carry the watermark for
        matting) leaves the template without one and says why in the report."""
        from pipeline.watermark.estimate import MatteEstimationError
        from pipeline.watermark.fit import fit_matte

        assert self.template is not None
        try:
            fit = fit_matte(self, sample)
        except MatteEstimationError as exc:
            report.matte_error = str(exc)
            log.info("consistent watermark without a matte (faint ones stay unmatched): %s", exc)
            return
        self.template.matte = fit.matte
        report.matte_images = fit.images_used

    def _fine_fit(self, sample: list[np.ndarray], shapes: list[tuple[int, int]], indices: list[int], seed: Seed,
                  matcher: _Matcher, alignment: _Alignment) -> FitReport:
        """The template at the final resolution in the frame of `seed`, from its coarse alignment."""
        coarse_frame = seed.frame
        typical_size = float(np.percentile([coarse_frame.normalising_size(s) for s in shapes], 90))
        fine_resolution = min(float(self.config.resolution), typical_size)
        fine_resolution = max(fine_resolution, coarse_frame.resolution)
        factor = fine_resolution / coarse_frame.resolution
        frame = coarse_frame.with_resolution(fine_resolution)
        framed = [_FramedImage.of(image, frame) for image in sample]
        matcher = _Matcher(cv2.resize(matcher.orientation, (round(matcher.shape[1] * factor), round(matcher.shape[0] * factor))),
                           MATCH_BLUR)
        alignment = self._align(framed, matcher, alignment.rescaled(factor), fine_resolution, chance=False)
        template: WatermarkTemplate | None = None
        for _ in range(1 + self.config.refine_iterations):
            found = self._gradient_template(framed, matcher, alignment, frame)
            if found is None:
                break
            template, alignment = found
            matcher = _Matcher(cv2.GaussianBlur(template.orientation, (0, 0), MATCH_BLUR), MATCH_BLUR)
            alignment = self._align(framed, matcher, alignment, fine_resolution)
        if template is None:
            raise MaskGenerationError("the watermark could not be reconstructed from the fit images: they do not share a watermark")

        threshold = alignment.threshold(self.config.min_match_score)
        present = alignment.score >= threshold
        placements = [image.to_placement(float(s), bool(p), (float(y), float(x)), float(k))
                      for image, s, p, y, x, k in zip(framed, alignment.score, present, alignment.y, alignment.x,
                                                      alignment.scale)]
        median_score = float(np.median(alignment.score))
        refusal = (f"the fit images hardly match their own template (median score {median_score:.2f}, "
                   f"{present.mean():.0%} above the chance threshold {threshold:.2f}): they do not share a watermark")
        if present.sum() == 0:
            raise MaskGenerationError(refusal)
        fitted = WatermarkTemplate(
            gradients=template.gradients, support=template.support, orientation=template.orientation, frame=frame,
            offsets=np.stack([alignment.y[present], alignment.x[present]], axis=1).astype(np.float64),
            scales=alignment.scale[present].astype(np.float64), match_threshold=threshold,
        )
        report = FitReport(images=len(sample), anchor=frame.anchor, normaliser=frame.normaliser,
                           template_shape=template.shape, support_pixels=int(template.support.sum()),
                           match_threshold=threshold, seed_margin=seed.margin, indices=sorted(indices),
                           placements=[placements[k] for k in np.argsort(indices)])
        if median_score < threshold or present.mean() < self.config.min_present_share:
            raise _FewMatched(refusal, fitted, report, present)
        self.template, self.report = fitted, report
        log.info("consistent watermark: %s", self.report.as_dict())
        return self.report

    def _coarse_fit(self, sample: list[np.ndarray], shapes: list[tuple[int, int]]
                    ) -> list[tuple[Seed, list[_FramedImage], _Matcher, _Alignment]]:
        """Seed, coarse template and alignment in the frame that aligns the fit images best.

        Seeds are found in every frame (see `consistent_seed`); the few that beat chance by the widest
        margins are grown into coarse templates, and the one whose images then match it best above
        chance wins. A seed alone cannot tell a width-proportional logo from a height-proportional
        one well; the alignment, which searches only ± `scale_range`, can.
        """
        seeds, others = self._seeds(sample, shapes)
        grown: list[tuple[float, float, float, Seed, list[_FramedImage], _Matcher, _Alignment]] = []
        for seed in seeds:
            self._grow(sample, shapes, seed, grown)
        # A faint logo's seeds can beat chance by less than a scene structure recurring near other corners,
        # so its anchor may have had only its best seed grown: the two anchors that align best have each of
        # their other size normalisers tried too (a width-proportional logo fitted as height-proportional
        # is lost in every image of the other orientation).
        aligned_best = list(dict.fromkeys(item[3].frame.anchor for item in sorted(grown, key=lambda item: -item[0])))
        for seed in others:
            if seed.frame.anchor in aligned_best[:2]:
                self._grow(sample, shapes, seed, grown)
        if not grown:
            raise MaskGenerationError("no watermark shared by the fit images was found: they do not share a watermark")
        # Frames with another size normaliser or anchor often align almost as well: the ± `scale_range`
        # search absorbs a 1.5× size difference between landscape and portrait images, the position search
        # part of a shift. In the right frame the watermark has one size and one place in every image, so
        # among frames that align about equally well, the one where they vary least wins.
        best_quality = max(item[0] for item in grown)
        tied = [item for item in grown if item[0] >= best_quality - _FRAME_QUALITY_TIE]
        rest = [item for item in grown if item[0] < best_quality - _FRAME_QUALITY_TIE]
        if len(set(shapes)) == 1:  # one image size: every frame places the watermark alike, spreads are noise
            tied.sort(key=lambda item: (item[2], -item[0]))
        else:
            tied.sort(key=lambda item: (item[1], item[2], -item[0]))
        ranked = tied + sorted(rest, key=lambda item: -item[0])
        return [item[3:] for item in ranked]

    def _grow(self, sample: list[np.ndarray], shapes: list[tuple[int, int]], seed: Seed,
              grown: list[tuple[float, float, float, Seed, list[_FramedImage], _Matcher, _Alignment]]) -> None:
        """Grow `seed` into a coarse template and alignment; append (quality, spread, distance, seed, framed
        images, matcher, alignment) to `grown` (nothing when no template grows around it)."""
        framed = [_FramedImage.of(image, seed.frame) for image in sample]
        try:
            matcher, alignment = self._coarse_template(framed, seed)
        except MaskGenerationError:
            return
        for _ in range(2):
            alignment = self._align(framed, matcher, alignment, seed.frame.resolution, steps=5, chance=False)
            matcher, alignment = self._orientation_template(framed, matcher, alignment)
        alignment = self._align(framed, matcher, alignment, seed.frame.resolution, steps=5)
        # The mean, not the median: a frame that fits only one orientation of the images must lose.
        quality = float(np.mean(alignment.score - alignment.null))
        spread = _geometry_spread(alignment, seed.frame.resolution, shapes)
        log.debug("consistent seed %s/%s: margin %.3f, aligned %.3f, scale spread %.3f", seed.frame.anchor,
                  seed.frame.normaliser, seed.margin, quality, spread)
        # How far the watermark lies from the anchor: when every image has the same size all anchors fit
        # alike, and the watermark is reported against the one it is next to.
        distance = float(np.hypot(np.median(alignment.y) + matcher.shape[0] / 2,
                                  np.median(alignment.x) + matcher.shape[1] / 2)) / seed.frame.resolution
        grown.append((quality, round(spread, 4), distance, seed, framed, matcher, alignment))

    def _seeds(self, sample: list[np.ndarray], shapes: list[tuple[int, int]]) -> tuple[list[Seed], list[Seed]]:
        """The frames' seeds that beat chance (see `consistent_seed`): those to grow, best margin first,
        and the rest (other normalisers of the other anchors), best margin first."""
        resolution = min(float(_SEED_RESOLUTION), float(np.median([min(s) for s in shapes])))
        settings = SeedSettings.for_resolution(resolution, self.config.max_jitter)
        fields: dict[str, list[np.ndarray]] = {}
        seeds: list[Seed] = []
        for frame in candidate_frames(shapes, self.config.anchors, self.config.normalisers, resolution):
            if frame.normaliser not in fields:
                fields[frame.normaliser] = frame_fields(sample, frame, settings.blur)
            seed = find_seed(sample, fields[frame.normaliser], frame, settings)
            if seed is not None:
                seeds.append(seed)
        seeds.sort(key=lambda seed: -seed.margin)
        if not seeds or seeds[0].margin < _MIN_SEED_MARGIN:
            margin = seeds[0].margin if seeds else 0.0
            raise MaskGenerationError(
                f"no watermark shared by the fit images was found (no patch near a corner or the centre "
                f"recurs in them better than chance: margin {margin:.2f} < {_MIN_SEED_MARGIN}): "
                "they do not share a watermark"
            )
        # The two best anchors, each with every normaliser, and every other anchor's best seed, best margin
        # first: a seed's margin tells a corner from the centre only roughly (a centred logo also lies near
        # the corner of small images; a scene structure can recur near a corner).
        seeds = [seed for seed in seeds if seed.margin >= _MIN_SEED_MARGIN]
        anchors = list(dict.fromkeys(seed.frame.anchor for seed in seeds))
        best_per_anchor = [next(seed for seed in seeds if seed.frame.anchor == anchor) for anchor in anchors]
        others = [seed for seed in seeds if seed.frame.anchor in anchors[:2] and seed not in best_per_anchor]
        chosen = (best_per_anchor + others)[:_SEEDS_GROWN]
        return chosen, [seed for seed in seeds if all(seed is not taken for taken in chosen)]

    def _coarse_template(self, framed: list[_FramedImage], seed: Seed) -> tuple[_Matcher, _Alignment]:
        """Grow a template around the seed patch: the median orientation field of crops aligned on it."""
        resolution = seed.frame.resolution
        patch = SeedSettings.for_resolution(resolution, self.config.max_jitter).patch
        context = round(0.3 * resolution)
        scores = np.array([p[0] for p in seed.positions])
        present = scores >= seed.null + seed.margin / 2
        if present.sum() < 3:
            present = scores >= np.sort(scores)[-3]
        crops = []
        for image, (_, y, x), keep in zip(framed, seed.positions, present):
            if keep:
                region = _crop_replicate(image.resized, image.origin[0] + y - context, image.origin[1] + x - context,
                                         patch + 2 * context, patch + 2 * context)
                field_ = orientation_field(color_gradients(region), blur=MATCH_BLUR)
                crops.append(field_ - field_.mean(axis=(0, 1)))
        median = np.median(np.stack(crops), axis=0)
        strength = np.sqrt((median**2).sum(-1))
        box = main_component_box(strength, structure_threshold(strength), merge_px=max(3, round(0.04 * resolution)))
        if box is None:
            raise MaskGenerationError("no watermark shared by the fit images was found")
        by0, bx0, by1, bx1 = (max(box[0] - 2, 0), max(box[1] - 2, 0), min(box[2] + 2, strength.shape[0]),
                              min(box[3] + 2, strength.shape[1]))
        matcher = _Matcher(np.ascontiguousarray(median[by0:by1, bx0:bx1]), MATCH_BLUR)
        ys = np.array([p[1] - context + by0 for p in seed.positions], np.float64)
        xs = np.array([p[2] - context + bx0 for p in seed.positions], np.float64)
        count = len(framed)
        return matcher, _Alignment(ys, xs, np.ones(count), scores, np.full(count, seed.null))

    def _align(self, framed: list[_FramedImage], matcher: _Matcher, alignment: _Alignment,
               resolution: float, *, chance: bool = True, steps: int = 9) -> _Alignment:
        """Re-locate the template in each image near its current place, over `steps` scales; and, with
        `chance`, its best match where the watermark is not (else the previous chance scores stay)."""
        height, width = matcher.shape
        radius = max(3, round(0.03 * resolution + 0.1 * max(height, width)))
        scales = _scale_grid(self.config.scale_range, steps)
        typical_y, typical_x = float(np.median(alignment.y)), float(np.median(alignment.x))
        result = []
        for image, y, x, null, old_scale in zip(framed, alignment.y, alignment.x, alignment.null, alignment.scale):
            # Images far from the typical place (a seed mismatch, or no watermark) are searched there.
            if abs(y - typical_y) > 0.15 * resolution or abs(x - typical_x) > 0.15 * resolution:
                y, x = typical_y, typical_x
            centre_y = y + height * (old_scale - 1) / 2
            centre_x = x + width * (old_scale - 1) / 2
            window = _window_around(centre_y, centre_x, radius)
            found = _match(image.resized, image.origin, matcher, window, scales)
            result.append((found, _match(*image.null_view(), matcher, window, scales)[0] if chance else null))
        return _Alignment(
            y=np.array([f[1] for f, _ in result], np.float64), x=np.array([f[2] for f, _ in result], np.float64),
            scale=np.array([f[3] for f, _ in result], np.float64), score=np.array([f[0] for f, _ in result]),
            null=np.array([c for _, c in result]),
        )

    def _aligned_crops(self, framed: list[_FramedImage], alignment: _Alignment, shape: tuple[int, int], pad: int,
                       keep: np.ndarray) -> list[np.ndarray]:
        """uint8 crops (h+2·pad)×(w+2·pad)×3 of the kept images, resampled onto template pixels."""
        crops = []
        for image, y, x, scale, kept in zip(framed, alignment.y, alignment.x, alignment.scale, keep):
            if not kept:
                continue
            top, left = image.origin[0] + y - pad * scale, image.origin[1] + x - pad * scale
            size_h, size_w = round((shape[0] + 2 * pad) * scale), round((shape[1] + 2 * pad) * scale)
            region = _crop_replicate(image.resized, round(top), round(left), max(size_h, 2), max(size_w, 2))
            crops.append(cv2.resize(region, (shape[1] + 2 * pad, shape[0] + 2 * pad), interpolation=cv2.INTER_LINEAR))
        return crops

    def _kept(self, alignment: _Alignment) -> np.ndarray:
        """Images whose match beats chance; at least the best three."""
        keep = alignment.score >= alignment.threshold(self.config.min_match_score)
        if keep.sum() < 3:
            keep = alignment.score >= np.sort(alignment.score)[-3]
        return keep

    def _orientation_template(self, framed: list[_FramedImage], matcher: _Matcher,
                              alignment: _Alignment) -> tuple[_Matcher, _Alignment]:
        """Re-estimate the orientation template (it may grow by a quarter per side) from aligned crops."""
        shape = matcher.shape
        pad = max(4, round(0.25 * max(shape)))
        crops = self._aligned_crops(framed, alignment, shape, pad, self._kept(alignment))
        fields = [orientation_field(color_gradients(c), blur=MATCH_BLUR) for c in crops]
        median = np.median(np.stack([f - f.mean(axis=(0, 1)) for f in fields]), axis=0)
        strength = np.sqrt((median**2).sum(-1))
        box = main_component_box(strength, structure_threshold(strength), merge_px=max(3, round(0.3 * min(shape))))
        if box is None:
            return matcher, alignment
        y0, x0, y1, x1 = max(box[0] - 2, 0), max(box[1] - 2, 0), min(box[2] + 2, strength.shape[0]), min(box[3] + 2, strength.shape[1])
        if (y1 - y0) * (x1 - x0) > _MAX_TEMPLATE_SHARE * strength.size * 4:
            return matcher, alignment
        moved = _Alignment(alignment.y + (y0 - pad) * alignment.scale, alignment.x + (x0 - pad) * alignment.scale,
                           alignment.scale, alignment.score, alignment.null)
        return _Matcher(np.ascontiguousarray(median[y0:y1, x0:x1]), MATCH_BLUR), moved

    def _gradient_template(self, framed: list[_FramedImage], matcher: _Matcher, alignment: _Alignment,
                           frame: Frame) -> tuple[WatermarkTemplate, _Alignment] | None:
        """Median signed gradients of aligned crops → edges → Poisson → support, and its box."""
        shape = matcher.shape
        pad = max(4, round(0.15 * max(shape)))
        crops = self._aligned_crops(framed, alignment, shape, pad, self._kept(alignment))
        stack = np.stack([color_gradients(c) for c in crops])
        median = np.median(stack, axis=0)
        found = support_from_gradients(median, null_magnitude(stack, np.random.default_rng(self.config.seed)),
                                       self.config.edge_threshold, self.config.support_threshold)
        if found is None:
            return None
        support, box = found
        y0, x0, y1, x1 = max(box[0] - 3, 0), max(box[1] - 3, 0), min(box[2] + 3, support.shape[0]), min(box[3] + 3, support.shape[1])
        gradients = np.ascontiguousarray(median[y0:y1, x0:x1])
        template = WatermarkTemplate(
            gradients=gradients, support=np.ascontiguousarray(support[y0:y1, x0:x1]),
            orientation=orientation_field(gradients), frame=frame, offsets=np.zeros((0, 2)), scales=np.zeros(0),
            match_threshold=self.config.min_match_score,
        )
        moved = _Alignment(alignment.y + (y0 - pad) * alignment.scale, alignment.x + (x0 - pad) * alignment.scale,
                           alignment.scale, alignment.score, alignment.null)
        return template, moved

    # -------------------------------------------------------------------------------------- detect

    def _search_window(self, framed: _FramedImage) -> tuple[int, int, int, int]:
        """Frame window of template top-left positions to search in one image."""
        assert self.template is not None
        if self.config.search == "anywhere":
            height, width = framed.resized.shape[:2]
            return -framed.origin[0], -framed.origin[1], height - framed.origin[0], width - framed.origin[1]
        margin = round(self.config.search_margin * self.template.frame.resolution + 0.05 * max(self.template.shape))
        return self._offsets_window(margin)

    def _offsets_window(self, margin: int) -> tuple[int, int, int, int]:
        """Frame window (y0, x0, y1, x1) spanning the fit images' template offsets, grown by `margin` px."""
        assert self.template is not None
        offsets = self.template.offsets
        return (int(np.floor(offsets[:, 0].min())) - margin, int(np.floor(offsets[:, 1].min())) - margin,
                int(np.ceil(offsets[:, 0].max())) + margin, int(np.ceil(offsets[:, 1].max())) + margin)

    def _framed(self, image: np.ndarray) -> _FramedImage:
        """The checked uint8 H×W×3 image in the fitted template's frame."""
        check_image(image)
        if self.template is None:
            raise MaskGenerationError("the consistent generator must be fitted first (call fit(images))")
        return _FramedImage.of(image, self.template.frame)

    def locate(self, image: np.ndarray) -> Placement:
        """Where the fitted watermark lies in a uint8 H×W×3 image, and whether it is there at all."""
        return self._locate(self._framed(image))

    def _locate(self, framed: _FramedImage) -> Placement:
        assert self.template is not None
        score, y, x, scale = _match(framed.resized, framed.origin, self._matcher, self._search_window(framed),
                                    _scale_grid(self.config.scale_range, 11))
        return framed.to_placement(score, score >= self.template.match_threshold, (float(y), float(x)), scale)

    def locate_at_fit_geometry(self, image: np.ndarray, count: int = _GEOMETRY_CANDIDATES) -> list[Placement]:
        """Up to `count` separate best matches of the template at the size and place the fit images had
        it (their frame scales and top-left offsets, ± `_GEOMETRY_MARGIN` of the frame side), best first.

        For an image the template did not match: a faint watermark correlates too weakly with the
        template to win the full search, whose best match then often lies at a wrong scale or place; where
        the fit says the watermark keeps one size and one offset from its anchor, the candidates there are
        what the watermark's matte should be asked about (pipeline.watermark.restore). Scores are not
        thresholded here (`present` says whether one clears the template's threshold all the same).
        """
        return self._fit_geometry_matches(self._framed(image), count)

    def _fit_geometry_matches(self, framed: _FramedImage, count: int) -> list[Placement]:
        assert self.template is not None
        template = self.template
        if template.offsets.size == 0:
            return []
        low, high = float(np.min(template.scales)), float(np.max(template.scales))
        scales = (float(np.median(template.scales)),) if high / low < 1.01 else tuple(
            float(s) for s in np.geomspace(low, high, 3))
        margin = max(1, round(_GEOMETRY_MARGIN * template.frame.resolution))
        window = self._offsets_window(margin)
        apart = max(2.0, _GEOMETRY_APART * template.frame.resolution)
        peaks = _match_peaks(framed.resized, framed.origin, self._matcher, window, scales, count, apart)
        return [framed.to_placement(score, score >= template.match_threshold, (float(y), float(x)), scale)
                for score, y, x, scale in peaks]

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3. Hole = template support at its best match, or empty if the score is low."""
        framed = self._framed(image)  # once: the fit-geometry search below reuses it
        assert self.template is not None
        if self.template.lattice is not None:
            return self._tiled_mask(image, framed)
        placement = self._locate(framed)
        details: dict[str, Any] = {"match_score": round(placement.score, 4), "scale": round(placement.scale, 4),
                                   "anchor": self.template.anchor, "matched": placement.present}
        hole = self.template.support_mask(image.shape[:2], placement)
        if not placement.present:
            # Where the template fitted best all the same, and its best matches at the size and offset the
            # fit saw (a faint one's best match is often elsewhere): [y, x, scale] each, best first. The
            # watermark's matte is asked there (and, without one here, by the job's inversion step).
            geometry = self._fit_geometry_matches(framed, _GEOMETRY_CANDIDATES)
            details["best_yx"] = [round(placement.y, 2), round(placement.x, 2)]
            details["fit_geometry"] = [[round(c.y, 2), round(c.x, 2), round(c.scale, 4)] for c in geometry]
            if self.template.matte is not None and self.config.matte_check:
                return self._matte_confirmed(image, placement, geometry, details)
            return MaskResult(hole=hole, method=self.method, details=details)
        return MaskResult(hole=hole, method=self.method, boxes=[list(placement.box(self.template.shape))],
                          scores=[placement.score], details=details)

    def _matte_confirmed(self, image: np.ndarray, best: Placement, geometry: list[Placement],
                         details: dict[str, Any]) -> MaskResult:
        """The mask of an image the template did not match: the watermark's shape in its matte where
        undoing the matte at one of the candidates removes the watermark's gradient energy, else empty.
        `matte_checked` tells the job's inversion step the question was asked already."""
        from pipeline.watermark.matte import Placement as MattePlacement
        from pipeline.watermark.restore import confirm_watermark

        assert self.template is not None and self.template.matte is not None
        candidates = [MattePlacement(c.y, c.x, c.scale) for c in [best, *geometry]]
        confirmed = confirm_watermark(image, self.template.matte, candidates)
        details["matte_checked"] = True
        if confirmed is None:
            return MaskResult(hole=np.zeros(image.shape[:2], bool), method=self.method, details=details)
        found = confirmed.aligned.placement
        height, width = self.template.shape
        details.update(matched="matte", scale=round(found.scale, 4), matte_gain=round(confirmed.aligned.gain, 4),
                       opacity=round(found.opacity, 3))
        box = [round(found.x), round(found.y), round(found.x + width * found.scale), round(found.y + height * found.scale)]
        # The watermark's shape by the template's own rule (above `support_threshold` of its strength), not
        # the matte's footprint: that also holds the solve's noise and rim, pixels wider all round.
        hole = self.template.matte.support(found, image.shape[:2], self.config.support_threshold)
        return MaskResult(hole=hole, method=self.method, boxes=[box], scores=[best.score], details=details)

    @property
    def _matcher(self) -> _Matcher:
        """The matcher of the current template, built once per template (it caches rescaled copies).

        Keyed on the template object because callers may assign `template` directly (a template fitted
        elsewhere and loaded in a worker).
        """
        assert self.template is not None
        if self._matcher_of is None or self._matcher_of[0] is not self.template:
            orientation = cv2.GaussianBlur(self.template.orientation, (0, 0), MATCH_BLUR)
            self._matcher_of = (self.template, _Matcher(orientation, MATCH_BLUR))
        return self._matcher_of[1]

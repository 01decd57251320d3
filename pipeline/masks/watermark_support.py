"""From the median gradients of aligned watermark crops to the watermark's support (Dekel et al. 2017).

Edges of the median field that are stronger than chance are Poisson-integrated; the reconstruction
departs from its flat background inside the overlay, which fills shapes (a ring stays a ring).
"""
from __future__ import annotations

import cv2
import numpy as np

from .poisson import poisson_reconstruct
from .postprocess import remove_small_components

# Edge specks smaller than this are chance alignments of scene edges, not watermark outlines.
_MIN_EDGE_PIXELS = 4
# Aligned images must show this many times more edge pixels than misaligned ones to hold a watermark.
_SIGNIFICANCE = 4.0
# The coarse template keeps structure above this fraction of the strongest (see structure_threshold).
_COARSE_FRACTION = 0.35
# Parts of a watermark closer than this belong together (a logo's symbol and its word).
TEMPLATE_MERGE_PX = 12


def structure_threshold(strength: np.ndarray) -> float:
    """Level above which a median-field pixel is shared structure rather than residual scene noise.

    Both a fraction of the strongest structure and a margin over the noise (median + 5 robust standard
    deviations) must be exceeded: with few fit images the noise is high, with many the fraction rules.
    """
    median = float(np.median(strength))
    noise = 1.4826 * float(np.median(np.abs(strength - median)))
    return max(_COARSE_FRACTION * robust_max(strength), median + 5.0 * noise)


def robust_max(values: np.ndarray) -> float:
    """A maximum that ignores the few most extreme pixels (99.5th percentile of the non-zero values)."""
    nonzero = values[values > 0]
    return float(np.percentile(nonzero, 99.5)) if nonzero.size else 0.0


def main_component_box(strength: np.ndarray, threshold: float, merge_px: int) -> tuple[int, int, int, int] | None:
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




def null_magnitude(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
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


def support_from_gradients(
    median_gradients: np.ndarray, null_magnitude: np.ndarray, edge_threshold: float, support_threshold: float,
    largest_only: bool = True,
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Support (bool, same frame) of the watermark whose median gradients are given, and its box.

    Edges are pixels of the median field stronger than chance (the 99.5th percentile of
    `null_magnitude`, see `_null_magnitude`) and than a fraction of the strongest edge; there must be
    clearly more of them than chance produces, or there is no watermark. The Poisson reconstruction
    from those edges alone is flat inside and outside the overlay, so its departure from the
    background fills the shapes (a ring stays a ring). With `largest_only` the box is that of the
    strongest group of support pixels (one watermark), else the whole frame (a tiled one).
    """
    magnitude = np.sqrt((median_gradients**2).sum(-1))
    level = max(float(np.percentile(null_magnitude, 99.5)), edge_threshold * robust_max(magnitude))
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
    support = departure > support_threshold * robust_max(departure)
    support = cv2.morphologyEx(support.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
    if not largest_only:
        return support, (0, 0, support.shape[0], support.shape[1])
    box = main_component_box(support.astype(np.float32) * (magnitude + departure), 0.5, merge_px=TEMPLATE_MERGE_PX)
    if box is None:
        return None
    return support, box



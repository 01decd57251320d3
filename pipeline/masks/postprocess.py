"""Post-processing shared by every generator: drop specks, grow the hole, refuse absurd holes.

Order matters: small components are removed before dilation (so detector noise does not grow into
visible holes), and the hole-ratio guard looks at the final mask (the one the inpainter would get).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from .base import MaskResult


@dataclass(frozen=True)
class PostprocessConfig:
    """How to clean up a raw hole mask.

    Attributes:
        dilate_px: grow the hole by this Euclidean radius in pixels (0 = off).
        dilate_percent: grow the hole by this percentage of the image's shorter side instead
            (0 = off); for datasets of mixed resolution. Set at most one of the two.
        min_component_area: drop 8-connected hole components smaller than this many pixels (0 = off).
        max_hole_ratio: when the final hole covers more than this fraction of the image the result is
            flagged instead of being handed to the inpainter (1.0 = never flag).
    """

    dilate_px: int = 0
    dilate_percent: float = 0.0
    min_component_area: int = 0
    max_hole_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.dilate_px < 0 or self.dilate_percent < 0 or self.min_component_area < 0:
            raise ValueError("dilate_px, dilate_percent and min_component_area must be >= 0")
        if self.dilate_px and self.dilate_percent:
            raise ValueError("set either dilate_px or dilate_percent, not both")
        if self.dilate_percent > 50:
            raise ValueError(f"dilate_percent={self.dilate_percent} would cover the image; expected <= 50")
        if not 0.0 < self.max_hole_ratio <= 1.0:
            raise ValueError(f"max_hole_ratio must be in (0, 1], got {self.max_hole_ratio}")

    def dilation_radius(self, shape: tuple[int, int]) -> float:
        """Dilation radius in pixels for an image of `shape` (H, W)."""
        if self.dilate_percent:
            return self.dilate_percent / 100.0 * min(shape)
        return float(self.dilate_px)


def dilate_hole(hole: np.ndarray, radius: float) -> np.ndarray:
    """Every pixel within Euclidean distance `radius` of a hole pixel becomes hole.

    hole: bool H×W. Uses an exact Euclidean distance transform, so the cost does not grow with the
    radius and the footprint is a true disc (r=1 is the 4-neighbour cross, r=2 the 13-pixel disc).
    """
    if radius <= 0 or not hole.any() or hole.all():
        return hole.copy()
    # distanceTransform measures the distance of each non-zero pixel to the nearest zero pixel, so the
    # hole must be the zeros.
    distance = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= radius + 1e-6


def remove_small_components(hole: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected hole components with fewer than `min_area` pixels. hole: bool H×W."""
    if min_area <= 1 or not hole.any():
        return hole.copy()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hole.astype(np.uint8), connectivity=8)
    keep_label = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep_label[0] = False  # label 0 is the background
    return keep_label[labels]


def postprocess_hole(hole: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Remove small components, then dilate. hole: bool H×W → bool H×W."""
    cleaned = remove_small_components(hole, config.min_component_area)
    return dilate_hole(cleaned, config.dilation_radius(hole.shape))


def postprocess(result: MaskResult, config: PostprocessConfig) -> MaskResult:
    """Apply `config` to a generator's result; flags it when the final hole is too large."""
    hole = postprocess_hole(result.hole, config)
    ratio = float(hole.mean()) if hole.size else 0.0
    flag = result.flag
    if ratio > config.max_hole_ratio:
        flag = f"hole covers {ratio:.1%} of the image (max_hole_ratio {config.max_hole_ratio:.0%})"
    return dataclasses.replace(result, hole=hole, flag=flag)

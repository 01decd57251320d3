"""Where a watermark sits across images of different sizes: an anchor and a size normaliser.

Watermarking tools place a logo at an offset from a corner or the centre and size it in proportion to
the image (its width, height, short or long side) or in fixed pixels. A `Frame` undoes that: it
resizes an image so that the normalising dimension is `resolution` pixels and measures positions from
the anchor point, so the same logo lands at about the same frame position and size in every image.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ANCHORS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
NORMALISERS = ("width", "height", "short", "long", "pixels")


def anchor_point(shape: tuple[int, int], anchor: str) -> tuple[float, float]:
    """(y, x) of `anchor` in an image of `shape` (H, W): a corner, or the centre."""
    height, width = shape
    vertical, _, horizontal = anchor.partition("-")
    y = {"top": 0.0, "bottom": float(height)}.get(vertical, height / 2)
    x = {"left": 0.0, "right": float(width)}.get(horizontal, width / 2)
    return y, x


@dataclass(frozen=True)
class Frame:
    """Image → frame mapping: scale = resolution / normaliser(image); position relative to the anchor.

    reference: the normalising size for "pixels" (the same scale for every image, whatever its size).
    """

    anchor: str
    normaliser: str
    resolution: float
    reference: float = 1.0

    def __post_init__(self) -> None:
        if self.anchor not in ANCHORS or self.normaliser not in NORMALISERS:
            raise ValueError(f"unknown anchor {self.anchor!r} or normaliser {self.normaliser!r}")

    def normalising_size(self, shape: tuple[int, int]) -> float:
        """The image dimension (px) that becomes `resolution` frame pixels, for an image of `shape` (H, W)."""
        height, width = shape
        return float({"width": width, "height": height, "short": min(shape), "long": max(shape),
                      "pixels": self.reference}[self.normaliser])

    def scale(self, shape: tuple[int, int]) -> float:
        """Frame pixels per image pixel for an image of `shape` (H, W)."""
        return self.resolution / self.normalising_size(shape)

    def resized_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        scale = self.scale(shape)
        return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))

    def resize(self, image: np.ndarray) -> np.ndarray:
        """The image at frame scale (area-averaged when shrinking)."""
        height, width = self.resized_shape(image.shape[:2])
        if (height, width) == image.shape[:2]:
            return image
        shrinking = height < image.shape[0]
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)

    def origin(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Anchor point (y, x) in the resized image of an image of original `shape`: frame (0, 0)."""
        y, x = anchor_point(self.resized_shape(shape), self.anchor)
        return round(y), round(x)

    def to_image(self, shape: tuple[int, int], frame_yx: tuple[float, float]) -> tuple[float, float]:
        """Original-image (y, x) of a frame position, for an image of `shape`."""
        origin, scale = self.origin(shape), self.scale(shape)
        resized = self.resized_shape(shape)
        return ((frame_yx[0] + origin[0]) * shape[0] / resized[0], (frame_yx[1] + origin[1]) * shape[1] / resized[1])

    def with_resolution(self, resolution: float) -> Frame:
        return Frame(self.anchor, self.normaliser, resolution, self.reference * resolution / self.resolution)


def candidate_frames(shapes: list[tuple[int, int]], anchors: tuple[str, ...], normalisers: tuple[str, ...],
                     resolution: float) -> list[Frame]:
    """The distinct frames for images of `shapes`: normalisers that scale every image alike are one.

    For "pixels" the reference is the median long side, so the frame has about `resolution` px there.
    """
    reference = float(np.median([max(shape) for shape in shapes]))
    frames, seen = [], set()
    for normaliser in normalisers:
        frame = Frame("top-left", normaliser, resolution, reference)
        key = tuple(round(frame.scale(shape) / frame.scale(shapes[0]), 4) for shape in shapes)
        if key in seen:
            continue
        seen.add(key)
        frames.extend(Frame(anchor, normaliser, resolution, reference) for anchor in anchors)
    return frames

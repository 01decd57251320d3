"""The interface shared by every inpainting engine (MAT's `Inpainter`, the classical `ClassicalInpainter`):
uint8 images and bool hole masks in, restored images and a record of how they were made out."""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The compute precisions an engine can be asked for; "auto" is decided per device by matcore.precision.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class EngineInfo:
    """What produced a result, recorded next to it.

    Attributes:
        engine: "mat" or "opencv".
        model: what ran inside the engine, e.g. "MAT-512" or "telea r=3".
        device: "cpu", "cuda", "cuda:1", ...
        dtype: the compute precision: "float32", "bfloat16" or "float16" ("uint8" for OpenCV).
    """

    engine: str
    model: str
    device: str
    dtype: str

    def __str__(self) -> str:
        return f"{self.engine} ({self.model}, {self.device}, {self.dtype})"


@dataclass(frozen=True)
class InpaintResult:
    """One restored image.

    Attributes:
        image: uint8 H×W×3; pixels outside the hole are the input's, bit for bit.
        windows: model inputs spent on this image (0 when the hole mask was empty).
        seed: the image's seed as given.
        info: the engine, device and precision that produced it.
    """

    image: np.ndarray
    windows: int
    seed: int
    info: EngineInfo


class InpaintEngine(abc.ABC):
    """Fills holes in batches of images of any size; the same inputs and seeds give the same outputs."""

    @property
    @abc.abstractmethod
    def info(self) -> EngineInfo:
        """The engine, model, device and precision this engine runs with."""

    @abc.abstractmethod
    def inpaint_results(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray],
                        seeds: Sequence[int]) -> list[InpaintResult]:
        """Like `inpaint`, with what each image cost and how it was made."""

    def inpaint(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray],
                seeds: Sequence[int]) -> list[np.ndarray]:
        """Restore `images` (uint8 H×W×3, any size) where `holes` (bool H×W, True = remove) are set.

        One int seed per image. Returns uint8 H×W×3 images equal to the inputs outside the holes.
        """
        return [result.image for result in self.inpaint_results(images, holes, seeds)]


def check_batch(images: Sequence[np.ndarray], holes: Sequence[np.ndarray], seeds: Sequence[int]) -> list[int]:
    """Validate an engine's inputs; returns the seeds as Python ints.

    Holes must be bool: a uint8 0/255 array says nothing about which value means "remove", and guessing
    wrong would repaint everything that should be kept.
    """
    if not len(images) == len(holes) == len(seeds):
        raise ValueError(f"got {len(images)} images, {len(holes)} holes and {len(seeds)} seeds; one each per image")
    for index, (image, hole) in enumerate(zip(images, holes)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected a uint8 H×W×3 array, got "
                             f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"image {index}: empty image {image.shape}")
        if not isinstance(hole, np.ndarray) or hole.dtype != np.bool_:
            raise ValueError(f"hole {index}: expected a bool H×W array (True = remove), got "
                             f"{getattr(hole, 'dtype', type(hole).__name__)}")
        if hole.shape != image.shape[:2]:
            raise ValueError(f"hole {index}: shape {hole.shape} differs from its image's {image.shape[:2]}")
    checked = []
    for index, seed in enumerate(seeds):
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed {index}: expected an int, got {type(seed).__name__}")
        checked.append(int(seed))
    return checked

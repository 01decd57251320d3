"""What every mask generator returns and the interface it offers.

Convention: a *hole* mask is a bool H×W array where True marks pixels to remove (the opposite of
matcore's keep mask, 1 = keep). Generators return it together with the provenance a reviewer needs to
judge it: which method, which boxes with which scores, and method-specific details.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_type_hints, runtime_checkable

import numpy as np


class MaskGenerationError(RuntimeError):
    """A mask could not be produced for one image (missing mask file, no prompts, bad input)."""


class GeneratorSetupError(RuntimeError):
    """A generator cannot be built here (model file absent or corrupt); the message says how to fix it."""


@dataclass
class MaskResult:
    """A hole mask and where it came from.

    Attributes:
        hole: bool array H×W, True = pixel to remove.
        method: generator name ("text", "consistent", "given", "sam", ...).
        boxes: float32 array K×4 of (x0, y0, x1, y1) pixel boxes of what was found (may be empty).
        scores: float32 array K, one confidence per box (detector score, match score, SAM IoU estimate).
        details: JSON-serialisable method-specific facts (polygons, match location, checkpoint, ...).
        flag: set by post-processing when the row must not be inpainted blindly (e.g. the hole covers
            too much of the image); None when the mask is fit for use.
    """

    hole: np.ndarray
    method: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    details: dict[str, Any] = field(default_factory=dict)
    flag: str | None = None

    def __post_init__(self) -> None:
        hole = np.asarray(self.hole)
        if hole.ndim != 2:
            raise ValueError(f"hole mask must be H×W, got shape {hole.shape}")
        self.hole = hole.astype(bool, copy=False)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        if len(self.boxes) != len(self.scores):
            raise ValueError(f"{len(self.boxes)} boxes but {len(self.scores)} scores")

    @property
    def hole_ratio(self) -> float:
        """Fraction of the image marked as hole, in [0, 1]."""
        return float(self.hole.mean()) if self.hole.size else 0.0

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable summary for sidecars and dataset rows (everything but the mask itself)."""
        return {
            "method": self.method,
            "hole_ratio": round(self.hole_ratio, 6),
            "boxes": [[round(float(v), 2) for v in box] for box in self.boxes],
            "scores": [round(float(s), 4) for s in self.scores],
            "details": self.details,
            "flag": self.flag,
        }


def empty_result(shape: tuple[int, int], method: str, **details: Any) -> MaskResult:
    """A result with no hole (nothing found), keeping the reason in `details`."""
    return MaskResult(hole=np.zeros(shape, bool), method=method, details=dict(details))


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate the generator input: uint8 H×W×3 RGB. Returns it unchanged."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", None)
        raise ValueError(f"expected a uint8 H×W×3 RGB image, got shape {shape} dtype {dtype}")
    return image


@runtime_checkable
class MaskGenerator(Protocol):
    """Turns one image into a hole mask.

    `key` identifies the row (its relative path or dataset id); generators that read per-row inputs
    (given masks, SAM prompts) look them up by it, the others ignore it.
    """

    method: str

    def __call__(self, image: np.ndarray, *, key: str | None = None) -> MaskResult:
        """image: uint8 H×W×3 RGB. Returns a MaskResult whose hole is H×W."""
        ...


@runtime_checkable
class FittableMaskGenerator(MaskGenerator, Protocol):
    """A generator that must first see a sample of the dataset (e.g. the consistent-watermark one)."""

    @property
    def fitted(self) -> bool: ...

    def fit(self, images: Iterable[np.ndarray]) -> Any:
        """Estimate dataset-level state from uint8 H×W×3 images; returns a fit report."""
        ...


class BatchMixin:
    """Default `generate_batch` for generators that have no faster batched path."""

    def generate_batch(
        self, images: Sequence[np.ndarray], keys: Sequence[str | None] | None = None
    ) -> list[MaskResult]:
        keys = list(keys) if keys is not None else [None] * len(images)
        return [self(image, key=key) for image, key in zip(images, keys)]  # type: ignore[operator]


ConfigT = TypeVar("ConfigT")


def config_from_mapping(config_type: type[ConfigT], options: Mapping[str, Any] | ConfigT | None) -> ConfigT:
    """Build a config dataclass from a plain mapping (CLI, YAML, Prefect parameters).

    Unknown keys are rejected with the list of valid ones, `Path` fields accept strings, and the
    dataclass's own `__post_init__` validates values, so bad configuration fails here, at the edge.
    """
    if options is None:
        return config_type()
    if isinstance(options, config_type):
        return options
    if not isinstance(options, Mapping):
        raise TypeError(f"{config_type.__name__} expects a mapping or a {config_type.__name__}, got {type(options)}")
    fields = {f.name: f for f in dataclasses.fields(config_type)}  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown option(s) for {config_type.__name__}: {', '.join(unknown)} "
            f"(valid: {', '.join(sorted(fields))})"
        )
    hints = get_type_hints(config_type)
    values: dict[str, Any] = {}
    for name, value in options.items():
        hint = str(hints.get(name, ""))
        if value is not None and "Path" in hint and isinstance(value, str):
            value = Path(value).expanduser()
        elif isinstance(value, list) and "tuple" in hint:
            value = tuple(value)
        values[name] = value
    return config_type(**values)

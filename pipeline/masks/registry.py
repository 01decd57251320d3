"""Mask generators by name: their config type, how to build them, and their default post-processing.

Generators are imported lazily so that choosing `text` does not import torch and `sam` does not
import onnxruntime.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import MaskGenerator, config_from_mapping
from .postprocess import PostprocessConfig


@dataclass(frozen=True)
class GeneratorSpec:
    """How to build one named generator.

    module: module under `pipeline.masks` defining it; config_class / generator_class: names in that
    module (the generator takes the config as its only argument); needs_fit: whether `fit(images)` must
    run before use; postprocess: the defaults that worked best on the benchmark (`bench/watermarks.py`).
    """

    name: str
    module: str
    config_class: str
    generator_class: str
    needs_fit: bool
    postprocess: PostprocessConfig
    summary: str

    def load(self) -> tuple[type, type]:
        module = importlib.import_module(f"pipeline.masks.{self.module}")
        return getattr(module, self.config_class), getattr(module, self.generator_class)


MASK_GENERATORS: dict[str, GeneratorSpec] = {
    spec.name: spec
    for spec in (
        # Given masks keep the guard too: a mostly-white mask is usually an inverted convention.
        GeneratorSpec("given", "given", "GivenMaskConfig", "GivenMaskGenerator", False,
                      PostprocessConfig(), "mask files or a Parquet column"),
        GeneratorSpec("text", "text", "TextMaskConfig", "TextMaskGenerator", False,
                      PostprocessConfig(min_component_area=16),
                      "overlay text found by the PP-OCRv6 detector bundled in rapidocr, read by a recogniser; scene text kept"),
        GeneratorSpec("consistent", "consistent", "ConsistentWatermarkConfig", "ConsistentWatermarkGenerator",
                      True, PostprocessConfig(dilate_px=4),
                      "a watermark repeated across the dataset (Dekel et al., CVPR 2017)"),
        GeneratorSpec("sam", "sam", "SamMaskConfig", "SamMaskGenerator", False,
                      PostprocessConfig(dilate_px=3, min_component_area=16),
                      "Segment Anything from box/point prompts, COCO annotations, or another generator's boxes"),
    )
}


def _spec(method: str) -> GeneratorSpec:
    try:
        return MASK_GENERATORS[method]
    except KeyError:
        raise ValueError(f"unknown mask method {method!r} (known: {', '.join(MASK_GENERATORS)})") from None


def config_type(method: str) -> type:
    """The config dataclass of generator `method`."""
    return _spec(method).load()[0]


def make_config(method: str, options: Mapping[str, Any] | Any | None = None) -> Any:
    """Validated config of generator `method` from a mapping (unknown keys are errors) or a config."""
    return config_from_mapping(config_type(method), options)


def build_mask_generator(method: str, options: Mapping[str, Any] | Any | None = None) -> MaskGenerator:
    """A ready generator: `build_mask_generator("text", {"position": "corners"})`."""
    config_cls, generator_cls = _spec(method).load()
    return generator_cls(config_from_mapping(config_cls, options))


def default_postprocess(method: str) -> PostprocessConfig:
    """The post-processing `method` is benchmarked with (dilation, min area, hole-ratio guard)."""
    return _spec(method).postprocess

"""Automatic and given hole masks: what to remove from each image, and why.

    from pipeline.masks import build_mask_generator, default_postprocess, postprocess

    generator = build_mask_generator("text", {"position": "corners"})
    result = postprocess(generator(image_rgb_uint8), default_postprocess("text"))
    result.hole          # bool H×W, True = remove
    result.provenance()  # method, boxes, scores, details, flag (JSON-serialisable)

Generators: `given` (mask files / Parquet), `text` (ONNX text detector), `consistent` (a watermark
repeated across the dataset; call `fit(images)` first), `sam` (Segment Anything from prompts).
Heavy dependencies (onnxruntime, torch, segment-anything) load only with the generator that needs them.
"""
from __future__ import annotations

import importlib
from typing import Any

from .base import (
    BatchMixin,
    FittableMaskGenerator,
    GeneratorSetupError,
    MaskGenerationError,
    MaskGenerator,
    MaskResult,
    config_from_mapping,
    empty_result,
)
from .postprocess import PostprocessConfig, dilate_hole, postprocess, postprocess_hole, remove_small_components
from .registry import MASK_GENERATORS, GeneratorSpec, build_mask_generator, default_postprocess, make_config

# Public name → defining submodule, imported on first access (PEP 562) to keep `import pipeline.masks` light.
_LAZY = {
    "GivenMaskConfig": "given",
    "GivenMaskGenerator": "given",
    "TextMaskConfig": "text",
    "TextMaskGenerator": "text",
    "TextRegion": "text",
    "OverlayRule": "text_overlay",
    "DETECTOR_MODELS": "text_detector",
    "select_providers": "text_detector",
    "ConsistentWatermarkConfig": "consistent",
    "ConsistentWatermarkGenerator": "consistent",
    "WatermarkTemplate": "consistent",
    "FitReport": "consistent",
    "SamMaskConfig": "sam",
    "SamMaskGenerator": "sam",
    "SamPrompts": "sam_prompts",
    "read_prompt_table": "sam_prompts",
    "read_coco_prompts": "sam_prompts",
    "SamCheckpointError": "sam_loading",
    "SAM_CHECKPOINTS": "sam_loading",
    "SamArchitecture": "sam_loading",
    "load_sam": "sam_loading",
    "build_sam": "sam_loading",
    "published_architecture": "sam_loading",
    "resolve_sam_checkpoint": "sam_loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BatchMixin",
    "FittableMaskGenerator",
    "GeneratorSetupError",
    "GeneratorSpec",
    "MASK_GENERATORS",
    "MaskGenerationError",
    "MaskGenerator",
    "MaskResult",
    "PostprocessConfig",
    "build_mask_generator",
    "config_from_mapping",
    "default_postprocess",
    "dilate_hole",
    "empty_result",
    "make_config",
    "postprocess",
    "postprocess_hole",
    "remove_small_components",
    *_LAZY,
]

"""MAT (Mask-Aware Transformer, Li et al., CVPR 2022) for large-hole inpainting, in plain PyTorch.

Parameter names equal the official implementation's, so its published checkpoints load; outputs equal
the official ones for the same weights (see tests/matcore/test_parity.py).

Names are imported on first use (PEP 562): `matcore.classical` and `matcore.engine` do not need torch,
and a process that only runs the OpenCV engine (a CPU actor of the dataset job) should not pay the
~1.5 s and ~300 MB that importing torch costs.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name → module that defines it
_EXPORTS = {
    "ClassicalInpainter": "matcore.classical",
    "Discriminator": "matcore.discriminator",
    "EngineInfo": "matcore.engine",
    "InpaintEngine": "matcore.engine",
    "InpaintResult": "matcore.engine",
    "Generator": "matcore.generator",
    "sample_latents": "matcore.generator",
    "Inpainter": "matcore.inpainter",
    "load_generator": "matcore.loading",
    "build_engine": "matcore.build",
    "engine_registry": "matcore.build",
    "CheckpointRef": "matcore.pinned",
    "pin_checkpoint": "matcore.pinned",
    "fetch_checkpoint": "matcore.pinned",
}

__all__ = [
    "Generator", "Discriminator", "sample_latents", "load_generator",
    "Inpainter", "ClassicalInpainter", "InpaintEngine", "InpaintResult", "EngineInfo",
    "build_engine", "engine_registry", "CheckpointRef", "pin_checkpoint", "fetch_checkpoint",
]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from matcore.build import build_engine, engine_registry
    from matcore.classical import ClassicalInpainter
    from matcore.discriminator import Discriminator
    from matcore.engine import EngineInfo, InpaintEngine, InpaintResult
    from matcore.generator import Generator, sample_latents
    from matcore.inpainter import Inpainter
    from matcore.loading import load_generator
    from matcore.pinned import CheckpointRef, fetch_checkpoint, pin_checkpoint


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'matcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""MAT (Mask-Aware Transformer, Li et al., CVPR 2022) for large-hole inpainting, in plain PyTorch.

Parameter names equal the official implementation's, so its published checkpoints load; outputs equal
the official ones for the same weights (see tests/matcore/test_parity.py).
"""
from matcore.classical import ClassicalInpainter
from matcore.discriminator import Discriminator
from matcore.engine import EngineInfo, InpaintEngine, InpaintResult
from matcore.generator import Generator, sample_latents
from matcore.inpainter import Inpainter
from matcore.loading import load_generator

__all__ = [
    "Generator", "Discriminator", "sample_latents", "load_generator",
    "Inpainter", "ClassicalInpainter", "InpaintEngine", "InpaintResult", "EngineInfo",
]

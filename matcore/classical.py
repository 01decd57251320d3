"""A classical inpainting engine (OpenCV's Telea or Navier-Stokes diffusion) behind the engine interface.

It needs no weights and is fast, which makes it the baseline for benchmarks and a reasonable choice
for thin strokes and specks; it smears texture across larger holes. It is only ever used when asked for.
OpenCV is imported when the engine is built, so matcore itself does not need it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matcore.engine import EngineInfo, InpaintEngine, InpaintResult, check_batch

METHODS = ("telea", "ns")


class ClassicalInpainter(InpaintEngine):
    """OpenCV `cv2.inpaint` on whole images; seeds are accepted and ignored (the method is deterministic).

    Args:
        method: "telea" (fast marching, Telea 2004) or "ns" (Navier-Stokes, Bertalmio et al. 2001).
        radius: neighbourhood radius in pixels each filled pixel draws from.
    """

    def __init__(self, method: str = "telea", radius: int = 3) -> None:
        import cv2

        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if radius < 1:
            raise ValueError(f"radius must be >= 1, got {radius}")
        self._cv2 = cv2
        self._flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        self.method = method
        self.radius = int(radius)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(engine="opencv", model=f"{self.method} r={self.radius}", device="cpu", dtype="uint8")

    def inpaint_results(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray],
                        seeds: Sequence[int]) -> list[InpaintResult]:
        seeds = check_batch(images, holes, seeds)
        results = []
        for image, hole, seed in zip(images, holes, seeds):
            restored = image.copy()
            if hole.any():
                filled = self._cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8) * 255, self.radius,
                                           self._flag)
                restored[hole] = filled[hole]  # OpenCV keeps known pixels, but the contract is ours to keep
            results.append(InpaintResult(image=restored, windows=int(hole.any()), seed=seed, info=self.info))
        return results

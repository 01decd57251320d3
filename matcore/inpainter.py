"""MAT on real images: any size, batched, reproducible per image, exact outside the hole.

`Inpainter` owns the pre- and post-processing around the generator: it plans square windows around the
holes of each image (`matcore.windows`), maps each window to the model's R×R input (so windows of any
images have equal size and share fixed-size batches), and pastes back only the hole pixels each window
owns.

Reproducibility: a window's latents come from `window_seed(image_seed, window_index)`; the plan depends
on the hole mask alone, so an image's windows, seeds and outputs do not depend on which batch (or call)
it is processed in; only the float rounding of batched kernels differs (within 1 grey level in float32).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from matcore.engine import EngineInfo, InpaintEngine, InpaintResult, check_batch
from matcore.generator import sample_latents
from matcore.precision import TORCH_DTYPES
from matcore.windows import Strategy, Window, WindowConfig, WindowPlan, plan_windows

log = logging.getLogger(__name__)

DTYPES = TORCH_DTYPES  # name → torch dtype, from matcore.precision
_MASK64 = (1 << 64) - 1


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: a fixed bijection of 64-bit integers that spreads nearby inputs apart."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def window_seed(image_seed: int, window_index: int) -> int:
    """The seed of window `window_index` of an image with seed `image_seed`: a 63-bit integer.

    A stable hash rather than `image_seed + window_index`, so neighbouring image seeds do not share
    windows' latents (image 7's second window would otherwise equal image 8's first).
    """
    return _mix64(_mix64(image_seed & _MASK64) ^ window_index) >> 1


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
    return dtype


def _crop_mirrored(array: np.ndarray, window: Window) -> np.ndarray:
    """The window's side×side square of `array` (H×W or H×W×C); where it overhangs the image, the image
    is mirrored (edge pixel repeated) so the model sees plausible surroundings instead of a flat border."""
    height, width = array.shape[:2]
    y0, y1, x0, x1 = window.image_box(height, width)
    inside = array[y0:y1, x0:x1]
    pad_y = (y0 - window.top, window.top + window.side - y1)
    pad_x = (x0 - window.left, window.left + window.side - x1)
    if pad_y == (0, 0) and pad_x == (0, 0):
        return inside
    return np.pad(inside, (pad_y, pad_x) + ((0, 0),) * (array.ndim - 2), mode="symmetric")


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → uint8, the inverse of `u8 / 127.5 - 1`."""
    return ((pixels + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


class Inpainter(InpaintEngine):
    """Fills holes in uint8 images of any size with a MAT generator.

    Args:
        generator: a `matcore.Generator` (or anything with its forward and `img_resolution`); it is moved
            to `device` and put in eval mode.
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        dtype: compute precision, float32 / bfloat16 / float16 (or their names). Lower precisions run
            under autocast, which keeps precision-sensitive ops (softmax, norms) in float32; weights stay
            float32 and the resize, blend and rounding back to uint8 are done in float32.
        strategy, context, margin: how windows are placed around holes (see `matcore.windows.WindowConfig`).
        batch_size: windows per generator forward; windows of different images share a batch.
        truncation_psi: style truncation of the mapping network (1.0 = none, the official default).
    """

    def __init__(self, generator: nn.Module, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, strategy: Strategy = "auto", context: float = 1.5,
                 margin: int | None = None, batch_size: int = 4, truncation_psi: float = 1.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.dtype = _as_dtype(dtype)
        self.window_config = WindowConfig(strategy=strategy, context=context, margin=margin)
        self.resolution = int(generator.img_resolution)
        self.window_config.margin_for(self.resolution)  # validate now, not at the first image
        self.batch_size = batch_size
        self.truncation_psi = truncation_psi
        self.generator = generator.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cpu" and self.dtype == torch.float16:
            log.warning("float16 on CPU is emulated and far slower than float32; use bfloat16 for reduced precision")

    @property
    def info(self) -> EngineInfo:
        dtype_name = next(name for name, value in DTYPES.items() if value == self.dtype)
        return EngineInfo(engine="mat", model=f"MAT-{self.resolution}", device=str(self.device), dtype=dtype_name)

    def plan(self, hole: np.ndarray) -> WindowPlan:
        """The windows this inpainter would run for one bool H×W hole mask."""
        return plan_windows(hole, self.resolution, self.window_config)

    def inpaint_results(self, images: Sequence[np.ndarray], holes: Sequence[np.ndarray],
                        seeds: Sequence[int]) -> list[InpaintResult]:
        seeds = check_batch(images, holes, seeds)
        plans = [self.plan(hole) for hole in holes]
        restored = [image.copy() for image in images]
        jobs = [(image_index, window_index) for image_index, plan in enumerate(plans)
                for window_index in range(len(plan.windows))]
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            inputs = [self._window_input(images[i], holes[i], plans[i].windows[w]) for i, w in batch]
            outputs = self._forward(
                torch.stack([pixels for pixels, _ in inputs]),
                torch.stack([keep for _, keep in inputs]),
                [window_seed(seeds[i], w) for i, w in batch],
            )
            for (image_index, window_index), output in zip(batch, outputs):
                self._paste(restored[image_index], plans[image_index], window_index, output)
        info = self.info
        return [InpaintResult(image=image, windows=len(plan.windows), seed=seed, info=info)
                for image, plan, seed in zip(restored, plans, seeds)]

    def _window_input(self, image: np.ndarray, hole: np.ndarray, window: Window) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's view of one window: pixels 3×R×R in [-1, 1] and keep mask 1×R×R (1 keep, 0 hole)."""
        pixels = torch.from_numpy(np.ascontiguousarray(_crop_mirrored(image, window))).to(self.device)
        pixels = pixels.permute(2, 0, 1).float() / 127.5 - 1
        hole = torch.from_numpy(np.ascontiguousarray(_crop_mirrored(hole, window))).to(self.device)
        hole = hole[None].float()
        if window.side == self.resolution:
            return pixels, 1 - hole
        # Downscale with a hole-aware average: known pixels next to the hole must not pick up the colour of
        # what is being removed. A model pixel is a hole as soon as any of its image pixels is.
        keep = 1 - hole
        size = (self.resolution, self.resolution)
        weighted = F.interpolate((pixels * keep)[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        weight = F.interpolate(keep[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        pixels = torch.where(weight > 1e-6, weighted / weight.clamp_min(1e-6), torch.zeros_like(weighted))[0]
        hole = F.adaptive_max_pool2d(hole[None], self.resolution)[0]
        return pixels.clamp_(-1, 1), 1 - hole

    def _forward(self, pixels: torch.Tensor, keep: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Generator outputs N×3×R×R, float32, for inputs N×3×R×R / N×1×R×R and one seed per window."""
        z, k1, k2 = (t.to(self.device) for t in sample_latents(seeds))
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.dtype,
                                                    enabled=self.dtype != torch.float32):
            output = self.generator(pixels, keep, z, truncation_psi=self.truncation_psi, noise_mode="const",
                                    keep_maps=(k1, k2))
        output = output.float()
        if not torch.isfinite(output).all():
            raise FloatingPointError(f"MAT produced non-finite values in {self.info.dtype}; run it in float32")
        return output

    def _paste(self, restored: np.ndarray, plan: WindowPlan, window_index: int, output: torch.Tensor) -> None:
        """Write the window's output (3×R×R) into `restored` at the hole pixels the window owns."""
        window = plan.windows[window_index]
        # The pixels a window owns lie inside it: look there only, not over the whole image.
        box_y0, box_y1, box_x0, box_x1 = window.image_box(*plan.shape)
        owned = plan.owner[box_y0:box_y1, box_x0:box_x1] == window_index
        rows, cols = np.flatnonzero(owned.any(axis=1)), np.flatnonzero(owned.any(axis=0))
        owned = owned[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        y0, y1 = box_y0 + int(rows[0]), box_y0 + int(rows[-1]) + 1
        x0, x1 = box_x0 + int(cols[0]), box_x0 + int(cols[-1]) + 1
        if window.side == self.resolution:
            region = output[:, y0 - window.top:y1 - window.top, x0 - window.left:x1 - window.left]
        else:
            region = _upsample_region(output, window, y0, y1, x0, x1)
        pixels = _to_uint8(region).permute(1, 2, 0).cpu().numpy()
        restored[y0:y1, x0:x1][owned] = pixels[owned]


def _upsample_region(output: torch.Tensor, window: Window, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """Bilinear upsampling of the window's output (3×R×R) evaluated only on image rows [y0, y1) and
    columns [x0, x1), so a large window costs memory in proportion to its hole, not its side."""
    def axis(start: int, stop: int, origin: int) -> torch.Tensor:
        # Pixel centres in the window's normalised [-1, 1] frame (align_corners=False convention).
        centres = torch.arange(start - origin, stop - origin, device=output.device, dtype=torch.float32) + 0.5
        return centres / window.side * 2 - 1

    grid_y, grid_x = torch.meshgrid(axis(y0, y1, window.top), axis(x0, x1, window.left), indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1)[None]
    return F.grid_sample(output[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]

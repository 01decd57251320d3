"""FIR resampling and resampling convolutions (the StyleGAN2 [1,3,3,1] low-pass scheme) in plain PyTorch.

MAT's layers up/downsample with a 4x4 binomial filter around their convolutions. The padding rules below
reproduce the official arithmetic exactly, which is what keeps our outputs equal to the official ones.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

Padding = tuple[int, int, int, int]  # x-before, x-after, y-before, y-after


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass taps -> normalised 2-D filter (sums to 1), float32."""
    t = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def _depthwise_fir(x: torch.Tensor, f: torch.Tensor, gain: float, stride: int = 1) -> torch.Tensor:
    channels = x.shape[1]
    # Filters here are symmetric, but flip anyway so that this is a true convolution for any taps.
    kernel = (f * (gain ** (f.ndim / 2))).to(x.dtype).flip([0, 1])
    kernel = kernel[None, None].expand(channels, 1, *kernel.shape)
    return F.conv2d(x, kernel, stride=stride, groups=channels)


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: Padding = (0, 0, 0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Zero-insert upsample by `up`, pad (negative = crop), FIR-filter with `f`, keep every `down`-th sample."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    px0, px1, py0, py1 = padding
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    # Downsampling by striding the filter equals filtering then dropping samples, at a fraction of the cost.
    return _depthwise_fir(x, f, gain, stride=down)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with the FIR filter; output is exactly `up` times larger."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> torch.Tensor:
    """2-D correlation with `w` combined with FIR up- or downsampling (MAT uses at most one of the two).

    The order of operations follows the official implementation: downsampling filters before a strided
    convolution, upsampling uses a transposed convolution followed by the filter.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and downsampling together are not used by MAT")
    out_channels, in_per_group, kh, kw = w.shape
    fw = f.shape[-1]
    p0 = p1 = padding
    if up > 1:
        p0 += (fw + up - 1) // 2
        p1 += (fw - up) // 2
    if down > 1:
        p0 += (fw - down + 1) // 2
        p1 += (fw - down) // 2

    if down > 1:
        if kw == 1 and kh == 1:
            x = upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1))
            return F.conv2d(x, w, groups=groups)
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, stride=down, groups=groups)

    if up > 1:
        if kw == 1 and kh == 1:
            x = F.conv2d(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)
        # Transposed convolution needs the weight as (in, out/groups, kh, kw) and spatially flipped.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        wt = wt.flip([2, 3])
        p0 -= kw - 1
        p1 -= kw - up
        pt = max(min(-p0, -p1), 0)
        x = F.conv_transpose2d(x, wt, stride=up, padding=pt, groups=groups)
        q0, q1 = p0 + pt, p1 + pt
        return upfirdn2d(x, f, padding=(q0, q1, q0, q1), gain=up * up)

    return F.conv2d(x, w, padding=padding, groups=groups)

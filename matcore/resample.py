"""FIR resampling and resampling convolutions (the StyleGAN2 [1,3,3,1] low-pass scheme) in plain PyTorch.

MAT's layers up/downsample with a 4x4 binomial filter around their convolutions. The padding rules below
reproduce the official arithmetic exactly, which is what keeps our outputs equal to the official ones.

Speed notes (measured in bench/NOTES.md): the filter runs as one depthwise convolution whose padding is
handed to the convolution itself (an explicit `F.pad` first would allocate and fault in a whole
full-resolution copy), upsampling by zero insertion is a depthwise transposed convolution, and a layer's
bias rides along in whichever convolution runs last. The filter is *not* folded into the 3x3 weights:
that composition is exact but turns each 3x3 tap set into 6x6 (4x the multiply-adds of the main
convolution), which costs far more than the cheap depthwise pass it saves.
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


def _depthwise_kernel(f: torch.Tensor, channels: int, gain: float, dtype: torch.dtype, flip: bool) -> torch.Tensor:
    kernel = f * (gain ** (f.ndim / 2))
    if flip:
        kernel = kernel.flip([0, 1])
    return kernel.to(dtype)[None, None].expand(channels, 1, *kernel.shape)


def _split_padding(padding: Padding) -> tuple[Padding, tuple[int, int] | None]:
    """Split a padding into the part an explicit pad/crop must do and the symmetric part conv can take."""
    px0, px1, py0, py1 = padding
    if px0 == px1 >= 0 and py0 == py1 >= 0:
        return (0, 0, 0, 0), (py0, px0)
    return padding, None


def _pad_or_crop(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    px0, px1, py0, py1 = padding
    if any(padding):
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    return x


def filter2d(x: torch.Tensor, f: torch.Tensor, padding: Padding = (0, 0, 0, 0), gain: float = 1.0,
             down: int = 1, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Pad (negative = crop), convolve every channel with `f`, keep every `down`-th sample, add `bias`."""
    rest, conv_padding = _split_padding(padding)
    x = _pad_or_crop(x, rest)
    # Filters here are symmetric, but flip anyway so that this is a true convolution for any taps.
    kernel = _depthwise_kernel(f, x.shape[1], gain, x.dtype, flip=True)
    return F.conv2d(x, kernel, bias=bias, stride=down, padding=conv_padding or 0, groups=x.shape[1])


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, padding: Padding = (0, 0, 0, 0), gain: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Zero-insert upsample by `up`, pad (negative = crop), FIR-filter with `f`, keep every `down`-th sample."""
    if up == 1:
        # Downsampling by striding the filter equals filtering then dropping samples, at a fraction of the cost.
        return filter2d(x, f, padding, gain, down=down, bias=bias)
    if down != 1:
        raise ValueError("upfirdn2d: up- and downsampling together are not used by MAT")
    # Zero insertion followed by a convolution is a transposed convolution with stride `up`, whose output is
    # the full convolution (kw-1 implicit zeros on each side). The official layout differs from it by the
    # requested padding before, and by the padding plus the up-1 zeros its zero insertion appends after the
    # last sample; the common (symmetric) crop is done by the transposed conv itself, any rest explicitly.
    kh, kw = f.shape
    px0, px1, py0, py1 = padding
    ex0, ex1 = px0 - (kw - 1), px1 + (up - 1) - (kw - 1)
    ey0, ey1 = py0 - (kh - 1), py1 + (up - 1) - (kh - 1)
    crop = max(0, -max(ex0, ex1, ey0, ey1))  # what the transposed conv may crop on every side
    kernel = _depthwise_kernel(f, x.shape[1], gain, x.dtype, flip=False)
    same = ex0 == ex1 == ey0 == ey1 and ex0 <= 0
    x = F.conv_transpose2d(x, kernel, bias=bias if same else None, stride=up, padding=crop, groups=x.shape[1])
    if same:
        return x
    x = _pad_or_crop(x, (ex0 + crop, ex1 + crop, ey0 + crop, ey1 + crop))
    return x if bias is None else x + bias.to(x.dtype).view(1, -1, 1, 1)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with the FIR filter; output is exactly `up` times larger."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)


def transpose_weight(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Conv weight (out, in/groups, kh, kw) -> the equivalent transposed-conv weight (in, out/groups, kh, kw)."""
    out_channels, in_per_group, kh, kw = w.shape
    if groups == 1:
        wt = w.transpose(0, 1)
    else:
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    return wt.flip([2, 3])


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """2-D correlation with `w` combined with FIR up- or downsampling (MAT uses at most one of the two),
    plus an optional per-output-channel `bias` added at the very end (fused into the last convolution).

    The order of operations follows the official implementation: downsampling filters before a strided
    convolution, upsampling uses a transposed convolution followed by the filter.
    """
    if up > 1 and down > 1:
        raise ValueError("conv2d_resample: up- and downsampling together are not used by MAT")
    _, _, kh, kw = w.shape
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
            return F.conv2d(x, w, bias=bias, groups=groups)
        x = upfirdn2d(x, f, padding=(p0, p1, p0, p1))
        return F.conv2d(x, w, bias=bias, stride=down, groups=groups)

    if up > 1:
        if kw == 1 and kh == 1:
            x = F.conv2d(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up, bias=bias)
        p0 -= kw - 1
        p1 -= kw - up
        pt = max(min(-p0, -p1), 0)
        x = F.conv_transpose2d(x, transpose_weight(w, groups), stride=up, padding=pt, groups=groups)
        q0, q1 = p0 + pt, p1 + pt
        return filter2d(x, f, padding=(q0, q1, q0, q1), gain=up * up, bias=bias)

    return F.conv2d(x, w, bias=bias, padding=padding, groups=groups)

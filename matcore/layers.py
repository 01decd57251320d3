"""MAT's building blocks: equalised-lr fully-connected and conv layers, modulated/style convs, ToRGB, the
mapping network and the mask-aware partial convolution.

Weights are stored unscaled and multiplied by their He gain at run time (the "equalised learning rate" of
StyleGAN2), so the same gains must be applied here for the published weights to mean the same thing.

How the arithmetic is arranged for speed (each rearrangement is exact in exact arithmetic; the float32
parity fixtures check the rounding):
- leaky ReLU is positively homogeneous, so an activation's gain (sqrt(2) times the caller's gain) is folded
  into the weights and bias instead of costing a pass over the output; the bias rides in the convolution.
- the activation and the other per-pixel post-ops run in place on the freshly made convolution output
  whenever no autograd graph is recorded: a new full-resolution tensor is expensive on CPU (its pages are
  faulted in one by one, ~0.5 ms per MB here), often more than the arithmetic of the op itself.
- modulated convs pick the cheapest exact formulation for the batch (see `ModulatedConv2d`).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from matcore.resample import conv2d_resample, setup_filter, upsample2d

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float = 1.0, dim: int = 1):
    """Add `bias` along `dim`, apply the activation, scale by `gain` (lrelu carries a sqrt(2) default gain)."""
    if bias is not None:
        shape = [-1 if i == dim % x.ndim else 1 for i in range(x.ndim)]
        x = x + bias.reshape(shape).to(x.dtype)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = gain * LRELU_GAIN
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}")
    if gain != 1:
        x = x * gain
    return x


def activation_gain(activation: str, gain: float = 1.0) -> float:
    """The total output scale of `bias_act(..., activation, gain)`."""
    if activation == "lrelu":
        return gain * LRELU_GAIN
    if activation == "linear":
        return gain
    raise ValueError(f"unsupported activation {activation!r}")


def _in_place_ok(x: torch.Tensor) -> bool:
    """Whether a post-op may overwrite `x`, a tensor this module just made: always when no graph is being
    recorded; never when autograd may still need the value (a training step), where we pay for a copy."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def add_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return x.add_(other) if _in_place_ok(x) else x + other


def mul_(x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return x.mul_(other) if _in_place_ok(x) else x * other


def _activate_(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The activation without its gain (already folded into the weights), in place when allowed."""
    if activation != "lrelu":
        return x
    return F.leaky_relu_(x, LRELU_SLOPE) if _in_place_ok(x) else F.leaky_relu(x, LRELU_SLOPE)


def autocast_off(device: torch.device):
    """A region that computes in its tensors' own dtype even under autocast: for the few small ops whose
    precision sets the scale of everything downstream. A no-op where autocast does not exist (e.g. the
    meta device, on which the benchmarks count FLOPs)."""
    available = getattr(torch.amp, "is_autocast_available", lambda device_type: device_type in ("cpu", "cuda"))
    if not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (W * lr/sqrt(in)).T + b * lr)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def scaled_params(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight and bias with the equalised-lr gains and the activation's gain folded in."""
        out_gain = activation_gain(self.activation)
        w = (self.weight * (self.weight_gain * out_gain)).to(dtype)
        b = None if self.bias is None else (self.bias * (self.bias_gain * out_gain)).to(dtype)
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate_(F.linear(x, *self.scaled_params(x.dtype)), self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-lr convolution with optional FIR up/downsampling, bias and activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.register_buffer("resample_filter", setup_filter())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        out_gain = activation_gain(self.activation, gain)
        if self.activation == "lrelu" and out_gain <= 0:  # lrelu(a*y) = a*lrelu(y) needs a > 0
            w = (self.weight * self.weight_gain).to(x.dtype)
            x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
            return bias_act(x, self.bias, self.activation, gain=gain)
        w = (self.weight * (self.weight_gain * out_gain)).to(x.dtype)
        b = None if self.bias is None else (self.bias * out_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding, bias=b)
        return _activate_(x, self.activation)


class Conv2dLayerPartial(nn.Module):
    """Mask-aware (partial) convolution: the output is rescaled by the fraction of valid inputs under the
    kernel, and a location becomes valid as soon as one valid input falls under it (mask 1 = valid)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "linear",
                 up: int = 1, down: int = 1):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, activation=activation, up=up, down=down)
        self.kernel_size = kernel_size
        self.slide_winsize = kernel_size**2
        self.stride = down
        self.padding = kernel_size // 2 if kernel_size % 2 == 1 else 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        x = self.conv(x)
        if mask is None:
            return x, None
        # The mask arithmetic stays in float32 whatever the compute dtype: with float16 the official
        # 1e-8 guard would underflow and an all-hole window would turn into inf * 0 = NaN.
        with torch.no_grad(), autocast_off(mask.device):
            mask = mask.float()
            ones = torch.ones(1, 1, self.kernel_size, self.kernel_size, dtype=mask.dtype, device=mask.device)
            valid_count = F.conv2d(mask, ones, stride=self.stride, padding=self.padding)
            mask_ratio = self.slide_winsize / (valid_count + 1e-8)
            update_mask = valid_count.clamp(0, 1)
            mask_ratio = mask_ratio * update_mask
        return mul_(x, mask_ratio.to(x.dtype)), update_mask


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by a style vector (and optionally demodulated).

    Three exact formulations, chosen by shape (bench/NOTES.md has the measurements):
    - one sample (one style row, whatever the number of crops of it): fold style, demodulation and gain into
      the weight and run one plain convolution;
    - several samples, 1x1 kernel (ToRGB): one batched matmul with per-sample weights;
    - several samples, kxk kernel: scale the input channels by the style, convolve the whole batch with the
      shared weight, scale the output channels by the demodulation coefficients. The official grouped
      convolution with per-sample weights (groups = batch) runs at half the speed on CPU.
    The style affine and the demodulation coefficients are computed in float32 even under autocast: they
    are tiny and set the scale of everything downstream.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, up: int = 1, down: int = 1):
        super().__init__()
        self.demodulate = demodulate
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.up = up
        self.down = down
        self.register_buffer("resample_filter", setup_filter())
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1)

    def _modulation(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Styles (N, I) and demodulation coefficients (N, O) (None without demodulation), in float32."""
        with autocast_off(style.device):
            styles = self.affine(style.float())
            dcoefs = None
            if self.demodulate:
                # Official: rsqrt(sum over (i, ky, kx) of (w[o,i,ky,kx] * gain * s[n,i])^2 + 1e-8); the same
                # sum as one small matmul, without materialising a weight per sample.
                w_sq = self.weight[0].float().square().sum(dim=[2, 3]) * self.weight_gain**2  # (O, I)
                dcoefs = (styles.square() @ w_sq.t() + 1e-8).rsqrt()
        return styles, dcoefs

    def forward(self, x: torch.Tensor, style: torch.Tensor, *, gain: float = 1.0,
                bias: torch.Tensor | None = None, overwrite_input: bool = False,
                crop_sample: torch.Tensor | None = None) -> torch.Tensor:
        """conv(x, modulated weight) * gain + bias; x is N×I×H×W, style N×style_dim, bias (O,) or None.

        overwrite_input: the caller will not read `x` again, so a batched forward may scale it in place
        instead of allocating a modulated copy.
        crop_sample: x is a stack of K crops and crop k belongs to sample `crop_sample[k]` (K,) of `style`;
        the formulation stays the one the dense batch of N samples uses, so crops round like it.
        """
        batch, in_channels, height, width = x.shape
        styles, dcoefs = self._modulation(style)
        out_scale = dcoefs * gain if dcoefs is not None else torch.full_like(styles[:, :1], gain)  # (N, O|1)
        weight = self.weight[0]
        b = None if bias is None else bias.to(x.dtype)
        pointwise = self.kernel_size == 1 and self.up == 1 and self.down == 1

        if styles.shape[0] == 1:
            w = weight * (styles[0] * self.weight_gain).view(1, -1, 1, 1)
            w = mul_(w, out_scale[0].view(-1, 1, 1, 1)).to(x.dtype)
            return conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                                   bias=b)

        if crop_sample is not None:
            styles, out_scale = styles[crop_sample], out_scale[crop_sample]
        if pointwise:
            w = weight.view(1, self.out_channels, in_channels) * (styles * self.weight_gain).unsqueeze(1)
            w = mul_(w, out_scale.unsqueeze(-1)).to(x.dtype)  # (N, O, I)
            if x.is_contiguous(memory_format=torch.channels_last):
                # (N, HW, I) @ (N, I, O): both operands row-major, the output channels-last.
                tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_channels)
                out = torch.bmm(tokens, w.transpose(1, 2)).view(batch, height, width, -1).permute(0, 3, 1, 2)
            else:
                out = torch.bmm(w, x.reshape(batch, in_channels, height * width)).view(batch, -1, height, width)
            return out if b is None else add_(out, b.view(1, -1, 1, 1))

        styles = styles.to(x.dtype).view(batch, in_channels, 1, 1)
        x = mul_(x, styles) if overwrite_input else x * styles
        w = (weight * self.weight_gain).to(x.dtype)
        out = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        scale = out_scale.to(x.dtype).view(batch, -1, 1, 1)
        if b is None:
            return mul_(out, scale)
        # out * scale + bias in one pass (and, in reduced precision, one rounding instead of two).
        return torch.addcmul(b.view(1, -1, 1, 1), out, scale, out=out if _in_place_ok(out) else None)


class StyleConv(nn.Module):
    """Modulated conv + optional per-pixel noise + bias + lrelu."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate, up=up)
        self.use_noise = use_noise
        self.resolution = resolution
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.activation = activation

    def noise_map(self, batch: int, device: torch.device, noise_mode: str) -> torch.Tensor | None:
        """The noise this layer adds to a batch of `batch` full maps (batch×1×R×R, times strength and the
        activation gain), or None without noise. 'random' draws from the torch RNG, once per call."""
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', not {noise_mode!r}")
        if not self.use_noise or noise_mode == "none":
            return None
        scale = self.noise_strength * activation_gain(self.activation)
        if noise_mode == "const":
            return (self.noise_const * scale).expand(batch, 1, self.resolution, self.resolution)
        return torch.randn(batch, 1, self.resolution, self.resolution, device=device) * scale

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: str = "const", *,
                overwrite_input: bool = False, crop_sample: torch.Tensor | None = None,
                noise_crops: torch.Tensor | None = None) -> torch.Tensor:
        """overwrite_input: `x` is the caller's scratch (see `ModulatedConv2d.forward`).

        Crops (see matcore/hole_decode.py): `x` is a K-stack of crops of the full maps, `crop_sample` (K,)
        their samples, and `noise_crops` (K×1×h×w or None) this layer's noise cut to the crops.
        """
        noise = self.noise_map(x.shape[0], x.device, noise_mode) if crop_sample is None else noise_crops
        # Official order: lrelu(conv + noise + bias) * gain; the gain is folded into all three terms.
        out_gain = activation_gain(self.activation)
        x = self.conv(x, style, gain=out_gain, bias=self.bias * out_gain, overwrite_input=overwrite_input,
                      crop_sample=crop_sample)
        if noise is not None:
            x = add_(x, noise.to(x.dtype))
        return _activate_(x, self.activation)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to image channels, added to the upsampled previous image."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, kernel_size: int = 1,
                 demodulate: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter())

    def upsample(self, img: torch.Tensor) -> torch.Tensor:
        """The previous block's image brought to this block's resolution (FIR upsampling by 2)."""
        return upsample2d(img, self.resample_filter)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None, *,
                crop_sample: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style, bias=self.bias, crop_sample=crop_sample)
        if skip is not None:
            if skip.shape != out.shape:
                skip = self.upsample(skip)
            out = add_(out, skip.to(out.dtype))
        return out


class MappingNet(nn.Module):
    """z -> w through 8 lrelu FC layers (lr multiplier 0.01), broadcast to `num_ws`, optional truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, track_w_avg: bool = True):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        features = [z_dim] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and track_w_avg:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        # Always float32, also under autocast: a few tiny matmuls that set every style downstream.
        with autocast_off(z.device):
            x = normalize_2nd_moment(z.to(torch.float32))
            for idx in range(self.num_layers):
                x = getattr(self, f"fc{idx}")(x)
            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
            if truncation_psi != 1:
                x = self.w_avg.to(x.dtype).lerp(x, truncation_psi)
        return x

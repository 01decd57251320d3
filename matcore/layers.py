"""MAT's building blocks: equalised-lr fully-connected and conv layers, modulated/style convs, ToRGB, the
mapping network and the mask-aware partial convolution.

Weights are stored unscaled and multiplied by their He gain at run time (the "equalised learning rate" of
StyleGAN2), so the same gains must be applied here for the published weights to mean the same thing.
"""
from __future__ import annotations

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        x = x.matmul(w.t())
        return bias_act(x, b, self.activation, dim=x.ndim - 1)


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
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        return bias_act(x, self.bias, self.activation, gain=gain)


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
        with torch.no_grad():
            ones = torch.ones(1, 1, self.kernel_size, self.kernel_size, dtype=mask.dtype, device=mask.device)
            valid_count = F.conv2d(mask, ones, stride=self.stride, padding=self.padding)
            mask_ratio = self.slide_winsize / (valid_count + 1e-8)
            update_mask = valid_count.clamp(0, 1)
            mask_ratio = mask_ratio * update_mask
        return x * mask_ratio.to(x.dtype), update_mask


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by a style vector (and optionally demodulated)."""

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

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        style = self.affine(style).view(batch, 1, in_channels, 1, 1)
        weight = self.weight * self.weight_gain * style
        if self.demodulate:
            decoefs = (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
            weight = weight * decoefs.view(batch, self.out_channels, 1, 1, 1)
        # One grouped convolution over the whole batch: group b holds sample b with its own weights.
        weight = weight.reshape(batch * self.out_channels, in_channels, self.kernel_size, self.kernel_size)
        x = x.reshape(1, batch * in_channels, height, width)
        x = conv2d_resample(x, weight.to(x.dtype), self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, groups=batch)
        return x.reshape(batch, self.out_channels, *x.shape[2:])


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

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', not {noise_mode!r}")
        x = self.conv(x, style)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "const":
                noise = self.noise_const * self.noise_strength
            else:
                noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device) * self.noise_strength
            x = x + noise.to(x.dtype)
        return bias_act(x, self.bias, self.activation)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to image channels, added to the upsampled previous image."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, kernel_size: int = 1,
                 demodulate: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter())

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = bias_act(self.conv(x, style), self.bias)
        if skip is not None:
            if skip.shape != out.shape:
                skip = upsample2d(skip, self.resample_filter)
            out = out + skip
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
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x

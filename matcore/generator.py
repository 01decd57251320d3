"""The MAT generator: mapping network, first (transformer) stage, second (conv) stage, and the seeded
per-sample randomness that makes an output depend only on its own seed."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from matcore.first_stage import BOTTLENECK_TOKENS, FirstStage
from matcore.hole_decode import CropState, LadderPlan, composite, plan_ladder, run_ladder
from matcore.hole_regions import CropGroup, group_crops, hole_boxes
from matcore.layers import Conv2dLayer, FullyConnectedLayer, MappingNet, StyleConv, ToRGB, add_

Z_DIM = 512
W_DIM = 512
FIRST_STAGE_DIM = 180
BOTTLENECK = 16
SUPPORTED_RESOLUTIONS = (256, 512)
DECODE_MODES = ("auto", "dense", "crop")
# Halo (pixels at the output resolution) counted around every hole box when deciding whether two boxes
# are cheaper as one: about what the top two decoder levels add (matcore/hole_decode.py).
HOLE_MARGIN = 8


def channels_at(res_log2: int) -> int:
    """Feature channels of the second stage at resolution 2**res_log2 (official table)."""
    return {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}[2**res_log2]


def sample_latents(seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample z and dropout keep-maps, each drawn from its own generator seeded by the sample's seed.

    Returns z (N, 512), k1 (N, 256, 180) and k2 (N, 512, 16, 16), float32 with k in {0, 1}. The draw order
    (z, then k1, then k2) is fixed: the same seed gives the same sample whatever batch it sits in.
    """
    zs, k1s, k2s = [], [], []
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        zs.append(torch.randn(Z_DIM, generator=g))
        k1s.append((torch.rand((BOTTLENECK_TOKENS, FIRST_STAGE_DIM), generator=g) < 0.5).float())
        k2s.append((torch.rand((channels_at(4), BOTTLENECK, BOTTLENECK), generator=g) < 0.5).float())
    return torch.stack(zs), torch.stack(k1s), torch.stack(k2s)


def _random_keep_maps(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """What the official `F.dropout(0.5 * ones, training=True)` amounts to: Bernoulli(0.5) 0/1 maps."""
    k1 = (torch.rand(batch, BOTTLENECK_TOKENS, FIRST_STAGE_DIM, device=device) < 0.5).float()
    k2 = (torch.rand(batch, channels_at(4), BOTTLENECK, BOTTLENECK, device=device) < 0.5).float()
    return k1, k2


class EncFromRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, kernel_size=1, activation="lrelu")
        self.conv1 = Conv2dLayer(out_channels, out_channels, kernel_size=3, activation="lrelu")

    def forward(self, x):
        return self.conv1(self.conv0(x))


class ConvBlockDown(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, kernel_size=3, activation="lrelu", down=2)
        self.conv1 = Conv2dLayer(out_channels, out_channels, kernel_size=3, activation="lrelu")

    def forward(self, x):
        return self.conv1(self.conv0(x))


class Encoder(nn.Module):
    """Conv encoder from the input resolution down to 16x16; returns features keyed by log2(resolution)."""

    def __init__(self, res_log2: int, img_channels: int):
        super().__init__()
        self.res_log2s = list(range(res_log2, 3, -1))
        for r in self.res_log2s:
            if r == res_log2:
                block = EncFromRGB(img_channels * 2 + 1, channels_at(r))
            else:
                block = ConvBlockDown(channels_at(r + 1), channels_at(r))
            setattr(self, f"EncConv_Block_{2**r}x{2**r}", block)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        features = {}
        for r in self.res_log2s:
            x = getattr(self, f"EncConv_Block_{2**r}x{2**r}")(x)
            features[r] = x
        return features


class ToStyle(nn.Module):
    """Global style code from the 16x16 feature: three stride-2 convs, average pool, FC."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            *(Conv2dLayer(in_channels, in_channels, kernel_size=3, activation="lrelu", down=2) for _ in range(3))
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_channels, out_channels, activation="lrelu")

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(start_dim=1))


class DecBlockFirstV2(nn.Module):
    def __init__(self, res_log2: int, in_channels: int, out_channels: int, style_dim: int, use_noise: bool,
                 img_channels: int):
        super().__init__()
        self.res_log2 = res_log2
        self.conv0 = Conv2dLayer(in_channels, in_channels, kernel_size=3, activation="lrelu")
        self.conv1 = StyleConv(in_channels, out_channels, style_dim, resolution=2**res_log2, use_noise=use_noise)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor, noise_mode: str = "const"):
        x = add_(self.conv0(x), skip)
        x = self.conv1(x, style, noise_mode=noise_mode, overwrite_input=True)  # x is this block's own sum
        return x, self.toRGB(x, style)


class DecBlock(nn.Module):
    def __init__(self, res_log2: int, in_channels: int, out_channels: int, style_dim: int, use_noise: bool,
                 img_channels: int):
        super().__init__()
        self.res_log2 = res_log2
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, resolution=2**res_log2, up=2,
                               use_noise=use_noise)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, resolution=2**res_log2, use_noise=use_noise)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor, style: torch.Tensor, skip: torch.Tensor,
                noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv0(x, style, noise_mode=noise_mode)
        x = add_(x, skip)
        x = self.conv1(x, style, noise_mode=noise_mode, overwrite_input=True)  # x is this block's own sum
        return x, self.toRGB(x, style, skip=img)


class Decoder(nn.Module):
    def __init__(self, res_log2: int, style_dim: int, use_noise: bool, img_channels: int):
        super().__init__()
        self.res_log2 = res_log2
        self.Dec_16x16 = DecBlockFirstV2(4, channels_at(4), channels_at(4), style_dim, use_noise, img_channels)
        for r in range(5, res_log2 + 1):
            setattr(self, f"Dec_{2**r}x{2**r}",
                    DecBlock(r, channels_at(r - 1), channels_at(r), style_dim, use_noise, img_channels))

    def ladder_plan(self, groups: Sequence[CropGroup], batch: int, mode: str) -> LadderPlan:
        """Which up-sampling blocks (32² and up) run on the hole's crops (matcore/hole_decode.py)."""
        res_log2s = range(5, self.res_log2 + 1)
        return plan_ladder(groups, [2**r for r in res_log2s], [(channels_at(r - 1), channels_at(r)) for r in res_log2s],
                           batch, mode)

    def forward(self, x: torch.Tensor, style: torch.Tensor, features: dict[int, torch.Tensor], plan: LadderPlan,
                noise_mode: str = "const") -> tuple[torch.Tensor | None, list[CropState]]:
        """The dense image (N×3×R×R), or None and the crops' images when the top block ran on crops."""
        # All of MAT's per-layer w's are the same broadcast vector, so one style code serves every layer.
        x, img = self.Dec_16x16(x, style, features[4], noise_mode=noise_mode)
        res_log2s = range(5, self.res_log2 + 1)
        blocks = [getattr(self, f"Dec_{2**r}x{2**r}") for r in res_log2s]
        return run_ladder(blocks, [features[r] for r in res_log2s], x, img, style, plan, noise_mode)


class SynthesisNet(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int = 3, use_noise: bool = True):
        super().__init__()
        res_log2 = int(math.log2(img_resolution))
        self.num_layers = res_log2 * 2 - 3 * 2
        self.img_resolution = img_resolution
        self.first_stage = FirstStage(img_channels, img_resolution=img_resolution, dim=FIRST_STAGE_DIM,
                                      w_dim=w_dim)
        self.enc = Encoder(res_log2, img_channels)
        self.to_square = FullyConnectedLayer(w_dim, BOTTLENECK * BOTTLENECK, activation="lrelu")
        self.to_style = ToStyle(channels_at(4), channels_at(2) * 2)
        self.dec = Decoder(res_log2, w_dim + channels_at(2) * 2, use_noise, img_channels)

    def forward(self, images, keep_masks, ws, keep_maps, noise_mode: str = "const", decode: str = "auto"):
        k1, k2 = keep_maps
        groups = None
        if decode != "dense":
            # A GPU call on a small crop is launch-bound: there one padded stack beats several tight ones.
            overhead = 1024 if images.device.type == "cpu" else self.img_resolution**2
            groups = group_crops(hole_boxes(keep_masks, HOLE_MARGIN), HOLE_MARGIN, overhead)
        out_stg1 = self.first_stage(images, keep_masks, ws, k1, noise_mode=noise_mode, groups=groups, decode=decode)

        known = images * keep_masks
        x = known + out_stg1 * (1 - keep_masks)
        # Channels-last from the first convolution on (the layout then propagates through every conv and
        # in-place op): oneDNN's convolutions, the depthwise FIR ones above all, run faster in it.
        enc_input = torch.cat([keep_masks - 0.5, x, known], dim=1).contiguous(memory_format=torch.channels_last)
        features = self.enc(enc_input)

        # Stochastic bottleneck: dropped features are replaced by a code from w (official: dropout 0.5).
        noise_code = self.to_square(ws[:, 0]).view(-1, 1, BOTTLENECK, BOTTLENECK)
        keep = k2.to(features[4].dtype)
        fea_16 = features[4] * keep + noise_code * (1 - keep)
        features[4] = fea_16

        global_style = self.to_style(fea_16)
        style = torch.cat([ws[:, 0], global_style], dim=1)
        plan = self.dec.ladder_plan(groups or (), images.shape[0], "dense" if groups is None else decode)
        img, crops = self.dec(fea_16, style, features, plan, noise_mode=noise_mode)
        img = composite(images, keep_masks, img, crops, plan)
        return img.contiguous(), out_stg1.contiguous()


class Generator(nn.Module):
    """MAT generator with the official hyper-parameters (z = w = 512, first-stage dim 180).

    `use_noise=False` builds the variant without the decoder's noise inputs, which is what IOPaint's
    re-packaged checkpoints contain (and equals running the official model with noise switched off).

    Reduced precision: call it under `torch.autocast(device_type, dtype=torch.bfloat16)` (or float16 on a
    GPU) with the float32 weights as loaded; the few scale-setting computations (mapping network, style
    affines and demodulation, mask arithmetic, attention normalisation) stay in float32 inside, and the
    outputs are float32 with the known pixels copied exactly.
    """

    def __init__(self, img_resolution: int = 512, img_channels: int = 3, use_noise: bool = True):
        super().__init__()
        if img_resolution not in SUPPORTED_RESOLUTIONS:
            raise ValueError(f"MAT supports resolutions {SUPPORTED_RESOLUTIONS}, not {img_resolution}")
        self.z_dim = Z_DIM
        self.w_dim = W_DIM
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.use_noise = use_noise
        self.synthesis = SynthesisNet(W_DIM, img_resolution, img_channels, use_noise=use_noise)
        self.mapping = MappingNet(Z_DIM, W_DIM, num_ws=self.synthesis.num_layers)

    def forward(self, images: torch.Tensor, masks: torch.Tensor, z: torch.Tensor, *, truncation_psi: float = 1.0,
                noise_mode: str = "const", keep_maps: tuple[torch.Tensor, torch.Tensor] | None = None,
                return_stg1: bool = False, decode: str = "auto"):
        """images N×3×R×R in [-1, 1]; masks N×1×R×R with 1 = keep, 0 = hole; z N×512.

        keep_maps=(k1 N×256×180, k2 N×512×16×16) of 0/1; drawn from the torch RNG when None, as the
        official code does. Returns the output (and the first-stage output with `return_stg1`).

        decode: where the decoders run. Both outputs are composited with the known pixels, so the
        generated image only matters inside the hole (mask ≠ 1): "auto" runs the up-sampling decoder blocks
        of both stages over crops around the hole (with the halo their layers need) where that is cheaper
        than the whole map, "dense" over the whole map, "crop" over crops at every block; all three give
        the same output up to float rounding (matcore/hole_decode.py).
        """
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, not {decode!r}")
        n, _, h, w = images.shape
        if h != self.img_resolution or w != self.img_resolution:
            raise ValueError(f"this generator takes {self.img_resolution}² inputs, got {h}×{w}")
        if masks.shape != (n, 1, h, w):
            raise ValueError(f"masks must be N×1×{h}×{w}, got {tuple(masks.shape)}")
        if keep_maps is None:
            keep_maps = _random_keep_maps(n, images.device)
        ws = self.mapping(z, truncation_psi=truncation_psi)
        img, out_stg1 = self.synthesis(images, masks.to(images.dtype), ws.to(images.dtype), keep_maps,
                                       noise_mode=noise_mode, decode=decode)
        return (img, out_stg1) if return_stg1 else img

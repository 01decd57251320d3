"""MAT's first (transformer) stage: a coarse fill from a partial-conv encoder, a 64->16->64 transformer
U-Net over mask-aware windows, and a style-modulated conv decoder back to the input resolution."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from matcore.attention import BasicLayer, PatchMerging, PatchUpsampling, feature2token, token2feature
from matcore.hole_decode import LadderPlan, composite, plan_ladder, run_ladder
from matcore.hole_regions import CropGroup
from matcore.layers import Conv2dLayer, Conv2dLayerPartial, FullyConnectedLayer, StyleConv, ToRGB, add_

TOKEN_RESOLUTION = 64  # the encoder brings any input down to 64x64 tokens
DEPTHS = (2, 3, 4, 3, 2)
RATIOS = (1, 0.5, 0.5, 2, 2)
WINDOW_SIZES = (8, 16, 16, 16, 8)
NUM_HEADS = 6
BOTTLENECK_TOKENS = 16 * 16


class DecStyleBlock(nn.Module):
    """Upsampling style conv, skip add, style conv, ToRGB; one style vector for all three."""

    def __init__(self, res: int, in_channels: int, out_channels: int, style_dim: int, img_channels: int):
        super().__init__()
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, resolution=res, up=2, use_noise=False)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, resolution=res, use_noise=False)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, style: torch.Tensor, skip: torch.Tensor,
                noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv0(x, style, noise_mode=noise_mode)
        x = add_(x, skip)
        x = self.conv1(x, style, noise_mode=noise_mode, overwrite_input=True)  # x is this block's own sum
        img = self.toRGB(x, style, skip=img)
        return x, img


class FirstStage(nn.Module):
    def __init__(self, img_channels: int = 3, img_resolution: int = 512, dim: int = 180, w_dim: int = 512):
        super().__init__()
        down_times = int(math.log2(img_resolution // TOKEN_RESOLUTION))
        self.conv_first = Conv2dLayerPartial(img_channels + 1, dim, kernel_size=3, activation="lrelu")
        self.enc_conv = nn.ModuleList(
            Conv2dLayerPartial(dim, dim, kernel_size=3, down=2, activation="lrelu") for _ in range(down_times)
        )

        res = TOKEN_RESOLUTION
        self.tran = nn.ModuleList()
        for depth, ratio, window in zip(DEPTHS, RATIOS, WINDOW_SIZES):
            res = int(res * ratio)
            if ratio < 1:
                resample = PatchMerging(dim, dim, down=int(1 / ratio))
            elif ratio > 1:
                resample = PatchUpsampling(dim, dim, up=int(ratio))
            else:
                resample = None
            self.tran.append(BasicLayer(dim, res, depth, NUM_HEADS, window, downsample=resample))

        # Global style from the 16x16 bottleneck: four stride-2 convs to 1x1 (the official pooling is a no-op).
        self.down_conv = nn.Sequential(
            *(Conv2dLayer(dim, dim, kernel_size=3, down=2, activation="lrelu") for _ in range(4)),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.to_style = FullyConnectedLayer(dim, dim * 2, activation="lrelu")
        self.ws_style = FullyConnectedLayer(w_dim, dim, activation="lrelu")
        self.to_square = FullyConnectedLayer(dim, BOTTLENECK_TOKENS, activation="lrelu")

        style_dim = dim * 3
        self.dec_conv = nn.ModuleList()
        for _ in range(down_times):
            res = res * 2
            self.dec_conv.append(DecStyleBlock(res, dim, dim, style_dim, img_channels))

    def ladder_plan(self, groups: Sequence[CropGroup], batch: int, mode: str) -> LadderPlan:
        """Which decoder blocks run on the hole's crops (matcore/hole_decode.py)."""
        sizes = [TOKEN_RESOLUTION * 2 ** (i + 1) for i in range(len(self.dec_conv))]
        channels = [(b.conv0.conv.weight.shape[2], b.conv0.conv.weight.shape[1]) for b in self.dec_conv]
        return plan_ladder(groups, sizes, channels, batch, mode)

    def forward(self, images: torch.Tensor, keep_masks: torch.Tensor, ws: torch.Tensor, keep_map: torch.Tensor,
                noise_mode: str = "const", groups: Sequence[CropGroup] | None = None,
                decode: str = "dense") -> torch.Tensor:
        """keep_map: (N, 256, dim) 0/1, which bottleneck token features survive (the rest get the noise code).

        groups/decode: the hole's crops and the decoding mode ("dense", "auto", "crop"; see
        `Generator.forward`); the output is the same, only the work differs.
        """
        # Channels-last from the first convolution on: oneDNN's convolutions (the depthwise FIR ones above
        # all) run faster in it, and token <-> feature-map reshapes become free views.
        x = torch.cat([keep_masks - 0.5, images * keep_masks], dim=1).contiguous(memory_format=torch.channels_last)
        skips = []
        x, mask = self.conv_first(x, keep_masks)
        skips.append(x)
        for i, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if i != len(self.enc_conv) - 1:
                skips.append(x)

        size = (x.shape[-2], x.shape[-1])
        x = feature2token(x)
        mask = feature2token(mask)
        mid = len(self.tran) // 2
        for i, layer in enumerate(self.tran):
            if i < mid:
                x, size, mask = layer(x, size, mask)
                skips.append(x)
            elif i > mid:
                x, size, _ = layer(x, size, None)
                x = x + skips[mid - i]
            else:
                x, size, _ = layer(x, size, None)
                ws_code = self.ws_style(ws[:, -1])
                # The official code resizes the 256-long code to the token count with linear interpolation;
                # at the fixed 16x16 bottleneck that is the identity.
                noise_code = self.to_square(ws_code).unsqueeze(-1)
                keep = keep_map.to(x.dtype)
                x = x * keep + noise_code * (1 - keep)
                global_style = self.to_style(self.down_conv(token2feature(x, size)).flatten(start_dim=1))
                style = torch.cat([global_style, ws_code], dim=1)

        x = token2feature(x, size)
        plan = self.ladder_plan(groups or (), x.shape[0], "dense" if groups is None else decode)
        dec_skips = [skips[len(self.dec_conv) - i - 1] for i in range(len(self.dec_conv))]
        img, crops = run_ladder(list(self.dec_conv), dec_skips, x, None, style, plan, noise_mode)
        return composite(images, keep_masks, img, crops, plan)

"""MAT's two-headed discriminator (one head for the final output, a half-width one for the first stage),
kept for fine-tuning; parameter names equal the official ones."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from matcore.generator import channels_at
from matcore.layers import Conv2dLayer, FullyConnectedLayer


class DisFromRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size=1, activation="lrelu")

    def forward(self, x):
        return self.conv(x)


class DisBlock(nn.Module):
    """Residual downsampling block; both branches scaled by sqrt(1/2) to keep the variance."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, kernel_size=3, activation="lrelu")
        self.conv1 = Conv2dLayer(in_channels, out_channels, kernel_size=3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, down=2, bias=False)

    def forward(self, x):
        skip = self.skip(x, gain=math.sqrt(0.5))
        return skip + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class MinibatchStdLayer(nn.Module):
    """Appends the mean standard deviation over groups of samples as extra feature channels."""

    def __init__(self, group_size: int | None = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        group = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(group, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)
        y = y.repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)


def _trunk(img_channels: int, res_log2: int, width_div: int, mbstd_group_size: int, mbstd_channels: int):
    layers = [DisFromRGB(img_channels + 1, channels_at(res_log2) // width_div)]
    for r in range(res_log2, 2, -1):
        layers.append(DisBlock(channels_at(r) // width_div, channels_at(r - 1) // width_div))
    if mbstd_channels > 0:
        layers.append(MinibatchStdLayer(mbstd_group_size, mbstd_channels))
    top = channels_at(2) // width_div
    layers.append(Conv2dLayer(top + mbstd_channels, top, kernel_size=3, activation="lrelu"))
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """Scores (output, mask) and (first-stage output, mask); unconditional (c_dim = 0) as MAT is trained."""

    def __init__(self, img_resolution: int = 512, img_channels: int = 3, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1):
        super().__init__()
        res_log2 = int(math.log2(img_resolution))
        if 2**res_log2 != img_resolution or img_resolution < 8:
            raise ValueError(f"resolution must be a power of two >= 8, got {img_resolution}")
        self.img_resolution = img_resolution
        top = channels_at(2)
        self.Dis = _trunk(img_channels, res_log2, 1, mbstd_group_size, mbstd_num_channels)
        self.fc0 = FullyConnectedLayer(top * 4**2, top, activation="lrelu")
        self.fc1 = FullyConnectedLayer(top, 1)
        self.Dis_stg1 = _trunk(img_channels, res_log2, 2, mbstd_group_size, mbstd_num_channels)
        self.fc0_stg1 = FullyConnectedLayer(top // 2 * 4**2, top // 2, activation="lrelu")
        self.fc1_stg1 = FullyConnectedLayer(top // 2, 1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor, images_stg1: torch.Tensor):
        """masks: 1 = keep, 0 = hole. Returns (score, score_stg1), each N×1."""
        x = self.Dis(torch.cat([masks - 0.5, images], dim=1))
        x = self.fc1(self.fc0(x.flatten(start_dim=1)))
        y = self.Dis_stg1(torch.cat([masks - 0.5, images_stg1], dim=1))
        y = self.fc1_stg1(self.fc0_stg1(y.flatten(start_dim=1)))
        return x, y

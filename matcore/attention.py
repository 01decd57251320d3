"""Mask-aware window attention and the Swin-style transformer layers of MAT's first stage.

Tokens are (B, L, C) with L = H*W in row-major order; masks are (B, L, 1) with 1 = valid. Attention only
looks at valid keys (invalid ones get -100), and after each attention a window becomes valid as soon as
it held one valid token: this is how MAT grows the known region from the hole's border inwards.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from matcore.layers import Conv2dLayerPartial, FullyConnectedLayer

MASKED_LOGIT = -100.0  # the official additive value for a forbidden key (not -inf: keeps all-masked rows finite)


def token2feature(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map; a free view in channels-last layout for contiguous tokens.

    (Reshaping before permuting matters: the other order leaves an odd stride on a batch of one, which
    oneDNN does not recognise as channels-last, and it then copies the map to NCHW behind our back.)
    """
    b, _, c = x.shape
    return x.reshape(b, size[0], size[1], c).permute(0, 3, 1, 2)


def feature2token(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens; a free view when the map is channels-last."""
    b, c = x.shape[:2]
    return x.reshape(b, c, -1).transpose(1, 2)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window*window, C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Additive (nW, N, N) mask that keeps a cyclically shifted window from attending across the seam."""
    region = torch.zeros(1, h, w, 1)
    spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in spans:
        for ws in spans:
            region[:, hs, ws, :] = label
            label += 1
    region_windows = window_partition(region, window).squeeze(-1)  # nW, N
    diff = region_windows.unsqueeze(1) - region_windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, MASKED_LOGIT)


def window_order(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Token indices (H*W,) in the order of `window_partition(roll(x, -shift))`: one gather replaces the
    official roll + partition copies (and its inverse the reverse + roll back)."""
    index = torch.arange(h * w).view(1, h, w, 1)
    if shift > 0:
        index = torch.roll(index, shifts=(-shift, -shift), dims=(1, 2))
    return window_partition(index, window).flatten()


class WindowAttention(nn.Module):
    """Multi-head attention inside windows; queries/keys from L2-normalised tokens, values from raw ones."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = FullyConnectedLayer(dim, dim)
        self.k = FullyConnectedLayer(dim, dim)
        self.v = FullyConnectedLayer(dim, dim)
        self.proj = FullyConnectedLayer(dim, dim)

    def forward(self, x: torch.Tensor, mask_windows: torch.Tensor | None = None,
                shift_mask: torch.Tensor | None = None):
        """x: (B*nW, N, C); mask_windows: (B*nW, N, 1) 1 = valid; shift_mask: (nW, N, N) additive."""
        bw, n, c = x.shape
        heads = self.num_heads
        # Normalised in float32: under float16 autocast the 1e-12 guard underflows, and the all-zero tokens
        # of not-yet-valid regions would become 0/0 = NaN.
        norm_x = F.normalize(x.float(), p=2.0, dim=-1).to(x.dtype)
        # q and k read the same tokens: one matmul against both weights stacked.
        (wq, bq), (wk, bk) = self.q.scaled_params(x.dtype), self.k.scaled_params(x.dtype)
        qk = F.linear(norm_x, torch.cat([wq, wk]), torch.cat([bq, bk]))
        q, k = qk.view(bw, n, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        v = self.v(x).view(bw, n, heads, c // heads).transpose(1, 2)

        # The official code adds the shift mask, then the key mask, to the logits; one summed additive mask
        # is the same arithmetic and lets the fused attention kernel run.
        bias = None
        if shift_mask is not None:
            nw = shift_mask.shape[0]
            bias = shift_mask.to(q.dtype).unsqueeze(0).expand(bw // nw, nw, n, n).reshape(bw, 1, n, n)
        if mask_windows is not None:
            key_bias = torch.where(mask_windows.view(bw, 1, 1, n) == 0, MASKED_LOGIT, 0.0).to(q.dtype)
            bias = key_bias if bias is None else bias + key_bias
            with torch.no_grad():
                mask_windows = mask_windows.sum(dim=1, keepdim=True).clamp(0, 1).expand(-1, n, -1)

        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.transpose(1, 2).reshape(bw, n, c)
        return self.proj(x), mask_windows


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = FullyConnectedLayer(in_features, hidden_features, activation="lrelu")
        self.fc2 = FullyConnectedLayer(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention whose output is fused with its input, then an MLP (no residual add:
    the `fuse` layer takes both)."""

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float = 2.0):
        super().__init__()
        if input_resolution <= window_size:  # one window covers everything: nothing to shift
            shift_size = 0
            window_size = input_resolution
        self.dim = dim
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.fuse = FullyConnectedLayer(dim * 2, dim, activation="lrelu")
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift_size > 0:
            # Persistent so that state_dict() matches the official one (the checkpoints carry it).
            self.register_buffer("attn_mask", shifted_window_mask(input_resolution, input_resolution,
                                                                  window_size, shift_size))
        else:
            self.attn_mask = None
        # Not persistent: derived from the configuration, and absent from the official state dict.
        order = window_order(input_resolution, input_resolution, window_size, shift_size)
        self.register_buffer("window_index", order, persistent=False)
        self.register_buffer("window_index_inverse", torch.argsort(order), persistent=False)

    def _shift_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor | None:
        if self.shift_size == 0:
            return None
        if self.attn_mask is not None and h == w == self.input_resolution:
            return self.attn_mask
        return shifted_window_mask(h, w, self.window_size, self.shift_size).to(device)

    def _window_index(self, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(order, inverse) gathers for this size, or None when the windowing is the identity."""
        if self.shift_size == 0 and self.window_size == h == w:
            return None
        if h == w == self.input_resolution:
            return self.window_index, self.window_index_inverse
        order = window_order(h, w, self.window_size, self.shift_size).to(device)
        return order, torch.argsort(order)

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None):
        h, w = size
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"token count {length} does not match size {size}")
        n = self.window_size**2
        index = self._window_index(h, w, x.device)
        x_windows, mask_windows = x, mask
        if index is not None:
            x_windows = x.index_select(1, index[0])
            mask_windows = mask.index_select(1, index[0]) if mask is not None else None
        attn_windows, mask_windows = self.attn(x_windows.view(-1, n, c),
                                               mask_windows.view(-1, n, 1) if mask is not None else None,
                                               self._shift_mask(h, w, x.device))
        attn = attn_windows.view(b, length, c)
        if mask is not None:
            mask = mask_windows.reshape(b, length, 1)
        if index is not None:
            attn = attn.index_select(1, index[1])
            mask = mask.index_select(1, index[1]) if mask is not None else None

        x = self.fuse(torch.cat([x, attn], dim=-1))
        return self.mlp(x), mask


class PatchMerging(nn.Module):
    """Token downsampling by a strided partial conv."""

    def __init__(self, in_channels: int, out_channels: int, down: int = 2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels, out_channels, kernel_size=3, activation="lrelu", down=down)
        self.down = down

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None):
        x, mask = self.conv(token2feature(x, size), token2feature(mask, size) if mask is not None else None)
        size = (size[0] // self.down, size[1] // self.down)
        return feature2token(x), size, feature2token(mask) if mask is not None else None


class PatchUpsampling(nn.Module):
    """Token upsampling by a transposed partial conv."""

    def __init__(self, in_channels: int, out_channels: int, up: int = 2):
        super().__init__()
        self.conv = Conv2dLayerPartial(in_channels, out_channels, kernel_size=3, activation="lrelu", up=up)
        self.up = up

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None):
        x, mask = self.conv(token2feature(x, size), token2feature(mask, size) if mask is not None else None)
        size = (size[0] * self.up, size[1] * self.up)
        return feature2token(x), size, feature2token(mask) if mask is not None else None


class BasicLayer(nn.Module):
    """Optional resampling, `depth` alternating regular/shifted window blocks, then a partial conv with a
    residual connection around the blocks."""

    def __init__(self, dim: int, input_resolution: int, depth: int, num_heads: int, window_size: int,
                 downsample: nn.Module | None = None, mlp_ratio: float = 2.0):
        super().__init__()
        self.downsample = downsample  # official name, also for the upsampling layers
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio)
            for i in range(depth)
        )
        self.conv = Conv2dLayerPartial(dim, dim, kernel_size=3, activation="lrelu")

    def forward(self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None):
        if self.downsample is not None:
            x, size, mask = self.downsample(x, size, mask)
        identity = x
        for block in self.blocks:
            x, mask = block(x, size, mask)
        feat_mask = token2feature(mask, size) if mask is not None else None
        x, feat_mask = self.conv(token2feature(x, size), feat_mask)
        x = feature2token(x) + identity
        return x, size, feature2token(feat_mask) if feat_mask is not None else None

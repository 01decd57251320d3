"""Decoding only where the hole is: MAT's up-sampling decoders run over crops around the hole, with the
halo every remaining layer needs, and give exactly the dense decoder's values there.

Why it is exact. Both stages composite their output with the known pixels (`out = gen·(1 − m) + image·m`),
so the generated image is only ever read where m ≠ 1 (the first stage's composite feeds the second stage's
encoder, whose input equals the known image wherever m = 1). Every layer of a decoder block is a zero-padded
convolution (stride 1 or a ×2 transposed one) or a per-pixel op, so computing it on a crop gives the dense
values wherever the layer's receptive field lies inside the crop or beyond the image border (zero padding
there in both). Working backwards from the boxes the output needs, each block is given input crops that
cover its receptive field, and the values at the crops' inner edges, which differ, are cut away.

Receptive fields (half-open rows/columns [a, b) of a block's output at resolution R; derived from the
layers' padding and checked against impulse responses in tests/matcore/test_hole_decode.py):
- conv1, ToRGB's conv, noise, bias, activations, skip adds: 3×3 (pad 1) or pointwise:  [a − 1, b + 1)
- conv0 (3×3 transposed conv, stride 2, then the [1,3,3,1] FIR, pad 1): input at R/2
  [⌊(a − 2)/2⌋, ⌊(b + 1)/2⌋ + 1)
- ToRGB's skip (zero insertion then the FIR, `upsample2d`): input at R/2  [⌊(a − 1)/2⌋, ⌊b/2⌋ + 1)
So one block asks for ≈ 2 pixels of halo at its input resolution (≈ 2.5 at its output), the ToRGB path
less; going down a ladder of blocks the halo in top-resolution pixels doubles per level: at 512² the
second stage's 256→512 block needs its input 2-3 px beyond the box at 256², the 128→256 block 2-3 px at
128², i.e. 8-10 px at 512², and so on. The lower a block, the sooner its crops cover its whole map; a cost
model (`plan_ladder`) runs the lower blocks dense from the level where cropping stops paying.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from matcore.hole_regions import Box, CropGroup, fit_inside

CROP_WORTH = 0.8  # crop a block only when its crops cost less than this share of the dense block


def conv3_need(box: Box, size: int) -> Box:
    """Input rows/cols a 3×3 stride-1 zero-padded conv reads for output `box` (clipped to the image)."""
    return box.expand(1).clip(size)


def up_conv_need(box: Box, in_size: int) -> Box:
    """Input (at half resolution) that a stride-2 transposed 3×3 conv followed by the FIR reads."""
    return Box((box.y0 - 2) // 2, (box.y1 + 1) // 2 + 1, (box.x0 - 2) // 2, (box.x1 + 1) // 2 + 1).clip(in_size)


def upsample_need(box: Box, in_size: int) -> Box:
    """Input (at half resolution) that `upsample2d` (zero insertion, then the FIR) reads."""
    return Box((box.y0 - 1) // 2, box.y1 // 2 + 1, (box.x0 - 1) // 2, box.x1 // 2 + 1).clip(in_size)


def uniform(boxes: Sequence[Box], size: int) -> tuple[Box, ...]:
    """The boxes grown to their largest height and width (so that they stack), kept inside the image."""
    height = max(b.height for b in boxes)
    width = max(b.width for b in boxes)
    return tuple(fit_inside(b, height, width, size) for b in boxes)


@dataclass(frozen=True)
class LevelPlan:
    """One up-sampling block of one crop group: it reads its input (x and the running image) over `inputs`
    at half resolution, keeps conv0's output over `conv1_inputs` and delivers x and image over `outputs`."""

    inputs: tuple[Box, ...]
    conv1_inputs: tuple[Box, ...]
    outputs: tuple[Box, ...]


@dataclass(frozen=True)
class GroupPlan:
    samples: tuple[int, ...]
    levels: tuple[LevelPlan, ...]  # one per block of the ladder, bottom to top (only the cropped ones are used)


@dataclass(frozen=True)
class LadderPlan:
    """How one decoder ladder runs: blocks [0, first_cropped) dense, the rest over each group's crops."""

    first_cropped: int
    groups: tuple[GroupPlan, ...]

    def is_dense(self, num_blocks: int) -> bool:
        return self.first_cropped >= num_blocks


def plan_group(group: CropGroup, out_sizes: Sequence[int]) -> GroupPlan:
    """Boxes of every block of a ladder (output resolutions `out_sizes`, bottom to top) for one group,
    worked out backwards from the group's boxes at the top."""
    outputs = uniform(group.boxes, out_sizes[-1])
    levels = []
    for size in reversed(out_sizes):
        conv1_inputs = uniform([conv3_need(b, size) for b in outputs], size)
        needs = [up_conv_need(a, size // 2).union(upsample_need(b, size // 2)) for a, b in zip(conv1_inputs, outputs)]
        inputs = uniform(needs, size // 2)
        levels.append(LevelPlan(inputs, conv1_inputs, outputs))
        outputs = inputs  # the block below must deliver x and image over this block's inputs
    return GroupPlan(group.samples, tuple(reversed(levels)))


def plan_ladder(groups: Sequence[CropGroup], out_sizes: Sequence[int], channels: Sequence[tuple[int, int]],
                batch: int, mode: str) -> LadderPlan:
    """Which blocks of a ladder run on crops. `channels[l]` = (in, out) channels of block l.

    mode "crop" crops every block (used by tests: still exact); "auto" crops the top blocks down to the
    first one (from the top) whose crops would cost more than CROP_WORTH of the dense block, counting the
    multiply-adds of conv0 over its whole output crop and of conv1 over its input crop.
    """
    num_blocks = len(out_sizes)
    plans = tuple(plan_group(g, out_sizes) for g in groups)
    if mode == "dense":
        return LadderPlan(num_blocks, ())
    if mode == "crop":
        return LadderPlan(0, plans)
    first = num_blocks
    for level in reversed(range(num_blocks)):
        size = out_sizes[level]
        c_in, c_out = channels[level]
        crop = 0
        for plan in plans:
            lp = plan.levels[level]
            conv0 = 4 * lp.inputs[0].area * c_in * c_out
            crop += len(plan.samples) * (conv0 + lp.conv1_inputs[0].area * c_out * c_out)
        dense = batch * size * size * (c_in * c_out + c_out * c_out)
        if crop > CROP_WORTH * dense:
            break
        first = level
    return LadderPlan(first, plans if first < num_blocks else ())


def gather(source: torch.Tensor, boxes: Sequence[Box], *, samples: Sequence[int] | None = None,
           origins: Sequence[Box] | None = None) -> torch.Tensor:
    """Crops of one size, stacked (K×C×h×w, channels-last): crop k is `boxes[k]` of either a full map
    `source[samples[k]]` (N×C×H×W), or of crop k of a stack `source` whose crop k starts at `origins[k]`."""
    height, width = boxes[0].height, boxes[0].width
    out = torch.empty((len(boxes), source.shape[1], height, width), dtype=source.dtype, device=source.device,
                      memory_format=torch.channels_last)
    for k, box in enumerate(boxes):
        if origins is None:
            src, oy, ox = source[samples[k]], 0, 0
        else:
            src, oy, ox = source[k], origins[k].y0, origins[k].x0
        out[k].copy_(src[:, box.y0 - oy: box.y1 - oy, box.x0 - ox: box.x1 - ox])
    return out


@dataclass
class CropState:
    """x and the running image of one group between blocks: stacks over `boxes` (at their resolution),
    or, below the first cropped block, the dense maps (boxes None)."""

    x: torch.Tensor
    img: torch.Tensor | None
    boxes: tuple[Box, ...] | None


def run_block_on_crops(block, state: CropState, skip: torch.Tensor, style: torch.Tensor, level: LevelPlan,
                       samples: Sequence[int], crop_sample: torch.Tensor,
                       noise0: torch.Tensor | None, noise1: torch.Tensor | None) -> CropState:
    """One up-sampling block (`conv0` up, skip add, `conv1`, `toRGB` with the image skip) over crops.

    `skip` is the block's full skip map (N×C×R×R); noise0/noise1 the full noise maps of conv0/conv1
    (N×1×R×R, already scaled; see `StyleConv.noise_map`) or None.
    """
    def read(t: torch.Tensor | None, boxes) -> torch.Tensor | None:
        if t is None:
            return None
        if state.boxes is None:
            return gather(t, boxes, samples=samples)
        if state.boxes == tuple(boxes):
            return t
        return gather(t, boxes, origins=state.boxes)

    x = read(state.x, level.inputs)
    img = read(state.img, level.inputs)
    conv0_out = tuple(b.scaled(2) for b in level.inputs)
    noise = None if noise0 is None else gather(noise0, conv0_out, samples=samples)
    y = block.conv0(x, style, crop_sample=crop_sample, noise_crops=noise)
    y = gather(y, level.conv1_inputs, origins=conv0_out)
    y.add_(gather(skip, level.conv1_inputs, samples=samples).to(y.dtype))
    noise = None if noise1 is None else gather(noise1, level.conv1_inputs, samples=samples)
    y = block.conv1(y, style, crop_sample=crop_sample, noise_crops=noise, overwrite_input=True)
    x = gather(y, level.outputs, origins=level.conv1_inputs)
    if img is not None:
        img = gather(block.toRGB.upsample(img), level.outputs, origins=conv0_out)
    img = block.toRGB(x, style, skip=img, crop_sample=crop_sample)
    return CropState(x, img, level.outputs)


def run_ladder(blocks: Sequence, skips: Sequence[torch.Tensor], x: torch.Tensor, img: torch.Tensor | None,
               style: torch.Tensor, plan: LadderPlan, noise_mode: str) -> tuple[torch.Tensor | None, list[CropState]]:
    """Run a ladder of up-sampling blocks: the dense ones, then (level by level, so that random noise is
    drawn in the dense order) each group's crops. Returns the dense image (None when the top block ran on
    crops) and each group's final state (image stacks over the top boxes)."""
    for block, skip in zip(blocks[:plan.first_cropped], skips):
        x, img = block(x, img, style, skip, noise_mode=noise_mode)
    if plan.is_dense(len(blocks)):
        return img, []
    states = [CropState(x, img, None) for _ in plan.groups]
    crop_samples = [torch.as_tensor(g.samples, device=x.device) for g in plan.groups]
    for level in range(plan.first_cropped, len(blocks)):
        block = blocks[level]
        noise0 = block.conv0.noise_map(x.shape[0], x.device, noise_mode)
        noise1 = block.conv1.noise_map(x.shape[0], x.device, noise_mode)
        for g, group in enumerate(plan.groups):
            states[g] = run_block_on_crops(block, states[g], skips[level], style, group.levels[level], group.samples,
                                           crop_samples[g], noise0, noise1)
    return None, states


def composite(images: torch.Tensor, keep_masks: torch.Tensor, dense_img: torch.Tensor | None,
              states: Sequence[CropState], plan: LadderPlan) -> torch.Tensor:
    """`img·(1 − m) + images·m` as the dense forward computes it, from the dense image or from the crops:
    outside every crop m = 1, and there the dense expression gives `images·m` exactly (its first term
    is ±0), so only the crops' own boxes need the generated values."""
    if dense_img is not None:
        return dense_img * (1 - keep_masks) + images * keep_masks
    known = images * keep_masks
    out = None
    for state, group in zip(states, plan.groups):
        for k, (sample, box) in enumerate(zip(group.samples, state.boxes)):
            region = (slice(box.y0, box.y1), slice(box.x0, box.x1))
            m = keep_masks[sample, :, region[0], region[1]]
            value = state.img[k] * (1 - m) + images[sample, :, region[0], region[1]] * m
            if out is None:
                out = known.to(value.dtype, copy=True)
            out[sample, :, region[0], region[1]] = value
    return known.clone() if out is None else out

"""Hole-aware decoding gives the dense forward's output: the receptive-field rules behind it, the hole
boxes, and whole forwards (dense against crops) over many hole shapes, sizes and positions.

Whole forwards are compared image by image, relative to the image's largest output value. In float64 the
only difference between dense and cropped decoding is rounding (≈ 1e-13): one such test holds the crops
to 1e-10. float64 convolutions are slow on CPU, so the many-shapes tests run in float32, where rounding
differs by ≈ 1e-6 and the tolerance is 1e-4: a wrong or missing halo pixel changes outputs next to it by
≳ 1e-2 of the image's range.
"""
from __future__ import annotations

import copy

import pytest
import torch

from matcore.generator import Generator, sample_latents
from matcore.hole_decode import conv3_need, up_conv_need, upsample_need
from matcore.hole_regions import Box, group_crops, hole_boxes
from matcore.resample import conv2d_resample, setup_filter, upsample2d

F64_REL_MAX = 1e-10
F32_REL_MAX = 1e-4  # float32: convolutions over crops round differently from the dense ones (measured ≈ 1e-6)


def _dependencies(op, in_size: int) -> dict[int, set[int]]:
    """Output column → the input columns it depends on, by impulse responses on a one-row image (the
    layers are separable, so their columns behave alike in every row)."""
    deps: dict[int, set[int]] = {}
    for i in range(in_size):
        x = torch.zeros(1, 1, 1, in_size, dtype=torch.float64)
        x[..., i] = 1
        for j in (op(x)[0, 0].abs().sum(dim=0) > 0).nonzero().flatten().tolist():
            deps.setdefault(j, set()).add(i)
    return deps


def _up_conv(x):
    return conv2d_resample(x, torch.ones(1, 1, 3, 3, dtype=x.dtype), setup_filter().double(), up=2, padding=1)


def _upsample(x):
    return upsample2d(x, setup_filter().double())


def _conv3(x):
    return torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3, dtype=x.dtype), padding=1)


@pytest.mark.parametrize("op, need, scale", [(_conv3, conv3_need, 1), (_up_conv, up_conv_need, 2),
                                             (_upsample, upsample_need, 2)])
def test_receptive_field_rules_equal_the_layers_impulse_responses(op, need, scale):
    in_size = 12
    deps = _dependencies(op, in_size)
    for a in range(in_size * scale):
        for b in range(a + 1, in_size * scale + 1):
            true = set().union(*(deps[j] for j in range(a, b)))
            box = need(Box(0, 1, a, b), in_size)
            # Tight: exactly the columns the outputs read (a superset would be exact but wasteful).
            assert set(range(box.x0, box.x1)) == set(range(min(true), max(true) + 1)), (a, b)


def _keep(size: int, *holes: tuple[slice, slice]) -> torch.Tensor:
    keep = torch.ones(1, 1, size, size)
    for rows, cols in holes:
        keep[..., rows, cols] = 0
    return keep


def test_hole_boxes_cover_every_hole_pixel_and_keep_far_regions_apart():
    # A logo top-left and a line bottom-right: two boxes, not one covering the picture.
    keep = _keep(256, (slice(4, 40), slice(6, 60)), (slice(240, 246), slice(100, 250)))
    (boxes,) = hole_boxes(keep, margin=8)
    assert sorted(boxes, key=lambda b: b.y0) == [Box(4, 40, 6, 60), Box(240, 246, 100, 250)]
    # Soft values count as holes; an image without a hole gets no box.
    soft = torch.ones(2, 1, 64, 64)
    soft[0, 0, 10, 20] = 0.5
    assert hole_boxes(soft, margin=8) == [[Box(10, 11, 20, 21)], []]


def test_hole_boxes_merge_close_regions_and_cover_random_masks():
    g = torch.Generator().manual_seed(0)
    keep = (torch.rand(3, 1, 128, 128, generator=g) > 0.002).float()  # scattered single pixels
    for i, boxes in enumerate(hole_boxes(keep, margin=8)):
        covered = torch.zeros(128, 128, dtype=torch.bool)
        for b in boxes:
            covered[b.y0:b.y1, b.x0:b.x1] = True
        assert covered[keep[i, 0] != 1].all()
        assert 1 <= len(boxes) <= 8


def test_crop_groups_pad_alike_boxes_together_and_keep_unlike_ones_apart():
    line, logo = Box(0, 20, 0, 500), Box(400, 500, 400, 500)
    cpu_groups = group_crops([[line, logo]], margin=8, call_overhead_px=1024)
    assert sorted(len(g.boxes) for g in cpu_groups) == [1, 1]  # padding both to 100×500 would cost 3×
    same = group_crops([[logo], [Box(0, 100, 0, 100)]], margin=8, call_overhead_px=1024)
    assert len(same) == 1 and same[0].samples == (0, 1)
    one_call = group_crops([[line, logo]], margin=8, call_overhead_px=512 * 512)  # a GPU: one stacked call
    assert len(one_call) == 1


def _with_noise(generator: Generator) -> Generator:
    """Noise switched on (the checkpoints' noise strengths are not zero; the random init's are)."""
    for name, param in generator.named_parameters():
        if name.endswith("noise_strength"):
            param.fill_(0.3)
    return generator


@pytest.fixture(scope="module")
def noisy_generator256():
    torch.manual_seed(1234)
    return _with_noise(Generator(256).eval().requires_grad_(False))


def _named_holes(size: int) -> torch.Tensor:
    """Borders, corners, thin strokes at odd positions, several regions, soft values, the full image, and
    an image without a hole, in four images."""
    keep = torch.ones(4, 1, size, size)
    keep[0, :, 0:13, 0:97] = 0  # a line in the top-left corner
    keep[0, :, 137:138, 11:190] = 0  # a 1-px stroke at odd coordinates
    keep[0, :, 60:200, 221:222] = 0  # and a vertical one
    keep[0, :, 100:130, 100:130] = 0.5  # a soft blob
    keep[1, :, 3:41, 5:57] = 0  # a logo top-left ...
    keep[1, :, size - 9:size, size - 150:size] = 0  # ... and a line on the bottom-right border
    keep[1, :, size - 20:size, 0:20] = 0  # the bottom-left corner
    for k in range(5):  # scattered dots
        keep[1, :, 57 + 37 * k: 60 + 37 * k, 230 - 31 * k: 234 - 31 * k] = 0
    keep[2] = 0  # the full image
    return keep  # keep[3]: no hole at all


def _random_holes(batch: int, size: int, seed: int) -> torch.Tensor:
    """Rectangles and strokes of random sizes and positions (borders included), 1-3 per image."""
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(batch, 1, size, size)

    def rint(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    for i in range(batch):
        for _ in range(rint(1, 4)):
            h, w = (rint(1, 6), rint(10, size)) if rint(0, 2) else (rint(1, size // 2), rint(1, size // 2))
            if rint(0, 2):
                h, w = w, h
            y, x = rint(0, size - h + 1), rint(0, size - w + 1)
            keep[i, :, y:y + h, x:x + w] = 0
    return keep


def _compare(generator, keep, seeds, mode, noise_mode="const", dtype=torch.float64):
    g = torch.Generator().manual_seed(sum(seeds))
    images = (torch.rand(keep.shape[0], 3, keep.shape[-1], keep.shape[-1], generator=g) * 2 - 1).to(dtype)
    z, k1, k2 = sample_latents(seeds)
    outputs = []
    for decode in ("dense", mode):
        torch.manual_seed(7)  # the same draws for noise_mode="random"
        with torch.inference_mode():
            outputs.append(generator(images, keep.to(dtype), z.to(dtype), keep_maps=(k1, k2), noise_mode=noise_mode,
                                     return_stg1=True, decode=decode))
    (dense, dense_stg1), (hole, hole_stg1) = outputs
    known = (keep == 1).expand_as(images)
    for name, d, h in (("out", dense, hole), ("stg1", dense_stg1, hole_stg1)):
        assert torch.equal(h[known], images[known]), f"{name}: known pixels changed"
        err = (h - d).abs().amax(dim=(1, 2, 3)) / d.abs().amax(dim=(1, 2, 3))
        assert float(err.max()) <= (F64_REL_MAX if dtype == torch.float64 else F32_REL_MAX), \
            f"{name}: relative max error per image {err.tolist()}"


def test_cropped_decoding_equals_dense_on_named_hole_shapes(noisy_generator256):
    _compare(noisy_generator256, _named_holes(256), [1, 2, 3, 4], "crop", dtype=torch.float32)


def test_automatic_decoding_equals_dense_on_random_holes(noisy_generator256):
    _compare(noisy_generator256, _random_holes(3, 256, seed=11), [11, 12, 13], "auto", dtype=torch.float32)


def test_cropped_decoding_in_float64_equals_dense_to_rounding(noisy_generator256):
    # One image, several regions (corner, border, a 3-px stroke): batch 1 takes the fused-weight
    # formulation, and random noise must be drawn in the dense order.
    keep = _keep(256, (slice(0, 30), slice(0, 30)), (slice(128, 131), slice(7, 250)),
                 (slice(200, 256), slice(221, 256)))
    generator = copy.deepcopy(noisy_generator256).double()
    _compare(generator, keep, [9], "crop", noise_mode="random")


def test_decode_mode_is_checked(generator256):
    with pytest.raises(ValueError, match="decode"):
        generator256(torch.zeros(1, 3, 256, 256), torch.ones(1, 1, 256, 256), torch.zeros(1, 512), decode="sparse")


@pytest.mark.slow  # bfloat16 is emulated (tens of times slower than float32) on CPUs without AVX512-BF16
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_reduced_precision_hole_decoding_stays_as_close_as_dense(generator256, dtype):
    keep = _keep(256, (slice(0, 20), slice(0, 120)), (slice(230, 256), slice(150, 256)))
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z, k1, k2 = sample_latents([4])
    outs = {}
    with torch.inference_mode():
        for decode in ("dense", "auto"):
            with torch.autocast("cpu", dtype=dtype):
                outs[decode] = generator256(images, keep, z, keep_maps=(k1, k2), decode=decode)
        with torch.autocast("cpu", enabled=False):
            reference = generator256(images, keep, z, keep_maps=(k1, k2), decode="dense")
    hole = ~keep.bool().expand_as(images)

    def err(out):
        return float((out[hole] - reference[hole]).norm() / reference[hole].norm())

    # Crops round differently from the dense map, but no worse: both stay at bf16's distance from float32.
    assert err(outs["auto"]) <= max(2 * err(outs["dense"]), 1e-3)
    assert torch.isfinite(outs["auto"]).all()


@pytest.mark.slow
def test_hole_decoding_at_512_equals_dense_for_watermark_holes():
    torch.manual_seed(1234)
    generator = _with_noise(Generator(512).eval().requires_grad_(False))
    keep = torch.ones(2, 1, 512, 512)
    keep[0, :, 480:505, 250:505] = 0  # a line in the bottom-right corner
    keep[0, :, 8:70, 10:130] = 0  # and a logo top-left
    keep[1, :, 300:301, 3:300] = 0  # a thin stroke
    _compare(generator, keep, [1, 2], "auto", dtype=torch.float32)

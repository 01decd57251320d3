"""The Inpainter: any image size, exact outside the hole, reproducible per image seed, batched.

Geometry and bookkeeping are tested with a tiny stand-in model (fast, many shapes); the numerics with a
randomly-weighted MAT-256 (a handful of forwards, each a few seconds on CPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from matcore import Inpainter, sample_latents
from matcore.inpainter import _mix64, window_seed

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MAGENTA = np.array([255, 0, 255], np.uint8)  # what the tests "remove": no fill may leave it behind
TOY_RESOLUTION = 32


class ToyGenerator(nn.Module):
    """Stands in for MAT where only geometry matters: keeps known pixels, fills the hole with a grey level
    drawn from z plus a horizontal ramp (fills differ per seed and per position, never magenta), and
    records every call."""

    def __init__(self, resolution: int = TOY_RESOLUTION, poison: bool = False) -> None:
        super().__init__()
        self.img_resolution = resolution
        self.poison = poison
        self.calls: list[dict[str, torch.Tensor]] = []
        self.register_buffer("ramp", torch.linspace(-0.3, 0.3, resolution))

    def forward(self, images, masks, z, *, truncation_psi=1.0, noise_mode="const", keep_maps=None):
        r = self.img_resolution
        assert images.shape[1:] == (3, r, r) and masks.shape[1:] == (1, r, r) and z.shape == (len(images), 512)
        assert keep_maps is not None and len(keep_maps[0]) == len(images)
        self.calls.append({"images": images.clone(), "masks": masks.clone(), "z": z.clone()})
        level = torch.tanh(z[:, :1]).view(-1, 1, 1, 1) * 0.5
        fill = (level + self.ramp.view(1, 1, 1, r)).expand_as(images)
        out = images * masks + fill * (1 - masks)
        return out * float("nan") if self.poison else out


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random image that never contains the magenta marker."""
    return np.random.default_rng(seed).integers(0, 200, (height, width, 3), dtype=np.uint8)


def watermark(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    marked = image.copy()
    marked[hole] = MAGENTA
    return marked


def assert_restored(source: np.ndarray, hole: np.ndarray, restored: np.ndarray) -> None:
    assert restored.dtype == np.uint8 and restored.shape == source.shape
    assert np.array_equal(restored[~hole], source[~hole]), "a pixel outside the hole changed"
    assert not (restored[hole] == MAGENTA).all(axis=-1).any(), "a hole pixel was not filled"


def _hole(shape, *boxes) -> np.ndarray:
    hole = np.zeros(shape, bool)
    for y0, y1, x0, x1 in boxes:
        hole[y0:y1, x0:x1] = True
    return hole


def _stroke(shape) -> np.ndarray:
    hole = np.zeros(shape, bool)
    idx = np.arange(min(shape))
    hole[idx, idx] = True  # 1-px diagonal
    hole[shape[0] // 2, :] = True  # 1-px horizontal line through the whole image
    return hole


def _specks(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < 0.01


EDGE_CASES = {
    "touches all four borders": _hole((90, 120), (0, 5, 0, 120), (85, 90, 0, 120), (0, 90, 0, 3), (0, 90, 117, 120)),
    "corner watermark": _hole((150, 200), (130, 150, 140, 200)),
    "thin strokes": _stroke((100, 140)),
    "scattered specks": _specks((160, 130)),
    "whole image": np.ones((40, 70), bool),
    "hole larger than a window": _hole((200, 150), (20, 180, 30, 120)),
    "1x1 image": np.ones((1, 1), bool),
    "3x5 image": _hole((3, 5), (1, 2, 0, 5)),
    "7x7 image": _hole((7, 7), (0, 7, 3, 4)),
    "wide strip": _hole((6, 300), (0, 6, 140, 160)),
}


@pytest.mark.parametrize("strategy", ["auto", "crop", "resize"])
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_every_hole_pixel_is_filled_and_nothing_else_changes(case, strategy):
    hole = EDGE_CASES[case]
    source = watermark(photo(*hole.shape), hole)
    inpainter = Inpainter(ToyGenerator(), strategy=strategy)
    (restored,) = inpainter.inpaint([source], [hole], [7])
    assert_restored(source, hole, restored)


@pytest.mark.parametrize("hole", [
    _hole((200, 200), (70, 130, 70, 130)),  # downscaled window
    _hole((20, 300), (5, 15, 0, 10)),        # mirrored padding above and below
], ids=["downscaled", "padded"])
def test_removed_pixels_never_serve_as_context(hole):
    grey = np.full(hole.shape + (3,), 128, np.uint8)
    toy = ToyGenerator()
    Inpainter(toy).inpaint([watermark(grey, hole)], [hole], [0])
    for call in toy.calls:
        known = call["masks"].expand_as(call["images"]) > 0.5
        assert torch.allclose(call["images"][known], torch.tensor(128 / 127.5 - 1), atol=1e-4)


def test_empty_mask_returns_the_input_without_a_model_call():
    toy = ToyGenerator()
    source = photo(50, 60)
    (result,) = Inpainter(toy).inpaint_results([source], [np.zeros((50, 60), bool)], [3])
    assert np.array_equal(result.image, source) and result.image is not source
    assert result.windows == 0
    assert toy.calls == []


def test_windows_of_different_images_share_fixed_size_batches():
    toy = ToyGenerator()
    holes = [_hole((40, 40), (10, 20, 10, 20)) for _ in range(5)]
    images = [watermark(photo(40, 40, seed), hole) for seed, hole in enumerate(holes)]
    Inpainter(toy, batch_size=2).inpaint(images, holes, list(range(5)))
    assert [len(call["images"]) for call in toy.calls] == [2, 2, 1]


def test_each_window_draws_its_latents_from_its_own_seed():
    toy = ToyGenerator()
    hole = _hole((40, 400), (10, 20, 5, 15), (10, 20, 380, 390))  # far apart: two windows
    inpainter = Inpainter(toy, strategy="crop")
    assert len(inpainter.plan(hole).windows) == 2
    inpainter.inpaint([watermark(photo(40, 400), hole)], [hole], [42])
    (call,) = toy.calls
    expected_z, _, _ = sample_latents([window_seed(42, 0), window_seed(42, 1)])
    assert torch.equal(call["z"], expected_z)


def test_seed_decides_the_fill_and_the_batch_does_not():
    hole = _hole((64, 64), (20, 40, 20, 40))
    image = watermark(photo(64, 64), hole)
    others = [watermark(photo(64, 64, s), hole) for s in (1, 2, 3)]
    alone = Inpainter(ToyGenerator(), batch_size=1).inpaint([image], [hole], [5])[0]
    batched = Inpainter(ToyGenerator(), batch_size=4).inpaint([*others, image], [hole] * 4, [9, 8, 7, 5])[3]
    again = Inpainter(ToyGenerator(), batch_size=1).inpaint([image], [hole], [5])[0]
    reseeded = Inpainter(ToyGenerator(), batch_size=1).inpaint([image], [hole], [6])[0]
    assert np.array_equal(alone, batched) and np.array_equal(alone, again)
    assert not np.array_equal(alone[hole], reseeded[hole])


def test_window_seeds_are_stable_and_distinct():
    # Pinned: changing the mix would silently change every user's reproducible outputs. The mix is
    # SplitMix64, whose first output from state 0 is the published 0xE220A8397B1DCDAF.
    assert window_seed(0, 0) == _mix64(0xE220A8397B1DCDAF) >> 1 == 6017775124710473527
    assert window_seed(123, 4) == 8349492626751870945
    seeds = {window_seed(s, i) for s in range(200) for i in range(10)}
    assert len(seeds) == 2000
    assert all(0 <= s < 2**63 for s in seeds)
    assert window_seed(-1, 0) != window_seed(1, 0)


def test_results_record_engine_device_precision_and_windows():
    hole = _hole((40, 400), (10, 20, 5, 15), (10, 20, 380, 390))
    (result,) = Inpainter(ToyGenerator(), strategy="crop").inpaint_results([photo(40, 400)], [hole], [1])
    assert (result.windows, result.seed) == (2, 1)
    assert (result.info.engine, result.info.model, result.info.device, result.info.dtype) == (
        "mat", f"MAT-{TOY_RESOLUTION}", "cpu", "float32")


def test_non_finite_model_output_is_an_error_not_garbage():
    hole = _hole((40, 40), (10, 20, 10, 20))
    with pytest.raises(FloatingPointError, match="float32"):
        Inpainter(ToyGenerator(poison=True)).inpaint([photo(40, 40)], [hole], [0])


@pytest.mark.parametrize("images, holes, seeds", [
    ([photo(10, 10)], [np.full((10, 10), 255, np.uint8)], [0]),     # 0/255 says nothing about the convention
    ([photo(10, 10)], [np.zeros((10, 11), bool)], [0]),              # wrong size
    ([photo(10, 10).astype(np.float32)], [np.zeros((10, 10), bool)], [0]),
    ([photo(10, 10)[..., :2]], [np.zeros((10, 10), bool)], [0]),
    ([photo(10, 10)], [np.zeros((10, 10), bool)], []),               # no seed
    ([photo(10, 10)], [np.zeros((10, 10), bool)], [1.5]),
], ids=["uint8-hole", "hole-size", "float-image", "two-channels", "missing-seed", "float-seed"])
def test_bad_inputs_are_refused(images, holes, seeds):
    with pytest.raises(ValueError):
        Inpainter(ToyGenerator()).inpaint(images, holes, seeds)


def test_bad_settings_are_refused():
    for settings in (dict(batch_size=0), dict(dtype="float64"), dict(strategy="tile"), dict(margin=16)):
        with pytest.raises(ValueError):
            Inpainter(ToyGenerator(), **settings)


# ------------------------------------------------------------------------------- real MAT-256 forwards


def cbsd68_photo() -> np.ndarray:
    with Image.open(FIXTURES / "cbsd68" / "3096.jpg") as image:
        return np.asarray(image.convert("RGB")).copy()


def test_single_window_equals_the_generator_called_directly(generator256):
    """Correct normalisation, mask convention, latents and rounding — and so deterministic: two separate
    computations of the same image and seed agree bit for bit."""
    hole = _hole((256, 256), (90, 150, 40, 200))
    source = watermark(cbsd68_photo()[:256, :256], hole)
    (restored,) = Inpainter(generator256).inpaint([source], [hole], [5])

    pixels = torch.from_numpy(source).permute(2, 0, 1)[None].float() / 127.5 - 1
    keep = torch.from_numpy(~hole)[None, None].float()
    z, k1, k2 = sample_latents([window_seed(5, 0)])
    with torch.inference_mode():
        direct = generator256(pixels, keep, z, keep_maps=(k1, k2))
    direct_u8 = ((direct[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert_restored(source, hole, restored)
    assert np.array_equal(restored[hole], direct_u8[hole])


def test_real_model_is_exact_outside_and_batch_invariant(generator256):
    full = cbsd68_photo()
    holes = [
        _hole((321, 481), (285, 315, 360, 470)),    # corner watermark: one full-resolution window at the border
        _hole((100, 70), (30, 60, 0, 25)),          # small image: padded; hole touches the left border
        _hole((300, 300), (50, 250, 50, 250)),      # big hole: downscaled window
    ]
    sources = [watermark(full, holes[0]), watermark(full[:100, :70], holes[1]),
               watermark(full[:300, 100:400], holes[2])]

    batched = Inpainter(generator256, batch_size=3).inpaint(sources, holes, [11, 12, 13])  # one forward of 3
    (alone,) = Inpainter(generator256, batch_size=1).inpaint([sources[2]], [holes[2]], [13])

    for source, hole, restored in zip(sources, holes, batched):
        assert_restored(source, hole, restored)
    assert np.abs(alone.astype(int) - batched[2].astype(int)).max() <= 1, "a different batch gave a different sample"


def test_bfloat16_runs_finite_and_is_recorded(generator256):
    hole = _hole((256, 256), (100, 140, 60, 200))
    source = watermark(cbsd68_photo()[:256, 100:356], hole)
    (result,) = Inpainter(generator256, dtype=torch.bfloat16).inpaint_results([source], [hole], [3])
    assert result.info.dtype == "bfloat16"
    assert_restored(source, hole, result.image)

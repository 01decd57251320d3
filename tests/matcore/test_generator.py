"""Behaviour of the generator API beyond parity: seeded randomness, input checks, the discriminator."""
from __future__ import annotations

import pytest
import torch

from matcore import Discriminator, Generator, sample_latents


@pytest.fixture(scope="module")
def generator256():
    torch.manual_seed(0)
    return Generator(256).eval()


def _inputs(batch: int, resolution: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, resolution, resolution, generator=g) * 2 - 1
    masks = torch.ones(batch, 1, resolution, resolution)
    masks[:, :, resolution // 4 : resolution // 2, resolution // 3 : 2 * resolution // 3] = 0
    return images, masks


def test_sample_latents_depend_only_on_each_seed():
    z, k1, k2 = sample_latents([5, 6, 7])
    z_alone, k1_alone, k2_alone = sample_latents([6])
    assert z.shape == (3, 512) and k1.shape == (3, 256, 180) and k2.shape == (3, 512, 16, 16)
    torch.testing.assert_close(z[1:2], z_alone, rtol=0, atol=0)
    torch.testing.assert_close(k1[1:2], k1_alone, rtol=0, atol=0)
    torch.testing.assert_close(k2[1:2], k2_alone, rtol=0, atol=0)
    assert not torch.equal(z[0], z[1])
    assert set(k1.unique().tolist()) == {0.0, 1.0} and set(k2.unique().tolist()) == {0.0, 1.0}
    # Dropout at p=0.5 keeps about half.
    assert 0.45 < float(k1.mean()) < 0.55


def test_same_seed_gives_same_output_alone_or_in_a_batch(generator256):
    images, masks = _inputs(2)
    with torch.inference_mode():
        z, kw = _latents([11, 12])
        batch_out = generator256(images, masks, z, **kw)
        z1, kw1 = _latents([12])
        single_out = generator256(images[1:], masks[1:], z1, **kw1)
    torch.testing.assert_close(batch_out[1:], single_out, rtol=1e-4, atol=1e-3)


def _latents(seeds):
    z, k1, k2 = sample_latents(seeds)
    return z, {"keep_maps": (k1, k2)}


def test_known_pixels_pass_through_unchanged(generator256):
    images, masks = _inputs(1)
    z, k1, k2 = sample_latents([3])
    with torch.inference_mode():
        out, stg1 = generator256(images, masks, z, keep_maps=(k1, k2), return_stg1=True)
    keep = masks.bool().expand_as(images)
    assert torch.equal(out[keep], images[keep])
    assert torch.equal(stg1[keep], images[keep])
    assert torch.isfinite(out).all()
    assert not torch.equal(out[~keep], images[~keep])


def test_official_random_keep_maps_when_none_given(generator256):
    images, masks = _inputs(1)
    z = torch.zeros(1, 512)
    with torch.inference_mode():
        torch.manual_seed(1)
        first = generator256(images, masks, z)
        torch.manual_seed(1)
        again = generator256(images, masks, z)
    assert torch.equal(first, again)


@pytest.mark.parametrize(
    "images_shape, masks_shape",
    [((1, 3, 512, 512), (1, 1, 512, 512)), ((1, 3, 256, 256), (1, 3, 256, 256)), ((2, 3, 256, 256), (1, 1, 256, 256))],
)
def test_wrong_input_shapes_are_rejected_with_a_clear_message(generator256, images_shape, masks_shape):
    with pytest.raises(ValueError, match="256|masks"):
        generator256(torch.zeros(images_shape), torch.ones(masks_shape), torch.zeros(images_shape[0], 512))


def test_unsupported_resolution_and_noise_mode_are_rejected(generator256):
    with pytest.raises(ValueError, match="resolution"):
        Generator(384)
    images, masks = _inputs(1)
    with pytest.raises(ValueError, match="noise_mode"):
        generator256(images, masks, torch.zeros(1, 512), noise_mode="loud")


def test_discriminator_scores_both_stages():
    torch.manual_seed(0)
    discriminator = Discriminator(256).eval()
    images, masks = _inputs(2)
    with torch.inference_mode():
        score, score_stg1 = discriminator(images, masks, images)
    assert score.shape == (2, 1) and score_stg1.shape == (2, 1)
    assert torch.isfinite(score).all() and torch.isfinite(score_stg1).all()

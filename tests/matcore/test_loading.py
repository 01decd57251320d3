"""load_generator: official, IOPaint-style and safetensors weights become the same ready Generator."""
from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

import matcore.loading as loading
from matcore import Generator, load_generator, sample_latents
from matcore.loading import CheckpointMismatchError, generator_from_state_dict

NOISE_SUFFIXES = (".noise_const", ".noise_strength")


@pytest.fixture(scope="module")
def filled_state_dict_256(fill_state_dict):
    return fill_state_dict(Generator(256).state_dict())


def _forward(generator, noise_mode="const"):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    masks = torch.ones(1, 1, 256, 256)
    masks[..., 64:160, 80:200] = 0
    z, k1, k2 = sample_latents([9])
    with torch.inference_mode():
        return generator(images, masks, z, keep_maps=(k1, k2), noise_mode=noise_mode)


def test_resolution_is_inferred_and_weights_load_exactly(filled_state_dict_256):
    generator = generator_from_state_dict(filled_state_dict_256)
    assert generator.img_resolution == 256 and generator.use_noise
    assert not generator.training
    assert not any(p.requires_grad for p in generator.parameters())
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, filled_state_dict_256[name]), name


def test_prefixed_keys_and_absent_computed_buffers_are_accepted(filled_state_dict_256):
    stripped = {f"module.{k}": v for k, v in filled_state_dict_256.items()
                if not k.endswith((".attn_mask", ".resample_filter"))}
    generator = generator_from_state_dict(stripped)
    assert torch.equal(generator.state_dict()["synthesis.to_square.weight"],
                       filled_state_dict_256["synthesis.to_square.weight"])
    # The computed buffers are rebuilt, not left empty.
    assert float(generator.state_dict()["synthesis.first_stage.tran.0.blocks.1.attn_mask"].min()) == -100.0


def test_iopaint_style_checkpoint_without_noise_loads_and_runs_noise_free(filled_state_dict_256, caplog, monkeypatch):
    monkeypatch.setattr(loading, "_warned_no_noise", False)
    without_noise = {k: v for k, v in filled_state_dict_256.items() if not k.endswith(NOISE_SUFFIXES)}
    assert len(filled_state_dict_256) - len(without_noise) == 18  # 9 style convs at 256, 2 entries each
    with caplog.at_level(logging.WARNING, logger="matcore.loading"):
        generator = generator_from_state_dict(without_noise)
        generator_from_state_dict(without_noise)
    assert not generator.use_noise
    assert sum("noise disabled" in r.getMessage() for r in caplog.records) == 1, "said once, not per load"

    official = generator_from_state_dict(filled_state_dict_256)
    torch.testing.assert_close(_forward(generator), _forward(official, noise_mode="none"), rtol=0, atol=0)


def test_mismatched_checkpoint_names_what_differs(filled_state_dict_256):
    broken = dict(filled_state_dict_256)
    del broken["synthesis.to_square.bias"]
    broken["synthesis.extra.weight"] = torch.zeros(3)
    broken["mapping.fc0.weight"] = torch.zeros(512, 7)
    with pytest.raises(CheckpointMismatchError) as info:
        generator_from_state_dict(broken)
    message = str(info.value)
    assert "missing: synthesis.to_square.bias" in message
    assert "unexpected: synthesis.extra.weight" in message
    assert "mapping.fc0.weight: checkpoint (512, 7) vs model (512, 512)" in message


def test_not_a_mat_state_dict_is_rejected():
    with pytest.raises(CheckpointMismatchError, match="not a MAT generator"):
        generator_from_state_dict({"conv.weight": torch.zeros(1)})


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_load_generator_reads_files_end_to_end(tmp_path, filled_state_dict_256, fmt):
    path = tmp_path / f"weights.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in filled_state_dict_256.items()}, str(path))
    else:
        torch.save({f"module.{k}": v for k, v in filled_state_dict_256.items()}, path)
    generator = load_generator(path)
    assert generator.img_resolution == 256
    assert torch.equal(generator.state_dict()["mapping.w_avg"], filled_state_dict_256["mapping.w_avg"])

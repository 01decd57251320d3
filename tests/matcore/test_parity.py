"""Our MAT equals the official one: same state-dict names/shapes, same outputs for the same weights.

The reference outputs were produced by the official implementation on CPU in float32 (see
tests/fixtures/mat/README.md). The tolerance is part of the contract: never loosen it.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matcore import Discriminator, Generator
from tests.conftest import MAT_FIXTURES, PARITY_CASES, load_parity_case, rel_l2

REL_L2_MAX = 1e-4
ABS_MAX = 1e-2


def _manifest(name: str) -> dict:
    return json.loads((MAT_FIXTURES / f"manifest_{name}.json").read_text())


def _assert_matches_manifest(module: torch.nn.Module, manifest: dict) -> None:
    state = module.state_dict()
    assert list(state) == list(manifest), "state-dict names (and order) differ from the official ones"
    shapes = {k: list(v.shape) for k, v in state.items()}
    assert shapes == {k: v["shape"] for k, v in manifest.items()}
    params = {name for name, _ in module.named_parameters()}
    kinds = {k: "param" if k in params else "buffer" for k in state}
    assert kinds == {k: v["kind"] for k, v in manifest.items()}


@pytest.mark.parametrize("resolution", [512, 256])
def test_generator_state_dict_equals_official_manifest(resolution):
    _assert_matches_manifest(Generator(resolution), _manifest(f"G{resolution}"))


def test_discriminator_state_dict_equals_official_manifest():
    _assert_matches_manifest(Discriminator(512), _manifest("D512"))


@pytest.mark.parametrize("case_name", sorted(PARITY_CASES))
def test_outputs_equal_official(case_name, fill_state_dict):
    case, generator, images, masks, z, (k1, k2) = load_parity_case(case_name, fill_state_dict)
    np.testing.assert_array_equal(z.numpy(), np.load(MAT_FIXTURES / f"{case_name}_z.npy"))

    with torch.inference_mode():
        out, stg1 = generator(images, masks, z, truncation_psi=case["truncation_psi"],
                              noise_mode=case["noise_mode"], keep_maps=(k1, k2), return_stg1=True)

    for name, ours in (("out", out), ("stg1", stg1)):
        ref = torch.from_numpy(np.load(MAT_FIXTURES / f"{case_name}_{name}.npy"))
        assert ours.shape == ref.shape
        assert torch.isfinite(ours).all()
        assert rel_l2(ours, ref) <= REL_L2_MAX, f"{name}: rel-L2 {rel_l2(ours, ref):.3e}"
        assert float((ours - ref).abs().max()) <= ABS_MAX, f"{name}: max-abs {float((ours - ref).abs().max()):.3e}"

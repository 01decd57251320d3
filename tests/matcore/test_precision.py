"""Reduced precision: MAT under bfloat16 autocast stays close to the official float32 outputs, and the
places where half precision used to break (0/0 in the attention's normalisation and the partial conv's
mask arithmetic) stay finite."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from matcore.attention import WindowAttention
from matcore.layers import Conv2dLayerPartial
from tests.conftest import MAT_FIXTURES, PARITY_CASES, load_parity_case, rel_l2

BF16_REL_L2_MAX = 2e-2  # measured 0.6e-2 to 1.4e-2 on these fixtures (bench/NOTES.md)


@pytest.mark.parametrize("case_name", sorted(PARITY_CASES))
def test_bfloat16_autocast_stays_close_to_float32(case_name, fill_state_dict):
    case, generator, images, masks, z, (k1, k2) = load_parity_case(case_name, fill_state_dict)

    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, stg1 = generator(images, masks, z, truncation_psi=case["truncation_psi"],
                              noise_mode=case["noise_mode"], keep_maps=(k1, k2), return_stg1=True)

    keep = masks.bool().expand_as(images)
    for name, ours in (("out", out), ("stg1", stg1)):
        ref = torch.from_numpy(np.load(MAT_FIXTURES / f"{case_name}_{name}.npy"))
        assert ours.shape == ref.shape
        assert torch.isfinite(ours).all(), f"{name}: non-finite values under bfloat16"
        assert rel_l2(ours, ref) <= BF16_REL_L2_MAX, f"{name}: rel-L2 {rel_l2(ours, ref):.3e}"
        # Known pixels are copied, not recomputed, whatever the precision.
        assert torch.equal(ours[keep], images[keep])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_over_all_zero_tokens_stays_finite(dtype):
    # Tokens of a region no valid pixel has reached yet are exactly zero; normalising them in half
    # precision (whose eps underflows) used to give 0/0 = NaN.
    torch.manual_seed(0)
    attention = WindowAttention(dim=12, window_size=4, num_heads=2).eval()
    tokens = torch.randn(2, 16, 12)
    tokens[0] = 0
    valid = torch.ones(2, 16, 1)
    valid[0] = 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        out, _ = attention(tokens.to(dtype), valid)  # inside the model, tokens arrive in the autocast dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_partial_conv_over_an_all_hole_window_stays_finite(dtype):
    torch.manual_seed(0)
    conv = Conv2dLayerPartial(3, 8, kernel_size=3, activation="lrelu").eval()
    x = torch.randn(1, 3, 16, 16)
    keep = torch.ones(1, 1, 16, 16)
    keep[:, :, 4:12, 4:12] = 0  # interior pixels see no valid input: valid count 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        out, update = conv(x, keep)
    assert torch.isfinite(out).all()
    assert float(update[0, 0, 8, 8]) == 0.0 and float(update[0, 0, 0, 0]) == 1.0
    assert torch.equal(out[..., 6:10, 6:10], torch.zeros_like(out[..., 6:10, 6:10]))


# ------------------------------------------------------------------------------------------------ "auto"


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from matcore import precision

    assert precision._native_bf16("AVX512", frozenset({"avx512f", "avx512_bf16"}))
    assert precision._native_bf16("AVX512", frozenset({"amx_bf16", "amx_tile"}))
    assert not precision._native_bf16("AVX512", frozenset({"avx512f"}))  # AVX-512 without bf16 dot products
    assert not precision._native_bf16("AVX2", frozenset({"avx512_bf16"}))  # kernels held at AVX2: emulated
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("auto", "cpu") == "bfloat16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_precision("auto", "cpu") == "float32"
    # An explicit choice is honoured on every device.
    for name in ("float32", "bfloat16", "float16"):
        assert precision.resolve_precision(name, "cpu") == name


def test_cpu_flags_come_from_proc_cpuinfo(tmp_path):
    from matcore.precision import cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_auto_precision_on_cuda_follows_bf16_support(monkeypatch):
    from matcore import precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_precision("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve_precision("auto", "cuda:1") == "float32"

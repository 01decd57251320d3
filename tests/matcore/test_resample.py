"""FIR resampling against a direct numpy reading of its definition, over many random shapes and paddings.

The fast paths in matcore.resample (padding folded into the convolution, strided filtering, transposed
convolutions, crops split between the conv and an explicit slice) each cover a different corner of the
padding arithmetic; the parity fixtures exercise only the paddings MAT itself uses. Here every corner is
checked against the plain definition: zero-insert upsample → pad (negative = crop) → convolve → decimate.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from matcore.resample import conv2d_resample, filter2d, setup_filter, transpose_weight, upfirdn2d, upsample2d


def reference_upfirdn2d(x: np.ndarray, f: np.ndarray, up: int = 1, down: int = 1,
                        padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0) -> np.ndarray:
    """N×C×H×W float64, the definition written out: no convolution routine, one shifted add per tap."""
    n, c, h, w = x.shape
    if up > 1:  # each sample followed by up-1 zeros, in both directions
        z = np.zeros((n, c, h * up, w * up))
        z[:, :, ::up, ::up] = x
        x = z
    px0, px1, py0, py1 = padding
    x = np.pad(x, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    k = f * gain ** (f.ndim / 2)
    kh, kw = k.shape
    out_h, out_w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((n, c, out_h, out_w))
    flipped = k[::-1, ::-1]  # convolution, not correlation
    for i in range(kh):
        for j in range(kw):
            out += flipped[i, j] * x[:, :, i: i + out_h, j: j + out_w]
    return out[:, :, ::down, ::down]


def reference_conv2d(x: np.ndarray, w: np.ndarray, groups: int = 1) -> np.ndarray:
    """Grouped 2-D correlation, no padding, stride 1."""
    n, cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    out_h, out_w = h - kh + 1, wd - kw + 1
    out = np.zeros((n, cout, out_h, out_w))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        for ci in range(cin_g):
            for i in range(kh):
                for j in range(kw):
                    out[:, o] += w[o, ci, i, j] * x[:, g * cin_g + ci, i: i + out_h, j: j + out_w]
    return out


def reference_conv2d_resample(x: np.ndarray, w: np.ndarray, f: np.ndarray, up: int, down: int, padding: int,
                              groups: int) -> np.ndarray:
    """Upsample+pad+filter, then the plain convolution, then filter+decimate: the generic composition."""
    kh, kw = w.shape[2:]
    fw = f.shape[-1]
    p0 = p1 = padding
    if up > 1:
        p0 += (fw + up - 1) // 2
        p1 += (fw - up) // 2
    if down > 1:
        p0 += (fw - down + 1) // 2
        p1 += (fw - down) // 2
    if up > 1:
        x = reference_upfirdn2d(x, f, up=up, padding=(p0, p1, p0, p1), gain=up * up)
    else:
        x = reference_upfirdn2d(x, np.ones((1, 1)), padding=(p0, p1, p0, p1))
    x = reference_conv2d(x, w, groups)
    if down > 1:
        x = reference_upfirdn2d(x, f, down=down)
    return x


def _filter(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random asymmetric taps: a symmetric filter would hide a missing flip."""
    return rng.uniform(-1.0, 1.0, (size, size))


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    assert tuple(actual.shape) == expected.shape
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-10)


def _random_upfirdn_cases(count: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        up, down = [(1, 1), (1, 2), (1, 3), (2, 1), (3, 1)][rng.integers(5)]
        f = _filter(rng, int(rng.integers(1, 6)))
        h, w = (int(v) for v in rng.integers(1, 9, 2))
        padding = tuple(int(v) for v in rng.integers(-2, 5, 4))
        # Keep the padded (upsampled) extent at least the filter's size, so the output is not empty.
        if h * up + padding[2] + padding[3] < f.shape[0] or w * up + padding[0] + padding[1] < f.shape[1]:
            continue
        gain = float(rng.choice([1.0, 4.0, 0.5]))
        yield rng.standard_normal((2, 3, h, w)), f, up, down, padding, gain


@pytest.mark.parametrize("seed", range(4))
def test_upfirdn2d_equals_the_definition_for_any_padding_and_filter(seed):
    cases = list(_random_upfirdn_cases(400, seed))
    assert len(cases) > 250
    for x, f, up, down, padding, gain in cases:
        expected = reference_upfirdn2d(x, f, up, down, padding, gain)
        actual = upfirdn2d(torch.from_numpy(x), torch.from_numpy(f), up=up, down=down, padding=padding, gain=gain)
        _close(actual, expected)


def test_bias_is_added_after_filtering_in_every_path():
    rng = np.random.default_rng(7)
    f = setup_filter().double()
    bias = rng.standard_normal(3)
    x = rng.standard_normal((1, 3, 6, 5))
    for up, down, padding in [(1, 1, (1, 1, 1, 1)), (1, 2, (2, 1, 2, 1)), (1, 1, (2, 0, 1, 3)),
                              (2, 1, (2, 1, 2, 1)), (2, 1, (0, 3, -1, 2)), (2, 1, (3, 3, 3, 3))]:
        expected = reference_upfirdn2d(x, f.numpy(), up, down, padding) + bias[None, :, None, None]
        actual = upfirdn2d(torch.from_numpy(x), f, up=up, down=down, padding=padding, bias=torch.from_numpy(bias))
        _close(actual, expected)


def test_filter2d_and_upsample2d_are_the_named_special_cases():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 7, 9))
    f = setup_filter().double()
    _close(filter2d(torch.from_numpy(x), f, (1, 2, 2, 1), gain=2.0, down=2),
           reference_upfirdn2d(x, f.numpy(), 1, 2, (1, 2, 2, 1), 2.0))
    up = upsample2d(torch.from_numpy(x), f)
    assert tuple(up.shape) == (1, 2, 14, 18)  # exactly twice the size
    _close(up, reference_upfirdn2d(x, f.numpy(), up=2, padding=(2, 1, 2, 1), gain=4.0))
    # A constant image stays constant away from the borders (the filter is a normalised low-pass).
    flat = upsample2d(torch.ones(1, 1, 8, 8, dtype=torch.float64), f)
    np.testing.assert_allclose(flat[0, 0, 2:-2, 2:-2].numpy(), 1.0, rtol=1e-12)


def test_transpose_weight_turns_a_grouped_conv_into_its_transposed_conv():
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.standard_normal((1, 4, 6, 6)))
    w = torch.from_numpy(rng.standard_normal((6, 2, 3, 3)))  # groups=2: 4 in → 6 out
    # conv_transpose with the transposed weight and full padding equals conv with the original weight.
    expected = torch.nn.functional.conv2d(x, w, groups=2, padding=2)
    actual = torch.nn.functional.conv_transpose2d(x, transpose_weight(w, groups=2), groups=2)
    _close(actual, expected.numpy())


@pytest.mark.parametrize("up,down", [(1, 1), (1, 2), (2, 1)])
def test_conv2d_resample_equals_filter_then_conv_composition(up, down):
    rng = np.random.default_rng(100 * up + down)
    f = setup_filter().double()
    checked = 0
    for _ in range(60):
        k = int(rng.choice([1, 3]))
        groups = int(rng.choice([1, 2]))
        cin, cout = 2 * groups, 2 * groups
        padding = int(rng.integers(0, 3)) if k == 3 else 0
        h, w = (int(v) for v in rng.integers(4, 9, 2))
        x = rng.standard_normal((2, cin, h, w))
        weight = rng.standard_normal((cout, cin // groups, k, k))
        bias = rng.standard_normal(cout)
        expected = reference_conv2d_resample(x, weight, f.numpy(), up, down, padding, groups)
        expected = expected + bias[None, :, None, None]
        actual = conv2d_resample(torch.from_numpy(x), torch.from_numpy(weight), f, up=up, down=down,
                                 padding=padding, groups=groups, bias=torch.from_numpy(bias))
        _close(actual, expected)
        checked += 1
    assert checked == 60


def test_up_and_down_together_are_refused():
    x, f = torch.zeros(1, 1, 4, 4), setup_filter()
    with pytest.raises(ValueError, match="not used by MAT"):
        upfirdn2d(x, f, up=2, down=2)
    with pytest.raises(ValueError, match="not used by MAT"):
        conv2d_resample(x, torch.zeros(1, 1, 3, 3), f, up=2, down=2)

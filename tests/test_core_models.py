"""Golden models: efficient forwards vs dense products, fixed point vs an independent integer
reference, conv vs F.conv2d, the reference code's flat layout, state_dict round trips."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings, strategies as st

from litefly.chain import Factor, validate_chain
from litefly.config import LayerConfig, NumericFormat
from litefly.fixed import (QuantizedLayer, chain_dense, factor_compact, factor_dense, float_forward,
                           quantize_layer, random_float_weights)
from litefly.nn import DeButConv2d, DeButLinear

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, limit + 1) if n % d == 0]


@st.composite
def chains(draw, max_factors: int = 3, first_q: int | None = None) -> tuple[Factor, ...]:
    """Random shape-valid chains (any t, s, r that divide; not only mixing ones)."""
    n = draw(st.integers(1, max_factors))
    if first_q is None:
        first_q = draw(st.integers(1, 4)) * draw(st.integers(1, 4)) * draw(st.sampled_from([1, 2]))
    q, out = first_q, []
    for _ in range(n):
        t = draw(st.sampled_from(divisors(q, 8)))
        s = draw(st.sampled_from(divisors(q // t, 4)))
        r = draw(st.integers(1, 4))
        p = (q // (s * t)) * r * t
        if p > 96:
            break
        out.append([p, q, r, s, t])
        q = p
    if not out:
        out = [[q, q, 1, 1, 1]]
    return validate_chain(out)


def rand_weights(chain, rng):
    return [rng.standard_normal(f.compact_shape) for f in chain]


@SETTINGS
@given(chains(), st.integers(0, 2**32 - 1))
def test_efficient_forward_equals_dense_product(chain, seed):
    rng = np.random.default_rng(seed)
    w = rand_weights(chain, rng)
    x = rng.standard_normal((5, chain[0].q))
    np.testing.assert_allclose(float_forward(chain, w, x), x @ chain_dense(chain, w).T, rtol=1e-10, atol=1e-10)
    lin = DeButLinear(chain[0].q, chain[-1].p, chain, bias=False).double()
    lin.load_reference_flat(np.concatenate([a.ravel() for a in w]))
    xt = torch.as_tensor(x)
    torch.testing.assert_close(lin(xt), xt @ lin.dense_matrix().T)
    torch.testing.assert_close(lin.dense_matrix(), torch.as_tensor(chain_dense(chain, w)))


def reference_layout_forward(chain, flat, x):
    """The reference code's semantics: factor i owns p_i*s_i entries viewed (g, t, r, s) -> (g, r, s, t)."""
    off = 0
    for f in chain:
        g, t, r, s = f.compact_shape
        w = flat[off:off + f.params].reshape(g, t, r, s).transpose(0, 2, 3, 1)
        x = (w[None] * x.reshape(x.shape[0], g, 1, s, t)).sum(axis=3).reshape(x.shape[0], f.p)
        off += f.params
    return x


@SETTINGS
@given(chains(), st.integers(0, 2**32 - 1))
def test_reference_layout_round_trip(chain, seed):
    rng = np.random.default_rng(seed)
    flat = rng.standard_normal(sum(f.params for f in chain))
    lin = DeButLinear(chain[0].q, chain[-1].p, chain, bias=True).double()
    lin.load_reference_flat(flat)
    np.testing.assert_array_equal(lin.reference_flat().numpy(), flat)
    x = rng.standard_normal((3, chain[0].q))
    np.testing.assert_allclose(lin(torch.as_tensor(x)).detach().numpy() - lin.bias.detach().numpy(),
                               reference_layout_forward(chain, flat, x), rtol=1e-10, atol=1e-10)
    other = DeButLinear(chain[0].q, chain[-1].p, chain, bias=True).double()
    other.load_state_dict(lin.state_dict())
    torch.testing.assert_close(other(torch.as_tensor(x)), lin(torch.as_tensor(x)))
    for f, w in zip(chain, lin.compact_numpy()):
        np.testing.assert_array_equal(factor_compact(f, factor_dense(f, w)), w)


def integer_reference(q: QuantizedLayer, x: np.ndarray) -> np.ndarray:
    """Straight from docs/arithmetic.md with Python ints and exact fractions: dense matrices, row by row."""
    fmt, chain = q.layer.format, q.layer.chain
    lo, hi = -(2 ** (fmt.act_bits - 1)), 2 ** (fmt.act_bits - 1) - 1
    mats = [factor_dense(f, np.asarray(w, dtype=object)) for f, w in zip(chain, q.weights)]
    out = []
    for col in x.tolist():
        v = [int(e) for e in col]
        for i, m in enumerate(mats):
            last = i == len(mats) - 1
            acc = [sum(int(m[row][c]) * v[c] for c in range(len(v))) for row in range(m.shape[0])]
            if last and q.bias is not None:
                acc = [a + int(b) for a, b in zip(acc, q.bias)]
            sh = q.shifts[i]
            rounded = [int((Fraction(a, 2 ** sh) + Fraction(1, 2)).__floor__()) if sh else a for a in acc]
            v = [min(hi, max(lo, a)) for a in rounded]
            if last and fmt.relu:
                v = [max(0, a) for a in v]
        out.append(v)
    return np.array(out, dtype=np.int64)


@SETTINGS
@given(chains(), st.integers(0, 2**32 - 1), st.sampled_from([(8, 8), (6, 5), (4, 8), (12, 10)]),
       st.booleans(), st.booleans())
def test_fixed_point_equals_integer_reference(chain, seed, bits, bias, relu):
    rng = np.random.default_rng(seed)
    fmt = NumericFormat(act_bits=bits[0], weight_bits=bits[1], bias=bias, relu=relu)
    layer = LayerConfig(name="l", kind="linear", in_features=chain[0].q, out_features=chain[-1].p,
                        chain=chain, format=fmt)
    w = random_float_weights(layer, rng)
    xf = rng.standard_normal((6, layer.chain_in)) * 2
    q = quantize_layer(layer, w, xf, bias=rng.standard_normal(layer.chain_out) if bias else None)
    # adversarial inputs too: the extremes of the range exercise saturation and the accumulator bound
    x = np.concatenate([q.quantize_input(xf),
                        np.full((1, layer.chain_in), -(2 ** (fmt.act_bits - 1))),
                        rng.integers(-(2 ** (fmt.act_bits - 1)), 2 ** (fmt.act_bits - 1), (3, layer.chain_in))])
    np.testing.assert_array_equal(q.forward(x), integer_reference(q, x))


@SETTINGS
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 2), st.integers(0, 1), st.integers(1, 2),
       st.integers(0, 2**32 - 1), st.data())
def test_conv_equals_conv2d_with_dense_weight(c_in, k, stride, padding, dilation, seed, data):
    chain = data.draw(chains(first_q=k * k * c_in))
    conv = DeButConv2d(c_in, chain[-1].p, k, chain, stride=stride, padding=padding, dilation=dilation).double()
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal((2, c_in, 7, 6)))
    want = F.conv2d(x, conv.dense_weight(), conv.bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(conv(x), want)


def test_counts_and_errors():
    conv = DeButConv2d(3, 64, 3, [[36, 27, 4, 3, 1], [72, 36, 2, 1, 4], [64, 72, 8, 9, 8]], padding=1)
    assert conv.num_params == 756 and conv.dense_params == 1728
    assert round(conv.compression, 4) == round(1 - 756 / 1728, 4)
    with pytest.raises(ValueError, match=r"input has shape \(1, 4, 8, 8\), expected \(N, 3, H, W\)"):
        conv(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"flat parameter vector has shape \(5,\), expected \(756,\)"):
        conv.load_reference_flat(np.zeros(5))


def test_worked_example_in_docs():
    """docs/arithmetic.md's worked example, digit for digit."""
    layer = LayerConfig(name="w", kind="linear", in_features=2, out_features=2, chain=(Factor(2, 2, 2, 2, 1),),
                        format=NumericFormat(bias=True))
    q = QuantizedLayer(layer, [np.array([[[[-128, 127], [5, -7]]]])], [3], np.array([100, -4]))
    np.testing.assert_array_equal(q.forward(np.array([[-128, 127]])), [[127, -128]])
    assert layer.format.acc_bits(layer.chain[0], last=True) == 8 + 8 + 2


def test_mse_calibration_clips_an_outlier_and_stays_exact():
    """``calibration="mse"``: one huge calibration value no longer sets the shift when clipping it
    costs less than the resolution the others lose; the integer model is unchanged (its shifts
    are parameters), so the fixed-point forward still equals the integer reference."""
    from litefly.fixed import _mse_shift, quantize_layer
    rng = np.random.default_rng(0)
    acc = rng.normal(0, 400, 5000).astype(np.int64)
    acc[0] = 40_000                                   # the peak sets shift 9 (40,000 / 512 < 127)
    assert _mse_shift(acc, 9, 8, relu=False) < 9
    assert _mse_shift(np.array([40_000, -40_000] * 10), 9, 8, relu=False) == 9   # nothing to gain by clipping
    chain = (Factor(8, 16, 1, 2, 4), Factor(4, 8, 1, 2, 2))
    layer = LayerConfig(name="l", kind="linear", in_features=16, out_features=4, chain=chain, format=NumericFormat())
    w = random_float_weights(layer, rng)
    xf = rng.standard_normal((64, 16))
    xf[0] *= 30                                       # an outlier row in the calibration data
    q_max = quantize_layer(layer, w, xf)
    q_mse = quantize_layer(layer, w, xf, calibration="mse")
    assert q_mse.shifts[0] < q_max.shifts[0]          # the first factor clips the outlier row's sums
    x = q_mse.quantize_input(xf)
    np.testing.assert_array_equal(q_mse.forward(x), integer_reference(q_mse, x))

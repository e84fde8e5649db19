"""The golden network checked against an independent reference.

``litefly.network.network_forward_int`` (im2col + ``QuantizedLayer.forward`` + ReLU + pooling) is
compared with torch in float64 on the same integers: the first factor as ``F.conv2d`` (or
``F.linear`` after the channels-last flatten), every further factor as ``F.linear`` over the
channels, each followed by the requantisation of ``docs/arithmetic.md`` written out here
(floor((acc + 2^(sh-1)) / 2^sh), saturate), the bias before the last one, ReLU, then
``F.max_pool2d``. The dense factor matrices are built here from the factor definition, not
with litefly's helpers. Random geometries include non-square kernels, strides, padding and
dilation; parameters include the extremes of their fields.

Also: ``im2col`` against ``F.unfold``, and the host-im2col option (an ``(n, q)`` matrix as
``n`` 1x1 images through a linear layer, on the engine model) equal to the convolution.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from litefly.config import LayerConfig, NetworkConfig  # noqa: E402
from litefly.fixed import int_range  # noqa: E402
from litefly.network import im2col, network_forward_int, plan_network  # noqa: E402
from random_networks import ENVELOPES, extreme_params, random_case, random_chain  # noqa: E402
from sim_common import model_run  # noqa: E402


def dense_of(factor, w: np.ndarray) -> torch.Tensor:
    """p x q matrix of factor [p, q, r, s, t] from compact weights W[j, u, a, b] (docs/arithmetic.md);
    a sparse factor's from its rows' columns, weights in row order."""
    if factor.kind == "sparse":
        m = torch.zeros((factor.p, factor.q), dtype=torch.float64)
        k = 0
        for i, cols in enumerate(factor.rows()):
            for col in cols:
                m[i, col] = float(np.asarray(w).ravel()[k])
                k += 1
        return m
    p, q, r, s, t = factor.as_list()
    g = q // (s * t)
    m = torch.zeros((p, q), dtype=torch.float64)
    w = np.asarray(w).reshape(g, t, r, s)
    for j in range(g):
        for u in range(t):
            for a in range(r):
                for b in range(s):
                    m[j * r * t + a * t + u, j * s * t + b * t + u] = float(w[j, u, a, b])
    return m


def requant(acc: torch.Tensor, shift: int, bits: int) -> torch.Tensor:
    lo, hi = int_range(bits)
    if shift > 0:
        acc = torch.floor((acc + 2.0 ** (shift - 1)) / 2.0 ** shift)
    return acc.clamp(lo, hi)


def reference_step(step, q, x: torch.Tensor) -> torch.Tensor:
    """One engine step on an NCHW float64 tensor of integers, the torch way."""
    lay, fmt = step.layer, step.layer.format
    chain = lay.chain
    mats = [dense_of(f, w) for f, w in zip(chain, q.weights)]
    n = x.shape[0]
    if lay.kind == "conv2d":
        kh, kw = lay.kernel
        c = lay.in_channels
        # element e = (ky*kw + kx)*C + c of the window
        wconv = mats[0].reshape(chain[0].p, kh, kw, c).permute(0, 3, 1, 2).contiguous()
        acc = F.conv2d(x, wconv, stride=lay.stride, padding=lay.padding, dilation=lay.dilation)
    else:
        flat = x.permute(0, 2, 3, 1).reshape(n, -1)          # channels-last flatten
        acc = F.linear(flat, mats[0])[:, :, None, None]
    if lay.kind == "conv2d":      # the windows, (ky, kx, c) order, for factors that read [input ; previous]
        cols = F.unfold(x, lay.kernel, dilation=lay.dilation, padding=lay.padding, stride=lay.stride)
        win = cols.reshape(n, c, kh * kw, -1).permute(0, 3, 2, 1).reshape(n, acc.shape[2], acc.shape[3], -1)
    else:
        win = flat[:, None, None, :]
    for i, f in enumerate(chain):
        if i > 0:
            inp = y.permute(0, 2, 3, 1)
            if f.concat:
                inp = torch.cat([win, inp], dim=3)
            acc = F.linear(inp, mats[i]).permute(0, 3, 1, 2)
        if i == len(chain) - 1 and q.bias is not None:
            acc = acc + torch.as_tensor(np.asarray(q.bias), dtype=torch.float64)[None, :, None, None]
        y = requant(acc, q.shifts[i], fmt.act_bits)
        if i == len(chain) - 1 and fmt.relu:
            y = y.clamp(min=0)
    if step.relu:
        y = y.clamp(min=0)
    if step.pool is not None:
        y = F.max_pool2d(y, step.pool[0], step.pool[1])
    return y


def reference_network(steps, params, x: np.ndarray) -> np.ndarray:
    y = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    for st in steps:
        y = reference_step(st, params[st.name], y)
    return y.numpy().astype(np.int64)


def test_requantisation_worked_example():
    """docs/arithmetic.md's worked example, through the golden layer and the torch reference."""
    from litefly.fixed import QuantizedLayer
    lay = LayerConfig.from_dict({"name": "ex", "kind": "linear", "in_features": 2, "out_features": 2,
                                 "chain": [[2, 2, 2, 2, 1]], "format": {"bias": True}})
    q = QuantizedLayer(lay, [np.array([[-128, 127], [5, -7]]).reshape(1, 1, 2, 2)], [3], np.array([100, -4]))
    x = np.array([[-128, 127]])
    assert q.forward(x).tolist() == [[127, -128]]
    net = NetworkConfig.single(lay)
    steps = plan_network(net, (2, 1, 1))
    assert reference_network(steps, {"ex": q}, x.reshape(1, 2, 1, 1)).ravel().tolist() == [127, -128]
    # round half up, also below zero: -2.5 -> -2, 2.5 -> 3, and the -128 / 127 ends
    acc = torch.tensor([-20.0, 20.0, -1e9, 1e9, -1028.0, 1020.0])
    assert requant(acc, 3, 8).tolist() == [-2, 3, -128, 127, -128, 127]


@pytest.mark.parametrize("seed", range(48))
def test_golden_network_equals_torch(seed):
    env = ENVELOPES["rand64" if seed % 2 else "rand32"]
    c = random_case(20_000 + seed, env)
    want = reference_network(c.steps, c.params, c.x)
    np.testing.assert_array_equal(network_forward_int(c.steps, c.params, c.x), want)


def _conv_layer(rng: random.Random, kind_seed: int):
    for _ in range(200):
        cin = rng.randint(1, 6)
        kh, kw = rng.randint(1, 4), rng.randint(1, 4)
        chain = random_chain(rng, kh * kw * cin, 3, 24, 48)
        if chain is None:
            continue
        return LayerConfig.from_dict({
            "name": f"g{kind_seed}", "kind": "conv2d", "in_channels": cin, "out_channels": chain[-1].p,
            "kernel": [kh, kw], "stride": [rng.randint(1, 3), rng.randint(1, 3)],
            "padding": [rng.randint(0, 2), rng.randint(0, 2)], "dilation": [rng.randint(1, 3), rng.randint(1, 2)],
            "chain": [f.as_list() for f in chain], "format": {"bias": rng.random() < 0.6, "relu": rng.random() < 0.3}})
    raise RuntimeError("no layer")


@pytest.mark.parametrize("seed", range(24))
def test_single_conv_extremes_equal_torch(seed):
    """Wide geometry ranges (stride 3, dilation 3, padding 2) and parameters at the field ends."""
    rng = random.Random(seed)
    for _ in range(100):
        lay = _conv_layer(rng, seed)
        h, w = rng.randint(2, 10), rng.randint(2, 10)
        net = NetworkConfig.from_dict({"name": "g", "layers": [lay.to_dict()] + (
            [{"op": "maxpool2d", "kernel": rng.choice([2, 3]), "stride": rng.choice([1, 2, 3])}]
            if rng.random() < 0.5 else [])})
        try:
            steps = plan_network(net, (lay.in_channels, h, w))
        except Exception:  # noqa: BLE001 - too small a map for this geometry: draw again
            continue
        break
    nrng = np.random.default_rng(seed)
    params = extreme_params(steps, nrng, ["saturate", "round", "mixed"][seed % 3])
    lo, hi = int_range(8)
    x = nrng.choice(np.array([lo, hi, 0, 1, -1, 57]), size=(2, lay.in_channels, h, w))
    want = reference_network(steps, params, x)
    got = network_forward_int(steps, params, x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(12))
def test_im2col_equals_unfold(seed):
    rng = random.Random(seed)
    n, c, h, w = rng.randint(1, 3), rng.randint(1, 5), rng.randint(4, 9), rng.randint(4, 9)
    kernel = (rng.randint(1, 3), rng.randint(1, 3))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    dilation = (rng.randint(1, 2), rng.randint(1, 2))
    x = np.random.default_rng(seed).integers(-128, 128, (n, c, h, w))
    cols = im2col(x, kernel, stride, padding, dilation)
    u = F.unfold(torch.as_tensor(x, dtype=torch.float64), kernel, dilation=dilation, padding=padding, stride=stride)
    # unfold: (n, c*kh*kw, L) channel-major; ours: (n*L, kh*kw*c) kernel position outer, channel inner
    kh, kw = kernel
    ref = u.reshape(n, c, kh * kw, -1).permute(0, 3, 2, 1).reshape(-1, kh * kw * c).numpy().astype(np.int64)
    np.testing.assert_array_equal(cols, ref)


@pytest.mark.parametrize("seed", range(8))
def test_host_im2col_option_equals_conv(seed):
    """Host-made columns as n 1x1 images through a linear layer (on the engine model) == the conv."""
    env = ENVELOPES["rand64"]
    rng = random.Random(100 + seed)
    for _ in range(200):
        lay = _conv_layer(rng, seed)
        if lay.chain_in > env.max_q or lay.chain_out > env.max_p:
            continue
        h, w = rng.randint(3, 7), rng.randint(3, 7)
        conv_net = NetworkConfig.from_dict({"name": "conv", "layers": [lay.to_dict()]})
        try:
            steps = plan_network(conv_net, (lay.in_channels, h, w))
            env.check_fits(steps[0])
        except Exception:  # noqa: BLE001
            continue
        break
    nrng = np.random.default_rng(seed)
    params = extreme_params(steps, nrng, "mixed")
    x = nrng.integers(-128, 128, (2, lay.in_channels, h, w))
    conv = model_run(env, steps, params, x)
    np.testing.assert_array_equal(conv, reference_network(steps, params, x))
    lin = LayerConfig.from_dict({"name": lay.name, "kind": "linear", "in_features": lay.chain_in,
                                 "out_features": lay.chain_out, "chain": [f.as_list() for f in lay.chain],
                                 "format": {"bias": lay.format.bias, "relu": lay.format.relu}})
    lsteps = plan_network(NetworkConfig.single(lin), (lay.chain_in, 1, 1))
    from litefly.fixed import QuantizedLayer
    q = params[lay.name]
    lparams = {lin.name: QuantizedLayer(lin, q.weights, q.shifts, q.bias)}
    cols = im2col(x, lay.kernel, lay.stride, lay.padding, lay.dilation)
    y = model_run(env, lsteps, lparams, cols.reshape(-1, lay.chain_in, 1, 1))
    _, ho, wo = steps[0].conv_shape
    y = y.reshape(2, ho, wo, lay.chain_out).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y, conv)


def test_input_quantisation_is_documented_round_half_up():
    """docs/arithmetic.md: X = clamp(floor(x / S + 1/2)): halves go up (also below zero), ends saturate."""
    from litefly.fixed import quantize_tensor
    s = 0.25
    x = np.array([0.5, -0.5, 1.5, -1.5, 1.49, -1.51, 127.4, 127.5, -128.5, -129, 300, -300]) * s
    want = torch.clamp(torch.floor(torch.as_tensor(x / s) + 0.5), -128, 127).numpy().astype(np.int64)
    assert want.tolist() == [1, 0, 2, -1, 1, -2, 127, 127, -128, -128, 127, -128]
    np.testing.assert_array_equal(quantize_tensor(x, s, 8), want)


def test_input_quantisation_keeps_scalars_scalar():
    """A scalar in gives a numpy integer scalar out (as numpy's ufuncs do), an array its own shape."""
    from litefly.fixed import quantize_tensor
    y = quantize_tensor(1.3, 0.5, 8)
    assert not isinstance(y, np.ndarray) and isinstance(y, np.integer) and y == 3
    assert quantize_tensor(np.array([[1.3]]), 0.5, 8).shape == (1, 1)


@pytest.mark.parametrize("seed", range(3))
def test_quantisation_scales_are_documented(seed):
    """docs/arithmetic.md: the scale after factor i is S_i = w_i * S_(i-1) * 2^shift_i, so the
    dequantised integer layer follows the float layer built from the quantised parameters within
    host/accuracy.py's bound."""
    from litefly.fixed import quantize_layer, random_float_weights
    from litefly.host.accuracy import error_bound
    from random_networks import random_chain
    rng = random.Random(seed)
    chain = None
    while chain is None or len(chain) < 2:
        chain = random_chain(rng, rng.choice([12, 16, 24]), 3, 24, 48)
    lay = LayerConfig.from_dict({"name": "s", "kind": "linear", "in_features": chain[0].q,
                                 "out_features": chain[-1].p, "chain": [f.as_list() for f in chain]})
    nrng = np.random.default_rng(seed)
    xf = nrng.standard_normal((32, lay.chain_in))
    q = quantize_layer(lay, random_float_weights(lay, nrng), xf)
    for i in range(len(chain)):
        assert q.act_scales[i + 1] == pytest.approx(q.weight_scales[i] * q.act_scales[i] * 2 ** q.shifts[i])
    ref = torch.from_numpy(xf)
    for f, w in zip(chain, q.float_weights()):
        ref = F.linear(ref, dense_of(f, w))
    err = np.abs(q.forward_float(xf) - ref.numpy()).max()
    assert err <= error_bound(q) * (1 + 1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_quantisation_shift_is_the_smallest_that_fits(seed):
    """docs/arithmetic.md: each shift is the smallest for which the calibration data's largest
    |accumulator| fits A bits after rounding (so calibration never saturates, one less would)."""
    from litefly.fixed import factor_forward, quantize_layer, random_float_weights
    from random_networks import random_chain
    rng = random.Random(seed)
    chain = None
    while chain is None:
        chain = random_chain(rng, rng.choice([12, 16, 24]), 3, 24, 48)
    lay = LayerConfig.from_dict({"name": "q", "kind": "linear", "in_features": chain[0].q,
                                 "out_features": chain[-1].p, "chain": [f.as_list() for f in chain],
                                 "format": {"bias": seed % 2 == 0}})
    nrng = np.random.default_rng(seed)
    xf = nrng.standard_normal((64, lay.chain_in)) * 3
    q = quantize_layer(lay, random_float_weights(lay, nrng), xf,
                       bias=nrng.standard_normal(lay.chain_out) if lay.format.bias else None)
    ins = q.forward(q.quantize_input(xf), intermediates=True)
    for i, (f, w) in enumerate(zip(chain, q.weights)):
        acc = factor_forward(f, np.asarray(w, np.int64), ins[i])
        if i == len(chain) - 1 and q.bias is not None:
            acc = acc + q.bias
        peak, sh = int(np.abs(acc).max()), q.shifts[i]
        assert (peak + (1 << sh >> 1)) >> sh <= 127, (i, peak, sh)
        if sh > 0:
            assert (peak + (1 << (sh - 1) >> 1)) >> (sh - 1) > 127, (i, peak, sh)


def test_quantisation_keeps_a_large_bias_unsaturated():
    """docs/arithmetic.md: the last factor's weights get coarser rather than the bias saturating."""
    from litefly.fixed import int_range, quantize_layer
    lay = LayerConfig.from_dict({"name": "b", "kind": "linear", "in_features": 4, "out_features": 4,
                                 "chain": [[4, 4, 2, 2, 1]], "format": {"bias": True}})
    rng = np.random.default_rng(0)
    xf = rng.standard_normal((16, 4)) * 0.01            # input scale far below 1
    w = [rng.standard_normal((2, 1, 2, 2)) * 0.01]
    bias = np.array([500.0, -500.0, 3.0, 0.0])
    q = quantize_layer(lay, w, xf, bias=bias)
    lo, hi = int_range(lay.format.bias_bits)
    assert lo <= q.bias.min() and q.bias.max() <= hi
    acc_scale = q.weight_scales[0] * q.act_scales[0]
    np.testing.assert_allclose(q.bias * acc_scale, bias, atol=acc_scale)


def test_quantisation_shift_counts_the_rounding():
    """The edge of the shift rule: peak 127*127 + 2*100 = 16329 rounds to 128 at shift 7, so the shift is 8."""
    from litefly.fixed import quantize_layer
    lay = LayerConfig.from_dict({"name": "e", "kind": "linear", "in_features": 2, "out_features": 1,
                                 "chain": [[1, 2, 1, 2, 1]]})
    q = quantize_layer(lay, [np.array([1.0, 2 / 127]).reshape(1, 1, 1, 2)], np.array([[1.0, 100 / 127]]))
    assert q.weights[0].ravel().tolist() == [127, 2] and q.quantize_input(np.array([[1.0, 100 / 127]])).tolist() == [[127, 100]]
    assert q.shifts == [8]
    assert q.forward(np.array([[127, 100]])).tolist() == [[64]]

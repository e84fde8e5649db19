"""The stream packing the testbenches, the model and the host share (hw/wireformat.py), against an
independent bit-level reference: every element's bits read back from the beat as one
little-endian integer; NHWC-E built with explicit loops. Sub-byte weights (2 and 4 bits) included,
and a network with 4-bit weights through the engine model."""

from __future__ import annotations


import numpy as np
import pytest

from litefly.hw.spec import EngineEnvelope
from litefly.hw.wireformat import (pack_elements, pack_layer_params, pack_tensor, tensor_bytes, unpack_elements,
                                   unpack_layer_params, unpack_tensor)
from random_networks import extreme_params, random_network
from sim_common import model_run


def ref_fields(beats: np.ndarray, bits: int, per_beat: int) -> list[int]:
    out = []
    for beat in np.asarray(beats, np.uint8):
        word = int.from_bytes(bytes(beat), "little")
        for k in range(per_beat):
            v = (word >> (k * bits)) & ((1 << bits) - 1)
            out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


@pytest.mark.parametrize("bits,stream_bits", [(2, 32), (4, 32), (4, 64), (8, 64), (16, 128), (32, 64), (8, 32)])
def test_pack_elements_against_bit_reference(bits, stream_bits):
    rng = np.random.default_rng(bits * 1000 + stream_bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    per_beat = stream_bits // bits
    for n in (1, per_beat - 1, per_beat, 3 * per_beat + 1):
        if n < 1:
            continue
        vals = rng.integers(lo, hi + 1, n)
        vals[0], vals[-1] = lo, hi
        beats = pack_elements(vals, bits, per_beat, stream_bits)
        assert beats.shape == (-(-n // per_beat), stream_bits // 8)
        got = ref_fields(beats, bits, per_beat)
        assert got[:n] == vals.tolist() and all(v == 0 for v in got[n:])      # zero padding
        np.testing.assert_array_equal(unpack_elements(beats, bits, per_beat, n), vals)


@pytest.mark.parametrize("e", [4, 8, 16])
def test_pack_tensor_against_loops(e):
    rng = np.random.default_rng(e)
    n, c, h, w = 2, 5, 3, 4
    x = rng.integers(-128, 128, (n, c, h, w))
    x[0, 0, 0, 0], x[1, 4, 2, 3] = -128, 127
    data = pack_tensor(x, e)
    cw = -(-c // e)
    assert data.size == tensor_bytes(x.shape, e) == n * h * w * cw * e
    ref = np.zeros(n * h * w * cw * e, np.int64)
    for i in range(n):
        for y in range(h):
            for xx in range(w):
                for ch in range(c):
                    ref[((i * h + y) * w + xx) * cw * e + ch] = x[i, ch, y, xx]
    np.testing.assert_array_equal(data.view(np.int8).astype(np.int64), ref)
    np.testing.assert_array_equal(unpack_tensor(data, x.shape, e), x)


@pytest.mark.parametrize("weight_bits,stream_bits", [(4, 32), (2, 64), (8, 64), (16, 128)])
def test_layer_params_round_trip_and_layout(weight_bits, stream_bits):
    rng = np.random.default_rng(weight_bits)
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    ws = [rng.integers(lo, hi + 1, (2, 1, 3, 2)), rng.integers(lo, hi + 1, (3, 2, 1, 1))]
    bias = rng.integers(-(1 << 15), 1 << 15, 6)
    beats = pack_layer_params(ws, bias, weight_bits, stream_bits)
    per = stream_bits // weight_bits
    nw = sum(w.size for w in ws)
    wbeats = -(-nw // per)
    flat = np.concatenate([w.ravel() for w in ws])
    assert ref_fields(beats[:wbeats], weight_bits, per)[:nw] == flat.tolist()
    assert ref_fields(beats[wbeats:], 32, stream_bits // 32)[:6] == bias.tolist()
    got_w, got_b = unpack_layer_params(beats, [w.size for w in ws], wbeats, 6, weight_bits, stream_bits)
    for a, b in zip(got_w, ws):
        np.testing.assert_array_equal(a, b.ravel())
    np.testing.assert_array_equal(got_b, bias)


@pytest.mark.parametrize("seed", range(6))
def test_four_bit_weight_network_on_the_model(seed):
    """An engine with 4-bit weights (8 per 32-bit beat): the model == the golden network."""
    env = EngineEnvelope(name="w4", lanes=8, stream_bits=32, act_bits=8, weight_bits=4, max_factors=3, max_q=48,
                         max_p=24, max_work=48, weight_beats=512, frame_beats=1024, acc_bits=20)
    _, in_shape, steps = random_network(30_000 + seed, env)
    rng = np.random.default_rng(seed)
    params = extreme_params(steps, rng, ["saturate", "mixed", "round"][seed % 3])
    x = rng.choice(np.array([-128, 127, 0, 1, -1, 33]), size=(2,) + in_shape)
    from litefly.network import network_forward_int
    np.testing.assert_array_equal(model_run(env, steps, params, x), network_forward_int(steps, params, x))

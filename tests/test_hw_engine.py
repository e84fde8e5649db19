"""The network engine in Amaranth's simulator against the int8 golden network (exact equality).

Every case packs an NCHW integer tensor NHWC-E, writes the descriptor from
``EngineEnvelope.describe(step).register_words(images)`` plus the shifts, loads the
parameters, runs one or more passes over the AXI ports and compares every output byte
(pad channels included) with ``litefly.network.step_forward_int``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from amaranth_bench import Pass, pack_nhwce, pad_channels, pass_for, run_engine, unpack_nhwce
from litefly.chain import SparseFactor, factor_from_config
from litefly.config import LayerConfig
from litefly.fixed import QuantizedLayer, int_range, quantize_layer, random_float_weights, requantize
from litefly.hw import regmap
from litefly.hw.engine import FAULTS
from litefly.errors import ConfigError
from litefly.hw.generate import generate, module_name
from litefly.hw.cycles import window_read_beats
from litefly.hw.memories import in_banks, in_slots, out_slots
from litefly.hw.spec import EngineEnvelope, ceil_div
from litefly.hw.wireformat import unpack_elements
from litefly.network import EngineStep, im2col, step_forward_int

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- layers and parameters
def conv(name, c, chain, kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), **fmt) -> LayerConfig:
    return LayerConfig.from_dict({
        "name": name, "kind": "conv2d", "in_channels": c, "out_channels": factor_from_config(chain[-1]).p,
        "kernel": list(kernel), "stride": list(stride), "padding": list(padding), "dilation": list(dilation),
        "chain": chain, "format": fmt})


def linear(name, chain, **fmt) -> LayerConfig:
    return LayerConfig.from_dict({"name": name, "kind": "linear", "in_features": factor_from_config(chain[0]).q,
                                  "out_features": factor_from_config(chain[-1]).p, "chain": chain, "format": fmt})


def extreme_params(layer: LayerConfig, rng: np.random.Generator) -> QuantizedLayer:
    """Full-range random weights and biases, field extremes planted, shifts that spread the
    results over (and past) the activation range."""
    fmt = layer.format
    wlo, whi = int_range(fmt.weight_bits)
    ws = []
    for f in layer.chain:
        w = rng.integers(wlo, whi, endpoint=True, size=f.compact_shape)
        w.flat[0], w.flat[-1] = wlo, whi
        ws.append(w)
    shifts = []
    for i, f in enumerate(layer.chain):
        acc = fmt.acc_bits(f, i == len(layer.chain) - 1)
        shifts.append(int(min(acc - 1, rng.integers(fmt.weight_bits - 2, fmt.weight_bits + 1 + int(np.log2(f.s))))))
    bias = None
    if fmt.bias:
        blo, bhi = int_range(fmt.bias_bits)
        bias = rng.integers(blo, bhi, endpoint=True, size=layer.chain_out)
        bias[0], bias[-1] = blo, bhi
    return QuantizedLayer(layer, ws, shifts, bias)


def calibrated_params(layer: LayerConfig, step: EngineStep, x: np.ndarray, rng) -> QuantizedLayer:
    """quantize_layer on the step's own windows (typical, non-saturating values)."""
    cols = im2col(x.astype(np.float64), step.kernel, step.stride, step.padding, step.dilation)
    bias = rng.standard_normal(layer.chain_out) * 50 if layer.format.bias else None
    return quantize_layer(layer, random_float_weights(layer, rng), cols, bias=bias)


def input_map(rng, shape, act_bits=8) -> np.ndarray:
    lo, hi = int_range(act_bits)
    x = rng.integers(lo, hi, endpoint=True, size=shape)
    x.flat[0], x.flat[-1] = lo, hi
    return x


def envelope_for(layers, lanes=8, stream_bits=64, frame_beats=1024, macs_per_dsp=1, residual=False,
                 window_generators=1, row_pairs=False, row_quads=False, frame_word_beats=1,
                 row_octets=False) -> EngineEnvelope:
    row_quads = row_quads or row_octets
    row_pairs = row_pairs or row_quads
    return EngineEnvelope.for_layers("t", list(layers), multipliers=lanes, stream_bits=stream_bits,
                                     frame_beats=frame_beats, macs_per_dsp=2 if row_pairs else macs_per_dsp,
                                     residual=residual, window_generators=window_generators, row_pairs=row_pairs,
                                     row_quads=row_quads, frame_word_beats=frame_word_beats, row_octets=row_octets)


def check_outputs(step: EngineStep, q: QuantizedLayer, x: np.ndarray, beats: np.ndarray, tlast: list[int]) -> np.ndarray:
    y = step_forward_int(step, q, x)
    n = x.shape[0]
    p, hp, wp = step.out_shape
    assert beats.shape[0] == n * hp * wp * ceil_div(p, beats.shape[1]), f"{beats.shape[0]} output beats"
    got = unpack_nhwce(beats, n, p, hp, wp)
    bad = np.argwhere(got != y)
    assert bad.size == 0, (f"{len(bad)} of {y.size} outputs differ; first at (n, c, y, x) = {tuple(bad[0])}: "
                           f"expected {y[tuple(bad[0])]}, got {got[tuple(bad[0])]}")
    assert np.all(pad_channels(beats, p) == 0), "pad channels are not zero"
    assert tlast == [beats.shape[0] - 1], f"TLAST at beats {tlast}, expected only on beat {beats.shape[0] - 1}"
    return y


def run_step(layer, in_shape, images=2, relu=False, pool=None, seed=0, lanes=8, stream_bits=64,
             params="extreme", fault=None, packed=False, macs_per_dsp=1, window_generators=1, row_pairs=False,
             row_quads=False, frame_word_beats=1, row_octets=False, **kw):
    rng = np.random.default_rng(seed)
    step = EngineStep(layer, in_shape, relu=relu, pool=pool)
    env = envelope_for([layer], lanes, stream_bits, macs_per_dsp=macs_per_dsp, window_generators=window_generators,
                       row_pairs=row_pairs, row_quads=row_quads, frame_word_beats=frame_word_beats,
                       row_octets=row_octets)
    x = input_map(rng, (images,) + tuple(in_shape), layer.format.act_bits)
    q = extreme_params(layer, rng) if params == "extreme" else calibrated_params(layer, step, x, rng)
    run = run_engine(env, [pass_for(env, step, q, x, packed=packed)], fault=fault, **kw)
    y = check_outputs(step, q, x, run.out[0], run.tlast[0])
    return env, step, q, run, y


# ---------------------------------------------------------------- conv geometry
CONVS = {
    # C=3 (unaligned element offsets), non-square kernel/stride/padding
    "k2x3_s1x2_p1x1_c3": dict(c=3, chain=[[8, 18, 4, 9, 1], [8, 8, 2, 2, 2]], kernel=(2, 3), stride=(1, 2),
                              padding=(1, 1), hw=(5, 6), bias=True, relu=True),
    # C=1, dilation, stride 2 rows, padding only in x
    "k2x3_s2x1_p0x2_d2x1_c1": dict(c=1, chain=[[4, 6, 2, 3, 1], [4, 4, 1, 1, 4]], kernel=(2, 3), stride=(2, 1),
                                   padding=(0, 2), dilation=(2, 1), hw=(6, 5), bias=True),
    # C=10 > E (two beats per pixel, the second partial), 3x3 same padding
    "k3x3_p1_c10": dict(c=10, chain=[[6, 90, 2, 30, 1]], kernel=(3, 3), padding=(1, 1), hw=(4, 4), bias=True),
    # dilation in both axes, stride 2, three factors
    "k3x2_s2_d2x3_c5": dict(c=5, chain=[[10, 30, 1, 3, 1], [10, 10, 5, 5, 1], [7, 10, 7, 10, 1]], kernel=(3, 2),
                            stride=(2, 2), padding=(2, 1), dilation=(2, 3), hw=(7, 8), relu=True),
}


def run_conv(name: str, seed: int, **kw):
    """``run_step`` of the CONVS geometry ``name`` on two images."""
    c = dict(CONVS[name])
    h, w = c.pop("hw")
    ch = c.pop("c")
    relu = c.pop("relu", False)
    bias = c.pop("bias", False)
    layer = conv(name.replace("-", "_"), ch, c.pop("chain"), bias=bias, **c)
    return run_step(layer, (ch, h, w), images=2, relu=relu, seed=seed, **kw)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_geometry(name):
    run_conv(name, seed=sorted(CONVS).index(name))


def test_conv_calibrated_32bit_stream_four_images():
    # E=4 banks, 3 images, calibrated (non-saturating) parameters
    layer = conv("cal", 6, [[8, 24, 2, 6, 1], [12, 8, 3, 2, 2]], kernel=(2, 2), padding=(1, 0), bias=True)
    run_step(layer, (6, 3, 4), images=3, stream_bits=32, params="calibrated", seed=3)


def test_narrow_formats_sign_extend():
    # 6-bit activations travel sign-extended in bytes; 4-bit weights, 8 per 32-bit word
    layer = conv("narrow", 5, [[6, 20, 3, 10, 1]], kernel=(2, 2), padding=(1, 1), act_bits=6, weight_bits=4,
                 bias=True)
    run_step(layer, (5, 3, 3), images=2, relu=False, seed=4)


# ---------------------------------------------------------------- packed input (LAYER.PACKED)
PACKED = {
    # RGB-like: 3 channels in 8-byte beats, 3x3 same padding, pixels straddling beats
    "c3_k3_p1": (dict(c=3, chain=[[9, 27, 1, 3, 3], [8, 9, 8, 9, 1]], kernel=(3, 3), padding=(1, 1), bias=True),
                 (8, 8), 64),
    # C > E and not a multiple: beats of 8 then 4 channels a pixel
    "c12_k2_s2": (dict(c=12, chain=[[6, 48, 1, 8, 1]], kernel=(2, 2), stride=(2, 2)), (4, 2), 64),
    # 4-byte beats, C = 5, stride 2, dilation
    "c5_e4_d2": (dict(c=5, chain=[[4, 20, 2, 10, 1]], kernel=(2, 2), stride=(2, 1), dilation=(2, 1)), (4, 8), 32),
}


@pytest.mark.parametrize("name", sorted(PACKED))
def test_packed_input_is_repacked_on_chip(name):
    """The network's input sent as plain NHWC bytes (C a pixel) gives the same outputs as NHWC-E,
    in E/C fewer bytes, and the cycle model holds (one more cycle for the repacker)."""
    spec, hw, stream_bits = PACKED[name]
    c = dict(spec)
    ch = c.pop("c")
    layer = conv(f"packed_{name}", ch, c.pop("chain"), **c)
    env, step, q, run, _ = run_step(layer, (ch,) + hw, images=2, stream_bits=stream_bits, packed=True,
                                    seed=sorted(PACKED).index(name))
    desc = env.describe(step, packed_input=True)
    assert desc.in_bytes_per_image == ch * hw[0] * hw[1] < desc.in_beats_per_image * desc.bytes_per_beat
    assert run.regs[0]["CYCLES"] == desc.pass_cycles(2)


def test_the_host_folds_a_first_layers_kernel_rows_where_the_model_says_it_is_faster():
    """vgg_conv1 (3 channels, a beat a pixel: nine window reads a lane) runs with its kernel rows
    folded into 9 channels (three reads a lane), packed, in 10% fewer modelled cycles; a later layer's
    input is the engine's own output and is never folded; vgg_conv2 (64 channels) as a first
    layer would read as many beats folded and load three times as many, so it is not folded."""
    from litefly.config import load_network
    from litefly.network import RowFold, plan_network
    net = load_network(Path(__file__).parents[1] / "examples" / "vgg_net.yaml")
    env = EngineEnvelope.for_network(net, (32, 32), board="pynq-z2")
    steps = plan_network(net, (3, 32, 32))
    descs = env.describe_network(steps)
    first, plain = descs[0], env.describe(steps[0], packed_input=True)
    assert first.step.fold == RowFold(3, 1, 1, 1, 32) and first.packed_input and first.step.in_shape == (9, 32, 32)
    assert (first.geometry(1).window_reads, plain.geometry(1).window_reads) == (3, 9)
    assert first.pass_cycles(1) < plain.pass_cycles(1)
    assert first.in_bytes_per_image == 9 * 32 * 32
    assert all(d.step.fold is None for d in descs[1:])
    assert env.describe_network(steps[1:])[0].step.fold is None
    # on the ZCU104 (16-byte beats, four generators) vgg_conv1's output stream paces it: folding
    # would save under FOLD_GAIN of its cycles for three times the host's packing, so it is not folded
    zcu = EngineEnvelope.for_network(net, (32, 32), board="zcu104")
    plain, folded = zcu.describe(steps[0], packed_input=True), zcu.describe(steps[0].row_folded(), packed_input=True)
    assert folded.pass_cycles(8) < plain.pass_cycles(8) and zcu.describe_network(steps)[0].step.fold is None


def test_packed_input_needs_whole_beats_per_image():
    layer = conv("odd", 3, [[4, 12, 1, 3, 1]], kernel=(2, 2))
    env = envelope_for([layer], 8, 64)
    with pytest.raises(ConfigError, match=r"packed 3x5x5 input \(75 bytes an image\) is not a whole number of "
                                          r"8-byte beats"):
        env.describe(EngineStep(layer, (3, 5, 5), relu=False), packed_input=True)
    assert not env.can_pack_input(EngineStep(layer, (3, 5, 5), relu=False))
    assert env.can_pack_input(EngineStep(layer, (3, 4, 2), relu=False))


# ---------------------------------------------------------------- two MACs per multiplier
def test_two_products_in_one_multiply_are_exact_for_every_operand():
    """The packing identity of mac_array (macs_per_dsp=2) on every int8 weight and activation
    pair, for several activation widths: low field sign-extended, high part plus the low sign."""
    for a_bits, w_bits in ((8, 8), (6, 8), (8, 4), (2, 2)):
        s = a_bits + w_bits
        a_lo, a_hi = int_range(a_bits)
        w_lo, w_hi = int_range(w_bits)
        a = np.arange(a_lo, a_hi + 1, dtype=np.int64)
        w = np.arange(w_lo, w_hi + 1, dtype=np.int64)[:, None, None]
        a0, a1 = a[None, :, None], a[None, None, :]
        prod = ((a1 << s) + a0) * w
        assert np.abs(prod).max() < 1 << (a_bits + s + w_bits - 1)          # the product register's width
        low = prod & ((1 << s) - 1)
        low = np.where(low >= 1 << (s - 1), low - (1 << s), low)
        high = (prod >> s) + ((prod >> (s - 1)) & 1)
        np.testing.assert_array_equal(np.broadcast_to(low, prod.shape), np.broadcast_to(w * a0, prod.shape))
        np.testing.assert_array_equal(np.broadcast_to(high, prod.shape), np.broadcast_to(w * a1, prod.shape))


@pytest.mark.parametrize("name", ["k3x3_p1_c10", "k3x2_s2_d2x3_c5"])
def test_two_macs_per_multiplier_are_bit_exact(name):
    """Extreme operands (saturating products at both ends) through the packed MAC array."""
    env, step, q, run, _ = run_conv(name, seed=21, macs_per_dsp=2)
    assert env.macs_per_dsp == 2 and run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(2)


def test_macs_per_dsp_is_refused_for_wide_weights_and_kept_out_of_old_hashes():
    layer = conv("w16", 4, [[4, 16, 1, 4, 1]], kernel=(2, 2), weight_bits=16)
    with pytest.raises(ConfigError, match="macs_per_dsp=2 packs two products of 8-bit operands into one "
                                          "multiplier; weight_bits=16 is wider"):
        envelope_for([layer], macs_per_dsp=2)
    small = conv("w8", 4, [[4, 16, 1, 4, 1]], kernel=(2, 2))
    one, two = envelope_for([small]), envelope_for([small], macs_per_dsp=2)
    assert "macs_per_dsp" not in one.hardware_dict() and two.hardware_dict()["macs_per_dsp"] == 2
    assert one.hash32 != two.hash32
    assert EngineEnvelope.from_dict(two.to_dict()) == two


# ---------------------------------------------------------------- row pairs: two rows per multiplier
ROW_PAIRS = {
    # t = 2 (a pair's rows are t apart), two paired factors, bias and ReLU
    "t2_two_paired": (dict(c=6, chain=[[8, 24, 2, 6, 2], [8, 8, 2, 2, 2]], kernel=(2, 2), padding=(1, 0), bias=True),
                      dict(hw=(4, 4), relu=True)),
    # an unpaired factor of 9 weights before two paired ones: the pad to an even index; r = 4 and 6
    "odd_pad": (dict(c=1, chain=[[3, 9, 1, 3, 1], [4, 3, 4, 3, 1], [6, 4, 6, 4, 1]], kernel=(3, 3),
                     padding=(1, 1), bias=True), dict(hw=(5, 5))),
    # the last factor unpaired (s = 1) after a paired one; 2x2 max pooling
    "pool_last_unpaired": (dict(c=4, chain=[[8, 16, 2, 4, 2], [8, 8, 1, 1, 8]], kernel=(2, 2), padding=(1, 1)),
                           dict(hw=(6, 6), pool=(2, 2), relu=True)),
    # one bias per beat (32-bit stream), four window generators
    "e4_gens4": (dict(c=3, chain=[[6, 12, 2, 4, 1], [12, 6, 4, 2, 1]], kernel=(2, 2), bias=True),
                 dict(hw=(5, 4), stream_bits=32, window_generators=4, lanes=16)),
    # 4-bit weights (a 17-bit weight operand), 6-bit activations
    "w4_a6": (dict(c=5, chain=[[8, 20, 4, 10, 1]], kernel=(2, 2), padding=(1, 1), act_bits=6, weight_bits=4,
                   bias=True), dict(hw=(3, 3))),
}


def run_named(cases: dict, prefix: str, name: str, fault=None, **kw):
    """Run the layer ``cases[name]`` (its spec and run options) on two images; ``kw``: the envelope's."""
    spec, opts = cases[name]
    c = dict(spec)
    ch, opts = c.pop("c"), dict(opts)
    hw = opts.pop("hw")
    layer = conv(f"{prefix}_{name}", ch, c.pop("chain"), **c)
    return run_step(layer, (ch,) + hw, images=2, seed=sorted(cases).index(name), fault=fault, **opts, **kw)


def run_row_pairs(name: str, fault=None, **kw):
    return run_named(ROW_PAIRS, "rp", name, fault, row_pairs=True, **kw)


@pytest.mark.parametrize("name", sorted(ROW_PAIRS))
def test_row_pairs_are_bit_exact_and_the_cycle_model(name):
    """Two rows of a block per multiply (``row_pairs``): extreme operands, CYCLES equal to the model,
    which halves the paired factors' issue cycles."""
    env, step, q, run, _ = run_row_pairs(name)
    desc = env.describe(step)
    assert env.row_pairs and env.dsps == env.lanes and run.regs[0]["CYCLES"] == desc.pass_cycles(2)
    assert desc.issue.issue < step.layer.macs_per_column
    assert run.regs[0]["BUSY_CYCLES"] == desc.mac_cycles(2)


def test_two_weights_in_one_multiply_are_exact_for_every_operand():
    """The row-pair identity: (w1 * 2^S + w0) * x splits into w0 * x (the low S bits, sign-extended)
    and w1 * x (the rest plus the low field's sign), for every int8 operand."""
    for a_bits, w_bits in ((8, 8), (6, 4)):
        s = a_bits + w_bits
        a_lo, a_hi = int_range(a_bits)
        w_lo, w_hi = int_range(w_bits)
        x = np.arange(a_lo, a_hi + 1, dtype=np.int64)[:, None, None]
        w = np.arange(w_lo, w_hi + 1, dtype=np.int64)
        w0, w1 = w[None, :, None], w[None, None, :]
        prod = ((w1 << s) + w0) * x
        assert np.abs(prod).max() < 1 << (a_bits + s + w_bits)
        low = prod & ((1 << s) - 1)
        low = np.where(low >= 1 << (s - 1), low - (1 << s), low)
        high = (prod >> s) + ((prod >> (s - 1)) & 1)
        np.testing.assert_array_equal(low, np.broadcast_to(w0 * x, prod.shape))
        np.testing.assert_array_equal(high, np.broadcast_to(w1 * x, prod.shape))


def test_row_pairs_need_two_macs_per_dsp_and_keep_old_hashes():
    layer = conv("rp", 4, [[8, 16, 2, 4, 1]], kernel=(2, 2))
    with pytest.raises(ConfigError, match=r"^engine: row_pairs packs a row pair's two weights into one multiplier: "
                                          r"it needs macs_per_dsp=2 \(got 1\)"):
        EngineEnvelope.for_layers("t", [layer], multipliers=8, row_pairs=True)
    two, rp = envelope_for([layer], macs_per_dsp=2), envelope_for([layer], row_pairs=True)
    assert "row_pairs" not in two.hardware_dict() and rp.hardware_dict()["row_pairs"] is True
    assert rp.hash32 != two.hash32 and EngineEnvelope.from_dict(rp.to_dict()) == rp
    assert (two.dsps, rp.dsps, rp.macs_per_cycle) == (4, 8, 16)
    assert regmap.unpack("CAP_FEATURES", rp.capability_words()["CAP_FEATURES"])["ROW_PAIRS"] == 1


# ---------------------------------------------------------------- row quads: two row-pair multipliers per lane
ROW_QUADS = {
    # a quad (r = 4, s = 8), a pair, then a quad as the last factor with t = 2 (its rows 2 apart); bias, ReLU
    "quad_pair_quad": (dict(c=4, chain=[[8, 16, 4, 8, 1], [8, 8, 2, 2, 2], [8, 8, 4, 4, 2]], kernel=(2, 2),
                            padding=(1, 0), bias=True), dict(hw=(4, 4), relu=True)),
    # 18 weights of a pair before a quad: the pad to an index divisible by 4; the last factor unpaired
    # (s = 1) three drain cycles after the quad; 2x2 max pooling
    "pad_pool_last_single": (dict(c=1, chain=[[6, 9, 2, 3, 1], [4, 6, 4, 6, 1], [4, 4, 1, 1, 4]], kernel=(3, 3),
                                  padding=(1, 1)), dict(hw=(6, 6), pool=(2, 2), relu=True)),
    # four weights and one bias per beat (32-bit stream), four window generators; a quad, then a pair
    "e4_gens4": (dict(c=3, chain=[[12, 12, 4, 4, 1], [6, 12, 2, 4, 1]], kernel=(2, 2), bias=True),
                 dict(hw=(5, 4), stream_bits=32, window_generators=4, lanes=16)),
    # MAC-bound: a first factor of one weight a row (s = 1), after the last factor, a quad, of the batch
    # before: its rows end as the quad's leave, unless the batch waits its two cycles in IDLE
    "single_first_quad_last": (dict(c=1, chain=[[32, 4, 8, 1, 4], [32, 32, 4, 4, 8]], kernel=(2, 2), bias=True),
                               dict(hw=(5, 5))),
    # interleaved quads (r = 2, t even, s >= 4, reading WORK): rows wr, wr + t from column c and wr + 1,
    # wr + 1 + t from c + 1 (one WORK word); between two quads, with t = 2
    "quad_iquad_quad": (dict(c=4, chain=[[16, 16, 4, 4, 1], [8, 16, 2, 4, 2], [8, 8, 4, 4, 2]], kernel=(2, 2),
                             bias=True), dict(hw=(4, 4), relu=True)),
    # an interleaved quad last (t = 4: its rows wr, wr + 4, wr + 1, wr + 5 leave in that order, each from
    # its bias) after a pair that reads IN (factor 0 never interleaves); 2x2 max pooling
    "pair_iquad_last": (dict(c=4, chain=[[16, 16, 2, 2, 1], [8, 16, 2, 4, 4]], kernel=(2, 2), padding=(1, 1),
                             bias=True), dict(hw=(5, 5), pool=(2, 2), relu=True)),
    # an interleaved quad with t = 8 (its u loop: 0, 2, 4, 6) last, after a quad with r = 8
    "quad_iquad_t8": (dict(c=4, chain=[[32, 16, 8, 4, 1], [16, 32, 2, 4, 8]], kernel=(2, 2), bias=True),
                      dict(hw=(4, 4))),
    # two interleaved quads in a row (t = 4, then t = 2) on two window generators, 32-bit stream
    "iquad_iquad_g2": (dict(c=3, chain=[[16, 12, 4, 3, 1], [8, 16, 2, 4, 4], [4, 8, 2, 4, 2]], kernel=(2, 2),
                            bias=True), dict(hw=(4, 5), stream_bits=32, window_generators=2, lanes=16)),
    # 4-bit weights, 6-bit activations, one quad factor with bias (the next batch waits in IDLE)
    "w4_a6": (dict(c=5, chain=[[8, 20, 4, 10, 1]], kernel=(2, 2), padding=(1, 1), act_bits=6, weight_bits=4,
                   bias=True), dict(hw=(3, 3))),
}


def test_row_quads_need_row_pairs_and_four_weights_a_beat():
    layer = conv("rq", 4, [[16, 16, 4, 4, 1]], kernel=(2, 2))
    with pytest.raises(ConfigError, match=r"^engine: row_quads gives a lane two row-pair multipliers: it needs "
                                          r"row_pairs \(got False\)"):
        EngineEnvelope.for_layers("t", [layer], multipliers=8, macs_per_dsp=2, row_quads=True)
    rp, rq = envelope_for([layer], row_pairs=True), envelope_for([layer], row_quads=True)
    assert "row_quads" not in rp.hardware_dict() and rq.hardware_dict()["row_quads"] is True
    assert rq.hash32 != rp.hash32 and EngineEnvelope.from_dict(rq.to_dict()) == rq
    assert (rq.dsps, rq.macs_per_cycle, rq.lane_rows) == (16, 32, 4)
    assert regmap.unpack("CAP_FEATURES", rq.capability_words()["CAP_FEATURES"])["ROW_QUADS"] == 1
    assert (rq.describe(EngineStep(layer, (4, 3, 3), relu=False)).issue.issue,
            rp.describe(EngineStep(layer, (4, 3, 3), relu=False)).issue.issue) == (16, 32)


# ---------------------------------------------------------------- row octets: four row-pair multipliers per lane
ROW_OCTETS = {
    # an octet (r = 8, s = 8) reading IN, a quad, then an octet as the last factor with t = 2 (its rows 2
    # apart, leaving one a cycle over eight); bias, ReLU
    "octet_quad_octet": (dict(c=4, chain=[[16, 16, 8, 8, 1], [16, 16, 4, 4, 1], [16, 16, 8, 8, 2]], kernel=(2, 2),
                              padding=(1, 0), bias=True), dict(hw=(4, 4), relu=True)),
    # MAC-bound: a first factor of one weight a row (s = 1) after the last factor, an octet, of the batch
    # before: its rows end as the octet's leave, unless the batch waits its six cycles in IDLE
    "single_first_octet_last": (dict(c=1, chain=[[64, 4, 16, 1, 4], [64, 64, 8, 8, 8]], kernel=(2, 2), bias=True),
                                dict(hw=(5, 5))),
    # 36 weights of a pair before an octet: the pad to an index divisible by 8; 2x2 max pooling
    "pad_pair_octet_pool": (dict(c=2, chain=[[12, 18, 2, 3, 3], [8, 12, 8, 12, 1]], kernel=(3, 3), padding=(1, 1),
                                 bias=True), dict(hw=(6, 6), pool=(2, 2), relu=True)),
    # the ZCU104's kind of engine: 128-bit stream, four window generators, two-beat frame words; an
    # octet of 9 columns a row (vgg_conv2's first factor's shape), then an interleaved quad; pooling
    "zcu_like": (dict(c=16, chain=[[128, 144, 8, 9, 1], [64, 128, 2, 4, 8]], kernel=(3, 3), padding=(1, 1),
                      bias=True), dict(hw=(4, 4), pool=(2, 2), relu=True, stream_bits=128, window_generators=4,
                                       lanes=32, frame_word_beats=2)),
}


# quads and octets: (cases, name prefix, the engine's flag, rows an issue, the next narrower engine's flag)
MULTI_ROW = {"quads": (ROW_QUADS, "rq", "row_quads", 4, "row_pairs"),
             "octets": (ROW_OCTETS, "ro", "row_octets", 8, "row_quads")}


@pytest.mark.parametrize("kind,name", [(k, n) for k, v in MULTI_ROW.items() for n in sorted(v[0])])
def test_row_quads_and_octets_are_bit_exact_and_the_cycle_model(kind, name):
    """Four rows of a block per issue (``row_quads``: two row-pair multipliers per lane) or eight
    (``row_octets``: four): extreme operands, CYCLES and BUSY_CYCLES equal to the model, which issues
    those factors in a quarter (an eighth) of their MACs' cycles, fewer than the narrower engine."""
    cases, prefix, flag, rows, narrower = MULTI_ROW[kind]
    env, step, q, run, _ = run_named(cases, prefix, name, None, **{flag: True})
    desc = env.describe(step)
    assert getattr(env, flag) and env.lane_rows == rows and env.dsps == rows // 2 * env.lanes
    assert run.regs[0]["CYCLES"] == desc.pass_cycles(2) and run.regs[0]["BUSY_CYCLES"] == desc.mac_cycles(2)
    less = envelope_for([step.layer], **{narrower: True}, lanes=env.lanes, stream_bits=env.stream_bits).describe(step)
    assert desc.issue.issue < less.issue.issue


def test_row_octets_need_row_quads_and_eight_weights_a_beat():
    layer = conv("ro", 4, [[16, 16, 8, 8, 1]], kernel=(2, 2))
    with pytest.raises(ConfigError, match=r"^engine: row_octets gives a lane four row-pair multipliers: it needs "
                                          r"row_quads \(got True\) and eight weights per beat \(got 4\)"):
        EngineEnvelope.for_layers("t", [layer], multipliers=8, stream_bits=32, macs_per_dsp=2, row_pairs=True,
                                  row_quads=True, row_octets=True)
    rq, ro = envelope_for([layer], row_quads=True), envelope_for([layer], row_octets=True)
    assert "row_octets" not in rq.hardware_dict() and ro.hardware_dict()["row_octets"] is True
    assert ro.hash32 != rq.hash32 and EngineEnvelope.from_dict(ro.to_dict()) == ro
    assert (ro.dsps, ro.macs_per_cycle, ro.lane_rows) == (32, 64, 8)
    assert regmap.unpack("CAP_FEATURES", ro.capability_words()["CAP_FEATURES"])["ROW_OCTETS"] == 1
    assert (ro.describe(EngineStep(layer, (4, 3, 3), relu=False)).issue.issue,
            rq.describe(EngineStep(layer, (4, 3, 3), relu=False)).issue.issue) == (16, 32)


# ---------------------------------------------------------------- frame words of several beats
FRAME_WORDS = {
    # 27 channels: 4 beats a pixel, the last partial; four-beat reads; 3x3 same padding
    "c27_reads4": (dict(c=27, chain=[[9, 243, 1, 27, 1], [8, 9, 8, 9, 1]], kernel=(3, 3), padding=(1, 1),
                        bias=True), dict(hw=(4, 5), frame_word_beats=4)),
    # 44 channels: 6 beats a pixel, so two-beat reads from four-beat words (a read starts mid-word);
    # stride and dilation 2
    "c44_reads2_of4": (dict(c=44, chain=[[8, 176, 2, 44, 1]], kernel=(2, 2), stride=(2, 2), dilation=(2, 2),
                            padding=(1, 1)), dict(hw=(7, 6), frame_word_beats=4, relu=True)),
    # 3 channels: one-beat reads from two-beat words, two window generators, 40 lanes (3 a bank word
    # of 16 banks, the last partial)
    "c3_reads1_gens2": (dict(c=3, chain=[[8, 12, 2, 3, 4]], kernel=(2, 2), bias=True),
                        dict(hw=(6, 9), frame_word_beats=2, window_generators=2, lanes=40)),
    # a 32-bit stream (E = 4), 16 channels: four-beat reads into 16 banks; pooling, two generators
    "e4_c16_pool": (dict(c=16, chain=[[8, 64, 2, 16, 1], [8, 8, 2, 2, 2]], kernel=(2, 2), padding=(1, 1)),
                    dict(hw=(6, 6), pool=(2, 2), stream_bits=32, window_generators=2, lanes=16,
                         frame_word_beats=4)),
    # a 128-bit stream (E = 16), 24 channels: two beats a pixel, the second partial, one two-beat read
    "e16_c24": (dict(c=24, chain=[[12, 216, 2, 36, 1]], kernel=(3, 3), padding=(1, 1), bias=True),
                dict(hw=(4, 4), stream_bits=128, lanes=16, frame_word_beats=2)),
    # row quads on a four-beat frame word, 32 channels
    "quads_c32": (dict(c=32, chain=[[16, 128, 4, 32, 1], [16, 16, 4, 4, 2]], kernel=(2, 2), bias=True),
                  dict(hw=(5, 5), row_quads=True, frame_word_beats=4)),
    # the ZCU104 default's kind: a 128-bit stream, four generators, two-beat words (64 channels: four
    # beats a pixel, two-beat reads), row quads, max pooling
    "zcu_kind_c64": (dict(c=64, chain=[[16, 256, 4, 64, 1], [16, 16, 4, 4, 4]], kernel=(2, 2), padding=(1, 1),
                          bias=True),
                     dict(hw=(5, 5), pool=(2, 2), stream_bits=128, window_generators=4, lanes=32, row_quads=True,
                          frame_word_beats=2)),
}


def run_frame_words(name: str, fault=None, **kw):
    return run_named(FRAME_WORDS, "fw", name, fault, **kw)


@pytest.mark.parametrize("name", sorted(FRAME_WORDS))
def test_frame_words_of_several_beats_are_bit_exact_and_the_cycle_model(name):
    """A frame-buffer word of 2 or 4 beats (``frame_word_beats``): a window read takes the most beats
    of a pixel that divide its beats (up to a word), into E x that many IN banks. Extreme operands,
    CYCLES equal to the model, and fewer of them than one-beat reads where a read takes more."""
    env, step, q, run, _ = run_frame_words(name)
    desc = env.describe(step)
    assert run.regs[0]["CYCLES"] == desc.pass_cycles(2)
    assert in_banks(env) == env.frame_word_beats * env.elems_per_beat
    one = EngineEnvelope(**{**env.to_dict(), "frame_word_beats": 1}).describe(step)
    rb = desc.geometry(2).read_beats
    assert rb == window_read_beats(desc.in_cw, env.frame_word_beats)
    if rb > 1:
        assert desc.batch_cycles()["window"] < one.batch_cycles()["window"]
    else:
        assert desc.pass_cycles(2) == one.pass_cycles(2)


def test_frame_word_beats_are_checked_and_kept_out_of_old_hashes():
    layer = conv("fw", 16, [[8, 64, 2, 16, 1]], kernel=(2, 2))
    with pytest.raises(ConfigError, match=r"^engine: frame_word_beats=3 must be one of 1, 2, 4$"):
        envelope_for([layer], frame_word_beats=3)
    with pytest.raises(ConfigError, match=r"^engine: frame_beats=1026 must be a multiple of frame_word_beats=4 "):
        EngineEnvelope(**{**envelope_for([layer]).to_dict(), "frame_beats": 1026, "frame_word_beats": 4})
    one, four = envelope_for([layer]), envelope_for([layer], frame_word_beats=4)
    assert "frame_word_beats" not in one.hardware_dict() and four.hardware_dict()["frame_word_beats"] == 4
    assert four.hash32 != one.hash32 and EngineEnvelope.from_dict(four.to_dict()) == four
    assert regmap.unpack("CAP_FEATURES", four.capability_words()["CAP_FEATURES"])["FRAME_WORD_BEATS"] == 4
    assert [window_read_beats(cw, 4) for cw in (1, 2, 3, 4, 6, 8, 12)] == [1, 2, 1, 4, 2, 4, 4]
    assert "4 beats a frame word" in four.words


# ---------------------------------------------------------------- window generators
@pytest.mark.parametrize("name, gens", [("k2x3_s1x2_p1x1_c3", 2), ("k3x2_s2_d2x3_c5", 4), ("k3x3_p1_c10", 4),
                                        ("k2x3_s2x1_p0x2_d2x1_c1", 2)])
def test_window_generators_are_bit_exact_and_the_cycle_model(name, gens):
    """G window generators (lanes interleaved, each with its own frame read port and IN memories):
    the same outputs, and CYCLES is the cycle model's (which the windows no longer pace alone)."""
    env, step, q, run, _ = run_conv(name, seed=31, window_generators=gens)
    one = envelope_for([step.layer], window_generators=1).describe(step).pass_cycles(2)
    assert env.window_generators == gens
    assert run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(2) < one


@pytest.mark.parametrize("name, lanes, gens", [("k2x3_s1x2_p1x1_c3", 24, 1), ("k3x3_p1_c10", 40, 2)])
def test_skewed_banks_with_several_lanes_a_word(name, lanes, gens):
    """IN's and OUT's skewed banks (``memories.skewed_bank``) when a bank word holds several lanes
    (24 lanes: 3 a word of the E = 8 banks; 40 lanes: 5 an OUT word, and 3 an IN word of each of 2
    generators, the last partial) and the element offsets are unaligned: the same outputs, and
    CYCLES is the cycle model's. (The 8-lane tests pass with every lane in slot 0.)"""
    env, step, q, run, _ = run_conv(name, seed=5, lanes=lanes, window_generators=gens)
    assert in_slots(env) == 3 and out_slots(env) == lanes // 8
    assert run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(2)


@pytest.mark.parametrize("images, gens", [(1, 4), (3, 4), (9, 4), (21, 2)])
def test_window_generators_with_idle_generators_and_short_lanes(images, gens):
    """A linear layer over 1 x 1 maps: one read a lane (fewer reads than generators: a lane takes G
    cycles), and batches with fewer positions than generators (some form no lane of them)."""
    layer = linear("lin", [[12, 8, 3, 2, 1], [16, 12, 4, 3, 1]], bias=True, relu=True)
    env, step, q, run, _ = run_step(layer, (8, 1, 1), images=images, relu=True, seed=7, window_generators=gens)
    assert run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(images)


@pytest.mark.parametrize("seed", [81, 97])
def test_window_generators_cycle_model_where_the_unload_paces(seed):
    """Random layers where four generators form windows faster than OUT unloads: a batch's issue
    waits for the batch two before it to have unloaded (the model without that wait is 4 cycles
    short on both)."""
    case = random_case(seed)
    layer, shape = case.pop("layer"), case.pop("in_shape")
    case.update(backpressure=None, idle=None)
    env, step, q, run, _ = run_step(layer, shape, window_generators=4, **case)
    assert run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(case["images"])


def test_window_generators_wait_for_each_other_between_batch_phases():
    """A generator that has formed its lanes of a batch-phase does not start the next one until
    every generator has (``sync``): while the other is still on the first, it forms one and waits."""
    from amaranth import Value
    from amaranth.sim import Simulator

    from litefly.hw.window import WindowGenerator

    c = dict(CONVS["k3x3_p1_c10"])
    layer = conv("w", c["c"], c["chain"], kernel=c["kernel"], padding=c["padding"], bias=True)
    step = EngineStep(layer, (c["c"],) + c["hw"], relu=False)
    env = envelope_for([layer], window_generators=2)
    words = env.describe(step).register_words(2)          # 32 positions: 4 batches of 8 lanes
    dut = WindowGenerator(env, group=1, groups=2)
    formed = []

    async def bench(ctx):
        for name in regmap.DESCRIPTOR:
            ctx.set(Value.cast(dut.desc[name]), words.get(name, 0))
        for i in range(env.max_factors):
            for kind, _, _ in regmap.FACTOR_REGS:
                ctx.set(Value.cast(dut.desc.F[i][kind]), words.get(f"F{i}_{kind}", 0))
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        for cycle in range(600):
            # the other generator forms its first batch-phase at cycle 300 and keeps up after it
            ctx.set(dut.sync, 1 if cycle >= 300 else ctx.get(dut.half) == 0)
            *_, in_set = await ctx.tick().sample(dut.in_set)
            if in_set:
                formed.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len([t for t in formed if t < 300]) == 1 and len(formed) == 4, formed


def test_window_generators_are_checked_and_kept_out_of_old_hashes():
    small = conv("w8", 4, [[4, 16, 1, 4, 1]], kernel=(2, 2))
    with pytest.raises(ConfigError, match=r"engine: window_generators=3 must be one of 1, 2, 4"):
        envelope_for([small], window_generators=3)
    one, two = envelope_for([small]), envelope_for([small], window_generators=2)
    assert "window_generators" not in one.hardware_dict() and two.hardware_dict()["window_generators"] == 2
    assert one.hash32 != two.hash32
    assert EngineEnvelope.from_dict(two.to_dict()) == two
    assert regmap.unpack("CAP_FEATURES", two.capability_words()["CAP_FEATURES"])["WINDOWS"] == 2
    from litefly.config import NetworkEngine
    assert NetworkEngine.from_dict({"window_generators": 4}).window_generators == 4
    for bad in (3, "two"):
        with pytest.raises(ConfigError, match=f"network engine: window_generators={bad!r} must be 1, 2 or 4"):
            NetworkEngine.from_dict({"window_generators": bad})


# ---------------------------------------------------------------- linear layers
def test_linear_many_images_partial_last_batch():
    # 1 x 1 x q maps (host columns as a linear layer): 21 images on 8 lanes -> 3 batches, 5 idle lanes
    layer = linear("lin", [[12, 24, 1, 2, 1], [16, 12, 4, 3, 1]], bias=True, relu=True)
    run_step(layer, (24, 1, 1), images=21, relu=True, seed=5)


def test_linear_over_a_map_is_a_whole_map_window():
    # a linear layer after a 3 x 2 x 4 map: its window is the whole map (channels-last flatten)
    layer = linear("flat", [[8, 24, 2, 6, 1]], bias=True)
    run_step(layer, (4, 3, 2), images=5, seed=6)


# ---------------------------------------------------------------- output stage
@pytest.mark.parametrize("pool", [(2, 2), (3, 1)])
def test_max_pooling(pool):
    layer = conv(f"pool{pool[0]}{pool[1]}", 5, [[12, 20, 3, 5, 1]], kernel=(2, 2), padding=(1, 0))
    run_step(layer, (5, 5, 6), images=1, relu=pool == (2, 2), pool=pool, seed=7)


def test_diagonal_factors():
    """Factors of 1x1 blocks (r = s = t = 1, g groups: a diagonal), first, inner and last: every
    issue ends a group, and the factor's end comes with its last group's (the sequencer's
    registered end-of-factor flag looks one step ahead through the j loop)."""
    layer = linear("diag", [[16, 16, 1, 1, 1], [8, 16, 4, 8, 2], [8, 8, 1, 1, 1]], bias=True)
    run_step(layer, (16, 1, 1), images=9, seed=21)


def test_saturation_at_both_ends_and_extreme_bias():
    layer = linear("sat", [[8, 16, 8, 16, 1]], bias=True)
    rng = np.random.default_rng(8)
    step = EngineStep(layer, (16, 1, 1), relu=False)
    env = envelope_for([layer])
    x = input_map(rng, (16, 16, 1, 1))
    q = extreme_params(layer, rng)
    q.shifts[0] = 4
    run = run_engine(env, [pass_for(env, step, q, x)])
    y = check_outputs(step, q, x, run.out[0], run.tlast[0])
    assert (y == -128).any() and (y == 127).any() and ((y > -128) & (y < 127)).any()


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
def test_barrel_rotates_by_every_amount(n):
    """The rotator (4:1 stages, a 2:1 last one when log2(n) is odd) both ways, every amount."""
    from amaranth import Module, Signal
    from amaranth.sim import Simulator
    from litefly.hw.barrel import barrel_rotate
    for down in (True, False):
        m = Module()
        vals = [Signal(8, name=f"v{i}") for i in range(n)]
        amount = Signal(n.bit_length() - 1)
        outs = [Signal(8, name=f"o{i}") for i in range(n)]
        m.d.comb += [o.eq(v) for o, v in zip(outs, barrel_rotate(m, "r", vals, amount, down=down))]

        async def bench(ctx, down=down):
            for i, v in enumerate(vals):
                ctx.set(v, i + 1)
            for a in range(n):
                ctx.set(amount, a)
                assert [ctx.get(o) for o in outs] == [(i + (a if down else -a)) % n + 1 for i in range(n)], (down, a)
        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()


def test_output_stage_requantises_every_shift():
    """The output stage alone (Amaranth's simulator): every shift 0..ACC_BITS - 1 (what
    ``QuantizedLayer`` accepts) and ACC_BITS (where the sequencer clamps larger ones) on accumulators at
    and around the saturation bounds and the rounding ties, positive and negative, against
    ``requantize``: the WORK row it writes (an intermediate factor's, which ReLU leaves alone
    whether or not RELU is set; the saturation test is a mask of the shift)."""
    from amaranth.sim import Simulator
    from litefly.hw.output_stage import OutputStage
    layer = linear("req", [[8, 16, 8, 16, 1]])
    env = envelope_for([layer])
    L, ACC, A = env.lanes, env.acc_bits, env.act_bits
    dut = OutputStage(env)
    lo_acc, hi_acc = -(1 << (ACC - 1)), (1 << (ACC - 1)) - 1
    cases = []
    for shift in range(ACC + 1):
        edges = {lo_acc, hi_acc, 0, -1, 1}
        for base in (127, 128, -128, -129, 64, -65):
            for d in (-1, 0, 1):
                v = (base << shift) + d - ((1 << shift) >> 1)
                edges.add(v)
        vals = sorted(v for v in edges if lo_acc <= v <= hi_acc)
        for k in range(0, len(vals), L):
            row = (vals[k:k + L] + [0] * L)[:L]
            cases += [(shift, relu, row) for relu in (0, 1)]
    got = []

    async def bench(ctx):
        ctx.set(dut.pool_en, 0)
        for shift, relu, row in cases + [(0, 0, [0] * L)] * 3:
            ctx.set(dut.ctl, {"valid": 1, "fi_last": 0, "shift": shift})
            ctx.set(dut.relu_en, relu)
            for l, v in enumerate(row):
                ctx.set(dut.res[l], v)
            await ctx.tick()
            if ctx.get(dut.work_w[0].en):
                word = ctx.get(dut.work_w[0].data).to_bytes(L * A // 8, "little")
                got.append(list(unpack_elements(np.frombuffer(word, np.uint8)[None], A, L, L)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) >= len(cases)
    for (shift, relu, row), out in zip(cases, got[:len(cases)]):
        want = requantize(np.array(row), shift, A)
        assert list(want) == out, f"shift {shift}: {row} -> {out}, expected {list(want)}"


def test_largest_shift_rounds_the_largest_accumulator():
    """The rounding term at its largest (shift = ACC_BITS - 1) on the largest accumulator (every
    product (-128)(-128), s = 4: 2^16 in an 18-bit accumulator) carries past ACC_BITS: 1, not -1."""
    layer = linear("rnd", [[8, 4, 8, 4, 1]])
    rng = np.random.default_rng(15)
    step = EngineStep(layer, (4, 1, 1), relu=False)
    env = envelope_for([layer])
    assert env.acc_bits == 18
    x = input_map(rng, (9, 4, 1, 1))
    x[:8] = -128
    q = QuantizedLayer(layer, [np.full(layer.chain[0].compact_shape, -128)], [17])
    run = run_engine(env, [pass_for(env, step, q, x)])
    y = check_outputs(step, q, x, run.out[0], run.tlast[0])
    assert (y[:8] == 1).all()


def test_sequencer_walks_a_block_of_sixteen_bits():
    """The sequencer alone (Amaranth's simulator) on a factor whose block has s = 32,769 columns
    (past 15 bits; a chain width may be 65,535): one row of 32,769 issues, first and last term
    flagged once each, the batch ending on the last issue."""
    from amaranth.sim import Simulator
    from litefly.hw.cycles import WINDOW_SETUP
    from litefly.hw.sequencer import Sequencer
    s = 32_769
    env = envelope_for([linear("wide", [[1, s, 1, s, 1]])], lanes=4, stream_bits=32, frame_beats=ceil_div(s, 4))
    dut = Sequencer(env)
    seen = {"issues": 0, "first": [], "last": [], "end": []}

    async def bench(ctx):
        f = dut.desc.F[0]
        for v, x in ((f.RS.R, 1), (f.RS.S, s), (f.TG.T, 1), (f.TG.G, 1), (dut.desc.LAYER.FACTORS, 1)):
            ctx.set(v, x)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        # as in the engine, the first IN half is formed no sooner than the window generator's set-up
        # after the start (the sequencer registers some walk limits a cycle after it)
        await ctx.tick().repeat(WINDOW_SETUP)
        ctx.set(dut.in_meta[0], {"lanes": 1, "first_phase": 1, "last_phase": 1, "last_batch": 1})
        ctx.set(dut.in_full, 1)
        for _ in range(s + 20):
            await ctx.tick()
            if ctx.get(dut.ctl.valid):
                n = seen["issues"] = seen["issues"] + 1
                for k, flag in (("first", dut.ctl.first), ("last", dut.ctl.last), ("end", dut.ctl.batch_end)):
                    if ctx.get(flag):
                        seen[k].append(n)
            if ctx.get(dut.in_clr):
                ctx.set(dut.in_full, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {"issues": s, "first": [1], "last": [s], "end": [s]}


# ---------------------------------------------------------------- streams, counters, cycle model
def test_slow_consumer_stalled_producer_counters_and_cycle_model():
    # 5 batches against a consumer taking one beat in four, input with gaps
    layer = conv("slow", 3, [[8, 12, 4, 6, 1], [8, 8, 2, 2, 2]], kernel=(2, 2), padding=(1, 1), bias=True)
    env, step, q, run, _ = run_step(layer, (3, 4, 5), images=2, seed=9, backpressure=[1, 1, 1, 0],
                                    idle=[0, 1, 0])
    r = run.regs[0]
    desc = env.describe(step)
    positions = 2 * desc.out_positions_per_image
    assert ceil_div(positions, env.lanes) >= 4
    assert r["COLUMNS_DONE"] == positions
    assert r["BUSY_CYCLES"] == desc.mac_cycles(2)
    assert r["STALLED_CYCLES"] > 0 and r["LOAD_CYCLES"] >= 2 * desc.in_beats_per_image
    status = regmap.unpack("STATUS", r["STATUS"])
    assert status == {"BUSY": 0, "DONE": 1, "LOADING": 0, "PARAMS_VALID": 1}
    for name, word in env.capability_words().items():
        assert r[name] == word, name
    for name, word in desc.register_words(2).items():
        assert r[name] == word, name


def test_cycle_model_agrees():
    layer = conv("model", 6, [[16, 24, 4, 6, 1], [16, 16, 2, 2, 4]], kernel=(2, 2), padding=(1, 1), bias=True)
    env, step, q, run, _ = run_step(layer, (6, 5, 5), images=2, seed=10)
    assert run.regs[0]["CYCLES"] == env.describe(step).pass_cycles(2)


# ---------------------------------------------------------------- the frame buffer as a ring
RING = {
    # (input channels, chain, kwargs of run_ring): every pass streams several frame buffers' worth
    "conv3x3": (8, [[8, 72, 2, 18, 4], [8, 8, 2, 2, 4]], {}),
    "pool2x2": (8, [[8, 72, 2, 18, 4], [8, 8, 2, 2, 4]], dict(pool=(2, 2), frame=128, images=6)),
    "two_windows": (8, [[8, 72, 2, 18, 4], [8, 8, 2, 2, 4]], dict(window_generators=2, lanes=16)),
    "four_windows": (8, [[8, 72, 2, 18, 4]], dict(window_generators=4, lanes=32, frame=128, images=6)),
    "packed_c3": (3, [[9, 27, 1, 3, 3], [8, 9, 8, 9, 1]], dict(packed=True)),
    "image_larger_than_frame": (8, [[8, 72, 2, 18, 4], [8, 8, 2, 2, 4]], dict(hw=(16, 16), images=2)),
    "stream32_stride2": (8, [[8, 72, 2, 18, 4]], dict(stream_bits=32, stride=(2, 2), hw=(12, 12), frame=512,
                                                      images=3)),
    # two-beat frame words, two-beat reads (16 channels); four-beat words, four-beat reads (32 channels)
    "words2_c16": (16, [[8, 144, 2, 36, 1], [8, 8, 2, 2, 4]], dict(frame=128, frame_word_beats=2)),
    "words4_c32": (32, [[8, 288, 2, 72, 1], [8, 8, 2, 2, 4]], dict(frame=256, frame_word_beats=4, lanes=16,
                                                                   hw=(6, 6))),
    # session 20 (LayerDescriptor.ring_fits from the loader's held arrivals, ring_arrival): a batch of
    # two whole pooled images brings 512 beats while its windows take 4 x 75 cycles, so the loader
    # runs ahead and the ring holds it back, but never a read; a 1x1 conv, whose windows keep pace
    # with the load
    "whole_images": (32, [[8, 288, 2, 72, 1], [8, 8, 2, 2, 4]], dict(frame=1024, frame_word_beats=4, lanes=32,
                                                                     window_generators=4, pool=(2, 2), images=8)),
    "one_by_one": (8, [[8, 8, 1, 1, 8]], dict(kernel=(1, 1), padding=(0, 0))),
}


def run_ring(ch, chain, frame=64, images=4, hw=(8, 8), stride=(1, 1), pool=None, seed=0, lanes=8,
             stream_bits=64, window_generators=1, packed=False, frame_word_beats=1, kernel=(3, 3), padding=(1, 1),
             **kw):
    """A conv pass (3x3 unless ``kernel``) of ``images`` images through a frame buffer of ``frame``
    beats (one or two images): the loader overwrites beats the windows have read."""
    rng = np.random.default_rng(seed)
    layer = conv("ring", ch, chain, kernel=kernel, padding=padding, stride=stride, bias=True)
    step = EngineStep(layer, (ch,) + hw, relu=True, pool=pool)
    env = EngineEnvelope.for_layers("t", [layer], multipliers=lanes, stream_bits=stream_bits, frame_beats=frame,
                                    window_generators=window_generators, frame_word_beats=frame_word_beats)
    desc = env.describe(step, packed_input=packed)
    assert env.ring and desc.images_per_pass < images and desc.ring_fits(images)
    assert desc.pass_images(images) == images
    x = input_map(rng, (images, ch) + hw)
    q = extreme_params(layer, rng)
    run = run_engine(env, [pass_for(env, step, q, x, packed=packed)], max_cycles=400_000, **kw)
    check_outputs(step, q, x, run.out[0], run.tlast[0])
    return desc, run


@pytest.mark.parametrize("name", sorted(RING))
def test_ring_frame_buffer_streams_a_pass_larger_than_itself(name):
    ch, chain, kw = RING[name]
    desc, run = run_ring(ch, chain, seed=sorted(RING).index(name), **kw)
    assert run.regs[0]["CYCLES"] == desc.pass_cycles(kw.get("images", 4))       # the ring holds no read back


@pytest.mark.parametrize("stall", ["idle_source", "slow_sink"])
def test_ring_frame_buffer_under_stalls(stall):
    ch, chain, _ = RING["conv3x3"]
    kw = {"idle": [0, 1, 1, 0, 0, 1]} if stall == "idle_source" else {"backpressure": [0, 1, 1]}
    run_ring(ch, chain, seed=7, **kw)


def test_ring_is_refused_where_it_would_hold_reads_back():
    # a layer whose first two batches span more than the frame keeps to the frame (their reads would
    # wait for a release: a deadlock): a pooled 3x3 conv on 8 lanes, a 1x1 conv on 64 (a batch is the
    # whole 64-beat frame); a frame depth that is no power of two is no ring
    one = conv("one", 8, [[8, 8, 1, 1, 8]], kernel=(1, 1))
    pooled = conv("pool", 8, [[8, 72, 2, 18, 4]], kernel=(3, 3), padding=(1, 1))
    for layer, pool, lanes in ((pooled, (2, 2), 8), (one, None, 64)):
        env = EngineEnvelope.for_layers("t", [layer], multipliers=lanes, stream_bits=64, frame_beats=64)
        desc = env.describe(EngineStep(layer, (8, 8, 8), relu=False, pool=pool))
        assert env.ring and not desc.ring_fits(4) and desc.pass_images(4) == desc.images_per_pass == 1
        with pytest.raises(ConfigError, match=r"4 images per pass, the frame buffer holds 1..1 \(and cannot stream"):
            desc.register_words(4)
    env = EngineEnvelope.for_layers("t", [pooled], multipliers=8, stream_bits=64, frame_beats=96)
    assert not env.ring and not env.describe(EngineStep(pooled, (8, 8, 8), relu=False)).ring_fits(4)
    # an image larger than the buffer: streamed where the ring fits it (above), else refused in one line
    env = EngineEnvelope.for_layers("t", [pooled], multipliers=8, stream_bits=64, frame_beats=64)
    with pytest.raises(ConfigError, match=r"one image \(beats\) 256 exceeds the engine's CAP_FRAME_BEATS = 64 "
                                          r"\(a ring, but its windows span more than it holds\)$"):
        env.describe(EngineStep(pooled, (8, 16, 16), relu=False, pool=(4, 4)))


def test_ring_pass_is_at_most_one_dma_transfer_each_way():
    from litefly.config import load_network
    from litefly.hw.spec import DMA_MAX_BYTES
    from litefly.network import network_input_shape, plan_network
    net = load_network(ROOT / "examples" / "vgg_net.yaml")
    env = EngineEnvelope.for_network(net, (32, 32), board="pynq-z2")
    conv2 = env.describe(plan_network(net, network_input_shape(net, (32, 32)))[1])
    assert conv2.images_per_pass == 1 and conv2.pass_images(8) == 8
    n = DMA_MAX_BYTES // conv2.in_bytes_per_image                  # 64 KiB an image: 1023
    assert conv2.pass_images(5000) == n and n * conv2.in_bytes_per_image <= DMA_MAX_BYTES


def test_verilog_grows_linearly_with_lanes(tmp_path):
    """Amaranth emits each slice of an expression as the whole expression: a per-lane slice of a
    lanes-wide expression makes the Verilog quadratic in the lanes (80 MB at 384). Per lane it
    stays near 10 KB (packed MACs, 64-bit stream, the VGG example)."""
    from litefly.config import load_network
    net = load_network(ROOT / "examples" / "vgg_net.yaml")
    size = {}
    for lanes in (32, 128):
        env = EngineEnvelope.for_network(net, (8, 8), multipliers=lanes, macs_per_dsp=2, stream_bits=64)
        generate(env, tmp_path / str(lanes))
        size[lanes] = sum(p.stat().st_size for p in (tmp_path / str(lanes)).glob("*.v"))
    assert (size[128] - size[32]) / 96 < 20_000, size


# ---------------------------------------------------------------- one engine, many layers
def test_one_engine_runs_a_network_layer_after_layer():
    # conv (C=3) + ReLU + 2x2 pool -> conv (C=8) -> linear over the 1 x 2 map: the engine's
    # output beats of each layer are the next layer's input beats as they stand
    l1 = conv("l1", 3, [[9, 27, 1, 3, 3], [8, 9, 8, 9, 1]], kernel=(3, 3), padding=(1, 1), bias=True)
    l2 = conv("l2", 8, [[12, 32, 3, 8, 1]], kernel=(2, 2), stride=(1, 2))
    l3 = linear("l3", [[6, 24, 1, 4, 1], [5, 6, 5, 6, 1]], bias=True)
    env = envelope_for([l1, l2, l3], lanes=8)
    rng = np.random.default_rng(11)
    s1 = EngineStep(l1, (3, 6, 6), relu=True, pool=(2, 2))
    s2 = EngineStep(l2, s1.out_shape, relu=True)
    s3 = EngineStep(l3, s2.out_shape, relu=False)
    x = input_map(rng, (2, 3, 6, 6))
    passes, ys, qs, steps = [], [], [], (s1, s2, s3)
    h = x
    for st in steps:
        q = calibrated_params(st.layer, st, h, rng)
        passes.append(pass_for(env, st, q, h))
        qs.append(q)
        h = step_forward_int(st, q, h)
        ys.append(h)
    run = run_engine(env, passes)
    for i, st in enumerate(steps):
        check_outputs(st, qs[i], x if i == 0 else ys[i - 1], run.out[i], run.tlast[i])
        if i + 1 < len(steps):
            assert np.array_equal(run.out[i], passes[i + 1].x_beats)


# ---------------------------------------------------------------- soft reset
def test_soft_reset_mid_pass_with_output_pending():
    layer = conv("sr", 3, [[8, 12, 4, 6, 1]], kernel=(2, 2), padding=(1, 1), bias=True)
    rng = np.random.default_rng(12)
    step = EngineStep(layer, (3, 4, 4), relu=True)
    env = envelope_for([layer])
    x1, x2 = input_map(rng, (2, 3, 4, 4)), input_map(rng, (2, 3, 4, 4))
    q = extreme_params(layer, rng)
    first = pass_for(env, step, q, x1)
    # after the reset: descriptor and memories are kept, so the same pass runs with no
    # register writes and no parameter load
    again = Pass({}, pack_nhwce(x2, env.elems_per_beat), first.out_beats)
    run = run_engine(env, [first, again], abort_first=5)
    sr = run.soft_reset
    assert sr["tvalid_before"] == 1 and regmap.unpack("STATUS", sr["status_before"])["BUSY"] == 1
    assert sr["tvalid_after"] == 0, "m_axis_tvalid (or s_axis_tready) stayed high after soft reset"
    assert sr["status_after"] == 0 and sr["cycles_after"] == 0, "flags, PARAMS_VALID or counters survived"
    assert len(run.out[0]) == 5
    check_outputs(step, q, x2, run.out[1], run.tlast[1])
    assert regmap.unpack("STATUS", run.regs[1]["STATUS"])["PARAMS_VALID"] == 0


def test_soft_reset_mid_parameter_load_and_mid_frame_load():
    layer = conv("srs", 3, [[8, 12, 4, 6, 1]], kernel=(2, 2), padding=(1, 1), bias=True)
    rng = np.random.default_rng(14)
    step = EngineStep(layer, (3, 3, 3), relu=False)
    env = envelope_for([layer])
    x = input_map(rng, (2, 3, 3, 3))
    q = extreme_params(layer, rng)
    p = pass_for(env, step, q, x)
    p.abort_params, p.abort_frame = 3, 5
    run = run_engine(env, [p])
    params, frame = run.stream_resets
    assert regmap.unpack("STATUS", params["status_before"])["LOADING"] == 1
    assert regmap.unpack("STATUS", frame["status_before"])["BUSY"] == 1
    for r in (params, frame):
        assert r["tready_after"] == 0 and r["status_after"] == 0, r
    check_outputs(step, q, x, run.out[0], run.tlast[0])


# ---------------------------------------------------------------- faults have teeth
FAULT_LAYERS = {
    "weight_addr": lambda: (conv("fw", 3, [[8, 12, 4, 6, 1]], kernel=(2, 2)), (3, 3, 4), None),
    "rounding": lambda: (conv("fr", 3, [[8, 12, 4, 6, 1]], kernel=(2, 2)), (3, 3, 4), None),
    "window_pad": lambda: (conv("fp", 3, [[8, 27, 8, 27, 1]], kernel=(3, 3), padding=(1, 1)), (3, 3, 4), None),
    "pool": lambda: (conv("fo", 3, [[8, 12, 4, 6, 1]], kernel=(2, 2)), (3, 5, 5), (2, 2)),
    "sparse_split": lambda: (conv("fs", 3, [sparse(2, 12, 1.0, np.random.default_rng(1)),
                                            sparse(8, 14, 1.0, np.random.default_rng(2), concat=True)],
                                  kernel=(2, 2)), (3, 3, 4), None),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_is_caught(fault):
    layer, shape, pool = FAULT_LAYERS[fault]()
    with pytest.raises(AssertionError, match="outputs differ"):
        run_step(layer, shape, images=1, pool=pool, seed=13, fault=fault)


# ---------------------------------------------------------------- generation
def test_generate_writes_verilog_and_manifest(tmp_path):
    layer = conv("gen_small", 3, [[8, 12, 4, 6, 1], [8, 8, 2, 2, 2]], kernel=(2, 2), bias=True)
    env = envelope_for([layer], frame_beats=64)
    g = generate(env, tmp_path)
    text = g.verilog.read_text()
    assert "module t(" in text.replace(" (", "(")
    for port in ("aclk", "aresetn", "s_axis_tdata", "s_axis_tkeep", "m_axis_tlast", "m_axis_tkeep",
                 "s_axil_awaddr", "s_axil_rdata"):
        assert port in text
    d = json.loads(g.manifest.read_text())
    assert d["config_hash"] == env.config_hash and d["envelope"] == env.to_dict()
    names = {r["name"] for r in d["registers"]}
    assert {"ID", "CTRL", "STATUS", "LAYER", "IN_HW", "F1_SHIFT", "LOAD_CYCLES"} <= names
    in_hw = next(r for r in d["registers"] if r["name"] == "IN_HW")
    assert [(f["name"], f["lsb"], f["width"]) for f in in_hw["fields"]] == [("H", 0, 16), ("W", 16, 16)]
    widths = {p["name"]: p["width"] for p in d["ports"]}
    assert widths["s_axil_awaddr"] == env.axil_addr_bits and widths["m_axis_tdata"] == 64
    assert module_name(env, "window_pad") == "t_fault_window_pad"
    with pytest.raises(ConfigError, match="not one of"):
        generate(env, tmp_path / "f", fault="nonsense")


def test_cli_gen_layer_yaml_with_input_size(tmp_path):
    from litefly.hw.cli import gen

    cfg = tmp_path / "small.yaml"
    cfg.write_text("name: small\nkind: conv2d\nin_channels: 3\nout_channels: 8\nkernel: 2\n"
                   "chain: [[8, 12, 4, 6, 1]]\nengine: {multipliers: 8, stream_bits: 32}\n")
    res = CliRunner().invoke(gen, [str(cfg), "-o", str(tmp_path / "out"), "--input-size", "4", "4"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "small.v").exists()
    assert "(8 lanes, 32-bit stream, 64 KiB frame buffer; 8 multipliers)" in res.output
    res = CliRunner().invoke(gen, [str(cfg), "-o", str(tmp_path / "wide"), "--input-size", "4", "4",
                                   "--multipliers", "16", "--stream-bits", "64", "--macs-per-dsp", "2"])
    assert res.exit_code == 0, res.output
    assert "(16 lanes, two lanes per multiplier, 64-bit stream, 64 KiB frame buffer; 8 multipliers)" in res.output
    res = CliRunner().invoke(gen, [str(cfg), "-o", str(tmp_path / "deep"), "--input-size", "4", "4",
                                   "--frame-kib", "256", "--window-generators", "2"])
    assert res.exit_code == 0, res.output
    assert "(8 lanes, 2 window generators, 32-bit stream, 256 KiB frame buffer; 8 multipliers)" in res.output


# ---------------------------------------------------------------- random layers
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def random_chain(q: int, rng: np.random.Generator, max_p: int = 24) -> list[list[int]]:
    chain = []
    for _ in range(int(rng.integers(1, 4))):
        s = int(rng.choice(_divisors(q)))
        t = int(rng.choice(_divisors(q // s)))
        g = q // (s * t)
        rmax = max(1, max_p // (g * t))
        r = int(rng.integers(1, min(rmax, 4) + 1))
        p = g * r * t
        chain.append([p, q, r, s, t])
        q = p
    return chain


def random_case(seed: int):
    """A random conv (or linear) step: geometry, chain, format, pooling, images, stream patterns."""
    rng = np.random.default_rng(1000 + seed)
    c = int(rng.integers(1, 11))
    kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
    sh, sw, dh, dw = (int(v) for v in rng.integers(1, 3, size=4))
    ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + int(rng.integers(0, 4))
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + int(rng.integers(0, 4))
    fmt = {"bias": bool(rng.integers(2))}
    if rng.integers(4) == 0:
        fmt.update(act_bits=int(rng.integers(4, 8)), weight_bits=4)
    if rng.integers(5) == 0:
        layer = linear(f"r{seed}", random_chain(c * h * w, rng), **fmt)
    else:
        layer = conv(f"r{seed}", c, random_chain(kh * kw * c, rng), kernel=(kh, kw), stride=(sh, sw),
                     padding=(ph, pw), dilation=(dh, dw), **fmt)
    step = EngineStep(layer, (c, h, w), relu=bool(rng.integers(2)))
    _, ho, wo = step.conv_shape
    if min(ho, wo) >= 2 and rng.integers(3) == 0:
        step = EngineStep(layer, (c, h, w), step.relu, (2, int(rng.integers(1, 3))))
    patterns = [None, [0, 1], [1, 1, 0], [0, 0, 1]]
    return dict(layer=layer, in_shape=(c, h, w), relu=step.relu, pool=step.pool, images=int(rng.integers(1, 4)),
                stream_bits=int(rng.choice([32, 64])), params="extreme" if rng.integers(3) else "calibrated",
                seed=seed, backpressure=patterns[int(rng.integers(4))], idle=patterns[int(rng.integers(4))])


def check_random(seed: int):
    case = random_case(seed)
    layer = case.pop("layer")
    run_step(layer, case.pop("in_shape"), **case)


@pytest.mark.parametrize("seed", range(4))
def test_random_layer(seed):
    check_random(seed)


@pytest.mark.sweep
@pytest.mark.parametrize("seed", range(4, 204))
def test_random_layer_sweep(seed):
    check_random(seed)


# ---------------------------------------------------------------- throughput (slow: ~5 min per layer)
@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("vgg_conv2", 12), ("vgg_conv3", 10)])
def test_vgg_steady_state_mac_utilisation(name, size):
    """64 lanes, 64-bit stream: MAC issues / cycles from the first to the last issue of a
    pass of 2-3 batches (window generation and unloading overlap the issue)."""
    from pathlib import Path

    from litefly.config import load_layer

    layer = load_layer(Path(__file__).resolve().parent.parent / "examples" / "layers" / f"{name}.yaml")
    rng = np.random.default_rng(0)
    shape = (layer.in_channels, size, size)
    step = EngineStep(layer, shape, relu=True)
    env = EngineEnvelope.for_layers(name, [layer], frame_beats=size * size * 8)
    x = input_map(rng, (1,) + shape)
    q = extreme_params(layer, rng)
    run = run_engine(env, [pass_for(env, step, q, x)], max_cycles=400_000, watch_batches=True)
    check_outputs(step, q, x, run.out[0], run.tlast[0])
    span = run.issue_span[1] - run.issue_span[0] + 1
    util = run.issues / span
    desc = env.describe(step)
    print(f"{name} {size}x{size}: steady-state MAC utilisation {util:.4f} ({run.issues} issues in {span} cycles); "
          f"CYCLES {run.regs[0]['CYCLES']}, model pass_cycles {desc.pass_cycles(1)}")
    assert util >= 0.95


# ---------------------------------------------------------------- sparse factors (issue 14)
def sparse(p: int, q: int, density: float, rng: np.random.Generator, concat: bool = False) -> dict:
    """A random sparse factor's chain-file form (empty rows keep an explicit entry)."""
    return SparseFactor.from_mask(rng.random((p, q)) < density, concat=concat).to_config()


SPARSE = {
    # one sparse factor over a 3x3 window of 5 channels (unaligned columns), bias
    "conv_k3_c5": lambda rng: (dict(c=5, chain=[sparse(12, 45, 0.3, rng)], kernel=(3, 3), padding=(1, 1),
                                    bias=True), (5, 4, 4)),
    # sparse then DeBut then sparse, with rows of one entry (density 0.05: mostly explicit zeros)
    "mixed_chain": lambda rng: (dict(c=4, chain=[sparse(8, 16, 0.4, rng), [8, 8, 2, 2, 1], sparse(6, 8, 0.05, rng)],
                                     kernel=(2, 2)), (4, 3, 3)),
    # sparse plus low rank: V (rank 3), then [S | U] over [x ; V x]
    "concat_low_rank": lambda rng: (dict(c=3, chain=[sparse(3, 12, 1.0, rng), sparse(10, 15, 0.3, rng, concat=True)],
                                         kernel=(2, 2), bias=True), (3, 4, 5)),
    # a DeBut factor, then a concat sparse factor reading IN again after WORK
    "debut_then_concat": lambda rng: (dict(c=2, chain=[[4, 8, 2, 4, 1], sparse(8, 12, 0.5, rng, concat=True)],
                                           kernel=(2, 2), stride=(2, 1)), (2, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(SPARSE))
def test_sparse_factors_are_bit_exact_and_cost_one_cycle_an_entry(name):
    rng = np.random.default_rng(7)
    kw, in_shape = SPARSE[name](rng)
    c = kw.pop("c")
    layer = conv(f"sp_{name}", c, **kw)
    env, step, q, run, _ = run_step(layer, in_shape, images=2, relu=True, params="extreme", seed=3)
    assert env.index_beats > 0
    desc = env.describe(step)
    # CYCLES is the cycle model, whose issue count is the chain's entries (nonzeros + explicit zeros)
    assert run.regs[0]["CYCLES"] == desc.pass_cycles(2)
    assert run.regs[0]["BUSY_CYCLES"] == desc.mac_cycles(2)


def test_sparse_random_patterns_with_backpressure():
    """Random densities and shapes, a 32-bit stream (two entries a beat), stalls on both streams."""
    for seed in range(3):
        rng = np.random.default_rng(50 + seed)
        q = int(rng.integers(4, 40))
        p1, p2 = int(rng.integers(1, 20)), int(rng.integers(1, 20))
        chain = [sparse(p1, q, float(rng.uniform(0.02, 0.9)), rng),
                 sparse(p2, p1 + q if seed % 2 else p1, float(rng.uniform(0.02, 0.9)), rng, concat=bool(seed % 2))]
        run_step(linear(f"spr{seed}", chain, bias=bool(seed % 2)), (q, 1, 1), images=int(rng.integers(1, 5)),
                 stream_bits=32, seed=seed, backpressure=[0, 1], idle=[1, 1, 0])


def test_engine_without_index_memory_refuses_a_sparse_layer():
    rng = np.random.default_rng(0)
    debut = conv("d", 4, [[8, 16, 2, 4, 1]], kernel=(2, 2))
    sp = conv("s", 4, [sparse(8, 16, 0.5, rng)], kernel=(2, 2))
    env = envelope_for([debut])
    assert env.index_beats == 0 and "index_beats" not in env.hardware_dict()
    with pytest.raises(ConfigError, match="sparse index beats .* exceeds the engine's CAP_INDEX_BEATS = 0"):
        env.describe(EngineStep(sp, (4, 3, 3), relu=False))


# ---------------------------------------------------------------- residual adds (issue 15)
RESIDUAL = {
    # P = 8 = E, K > 0, ReLU after the add, bias, a 3x3 conv of 8 channels
    "p8_relu": dict(c=8, chain=[[8, 72, 4, 36, 1], [8, 8, 2, 2, 4]], kernel=(3, 3), padding=(1, 1), bias=True,
                    relu=True, align=(40000, 16), shape=(8, 4, 5)),
    # P = 6 < E: pad channels stay zero; no ReLU; K = 0 (an integer multiplier)
    "p6_k0": dict(c=3, chain=[[6, 12, 3, 6, 1]], kernel=(2, 2), relu=False, align=(1, 0), shape=(3, 4, 4)),
    # P = 12 > E, stride 2, skip larger than the output: M / 2^K = 3.5
    "p12_s2": dict(c=4, chain=[[12, 36, 4, 12, 1]], kernel=(3, 3), stride=(2, 2), padding=(1, 1), relu=True,
                   align=(7, 1), shape=(4, 7, 6)),
}


@pytest.mark.parametrize("name", sorted(RESIDUAL))
def test_residual_add_after_the_layer_before_relu(name):
    """The skip tensor follows the frame on s_axis; the unloader adds it, aligned, before ReLU."""
    case = dict(RESIDUAL[name])
    c, shape, relu, align = case.pop("c"), case.pop("shape"), case.pop("relu"), case.pop("align")
    layer = conv(f"res_{name}", c, **case)
    rng = np.random.default_rng(21)
    step = EngineStep(layer, shape, relu=relu, skip="src")
    env = envelope_for([layer], residual=True)
    with pytest.raises(ConfigError, match="generated without residual adds"):
        envelope_for([layer]).describe(step)
    x = input_map(rng, (2,) + shape)
    q = extreme_params(layer, rng)
    q.skip_align = align
    skip = input_map(rng, (2,) + step.out_shape)
    p = pass_for(env, step, q, x)
    p.words["SKIP"] = regmap.pack("SKIP", {"M": align[0], "K": align[1]})
    assert p.words["SKIP_BEATS"] == env.describe(step).skip_beats(2) == 2 * env.describe(step).out_beats_per_image
    p.x_beats = np.concatenate([p.x_beats, pack_nhwce(skip, env.elems_per_beat)])
    run = run_engine(env, [p], backpressure=[0, 0, 1], idle=[0, 1])
    want = step_forward_int(step, q, x, skip)
    got = unpack_nhwce(run.out[0], 2, *step.out_shape)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {want.size} outputs differ"
    assert np.all(pad_channels(run.out[0], step.out_shape[0]) == 0)
    assert (want == 127).any() or (want == -128).any() or not relu      # the add saturates somewhere
    # the cycle model bounds the pass: the skip arrives after the frame
    run2 = run_engine(env, [p])
    assert abs(run2.regs[0]["CYCLES"] - env.describe(step).pass_cycles(2)) <= 2, \
        (run2.regs[0]["CYCLES"], env.describe(step).pass_cycles(2))

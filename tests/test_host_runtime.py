"""NetworkRunner on one network engine (golden backend): int8 tensors stay in board memory between
layers, the host quantises once, packs once and unpacks once, and its time per inference is a
small fraction of the engine's."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_network
from litefly.host import runtime
from litefly.host.driver import STAGES
from litefly.host.runtime import NetworkRunner
from litefly.hw.spec import EngineEnvelope
from litefly.network import RowFold, network_forward_int, plan_network

from network_params import calibrated_network_params

VGG = Path(__file__).resolve().parent.parent / "examples" / "vgg_net.yaml"


def test_one_engine_runs_the_network_buffer_to_buffer(monkeypatch):
    net = load_network(VGG)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(2))
    calls = {"pack_tensor": 0, "unpack_tensor": 0}
    for name in calls:
        orig = getattr(runtime, name)

        def counted(*a, _orig=orig, _name=name, **k):
            calls[_name] += 1
            return _orig(*a, **k)
        monkeypatch.setattr(runtime, name, counted)
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    y = runner.run(x)
    np.testing.assert_array_equal(y, ref)
    assert calls == {"pack_tensor": 1, "unpack_tensor": 0}          # run(): dequantised while unpacking
    steps = plan_network(net, (3, 8, 8))
    xi = params["vgg_conv1"].quantize_input(x)
    yi = runner.run_int(xi)
    np.testing.assert_array_equal(yi, network_forward_int(steps, params, xi))
    assert calls == {"pack_tensor": 2, "unpack_tensor": 1}
    # the stats: one engine, every layer, traffic of the feature maps (windows formed on chip)
    assert len(runner.stats) == 3 and runner.total["engine_hash"] == f"0x{runner.envelope.hash32:08x}"
    for st, step in zip(runner.stats, steps):
        assert st["cycles"] == st["model_cycles"] > st["mac_cycles"] > 0
        assert st["transfers"] == 1 + 2 * st["passes"]                  # parameters + (in, out) per pass
        c, h, w = step.in_shape
        assert st["bytes_in"] == 3 * h * w * c                           # the map itself, whatever C
    # the RGB input packed, 3 bytes a pixel (an 8x8 map: folding its kernel rows would save too little)
    first = runner.program((3, 8, 8)).descriptors[0]
    assert first.step.fold is None and first.packed_input
    assert runner.stats[0]["bytes_in"] == 3 * 3 * 8 * 8
    assert runner.stats[1]["bytes_in"] == 3 * 64 * 8 * 8                # 3x3 stride-1 conv: 1.0x its map
    assert runner.total["bytes_in"] == runner.stats[0]["bytes_in"]
    assert set(runner.total["host_stage[s]"]) == set(STAGES)


def test_the_runtime_folds_the_inputs_kernel_rows_where_that_is_faster():
    """At 32x32 on the PYNQ-Z2 default the host folds vgg_conv1's kernel rows into 9 channels while
    packing the input (9 bytes a pixel), with the same output as the int8 golden network."""
    net = load_network(VGG)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(4))
    env = EngineEnvelope.for_network(net, (32, 32), board="pynq-z2")
    with NetworkRunner(net, params, "golden", input_size=(32, 32), envelope=env) as runner:
        first = runner.program((3, 32, 32)).descriptors[0]
        assert first.step.fold == RowFold(kw=3, stride=1, pad=1, dilation=1, width=32) and first.packed_input
        np.testing.assert_array_equal(runner.run(x), ref)
        assert runner.stats[0]["bytes_in"] == 2 * 9 * 32 * 32
    # fold_input: false (the network file, or bench --no-fold-input): the input as it is, 3 bytes a pixel
    plain = dataclasses.replace(net, fold_input=False)
    with NetworkRunner(plain, params, "golden", input_size=(32, 32), envelope=env) as runner:
        first = runner.program((3, 32, 32)).descriptors[0]
        assert first.step.fold is None and first.packed_input
        np.testing.assert_array_equal(runner.run(x), ref)
        assert runner.stats[0]["bytes_in"] == 2 * 3 * 32 * 32
        assert runner.stats[0]["cycles"] > first.envelope.describe_network(plan_network(net, (3, 32, 32)))[0] \
            .pass_cycles(2)


def test_linear_network_output_is_two_dimensional():
    from litefly.config import LayerConfig, NetworkConfig
    lay = LayerConfig.from_dict({"name": "fc", "kind": "linear", "in_features": 16, "out_features": 16,
                                 "chain": [[16, 16, 4, 4, 1], [16, 16, 4, 4, 4]], "format": {"bias": True}})
    net = NetworkConfig("lin", (lay,))
    x = np.random.default_rng(3).standard_normal((5, 16))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(4))
    y = NetworkRunner(net, params, "golden").run(x)
    assert y.shape == (5, 16)
    np.testing.assert_array_equal(y, ref)


def test_host_time_per_inference_is_a_fraction_of_the_engine_time():
    """The VGG example at batch 8, 32x32, engine at 100 MHz: the host's own stages (quantize, copy_in,
    dispatch, copy_out, unpack; not the DMA/engine wait) of the least loaded of up to 8 runs after a
    warm-up. Issue 11's target is 0.10x, measured by ``litefly bench`` (0.07x to 0.09x on this
    project's 2-core machine; 0.12x in session 20, where the model replays the warm-up's passes
    instead of computing them between the host's calls); a loaded CI machine is slower, so this
    guard holds the code to 0.2x (before the network engine: 8 to 19x)."""
    net = load_network(VGG)
    x = np.random.default_rng(5).standard_normal((8, 3, 32, 32))
    params, _ = calibrated_network_params(net, x[:2], np.random.default_rng(6))
    runner = NetworkRunner(net, params, "golden", input_size=(32, 32), clock_mhz=100.0)
    runner.run(x)
    best = float("inf")
    for _ in range(8):
        runner.run(x)
        best = min(best, sum(v for k, v in runner.total["host_stage[s]"].items() if k != "wait"))
        if best <= 0.2 * runner.total["engine_s"]:
            break
    engine = runner.total["engine_s"]
    assert runner.total["param_cycles"] == sum(d.param_beats for d in runner.program(x.shape[1:]).descriptors) > 0
    assert engine == pytest.approx((runner.total["cycles"] + runner.total["param_cycles"]) / 100e6)
    if best > 0.2 * engine and os.getloadavg()[0] > (os.cpu_count() or 1):
        pytest.skip(f"machine overloaded (load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores): host "
                    f"{best * 1e3:.2f} ms vs engine {engine * 1e3:.2f} ms is the load's, not the code's")
    assert best <= 0.2 * engine, f"host {best * 1e3:.2f} ms vs engine {engine * 1e3:.2f} ms"


def test_the_engine_model_replays_a_pass_it_has_run():
    """The golden transport keeps its passes' outputs and counters and replays a pass whose
    registers, parameters and bytes are one it has run (the bench's timed runs), with the same
    output and counters; another input is computed; a START after a soft reset without a
    parameter load is refused, not replayed."""
    from litefly.errors import LiteflyError
    net = load_network(VGG)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 8, 8))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(8))
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    y0 = runner.run(x).copy()
    stats0 = [(st["cycles"], st["counters"]) for st in runner.stats]
    tr = runner._open().transport
    assert tr.replayed == 0
    runner.run(x)           # the first layer's first pass sees the last layer's factor registers (unused) now
    before = tr.replayed
    y1 = runner.run(x)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(y1, ref)
    assert [(st["cycles"], st["counters"]) for st in runner.stats] == stats0
    passes = sum(st["passes"] for st in runner.stats)
    assert tr.replayed - before == passes
    x2 = x.copy()
    x2[1, 0, 3, 3] += 1.0
    y2 = runner.run(x2)
    assert tr.replayed < before + 2 * passes and not np.array_equal(y2, y0)
    steps = plan_network(net, (3, 8, 8))
    ref2 = network_forward_int(steps, params, params["vgg_conv1"].quantize_input(x2)) * params["vgg_conv3"].out_scale
    np.testing.assert_array_equal(y2, ref2)
    from litefly.hw import regmap
    tr.write_reg(regmap.REG["CTRL"], regmap.CTRL_SOFT_RESET)
    with pytest.raises(LiteflyError, match="without a completed parameter load"):
        tr._pass(tr._words(), b"", b"")


def test_the_output_in_float32():
    """``out_dtype="float32"``: the output dequantised straight into float32
    (``float32(y_int) * float32(scale)``, channels-last like float64's), in a run and in a stream;
    ``"auto"`` (the default) follows the input's dtype; another dtype is a one-line error."""
    from litefly.errors import ConfigError
    net = load_network(VGG)
    x = np.random.default_rng(11).standard_normal((3, 3, 8, 8))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(12))
    steps = plan_network(net, (3, 8, 8))
    y_int = network_forward_int(steps, params, params["vgg_conv1"].quantize_input(x))
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8), out_dtype="float32")
    y = runner.run(x)
    assert y.dtype == np.float32 and y.shape == ref.shape
    np.testing.assert_array_equal(y, y_int.astype(np.float32) * np.float32(params["vgg_conv3"].out_scale))
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous                    # channels-last, as float64's
    assert np.abs(y - ref).max() <= np.abs(ref).max() * 2 ** -23          # float32 rounding of float64's
    for out in runner.run_stream([x, x, x]):
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, y)
    # the default, "auto": the input's dtype (float64 in: exactly the golden network's output; float32 in:
    # float32 out, from the float32 input's integers), in a run and in a stream
    auto = NetworkRunner(net, params, "golden", input_size=(8, 8))
    y64 = auto.run(x)
    assert y64.dtype == np.float64
    np.testing.assert_array_equal(y64, ref)
    x32 = x.astype(np.float32)
    y32_int = network_forward_int(steps, params, params["vgg_conv1"].quantize_input(x32))
    want32 = y32_int.astype(np.float32) * np.float32(params["vgg_conv3"].out_scale)
    y32 = auto.run(x32)
    assert y32.dtype == np.float32
    np.testing.assert_array_equal(y32, want32)
    for out, want in zip(auto.run_stream([x32, x, x32]), (want32, ref, want32)):
        assert out.dtype == want.dtype
        np.testing.assert_array_equal(out, want)
    for bad in ("int8", "float16", "nonsense"):
        with pytest.raises(ConfigError, match=r"^out_dtype '\w+' is not one of auto, float64, float32$"):
            NetworkRunner(net, params, "golden", input_size=(8, 8), out_dtype=bad)

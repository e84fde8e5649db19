"""Network plans, engine envelopes and descriptors, and the engine model against the int8 golden network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litefly.chain import butterfly_chain
from litefly.config import HostOp, LayerConfig, NetworkConfig, load_network
from litefly.errors import ConfigError, LiteflyError, ShapeError
from litefly.fixed import random_float_weights
from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import NetworkRunner, execute, prepare_program
from litefly.host.transport import DMATimeout
from litefly.hw import regmap
from litefly.hw.spec import EngineEnvelope, factors_from_words
from litefly.network import network_forward_int, plan_network, quantize_network

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def conv(name, cin, cout, chain, kernel=3, stride=1, padding=1, dilation=1, bias=True, relu=False, mult=16, sb=64):
    return LayerConfig.from_dict({"name": name, "kind": "conv2d", "in_channels": cin, "out_channels": cout,
                                  "kernel": kernel, "stride": stride, "padding": padding, "dilation": dilation,
                                  "chain": chain, "format": {"bias": bias, "relu": relu},
                                  "engine": {"multipliers": mult, "stream_bits": sb}})


def linear(name, fin, fout, chain, bias=True, mult=16, sb=64):
    return LayerConfig.from_dict({"name": name, "kind": "linear", "in_features": fin, "out_features": fout,
                                  "chain": chain, "format": {"bias": bias}, "engine": {"multipliers": mult,
                                                                                       "stream_bits": sb}})


def small_net() -> NetworkConfig:
    """conv 3->8 (3x2 kernel, stride (1,2), dilation (2,1)), relu, maxpool 2; conv 8->16 1x1; flatten; linear."""
    c1 = LayerConfig.from_dict({"name": "c1", "kind": "conv2d", "in_channels": 3, "out_channels": 8,
                                "kernel": [3, 2], "stride": [1, 2], "padding": [2, 1], "dilation": [2, 1],
                                "chain": [[6, 18, 1, 3, 1], [8, 6, 4, 3, 1]], "format": {"bias": True},
                                "engine": {"multipliers": 16, "stream_bits": 64}})
    c2 = conv("c2", 8, 16, [[16, 8, 2, 1, 1], [16, 16, 2, 2, 2]], kernel=1, padding=0)
    steps = (c1, HostOp("relu"), HostOp("maxpool2d", 2, 2), c2, HostOp("relu"), HostOp("flatten"))
    return NetworkConfig("small", steps)


def random_params(steps, x, seed=0):
    rng = np.random.default_rng(seed)
    w = {s.name: random_float_weights(s.layer, rng) for s in steps}
    b = {s.name: rng.standard_normal(s.layer.chain_out) * 0.3 for s in steps if s.layer.format.bias}
    return quantize_network(steps, w, x, b)


def test_plan_fuses_relu_and_pooling():
    steps = plan_network(load_network(EXAMPLES / "vgg_net.yaml"), (3, 32, 32))
    assert [(s.name, s.relu, s.pool) for s in steps] == [
        ("vgg_conv1", True, None), ("vgg_conv2", True, (2, 2)), ("vgg_conv3", True, None)]
    assert steps[1].out_shape == (64, 16, 16) and steps[2].in_shape == (64, 16, 16)


def test_linear_after_flatten_is_a_window_over_the_map():
    net = small_net()
    fc = linear("fc", 16 * 4 * 2, 10, [[10, 128, 10, 128, 1]])
    net = NetworkConfig("n", net.steps + (fc,))
    steps = plan_network(net, (3, 9, 7))
    assert steps[-1].in_shape == (16, 4, 2) and steps[-1].kernel == (4, 2)
    assert steps[-1].out_shape == (10, 1, 1)


@pytest.mark.parametrize("steps, message", [
    ((HostOp("relu"),), "does not follow a layer"),
    ((HostOp("avgpool2d", 2, 2),), "does not run on the engine"),
    ((HostOp("maxpool2d", 2, 2), HostOp("maxpool2d", 2, 2)), "already has a fused pooling"),
    ((HostOp("maxpool2d", 5, 5),), "outside the engine's"),
])
def test_plan_refuses_what_does_not_fuse(steps, message):
    c = conv("c", 3, 8, [[8, 27, 8, 27, 1]])
    net = NetworkConfig("n", ((c,) + steps) if steps[0].op != "relu" else (steps + (c,)))
    with pytest.raises(ConfigError, match=message) as exc:
        plan_network(net, (3, 8, 8))
    assert "\n" not in str(exc.value)


def test_plan_refuses_linear_without_flatten_and_wrong_channels():
    c = conv("c", 3, 8, [[8, 27, 8, 27, 1]])
    fc = linear("fc", 8 * 4 * 4, 10, [[10, 128, 10, 128, 1]])
    with pytest.raises(ConfigError, match="put a flatten op before it"):
        plan_network(NetworkConfig("n", (c, fc)), (3, 4, 4))
    with pytest.raises(ShapeError, match="expects 3 input channels, it gets 4"):
        plan_network(NetworkConfig("n", (c,)), (4, 4, 4))


def test_envelope_serves_every_layer_and_names_the_limit():
    net = load_network(EXAMPLES / "vgg_net.yaml")
    env = EngineEnvelope.for_network(net, (32, 32))
    assert (env.max_q, env.max_p, env.max_factors, env.max_work) == (576, 128, 4, 512)      # merged chains
    for step in plan_network(net, (3, 32, 32)):
        env.describe(step)
    small = EngineEnvelope.for_layers("small", [net.layers[0]])
    with pytest.raises(ConfigError, match=r"vgg_conv2.*factor count 4 exceeds the engine's MAX_FACTORS = 2"):
        small.describe(plan_network(net, (3, 32, 32))[1])
    tiny = EngineEnvelope.for_layers("tiny", list(net.layers), frame_beats=100)
    with pytest.raises(ConfigError, match=r"input feature map of one image \(beats\) 1024 exceeds the engine's CAP_FRAME_BEATS = 100"):
        tiny.describe(plan_network(net, (3, 32, 32))[0])


def test_descriptor_words_roundtrip_through_the_register_map():
    net = small_net()
    steps = plan_network(net, (3, 9, 7))
    env = EngineEnvelope.for_network(net, (9, 7))
    d = env.describe(steps[0])
    words = d.register_words(2)
    assert [f.as_list() for f in factors_from_words(words)] == [f.as_list() for f in steps[0].layer.chain]
    assert regmap.unpack("STRIDE", words["STRIDE"]) == {"SH": 1, "SW": 2}
    assert regmap.unpack("DILATION", words["DILATION"]) == {"DH": 2, "DW": 1}
    assert regmap.unpack("POOL", words["POOL"]) == {"K": 2, "S": 2}
    with pytest.raises(ValueError, match="does not fit 16 bits"):
        regmap.pack("IN_HW", {"H": 1 << 16, "W": 1})


@pytest.mark.parametrize("in_hw, batch", [((9, 7), 3), ((5, 12), 1)])
def test_engine_model_equals_golden_network(in_hw, batch):
    net = small_net()
    steps = plan_network(net, (3,) + in_hw)
    x = np.random.default_rng(1).standard_normal((batch, 3) + in_hw)
    params = random_params(steps, x)
    x_int = params["c1"].quantize_input(x)
    want = network_forward_int(steps, params, x_int)
    runner = NetworkRunner(net, params, "golden", input_size=in_hw)
    got = runner.run_int(x_int)
    np.testing.assert_array_equal(got, want)
    assert runner.total["transfers"] == sum(1 + 2 * s["passes"] for s in runner.stats)


def test_frame_buffer_splits_the_batch_into_passes():
    net = small_net()
    steps = plan_network(net, (3, 9, 7))
    x = np.random.default_rng(2).standard_normal((5, 3, 9, 7))
    params = random_params(steps, x)
    env = EngineEnvelope.for_network(net, (9, 7), frame_kib=1)
    runner = NetworkRunner(net, params, "golden", envelope=env)
    x_int = params["c1"].quantize_input(x)
    np.testing.assert_array_equal(runner.run_int(x_int), network_forward_int(steps, params, x_int))
    assert runner.stats[0]["passes"] > 1


def test_model_soft_reset_drops_pending_output_and_params():
    net = small_net()
    steps = plan_network(net, (3, 9, 7))
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 7))
    params = random_params(steps, x)
    env = EngineEnvelope.for_network(net, (9, 7))
    program = prepare_program(env, steps, params)
    tr = GoldenTransport(env)
    drv = EngineDriver(tr, env, timeout=0.05)
    x_int = params["c1"].quantize_input(x)
    drv.check_identity()
    drv.write_descriptor(program.descriptors[0], program.shifts[0], 2)
    buf = tr.allocate((program.params[0].size,))
    buf[:] = program.params[0]
    drv.load_params(buf, buf.size)
    assert drv.status()["PARAMS_VALID"] == 1
    drv.soft_reset()
    assert drv.status() == {"BUSY": 0, "DONE": 0, "LOADING": 0, "PARAMS_VALID": 0}
    y, _ = execute(drv, program, x_int)
    np.testing.assert_array_equal(y, network_forward_int(steps, params, x_int))


def test_identity_and_timeouts_are_one_line():
    net = small_net()
    steps = plan_network(net, (3, 9, 7))
    x = np.random.default_rng(4).standard_normal((1, 3, 9, 7))
    params = random_params(steps, x)
    x_int = params["c1"].quantize_input(x)
    with pytest.raises(LiteflyError, match="does not match engine 'small'") as exc:
        NetworkRunner(net, params, "golden", input_size=(9, 7), config_hash=0x1234).run_int(x_int)
    assert "\n" not in str(exc.value)
    with pytest.raises(DMATimeout, match=r"output DMA receive did not complete within .*STATUS=BUSY,PARAMS_VALID CYCLES=") as exc:
        NetworkRunner(net, params, "golden", input_size=(9, 7), fault="short_output", timeout=0.05).run_int(x_int)
    with pytest.raises(ShapeError, match=r"expected \(N, 3, H, W\)"):
        NetworkRunner(net, params, "golden", input_size=(9, 7)).run_int(x_int[:, :2])


def test_butterfly_linear_network_runs_on_the_model():
    chain = [f.as_list() for f in butterfly_chain(16)]
    net = NetworkConfig("bf", (linear("bf", 16, 16, chain),))
    steps = plan_network(net, (16, 1, 1))
    x = np.random.default_rng(5).standard_normal((21, 16, 1, 1))
    params = random_params(steps, x)
    x_int = params["bf"].quantize_input(x.reshape(21, 16))
    got = NetworkRunner(net, params, "golden").run_int(x_int)
    np.testing.assert_array_equal(got, network_forward_int(steps, params, x_int.reshape(21, 16, 1, 1))
                                  .reshape(21, 16))

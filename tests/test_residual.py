"""Residual adds (issue 15): ``{op: add, from: LAYER}`` fused into the layer before it, the skip
tensor streamed after the frame and added in the unloader before ReLU; planning refusals,
the golden network, the runtime's buffers, parameter files, and the RTL through the runtime."""

from __future__ import annotations

import numpy as np
import pytest

from litefly.config import NetworkConfig
from litefly.errors import ConfigError, ShapeError
from litefly.fixed import add_skip, load_quantized, random_float_weights, save_quantized, skip_alignment
from litefly.host.runtime import NetworkRunner, _assign_buffers
from litefly.network import network_forward_int, plan_network, quantize_network
from sim_common import needs_rtl


def conv(name: str, cin: int, cout: int, **fmt) -> dict:
    """A 3x3 padded conv with a two-factor DeBut chain (cin = cout = 8) or a dense one."""
    chain = [[8, 72, 4, 36, 1], [8, 8, 2, 2, 4]] if cin == cout == 8 else [[cout, 9 * cin, cout, 9 * cin, 1]]
    return {"name": name, "kind": "conv2d", "in_channels": cin, "out_channels": cout, "kernel": 3,
            "padding": 1, "chain": chain, "format": fmt}


def resnet_items(blocks: int = 2) -> list[dict]:
    """A stem and ``blocks`` basic blocks with identity shortcuts, global average pool, a classifier."""
    items = [conv("stem", 3, 8, relu=True, bias=True)]
    prev = "stem"
    for b in range(blocks):
        items += [conv(f"b{b}a", 8, 8, relu=True), conv(f"b{b}b", 8, 8, bias=True),
                  {"op": "add", "from": prev}, {"op": "relu"}]
        prev = f"b{b}b"
    items += [{"op": "globalavgpool"}, {"op": "flatten"},
              {"name": "fc", "kind": "linear", "in_features": 8, "out_features": 4, "chain": [[4, 8, 4, 8, 1]]}]
    return items


def tiny_resnet(seed: int = 0, images: int = 3, hw: int = 6):
    net = NetworkConfig.from_dict({"name": "tiny_resnet", "layers": resnet_items()})
    steps = plan_network(net, (3, hw, hw))
    rng = np.random.default_rng(seed)
    weights = {s.name: random_float_weights(s.layer, rng) for s in steps}
    x = rng.standard_normal((images, 3, hw, hw))
    params = quantize_network(steps, weights, x)
    return net, steps, params, params["stem"].quantize_input(x)


def test_plan_fuses_the_add_and_the_relu_after_it():
    _, steps, params, _ = tiny_resnet()
    assert [(s.name, s.skip, s.relu) for s in steps] == [
        ("stem", None, True), ("b0a", None, True), ("b0b", "stem", True), ("b1a", None, True),
        ("b1b", "b0b", True), ("fc", None, False)]
    assert steps[-1].pre == "globalavgpool"
    for name in ("b0b", "b1b"):
        m, k = params[name].skip_align
        assert 0 < m < 1 << 16 and 0 <= k < 32


@pytest.mark.parametrize("items, message", [
    ([conv("a", 3, 8), {"op": "add", "from": "nope"}], r"from='nope' is not a layer before 'a'"),
    ([conv("a", 3, 8), conv("b", 8, 8, relu=True), {"op": "add", "from": "a"}], r"already has a ReLU"),
    ([conv("a", 3, 8), conv("b", 8, 8), {"op": "maxpool2d", "kernel": 2}, {"op": "add", "from": "a"}],
     r"already has a max pooling"),
    ([conv("a", 3, 8), conv("b", 8, 8), {"op": "add", "from": "a"}, {"op": "maxpool2d", "kernel": 2}],
     r"does not pool after an add"),
    ([conv("a", 3, 4), conv("b", 4, 8), {"op": "add", "from": "a"}], r"outputs 4x6x6, layer 'b' 8x6x6"),
    ([conv("a", 3, 8), {"op": "add"}], r"from=None must name an earlier layer"),
])
def test_bad_adds_are_refused_in_one_line(items, message):
    with pytest.raises((ConfigError, ShapeError), match=message) as info:
        plan_network(NetworkConfig.from_dict({"name": "n", "layers": items}), (3, 6, 6))
    assert "\n" not in str(info.value)


def test_skip_alignment_and_the_add():
    for ratio in (1e-4, 0.37, 1.0, 3.5, 900.0):
        m, k = skip_alignment(ratio)
        assert abs(m / 2 ** k - ratio) <= ratio * 2e-4 + 2 ** -k
    y = np.array([100, -100, 5, 0])
    assert add_skip(y, np.array([100, -100, 3, -1]), (1, 1), 8).tolist() == [127, -128, 7, 0]   # 1.5 -> 2, -0.5 -> 0
    assert add_skip(y, np.array([1, 1, 1, 1]), (3, 0), 8).tolist() == [103, -97, 8, 3]


def test_runtime_buffers_keep_the_skip():
    _, steps, _, _ = tiny_resnet()
    bufs = _assign_buffers(steps[:-1])          # the program before the global pool
    assert bufs == (1, 0, 2, 0, 1)              # stem's output (1) survives b0a; b0b's (2) survives b1a
    assert _assign_buffers([s for s in steps[:2]]) == (1, 0)     # plain ping-pong


def test_golden_backend_equals_the_int8_network():
    net, steps, params, x = tiny_resnet(seed=1, images=5)
    want = network_forward_int(steps, params, x)
    runner = NetworkRunner(net, params, backend="golden")
    got = runner.run_int(x)
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)
    # the adds change the result: without them the network computes something else
    plain = [s.__class__(s.layer, s.in_shape, s.relu, s.pool, s.pre, None) for s in steps]
    assert not np.array_equal(network_forward_int(plain, params, x), want)
    res = {s["layer"]: s for s in runner.stats}
    assert res["b0b"]["cycles"] == res["b0b"]["model_cycles"]


def projection_net() -> NetworkConfig:
    """A downsampling block: the projection (1x1, stride 2) reads the block input, then the block's
    first conv reads the block input again (``{op: input}``), and the add takes the projection."""
    def c(name, cin, cout, k, stride, **fmt):
        return {"name": name, "kind": "conv2d", "in_channels": cin, "out_channels": cout, "kernel": k,
                "stride": stride, "padding": k // 2, "chain": [[cout, k * k * cin, cout, k * k * cin, 1]],
                "format": fmt}
    return NetworkConfig.from_dict({"name": "proj", "layers": [
        c("stem", 3, 8, 3, 1, relu=True), c("proj", 8, 16, 1, 2, bias=True), {"op": "input", "from": "stem"},
        c("a", 8, 16, 3, 2, relu=True), c("b", 16, 16, 3, 1, bias=True), {"op": "add", "from": "proj"},
        {"op": "relu"}, c("head", 16, 4, 3, 1)]})


def test_branch_and_projection_shortcut():
    net = projection_net()
    steps = plan_network(net, (3, 8, 8))
    assert [(s.name, s.src, s.skip, s.in_shape) for s in steps] == [
        ("stem", None, None, (3, 8, 8)), ("proj", None, None, (8, 8, 8)), ("a", "stem", None, (8, 8, 8)),
        ("b", None, "proj", (16, 4, 4)), ("head", None, None, (16, 4, 4))]
    assert _assign_buffers(steps) == (1, 0, 2, 1, 0)      # stem's output kept for a, proj's for b
    rng = np.random.default_rng(3)
    w = {s.name: random_float_weights(s.layer, rng) for s in steps}
    xf = rng.standard_normal((4, 3, 8, 8))
    params = quantize_network(steps, w, xf)
    x = params["stem"].quantize_input(xf)
    want = network_forward_int(steps, params, x)
    got = NetworkRunner(net, params, backend="golden").run_int(x)
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)
    with pytest.raises(ConfigError, match="input op .* at the end"):
        plan_network(NetworkConfig.from_dict({"name": "n", "layers": net.to_dict()["layers"][:2] + [
            {"op": "input", "from": "stem"}]}), (3, 8, 8))


def test_parameter_files_keep_the_alignment(tmp_path):
    _, steps, params, _ = tiny_resnet()
    q = params["b0b"]
    save_quantized(q, tmp_path / "b0b.npz")
    assert load_quantized(q.layer, tmp_path / "b0b.npz").skip_align == q.skip_align


@needs_rtl
def test_rtl_runs_a_resnet_through_the_runtime_bit_exact():
    """The Verilated engine, two residual blocks, slow consumer: == the int8 golden network."""
    for net, steps, params, x in (tiny_resnet(seed=2, images=3), _projection_case()):
        want = network_forward_int(steps, params, x)
        sim = NetworkRunner(net, params, backend="sim", stall="slow_sink", seed=4)
        got = sim.run_int(x)
        np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)
        assert all(s["cycles"] > 0 for s in sim.stats)


@needs_rtl
def test_rtl_resnet_with_row_pairs_bit_exact_and_the_cycle_model():
    """Row pairs (the boards' default) with residual adds: every DeBut factor of the blocks pairs,
    the last included, so the skip waits on a second row a cycle later; == the int8 golden network
    and, without stalls, CYCLES == the model on every layer."""
    from litefly.hw.spec import EngineEnvelope
    net, steps, params, x = tiny_resnet(seed=3, images=2)
    env = EngineEnvelope.for_network(net, (6, 6), row_pairs=True)
    assert env.row_pairs and env.residual and env.describe(steps[1]).issue.pair_tail == 1
    want = network_forward_int(steps, params, x)
    sim = NetworkRunner(net, params, backend="sim", envelope=env)
    np.testing.assert_array_equal(np.asarray(sim.run_int(x)).reshape(want.shape), want)
    assert [s["cycles"] for s in sim.stats] == [s["model_cycles"] for s in sim.stats]


def _projection_case():
    net = projection_net()
    steps = plan_network(net, (3, 8, 8))
    rng = np.random.default_rng(5)
    params = quantize_network(steps, {s.name: random_float_weights(s.layer, rng) for s in steps},
                              rng.standard_normal((2, 3, 8, 8)))
    return net, steps, params, params["stem"].quantize_input(rng.standard_normal((2, 3, 8, 8)))

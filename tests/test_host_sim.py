"""The simulated backend: SimTransport mechanics (Icarus + stand-in TB) and, when the engine and
sim runner exist, the real cocotb/Verilator engine against the golden transport."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from litefly.config import LayerConfig
from litefly.fixed import quantize_layer, random_float_weights
from litefly.host.im2col import layer_im2col

HERE = Path(__file__).parent
SMALL = {"name": "hs", "kind": "conv2d", "in_channels": 2, "out_channels": 8, "kernel": 3, "padding": 1,
         "chain": [[8, 18, 4, 9, 1], [8, 8, 2, 2, 4]], "format": {"bias": True},
         "engine": {"multipliers": 8, "stream_bits": 64}}


def small_case(stride=1, seed=0, hw=(6, 5)):
    layer = LayerConfig.from_dict(dict(SMALL, stride=stride))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 2, *hw))
    cols, _ = layer_im2col(layer, x)
    q = quantize_layer(layer, random_float_weights(layer, rng), cols, bias=rng.standard_normal(8) * 0.2)
    return layer, q, x, q.quantize_input(cols)


@pytest.fixture(scope="module")
def icarus_build(tmp_path_factory):
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog not installed")
    from cocotb_tools.runner import get_runner
    d = tmp_path_factory.mktemp("mech")
    (d / "clkonly.v").write_text("module clkonly(input clk); endmodule\n")
    r = get_runner("icarus")
    r.build(sources=[d / "clkonly.v"], hdl_toplevel="clkonly", build_dir=d / "build", timescale=("1ns", "1ps"))
    return r, d


def run_mech(icarus_build, layer, q, cols, fault=None, buffer_bytes=1 << 20):
    r, d = icarus_build
    inp, out = d / f"in_{fault}.npz", d / f"out_{fault}.json"
    arrays = {f"w{i}": w for i, w in enumerate(q.weights)}
    np.savez(inp, shifts=np.asarray(q.shifts), bias=q.bias, cols=cols, **arrays)
    env = {"HOST_MECH": json.dumps({"layer": layer.to_dict(), "inputs": str(inp), "outputs": str(out),
                                    "fault": fault, "buffer_bytes": buffer_bytes}),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    r.test(test_module="host_sim_mech", hdl_toplevel="clkonly", build_dir=d / "build", test_dir=d,
           extra_env=env, timescale=("1ns", "1ps"))
    return json.loads(out.read_text())


def test_sim_transport_mechanics_bit_exact(icarus_build):
    layer, q, _, cols = small_case()
    res = run_mech(icarus_build, layer, q, cols, buffer_bytes=2 * 18 * 8)  # two batches a tile: several tiles
    assert "error" not in res, res
    np.testing.assert_array_equal(np.array(res["y"]), q.forward(cols))
    assert res["tiles"] >= 2


def test_sim_transport_mechanics_timeout(icarus_build):
    layer, q, _, cols = small_case()
    res = run_mech(icarus_build, layer, q, cols, fault="never_start")
    assert res["error"].startswith("DMATimeout: DMA receive did not complete within 0.5 s"), res


def _real_sim_available() -> bool:
    try:
        import litefly.hw.generate  # noqa: F401
        import litefly.sim.runner  # noqa: F401
        import litefly.sim.tb  # noqa: F401
    except ImportError:
        return False
    return True


needs_sim = pytest.mark.skipif(not _real_sim_available(),
                               reason="litefly.hw.generate / litefly.sim.runner / litefly.sim.tb not available yet")


@needs_sim
@pytest.mark.parametrize("stride", [1, 2])
def test_sim_engine_equals_golden_transport(stride):
    from litefly.host.runtime import run_columns
    layer, q, _, cols = small_case(stride)
    y_sim, st = run_columns(layer, q, cols, "sim")
    y_gold, _ = run_columns(layer, q, cols, "golden")
    np.testing.assert_array_equal(y_sim, y_gold)
    np.testing.assert_array_equal(y_sim, q.forward(cols))
    assert st["backend"] == "sim" and st["cycles"] >= st["columns"] // 8 * layer.macs_per_column


@needs_sim
def test_sim_engine_never_started_times_out():
    from litefly.host.runtime import run_columns
    from litefly.host.transport import DMATimeout
    layer, q, _, cols = small_case()
    # the engine holds s_axis_tready low until START, so the send channel is the one that times out
    with pytest.raises(DMATimeout, match=r"^DMA (send|receive) did not complete within"):
        run_columns(layer, q, cols, "sim", skip_start=True)


@needs_sim
def test_sim_network_end_to_end_equals_golden():
    from litefly.config import load_network
    from litefly.host.runtime import NetworkRunner
    from network_params import calibrated_network_params
    net = load_network(HERE.parent / "examples" / "vgg_net.yaml")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 4, 4))
    params, h = calibrated_network_params(net, x, rng)
    runner = NetworkRunner(net, params, backend="sim")
    y = runner.run(x)
    np.testing.assert_array_equal(y, h)
    assert [s["layer"] for s in runner.stats] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    assert all(s["cycles"] > 0 for s in runner.stats)

"""The engine driver and runtime against the engine model (golden transport): identity refusals,
layers that do not fit, tensors of the wrong shape, missing bitstreams, DMA timeouts."""

from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_network
from litefly.errors import ConfigError, LiteflyError, ShapeError
from litefly.host.driver import STAGES, EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import NetworkRunner
from litefly.host.transport import DMATimeout
from litefly.hw.spec import EngineEnvelope

from network_params import calibrated_network_params

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "examples" / "vgg_net.yaml"


@pytest.fixture(scope="module")
def vgg():
    net = load_network(VGG)
    x = np.random.default_rng(9).standard_normal((2, 3, 8, 8))
    params, ref = calibrated_network_params(net, x, np.random.default_rng(10))
    return net, params, x, ref


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_refuses_an_engine_that_is_not_the_networks():
    net = load_network(VGG)
    env = EngineEnvelope.for_network(net, (8, 8))
    with pytest.raises(LiteflyError) as exc:
        EngineDriver(GoldenTransport(env, config_hash=0x1234ABCD), env).check_identity()
    assert one_line(exc) == (f"bitstream engine hash 0x1234abcd does not match engine 'vgg_head' (0x{env.hash32:08x}): "
                             f"load the bitstream built for this network")
    with pytest.raises(LiteflyError, match="has 32 lanes, engine 'vgg_head' expects 64"):
        EngineDriver(GoldenTransport(env, lanes=32), env).check_identity()
    with pytest.raises(LiteflyError, match=r"interface version 9\.0 is not supported"):
        EngineDriver(GoldenTransport(env, version=(9, 0)), env).check_identity()
    ident = EngineDriver(GoldenTransport(env), env).check_identity()
    assert ident["CONFIG_HASH"] == env.hash32 and ident["LANES"] == env.lanes


def test_runner_refuses_a_layer_that_does_not_fit_its_engine(vgg):
    net, params, x, _ = vgg
    small = EngineEnvelope.for_network(load_network(VGG), (8, 8), frame_kib=1)     # 128 beats of frame
    runner = NetworkRunner(net, params, "golden", input_size=(32, 32), envelope=small)
    with pytest.raises(ConfigError) as exc:
        runner.run(np.zeros((1, 3, 32, 32)))
    msg = one_line(exc)
    assert "layer 'vgg_conv1' does not fit engine 'vgg_head'" in msg and "CAP_FRAME_BEATS" in msg and "128" in msg


def test_runner_refuses_tensors_of_the_wrong_shape_dtype_or_range(vgg):
    net, params, x, _ = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    cases = [(lambda: runner.run(np.zeros((1, 4, 8, 8))), r"input has shape \(1, 4, 8, 8\), expected \(N, 3, H, W\)"),
             (lambda: runner.run(np.zeros((3, 8, 8))), r"input has shape \(3, 8, 8\)"),
             (lambda: runner.run_int(np.zeros((1, 3, 8, 8), np.float32)), "dtype float32 is not an integer"),
             (lambda: runner.run_int(np.full((1, 3, 8, 8), 300)), "outside the 8-bit range"),
             (lambda: runner.run(np.zeros((1, 3, 1, 1))), "larger than the 1x1 map")]
    for call, pattern in cases:
        with pytest.raises((ShapeError, ConfigError), match=pattern) as exc:
            call()
        one_line(exc)


def test_runner_refuses_missing_or_foreign_parameters(vgg):
    net, params, _, _ = vgg
    with pytest.raises(LiteflyError, match="no parameters for layer 'vgg_conv2'"):
        NetworkRunner(net, {"vgg_conv1": params["vgg_conv1"]}, backend="golden")
    with pytest.raises(LiteflyError, match="backend 'fpga' is not known"):
        NetworkRunner(net, params, backend="fpga")
    swapped = dict(params, vgg_conv2=params["vgg_conv3"])
    with pytest.raises(LiteflyError) as exc:
        NetworkRunner(net, swapped, "golden", input_size=(8, 8)).run(np.zeros((1, 3, 8, 8)))
    one_line(exc)


def test_a_network_whose_bitstream_is_missing_from_the_registry(tmp_path):
    """The registry is keyed by the network engine's envelope hash (lookup takes the envelope)."""
    from litefly.bitstreams.registry import lookup
    env = EngineEnvelope.for_network(load_network(VGG), (32, 32))
    with pytest.raises(LiteflyError) as exc:
        lookup(env, "pynq-z2", tmp_path)
    msg = one_line(exc)
    assert f"no bitstream for engine 'vgg_head' (0x{env.hash32:08x}) on pynq-z2" in msg and "litefly build" in msg


def test_dma_that_never_completes_times_out_in_one_line(vgg):
    net, params, x, _ = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8), fault="never_start", timeout=0.2)
    with pytest.raises(DMATimeout) as exc:
        runner.run(x)
    assert one_line(exc).startswith("output DMA receive did not complete within 0.20 s")
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8), fault="short_output", timeout=0.2)
    with pytest.raises(DMATimeout, match="output DMA receive"):
        runner.run(x)


def test_every_host_second_of_a_run_is_in_a_stage(vgg):
    net, params, x, ref = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    np.testing.assert_array_equal(runner.run(x), ref)
    np.testing.assert_array_equal(runner.run(x), ref)         # buffers reused; the first run also opens
    stages = runner.total["host_stage[s]"]
    assert set(stages) == set(STAGES)
    assert sum(v for k, v in stages.items() if k != "quantize") == pytest.approx(runner.total["wall_s"], rel=0.05)
    for st in runner.stats:
        assert set(st["timings"]) == set(STAGES) and st["timings"]["wait"] > 0

"""The engine driver on the numpy golden transport: bit-exactness, tiles, refusals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litefly.config import LayerConfig, load_layer, load_network
from litefly.errors import LiteflyError, ShapeError
from litefly.fixed import chain_dense
from litefly.host.accuracy import error_bound
from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.im2col import layer_im2col
from litefly.host.runtime import NetworkRunner, run_columns, run_layer
from litefly.host.transport import DMATimeout

from network_params import calibrated_network_params, random_quantized

CONV = {"name": "c3", "kind": "conv2d", "in_channels": 4, "out_channels": 8, "kernel": 3, "padding": 1,
        "chain": [[16, 36, 4, 9, 1], [8, 16, 2, 4, 4]], "format": {"bias": True},
        "engine": {"multipliers": 16, "stream_bits": 64}}


def conv_layer(stride: int = 1, **fmt) -> LayerConfig:
    d = dict(CONV, stride=stride)
    d["format"] = dict(CONV["format"], **fmt)
    return LayerConfig.from_dict(d)


def quantized(layer, x, seed=0):
    return random_quantized(layer, x, np.random.default_rng(seed))


def driver_for(layer, **kw):
    return EngineDriver(GoldenTransport(layer, **{k: v for k, v in kw.items() if k != "timeout"}), layer,
                        timeout=kw.get("timeout", 2.0))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_bit_exact_and_within_bound(stride, relu):
    layer = conv_layer(stride, relu=relu)
    x = np.random.default_rng(5).standard_normal((2, 4, 9, 7))
    q = quantized(layer, x)
    cols, _ = layer_im2col(layer, x)
    xi = q.quantize_input(cols)
    y, stats = run_columns(layer, q, xi, "golden")
    np.testing.assert_array_equal(y, q.forward(xi))
    assert stats["columns"] == cols.shape[0] and stats["cycles"] > 0
    # float conv2d with the dense reconstruction of the quantised parameters
    yf = run_layer(layer, q, x, "golden")
    dense = chain_dense(layer.chain, q.float_weights())
    wt = torch.from_numpy(dense.reshape(8, 3, 3, 4).transpose(0, 3, 1, 2).copy())
    bias = torch.from_numpy(q.bias * q.weight_scales[-1] * q.act_scales[-2])
    ref = F.conv2d(torch.from_numpy(x), wt, bias, stride=stride, padding=1)
    ref = (F.relu(ref) if relu else ref).numpy()
    err = np.abs(yf - ref).max()
    bound = error_bound(q)
    assert err <= bound * (1 + 1e-9)
    assert err > 0  # quantisation is not free: the comparison is real


def test_many_tiles_double_buffered_and_padding():
    layer = conv_layer()
    x = np.random.default_rng(6).standard_normal((1, 4, 13, 11))
    q = quantized(layer, x)
    cols, _ = layer_im2col(layer, x)
    xi = q.quantize_input(cols)
    d = driver_for(layer)
    d.buffer_bytes = 2 * d.plan(1).in_bytes_per_batch    # two batches per tile
    d.check_identity()
    d.load_params(q)
    y = d.run_columns(xi)
    np.testing.assert_array_equal(y, q.forward(xi))
    assert d.tiles_run == len(d.plan(xi.shape[0]).tiles) >= 4
    assert xi.shape[0] % d.spec.lanes != 0                # the last batch was padded
    assert d.counters()["COLUMNS_DONE"] == d.plan(xi.shape[0]).padded_columns
    assert set(d.timings) == {"pack", "copy_in", "execute", "copy_out", "unpack"}


def test_refuses_mismatched_bitstream():
    layer = load_layer("examples/layers/vgg_conv2.yaml")
    d = driver_for(layer, config_hash=0x1234ABCD)
    with pytest.raises(LiteflyError) as exc:
        d.check_identity()
    msg = str(exc.value)
    assert msg == (f"bitstream config hash 0x1234abcd does not match layer 'vgg_conv2' (0x{layer.hash32:08x}): "
                   f"load the bitstream built for this config")
    with pytest.raises(LiteflyError, match="lanes"):
        driver_for(layer, lanes=32).check_identity()
    with pytest.raises(LiteflyError, match="interface version 2.0"):
        driver_for(layer, version=(2, 0)).check_identity()


def test_refuses_bad_inputs():
    layer = conv_layer()
    x = np.random.default_rng(7).standard_normal((1, 4, 5, 5))
    q = quantized(layer, x)
    d = driver_for(layer)
    d.load_params(q)
    cases = [(np.zeros((10, 35), np.int64), r"shape \(10, 35\), expected \(n, 36\)"),
             (np.zeros((10, 36), np.float32), "dtype float32 is not an integer"),
             (np.full((10, 36), 300), "outside the 8-bit range"),
             ([[0] * 36], "is a list")]
    for bad, pattern in cases:
        with pytest.raises(ShapeError, match=pattern) as exc:
            d.run_columns(bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(ShapeError, match="expected"):
        run_layer(layer, q, np.zeros((1, 3, 5, 5)), "golden")


def test_dma_that_never_completes_times_out():
    layer = conv_layer()
    x = np.random.default_rng(8).standard_normal((1, 4, 5, 5))
    q = quantized(layer, x)
    cols, _ = layer_im2col(layer, x)
    d = driver_for(layer, fault="never_start", timeout=0.2)
    d.load_params(q)
    with pytest.raises(DMATimeout, match=r"^DMA receive did not complete within 0\.2 s"):
        d.run_columns(q.quantize_input(cols))


def test_network_runner_golden_matches_layerwise_golden():
    net = load_network("examples/vgg_net.yaml")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 3, 8, 8))
    # calibrate each layer on the activations reaching it (as a user would)
    params, h = calibrated_network_params(net, x, rng)
    runner = NetworkRunner(net, params, backend="golden")
    y = runner.run(x)
    np.testing.assert_array_equal(y, h)
    assert y.shape == (1, 128, 4, 4) and len(runner.stats) == 3
    yi = runner.run_int(params["vgg_conv1"].quantize_input(x))
    np.testing.assert_array_equal(yi * params["vgg_conv3"].out_scale, y)
    with pytest.raises(LiteflyError, match="no parameters for layer 'vgg_conv2'"):
        NetworkRunner(net, {"vgg_conv1": params["vgg_conv1"]}, backend="golden")
    with pytest.raises(LiteflyError, match="backend 'fpga' is not known"):
        NetworkRunner(net, params, backend="fpga")

"""The core network maths (litefly.network): im2col/col2im in the reference ordering against torch,
with non-square kernel, stride, padding and dilation; max pooling; one engine step against torch
F.conv2d in float64; and the channels-last flatten the engine uses."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litefly.config import LayerConfig, NetworkConfig, HostOp, load_layer
from litefly.errors import ShapeError
from litefly.export import FlattenHWC
from litefly.fixed import chain_dense, random_float_weights
from litefly.hw.wireformat import pack_tensor
from litefly.network import (EngineStep, RowFold, col2im, fold_rows, im2col, maxpool_int, network_forward_int,
                             output_size, plan_network, quantize_network, step_forward_int)
from litefly.nn import DeButConv2d


@pytest.mark.parametrize("k,stride,pad,dil,hw", [(3, 1, 1, 1, (7, 9)), (3, 2, 1, 1, (8, 8)), (1, 1, 0, 1, (5, 4)),
                                                  (3, 1, 0, 2, (9, 7)), (2, 2, 0, 1, (6, 5))])
def test_im2col_matches_torch(k, stride, pad, dil, hw):
    c = 3
    conv = DeButConv2d(c, 4, k, [[4, k * k * c, 4, k * k * c, 1]], stride=stride, padding=pad, dilation=dil)
    x = np.random.default_rng(1).integers(-100, 100, (2, c, *hw))
    ref = conv.im2col(torch.from_numpy(x).double()).numpy()
    got = im2col(x, (k, k), (stride, stride), (pad, pad), (dil, dil))
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, ref)
    assert (got.shape[0] // 2) == np.prod(output_size(*hw, (k, k), (stride,) * 2, (pad,) * 2, (dil,) * 2))


@pytest.mark.parametrize("kernel,stride,pad,dil,hw", [((3, 2), (2, 1), (1, 0), (1, 2), (9, 8)),
                                                      ((1, 3), (1, 3), (0, 2), (1, 1), (5, 11)),
                                                      ((2, 3), (3, 2), (2, 1), (2, 1), (10, 7))])
def test_im2col_non_square_geometry_matches_unfold(kernel, stride, pad, dil, hw):
    """Each of height and width has its own kernel, stride, padding and dilation (a width divided
    by the vertical stride, or any such swap, shows here)."""
    c = 3
    x = np.random.default_rng(4).integers(-128, 128, (2, c, *hw))
    cols = im2col(x, kernel, stride, pad, dil)
    ho, wo = output_size(*hw, kernel, stride, pad, dil)
    assert (ho, wo) == tuple(F.conv2d(torch.zeros(1, c, *hw), torch.zeros(1, c, *kernel), stride=stride,
                                      padding=pad, dilation=dil).shape[2:])
    unf = F.unfold(torch.from_numpy(x).double(), kernel, dilation=dil, padding=pad, stride=stride)
    # unfold: (n, c*kh*kw, L) channel outer -> reference order kernel position outer, channel inner
    ref = unf.reshape(2, c, kernel[0] * kernel[1], -1).permute(0, 3, 2, 1).reshape(-1, kernel[0] * kernel[1] * c)
    np.testing.assert_array_equal(cols, ref.numpy())


FOLDS = [((3, 3), (1, 1), (1, 1), (1, 1), (5, 7), 3), ((3, 3), (2, 2), (1, 1), (1, 1), (6, 9), 3),
         ((3, 3), (1, 1), (2, 2), (2, 2), (5, 11), 1), ((2, 2), (2, 2), (0, 0), (1, 1), (4, 6), 20),
         ((3, 5), (1, 3), (0, 2), (1, 1), (5, 8), 2), ((3, 3), (1, 1), (0, 3), (1, 1), (4, 5), 17),
         ((2, 3), (3, 2), (2, 1), (2, 1), (10, 7), 5)]


@pytest.mark.parametrize("kernel,stride,pad,dil,hw,c", FOLDS)
def test_folded_kernel_rows_give_the_same_columns(kernel, stride, pad, dil, hw, c):
    """A step with its kernel rows folded into the channels (the host's RowFold) walks a KH x 1
    kernel over (KW*C, H, Wo) and gathers the same columns in the same order, padding included;
    the packer writes the folded map (NHWC-E or packed) without making it first."""
    lay = LayerConfig.from_dict({"name": "f", "kind": "conv2d", "in_channels": c, "out_channels": 4,
                                 "kernel": list(kernel), "stride": list(stride), "padding": list(pad),
                                 "dilation": list(dil), "chain": [[4, kernel[0] * kernel[1] * c, 4, kernel[0] * kernel[1] * c, 1]]})
    step = EngineStep(lay, (c,) + hw, relu=False)
    folded = step.row_folded()
    assert folded.fold == RowFold(kernel[1], stride[1], pad[1], dil[1], hw[1]) and folded.row_folded() is None
    assert folded.source_shape == step.in_shape and folded.conv_shape == step.conv_shape
    assert folded.kernel == (kernel[0], 1) and folded.in_shape == (kernel[1] * c, hw[0], step.conv_shape[2])
    x = np.random.default_rng(5).integers(-128, 128, (2, c) + hw).astype(np.int8)
    xf = fold_rows(x, folded.fold)
    assert xf.shape[1:] == folded.in_shape
    np.testing.assert_array_equal(im2col(xf, folded.kernel, folded.stride, folded.padding, folded.dilation),
                                  im2col(x, step.kernel, step.stride, step.padding, step.dilation))
    for e, packed in ((8, False), (8, True), (16, False)):
        np.testing.assert_array_equal(pack_tensor(x, e, packed=packed, fold=folded.fold),
                                      pack_tensor(xf, e, packed=packed))


def test_nothing_to_fold_and_a_wrong_width_is_one_line():
    lay = LayerConfig.from_dict({"name": "p", "kind": "conv2d", "in_channels": 8, "out_channels": 4, "kernel": [3, 1],
                                 "chain": [[4, 24, 4, 24, 1]]})
    assert EngineStep(lay, (8, 5, 5), relu=False).row_folded() is None
    fold = RowFold(3, 1, 1, 1, 6)
    with pytest.raises(ShapeError, match=r"^fold_rows: input has shape \(1, 2, 4, 5\), expected \(N, C, H, 6\)$"):
        fold_rows(np.zeros((1, 2, 4, 5), np.int8), fold)
    with pytest.raises(ShapeError, match=r"expected \(N, C, H, 6\) to fold its kernel rows$"):
        pack_tensor(np.zeros((1, 2, 4, 5), np.int8), 8, fold=fold)


def test_col2im_roundtrip_with_conv():
    lay = load_layer("examples/layers/vgg_conv1.yaml")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((lay.out_channels, lay.chain_in))
    y = col2im(im2col(x, lay.kernel, lay.stride, lay.padding, lay.dilation) @ w.T, 2, 6, 5)
    wt = torch.from_numpy(w.reshape(lay.out_channels, 3, 3, 3).transpose(0, 3, 1, 2).copy())
    ref = F.conv2d(torch.from_numpy(x), wt, padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_im2col_refuses_bad_shapes():
    with pytest.raises(ShapeError, match="expected \\(N, C, H, W\\)"):
        im2col(np.zeros((4, 8, 8)), (3, 3))
    with pytest.raises(ShapeError, match="smaller than"):
        im2col(np.zeros((1, 1, 2, 2)), (3, 3))
    with pytest.raises(ShapeError):
        col2im(np.zeros((5, 2)), 1, 2, 2)


def test_maxpool_matches_torch():
    x = np.random.default_rng(3).integers(-128, 128, (2, 3, 7, 6))
    for k, s in ((2, 2), (3, 2), (2, 1)):
        np.testing.assert_array_equal(maxpool_int(x, k, s), F.max_pool2d(torch.from_numpy(x).double(), k, s).numpy())


def test_step_forward_int_equals_torch_conv2d_in_float64_with_requantisation():
    """One fused step (1-factor chain: one requantisation) against torch on the same integers."""
    lay = LayerConfig.from_dict({"name": "c", "kind": "conv2d", "in_channels": 4, "out_channels": 8,
                                 "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 2],
                                 "chain": [[8, 24, 8, 24, 1]], "format": {"bias": True}})
    net = NetworkConfig("n", (lay, HostOp("relu"), HostOp("maxpool2d", 2)))
    x = np.random.default_rng(5).standard_normal((2, 4, 9, 10))
    steps = plan_network(net, (4, 9, 10))
    rng = np.random.default_rng(6)
    params = quantize_network(steps, {"c": random_float_weights(lay, rng)}, x, {"c": rng.standard_normal(8)})
    q = params["c"]
    xi = q.quantize_input(x)
    got = step_forward_int(steps[0], q, xi)
    w = chain_dense(lay.chain, q.weights).reshape(8, 3, 2, 4).transpose(0, 3, 1, 2)
    acc = F.conv2d(torch.from_numpy(xi).double(), torch.from_numpy(w.astype(np.float64)),
                   torch.from_numpy(q.bias.astype(np.float64)), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    ref = torch.clamp(torch.floor(acc / 2 ** q.shifts[0] + 0.5), -128, 127)
    ref = F.max_pool2d(F.relu(ref), 2).numpy()
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(network_forward_int(steps, params, xi), ref)


def test_channels_last_flatten_is_the_engines():
    x = torch.randn(2, 5, 3, 4)
    np.testing.assert_array_equal(FlattenHWC()(x).numpy(), x.permute(0, 2, 3, 1).reshape(2, -1).numpy())
    assert FlattenHWC()(torch.randn(2, 7)).shape == (2, 7)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_engine_step_is_within_the_accuracy_bound_of_the_float_layer(stride, relu):
    """The dequantised int8 step against F.conv2d with the quantised parameters in float
    (host/accuracy.py: error_bound); the comparison is real (the error is not zero)."""
    from litefly.host.accuracy import error_bound
    lay = LayerConfig.from_dict({"name": "c3", "kind": "conv2d", "in_channels": 4, "out_channels": 8, "kernel": 3,
                                 "padding": 1, "stride": stride, "chain": [[16, 36, 4, 9, 1], [8, 16, 2, 4, 4]],
                                 "format": {"bias": True}})
    net = NetworkConfig("n", (lay,) + ((HostOp("relu"),) if relu else ()))
    x = np.random.default_rng(5).standard_normal((2, 4, 9, 7))
    steps = plan_network(net, (4, 9, 7))
    rng = np.random.default_rng(0)
    q = quantize_network(steps, {"c3": random_float_weights(lay, rng)}, x, {"c3": rng.standard_normal(8) * 0.3})["c3"]
    y = step_forward_int(steps[0], q, q.quantize_input(x)) * q.out_scale
    dense = chain_dense(lay.chain, q.float_weights())
    wt = torch.from_numpy(dense.reshape(8, 3, 3, 4).transpose(0, 3, 1, 2).copy())
    bias = torch.from_numpy(q.bias * q.weight_scales[-1] * q.act_scales[-2])
    ref = F.conv2d(torch.from_numpy(x), wt, bias, stride=stride, padding=1)
    ref = (F.relu(ref) if relu else ref).numpy()
    err = np.abs(y - ref).max()
    assert 0 < err <= error_bound(q) * (1 + 1e-9)

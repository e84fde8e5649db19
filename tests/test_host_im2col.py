"""numpy im2col/col2im against the torch golden model's ordering; tile plans; host ops."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litefly.config import HostOp, LayerConfig, load_layer
from litefly.errors import ShapeError
from litefly.host.hostops import apply_host_op
from litefly.host.im2col import col2im, im2col, layer_col2im, layer_im2col, output_size
from litefly.host.tiling import DMA_MAX_BYTES, plan_tiles
from litefly.hw.spec import EngineSpec
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


def test_col2im_roundtrip_with_conv():
    lay = load_layer("examples/layers/vgg_conv1.yaml")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((lay.out_channels, lay.chain_in))
    cols, geom = layer_im2col(lay, x)
    y = layer_col2im(lay, cols @ w.T, geom)
    wt = torch.from_numpy(w.reshape(lay.out_channels, 3, 3, 3).transpose(0, 3, 1, 2).copy())
    ref = F.conv2d(torch.from_numpy(x), wt, padding=1).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_im2col_refuses_bad_shapes():
    lay = load_layer("examples/layers/vgg_conv1.yaml")
    with pytest.raises(ShapeError, match=r"expected \(N, 3, H, W\)"):
        layer_im2col(lay, np.zeros((1, 4, 8, 8)))
    with pytest.raises(ShapeError, match="smaller than"):
        im2col(np.zeros((1, 1, 2, 2)), (3, 3))
    with pytest.raises(ShapeError):
        col2im(np.zeros((5, 2)), 1, 2, 2)


def test_tile_plan_rules():
    spec = EngineSpec(load_layer("examples/layers/vgg_conv2.yaml"))
    plan = plan_tiles(spec, 1000, buffer_bytes=100_000)
    assert sum(t.columns for t in plan.tiles) == 1000
    assert all(t.batches * spec.lanes >= t.columns for t in plan.tiles)
    assert plan.padded_columns == -(-1000 // spec.lanes) * spec.lanes
    assert all(t.in_bytes <= 100_000 and t.out_bytes <= 100_000 for t in plan.tiles)
    assert plan.in_buffer_bytes % 64 == 0 and plan.out_buffer_bytes % 64 == 0
    big = plan_tiles(spec, 10_000_000, buffer_bytes=1 << 30)
    assert all(t.in_bytes <= DMA_MAX_BYTES for t in big.tiles)
    with pytest.raises(Exception, match="below one batch"):
        plan_tiles(spec, 10, buffer_bytes=100)


def test_host_ops_match_torch():
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    xt = torch.from_numpy(x)
    np.testing.assert_allclose(apply_host_op(HostOp("maxpool2d", 2), x), F.max_pool2d(xt, 2).numpy())
    np.testing.assert_allclose(apply_host_op(HostOp("avgpool2d", 3, 2), x), F.avg_pool2d(xt, 3, 2).numpy())
    np.testing.assert_allclose(apply_host_op(HostOp("relu"), x), F.relu(xt).numpy())
    assert apply_host_op(HostOp("flatten"), x).shape == (2, 126)


def test_linear_layer_geometry():
    lay = LayerConfig.from_dict({"name": "fc", "kind": "linear", "in_features": 16, "out_features": 16,
                                 "chain": [[16, 16, 4, 4, 1], [16, 16, 4, 4, 4]]})
    cols, geom = layer_im2col(lay, np.ones((3, 16)))
    assert cols.shape == (3, 16)
    assert layer_col2im(lay, cols, geom).shape == (3, 16)

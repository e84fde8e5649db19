"""Batch-norm folding: the folded DeBut layer equals layer -> BN in eval mode, and export folds
a BN that follows a DeBut layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from litefly.errors import ConfigError
from litefly.export import export_int8, int8_forward, trace_steps

try:                                   # the engine's channels-last flatten (the export in progress)
    from litefly.export import FlattenHWC as _Flatten
except ImportError:                    # pragma: no cover - the export before it
    _Flatten = nn.Flatten
from litefly.fold import fold_batchnorm
from litefly.nn import DeButConv2d, DeButLinear

CONV_CHAIN = [[36, 27, 4, 3, 1], [72, 36, 2, 1, 4], [64, 72, 8, 9, 8]]      # 27 -> 64, last factor t = 8
LIN_CHAIN = [[32, 64, 1, 2, 1], [32, 32, 2, 2, 1], [16, 32, 1, 2, 2]]        # 64 -> 16, last factor t = 2


def _random_bn(bn, seed):
    g = torch.Generator().manual_seed(seed)
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(n, generator=g))
        bn.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
        if bn.affine:
            bn.weight.copy_(torch.randn(n, generator=g))
            bn.bias.copy_(torch.randn(n, generator=g))
    return bn.eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_conv_bn(bias, affine):
    torch.manual_seed(0)
    conv = DeButConv2d(3, 64, 3, CONV_CHAIN, padding=1, bias=bias).eval()
    bn = _random_bn(nn.BatchNorm2d(64, affine=affine), 1)
    x = torch.randn(4, 3, 8, 8)
    folded = fold_batchnorm(conv, bn)
    assert folded.bias is not None and folded.chain == conv.chain
    with torch.no_grad():
        want = bn(conv(x))
        got = folded(x)
    assert (got - want).abs().max() < 1e-5 * max(1.0, want.abs().max())
    assert (conv.bias is None) == (not bias)           # the original is not modified


@pytest.mark.parametrize("bias", [True, False])
def test_fold_linear_bn(bias):
    torch.manual_seed(2)
    lin = DeButLinear(64, 16, LIN_CHAIN, bias=bias).eval()
    bn = _random_bn(nn.BatchNorm1d(16), 3)
    x = torch.randn(10, 64)
    with torch.no_grad():
        err = (fold_batchnorm(lin, bn)(x) - bn(lin(x))).abs().max()
    assert err < 1e-5


def test_fold_float64_is_exact():
    torch.manual_seed(4)
    conv = DeButConv2d(3, 64, 3, CONV_CHAIN, stride=2).double().eval()
    bn = _random_bn(nn.BatchNorm2d(64), 5).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-12, atol=1e-12)


def test_fold_refusals():
    conv = DeButConv2d(3, 64, 3, CONV_CHAIN)
    with pytest.raises(ConfigError, match="BatchNorm2d"):
        fold_batchnorm(conv, nn.BatchNorm1d(64))
    with pytest.raises(ConfigError, match="channels"):
        fold_batchnorm(conv, nn.BatchNorm2d(32))
    with pytest.raises(ConfigError, match="running statistics"):
        fold_batchnorm(conv, nn.BatchNorm2d(64, track_running_stats=False))
    with pytest.raises(ConfigError, match="BatchNorm1d"):
        fold_batchnorm(DeButLinear(64, 16, LIN_CHAIN), nn.BatchNorm2d(16))


class ConvBnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = DeButConv2d(3, 64, 3, CONV_CHAIN, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flat = _Flatten()
        self.fc = DeButLinear(64 * 16, 16, [[128, 1024, 1, 8, 1], [16, 128, 2, 16, 8]])
        self.bn1 = nn.BatchNorm1d(16)

    def forward(self, x):
        return self.bn1(self.fc(self.flat(self.pool(self.relu(self.bn(self.conv(x)))))))


def test_export_folds_conv_bn_relu():
    torch.manual_seed(6)
    model = ConvBnNet()
    _random_bn(model.bn, 7)
    _random_bn(model.bn1, 8)
    model.eval()
    steps = trace_steps(model)
    kinds = [type(s).__name__ if not hasattr(s, "op") else s.op for _, s in steps]
    assert kinds == ["DeButConv2d", "relu", "maxpool2d", "flatten", "DeButLinear"]
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        y = steps[0][1](x).relu()
        y = steps[-1][1](model.flat(torch.nn.functional.max_pool2d(y, 2)))
        assert (y - model(x)).abs().max() < 1e-4
    assert model.conv.bias is None                        # tracing does not modify the model
    network, params = export_int8(model, torch.randn(32, 3, 8, 8))
    ops = [getattr(s, "op", None) or ("relu-fused" if s.format.relu else s.kind) for s in network.steps]
    assert ops[:2] in (["relu-fused", "maxpool2d"], ["conv2d", "relu"])   # fused at export, or kept for the planner
    assert all(l.format.bias for l in network.layers)     # the folded BN made a bias
    xs = torch.randn(8, 3, 8, 8)
    got = int8_forward(network, params, xs.double().numpy())
    want = model(xs).detach().double().numpy()
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def test_export_refuses_bn_not_after_debut():
    model = nn.Sequential(DeButConv2d(3, 64, 3, CONV_CHAIN), nn.ReLU(), nn.BatchNorm2d(64)).eval()
    with pytest.raises(ConfigError, match="BatchNorm2d '2' does not follow a DeBut layer"):
        trace_steps(model)

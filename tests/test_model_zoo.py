"""Model zoo: output shapes, parameter counts (independent formulas), conversion to all-DeBut
with litefly.convert (small ALS settings), and export tracing of the straight-chain models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from litefly.convert import ConvertConfig, convert_model, convertible_layers
from litefly.export import trace_steps
from litefly.nn import DeButConv2d, DeButLinear
from litefly.zoo import (VGG16_CFG, count_weights, pointnet_cls, resnet20, resnet56, resnet_cifar, resnet_digits,
                         vgg16_bn, vgg16_published_chains)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch and BLAS thread: these tests are small, and a shared 2-core machine runs several
    test processes at once (oversubscribed threads made them 3-5x slower)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:          # pragma: no cover - scikit-learn brings it
        yield
    else:
        with threadpool_limits(1):
            yield
    torch.set_num_threads(prev)


def _conv_bn(c_in, c_out, k):
    return c_in * c_out * k * k + 2 * c_out


def resnet_count(n, classes, widths=(16, 32, 64), c_in=3):
    total = _conv_bn(c_in, widths[0], 3)
    c = widths[0]
    for i, w in enumerate(widths):
        for j in range(n):
            total += _conv_bn(c, w, 3) + _conv_bn(w, w, 3)
            if c != w:
                total += _conv_bn(c, w, 1)          # option B projection
            c = w
    return total + c * classes + classes


def test_resnet_shapes_and_counts():
    torch.manual_seed(0)
    for depth, model in ((20, resnet20()), (56, resnet56(100))):
        n = (depth - 2) // 6
        classes = 10 if depth == 20 else 100
        assert count_weights(model) == resnet_count(n, classes)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == depth - 1 + 2           # depth - 1 convs + 2 projection shortcuts
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, classes)
    assert count_weights(resnet20()) == 272_474       # option A (no projection weights) has 269,722
    assert count_weights(resnet56()) == 855_770
    with pytest.raises(ValueError):
        resnet_cifar(21)


def test_resnet_block_structure():
    model = resnet20()
    first, down = model.layer1[0], model.layer2[0]
    assert isinstance(first.shortcut, nn.Identity)
    proj = down.shortcut[0]
    assert proj.kernel_size == (1, 1) and proj.stride == (2, 2) and proj.bias is None
    assert isinstance(down.shortcut[1], nn.BatchNorm2d)


def test_vgg16_bn_shapes_and_counts():
    model = vgg16_bn(100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 13 and len(bns) == 13
    widths = [v for v in VGG16_CFG if v != "M"]
    want, c = 0, 3
    for w in widths:
        want += _conv_bn(c, w, 3)
        c = w
    assert count_weights(model) == want + 512 * 100 + 100 == 14_770_212
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_vgg16_published_chains_cover_every_layer_at_cifar100():
    model = vgg16_bn(100)
    chains = vgg16_published_chains(model)
    names = [n for n, _ in convertible_layers(model)]
    assert sorted(chains) == sorted(names)
    # converting with the published chains keeps them (two layers: the first conv and the classifier)
    cfg = ConvertConfig(layers=["features.0", "classifier"], sweeps=1,
                        overrides={k: {"chain": chains[k]} for k in ("features.0", "classifier")})
    debut, reports = convert_model(model, cfg)
    assert [f.as_list() for f in debut.features[0].chain] == chains["features.0"]
    assert reports[1].params == 512 * 2 + 256 * 2 + 256 * 2 + 128 * 2 + 100 * 32     # 5,504 (the last line)


def test_pointnet_shapes_and_counts():
    model = pointnet_cls(40, num_points=128).eval()
    mlp = [(3, 64), (64, 64), (64, 64), (64, 128), (128, 1024)]
    want = sum(a * b + 2 * b for a, b in mlp) + 1024 * 512 + 2 * 512 + 512 * 256 + 2 * 256 + 256 * 40 + 40
    assert count_weights(model) == want == 817_512
    assert all(m.kernel_size == (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model(torch.randn(3, 3, 128, 1)).shape == (3, 40)
    assert model.features(torch.randn(2, 3, 128, 1)).shape == (2, 1024, 128, 1)


def test_resnet_digits_shapes():
    model = resnet_digits().eval()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert count_weights(model) == resnet_count(1, 10, (16, 32), 1) == 19_706


def _check_converted(model, x, cfg):
    torch.manual_seed(0)
    model.eval()
    dense_out = model(x)
    debut, reports = convert_model(model, cfg, example_input=x)
    assert not convertible_layers(debut)                       # every Conv2d/Linear replaced
    assert len(reports) == len(convertible_layers(model))
    assert sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in debut.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in model.modules())   # batch norms survive
    out = debut.eval()(x)
    assert out.shape == dense_out.shape and torch.isfinite(out).all()
    return debut, reports


@pytest.mark.parametrize("factory,sweeps", [(resnet20, 1), (resnet56, 0)])
def test_convert_resnets(factory, sweeps):
    debut, reports = _check_converted(factory(), torch.randn(2, 3, 32, 32),
                                      ConvertConfig(compression=0.9, sweeps=sweeps))
    params = sum(r.params for r in reports)
    dense = sum(r.dense_params for r in reports)
    assert 1 - params / dense > 0.85
    assert isinstance(debut.layer2[0].shortcut[0], DeButConv2d)       # the projection converts too


def test_convert_vgg16_bn_quarter_width():
    _check_converted(vgg16_bn(100, width=0.25), torch.randn(2, 3, 32, 32), ConvertConfig(compression=0.9, sweeps=0))


def test_convert_pointnet():
    _check_converted(pointnet_cls(40, num_points=64), torch.randn(2, 3, 64, 1),
                     ConvertConfig(compression=0.9, sweeps=0))
    _check_converted(pointnet_cls(8, num_points=32, mlp=(64, 64, 128), head=(64,)), torch.randn(2, 3, 32, 1),
                     ConvertConfig(compression=0.9, sweeps=2))


def test_convert_resnet_digits():
    _check_converted(resnet_digits(), torch.randn(3, 1, 8, 8), ConvertConfig(compression=0.9, sweeps=3))


def test_converted_vgg_traces_with_batchnorm_folded():
    model = vgg16_bn(10, width=0.125).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    debut, _ = convert_model(model, ConvertConfig(compression=0.8, sweeps=0))
    debut.eval()
    steps = trace_steps(debut)
    layers = [m for _, m in steps if isinstance(m, (DeButConv2d, DeButLinear))]
    assert len(layers) == 14 and all(m.bias is not None for m in layers)
    x = torch.randn(2, 3, 32, 32)
    y = x
    with torch.no_grad():
        for _, step in steps:
            op = getattr(step, "op", "flatten")      # a flatten may be a HostOp or a channel-major marker
            if isinstance(step, nn.Module):
                y = step(y)
            elif op == "relu":
                y = y.relu()
            elif op == "maxpool2d":
                y = torch.nn.functional.max_pool2d(y, step.kernel, step.stride)
            elif op == "flatten":
                y = y.flatten(1)                      # a 512 x 1 x 1 map: both flatten orders agree
            else:
                raise AssertionError(f"unexpected step {step}")
        want = debut(x)
    assert (y - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())


# -- synthetic point clouds and the determinism helper ------------------------------------------
def test_pointclouds_deterministic_and_documented_sizes():
    import numpy as np

    from litefly.datasets import SHAPE_CLASSES, make_pointclouds, pointcloud_splits

    assert len(SHAPE_CLASSES) >= 8
    a, ya = make_pointclouds(3, 256, seed=5)
    b, yb = make_pointclouds(3, 256, seed=5)
    assert a.shape == (3 * len(SHAPE_CLASSES), 256, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, make_pointclouds(3, 256, seed=6)[0])
    # a cloud does not depend on how many clouds are generated
    c, _ = make_pointclouds(1, 256, seed=5)
    assert np.array_equal(c, a[:len(SHAPE_CLASSES)])
    # every class's cloud is augmented (rotation, scale, noise) but stays near the unit ball
    radius = np.linalg.norm(a, axis=2).max(axis=1)
    assert (radius < 1.6).all() and (radius > 0.3).all()
    xtr, ytr, xte, yte = pointcloud_splits(n_train=2, n_test=1, num_points=64, seed=0)
    assert xtr.shape == (2 * len(SHAPE_CLASSES), 3, 64, 1) and xte.shape == (len(SHAPE_CLASSES), 3, 64, 1)
    assert np.bincount(ytr).tolist() == [2] * len(SHAPE_CLASSES)
    assert not any(np.array_equal(xte[i], xtr[j]) for i in range(len(xte)) for j in range(len(xtr)))


def test_pointnet_learns_synthetic_shapes_quickly():
    """A small PointNet separates the ten classes well above chance (10%) after a few epochs."""
    from litefly.datasets import pointcloud_splits
    from litefly.utils import seed_everything
    from litefly.zoo import pointnet_cls

    prev_threads = torch.get_num_threads()
    try:
        gen = seed_everything(0, threads=1)
        xtr, ytr, xte, yte = pointcloud_splits(n_train=24, n_test=10, num_points=128, seed=0)
        xtr, ytr, xte, yte = map(torch.as_tensor, (xtr, ytr, xte, yte))
        model = pointnet_cls(10, 128, mlp=(32, 64, 128), head=(64,), dropout=0.0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(12):
            model.train()
            perm = torch.randperm(len(xtr), generator=gen)
            for i in range(0, len(xtr), 32):
                idx = perm[i:i + 32]
                loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        acc = (model.eval()(xte).argmax(1) == yte).float().mean().item()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(prev_threads)
    assert acc > 0.3


def test_seed_everything_reproduces():
    import numpy as np

    from litefly.utils import seed_everything

    prev_threads = torch.get_num_threads()
    try:
        runs = []
        for _ in range(2):
            gen = seed_everything(3, threads=1)
            assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
            runs.append((torch.randn(4), np.random.rand(3), torch.randperm(10, generator=gen)))
        for a, b in zip(*runs):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(prev_threads)

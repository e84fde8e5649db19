"""Model conversion (ALS fit, replacement, report, KD) and the int8 export on small models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from litefly.chain import validate_chain
from litefly.config import HostOp
from litefly.convert import (ConvertConfig, convert_model, count_params, distill, fit_factors, load_convert_config,
                             model_macs)
from litefly.errors import ConfigError, LiteflyError, ShapeError
from litefly.export import export_int8, int8_forward, load_int8, save_int8, trace_steps
from litefly.fixed import chain_dense
from litefly.nn import DeButConv2d, DeButLinear

torch.set_num_threads(1)


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 24), nn.ReLU(), nn.Linear(24, 10)).eval()


class Nested(nn.Module):
    """Layers held as attributes and inside a sub-module, forward with functional ops."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16 * 4 * 4, 12)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(torch.flatten(self.body(x), 1))


def test_als_recovers_a_matrix_that_is_a_chain():
    chain = validate_chain([[16, 16, 4, 4, 1], [16, 16, 4, 4, 4]])            # Monarch 16
    rng = np.random.default_rng(3)
    true = [rng.standard_normal(f.compact_shape) for f in chain]
    W = chain_dense(chain, true)
    ws, err = fit_factors(chain, W, sweeps=30)
    assert err < 1e-6
    assert np.allclose(chain_dense(chain, ws), W, atol=1e-6)


def test_als_conjugate_gradient_path_recovers_a_wide_chain():
    """Factors with more than 400 nonzeros are solved by conjugate gradients on the blocked normal equations."""
    chain = validate_chain([[64, 64, 8, 8, 1], [64, 64, 8, 8, 8]])            # Monarch 64: 512 nonzeros each
    rng = np.random.default_rng(4)
    W = chain_dense(chain, [rng.standard_normal(f.compact_shape) for f in chain])
    ws, err = fit_factors(chain, W, sweeps=40, tol=0.0)
    assert err < 1e-4
    assert np.linalg.norm(chain_dense(chain, ws) - W) / np.linalg.norm(W) == pytest.approx(err, rel=1e-6)


def test_fit_reports_the_true_relative_error():
    chain = validate_chain([[12, 24, 2, 4, 1], [12, 12, 3, 3, 2], [12, 12, 2, 2, 6]])
    W = np.random.default_rng(0).standard_normal((12, 24))
    ws, err = fit_factors(chain, W, sweeps=5)
    assert err == pytest.approx(np.linalg.norm(W - chain_dense(chain, ws)) / np.linalg.norm(W), rel=1e-9)
    assert 0 < err < 1


@pytest.mark.parametrize("model_fn,shape", [(small_cnn, (2, 4, 8, 8)), (Nested, (2, 3, 8, 8))])
def test_every_layer_replaced_and_shapes_kept(model_fn, shape):
    model = model_fn().eval()
    x = torch.randn(shape)
    new, reports = convert_model(model, ConvertConfig(compression=0.8, sweeps=4), example_input=x)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in new.modules())
    n_dense = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert len(reports) == n_dense == sum(isinstance(m, (DeButConv2d, DeButLinear)) for m in new.modules())
    assert new(x).shape == model(x).shape
    for r in reports:
        assert 0.0 < r.rel_error < 1.0 and r.params < r.dense_params
        assert r.macs * r.dense_params == r.dense_macs * r.params      # same positions for both
    assert count_params(new) == sum(r.params for r in reports)
    assert model_macs(new, x) == sum(r.macs for r in reports)
    assert model_macs(model, x) == sum(r.dense_macs for r in reports)


def test_macs_count_grouped_and_depthwise_convs():
    """A grouped conv's weight tensor already holds in/groups inputs per output: MACs = weights x pixels."""
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Flatten(), nn.Linear(16 * 5 * 5, 3))
    per_pixel = 16 * (8 // 4) * 9 + 16 * 1 * 9
    assert model_macs(model, torch.zeros(1, 8, 5, 5)) == per_pixel * 25 + 16 * 25 * 3


def test_converted_layer_holds_the_fitted_chain_and_the_bias():
    model = small_cnn()
    new, reports = convert_model(model, ConvertConfig(compression=0.7, sweeps=3))
    conv = new[3]
    W = model[3].weight.detach().permute(0, 2, 3, 1).reshape(32, -1).double().numpy()
    fitted = conv.dense_matrix().detach().double().numpy()
    assert np.linalg.norm(W - fitted) / np.linalg.norm(W) == pytest.approx(reports[1].rel_error, rel=1e-4)
    assert torch.equal(conv.bias, model[3].bias)
    # the module computes the conv with its dense equivalent
    x = torch.randn(2, 16, 4, 4)
    ref = torch.nn.functional.conv2d(x, conv.dense_weight(), conv.bias, padding=1)
    assert torch.allclose(conv(x), ref, atol=1e-4)


def test_error_falls_as_the_compression_target_is_relaxed():
    model = small_cnn()
    errors = {}
    for target in (0.9, 0.75, 0.6):
        _, reports = convert_model(model, ConvertConfig(compression=target, sweeps=6, layers=("3", "7")))
        errors[target] = [r.rel_error for r in reports]
    for layer in range(2):
        e = [errors[t][layer] for t in (0.9, 0.75, 0.6)]
        assert e[0] > e[1] > e[2], e


def test_subset_overrides_and_bad_selection(tmp_path):
    model = small_cnn()
    cfg = ConvertConfig(compression=0.9, layers=("7", "9"), overrides={"9": {"shrinking_level": 2}}, sweeps=2)
    new, reports = convert_model(model, cfg)
    assert [r.name for r in reports] == ["7", "9"]
    assert isinstance(new[0], nn.Conv2d) and isinstance(new[7], DeButLinear) and len(new[9].chain) == 2
    with pytest.raises(ConfigError, match="layer 'fc9' matches no Conv2d/Linear"):
        convert_model(model, ConvertConfig(layers=("fc9",)))
    bad = tmp_path / "c.yaml"
    bad.write_text("compression: 0.9\nsweep: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'sweep'"):
        load_convert_config(bad)


def test_distillation_lowers_the_loss():
    teacher = small_cnn(0)
    student, _ = convert_model(teacher, ConvertConfig(compression=0.8, sweeps=2))
    x = torch.randn(128, 4, 8, 8)
    y = teacher(x).argmax(1).detach()
    hist = distill(student, teacher, x, y, epochs=6, batch_size=32, lr=3e-3)
    assert hist[-1] < hist[0]


def test_distillation_with_augmentation_shows_the_teacher_the_students_batch():
    """With ``augment`` every batch is transformed once, the student and the teacher see the same
    transformed batch, and the transform's draws follow the seed."""
    teacher = small_cnn(0)
    student, _ = convert_model(teacher, ConvertConfig(compression=0.8, sweeps=2))
    x = torch.randn(64, 4, 8, 8)
    y = teacher(x).argmax(1).detach()
    seen: dict[str, list] = {"aug": [], "teacher": []}
    gen = torch.Generator().manual_seed(0)

    def aug(xb):
        out = xb + torch.randn(xb.shape, generator=gen)
        seen["aug"].append(out)
        return out

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, xb):
            seen["teacher"].append(xb)
            return self.inner(xb)

    hist = distill(student, Spy(teacher), x, y, epochs=2, batch_size=32, lr=3e-3, augment=aug)
    assert len(hist) == 2 and len(seen["aug"]) == 4 == len(seen["teacher"])
    assert all(torch.equal(a, t) for a, t in zip(seen["aug"], seen["teacher"]))
    assert not any(torch.equal(a, x[:32]) for a in seen["aug"])


def test_cloud_augment_rotates_scales_and_jitters_reproducibly():
    import numpy as np

    from litefly.datasets import CloudAugment
    x = torch.randn(6, 3, 16, 1)
    a, b = CloudAugment(3)(x), CloudAugment(3)(x)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, CloudAugment(4)(x))
    norms = a[..., 0].norm(dim=1) / x[..., 0].norm(dim=1)         # a rotation keeps each point's radius
    plain = CloudAugment(3, jitter=0.0)(x)[..., 0].norm(dim=1) / x[..., 0].norm(dim=1)
    assert torch.allclose(plain, plain[:, :1].expand_as(plain), rtol=1e-5)      # one scale per cloud
    assert ((plain[:, 0] >= 0.85 - 1e-6) & (plain[:, 0] <= 1.15 + 1e-6)).all()
    assert (norms - plain).abs().max() < 0.2 and not torch.allclose(norms, plain)
    with pytest.raises(ValueError, match="scale"):
        CloudAugment(0, scale=(1.2, 1.1))
    assert np.isfinite(a.numpy()).all()


def test_export_traces_quantises_and_matches_the_host_runtime(tmp_path):
    from litefly.host.runtime import NetworkRunner
    from litefly.network import check_scales, network_forward_int, plan_network
    model = small_cnn()
    calib = torch.rand(64, 4, 8, 8)
    new, reports = convert_model(model, ConvertConfig(compression=0.8, sweeps=2), example_input=calib[:1])
    assert any("channels-last flatten" in n for n in reports[2].notes)      # nn.Flatten replaced, fc permuted
    steps = trace_steps(new)
    assert [type(s).__name__ for _, s in steps][:3] == ["DeButConv2d", "HostOp", "HostOp"]
    network, params = export_int8(new, calib, name="small")
    kinds = [s.op if isinstance(s, HostOp) else s.kind for s in network.steps]
    assert kinds == ["conv2d", "relu", "maxpool2d", "conv2d", "relu", "maxpool2d", "flatten", "linear", "relu",
                     "linear"]                                                 # ops kept: the plan fuses them
    assert network.input_size == (8, 8)
    esteps = plan_network(network, (4, 8, 8))
    assert [(s.relu, s.pool) for s in esteps] == [(True, (2, 2)), (True, (2, 2)), (True, None), (False, None)]
    check_scales(esteps, params)                                               # chained: int8 flows unchanged
    x = torch.rand(8, 4, 8, 8).double().numpy()
    ours = int8_forward(network, params, x)
    yi = network_forward_int(esteps, params, params[esteps[0].name].quantize_input(x))
    np.testing.assert_array_equal(ours, yi.reshape(8, -1) * params[esteps[-1].name].out_scale)
    host = NetworkRunner(network, params, backend="golden").run(x)
    assert np.array_equal(ours, host)
    # close to the float model (int8 through 4 layers)
    ref = new(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max() + 1e-6
    path = save_int8(network, params, tmp_path / "int8")
    net2, params2 = load_int8(path.parent)
    assert net2 == network and np.array_equal(int8_forward(net2, params2, x), ours)


def test_convert_replaces_a_channel_major_flatten_without_changing_the_outputs():
    from litefly.convert import channels_last_flatten
    from litefly.export import FlattenHWC
    model = small_cnn(3)
    x = torch.rand(16, 4, 8, 8)
    before = model(x).detach()
    notes = channels_last_flatten(model, x[:1])
    assert isinstance(model[6], FlattenHWC) and list(notes) == ["7"]
    torch.testing.assert_close(model(x).detach(), before, rtol=1e-5, atol=1e-6)
    assert channels_last_flatten(small_cnn(3), None) == {}                    # no shape known: unchanged


def test_export_accepts_the_channels_last_flatten_written_as_permute():
    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = DeButConv2d(2, 8, 3, [[8, 18, 4, 9, 1], [8, 8, 2, 2, 4]], padding=1)
            self.fc = DeButLinear(8 * 3 * 3, 4, [[4, 72, 1, 18, 1]])

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).permute(0, 2, 3, 1).flatten(1))

    model = Permuted().eval()
    x = torch.rand(6, 2, 3, 3)
    network, params = export_int8(model, x)
    assert [s.op if isinstance(s, HostOp) else s.kind for s in network.steps] == ["conv2d", "relu", "flatten",
                                                                                 "linear"]
    ref = model(x).detach().numpy()
    ours = int8_forward(network, params, x.double().numpy())
    assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max() + 1e-6


def test_export_refuses_what_the_engine_cannot_run():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = DeButLinear(8, 8, [[8, 8, 2, 2, 1], [8, 8, 4, 4, 2]])

        def forward(self, x):
            return x + self.a(x)

    with pytest.raises(LiteflyError, match="straight chains"):
        trace_steps(Residual())
    with pytest.raises(ConfigError, match="still a dense Linear"):
        trace_steps(nn.Sequential(nn.Linear(4, 4)))
    conv = lambda: DeButConv2d(2, 8, 3, [[8, 18, 4, 9, 1], [8, 8, 2, 2, 4]], padding=1)  # noqa: E731
    fc = lambda n: DeButLinear(n, 4, [[4, n, 1, n // 4, 1]])  # noqa: E731
    x = torch.rand(4, 2, 4, 4)
    # a channel-major flatten of a 8x4x4 map before a DeBut layer: one line, naming it and the fix
    with pytest.raises(ConfigError) as exc:
        export_int8(nn.Sequential(conv(), nn.Flatten(), fc(128)).eval(), x)
    msg = str(exc.value)
    assert "\n" not in msg and "'1' (nn.Flatten) flattens a 8x4x4 map channel-major before DeBut layer '2'" in msg
    assert "FlattenHWC" in msg and "litefly convert" in msg
    # of a 8x1x1 map both orders agree: accepted
    export_int8(nn.Sequential(conv(), nn.MaxPool2d(4), nn.Flatten(), fc(8)).eval(), x)
    # average pooling between layers: one line naming the operation and the layer before it
    with pytest.raises(ConfigError) as exc:
        export_int8(nn.Sequential(conv(), nn.AvgPool2d(2), nn.Flatten(), fc(32)).eval(), x)
    msg = str(exc.value)
    assert "\n" not in msg and "'1' (average pooling) after layer '0' does not run on the engine" in msg


def test_cli_convert_end_to_end(tmp_path):
    model = small_cnn()
    torch.save(model, tmp_path / "m.pt")
    (tmp_path / "c.yaml").write_text("compression: 0.8\nsweeps: 3\noverrides:\n  '9': {compression: 0.5}\n")
    x = torch.rand(64, 4, 8, 8)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=model(x).argmax(1).numpy())
    r = subprocess.run([sys.executable, "-m", "litefly", "convert", str(tmp_path / "m.pt"), "--config",
                        str(tmp_path / "c.yaml"), "-o", str(tmp_path / "out.pt"), "--data", str(tmp_path / "d.npz"),
                        "--epochs", "1", "--export", str(tmp_path / "int8")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "rel. error" in r.stdout
    new = torch.load(tmp_path / "out.pt", weights_only=False)
    assert new(x).shape == (64, 10)
    assert "engine model == int8 golden" in r.stdout and "one engine" in r.stdout
    network, params = load_int8(tmp_path / "int8")
    assert len(network.layers) == 4 and set(params) == {l.name for l in network.layers}
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    r = subprocess.run([sys.executable, "-m", "litefly", "convert", str(tmp_path / "sd.pt"), "-o",
                        str(tmp_path / "o.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "holds a state_dict" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _ranges(chain, ws, i):
    rows = np.zeros(chain[i].p)
    np.maximum.at(rows, chain[i].nonzero_indices()[0], np.abs(ws[i].ravel()))
    cols = np.zeros(chain[i + 1].q)
    np.maximum.at(cols, chain[i + 1].nonzero_indices()[1], np.abs(ws[i + 1].ravel()))
    return rows, cols


def test_equalisation_keeps_the_product_balances_channels_and_cuts_int8_error():
    from litefly.config import LayerConfig
    from litefly.fixed import equalize_factors, quantize_layer
    from litefly.autochain import mixing_chain
    chain = mixing_chain([4, 3, 2], [2, 3, 2])            # 24 -> 12
    rng = np.random.default_rng(5)
    ws = [rng.standard_normal(f.compact_shape) for f in chain]
    for i in range(2):           # uneven channel ranges that cancel in the product
        c = 10.0 ** rng.uniform(-1.5, 1.5, chain[i].p)
        ws[i] = (ws[i].ravel() * c[chain[i].nonzero_indices()[0]]).reshape(chain[i].compact_shape)
        ws[i + 1] = (ws[i + 1].ravel() / c[chain[i + 1].nonzero_indices()[1]]).reshape(chain[i + 1].compact_shape)
    eq = equalize_factors(chain, ws)
    assert np.allclose(chain_dense(chain, eq), chain_dense(chain, ws), rtol=1e-9, atol=1e-12)
    for i in range(2):
        rows, cols = _ranges(chain, eq, i)
        assert np.allclose(rows, cols, rtol=0.05)
    layer = LayerConfig(name="eq", kind="linear", in_features=24, out_features=12, chain=chain)
    x = rng.standard_normal((256, 24))
    ref = x @ chain_dense(chain, ws).T

    def int8_error(weights):
        q = quantize_layer(layer, weights, x)
        y = q.dequantize_output(q.forward(q.quantize_input(x)))
        return np.linalg.norm(y - ref) / np.linalg.norm(ref)

    assert int8_error(eq) < 0.5 * int8_error(ws)
    with pytest.raises(ShapeError, match="2 weight arrays for a chain of 3"):
        equalize_factors(chain, ws[:2])

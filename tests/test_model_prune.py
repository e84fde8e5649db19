"""Sparse factors in the torch layers, pruning (magnitude, SNIP, SynFlow) and its CLI (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cli_inprocess import run_cli
from litefly.chain import Factor, SparseFactor
from litefly.errors import ConfigError, LiteflyError
from litefly.export import export_int8, int8_forward
from litefly.fixed import chain_dense, float_forward
from litefly.fold import fold_batchnorm
from litefly.nn import DeButConv2d, DeButLinear
from litefly.prune import PruneConfig, allocate, prune_model, select_entries

torch.set_num_threads(1)


def _sparse(rng, p, q, density=0.3, concat=False):
    return SparseFactor.from_mask(rng.random((p, q)) < density, concat=concat)


def _chains(rng):
    return [
        [Factor(16, 12, 4, 3, 1), _sparse(rng, 10, 12 + 16, concat=True), _sparse(rng, 6, 10, 0.4)],   # p <= q
        [_sparse(rng, 20, 12), Factor(40, 20, 2, 1, 20), _sparse(rng, 18, 12 + 40, concat=True)],      # p > q
        [_sparse(rng, 5, 12, 0.5)],
    ]


@pytest.mark.parametrize("k", range(3))
@pytest.mark.parametrize("mode", ["factors", "dense"])
def test_sparse_and_concat_chains_match_the_numpy_golden_models_with_gradients(k, mode):
    rng = np.random.default_rng(k)
    chain = _chains(rng)[k]
    layer = DeButLinear(12, chain[-1].p, chain, bias=True, mode=mode).double()
    assert [tuple(w.shape) for w in layer.weights] == [f.compact_shape for f in chain]
    x = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    ws = layer.compact_numpy()
    ref = float_forward(layer.chain, ws, x.detach().numpy(), bias=layer.bias.detach().numpy())
    y = layer(x)
    assert np.allclose(y.detach().numpy(), ref, atol=1e-12)
    assert np.allclose(layer.dense_matrix().detach().numpy(), chain_dense(layer.chain, ws), atol=1e-12)
    assert torch.autograd.gradcheck(lambda *w: _forward_with(layer, w, x.detach()), tuple(
        w.detach().clone().requires_grad_() for w in layer.weights))
    y.square().sum().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in layer.weights)


def _forward_with(layer, weights, x):
    from litefly.nn import debut_chain_forward
    return debut_chain_forward(x, layer.chain, weights)


def test_sparse_conv_forms_agree_with_conv2d_and_fold_batchnorm():
    rng = np.random.default_rng(3)
    chain = [_sparse(rng, 12, 18, 0.4), Factor(8, 12, 2, 3, 1)]
    conv = DeButConv2d(2, 8, 3, chain, padding=1, stride=2).double()
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64)
    ref = F.conv2d(x, conv.dense_weight(), conv.bias, stride=2, padding=1)
    for mode in ("factors", "dense"):
        conv.mode = mode
        assert torch.allclose(conv(x), ref, atol=1e-12)
    lin = DeButLinear(12, 6, [_sparse(rng, 6, 12, 0.5)]).double()
    bn = nn.BatchNorm1d(6).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    xl = torch.randn(5, 12, dtype=torch.float64)
    assert torch.allclose(fold_batchnorm(lin, bn)(xl), bn(lin(xl)), atol=1e-12)


def test_allocation_keeps_a_row_floor_and_the_best_entries():
    assert allocate([10, 20, 30], [5, 5, 5], 20) == [5, 6, 9]
    assert allocate([10, 20, 30], [5, 5, 5], 3) == [5, 5, 5]           # the floor wins
    assert sum(allocate([100, 37, 64], [10, 37, 8], 90)) == 90
    rows = np.repeat(np.arange(4), 5)
    scores = np.arange(20, dtype=float)[::-1].copy()
    keep = select_entries(rows, scores, 6)
    assert keep.sum() == 6 and all(keep[rows == r].any() for r in range(4))
    assert keep[:3].all()                                               # then the best of the rest


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 2 * 2, 5)).eval()


def test_magnitude_pruning_of_dense_layers_keeps_the_largest_weights():
    model = small_cnn()
    x = torch.rand(4, 2, 8, 8)
    pruned, reports = prune_model(model, PruneConfig("magnitude", 0.7), example_input=x[:1])
    assert [r.source for r in reports] == ["dense"] * 3
    for r in reports:
        assert abs(r.sparsity - 0.7) <= 0.5 / sum(r.before) + 1e-9
    conv = pruned[3]
    assert isinstance(conv, DeButConv2d) and len(conv.chain) == 1 and conv.chain[0].kind == "sparse"
    w = model[3].weight.detach()
    kept = conv.dense_weight().detach()
    nz = kept != 0
    assert torch.equal(kept[nz], w[nz])                                 # kept weights copied unchanged
    forced = {int(i) for i in conv.chain[0].indptr[:-1]}                # rows keep their best entry
    assert w[nz].abs().min() >= w[~nz].abs().max() or len(forced) > 0
    assert (w[nz].abs() >= torch.quantile(w.abs(), 0.6)).float().mean() > 0.95
    masked = model[3]
    with torch.no_grad():
        ref = nn.Sequential(*list(model.children()))
        ref[3] = nn.Conv2d(8, 12, 3, padding=1)
        ref[3].weight.copy_(w * nz), ref[3].bias.copy_(masked.bias)
        ref[7] = pruned[7]          # the channels-last flatten permutes the linear's columns
        ref[6] = pruned[6]
        ref[0] = pruned[0]
    assert torch.allclose(pruned(x), ref(x), atol=1e-5)


def test_pruning_debut_factors_keeps_part_of_each_pattern_and_the_weights():
    rng = np.random.default_rng(0)
    chain = [Factor(24, 18, 4, 3, 1), _sparse(rng, 10, 18 + 24, 0.5, concat=True)]
    layer = DeButConv2d(2, 10, 3, chain, padding=1)
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.Linear(10 * 16, 3))
    x = torch.randn(6, 2, 4, 4)
    for method in ("magnitude", "snip", "synflow"):
        pruned, reports = prune_model(model, PruneConfig(method, 0.5, layers=("0",)), data=(x, torch.arange(6) % 3))
        new = pruned[0]
        assert reports[0].source == "debut" and abs(reports[0].sparsity - 0.5) < 0.02
        assert new.chain[1].concat and all(f.kind == "sparse" for f in new.chain)
        for f_old, f_new, w_old, w_new in zip(layer.chain, new.chain, layer.factor_matrices(), new.factor_matrices()):
            assert not (f_new.mask() & ~f_old.mask()).any()
            assert torch.equal(w_new[f_new.mask()], w_old.detach()[f_new.mask()])
        assert isinstance(pruned[3], nn.Linear)                         # not selected: unchanged


def test_snip_and_synflow_scores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    w1 = model[0].weight.detach()
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    snip = (w1 * model[0].weight.grad).abs()
    pruned, _ = prune_model(model, PruneConfig("snip", 0.75, layers=("0",)), data=(x, y))
    kept = pruned[0].dense_matrix().detach() != 0
    assert torch.equal(kept, _expected_keep(snip, 12))
    # SynFlow, one iteration: dR/dW1_ij = (|W2|^T 1)_i when R = sum(|W2| relu(|W1| 1 + |b1|) + |b2|)
    syn = w1.abs() * model[2].weight.detach().abs().sum(0)[:, None]
    pruned, _ = prune_model(model, PruneConfig("synflow", 0.75, layers=("0",), iterations=1), example_input=x[:1])
    assert torch.equal(pruned[0].dense_matrix().detach() != 0, _expected_keep(syn, 12))


def _expected_keep(scores: torch.Tensor, keep: int) -> torch.Tensor:
    rows = np.repeat(np.arange(scores.shape[0]), scores.shape[1])
    return torch.as_tensor(select_entries(rows, scores.numpy().ravel(), keep).reshape(scores.shape))


def test_pruned_network_exports_and_the_engine_model_equals_the_int8_golden():
    from litefly.host.runtime import NetworkRunner
    model = small_cnn(1)
    x = torch.rand(40, 2, 8, 8)
    pruned, _ = prune_model(model, PruneConfig("magnitude", 0.6), example_input=x[:1])
    network, params = export_int8(pruned, x)
    assert all(f.kind == "sparse" for l in network.layers for f in l.chain)
    xs = x[:10].double().numpy()
    golden = int8_forward(network, params, xs)
    with NetworkRunner(network, params, "golden", input_size=(8, 8)) as runner:
        assert np.array_equal(runner.run(xs), golden)
    ref = pruned(x[:10]).detach().numpy()
    assert np.abs(golden - ref).max() < 0.1 * np.abs(ref).max()


def test_bad_prune_settings_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="must be one of"):
        PruneConfig("random", 0.5)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        PruneConfig("magnitude", 1.0)
    with pytest.raises(ConfigError, match="snip needs data"):
        prune_model(small_cnn(), PruneConfig("snip", 0.5))
    with pytest.raises(ConfigError, match="matches no"):
        prune_model(small_cnn(), PruneConfig("magnitude", 0.5, layers=("nope",)))


@pytest.mark.parametrize("args, message", [
    (["--prune", "random", "--sparsity", "0.5"], "must be one of magnitude, snip, synflow"),
    (["--prune", "magnitude", "--sparsity", "1.5"], "between 0 and 1"),
    (["--prune", "magnitude", "--sparsity", "abc"], "between 0 and 1"),
    (["--prune", "magnitude"], "--prune needs --sparsity"),
    (["--sparsity", "0.5"], "--sparsity needs --prune"),
    (["--prune-dense"], "--prune-dense needs --prune"),
    (["--prune", "snip", "--sparsity", "0.5"], "snip needs --data"),
])
def test_cli_prune_errors_are_one_line_with_exit_2(capsys, tmp_path, args, message):
    torch.save(small_cnn(), tmp_path / "m.pt")
    code, out, err = run_cli(capsys, "convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.pt"), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_convert_prunes_fine_tunes_and_exports(capsys, tmp_path):
    model = small_cnn()
    torch.save(model, tmp_path / "m.pt")
    x = torch.rand(64, 2, 8, 8)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=model(x).argmax(1).numpy())
    (tmp_path / "c.yaml").write_text("compression: 0.5\nsweeps: 2\n")
    code, out, err = run_cli(capsys, "convert", str(tmp_path / "m.pt"), "--config", str(tmp_path / "c.yaml"),
                             "-o", str(tmp_path / "o.pt"), "--data", str(tmp_path / "d.npz"), "--epochs", "1",
                             "--prune", "snip", "--sparsity", "0.5", "--export", str(tmp_path / "int8"))
    assert code == 0, err
    assert "pruning (snip)" in out and "engine model == int8 golden" in out
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["prune"]["method"] == "snip" and len(report["prune"]["layers"]) == 3
    assert all(l["source"] == "debut" and l["sparsity"] > 0.3 for l in report["prune"]["layers"])
    code, out, err = run_cli(capsys, "convert", str(tmp_path / "m.pt"), "-o", str(tmp_path / "p.pt"),
                             "--data", str(tmp_path / "d.npz"), "--epochs", "0", "--prune", "synflow",
                             "--sparsity", "0.8", "--prune-dense")
    assert code == 0, err
    new = torch.load(tmp_path / "p.pt", weights_only=False)
    assert sum(f.params for m in new.modules() if isinstance(m, (DeButConv2d, DeButLinear)) for f in m.chain) \
        <= 0.2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))) + 3


def test_digits_demo_prunes_and_runs_the_pruned_network_on_the_engine_model(tmp_path):
    """Two gradual rounds to 50% and one quantisation-aware epoch before each export."""
    from litefly.demo_digits import DigitsConfig, run_digits_demo
    cfg = DigitsConfig(channels=(8, 16), compression=0.8, epochs=4, kd_epochs=3, sweeps=2, n_train=300, n_test=60,
                       backend="golden", bench=False, prune="magnitude", prune_sparsity=0.5, prune_epochs=2,
                       prune_rounds=2, qat_epochs=1)
    logs: list[str] = []
    res = run_digits_demo(cfg, tmp_path, log=logs.append)
    assert sum("after 1 quantisation-aware epochs" in m for m in logs) == 2      # the unpruned and the pruned
    assert any("(2 rounds)" in m for m in logs)
    assert res.engine_equal is True
    names = [r["model"] for r in res.rows]
    assert "DeBut int8 golden" in names and "DeBut pruned 50% (magnitude) int8 engine (golden)" in names
    debut = next(r for r in res.rows if r["model"] == "DeBut float (KD fine-tuned)")
    pruned = res.rows[-1]
    assert pruned["params"] < 0.6 * debut["params"] and pruned["macs"] < 0.6 * debut["macs"]
    assert all(abs(r.sparsity - 0.5) < 0.1 for r in res.prune)      # over both rounds: from the first's "before"
    with pytest.raises(ConfigError):
        run_digits_demo(DigitsConfig(prune="bogus"), tmp_path, log=lambda m: None)
    with pytest.raises(LiteflyError, match=r"^demo: prune_rounds=0 must be a positive integer$"):
        run_digits_demo(DigitsConfig(prune="magnitude", prune_rounds=0), tmp_path, log=lambda m: None)


def test_bench_pruned_reports_cycles_against_density_for_pruned_dense_layers(capsys, monkeypatch):
    """scripts/bench_pruned.py: one table row per layer, source and sparsity, then the issue's target for
    pruned dense layers (MAC cycles per batch over the unpruned ones within 5% of the density)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_pruned.py"
    spec = importlib.util.spec_from_file_location("bench_pruned", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(sys, "argv", ["bench_pruned.py", "--sparsity", "0.5", "0.9"])
    mod.main()
    out = capsys.readouterr().out
    target = out[out.index("Target (issue 14)"):]
    rows = [line.split("|")[1:-1] for line in target.splitlines() if line.startswith("| vgg_")]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [(f"vgg_conv{i}", s) for i in (1, 2, 3)
                                                            for s in ("50%", "90%")]
    for r in rows:
        density, ratio, over = (float(v) for v in r[2:5])
        assert over == pytest.approx(ratio / density, abs=2e-3) and abs(over - 1) <= 0.05 and r[5].strip() == "yes"
    assert "target met" in target
    assert out.count("| dense | 90% |") == 3 and out.count("| debut | 50% |") == 3

"""Pixelfly (issue 14, item 3): flat block butterfly masks, the S x + U (V x) chain, the dense
fit, the torch layer's export, and the int8 layer on the engine model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from litefly.chain import Factor
from litefly.config import NetworkConfig, NumericFormat
from litefly.errors import ConfigError
from litefly.fixed import chain_dense, float_forward, quantize_layer
from litefly.network import network_forward_int, plan_network
from litefly.pixelfly import (PixelflyLinear, fit_pixelfly, flat_block_butterfly_mask, flat_butterfly_layout,
                              pixelfly_chain, pixelfly_layer, pixelfly_mask)
from litefly.host.runtime import NetworkRunner

torch.set_num_threads(1)


def test_flat_butterfly_layout_by_hand() -> None:
    # 8 blocks, strides 1 and 2: i links j iff i == j or i ^ j in {1, 2}
    want = np.array([[1, 1, 1, 0, 0, 0, 0, 0],
                     [1, 1, 0, 1, 0, 0, 0, 0],
                     [1, 0, 1, 1, 0, 0, 0, 0],
                     [0, 1, 1, 1, 0, 0, 0, 0],
                     [0, 0, 0, 0, 1, 1, 1, 0],
                     [0, 0, 0, 0, 1, 1, 0, 1],
                     [0, 0, 0, 0, 1, 0, 1, 1],
                     [0, 0, 0, 0, 0, 1, 1, 1]], dtype=bool)
    assert np.array_equal(flat_butterfly_layout(8, 2), want)
    # all three levels: one more link per row (stride 4), 4 entries a row
    full = flat_butterfly_layout(8)
    assert full.sum(axis=1).tolist() == [4] * 8 and full[0, 4] and not full[0, 5]


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_flat_butterfly_is_union_of_butterfly_factor_patterns(size: int) -> None:
    """The flat butterfly is the sum of the butterfly factors: factor e is the DeBut factor
    [B, B, 2, 2, 2^e] (litefly.chain.Factor semantics)."""
    levels = size.bit_length() - 1
    for k in range(1, levels + 1):
        union = np.zeros((size, size), dtype=bool)
        for e in range(k):
            union |= Factor(size, size, 2, 2, 1 << e).mask()
        assert np.array_equal(flat_butterfly_layout(size, k), union)


def test_block_mask_stretches_rectangular_blocks_and_coarsens() -> None:
    # 8 x 4 from a 4-block layout with stride 1 only: 2x1 blocks, block diagonal pairs
    m = flat_block_butterfly_mask(8, 4, 4, 1)
    want = np.kron(np.kron(np.eye(2), np.ones((2, 2))), np.ones((2, 1))).astype(bool)
    assert np.array_equal(m, want)
    # coarsened to 4 x 4 tiles: every tile touched is kept whole
    c = flat_block_butterfly_mask(8, 8, 8, 1, block=4)
    assert np.array_equal(c, np.kron(np.eye(2), np.ones((4, 4))).astype(bool))
    # pixelfly_mask: block size on the smaller side (32 x 64 at b=4: 8 blocks of 4 x 8)
    pm = pixelfly_mask(32, 64, 4)
    assert pm.shape == (32, 64) and np.array_equal(pm, flat_block_butterfly_mask(32, 64, 8))
    assert pm.mean() == pytest.approx(4 / 8)


@pytest.mark.parametrize("call, msg", [
    (lambda: flat_butterfly_layout(6), "power of two"),
    (lambda: flat_butterfly_layout(8, 4), "n_factors=4 must be in 1..log2"),
    (lambda: flat_block_butterfly_mask(12, 8, 8), "must divide out_features=12"),
    (lambda: pixelfly_mask(64, 64, 24), "block_size=24 must divide"),
    (lambda: pixelfly_mask(48, 48, 16), "power of two"),
    (lambda: pixelfly_chain(np.ones((4, 4)), -1), "rank=-1"),
    (lambda: fit_pixelfly(np.ones((4, 4)), np.ones((4, 4)), 5), "rank=5 is above"),
])
def test_bad_input_is_one_line_config_error(call, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as info:
        call()
    assert "\n" not in str(info.value)


def test_chain_is_v_then_concat_s_u() -> None:
    mask = pixelfly_mask(16, 16, 4)
    chain = pixelfly_chain(mask, 3)
    v, su = chain
    assert (v.p, v.q, v.params, v.concat) == (3, 16, 48, False)
    assert (su.p, su.q, su.concat) == (16, 19, True)
    assert np.array_equal(su.mask()[:, :16], mask) and su.mask()[:, 16:].all()
    assert len(pixelfly_chain(mask, 0)) == 1


def test_fit_is_monotone_and_exact_at_full_rank() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 32))
    mask = pixelfly_mask(32, 32, 4, 2)
    fit = fit_pixelfly(w, mask, 4, sweeps=6)
    assert all(b <= a + 1e-12 for a, b in zip(fit.errors, fit.errors[1:]))
    prod = chain_dense(fit.chain, fit.weights)
    assert np.linalg.norm(w - prod) / np.linalg.norm(w) == pytest.approx(fit.rel_error, rel=1e-9)
    # rank 0: S is W on the mask, the error is the part of W off it
    f0 = fit_pixelfly(w, mask, 0)
    assert f0.rel_error == pytest.approx(np.linalg.norm(w[~mask]) / np.linalg.norm(w))
    # a matrix that IS sparse-on-mask plus rank 2 is recovered (to the alternation's tolerance)
    s = np.where(mask, rng.standard_normal(w.shape), 0.0)
    lr = rng.standard_normal((32, 2)) @ rng.standard_normal((2, 32))
    assert fit_pixelfly(s + lr, mask, 2, sweeps=200).rel_error < 1e-3
    assert fit_pixelfly(w, mask, 32, sweeps=1).rel_error < 1e-10


def _engine_equals_golden(layer, weights, bias, x: np.ndarray) -> tuple[np.ndarray, object]:
    q = quantize_layer(layer, weights, x, bias=bias)
    net = NetworkConfig.single(layer)
    steps = plan_network(net, (layer.chain_in, 1, 1))
    x_int = q.quantize_input(x)
    golden = network_forward_int(steps, {layer.name: q}, x_int.reshape(len(x), -1, 1, 1))
    with NetworkRunner(net, {layer.name: q}, backend="golden") as runner:
        got = runner.run_int(x_int)
    assert np.array_equal(got, golden.reshape(len(x), -1))
    return got, q


def test_torch_layer_exports_its_dense_weight_and_runs_on_the_engine() -> None:
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 32)
    mask = pixelfly_mask(32, 64, 4, 2)
    layer, fit = PixelflyLinear.from_dense(dense, mask, rank=4)
    assert fit.rel_error < 1.0
    chain, weights, bias = layer.export()
    w = layer.dense_weight().detach().double().numpy()
    assert np.allclose(chain_dense(chain, weights), w, rtol=0, atol=1e-6)          # float32 layer
    chain64, weights64, _ = layer.double().export()
    assert np.allclose(chain_dense(chain64, weights64), layer.dense_weight().detach().numpy(), rtol=0, atol=1e-13)
    layer.float()
    x = torch.randn(16, 64)
    with torch.no_grad():
        y = layer(x).double().numpy()
    assert np.allclose(float_forward(chain, weights, x.double().numpy(), bias), y, atol=1e-5)
    # the same layer as litefly.nn's DeButLinear over the Pixelfly chain
    deb = layer.to_debut()
    assert deb.chain == chain
    with torch.no_grad():
        assert torch.allclose(deb.dense_matrix(), layer.dense_weight(), atol=1e-6)
        assert torch.allclose(deb(x), layer(x), atol=1e-5)
    # training reaches every parameter
    layer(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in (layer.values, layer.u, layer.v))
    cfg = layer.layer_config("pix", NumericFormat(bias=True))
    assert cfg.params == fit.params == mask.sum() + 4 * (64 + 32)
    got, q = _engine_equals_golden(cfg, weights, bias, x.double().numpy())
    yq = q.dequantize_output(got)
    assert np.abs(yq - y).max() < 0.1 * np.abs(y).max()        # int8 stays near the float layer


def test_pixelfly_layer_config_round_trips_through_yaml(tmp_path) -> None:
    from litefly.config import load_layer
    fit = fit_pixelfly(np.random.default_rng(1).standard_normal((16, 32)), pixelfly_mask(16, 32, 4), 2)
    cfg = pixelfly_layer("pix16", fit.chain)
    path = tmp_path / "pix.yaml"
    path.write_text(cfg.to_yaml())
    back = load_layer(path)
    assert back.chain == cfg.chain and back.config_hash == cfg.config_hash


def test_example_layer_files_are_the_generated_chains(capsys) -> None:
    """examples/layers/pixelfly64.yaml and boft64.yaml are what the generators give, and `litefly chain
    show` prints them (density per factor, compression)."""
    import json
    from pathlib import Path

    from litefly.boft import BoftAdapter, boft_chain
    from litefly.config import load_layer
    from cli_inprocess import run_cli

    examples = Path(__file__).resolve().parents[1] / "examples" / "layers"
    pix = load_layer(examples / "pixelfly64.yaml")
    assert pix.chain == pixelfly_chain(pixelfly_mask(64, 64, 4, 2), 4)
    chain, _, n_rot = boft_chain(BoftAdapter.from_params(np.zeros((3, 8, 8, 8)), np.ones(32)),
                                 [[32, 64, 32, 64, 1]], [np.zeros((1, 1, 32, 64))])
    assert load_layer(examples / "boft64.yaml").chain == chain and n_rot == 3
    code, out, _ = run_cli(capsys, "chain", "show", "--json", str(examples / "pixelfly64.yaml"))
    assert code == 0
    info = json.loads(out)["layers"][0]
    assert [f["density"] for f in info["factors"]] == [1.0, 1024 / (64 * 68)]
    assert info["params"] == 1280 and info["dense_product"] is True
    code, out, _ = run_cli(capsys, "chain", "show", str(examples / "boft64.yaml"))
    assert code == 0 and "12.5%" in out and "sparse 32x32, 32 nonzeros" in out


# -- padded masks, whole models and the digits path (litefly demo pixelfly) ---------------------------
@pytest.mark.parametrize("shape, b, k", [((32, 64), 4, None), ((64, 64), 4, 2), ((64, 288), 2, 2), ((16, 16), 4, 1)])
def test_padded_mask_equals_the_plain_one_when_no_padding_is_needed(shape, b, k) -> None:
    assert np.array_equal(pixelfly_mask(*shape, b, k, pad=True), pixelfly_mask(*shape, b, k))


def test_padded_mask_is_the_crop_of_the_padded_shape() -> None:
    # 10 x 256 at b=2: the 10 side pads to 16 = 2 x 8 blocks, the mask of 16 x 256 (B=8) cropped to 10 rows
    m = pixelfly_mask(10, 256, 2, 2, pad=True)
    assert np.array_equal(m, flat_block_butterfly_mask(16, 256, 8, 2)[:10])
    # 32 x 9 at b=2: the 9 side pads to 16 (B=8), n_factors capped at log2 8 = 3
    assert np.array_equal(pixelfly_mask(32, 9, 2, 5, pad=True), flat_block_butterfly_mask(32, 16, 8)[:, :9])
    # the smaller side fits in one block: dense
    assert pixelfly_mask(10, 256, 16, pad=True).all()
    with pytest.raises(ConfigError, match="n_factors=0"):
        pixelfly_mask(10, 256, 2, 0, pad=True)


def test_pixelfly_model_converts_convs_through_im2col_and_exports() -> None:
    """Every Conv2d/Linear of a small CNN becomes a DeBut layer over its Pixelfly chain whose dense
    matrix is the fit's S + U V; the model exports int8 and the engine model equals the golden."""
    from litefly.demo_digits import make_cnn
    from litefly.export import export_int8, int8_forward
    from litefly.nn import DeButConv2d, DeButLinear
    from litefly.pixelfly import PixelflyConfig, pixelfly_model

    torch.manual_seed(0)
    dense = make_cnn(8, 16)
    x = torch.rand(16, 1, 8, 8)
    pix, reports = pixelfly_model(dense, PixelflyConfig(block_size=2, rank=1, n_factors=1, sweeps=3),
                                  example_input=x[:1])
    assert [r.kind for r in reports] == ["conv2d", "conv2d", "linear"]
    assert isinstance(pix.conv1, DeButConv2d) and isinstance(pix.fc, DeButLinear)
    assert all(len(m.chain) == 2 and m.chain[1].concat for m in (pix.conv1, pix.conv2, pix.fc))
    for r in reports:
        assert r.params < r.dense_params and 0 <= r.rel_error < 1
    # conv2: the fit of the im2col matrix (kernel position outer) is what the layer holds
    w = dense.conv2.weight.detach().double().permute(0, 2, 3, 1).reshape(16, -1).numpy()
    fit = fit_pixelfly(w, pixelfly_mask(16, 72, 2, 1, pad=True), 1, 3)
    got = pix.conv2.dense_matrix().detach().double().numpy()
    assert np.allclose(got, chain_dense(fit.chain, fit.weights), atol=1e-6)
    network, params = export_int8(pix, x, name="pix")
    x_test = torch.rand(6, 1, 8, 8).double().numpy()
    golden = int8_forward(network, params, x_test)
    with NetworkRunner(network, params, backend="golden", input_size=(8, 8)) as runner:
        assert np.array_equal(runner.run(x_test), golden)
    # a layer whose smaller side is one block keeps its dense matrix as S, with no U V
    tiny, rep = pixelfly_model(make_cnn(2, 4), PixelflyConfig(block_size=2, rank=3), example_input=x[:1])
    assert rep[0].rank == 0 and len(tiny.conv1.chain) == 1 and rep[0].params == rep[0].dense_params == 18


def test_pixelfly_digits_demo_quick(tmp_path, capsys) -> None:
    """`litefly demo pixelfly` on tiny sizes: every row present, fewer parameters, the engine model equals
    the int8 golden network on every test image, deterministic per seed."""
    import json

    from cli_inprocess import run_cli
    from litefly.demo_pixelfly import PixelflyDigitsConfig, run_pixelfly_demo

    cfg = PixelflyDigitsConfig(channels=(4, 8), epochs=2, kd_epochs=1, n_train=120, n_test=24, sweeps=2)
    res = run_pixelfly_demo(cfg, tmp_path / "a", log=lambda m: None)
    assert [r["model"].split(" (")[0] for r in res.rows] == ["dense float", "Pixelfly", "Pixelfly",
                                                              "Pixelfly int8 golden", "Pixelfly int8 engine"]
    assert res.engine_equal is True and np.array_equal(res.engine_pred, res.golden_pred)
    assert res.rows[1]["params"] < res.rows[0]["params"]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["engine_equals_golden_on_every_image"] is True and len(summary["layers"]) == 3
    again = run_pixelfly_demo(cfg, tmp_path / "b", log=lambda m: None)
    assert again.rows == res.rows
    code, _, err = run_cli(capsys, "demo", "pixelfly", "--n-factors", "0")
    assert code == 2 and "--n-factors '0' must be a positive integer or 'all'" in err

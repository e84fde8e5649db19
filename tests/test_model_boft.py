"""BOFT import (issue 14, item 4): PEFT adapters as rotation factors beside the frozen layer, the
float output against PEFT's merged weight, the int8 layer on the engine model, and what an
adapter switch rewrites in the parameter stream."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from litefly.boft import (BoftAdapter, boft_chain, boft_permutation, cayley, import_boft, switch_report,
                          torch_to_litefly_order)
from litefly.chain import monarch_chain
from litefly.config import NetworkConfig
from litefly.errors import ConfigError
from litefly.fixed import chain_dense, float_forward, quantize_layer
from litefly.hw.spec import EngineEnvelope
from litefly.hw.wireformat import pack_layer_params
from litefly.network import col2im, im2col, network_forward_int, output_size, plan_network
from litefly.host.runtime import NetworkRunner

torch.set_num_threads(1)


def test_permutation_by_hand() -> None:
    # 16 entries, 4 blocks of 4, level 1 of 2: chunks of 8, half-blocks of 2 reordered 0, 2, 1, 3
    want = [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
    assert boft_permutation(16, 4, 4, 1, 2).tolist() == want
    assert boft_permutation(16, 4, 4, 0, 2).tolist() == list(range(16))     # P_0 is the identity
    assert boft_permutation(16, 4, 4, 0, 1).tolist() == list(range(16))


def test_cayley_is_orthogonal() -> None:
    r = np.random.default_rng(0).standard_normal((3, 5, 6, 6))
    q = cayley(r)
    assert np.allclose(q @ np.swapaxes(q, -1, -2), np.eye(6), atol=1e-12)
    assert np.allclose(cayley(np.zeros((2, 4, 4))), np.eye(4))


def random_adapter(m: int, d: int, b: int, out: int, seed: int) -> BoftAdapter:
    rng = np.random.default_rng(seed)
    return BoftAdapter.from_params(0.3 * rng.standard_normal((m, d, b, b)), 1 + 0.1 * rng.standard_normal(out))


@pytest.mark.parametrize("scale", ["factor", "fold"])
def test_chain_is_scaled_frozen_times_rotation_transposed(scale: str) -> None:
    ad = random_adapter(3, 8, 4, 16, seed=1)
    rot = ad.rotation()
    assert np.allclose(rot @ rot.T, np.eye(32), atol=1e-12)
    w = np.random.default_rng(2).standard_normal((16, 32))
    chain, weights, n_rot = boft_chain(ad, [[16, 32, 16, 32, 1]], [w.reshape(1, 1, 16, 32)], scale)
    assert n_rot == 3 and len(chain) == (5 if scale == "factor" else 4)
    assert all(f.kind == "sparse" and f.params == 8 * 4 * 4 for f in chain[:3])
    assert np.allclose(chain_dense(chain, weights), ad.s[:, None] * (w @ rot.T), atol=1e-12)


def test_frozen_debut_chain_and_conv_order() -> None:
    ad = random_adapter(2, 4, 4, 16, seed=3)
    frozen = monarch_chain(16, 4)
    fw = [np.random.default_rng(4).standard_normal(f.compact_shape) for f in frozen]
    chain, weights, _ = boft_chain(ad, frozen, fw)
    assert chain[2:4] == frozen
    assert np.allclose(chain_dense(chain, weights), ad.s[:, None] * (chain_dense(frozen, fw) @ ad.rotation().T))
    # a conv's rotation acts in torch's order; in litefly's order it is conjugated by the reordering
    order = torch_to_litefly_order(4, (2, 2))
    assert sorted(order.tolist()) == list(range(16)) and order[1] == 4      # litefly 1 = (pos 0, ch 1) = torch 4
    chain, weights, _ = boft_chain(ad, frozen, fw, order=order)
    rot_lite = ad.rotation()[np.ix_(order, order)]
    assert np.allclose(chain_dense(chain, weights), ad.s[:, None] * (chain_dense(frozen, fw) @ rot_lite.T))


@pytest.mark.parametrize("call, msg", [
    (lambda: boft_chain(random_adapter(1, 4, 4, 8, 0), [[8, 16, 8, 16, 1]], [np.ones((1, 1, 8, 16))], "both"),
     "scale='both'"),
    (lambda: boft_chain(random_adapter(1, 4, 4, 8, 0), [[8, 12, 8, 12, 1]], [np.ones((1, 1, 8, 12))]),
     "rotates 16 inputs"),
    (lambda: boft_chain(random_adapter(1, 4, 4, 9, 0), [[8, 16, 8, 16, 1]], [np.ones((1, 1, 8, 16))]),
     "9 scales"),
    (lambda: BoftAdapter(np.zeros((1, 2, 3, 4)), np.ones(2), np.zeros((1, 6))), "boft_R has shape"),
    (lambda: BoftAdapter(np.zeros((1, 2, 2, 2)), np.ones(2), np.zeros((1, 4))), "not a permutation"),
    (lambda: import_boft(torch.nn.Linear(4, 4), "x"), "not a PEFT BOFT layer"),
])
def test_bad_input_is_one_line_config_error(call, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as info:
        call()
    assert "\n" not in str(info.value)


# -- against PEFT -----------------------------------------------------------------------------------

class _BlockDiagKernel:
    """Stands in for PEFT's CUDA block-diagonal kernel (``fbd_cuda``; without it PEFT forces one
    butterfly factor): ``forward(x)`` of ``(N, D, b, b)`` is ``[(N, D*b, D*b)]`` block diagonals."""

    @staticmethod
    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([torch.block_diag(*torch.unbind(x[i])) for i in range(x.shape[0])])]


def peft_model(base: torch.nn.Module, block_size: int, factors: int, seed: int, monkeypatch) -> torch.nn.Module:
    peft = pytest.importorskip("peft")
    import peft.tuners.boft.layer as boft_layer
    if factors > 1:
        monkeypatch.setattr(boft_layer, "_FBD_CUDA", _BlockDiagKernel())
    else:       # as on a machine without CUDA, minus PEFT's attempt to compile the kernel (seconds per layer)
        monkeypatch.setattr(boft_layer, "get_fbd_cuda", lambda: None)
    torch.manual_seed(seed)
    cfg = peft.BOFTConfig(target_modules=["0"], boft_block_size=block_size, boft_n_butterfly_factor=factors,
                          init_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.get_peft_model(base, cfg)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("factors", [1, 3])
def test_linear_matches_peft_merged_weight(factors: int, monkeypatch) -> None:
    torch.manual_seed(0)
    model = peft_model(torch.nn.Sequential(torch.nn.Linear(64, 32)), 8, factors, seed=5, monkeypatch=monkeypatch)
    layer = model.base_model.model[0]
    ad = BoftAdapter.from_params(layer.boft_R["default"].detach().numpy(), layer.boft_s["default"].detach().numpy())
    assert np.array_equal(ad.perms, layer.boft_P.numpy().argmax(axis=2))       # our permutations are PEFT's
    cfg, weights, bias, n_rot = import_boft(layer, "boft_fc")
    assert n_rot == factors
    x = torch.randn(12, 64)
    merged = model.merge_and_unload()
    with torch.no_grad():
        y = merged(x).double().numpy()
    assert rel(float_forward(cfg.chain, weights, x.double().numpy(), bias), y) < 1e-5
    assert rel(chain_dense(cfg.chain, weights), merged[0].weight.detach().double().numpy()) < 1e-5


def test_conv_matches_peft_merged_weight(monkeypatch) -> None:
    torch.manual_seed(1)
    conv = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1, stride=2))
    model = peft_model(conv, 6, 2, seed=6, monkeypatch=monkeypatch)
    cfg, weights, bias, n_rot = import_boft(model.base_model.model[0], "boft_conv")
    assert cfg.kind == "conv2d" and n_rot == 2 and cfg.chain_in == 36
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        y = model.merge_and_unload()(x).double().numpy()
    cols = im2col(x.double().numpy(), cfg.kernel, cfg.stride, cfg.padding, cfg.dilation)
    ho, wo = output_size(9, 9, cfg.kernel, cfg.stride, cfg.padding, cfg.dilation)
    assert rel(col2im(float_forward(cfg.chain, weights, cols, bias), 2, ho, wo), y) < 1e-5


def test_int8_on_the_engine_and_what_a_switch_rewrites(monkeypatch) -> None:
    """Two adapters on one frozen Linear: each runs on the engine model equal to the int8 golden; the
    packed streams differ only in the adapter's weight beats and the bias beats."""
    torch.manual_seed(0)
    base = torch.nn.Linear(64, 32)
    imported, packed = [], []
    x = torch.randn(32, 64).double().numpy()
    for seed in (7, 8):
        model = peft_model(torch.nn.Sequential(base), 8, 3, seed=seed, monkeypatch=monkeypatch)
        cfg, weights, bias, n_rot = import_boft(model.base_model.model[0], "boft_fc")
        model.unload()
        q = quantize_layer(cfg, weights, x, bias=bias)
        net = NetworkConfig.single(cfg)
        x_int = q.quantize_input(x)
        golden = network_forward_int(plan_network(net, (64, 1, 1)), {cfg.name: q}, x_int.reshape(32, 64, 1, 1))
        with NetworkRunner(net, {cfg.name: q}, backend="golden") as runner:
            assert np.array_equal(runner.run_int(x_int), golden.reshape(32, -1))
        y = float_forward(cfg.chain, weights, x, bias)
        assert rel(q.dequantize_output(golden.reshape(32, -1)), y) < 0.1
        env = EngineEnvelope.for_network(net)
        packed.append(pack_layer_params(q.weights, q.bias, env.weight_bits, env.stream_bits, cfg.chain).ravel())
        imported.append((cfg, q))
    assert imported[0][0].config_hash == imported[1][0].config_hash       # same chain: same engine, same indices
    assert np.array_equal(imported[0][1].weights[3], imported[1][1].weights[3])   # frozen int8 weights unchanged
    rep = switch_report(imported[0][0], n_rot)
    assert packed[0].size == rep["bytes_total"]
    diff = np.nonzero(packed[0] != packed[1])[0]
    rot_end = rep["bytes_rotation_weights"]
    diag_start = rep["bytes_weights"] - rep["bytes_scale_weights"]
    bias_start = rep["bytes_weights"] + rep["bytes_index"]
    inside = (diff < rot_end) | ((diff >= diag_start) & (diff < rep["bytes_weights"])) | (diff >= bias_start)
    assert diff.size and inside.all()
    assert rep["bytes_switch"] < rep["bytes_total"] / 2

"""Fast DeBut layers: the factor-by-factor and the dense-weight forms agree (outputs and
gradients), the automatic choice is deterministic and follows the cost model."""

from __future__ import annotations

import pickle

import pytest
import torch

from litefly.chain import validate_chain
from litefly.config import load_layer
from litefly.nn import (DeButConv2d, DeButLinear, chain_dense_matrix, choose_form, debut_chain_forward,
                        debut_chain_transpose, factor_dense_torch, form_costs, from_layer)

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHAINS = [
    [[36, 27, 4, 3, 1], [72, 36, 2, 1, 4], [64, 72, 8, 9, 8]],                # 27 -> 64 (p > q)
    [[32, 64, 1, 2, 1], [32, 32, 2, 2, 1], [16, 32, 1, 2, 2]],                # 64 -> 16 (p < q)
    [[12, 12, 3, 3, 1], [12, 12, 2, 2, 3]],                                    # square
    [[8, 12, 2, 3, 1]],                                                        # one factor
]


def _grads(mod, x):
    mod.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    y = mod(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad, [w.grad.clone() for w in mod.weights], mod.bias.grad.clone()


@pytest.mark.parametrize("chain", CHAINS)
def test_dense_matrix_equals_product_of_factors(chain):
    chain = validate_chain(chain)
    torch.manual_seed(0)
    ws = [torch.randn(f.compact_shape, dtype=torch.float64) for f in chain]
    m = factor_dense_torch(chain[0], ws[0])
    for f, w in zip(chain[1:], ws[1:]):
        m = factor_dense_torch(f, w) @ m
    torch.testing.assert_close(chain_dense_matrix(chain, ws), m)
    x = torch.randn(5, chain[0].q, dtype=torch.float64)
    y = torch.randn(5, chain[-1].p, dtype=torch.float64)
    torch.testing.assert_close(debut_chain_forward(x, chain, ws), x @ m.T)
    torch.testing.assert_close(debut_chain_transpose(y, chain, ws), y @ m)


@pytest.mark.parametrize("chain", CHAINS)
def test_linear_forms_agree_with_gradients(chain):
    chain = validate_chain(chain)
    torch.manual_seed(1)
    lin = DeButLinear(chain[0].q, chain[-1].p, chain).double()
    x = torch.randn(2, 7, chain[0].q, dtype=torch.float64)
    lin.mode = "factors"
    want = _grads(lin, x)
    lin.mode = "dense"
    got = _grads(lin, x)
    for a, b in zip(got[:2] + (got[3],), want[:2] + (want[3],)):
        torch.testing.assert_close(a, b)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_conv_forms_agree_with_gradients_float32(stride, padding, dilation):
    torch.manual_seed(2)
    conv = DeButConv2d(3, 64, 3, CHAINS[0], stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 3, 9, 9)
    conv.mode = "factors"
    want = _grads(conv, x)
    conv.mode = "dense"
    got = _grads(conv, x)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[3], want[3], rtol=1e-4, atol=1e-4)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_vgg_layer_forms_agree():
    torch.manual_seed(3)
    mod = from_layer(load_layer(ROOT / "examples" / "layers" / "vgg_conv2.yaml")).double()
    x = torch.randn(1, 64, 6, 6, dtype=torch.float64)
    mod.mode = "factors"
    want = mod(x)
    mod.mode = "dense"
    torch.testing.assert_close(mod(x), want)


def test_auto_choice_is_deterministic_and_sensible():
    vgg = [load_layer(ROOT / "examples" / "layers" / f"vgg_conv{i}.yaml").chain for i in (1, 2, 3)]
    for chain in vgg:     # training a conv at batch 8, 32x32: the dense weight wins
        assert choose_form(chain, 8 * 32 * 32) == "dense"
        assert choose_form(chain, 8 * 32 * 32) == choose_form(chain, 8 * 32 * 32)
    # a compressed 4608 -> 512 linear on a few rows: forming the weight costs more than the factors
    big = validate_chain([[512, 4608, 1, 9, 1], [512, 512, 8, 8, 1], [512, 512, 8, 8, 8]])
    assert choose_form(big, 16) == "factors"
    fact, dense = form_costs(big, 16)
    assert fact < dense
    lin = DeButLinear(4608, 512, big)
    assert lin.form(16) == "factors"
    lin.mode = "dense"
    assert lin.form(16) == "dense"
    with pytest.raises(ValueError):
        lin.mode = "fast"


def test_mode_is_not_state_and_survives_pickle():
    lin = DeButLinear(12, 8, [[8, 12, 2, 3, 1]], mode="dense")
    assert set(lin.state_dict()) == {"weights.0", "bias"}
    again = pickle.loads(pickle.dumps(lin))
    assert again.mode == "dense"
    del again.__dict__["_mode"]          # a module pickled before the attribute existed
    assert again.mode == "auto"

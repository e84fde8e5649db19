"""Quantisation-aware fine-tuning (litefly.qat): the simulated grids are the int8 export's."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from litefly.chain import Factor, SparseFactor
from litefly.errors import ConfigError
from litefly.export import FlattenHWC, export_int8, int8_forward
from litefly.nn import DeButConv2d, DeButLinear
from litefly.qat import attach_fake_quant, detach_fake_quant, qat_distill

torch.set_num_threads(1)


def _model(rng: np.random.Generator) -> nn.Module:
    """conv (DeBut chain) relu pool, conv (a sparse factor, then a concat sparse factor) relu,
    flatten, linear (DeBut chain, no bias): float64, random weights."""
    sparse1 = SparseFactor.from_mask(rng.random((24, 72)) < 0.3)
    sparse2 = SparseFactor.from_mask(rng.random((16, 72 + 24)) < 0.2, concat=True)
    m = nn.Sequential(OrderedDict(
        conv1=DeButConv2d(2, 8, 3, [Factor(12, 18, 2, 3, 2), Factor(8, 12, 2, 3, 1)], padding=1),
        relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=DeButConv2d(8, 16, 3, [sparse1, sparse2], padding=1), relu2=nn.ReLU(),
        flatten=FlattenHWC(), fc=DeButLinear(16 * 16, 10, [Factor(32, 256, 1, 8, 4), Factor(10, 32, 5, 16, 2)],
                                             bias=False)))
    return m.double()


def test_fake_quant_forward_is_the_int8_golden_network():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = _model(rng)
    calib, test = torch.randn(64, 2, 8, 8, dtype=torch.float64), torch.randn(40, 2, 8, 8, dtype=torch.float64)
    params = attach_fake_quant(model, calib)
    assert all(m.fake_quant is not None and m.form(10 ** 6) == "factors"
               for m in model.modules() if isinstance(m, (DeButConv2d, DeButLinear)))
    with torch.no_grad():
        fq = model(test).numpy()
    detach_fake_quant(model)
    network, again = export_int8(model, calib, equalize=False)      # the factors are already equalised
    assert all(np.array_equal(a, b) for n in params for a, b in zip(params[n].weights, again[n].weights))
    golden = int8_forward(network, again, test.numpy())
    lsb = again["fc"].out_scale
    assert np.max(np.abs(fq - golden)) <= lsb * (1 + 1e-9)
    assert np.mean(np.abs(fq - golden) < 1e-9 * lsb) >= 0.98, "the fake quantisation is not the int8 arithmetic"


def test_qat_distill_trains_through_the_grids_and_detaches():
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    student, teacher = _model(rng), _model(rng)
    x = torch.randn(48, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 10, (48,))
    before = [w.detach().clone() for w in student.fc.weights]
    seen = []
    fc_forward = student.fc.forward

    def spy(inp):
        seen.append(student.fc.fake_quant is not None)
        return fc_forward(inp)
    student.fc.forward = spy
    losses = qat_distill(student, teacher, x, y, epochs=2, batch_size=16, lr=1e-2, seed=0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert seen and all(seen), "training ran without the fake quantisation"
    assert any(not torch.equal(a, b) for a, b in zip(before, student.fc.weights)), "no weight moved"
    assert all(m.fake_quant is None for m in student.modules() if isinstance(m, (DeButConv2d, DeButLinear)))


def test_qat_refuses_batch_norm_and_zero_epochs_in_one_line():
    rng = np.random.default_rng(2)
    model = nn.Sequential(DeButConv2d(2, 8, 3, [Factor(12, 18, 2, 3, 2), Factor(8, 12, 2, 3, 1)]),
                          nn.BatchNorm2d(8)).double()
    with pytest.raises(ConfigError, match=r"^qat: the model has batch norm; fold it .*fold_batchnorm") as e:
        attach_fake_quant(model, torch.randn(4, 2, 8, 8, dtype=torch.float64))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^qat: epochs=0 must be at least 1$"):
        qat_distill(_model(rng), _model(rng), torch.randn(4, 2, 8, 8), torch.zeros(4, dtype=torch.long), 0)


def test_fold_batchnorms_gives_the_same_eval_function_without_batch_norm():
    from litefly.fold import fold_batchnorms
    torch.manual_seed(3)
    model = nn.Sequential(DeButConv2d(2, 8, 3, [Factor(12, 18, 2, 3, 2), Factor(8, 12, 2, 3, 1)]), nn.BatchNorm2d(8),
                          nn.ReLU(), FlattenHWC(), DeButLinear(8 * 36, 10, [Factor(10, 288, 10, 288, 1)]),
                          nn.BatchNorm1d(10)).double()
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 2, 8, 8, dtype=torch.float64))           # running statistics
    model.eval()
    folded = fold_batchnorms(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())      # a copy
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-10)
    attach_fake_quant(folded, x)

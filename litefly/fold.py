"""Fold an eval-mode batch norm into the DeBut layer before it.

In eval mode ``BatchNorm(z) = a * z + c`` per channel, with ``a = gamma / sqrt(var + eps)`` and
``c = beta - a * mean``. For ``z = R_N ... R_1 x + b`` this is ``(diag(a) R_N) ... R_1 x + (a*b + c)``:
the last factor's rows are scaled by ``a`` (row ``j*r*t + i*t + u`` of ``R_N`` is the compact
entry ``[j, u, i, :]``; a sparse factor's rows are its CSR rows) and the bias becomes ``a*b + c`` (created if the layer had none). The
other factors are unchanged, so the chain and the engine configuration stay the same.

``BatchNorm2d`` folds into a ``DeButConv2d`` (channels = output channels), ``BatchNorm1d`` into
a ``DeButLinear`` on ``(N, C)`` input (features = output features).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import ConfigError
from .nn import DeButConv2d, DeButLinear

__all__ = ["fold_batchnorm", "fold_batchnorms", "batchnorm_affine"]


def batchnorm_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode batch norm as ``(scale, shift)`` per channel (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(f"fold: {type(bn).__name__} has no running statistics (track_running_stats=False); "
                          f"its eval-mode output depends on the batch and cannot be folded")
    var = bn.running_var.detach().double()
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -scale * bn.running_mean.detach().double()
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def fold_batchnorm(layer: DeButConv2d | DeButLinear, bn: nn.modules.batchnorm._BatchNorm
                   ) -> DeButConv2d | DeButLinear:
    """A new DeBut layer equal to ``bn(layer(x))`` with ``bn`` in eval mode (inputs are not changed)."""
    if isinstance(layer, DeButConv2d):
        if not isinstance(bn, nn.BatchNorm2d):
            raise ConfigError(f"fold: a DeButConv2d folds a BatchNorm2d, not {type(bn).__name__}")
    elif isinstance(layer, DeButLinear):
        if not isinstance(bn, nn.BatchNorm1d):
            raise ConfigError(f"fold: a DeButLinear folds a BatchNorm1d, not {type(bn).__name__}")
    else:
        raise ConfigError(f"fold: {type(layer).__name__} is not a DeBut layer")
    out = layer.chain[-1].p
    if bn.num_features != out:
        raise ConfigError(f"fold: {type(bn).__name__} has {bn.num_features} channels, the layer gives {out}")
    scale, shift = batchnorm_affine(bn)
    new = copy.deepcopy(layer)
    last = new.chain[-1]
    rows = torch.as_tensor(last.nonzero_indices()[0])                          # each compact entry's row
    row_scale = scale[rows].reshape(last.compact_shape)
    with torch.no_grad():
        w = new.weights[-1]
        w.copy_((w.detach().double() * row_scale).to(w.dtype))
        bias = shift if layer.bias is None else scale * layer.bias.detach().double() + shift
        if new.bias is None:
            new.bias = nn.Parameter(bias.to(w.dtype))
        else:
            new.bias.copy_(bias.to(new.bias.dtype))
    return new


def fold_batchnorms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every batch norm applied directly to a DeBut layer's output
    (and to nothing else) is folded into that layer (:func:`fold_batchnorm`) and replaced by
    ``nn.Identity``: the same eval-mode function, as the int8 export sees it."""
    import torch.fx

    from .export import _Tracer
    model = copy.deepcopy(model).eval()
    graph = _Tracer().trace(model)
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(bn := model.get_submodule(node.target),
                                                        nn.modules.batchnorm._BatchNorm):
            continue
        src = node.args[0]
        if isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1 and \
                isinstance(layer := model.get_submodule(src.target), (DeButConv2d, DeButLinear)):
            model.set_submodule(src.target, fold_batchnorm(layer, bn))
            model.set_submodule(node.target, nn.Identity())
    return model

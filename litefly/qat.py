"""Quantisation-aware fine-tuning: DeBut layers trained with the int8 engine's rounding simulated.

The int8 export (:func:`litefly.export.export_int8`) fixes, per layer, the input scale, each
factor's weight scale and each factor's output scale (the accumulator scale times a power of two,
the engine's shift). :class:`FakeQuant` applies exactly those grids in the float forward: the
layer input, every factor's weights and every factor's output are rounded half up and saturated
to the signed range (the bias at the last factor's accumulator scale), with straight-through
gradients. :func:`qat_distill` re-exports the student before every epoch to refresh the grids
(the factors are first equalised in place, :func:`litefly.fixed.equalize_factors`, so the export's
equalisation does not move them) and fine-tunes it with distillation through them.

What the simulation leaves out: the residual add's alignment (``M / 2^K``) and the host's global
pooling round to the next layer's input grid, which the input rounding here covers, but not
their saturation; batch norm must be folded first (:func:`litefly.fold.fold_batchnorm`), since
the export quantises the folded layer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .convert import distill
from .errors import ConfigError
from .export import export_int8
from .fixed import QuantizedLayer, equalize_factors, int_range
from .nn import DeButConv2d, DeButLinear, _apply

__all__ = ["FakeQuant", "attach_fake_quant", "detach_fake_quant", "equalize_model_", "qat_distill"]


_HALF_UP = 0.5 + 1e-7


def _round_ste(x: torch.Tensor, scale: torch.Tensor | float, bits: int) -> torch.Tensor:
    """``clamp(floor(x / scale + 1/2)) * scale`` forward, identity gradient (straight-through). A
    value a float rounding error below a tie still rounds up, as the engine's integer ties do."""
    lo, hi = int_range(bits)
    q = torch.clamp(torch.floor(x / scale + _HALF_UP), lo, hi) * scale
    return x + (q - x).detach()


class FakeQuant:
    """One layer's int8 grids from its :class:`~litefly.fixed.QuantizedLayer`, applied in the float
    forward (call it with the module and its im2col rows)."""

    def __init__(self, q: QuantizedLayer, dtype: torch.dtype = torch.float32) -> None:
        fmt = q.layer.format
        self.act_bits, self.weight_bits, self.bias_bits = fmt.act_bits, fmt.weight_bits, fmt.bias_bits
        self.in_scale = float(q.act_scales[0])
        self.out_scales = [float(s) for s in q.act_scales[1:]]
        self.weight_scales = [torch.as_tensor(a, dtype=dtype) for a in q.weight_scale_arrays()]
        self.bias_scale = float(q.act_scales[-1]) / (1 << q.shifts[-1])    # the last accumulator's
        self.name = q.layer.name

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        chain = module.chain
        if len(chain) != len(self.out_scales):
            raise ConfigError(f"qat: layer {self.name!r} has {len(chain)} factors, its grids {len(self.out_scales)}")
        x0 = y = _round_ste(x, self.in_scale, self.act_bits)
        for i, (f, w) in enumerate(zip(chain, module.weights)):
            wq = _round_ste(w, self.weight_scales[i].to(w.dtype), self.weight_bits)
            y = _apply(f, wq, torch.cat([x0, y], dim=1) if f.concat else y)
            if i == len(chain) - 1 and module.bias is not None:
                y = y + _round_ste(module.bias, self.bias_scale, self.bias_bits)
            y = _round_ste(y, self.out_scales[i], self.act_bits)
        return y


def _debut_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (DeButConv2d, DeButLinear))]


@torch.no_grad()
def equalize_model_(model: nn.Module) -> None:
    """Equalise every DeBut layer's factors in place (:func:`litefly.fixed.equalize_factors`; each
    layer's product, so the float model, is unchanged)."""
    for m in _debut_modules(model):
        for w, new in zip(m.weights, equalize_factors(m.chain, m.compact_numpy())):
            w.copy_(torch.as_tensor(new, dtype=w.dtype))


def attach_fake_quant(model: nn.Module, calib_x: torch.Tensor | np.ndarray, calibration: str = "max"
                      ) -> dict[str, QuantizedLayer]:
    """Equalise the factors (:func:`equalize_model_`), export int8 calibrated on ``calib_x`` and
    attach each layer's :class:`FakeQuant`; returns the export's parameters."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError("qat: the model has batch norm; fold it into the DeBut layers first "
                          "(litefly.fold.fold_batchnorm), as the int8 export does")
    equalize_model_(model)
    modules: dict[str, nn.Module] = {}
    _, params = export_int8(model, calib_x, equalize=False, calibration=calibration, modules=modules)
    dtype = next(model.parameters()).dtype
    for name, m in modules.items():
        m.fake_quant = FakeQuant(params[name], dtype)
    return params


def detach_fake_quant(model: nn.Module) -> None:
    """Back to the float forward."""
    for m in _debut_modules(model):
        m.fake_quant = None


def qat_distill(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int,
                calib_x: torch.Tensor | None = None, calibration: str = "max", progress: bool = False,
                log: Callable[[str], None] | None = None, **distill_kw: Any) -> Sequence[float]:
    """Distil ``student`` from ``teacher`` for ``epochs`` epochs through the int8 grids
    (:func:`attach_fake_quant` on ``calib_x``, the training inputs unless given, before every
    epoch); the student is left equalised, with the float forward. ``distill_kw``: as
    :func:`litefly.convert.distill` (``batch_size``, ``lr``, ``temperature``, ``alpha``, ``seed``)."""
    if epochs < 1:
        raise ConfigError(f"qat: epochs={epochs} must be at least 1")
    calib = x if calib_x is None else calib_x
    try:
        return distill(student, teacher, x, y, epochs=epochs, log=log, progress=progress, desc="qat",
                       on_epoch=lambda _: attach_fake_quant(student, calib, calibration), **distill_kw)
    finally:
        detach_fake_quant(student)

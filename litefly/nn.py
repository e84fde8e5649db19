"""Float golden model in PyTorch: ``DeButLinear`` and ``DeButConv2d``.

Each factor's weights are a parameter in the reference code's compact layout
``(q/(s*t), t, r, s)``; a sparse factor (:class:`~litefly.chain.SparseFactor`, e.g. a pruned one)
holds its ``nnz`` weights in its row-major CSR order, and a ``concat`` factor reads
``[layer input ; previous factor's output]``. The forward pass has two exact forms (same result
to float rounding, gradients reach the factors in both):

* ``"factors"``: one einsum per DeBut factor over the rows (im2col rows for a convolution), one
  GEMM with the scattered ``p x q`` matrix per sparse factor;
* ``"dense"``: the dense ``p x q`` weight is formed from the factors (the chain applied to an
  identity matrix of size ``min(p, q)``: ``min(p, q) * sum(p_i s_i)`` MACs) and the layer calls
  ``F.linear``/``F.conv2d``.

``mode="auto"`` (default) picks per call from a deterministic cost model of the shapes only
(:func:`choose_form`), so the same shapes always take the same form.

Convolution im2col ordering (as the reference code): ``F.unfold`` columns are reordered
so the flattened input index is ``kernel_position * in_channels + channel`` (kernel
position outer, row-major over (kh, kw); channel inner), one row per output pixel.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .chain import AnyFactor, chain_params, validate_chain
from .config import LayerConfig
from .errors import ShapeError

__all__ = ["DeButLinear", "DeButConv2d", "debut_chain_forward", "debut_chain_transpose", "chain_dense_matrix",
           "factor_dense_torch", "choose_form", "form_costs", "from_layer", "debut_like", "MODES"]

MODES = ("auto", "factors", "dense")


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _apply(f: AnyFactor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x @ R^T`` for rows of ``x`` (shape ``(n, q)``): one einsum for a DeBut factor, a GEMM with
    the dense ``p x q`` matrix (scattered from the ``nnz`` weights) for a sparse factor."""
    if f.kind == "sparse":
        return x @ factor_dense_torch(f, w).t()
    g, t, r, s = f.compact_shape
    return torch.einsum("gtrb,ngbt->ngrt", w, x.reshape(x.shape[0], g, s, t)).reshape(x.shape[0], f.p)


def _apply_t(f: AnyFactor, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x @ R`` for rows of ``x`` (shape ``(n, p)``)."""
    if f.kind == "sparse":
        return x @ factor_dense_torch(f, w)
    g, t, r, s = f.compact_shape
    return torch.einsum("gtrb,ngrt->ngbt", w, x.reshape(x.shape[0], g, r, t)).reshape(x.shape[0], f.q)


def debut_chain_forward(x: torch.Tensor, chain: Sequence[AnyFactor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply the chain to rows of ``x`` (shape ``(n, q_1)``); a concat factor reads ``[x ; previous]``."""
    x0 = x
    for f, w in zip(chain, weights):
        x = _apply(f, w, torch.cat([x0, x], dim=1) if f.concat else x)
    return x


def debut_chain_transpose(x: torch.Tensor, chain: Sequence[AnyFactor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Apply the transposed chain ``R_1^T ... R_N^T`` to rows of ``x`` (shape ``(n, p_N)``); a concat
    factor's columns on the layer input go straight to the result."""
    q0 = chain[0].q
    direct = None
    for f, w in zip(reversed(chain), reversed(list(weights))):
        x = _apply_t(f, w, x)
        if f.concat:
            direct = x[:, :q0] if direct is None else direct + x[:, :q0]
            x = x[:, q0:]
    return x if direct is None else x + direct


def chain_dense_matrix(chain: Sequence[AnyFactor], weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """The product ``R_N ... R_1`` as a ``(p_N, q_1)`` matrix (differentiable), formed by applying
    the chain (or its transpose, whichever side is smaller) to an identity matrix."""
    p, q = chain[-1].p, chain[0].q
    w0 = weights[0]
    if p <= q:      # row i of M is M^T e_i
        return debut_chain_transpose(torch.eye(p, dtype=w0.dtype, device=w0.device), chain, weights)
    return debut_chain_forward(torch.eye(q, dtype=w0.dtype, device=w0.device), chain, weights).t()


# Cost model for choosing the form, in nanoseconds of forward+backward on one core; the
# constants are a least-squares fit to timings of torch 2.13 on this project's x86 CI machine
# (42 shapes per form, most within 25%; the factor path's MAC and traffic terms then raised
# 30% because its time grows faster than linearly once the intermediates leave the cache).
# Per factor, the einsum form costs a call overhead, its MACs and its n x (q_i + p_i)
# intermediate traffic (which dominates); the dense form costs forming the weight (a factor
# pass over min(p, q) identity rows) plus one GEMM/conv.
_C_CALL = 170_000.0     # per factor and call (einsum dispatch, reshapes, autograd nodes)
_C_FMAC = 0.30          # per factor-path MAC (small batched matmuls)
_C_FMEM = 7.0           # per intermediate element on the factor path
_C_DCALL = 110_000.0    # per dense GEMM/conv call
_C_DMAC = 0.07          # per dense GEMM/conv MAC
_C_DMEM = 0.57          # per input/output element of the dense GEMM


def form_costs(chain: Sequence[AnyFactor], n_rows: int) -> tuple[float, float]:
    """Modelled forward+backward time in ns ``(factors, dense)`` over ``n_rows`` rows (a sparse
    factor is a GEMM with its dense ``p x q`` matrix: ``p*q`` MACs at the dense rate)."""
    macs = sum(f.params * _C_FMAC if f.kind != "sparse" else f.p * f.q * _C_DMAC for f in chain)
    traffic = sum(f.p + f.q for f in chain)
    p, q = chain[-1].p, chain[0].q

    def factor_pass(n: int) -> float:
        return len(chain) * _C_CALL + n * (macs + traffic * _C_FMEM)

    dense = factor_pass(min(p, q)) + _C_DCALL + n_rows * (p * q * _C_DMAC + (p + q) * _C_DMEM)
    return factor_pass(n_rows), dense


def choose_form(chain: Sequence[AnyFactor], n_rows: int) -> str:
    """``"factors"`` or ``"dense"``: the cheaper form under :func:`form_costs` (deterministic)."""
    fact, dense = form_costs(chain, n_rows)
    return "dense" if dense < fact else "factors"


def factor_dense_torch(f: AnyFactor, w: torch.Tensor) -> torch.Tensor:
    """Dense p x q matrix of one factor (differentiable; a sparse factor's ``nnz`` weights in row order)."""
    rows, cols = f.nonzero_indices()
    dense = w.new_zeros(f.p, f.q)
    dense[torch.as_tensor(rows), torch.as_tensor(cols)] = w.reshape(-1)
    return dense


class _DeButChain(nn.Module):
    def __init__(self, chain: Sequence[AnyFactor | Sequence[int] | dict], in_size: int, out_size: int, bias: bool,
                 mode: str = "auto") -> None:
        super().__init__()
        self.chain: tuple[AnyFactor, ...] = validate_chain(chain, in_size, out_size)
        self.mode = mode
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(f.compact_shape) / math.sqrt(f.s)) for f in self.chain)
        if bias:
            bound = 1 / math.sqrt(in_size)
            self.bias = nn.Parameter(torch.empty(out_size).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)

    @property
    def mode(self) -> str:
        """``"auto"`` (cost model per shape), ``"factors"`` or ``"dense"``: the forward's form."""
        return getattr(self, "_mode", "auto")       # modules pickled before the attribute existed

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode={value!r} must be one of {', '.join(MODES)}")
        self._mode = value

    def form(self, n_rows: int) -> str:
        """The form a forward over ``n_rows`` rows (im2col rows for a conv) uses (``"factors"``
        while a fake quantisation is attached: :mod:`litefly.qat`)."""
        if self.fake_quant is not None:
            return "factors"
        mode = self.mode
        return choose_form(self.chain, n_rows) if mode == "auto" else mode

    # -- counts ------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        """Chain parameters (no bias) = MACs per output column."""
        return chain_params(self.chain)

    @property
    def dense_params(self) -> int:
        return self.chain[-1].p * self.chain[0].q

    @property
    def compression(self) -> float:
        return 1.0 - self.num_params / self.dense_params

    # -- dense views ---------------------------------------------------------------
    def factor_matrices(self) -> list[torch.Tensor]:
        return [factor_dense_torch(f, w) for f, w in zip(self.chain, self.weights)]

    def dense_matrix(self) -> torch.Tensor:
        """The product ``R_N ... R_1`` as a (p_N, q_1) matrix (differentiable)."""
        return chain_dense_matrix(self.chain, list(self.weights))

    # -- the reference code's flat layout -------------------------------------------
    def reference_flat(self) -> torch.Tensor:
        """All factor weights as one flat vector (factor i owns the next p_i*s_i entries)."""
        return torch.cat([w.detach().reshape(-1) for w in self.weights])

    @torch.no_grad()
    def load_reference_flat(self, flat: torch.Tensor | np.ndarray) -> None:
        flat = torch.as_tensor(np.asarray(flat) if not isinstance(flat, torch.Tensor) else flat)
        if flat.ndim != 1 or flat.numel() != self.num_params:
            raise ShapeError(f"flat parameter vector has shape {tuple(flat.shape)}, expected ({self.num_params},)")
        off = 0
        for f, w in zip(self.chain, self.weights):
            w.copy_(flat[off:off + f.params].reshape(f.compact_shape))
            off += f.params

    def compact_numpy(self) -> list[np.ndarray]:
        return [w.detach().cpu().double().numpy() for w in self.weights]

    @property
    def fake_quant(self) -> Callable[["_DeButChain", torch.Tensor], torch.Tensor] | None:
        """When set, ``fake_quant(self, rows)`` computes the chain on im2col rows instead (the int8
        engine's rounding simulated, :class:`litefly.qat.FakeQuant`); ``None``: the float chain."""
        return getattr(self, "_fake_quant", None)   # modules pickled before the attribute existed

    @fake_quant.setter
    def fake_quant(self, value: Callable[["_DeButChain", torch.Tensor], torch.Tensor] | None) -> None:
        self._fake_quant = value

    def _chain_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake_quant is not None:
            return self.fake_quant(self, x)
        if self.form(x.shape[0]) == "dense":
            return F.linear(x, self.dense_matrix(), self.bias)
        y = debut_chain_forward(x, self.chain, self.weights)
        return y + self.bias if self.bias is not None else y


class DeButLinear(_DeButChain):
    """A drop-in ``nn.Linear`` replacement: ``y = R_N ... R_1 x + b`` over the last dimension."""

    def __init__(self, in_features: int, out_features: int, chain: Sequence[AnyFactor | Sequence[int] | dict],
                 bias: bool = True, mode: str = "auto") -> None:
        super().__init__(chain, in_features, out_features, bias, mode)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"DeButLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        lead = x.shape[:-1]
        return self._chain_forward(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, factors={len(self.chain)}, " \
               f"params={self.num_params} ({100 * self.compression:.1f}% compression)"


class DeButConv2d(_DeButChain):
    """A drop-in ``nn.Conv2d`` replacement (groups=1) computing im2col, then the chain."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 chain: Sequence[AnyFactor | Sequence[int] | dict], stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, bias: bool = True,
                 mode: str = "auto") -> None:
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        k = self.kernel_size[0] * self.kernel_size[1]
        super().__init__(chain, k * in_channels, out_channels, bias, mode)
        self.in_channels, self.out_channels = in_channels, out_channels

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel_size, self.stride, self.padding, self.dilation
        return ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def im2col(self, x: torch.Tensor) -> torch.Tensor:
        """Rows ``(batch*h_out*w_out, k*k*c_in)`` in the reference ordering."""
        b, c, h, w = x.shape
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)   # (b, c*k, L)
        k = self.kernel_size[0] * self.kernel_size[1]
        return cols.reshape(b, c, k, -1).permute(0, 3, 2, 1).reshape(-1, k * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"DeButConv2d: input has shape {tuple(x.shape)}, expected (N, {self.in_channels}, H, W)")
        b, _, h, w = x.shape
        ho, wo = self.output_size(h, w)
        if self.form(b * ho * wo) == "dense":
            return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation)
        y = self._chain_forward(self.im2col(x))
        return y.reshape(b, ho * wo, self.out_channels).transpose(1, 2).reshape(b, self.out_channels, ho, wo)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``nn.Conv2d`` weight ``(c_out, c_in, kh, kw)``."""
        m = self.dense_matrix()
        kh, kw = self.kernel_size
        return m.reshape(self.out_channels, kh, kw, self.in_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, " \
               f"padding={self.padding}, factors={len(self.chain)}, params={self.num_params} " \
               f"({100 * self.compression:.1f}% compression)"


def from_layer(layer: LayerConfig) -> DeButLinear | DeButConv2d:
    """Build the float module a layer config describes."""
    if layer.kind == "linear":
        return DeButLinear(layer.in_features, layer.out_features, layer.chain, bias=layer.format.bias)
    return DeButConv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.chain, stride=layer.stride,
                       padding=layer.padding, dilation=layer.dilation, bias=layer.format.bias)


def debut_like(mod: nn.Module, chain: Sequence[AnyFactor], weights: Sequence[np.ndarray | torch.Tensor],
               dtype: torch.dtype | None = None) -> DeButLinear | DeButConv2d:
    """A DeBut layer in ``mod``'s place (an ``nn.Conv2d``/``nn.Linear`` or a DeBut layer: the same
    geometry) over ``chain`` with compact ``weights``, ``mod``'s bias copied and its train mode;
    cast to ``dtype`` first when given."""
    bias = mod.bias is not None
    if isinstance(mod, (nn.Conv2d, DeButConv2d)):
        new: DeButLinear | DeButConv2d = DeButConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, chain,
                                                     stride=mod.stride, padding=mod.padding, dilation=mod.dilation,
                                                     bias=bias)
    else:
        new = DeButLinear(mod.in_features, mod.out_features, chain, bias=bias)
    if dtype is not None:
        new = new.to(dtype)
    with torch.no_grad():
        for param, w in zip(new.weights, weights):
            param.copy_(torch.as_tensor(w, dtype=param.dtype).reshape(param.shape))
        if bias:
            new.bias.copy_(mod.bias.detach())
    new.train(mod.training)
    return new

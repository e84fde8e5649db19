"""Pixelated Butterfly (Pixelfly, Chen et al. 2022) as a litefly chain: y = S x + U (V x).

* ``S`` has the **flat block butterfly** mask: the sum (union of patterns) of the butterfly
  factors of a ``B x B`` butterfly (``B`` = butterfly size, a power of two) with strides
  ``1, 2, ..., 2^(k-1)`` (``k`` = ``n_factors``, the chosen number of levels), each entry
  blown up to a block. Entry ``(i, j)`` of the ``B x B`` layout is set iff ``i == j`` or
  ``i XOR j`` is one of those strides (:func:`flat_butterfly_layout`). For a ``p x q`` layer
  every layout entry becomes a ``(p/B) x (q/B)`` block (rectangular layers stretch the blocks,
  as the reference code does), optionally coarsened to a hardware tile (``block``).
* ``U V`` is a rank-``r`` term.

On the engine the layer is two factors (``docs/config.md``, "Sparse factors"): ``V``, an
``r x q`` sparse factor with every entry, then ``[S | U]``, one ``concat`` sparse factor over
``[x ; V x]``. :func:`fit_pixelfly` converts a dense weight (mask plus low-rank fit, alternating
the two exact partial minimisers); :class:`PixelflyLinear` trains the layer in torch and
exports the chain and float weights for :func:`litefly.fixed.quantize_layer`;
:func:`pixelfly_model` converts every Conv2d/Linear of a model (a conv through its im2col
matrix) into :class:`~litefly.nn.DeButConv2d`/:class:`~litefly.nn.DeButLinear` layers over Pixelfly
chains, which :func:`litefly.export.export_int8` exports (``litefly demo pixelfly``).

Checked against the published reference code (HazyResearch ``fly``:
``FlatBlockButterflySparsityConfig.make_layout`` and ``butterfly_factor_to_matrix``): the same
masks for the butterfly sizes, factor counts, blocks and rectangular shapes of its tests.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .chain import SparseFactor, validate_chain
from .config import EngineParams, LayerConfig, NumericFormat
from .errors import ConfigError

if TYPE_CHECKING:
    from .nn import DeButLinear

__all__ = ["flat_butterfly_layout", "flat_block_butterfly_mask", "pixelfly_mask", "pixelfly_chain",
           "pixelfly_weights", "split_pixelfly_weights", "PixelflyFit", "fit_pixelfly", "pixelfly_layer",
           "PixelflyLinear", "PixelflyConfig", "PixelflyReport", "pixelfly_model"]


def _pos_int(where: str, name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(f"{where}: {name}={v!r} must be a positive integer")
    return int(v)


def _log2_exact(where: str, name: str, n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ConfigError(f"{where}: {name}={n} must be a power of two")
    return n.bit_length() - 1


def flat_butterfly_layout(butterfly_size: int, n_factors: int | None = None) -> np.ndarray:
    """The ``B x B`` boolean pattern of the flat butterfly: the union of the patterns of the
    butterfly factors with strides ``2^0 .. 2^(n_factors-1)`` (default: all ``log2 B`` of them).

    A factor of stride ``d`` links ``i`` and ``j`` iff ``i == j`` or ``i XOR j == d``."""
    where = "flat butterfly"
    b = _pos_int(where, "butterfly_size", butterfly_size)
    levels = _log2_exact(where, "butterfly_size", b)
    k = levels if n_factors is None else _pos_int(where, "n_factors", n_factors)
    if k > levels:
        raise ConfigError(f"{where}: n_factors={k} must be in 1..log2(butterfly_size)={levels}")
    i = np.arange(b)
    x = i[:, None] ^ i[None, :]
    return (x == 0) | np.isin(x, [1 << e for e in range(k)])


def flat_block_butterfly_mask(out_features: int, in_features: int, butterfly_size: int,
                              n_factors: int | None = None, block: int | None = None) -> np.ndarray:
    """The ``out x in`` boolean mask: each entry of :func:`flat_butterfly_layout` becomes an
    ``(out/B) x (in/B)`` block; with ``block`` the mask is then widened to whole ``block x block``
    tiles (a tile is kept if any of its entries is), as a block-sparse kernel would store it."""
    where = "flat block butterfly"
    p, q = _pos_int(where, "out_features", out_features), _pos_int(where, "in_features", in_features)
    b = _pos_int(where, "butterfly_size", butterfly_size)
    if p % b or q % b:
        raise ConfigError(f"{where}: butterfly_size={b} must divide out_features={p} and in_features={q}")
    layout = flat_butterfly_layout(b, n_factors)
    mask = np.kron(layout, np.ones((p // b, q // b), dtype=bool)).astype(bool)
    if block is not None:
        t = _pos_int(where, "block", block)
        if p % t or q % t:
            raise ConfigError(f"{where}: block={t} must divide out_features={p} and in_features={q}")
        tiles = mask.reshape(p // t, t, q // t, t).any(axis=(1, 3))
        mask = np.kron(tiles, np.ones((t, t), dtype=bool)).astype(bool)
    return mask


def pixelfly_mask(out_features: int, in_features: int, block_size: int, n_factors: int | None = None,
                  pad: bool = False) -> np.ndarray:
    """Flat block butterfly at block size ``b``: ``B = min(out, in) / b`` blocks a side (a power of
    two), so the smaller side's blocks are ``b`` wide and the other side's are stretched.

    ``pad`` (a litefly extension for shapes the reference does not take, e.g. a 9-input conv or a
    10-class classifier): the smaller side is padded up to ``b * B`` with ``B`` the next power of
    two of ``ceil(min / b)``, the larger side up to a multiple of ``B``; the mask of the padded
    shape is cropped back to ``out x in``. ``n_factors`` is then capped at ``log2 B``, and
    ``B = 1`` (the smaller side fits in one block) is the dense mask. Shapes that need no padding
    give the same mask as without it."""
    where = "pixelfly mask"
    b = _pos_int(where, "block_size", block_size)
    p, q = _pos_int(where, "out_features", out_features), _pos_int(where, "in_features", in_features)
    small = min(p, q)
    if pad:
        if n_factors is not None:
            _pos_int(where, "n_factors", n_factors)
        bs = 1 << (-(-small // b) - 1).bit_length()
        if bs == 1:
            return np.ones((p, q), dtype=bool)
        k = None if n_factors is None else min(int(n_factors), bs.bit_length() - 1)
        pp, qq = (-(-p // bs) * bs, -(-q // bs) * bs)
        pp, qq = (bs * b, qq) if p <= q else (pp, bs * b)
        return flat_block_butterfly_mask(pp, qq, bs, k)[:p, :q]
    if small % b:
        raise ConfigError(f"{where}: block_size={b} must divide min(out_features, in_features)={small}")
    bs = small // b
    _log2_exact(where, "min(out, in)/block_size", bs)
    return flat_block_butterfly_mask(out_features, in_features, bs, n_factors)


def pixelfly_chain(mask: np.ndarray, rank: int) -> tuple:
    """The chain of ``S x + U (V x)``: ``V`` (``r x q``, every entry) then ``[S | U]`` over
    ``[x ; V x]`` (``S``'s pattern = ``mask``, ``U`` all entries). Rank 0: ``S`` alone."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.size:
        raise ConfigError(f"pixelfly chain: the mask must be a non-empty 2-D array, got shape {mask.shape}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise ConfigError(f"pixelfly chain: rank={rank!r} must be a non-negative integer")
    p, q = mask.shape
    if rank == 0:
        return validate_chain([SparseFactor.from_mask(mask)])
    v = SparseFactor.from_mask(np.ones((rank, q), dtype=bool))
    su = SparseFactor.from_mask(np.concatenate([mask, np.ones((p, rank), dtype=bool)], axis=1), concat=True)
    return validate_chain([v, su])


def pixelfly_weights(chain: Sequence, s_dense: np.ndarray, u: np.ndarray | None, v: np.ndarray | None
                     ) -> list[np.ndarray]:
    """Compact weights of :func:`pixelfly_chain` from dense ``S`` (read at the pattern, by structure),
    ``U`` (``p x r``) and ``V`` (``r x q``)."""
    s_dense = np.asarray(s_dense, dtype=np.float64)
    if len(chain) == 1:
        rows, cols = chain[0].nonzero_indices()
        return [s_dense[rows, cols]]
    su = np.concatenate([s_dense, np.asarray(u, dtype=np.float64)], axis=1)
    rows, cols = chain[1].nonzero_indices()
    vr, vc = chain[0].nonzero_indices()
    return [np.asarray(v, dtype=np.float64)[vr, vc], su[rows, cols]]


def split_pixelfly_weights(chain: Sequence, weights: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None,
                                                                                     np.ndarray | None]:
    """Inverse of :func:`pixelfly_weights`: dense ``S`` (zeros off the pattern), ``U``, ``V``."""
    last = chain[-1]
    q = chain[0].q
    m = np.zeros((last.p, last.q))
    rows, cols = last.nonzero_indices()
    m[rows, cols] = np.asarray(weights[-1], dtype=np.float64).ravel()
    if len(chain) == 1:
        return m, None, None
    v = np.zeros((chain[0].p, q))
    vr, vc = chain[0].nonzero_indices()
    v[vr, vc] = np.asarray(weights[0], dtype=np.float64).ravel()
    return m[:, :q], m[:, q:], v


@dataclass
class PixelflyFit:
    """A dense weight fitted as ``S + U V``: the chain, its compact float weights and the fit's
    relative Frobenius error ``||W - (S + U V)|| / ||W||`` after each sweep."""

    chain: tuple
    weights: list[np.ndarray]
    mask: np.ndarray
    rank: int
    errors: list[float]

    @property
    def rel_error(self) -> float:
        return self.errors[-1]

    @property
    def params(self) -> int:
        return sum(f.params for f in self.chain)


def _truncated(m: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Best rank-``rank`` ``U V`` of ``m`` (Eckart-Young), singular values split evenly."""
    uu, sv, vt = np.linalg.svd(m, full_matrices=False)
    root = np.sqrt(sv[:rank])
    return uu[:, :rank] * root, root[:, None] * vt[:rank]


def fit_pixelfly(weight: np.ndarray, mask: np.ndarray, rank: int, sweeps: int = 10) -> PixelflyFit:
    """Fit ``W ~ S + U V`` (``S`` on ``mask``, ``U V`` of rank ``rank``) by alternating the exact
    minimisers: ``S = (W - U V)`` on the mask, then ``U V`` = the truncated SVD of ``W - S``.
    Starts from ``S = W`` on the mask; the error never increases from sweep to sweep."""
    w = np.asarray(weight, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if w.ndim != 2 or mask.shape != w.shape:
        raise ConfigError(f"pixelfly fit: weight shape {w.shape} and mask shape {mask.shape} must be one 2-D shape")
    if not np.isfinite(w).all():
        raise ConfigError("pixelfly fit: the weight holds NaN or infinity")
    chain = pixelfly_chain(mask, rank)
    if rank > min(w.shape):
        raise ConfigError(f"pixelfly fit: rank={rank} is above min(out, in)={min(w.shape)}")
    norm = float(np.linalg.norm(w)) or 1.0
    lr = np.zeros_like(w)
    u = v = None
    errors = []
    for _ in range(max(1, int(sweeps)) if rank else 1):
        s = np.where(mask, w - lr, 0.0)
        if rank:
            u, v = _truncated(w - s, rank)
            lr = u @ v
        errors.append(float(np.linalg.norm(w - s - lr)) / norm)
    if rank:      # a final S for the last U V (exact on the mask)
        s = np.where(mask, w - lr, 0.0)
        errors.append(float(np.linalg.norm(w - s - lr)) / norm)
    return PixelflyFit(chain, pixelfly_weights(chain, s, u, v), mask, int(rank), errors)


def pixelfly_layer(name: str, chain: Sequence, kind: str = "linear", in_features: int | None = None,
                   out_features: int | None = None, fmt: NumericFormat | None = None,
                   engine: EngineParams | None = None, **conv: object) -> LayerConfig:
    """A :class:`LayerConfig` of a Pixelfly chain (linear by default; for ``conv2d`` give
    ``in_features`` = in channels and the kernel etc. in ``conv``; the chain's input is then in
    litefly's im2col order)."""
    chain = tuple(chain)
    return LayerConfig(name=name, kind=kind, in_features=in_features or chain[0].q,
                       out_features=out_features or chain[-1].p, chain=chain,
                       format=fmt or NumericFormat(), engine=engine or EngineParams(), **conv)  # type: ignore[arg-type]


class PixelflyLinear(nn.Module):
    """A linear layer ``y = S x + U (V x) + b`` with ``S`` on a fixed flat block butterfly mask.

    Parameters: ``values`` (``S``'s entries on the mask, row-major order), ``u`` (``p x r``),
    ``v`` (``r x q``), ``bias``. :meth:`export` gives the chain and compact float weights
    (``litefly.fixed.quantize_layer`` takes them); :meth:`dense_weight` the ``p x q`` matrix.
    """

    def __init__(self, in_features: int, out_features: int, mask: np.ndarray, rank: int,
                 bias: bool = True) -> None:
        super().__init__()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (out_features, in_features):
            raise ConfigError(f"PixelflyLinear: mask shape {mask.shape} is not (out, in) = "
                              f"({out_features}, {in_features})")
        self.chain = pixelfly_chain(mask, rank)
        self.in_features, self.out_features, self.rank = in_features, out_features, int(rank)
        rows, cols = np.nonzero(mask)
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("cols", torch.as_tensor(cols, dtype=torch.long), persistent=False)
        fan = max(1, int(mask.sum(axis=1).max()) + rank)
        bound = 1.0 / math.sqrt(fan)
        self.values = nn.Parameter(torch.empty(rows.size).uniform_(-bound, bound))
        self.u = nn.Parameter(torch.empty(out_features, rank).uniform_(-bound, bound))
        self.v = nn.Parameter(torch.empty(rank, in_features).uniform_(-1 / math.sqrt(in_features),
                                                                     1 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._mask = mask

    @property
    def mask(self) -> np.ndarray:
        return self._mask

    def sparse_weight(self) -> torch.Tensor:
        s = torch.zeros(self.out_features, self.in_features, dtype=self.values.dtype, device=self.values.device)
        return s.index_put((self.rows, self.cols), self.values)

    def dense_weight(self) -> torch.Tensor:
        """``S + U V`` (differentiable)."""
        return self.sparse_weight() + self.u @ self.v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sparse_weight(), self.bias) + (x @ self.v.t()) @ self.u.t()

    @property
    def params(self) -> int:
        return sum(f.params for f in self.chain)

    @classmethod
    def from_dense(cls, linear: nn.Linear, mask: np.ndarray, rank: int, sweeps: int = 10
                   ) -> tuple["PixelflyLinear", PixelflyFit]:
        """Initialise from an ``nn.Linear`` by :func:`fit_pixelfly`; also returns the fit (its error)."""
        w = linear.weight.detach().double().cpu().numpy()
        fit = fit_pixelfly(w, mask, rank, sweeps)
        layer = cls(linear.in_features, linear.out_features, mask, rank, bias=linear.bias is not None)
        s, u, v = split_pixelfly_weights(fit.chain, fit.weights)
        with torch.no_grad():
            layer.values.copy_(torch.as_tensor(s[layer.rows.numpy(), layer.cols.numpy()]))
            if rank:
                layer.u.copy_(torch.as_tensor(u))
                layer.v.copy_(torch.as_tensor(v))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer, fit

    def export(self) -> tuple[tuple, list[np.ndarray], np.ndarray | None]:
        """``(chain, compact float64 weights, bias or None)`` for :func:`litefly.fixed.quantize_layer`."""
        s = self.sparse_weight().detach().double().cpu().numpy()
        u = self.u.detach().double().cpu().numpy()
        v = self.v.detach().double().cpu().numpy()
        bias = None if self.bias is None else self.bias.detach().double().cpu().numpy()
        return self.chain, pixelfly_weights(self.chain, s, u, v), bias

    def to_debut(self) -> "DeButLinear":
        """The same layer as a :class:`litefly.nn.DeButLinear` over the Pixelfly chain (which takes
        sparse and concat factors), e.g. to train or convert it with the rest of litefly's tools."""
        from .nn import DeButLinear
        chain, weights, bias = self.export()
        out = DeButLinear(self.in_features, self.out_features, chain, bias=bias is not None)
        out.load_reference_flat(np.concatenate([w.ravel() for w in weights]).astype(np.float32))
        if bias is not None:
            with torch.no_grad():
                out.bias.copy_(torch.as_tensor(bias))
        return out

    def layer_config(self, name: str, fmt: NumericFormat | None = None,
                     engine: EngineParams | None = None) -> LayerConfig:
        return pixelfly_layer(name, self.chain, "linear", self.in_features, self.out_features, fmt, engine)

    def extra_repr(self) -> str:
        dense = self.in_features * self.out_features
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"params={self.params} ({100 * self.params / dense:.1f}% of dense)")


# -- whole models ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelflyConfig:
    """How :func:`pixelfly_model` converts each layer: ``block_size`` and ``n_factors`` of
    :func:`pixelfly_mask` (with ``pad``, so any shape converts), the low-rank ``rank`` (capped at
    ``min(out, in)`` per layer; 0 where the mask is dense, e.g. a layer whose smaller side is one
    block), the ALS ``sweeps`` of :func:`fit_pixelfly`, ``layers`` (names or globs; None: every
    Conv2d and Linear)."""

    block_size: int = 1
    rank: int = 2
    n_factors: int | None = 2
    sweeps: int = 10
    layers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        where = "pixelfly"
        _pos_int(where, "block_size", self.block_size)
        if self.n_factors is not None:
            _pos_int(where, "n_factors", self.n_factors)
        _pos_int(where, "sweeps", self.sweeps)
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank < 0:
            raise ConfigError(f"{where}: rank={self.rank!r} must be a non-negative integer")


@dataclass
class PixelflyReport:
    """One converted layer: its ``p x q`` matrix (a conv's im2col matrix), the chain's parameters
    against the dense ones, the entries of ``S``, the rank and the fit's relative error."""

    name: str
    kind: str                  # conv2d | linear
    p: int
    q: int
    params: int
    dense_params: int
    sparse_entries: int
    rank: int
    rel_error: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pixelfly_model(model: nn.Module, config: PixelflyConfig | None = None,
                   example_input: torch.Tensor | None = None) -> tuple[nn.Module, list[PixelflyReport]]:
    """A copy of ``model`` with every selected ``nn.Conv2d``/``nn.Linear`` replaced by a
    :class:`~litefly.nn.DeButConv2d`/:class:`~litefly.nn.DeButLinear` over its Pixelfly chain
    (``V``, then ``[S | U]`` over ``[x ; V x]``), initialised by :func:`fit_pixelfly` from the dense
    weight (a conv's im2col matrix, kernel position outer, as :mod:`litefly.convert`; bias copied).
    ``example_input`` (one sample) lets a dense ``nn.Flatten -> nn.Linear`` become the engine's
    channels-last flatten first (:func:`litefly.convert.channels_last_flatten`). The result exports
    with :func:`litefly.export.export_int8` like any DeBut model."""
    from .convert import _dense_matrix, _set_module, channels_last_flatten, convertible_layers, select_layers
    from .nn import debut_like
    cfg = config or PixelflyConfig()
    model = copy.deepcopy(model).cpu()
    channels_last_flatten(model, example_input)
    layers = select_layers(convertible_layers(model), cfg.layers, "pixelfly", "Conv2d/Linear")
    if not layers:
        raise ConfigError("pixelfly: the model has no Conv2d or Linear layer to convert")
    reports = []
    for name, mod in layers:
        w = _dense_matrix(mod)
        p, q = w.shape
        mask = pixelfly_mask(p, q, cfg.block_size, cfg.n_factors, pad=True)
        rank = 0 if mask.all() else min(int(cfg.rank), p, q)       # a dense S needs no U V
        fit = fit_pixelfly(w, mask, rank, cfg.sweeps)
        _set_module(model, name, debut_like(mod, fit.chain, fit.weights, dtype=mod.weight.dtype))
        reports.append(PixelflyReport(name, "conv2d" if isinstance(mod, nn.Conv2d) else "linear", p, q,
                                      fit.params, p * q, int(mask.sum()), rank, fit.rel_error))
    return model, reports

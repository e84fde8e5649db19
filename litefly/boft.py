"""BOFT adapters (orthogonal butterfly fine-tuning, PEFT's ``boft``) as litefly chains.

PEFT's convention (``peft/tuners/boft/layer.py``, checked against PEFT 0.21): an adapter holds
``boft_R`` of shape ``(m, D, b, b)`` (``m`` butterfly factors, ``D`` blocks of ``b x b``),
``boft_s`` (one scale per output) and fixed permutations ``P_k`` (``boft_P``, PEFT's
``block_butterfly_perm``; ``P_0`` is the identity). With ``Q = Cayley(R) = (I - A)(I + A)^-1``,
``A = (R - R^T)/2``, per block, ``D_k = blockdiag(Q_k1..Q_kD)`` and ``B_k = P_k D_k P_k^T``:

* rotation ``R_tot = B_{m-1} ... B_1 B_0``;
* merged weight ``W' = diag(s) W R_tot^T`` (``W`` the frozen ``out x in`` weight; for a conv the
  ``out x (c_in*kh*kw)`` view in torch's order), bias unchanged.

So ``y = s * (W (B_0^T (B_1^T ... (B_{m-1}^T x)))) + b``: the chain is the ``m`` rotation factors
``B_k^T = P_k D_k^T P_k^T`` (each a sparse factor of ``D b^2`` entries, both permutations folded
into its row and column indices; for a conv also the reordering from torch's
``channel * k*k + kernel_position`` to litefly's ``kernel_position * c_in + channel``), then the
frozen layer (a dense factor, or any frozen litefly chain), then ``diag(s)`` as an ``out x out``
sparse factor (``scale="factor"``, the default: the frozen factors' parameters are then the same
for every adapter) or folded into the frozen last factor's rows (``scale="fold"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .chain import AnyFactor, Factor, SparseFactor, validate_chain
from .config import EngineParams, LayerConfig, NumericFormat
from .errors import ConfigError

__all__ = ["cayley", "boft_permutation", "BoftAdapter", "rotation_factors", "boft_chain", "adapter_from_peft",
           "frozen_from_torch", "import_boft", "torch_to_litefly_order", "switch_report", "SCALE_MODES"]

SCALE_MODES = ("factor", "fold")


def cayley(r: np.ndarray) -> np.ndarray:
    """PEFT's Cayley map of each ``b x b`` matrix in ``r`` (``(..., b, b)``), in float64:
    ``Q = (I - A)(I + A)^-1`` with ``A = (R - R^T) / 2`` (orthogonal)."""
    r = np.asarray(r, dtype=np.float64)
    a = 0.5 * (r - np.swapaxes(r, -1, -2))
    eye = np.broadcast_to(np.eye(r.shape[-1]), r.shape)
    # Q (I + A) = (I - A)  <=>  (I + A)^T Q^T = (I - A)^T
    qt = np.linalg.solve(np.swapaxes(eye + a, -1, -2), np.swapaxes(eye - a, -1, -2))
    return np.swapaxes(qt, -1, -2)


def boft_permutation(n: int, block_num: int, block_size: int, level: int, n_levels: int) -> np.ndarray:
    """PEFT's butterfly permutation of factor ``level`` (0-based) of ``n_levels``, as indices:
    ``(P x)[i] = x[idx[i]]``. Identity when ``n_levels == 1``. Otherwise, within each chunk of
    ``block_size * 2^level`` entries, the half-blocks (``block_size / 2`` entries each) are
    reordered even-numbered first, then odd-numbered."""
    if n_levels == 1:
        return np.arange(n)
    half = block_size // 2
    chunk = n // (block_num // (1 << level))
    if block_size % 2 or chunk % half or n % chunk:
        raise ConfigError(f"BOFT permutation: n={n}, block_size={block_size}, level {level}: sizes do not divide")
    parts = chunk // half
    order = np.concatenate([np.arange(0, parts, 2), np.arange(1, parts, 2)])
    within = (order[:, None] * half + np.arange(half)[None, :]).ravel()
    return (np.arange(0, n, chunk)[:, None] + within[None, :]).ravel()


def torch_to_litefly_order(in_channels: int, kernel: tuple[int, int]) -> np.ndarray:
    """``order[l]`` = torch's flat index (``channel * kh*kw + kernel_position``) of litefly's im2col
    index ``l = kernel_position * in_channels + channel``."""
    k = kernel[0] * kernel[1]
    pos, ch = np.divmod(np.arange(k * in_channels), in_channels)
    return ch * k + pos


@dataclass
class BoftAdapter:
    """One BOFT adapter of one layer: ``r`` ``(m, D, b, b)`` (PEFT's ``boft_R``), ``s`` (``out``),
    ``perms`` ``(m, n)`` (indices, :func:`boft_permutation`)."""

    r: np.ndarray
    s: np.ndarray
    perms: np.ndarray

    def __post_init__(self) -> None:
        self.r = np.asarray(self.r, dtype=np.float64)
        self.s = np.asarray(self.s, dtype=np.float64).ravel()
        self.perms = np.asarray(self.perms, dtype=np.int64)
        if self.r.ndim != 4 or self.r.shape[2] != self.r.shape[3]:
            raise ConfigError(f"BOFT adapter: boft_R has shape {self.r.shape}, expected (m, blocks, b, b)")
        m, d, b, _ = self.r.shape
        if self.perms.shape != (m, d * b):
            raise ConfigError(f"BOFT adapter: permutations have shape {self.perms.shape}, expected ({m}, {d * b})")
        for k, p in enumerate(self.perms):
            if not np.array_equal(np.sort(p), np.arange(d * b)):
                raise ConfigError(f"BOFT adapter: permutation {k} is not a permutation of 0..{d * b - 1}")
        if not (np.isfinite(self.r).all() and np.isfinite(self.s).all()):
            raise ConfigError("BOFT adapter: boft_R or boft_s holds NaN or infinity")

    @property
    def n(self) -> int:
        return self.r.shape[1] * self.r.shape[2]

    @classmethod
    def from_params(cls, boft_r: np.ndarray, boft_s: np.ndarray) -> "BoftAdapter":
        """From the saved parameters alone (``boft_P`` is not saved): the permutations recomputed."""
        r = np.asarray(boft_r, dtype=np.float64)
        if r.ndim != 4:
            raise ConfigError(f"BOFT adapter: boft_R has shape {r.shape}, expected (m, blocks, b, b)")
        m, d, b, _ = r.shape
        return cls(r, boft_s, np.stack([boft_permutation(d * b, d, b, k, m) for k in range(m)]))

    def rotation(self) -> np.ndarray:
        """``R_tot = B_{m-1} ... B_0`` as a dense ``n x n`` matrix (float64; for checks)."""
        q = cayley(self.r)
        out = np.eye(self.n)
        for k in range(self.r.shape[0]):
            d = np.zeros((self.n, self.n))
            for j, blk in enumerate(q[k]):
                b = blk.shape[0]
                d[j * b:(j + 1) * b, j * b:(j + 1) * b] = blk
            p = self.perms[k]
            out = d[np.ix_(p, p)] @ out     # P D P^T: (P D P^T)[i, j] = D[p[i], p[j]]
        return out


def rotation_factors(adapter: BoftAdapter, order: np.ndarray | None = None) -> list[tuple[SparseFactor, np.ndarray]]:
    """The factors of ``R_tot^T`` in application order (``B_{m-1}^T`` first), each with its compact
    weights. ``order`` (litefly index -> torch index, :func:`torch_to_litefly_order`) relabels rows
    and columns so the factors act on litefly's im2col order."""
    n = adapter.n
    inv_order = np.arange(n) if order is None else np.argsort(np.asarray(order))
    q = cayley(adapter.r)
    m, d, b, _ = q.shape
    blk, a, c = np.meshgrid(np.arange(d), np.arange(b), np.arange(b), indexing="ij")
    x, y = (blk * b + a).ravel(), (blk * b + c).ravel()        # D^T[x, y] = Q[blk][c, a]
    out = []
    for k in reversed(range(m)):
        vals = q[k][blk.ravel(), c.ravel(), a.ravel()]
        inv_p = np.argsort(adapter.perms[k])                     # (P M P^T)[i, j] = M[p[i], p[j]]
        rows, cols = inv_order[inv_p[x]], inv_order[inv_p[y]]
        idx = np.lexsort((cols, rows))
        rows, cols, vals = rows[idx], cols[idx], vals[idx]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        out.append((SparseFactor.validated(n, n, indptr, cols), vals))
    return out


def _diag_factor(n: int) -> SparseFactor:
    return SparseFactor(n, n, np.arange(n + 1), np.arange(n))


def boft_chain(adapter: BoftAdapter, frozen_chain: Sequence[AnyFactor], frozen_weights: Sequence[np.ndarray],
               scale: str = "factor", order: np.ndarray | None = None) -> tuple[tuple, list[np.ndarray], int]:
    """``(chain, compact float weights, number of rotation factors)`` of ``diag(s) F R_tot^T``,
    ``F`` the frozen chain (input in litefly's order; ``order`` as in :func:`rotation_factors`)."""
    if scale not in SCALE_MODES:
        raise ConfigError(f"BOFT: scale={scale!r} must be one of {', '.join(SCALE_MODES)}")
    frozen_chain = validate_chain(frozen_chain)
    if len(frozen_weights) != len(frozen_chain):
        raise ConfigError(f"BOFT: {len(frozen_weights)} frozen weight arrays for {len(frozen_chain)} factors")
    if frozen_chain[0].q != adapter.n:
        raise ConfigError(f"BOFT: the adapter rotates {adapter.n} inputs, the frozen layer reads {frozen_chain[0].q}")
    if any(f.concat for f in frozen_chain):
        raise ConfigError("BOFT: a frozen chain with a concat factor would read the rotated input; not supported")
    out = frozen_chain[-1].p
    if adapter.s.size != out:
        raise ConfigError(f"BOFT: boft_s has {adapter.s.size} scales, the frozen layer has {out} outputs")
    rot = rotation_factors(adapter, order)
    chain = [f for f, _ in rot] + list(frozen_chain)
    weights = [w for _, w in rot] + [np.asarray(w, dtype=np.float64).copy() for w in frozen_weights]
    if scale == "factor":
        chain.append(_diag_factor(out))
        weights.append(adapter.s.copy())
    else:
        last = frozen_chain[-1]
        rows = last.nonzero_indices()[0]
        weights[-1] = (weights[-1].ravel() * adapter.s[rows]).reshape(last.compact_shape)
    return validate_chain(chain), weights, len(rot)


# -- PEFT / torch ---------------------------------------------------------------------------------

def adapter_from_peft(module: Any, adapter_name: str = "default") -> tuple[BoftAdapter, np.ndarray | None]:
    """The adapter of a PEFT BOFT layer (``peft.tuners.boft.layer.Linear`` or ``Conv2d``), with
    PEFT's own permutations (``boft_P``), and the torch-to-litefly input order for a conv (else None)."""
    for attr in ("boft_R", "boft_s", "boft_P"):
        if not hasattr(module, attr):
            raise ConfigError(f"BOFT import: {type(module).__name__} is not a PEFT BOFT layer (no {attr})")
    if adapter_name not in module.boft_R:
        raise ConfigError(f"BOFT import: no adapter {adapter_name!r}; the layer has "
                          f"{', '.join(sorted(module.boft_R.keys())) or 'none'}")
    r = module.boft_R[adapter_name].detach().double().cpu().numpy()
    s = module.boft_s[adapter_name].detach().double().cpu().numpy().ravel()
    pm = module.boft_P.detach().cpu().numpy()
    if pm.shape[0] != r.shape[0] or pm.ndim != 3:
        raise ConfigError(f"BOFT import: boft_P has shape {pm.shape} for boft_R of shape {r.shape}")
    perms = pm.argmax(axis=2)
    if not all(np.array_equal(pm[k], np.eye(pm.shape[1])[perms[k]]) for k in range(pm.shape[0])):
        raise ConfigError("BOFT import: boft_P is not a stack of permutation matrices")
    base = module.get_base_layer()
    order = None
    if hasattr(base, "kernel_size"):
        order = torch_to_litefly_order(base.in_channels, tuple(base.kernel_size))
    return BoftAdapter(r, s, perms), order


def frozen_from_torch(base: Any) -> tuple[tuple[Factor], list[np.ndarray], np.ndarray | None, dict]:
    """The frozen ``nn.Linear`` / ``nn.Conv2d`` as one dense factor ``[p, q, p, q, 1]`` (a conv's
    columns in litefly's im2col order), its compact weights, bias and the layer geometry."""
    w = base.weight.detach().double().cpu().numpy()
    bias = None if base.bias is None else base.bias.detach().double().cpu().numpy()
    if w.ndim == 4:
        if getattr(base, "groups", 1) != 1:
            raise ConfigError("BOFT import: grouped convolutions are not supported (PEFT refuses them too)")
        c_out, c_in, kh, kw = w.shape
        mat = w.transpose(0, 2, 3, 1).reshape(c_out, -1)
        geom = {"kind": "conv2d", "in_features": c_in, "out_features": c_out, "kernel": (kh, kw),
                "stride": tuple(base.stride), "padding": tuple(base.padding), "dilation": tuple(base.dilation)}
    elif w.ndim == 2:
        mat = w
        geom = {"kind": "linear", "in_features": w.shape[1], "out_features": w.shape[0]}
    else:
        raise ConfigError(f"BOFT import: frozen weight of shape {w.shape} is neither linear nor conv2d")
    p, q = mat.shape
    return (Factor(p, q, p, q, 1),), [mat.reshape(1, 1, p, q)], bias, geom


def import_boft(module: Any, name: str, adapter_name: str = "default", scale: str = "factor",
                fmt: NumericFormat | None = None, engine: EngineParams | None = None,
                frozen: tuple[Sequence[AnyFactor], Sequence[np.ndarray]] | None = None
                ) -> tuple[LayerConfig, list[np.ndarray], np.ndarray | None, int]:
    """A PEFT BOFT layer as ``(LayerConfig, compact float weights, bias, rotation factor count)``.
    ``frozen``: the frozen layer as a litefly chain and weights (e.g. the DeBut chain it was
    converted to) instead of its dense weight."""
    adapter, order = adapter_from_peft(module, adapter_name)
    chain0, w0, bias, geom = frozen_from_torch(module.get_base_layer())
    if frozen is not None:
        chain0, w0 = tuple(frozen[0]), list(frozen[1])
    chain, weights, n_rot = boft_chain(adapter, chain0, w0, scale, order)
    fmt = fmt or NumericFormat(bias=bias is not None)
    if bias is not None and not fmt.bias:
        raise ConfigError("BOFT import: the frozen layer has a bias but the format has bias: false")
    kind = geom.pop("kind")
    layer = LayerConfig(name=name, kind=kind, chain=tuple(chain), format=fmt, engine=engine or EngineParams(),
                        **geom)
    return layer, weights, bias if fmt.bias else None, n_rot


# -- adapter switching ------------------------------------------------------------------------------

def switch_report(layer: LayerConfig, n_rotation: int, stream_bits: int | None = None, clock_mhz: float = 100.0,
                  scale: str = "factor") -> dict[str, Any]:
    """Parameter-stream bytes of a BOFT layer, split into what changes with the adapter (the rotation
    factors' weights and, with ``scale="factor"``, the ``diag(s)`` factor's) and what does not (the
    frozen factors' weights, every index entry: the patterns depend only on the adapter's shape),
    with the stream time at one beat a cycle (the loader's rate; DMA set-up not modelled)."""
    from litefly.hw.spec import INDEX_ENTRY_BITS, BIAS_CONTAINER_BITS, ceil_div
    sb = stream_bits or layer.engine.stream_bits
    wpb = sb // layer.format.weight_bits
    chain = layer.chain
    adapter_idx = list(range(n_rotation)) + ([len(chain) - 1] if scale == "factor" else [])
    adapter_w = sum(chain[i].params for i in adapter_idx)
    frozen_w = layer.params - adapter_w
    weight_beats = ceil_div(layer.params, wpb)
    index_beats = ceil_div(sum(f.params for f in chain if f.kind == "sparse"), sb // INDEX_ENTRY_BITS)
    bias_beats = ceil_div(layer.chain_out, sb // BIAS_CONTAINER_BITS) if layer.format.bias else 0
    bpb = sb // 8
    # the rotation factors' weights open the stream; diag(s) is the last factor's, at its end
    rotation_beats = ceil_div(sum(chain[i].params for i in range(n_rotation)), wpb)
    scale_beats = weight_beats - (layer.params - chain[-1].params) // wpb if scale == "factor" else 0
    switch_beats = rotation_beats + scale_beats + bias_beats
    total_beats = weight_beats + index_beats + bias_beats
    return {
        "stream_bits": sb, "weights_adapter": adapter_w, "weights_frozen": frozen_w,
        "bytes_total": total_beats * bpb, "bytes_weights": weight_beats * bpb, "bytes_index": index_beats * bpb,
        "bytes_bias": bias_beats * bpb, "bytes_rotation_weights": rotation_beats * bpb,
        "bytes_scale_weights": scale_beats * bpb, "bytes_switch": switch_beats * bpb,
        "load_us_total": total_beats / clock_mhz, "load_us_switch": switch_beats / clock_mhz,
    }

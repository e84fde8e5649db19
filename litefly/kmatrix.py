"""K-matrices (Kaleidoscope, Dao et al. 2020) as DeBut chains.

A DeBut factor ``[p, q, r, s, t]`` transposed is the factor ``[q, p, s, r, t]``: the entry of
super-block j, lane u, sub-row a, sub-column b (row ``j*r*t + a*t + u``, column
``j*s*t + b*t + u``) becomes sub-row b, sub-column a of the transposed factor, so its compact
weights ``(g, t, r, s)`` become ``(g, t, s, r)`` by swapping the last two axes. A chain
transposed is the transposed factors in reverse order. A butterfly ``B`` of size ``n = 2^m``
is :func:`litefly.chain.butterfly_chain` (``[n, n, 2, 2, 2^i]``, stride 1 applied first), so
``B_1 B_2^T`` (Dao's ``BB*`` for real weights) is ``m`` factors ``[n, n, 2, 2, 2^i]`` with
strides decreasing, then ``m`` with strides increasing, and a K-matrix of width ``w`` is ``w``
such products. The reference code's twiddle of one butterfly factor (``(n/2, 2, 2)`` at stride
``2^k``; HazyResearch ``fly``, ``butterfly_factor_to_matrix``) is the compact weights of
``[n, n, 2, 2, 2^k]`` reshaped (:func:`butterfly_factor_from_twiddle`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .chain import AnyFactor, Factor, SparseFactor, butterfly_chain, validate_chain
from .errors import ConfigError

__all__ = ["transpose_factor", "transpose_chain", "butterfly_factor_from_twiddle", "kaleidoscope_chain",
           "kmatrix_chain"]


def transpose_factor(factor: AnyFactor, weights: np.ndarray) -> tuple[AnyFactor, np.ndarray]:
    """The transposed factor and its compact weights (a DeBut factor stays a DeBut factor; a
    sparse factor without ``concat`` becomes the sparse transposed pattern)."""
    w = np.asarray(weights)
    if tuple(w.shape) != tuple(factor.compact_shape):
        raise ConfigError(f"transpose: factor {factor} has compact shape {factor.compact_shape}, "
                          f"weights have {w.shape}")
    if factor.kind != "sparse":
        return Factor(factor.q, factor.p, factor.s, factor.r, factor.t), np.ascontiguousarray(w.transpose(0, 1, 3, 2))
    if factor.concat:
        raise ConfigError("transpose: a concat factor reads [input ; previous output] and has no transposed factor")
    rows, cols = factor.nonzero_indices()
    order = np.lexsort((rows, cols))                       # new rows = old columns, in order
    new_rows, new_cols = cols[order], rows[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(new_rows, minlength=factor.q))])
    if (np.diff(indptr) == 0).any():
        raise ConfigError(f"transpose: factor {factor} has an empty column, which would be an empty row")
    return SparseFactor(factor.q, factor.p, indptr, new_cols), w.ravel()[order]


def transpose_chain(chain: Sequence[AnyFactor], weights: Sequence[np.ndarray]) -> tuple[tuple, list[np.ndarray]]:
    """``(R_N ... R_1)^T = R_1^T ... R_N^T``: the transposed factors in reverse order."""
    chain = validate_chain(chain)
    if len(weights) != len(chain):
        raise ConfigError(f"transpose: {len(weights)} weight arrays for a chain of {len(chain)} factors")
    pairs = [transpose_factor(f, w) for f, w in zip(reversed(chain), reversed(list(weights)))]
    return validate_chain([f for f, _ in pairs]), [w for _, w in pairs]


def butterfly_factor_from_twiddle(twiddle: np.ndarray, factor_index: int) -> tuple[Factor, np.ndarray]:
    """One butterfly factor from the reference code's twiddle ``(n/2, 2, 2)`` at stride ``2^k``:
    ``[n, n, 2, 2, 2^k]`` with compact weights ``twiddle.reshape(n/2^(k+1), 2^k, 2, 2)``."""
    tw = np.asarray(twiddle, dtype=np.float64)
    if tw.ndim != 3 or tw.shape[1:] != (2, 2):
        raise ConfigError(f"twiddle: shape {tw.shape}, expected (n/2, 2, 2)")
    n = 2 * tw.shape[0]
    if n < 2 or n & (n - 1):
        raise ConfigError(f"twiddle: n={n} must be a power of two")
    m = n.bit_length() - 1
    if isinstance(factor_index, bool) or not isinstance(factor_index, (int, np.integer)) or not 0 <= factor_index < m:
        raise ConfigError(f"twiddle: factor_index={factor_index!r} must be in 0..{m - 1}")
    stride = 1 << int(factor_index)
    return Factor(n, n, 2, 2, stride), tw.reshape(n // (2 * stride), stride, 2, 2)


def _butterfly_weights(n: int, weights: Sequence[np.ndarray], which: str) -> list[np.ndarray]:
    chain = butterfly_chain(n)
    if len(weights) != len(chain):
        raise ConfigError(f"K-matrix: {which} has {len(weights)} factor weights, a butterfly of size {n} has "
                          f"{len(chain)}")
    out = []
    for i, (f, w) in enumerate(zip(chain, weights)):
        w = np.asarray(w, dtype=np.float64)
        if w.shape != f.compact_shape:
            raise ConfigError(f"K-matrix: {which} factor {i + 1} {f}: weights of shape {w.shape}, expected "
                              f"{f.compact_shape}")
        out.append(w)
    return out


def kaleidoscope_chain(n: int, b1: Sequence[np.ndarray], b2: Sequence[np.ndarray]) -> tuple[tuple, list[np.ndarray]]:
    """``B_1 B_2^T`` as one chain (``2 log2 n`` factors): ``b1``, ``b2`` are the compact weights of
    :func:`litefly.chain.butterfly_chain` ``(n)`` factors, in application order."""
    chain = butterfly_chain(n)
    w1, w2 = _butterfly_weights(n, b1, "B1"), _butterfly_weights(n, b2, "B2")
    t_chain, t_weights = transpose_chain(chain, w2)
    return validate_chain(tuple(t_chain) + tuple(chain)), t_weights + w1


def kmatrix_chain(n: int, terms: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]]
                  ) -> tuple[tuple, list[np.ndarray]]:
    """A K-matrix of width ``w = len(terms)``: ``(B_1 B_2^T)_w ... (B_1 B_2^T)_1``, the first term
    applied first."""
    if not terms:
        raise ConfigError("K-matrix: needs at least one (B1, B2) term")
    chain: list = []
    weights: list[np.ndarray] = []
    for b1, b2 in terms:
        c, w = kaleidoscope_chain(n, b1, b2)
        chain += list(c)
        weights += w
    return validate_chain(chain), weights

"""Merging adjacent DeBut factors whose product is itself a DeBut factor with no more MACs.

A published chain is not always the cheapest way to compute its own product. A factor that
halves the width (``r = 1, s = 2``) after a mixing factor (``r = s = 2``) with the same ``t`` is
one factor ``[p, q, 2, 4, t]`` with ``p*4`` MACs, against ``2p*2 + p*2`` for the two. The merged
factor has a weight on every entry of the product's support, so it represents every matrix the
pair does (and more) with fewer parameters: in floating point the merge is exact.

:func:`merge_chain` picks, over every way of cutting the chain into runs of adjacent factors,
the one with the fewest MACs (then the fewest factors) in which every run of two or more
factors is a DeBut factor (:func:`product_factor`); :func:`merge_weights` gives the merged
factors' weights (compact ``(g, t, r, s)`` order, ``Factor.nonzero_indices``) from the
chain's. A layer's ``merge: true`` (``docs/config.md``) makes the merged chain the layer's
chain: the golden model, the engine, the host packing and the reports all follow it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .chain import AnyFactor, Factor
from .errors import ConfigError

__all__ = ["MergePlan", "product_factor", "merge_chain", "merge_weights", "merge_model"]


#: the most entries a product's rows may hold before de-duplication (rows x fan-in): a longer run
#: is not tried (a bound on time and memory for very wide or long chains, which then merge less)
MERGE_MAX_CELLS = 1 << 21
#: the most such entries all the runs tried for one chain may hold together (a 64-factor chain has
#: 2,016 runs of two or more); past it no further run is tried
MERGE_MAX_WORK = 1 << 24


def _by_row(f: Factor, compact: np.ndarray) -> np.ndarray:
    """Values in ``f``'s compact order ``(g, t, r, s)`` (``Factor.nonzero_indices``) as ``[p, s]``, row by
    row: row ``j*r*t + a*t + u`` is ``(j, a, u)``, its entries ``b = 0..s-1`` in ascending column."""
    return np.asarray(compact).reshape(f.compact_shape).transpose(0, 2, 1, 3).reshape(f.p, f.s)


def _row_cols(f: Factor) -> np.ndarray:
    """``[p, s]``: each row's columns, ascending."""
    return _by_row(f, f.nonzero_indices()[1])


def _compose(cols: np.ndarray, f: Factor, vals: np.ndarray | None = None, w: Any = None
             ) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``f`` applied after a product whose rows read ``cols`` (``[rows, fan-in]``, ascending): each
    row's columns, ascending, and with the product's values ``vals`` and ``f``'s weights ``w``
    (compact order) the new product's values, the paths to a column summed. None if the rows do
    not all read the same number of columns."""
    fc = _row_cols(f)
    pc = cols[fc].reshape(f.p, -1)              # the columns reached through each entry of each row
    if vals is None:
        pc = np.sort(pc, axis=1)
    else:
        order = np.argsort(pc, axis=1, kind="stable")
        pc = np.take_along_axis(pc, order, 1)
    first = np.ones(pc.shape, dtype=bool)
    first[:, 1:] = pc[:, 1:] != pc[:, :-1]
    n = first.sum(axis=1)
    if (n != n[0]).any():
        return None
    k = int(n[0])
    out = pc[first].reshape(f.p, k)
    if vals is None:
        return out, None
    pv = np.take_along_axis((_row_vals(f, w)[:, :, None] * vals[fc]).reshape(f.p, -1), order, 1)
    summed = np.zeros((f.p, k))
    np.add.at(summed, (np.arange(f.p)[:, None], np.cumsum(first, axis=1) - 1), pv)
    return out, summed


def _recognise(cols: np.ndarray, q: int) -> Factor | None:
    """The DeBut factor (``q`` inputs) whose rows read ``cols``, or None. Row 0 reads ``b*t``,
    which gives ``t`` (with ``s = 1``: the first later row that reads column 0 again)."""
    p, s = cols.shape
    if (p * s) % q:
        return None
    r = p * s // q
    if s > 1:
        t = int(cols[0, 1] - cols[0, 0])
    elif r > 1:
        again = np.flatnonzero(cols[1:, 0] == cols[0, 0])
        if not again.size:
            return None
        t = int(again[0]) + 1
    else:
        t = 1
    if t < 1 or q % (s * t) or (q // (s * t)) * r * t != p:
        return None
    try:
        f = Factor.checked([p, q, r, s, t])
    except ConfigError:             # beyond a limit (MAX_BLOCK, MAX_FACTOR_PARAMS): not a merge
        return None
    return f if np.array_equal(_row_cols(f), cols) else None


def _runs(chain: Sequence[AnyFactor]) -> dict[tuple[int, int], Factor]:
    """``{(i, j): the DeBut factor of chain[i:j]'s product}`` for every run of two or more DeBut
    factors that has one (a run stops growing at a sparse factor, at rows of unequal fan-in or
    beyond :data:`MERGE_MAX_CELLS`; no run is tried past :data:`MERGE_MAX_WORK`)."""
    found: dict[tuple[int, int], Factor] = {}
    work = 0
    for i, first in enumerate(chain):
        if not isinstance(first, Factor):
            continue
        cols = _row_cols(first)
        for j in range(i + 1, len(chain)):
            f = chain[j]
            cells = f.p * cols.shape[1] * f.s if isinstance(f, Factor) else 0
            if not cells or cells > MERGE_MAX_CELLS or work + cells > MERGE_MAX_WORK:
                break
            work += cells
            step = _compose(cols, f)
            if step is None:
                break
            cols = step[0]
            g = _recognise(cols, first.q)
            if g is not None:
                found[(i, j + 1)] = g
    return found


def product_factor(chain: Sequence[AnyFactor]) -> Factor | None:
    """The DeBut factor whose nonzero pattern is that of the product of ``chain`` (applied first
    factor first), or None if there is none (or the chain holds a sparse factor, or the product
    is beyond :data:`MERGE_MAX_CELLS`)."""
    chain = tuple(chain)
    if len(chain) == 1 and isinstance(chain[0], Factor):
        return chain[0]
    return _runs(chain).get((0, len(chain)))


@dataclass(frozen=True)
class MergePlan:
    """A chain cut into runs: ``runs[i]`` is the ``(start, stop)`` of the factors merged into
    ``chain[i]`` of the merged chain (a sparse factor is a run of its own)."""

    declared: tuple[AnyFactor, ...]
    chain: tuple[AnyFactor, ...]
    runs: tuple[tuple[int, int], ...]

    @property
    def merged(self) -> bool:
        return len(self.chain) < len(self.declared)


def merge_chain(chain: Sequence[AnyFactor]) -> MergePlan:
    """The cut of ``chain`` into runs with the fewest MACs, then the fewest factors, where every
    run is one factor or has a DeBut :func:`product_factor` with no more MACs than its factors."""
    chain = tuple(chain)
    n = len(chain)
    products = _runs(chain)
    # best[j]: (MACs, factors, runs) of the best cut of chain[:j]
    best: list[tuple[int, int, tuple[tuple[int, int], ...]] | None] = [(0, 0, ())] + [None] * n
    for j in range(1, n + 1):
        for i in range(j):
            f = chain[i] if j - i == 1 else products.get((i, j))     # one factor (sparse too) stays
            if f is None or best[i] is None or f.params > sum(g.params for g in chain[i:j]):
                continue
            macs, count, runs = best[i]
            cand = (macs + f.params, count + 1, runs + ((i, j),))
            if best[j] is None or cand[:2] < best[j][:2]:
                best[j] = cand
    runs = best[n][2]
    merged = tuple(chain[a] if b - a == 1 else products[(a, b)] for a, b in runs)
    return MergePlan(declared=chain, chain=merged, runs=runs)


def merge_weights(plan: MergePlan, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The merged chain's weights (float64, each in its factor's compact shape) from the declared
    chain's ``weights`` (compact order): each merged factor's weight at ``(row, col)`` is that
    entry of the product of its run's matrices."""
    if len(weights) != len(plan.declared):
        raise ConfigError(f"merge: got {len(weights)} weight tensors, the chain has {len(plan.declared)} factors")
    out = []
    for f, (a, b) in zip(plan.chain, plan.runs):
        if b - a == 1:
            out.append(np.asarray(weights[a], dtype=np.float64).reshape(f.compact_shape))
            continue
        # a merged run (DeBut factors only): its product as [p, s] values over each row's ascending columns
        first = plan.declared[a]
        cols, vals = _row_cols(first), _row_vals(first, weights[a])
        for g, w in zip(plan.declared[a + 1:b], weights[a + 1:b]):
            cols, vals = _compose(cols, g, vals, w)
        # row by row -> compact (g, t, r, s): the inverse of _by_row
        out.append(vals.reshape(f.blocks, f.r, f.t, f.s).transpose(0, 2, 1, 3))
    return out


def _row_vals(f: Factor, w: np.ndarray) -> np.ndarray:
    """``[p, s]``: factor ``f``'s weights ``w`` (compact order) at :func:`_row_cols`'s entries."""
    w = np.asarray(w, dtype=np.float64).ravel()
    if w.size != f.params:
        raise ConfigError(f"merge: factor {f} has {f.params} weights, got {w.size}")
    return _by_row(f, w)


def merge_model(model: Any) -> list[tuple[str, MergePlan]]:
    """Replace, in place, every DeBut layer inside the torch ``model`` whose chain merges by the
    layer over the merged chain with :func:`merge_weights` (the same function in floating point, to
    rounding); returns ``(name, plan)`` of each one replaced. Imports torch (the PC side only)."""
    from .nn import DeButConv2d, DeButLinear, debut_like  # noqa: PLC0415

    done = []
    for name, mod in list(model.named_modules()):
        if not name or not isinstance(mod, (DeButConv2d, DeButLinear)) or mod.fake_quant is not None:
            continue
        plan = merge_chain(mod.chain)
        if not plan.merged:
            continue
        dtype = mod.weights[0].dtype
        new = debut_like(mod, plan.chain, merge_weights(plan, mod.compact_numpy()), dtype=dtype)
        new.mode = mod.mode
        new.to(mod.weights[0].device)
        model.set_submodule(name, new)
        done.append((name, plan))
    return done

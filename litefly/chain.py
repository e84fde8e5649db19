"""DeBut factors and chains: shapes, validation, counts and the well-known special cases.

A factor ``R^(p,q)_(r,s,t)`` is a p x q block-diagonal matrix of ``g = q/(s*t)``
super-blocks, each an r x s grid of t x t diagonal blocks. Output row
``j*r*t + a*t + u`` reads input column ``j*s*t + b*t + u`` (super-block j, output
sub-row a, input sub-column b, lane u). A chain is applied first factor first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence, Union

import numpy as np

from . import limits
from .errors import ConfigError
from .safeio import check_int_token, short

__all__ = [
    "Factor", "SparseFactor", "AnyFactor", "ChainCounts", "factor_from_config", "validate_chain", "mixing_violations", "chain_is_dense", "chain_params",
    "dense_params", "compression", "parse_rshapes_line", "format_rshapes_line",
    "butterfly_chain", "block_diagonal_chain", "monarch_chain", "dense_chain",
]


@dataclass(frozen=True)
class Factor:
    """One DeBut factor ``[p, q, r, s, t]``; construct with :meth:`checked` to validate."""

    p: int
    q: int
    r: int
    s: int
    t: int
    concat: ClassVar[bool] = False     # a DeBut factor reads the previous output only (see SparseFactor)

    @classmethod
    def checked(cls, values: Sequence[object], index: int = 1) -> "Factor":
        """Build a factor from five values, raising :class:`ConfigError` naming factor ``index``."""
        if isinstance(values, Factor):
            values = values.as_list()
        if not isinstance(values, (list, tuple)) or len(values) != 5:
            raise ConfigError(f"factor {index}: expected five integers [p, q, r, s, t], got {short(values)}")
        for name, v in zip("pqrst", values):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"factor {index}: {name}={short(v)} is not an integer")
            if v <= 0:
                raise ConfigError(f"factor {index}: {name}={short(v)} must be a positive integer")
        p, q, r, s, t = (int(v) for v in values)
        for name, v, limit, lname in (("p", p, limits.MAX_FEATURES, "MAX_FEATURES"),
                                      ("q", q, limits.MAX_FEATURES, "MAX_FEATURES"),
                                      ("r", r, limits.MAX_BLOCK, "MAX_BLOCK"), ("s", s, limits.MAX_BLOCK, "MAX_BLOCK"),
                                      ("t", t, limits.MAX_FEATURES, "MAX_FEATURES")):
            limits.check_limit(f"factor {index}", name, v, limit, lname)
        if q % (s * t):
            raise ConfigError(f"factor {index}: q={q} is not a multiple of s*t={s * t}")
        if p != (q // (s * t)) * r * t:
            raise ConfigError(
                f"factor {index}: p={p} does not equal (q/(s*t))*r*t={(q // (s * t)) * r * t}")
        limits.check_limit(f"factor {index}", "p*s (parameters)", p * s, limits.MAX_FACTOR_PARAMS, "MAX_FACTOR_PARAMS")
        return cls(p, q, r, s, t)

    def as_list(self) -> list[int]:
        return [self.p, self.q, self.r, self.s, self.t]

    @property
    def blocks(self) -> int:
        """Number of super-blocks ``g = q / (s*t)``."""
        return self.q // (self.s * self.t)

    @property
    def params(self) -> int:
        """Nonzeros (= parameters = MACs per input column): ``p*s``."""
        return self.p * self.s

    def mask(self) -> np.ndarray:
        """The p x q 0/1 nonzero pattern (bool)."""
        rows, cols = self.nonzero_indices()
        m = np.zeros((self.p, self.q), dtype=bool)
        m[rows, cols] = True
        return m

    def nonzero_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column indices of the nonzeros, in the compact order ``(g, t, r, s)``."""
        g, r, s, t = self.blocks, self.r, self.s, self.t
        j, u, a, b = np.meshgrid(np.arange(g), np.arange(t), np.arange(r), np.arange(s), indexing="ij")
        rows = j * r * t + a * t + u
        cols = j * s * t + b * t + u
        return rows.ravel(), cols.ravel()

    @property
    def compact_shape(self) -> tuple[int, int, int, int]:
        """Shape of the reference code's compact weight layout ``(q/(s*t), t, r, s)``."""
        return (self.blocks, self.t, self.r, self.s)

    @property
    def kind(self) -> str:
        return "debut"

    @property
    def issues(self) -> int:
        """Engine issue cycles per batch (one weight a cycle): ``p*s``."""
        return self.p * self.s

    def to_config(self) -> list[int]:
        """The chain file's form of this factor."""
        return self.as_list()

    def __str__(self) -> str:
        return f"[{self.p}, {self.q}, {self.r}, {self.s}, {self.t}]"


class SparseFactor:
    """A sparse p x q factor with an explicit pattern: row ``i`` holds the nonzeros at columns
    ``indices[indptr[i]:indptr[i+1]]`` (CSR, columns strictly increasing, every row at least
    one entry: an empty row carries an explicit zero at column 0, see :meth:`from_mask`).

    Its compact weights are the ``nnz`` values in that order. ``concat``: the factor reads the
    concatenation ``[layer input ; previous factor's output]`` (columns below the chain's input
    width read the layer input), so a sparse-plus-low-rank layer ``S x + U (V x)`` is the chain
    ``V``, ``[S | U]``. On the engine a row costs one cycle per entry.
    """

    __slots__ = ("p", "q", "indptr", "indices", "concat", "_hash")

    def __init__(self, p: int, q: int, indptr: Sequence[int], indices: Sequence[int], concat: bool = False) -> None:
        self.p, self.q, self.concat = int(p), int(q), bool(concat)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.indptr.setflags(write=False)
        self.indices.setflags(write=False)
        self._hash = hash((self.p, self.q, self.concat, self.indptr.tobytes(), self.indices.tobytes()))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def checked(cls, data: object, index: int = 1) -> "SparseFactor":
        """From the chain file's ``{sparse: {p, q, rows: [[columns of row 0], ...], concat}}``; one-line
        :class:`ConfigError` naming factor ``index`` and the offending value."""
        where = f"factor {index} (sparse)"
        if not isinstance(data, dict) or set(data) != {"sparse"} or not isinstance(data["sparse"], dict):
            raise ConfigError(f"factor {index}: expected [p, q, r, s, t] or {{sparse: {{p, q, rows}}}}, got {short(data)}")
        d = data["sparse"]
        extra = sorted(set(map(str, d)) - {"p", "q", "rows", "concat"})
        if extra:
            raise ConfigError(f"{where}: unknown key {short(extra[0], 40)}, expected p, q, rows, concat")
        for k in ("p", "q", "rows"):
            if k not in d:
                raise ConfigError(f"{where}: needs {k!r} (p rows, q columns, rows: the columns of each row)")
        for k in ("p", "q"):
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ConfigError(f"{where}: {k}={short(v)} must be a positive integer")
            limits.check_limit(where, k, int(v), limits.MAX_FEATURES, "MAX_FEATURES")
        concat = d.get("concat", False)
        if not isinstance(concat, bool):
            raise ConfigError(f"{where}: concat={short(concat)} must be true or false")
        p, q, rows = int(d["p"]), int(d["q"]), d["rows"]
        if not isinstance(rows, list) or len(rows) != p:
            got = f"{len(rows)} rows" if isinstance(rows, list) else short(rows)
            raise ConfigError(f"{where}: rows must list the columns of each of its p={p} rows, got {got}")
        indptr, indices = [0], []
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise ConfigError(f"{where}: row {i}={short(row)} must be a list of column indices")
            for c in row:
                if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
                    raise ConfigError(f"{where}: row {i}: column {short(c)} is not an integer")
            indices.extend(int(c) for c in row)
            indptr.append(len(indices))
            limits.check_limit(where, "nonzeros", len(indices), limits.MAX_FACTOR_PARAMS, "MAX_FACTOR_PARAMS")
        return cls.validated(p, q, indptr, indices, concat, index)

    @classmethod
    def validated(cls, p: int, q: int, indptr: Sequence[int], indices: Sequence[int], concat: bool = False,
                  index: int = 1) -> "SparseFactor":
        """Build and check the pattern (rows in order, columns in range and strictly increasing, no empty row)."""
        where = f"factor {index} (sparse)"
        indptr, indices = np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)
        if indptr.shape != (p + 1,) or indptr[0] != 0 or indptr[-1] != indices.size:
            raise ConfigError(f"{where}: row pointers must be {p + 1} values from 0 to the {indices.size} nonzeros")
        counts = np.diff(indptr)
        if (counts < 0).any():
            i = int(np.argmax(counts < 0))
            raise ConfigError(f"{where}: row {i} ends before it starts (row pointers out of order)")
        if (counts == 0).any():
            i = int(np.argmax(counts == 0))
            raise ConfigError(f"{where}: row {i} has no entries; every row needs at least one (an explicit zero "
                              f"weight), as SparseFactor.from_mask gives an empty row")
        bad = (indices < 0) | (indices >= q)
        if bad.any():
            k = int(np.argmax(bad))
            row = int(np.searchsorted(indptr, k, side="right") - 1)
            raise ConfigError(f"{where}: row {row}: column {int(indices[k])} is outside 0..{q - 1}")
        if indices.size > 1:
            step = np.diff(indices)
            starts = np.zeros(indices.size, dtype=bool)
            starts[indptr[:-1]] = True
            wrong = (step <= 0) & ~starts[1:]
            if wrong.any():
                k = int(np.argmax(wrong)) + 1
                row = int(np.searchsorted(indptr, k, side="right") - 1)
                raise ConfigError(f"{where}: row {row}: column {int(indices[k])} after {int(indices[k - 1])}; "
                                  f"columns must be strictly increasing within a row")
        return cls(p, q, indptr, indices, concat)

    @classmethod
    def from_mask(cls, mask: np.ndarray, concat: bool = False) -> "SparseFactor":
        """The pattern of a p x q boolean mask; an empty row keeps one explicit entry at column 0."""
        mask = np.array(mask, dtype=bool)
        if mask.ndim != 2 or not mask.size:
            raise ConfigError(f"sparse factor: the mask must be a non-empty 2-D array, got shape {mask.shape}")
        mask[~mask.any(axis=1), 0] = True
        rows, cols = np.nonzero(mask)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=mask.shape[0]))])
        return cls(mask.shape[0], mask.shape[1], indptr, cols, concat)

    # -- the Factor interface ---------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "sparse"

    @property
    def params(self) -> int:
        """Nonzeros (= parameters = MACs per input column)."""
        return int(self.indices.size)

    @property
    def issues(self) -> int:
        """Engine issue cycles per batch: one per entry."""
        return self.params

    @property
    def s(self) -> int:
        """The longest row (the accumulator's term count)."""
        return int(np.diff(self.indptr).max())

    @property
    def compact_shape(self) -> tuple[int]:
        return (self.params,)

    def nonzero_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each nonzero, in the compact (row-major) order."""
        return np.repeat(np.arange(self.p), np.diff(self.indptr)), self.indices.copy()

    def mask(self) -> np.ndarray:
        rows, cols = self.nonzero_indices()
        m = np.zeros((self.p, self.q), dtype=bool)
        m[rows, cols] = True
        return m

    def rows(self) -> list[list[int]]:
        return [self.indices[a:b].tolist() for a, b in zip(self.indptr[:-1], self.indptr[1:])]

    def to_config(self) -> dict:
        d: dict = {"p": self.p, "q": self.q, "rows": self.rows()}
        if self.concat:
            d["concat"] = True
        return {"sparse": d}

    as_list = to_config

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SparseFactor) and (self.p, self.q, self.concat) == (other.p, other.q, other.concat)
                and np.array_equal(self.indptr, other.indptr) and np.array_equal(self.indices, other.indices))

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"SparseFactor(p={self.p}, q={self.q}, nnz={self.params}{', concat' if self.concat else ''})"

    def __str__(self) -> str:
        return f"sparse {self.p}x{self.q}, {self.params:,} nonzeros" + (" over [input; previous]" if self.concat else "")


AnyFactor = Union[Factor, SparseFactor]


def factor_from_config(value: object, index: int = 1) -> AnyFactor:
    """A chain file's factor: ``[p, q, r, s, t]`` or ``{sparse: {...}}``."""
    if isinstance(value, (Factor, SparseFactor)):
        return value
    if isinstance(value, dict):
        return SparseFactor.checked(value, index)
    return Factor.checked(value, index)


def _as_factors(chain: Iterable[object]) -> list[Factor]:
    return [factor_from_config(f, i + 1) for i, f in enumerate(chain)]


def validate_chain(chain: Iterable[object], in_features: int | None = None,
                   out_features: int | None = None) -> tuple[Factor, ...]:
    """Check every factor and the chain's compatibility; return the factors.

    Raises :class:`ConfigError` on the first violated rule. The mixing rule is not
    checked here (see :func:`mixing_violations`): a shape-valid chain is accepted.
    """
    raw = list(chain)
    if not raw:
        raise ConfigError("chain: needs at least one factor")
    limits.check_limit("chain", "number of factors", len(raw), limits.MAX_FACTORS, "MAX_FACTORS")
    factors = [factor_from_config(f, i + 1) for i, f in enumerate(raw)]
    if factors[0].concat:
        raise ConfigError("factor 1 (sparse): concat needs a previous factor; the first factor reads the input")
    for i in range(1, len(factors)):
        if factors[i].concat:
            want = factors[0].q + factors[i - 1].p
            if factors[i].q != want:
                raise ConfigError(f"factor {i + 1} (sparse): q={factors[i].q} with concat does not equal the input "
                                  f"size {factors[0].q} plus p={factors[i - 1].p} of factor {i} = {want}")
        elif factors[i].q != factors[i - 1].p:
            raise ConfigError(
                f"factor {i + 1}: q={factors[i].q} does not equal p={factors[i - 1].p} of factor {i}")
    if in_features is not None and factors[0].q != in_features:
        raise ConfigError(f"factor 1: q={factors[0].q} does not equal the layer's input size {in_features}")
    if out_features is not None and factors[-1].p != out_features:
        raise ConfigError(
            f"factor {len(factors)}: p={factors[-1].p} does not equal the layer's output size {out_features}")
    return tuple(factors)


def mixing_violations(chain: Sequence[Factor]) -> list[str]:
    """Messages for each broken mixing rule (empty if the chain follows it; a chain with a sparse
    factor has no mixing rule)."""
    if any(f.kind == "sparse" for f in chain):
        return []
    out = []
    if chain[0].t != 1:
        out.append(f"factor 1: t={chain[0].t}, the mixing rule wants t=1")
    for i in range(1, len(chain)):
        want = chain[i - 1].r * chain[i - 1].t
        if chain[i].t != want:
            out.append(f"factor {i + 1}: t={chain[i].t}, the mixing rule wants r*t of factor {i} = {want}")
    last = chain[-1]
    if last.r * last.t != last.p:
        out.append(f"factor {len(chain)}: r*t={last.r * last.t}, the mixing rule wants p={last.p}")
    return out


def chain_is_dense(chain: Sequence[Factor]) -> bool:
    """True if the product of the 0/1 patterns has no zero entry.

    Polynomial, without any n x n product:

    * a chain that follows the mixing rule is dense (structural argument: after factor k an
      input reaches one whole aligned block of ``r_k*t_k`` rows, and the last block is all of
      ``p_N``), decided in O(N); so is a chain with a run of factors that follows the rule on
      its own (:func:`_has_mixing_run`, O(N^2));
    * otherwise the reachability sets are propagated factor by factor, one boolean row per
      distinct set (identical rows merged after each factor), from whichever end of the chain
      starts with fewer distinct sets (:func:`_dense_by_reachability`).
    """
    chain = tuple(chain)
    if any(f.kind == "sparse" for f in chain):
        return _dense_by_masks(chain)
    if not mixing_violations(chain) or _has_mixing_run(chain):
        return True
    return _dense_by_reachability(chain)


def _has_mixing_run(chain: Sequence[Factor]) -> bool:
    """True if some run of consecutive factors follows the mixing rule on its own.

    That run's product is dense, and a dense matrix times factors with no zero row or column
    (every factor has ``r, s >= 1``) stays dense, so the whole product is dense. O(N^2).
    """
    n = len(chain)
    for i in range(n):
        if chain[i].t != 1:
            continue
        for k in range(i, n):
            if k > i and chain[k].t != chain[k - 1].r * chain[k - 1].t:
                break
            if chain[k].r * chain[k].t == chain[k].p:
                return True
    return False


def _propagate(rows: np.ndarray, f: "Factor") -> np.ndarray:
    """Reachability rows over f's q inputs -> rows over its p outputs (one factor, no mask)."""
    n = rows.shape[0]
    keys = rows.reshape(n, f.blocks, f.s, f.t).any(axis=2)                 # (n, g, t)
    out = np.broadcast_to(keys[:, :, None, :], (n, f.blocks, f.r, f.t))     # (n, g, r, t)
    return np.ascontiguousarray(out).reshape(n, f.p)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    if rows.shape[0] <= 1:
        return rows
    packed = np.packbits(rows, axis=1)
    _, idx = np.unique(packed, axis=0, return_index=True)
    return rows[np.sort(idx)]


def _dense_by_reachability(chain: tuple["Factor", ...]) -> bool:
    """Exact density of a chain's pattern product by propagating distinct reachability sets.

    A factor links input ``x`` to output ``y`` iff ``x // (s*t) == y // (r*t)`` and
    ``x % t == y % t``: a union of complete bipartite blocks, one per key ``(j, u)``. Inputs
    with the same key in the first factor reach the same rows, so one row per key of factor 1
    (``q_1 / s_1`` of them) starts the propagation; the transposed chain (``[q, p, s, r, t]``,
    reversed) is used if it starts smaller. The work is at most ``rows x sum(widths)`` and is
    refused beyond ``DENSITY_CHECK_CELLS`` cells at once (docs/limits.md), after a cheap
    refutation from a few single inputs.
    """
    back = tuple(Factor(f.q, f.p, f.s, f.r, f.t) for f in reversed(chain))
    fwd_rows = chain[0].q // chain[0].s
    bwd_rows = back[0].q // back[0].s
    use = chain if fwd_rows <= bwd_rows else back
    first = use[0]
    width = max(max(f.p for f in use), first.q)
    # refute cheaply from a few single inputs first
    for x in sorted({0, first.q - 1, first.q // 2}):
        rows = np.zeros((1, first.q), dtype=bool)
        rows[0, x] = True
        for f in use:
            rows = _propagate(rows, f)
        if not rows.all():
            return False
    nkeys = first.q // first.s
    if nkeys * width > limits.DENSITY_CHECK_CELLS:
        raise ConfigError(f"density check: a chain that breaks the mixing rule with {nkeys:,} x {width:,} "
                          f"reachability cells is above the limit DENSITY_CHECK_CELLS={limits.DENSITY_CHECK_CELLS:,}"
                          f" (docs/limits.md)")
    # one row per key (j, u) of the first factor: the input j*s*t + u stands for all b
    g, t, st = first.blocks, first.t, first.s * first.t
    reps = (np.arange(g)[:, None] * st + np.arange(t)[None, :]).ravel()
    rows = np.zeros((reps.size, first.q), dtype=bool)
    rows[np.arange(reps.size), reps] = True
    for f in use:
        rows = _unique_rows(_propagate(rows, f))
        if rows.shape[0] == 1 and rows.all():
            return True    # an all-ones row stays all ones through any factor
    return bool(rows.all())


def _dense_by_masks(chain: Sequence[AnyFactor]) -> bool:
    """Density of a chain with sparse factors: the boolean product of the patterns (a concat factor
    reads the input beside the previous output), refused beyond ``DENSITY_CHECK_CELLS``."""
    q0 = chain[0].q
    cells = q0 * max(f.p for f in chain)
    if cells > limits.DENSITY_CHECK_CELLS:
        raise ConfigError(f"density check: a chain with sparse factors and {cells:,} reachability cells is above "
                          f"the limit DENSITY_CHECK_CELLS={limits.DENSITY_CHECK_CELLS:,} (docs/limits.md)")
    eye = np.eye(q0, dtype=bool)
    reach = eye
    for f in chain:
        src = np.concatenate([eye, reach]) if f.concat else reach
        reach = (f.mask().astype(np.uint8) @ src.astype(np.uint8)) > 0
    return bool(reach.all())


def chain_params(chain: Sequence[Factor]) -> int:
    """Parameters (= MACs per column) of the chain: sum of ``p_i*s_i``."""
    return sum(f.params for f in chain)


def dense_params(chain: Sequence[Factor]) -> int:
    """Parameters of the dense matrix the chain replaces: ``p_N * q_1``."""
    return chain[-1].p * chain[0].q


def compression(chain: Sequence[Factor]) -> float:
    """Layer compression as the papers report it: ``1 - params / dense``."""
    return 1.0 - chain_params(chain) / dense_params(chain)


class ChainCounts:
    """Parameter counts of anything with a ``chain`` attribute (layer configs, generated chains)."""

    chain: tuple[Factor, ...]

    @property
    def params(self) -> int:
        """Parameters = MACs per column."""
        return chain_params(self.chain)

    @property
    def dense_params(self) -> int:
        return dense_params(self.chain)

    @property
    def compression(self) -> float:
        """``1 - params / dense``, as the DeBut papers report it."""
        return 1.0 - self.params / self.dense_params

    @property
    def mac_reduction(self) -> float:
        return self.dense_params / self.params


def parse_rshapes_line(line: str, where: str = "line") -> tuple[Factor, ...]:
    """Parse one line of the reference ``rshapes/*.txt`` format (flattened [p,q,r,s,t] groups)."""
    tokens = line.replace(",", " ").replace("[", " ").replace("]", " ").split()
    if len(tokens) > 5 * limits.MAX_FACTORS:
        raise limits.limit_error(where, "number of factors", -(-len(tokens) // 5), limits.MAX_FACTORS, "MAX_FACTORS")
    values = [check_int_token(tok, where) for tok in tokens]
    if not values:
        raise ConfigError(f"{where}: is empty, expected groups of five integers")
    if len(values) % 5:
        raise ConfigError(f"{where}: has {len(values)} numbers, expected a multiple of 5 (p q r s t groups)")
    return validate_chain([values[i:i + 5] for i in range(0, len(values), 5)])


def format_rshapes_line(chain: Sequence[Factor]) -> str:
    return " ".join(str(v) for f in chain for v in f.as_list())


def butterfly_chain(n: int) -> tuple[Factor, ...]:
    """The standard butterfly of size ``n = 2^m``: factor i is ``[n, n, 2, 2, 2^(i-1)]``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2 or n & (n - 1):
        raise ConfigError(f"butterfly size n={n!r} must be a power of two >= 2")
    m = n.bit_length() - 1
    return validate_chain([[n, n, 2, 2, 2 ** i] for i in range(m)])


def block_diagonal_chain(n: int, b: int) -> tuple[Factor, ...]:
    """A block-diagonal n x n matrix of dense b x b blocks: one factor ``[n, n, b, b, 1]``."""
    if b <= 0 or n % b:
        raise ConfigError(f"block size b={b} must be a positive divisor of n={n}")
    return validate_chain([[n, n, b, b, 1]])


def monarch_chain(n: int, b: int) -> tuple[Factor, ...]:
    """Monarch: ``[n, n, b, b, 1]`` then ``[n, n, n/b, n/b, b]``."""
    if b <= 0 or n % b:
        raise ConfigError(f"block size b={b} must be a positive divisor of n={n}")
    return validate_chain([[n, n, b, b, 1], [n, n, n // b, n // b, b]])


def dense_chain(p: int, q: int) -> tuple[Factor, ...]:
    """A dense p x q layer as the one-factor chain ``[p, q, p, q, 1]`` (the baseline)."""
    return validate_chain([[p, q, p, q, 1]])


def log2_ceil(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0

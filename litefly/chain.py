"""DeBut factors and chains: shapes, validation, counts and the well-known special cases.

A factor ``R^(p,q)_(r,s,t)`` is a p x q block-diagonal matrix of ``g = q/(s*t)``
super-blocks, each an r x s grid of t x t diagonal blocks. Output row
``j*r*t + a*t + u`` reads input column ``j*s*t + b*t + u`` (super-block j, output
sub-row a, input sub-column b, lane u). A chain is applied first factor first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigError

__all__ = [
    "Factor", "ChainCounts", "validate_chain", "mixing_violations", "chain_is_dense", "chain_params",
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

    @classmethod
    def checked(cls, values: Sequence[object], index: int = 1) -> "Factor":
        """Build a factor from five values, raising :class:`ConfigError` naming factor ``index``."""
        if isinstance(values, Factor):
            values = values.as_list()
        if not isinstance(values, (list, tuple)) or len(values) != 5:
            raise ConfigError(f"factor {index}: expected five integers [p, q, r, s, t], got {values!r}")
        for name, v in zip("pqrst", values):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ConfigError(f"factor {index}: {name}={v!r} is not an integer")
            if v <= 0:
                raise ConfigError(f"factor {index}: {name}={v} must be a positive integer")
        p, q, r, s, t = (int(v) for v in values)
        if q % (s * t):
            raise ConfigError(f"factor {index}: q={q} is not a multiple of s*t={s * t}")
        if p != (q // (s * t)) * r * t:
            raise ConfigError(
                f"factor {index}: p={p} does not equal (q/(s*t))*r*t={(q // (s * t)) * r * t}")
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

    def __str__(self) -> str:
        return f"[{self.p}, {self.q}, {self.r}, {self.s}, {self.t}]"


def _as_factors(chain: Iterable[object]) -> list[Factor]:
    return [f if isinstance(f, Factor) else Factor.checked(f, i + 1) for i, f in enumerate(chain)]


def validate_chain(chain: Iterable[object], in_features: int | None = None,
                   out_features: int | None = None) -> tuple[Factor, ...]:
    """Check every factor and the chain's compatibility; return the factors.

    Raises :class:`ConfigError` on the first violated rule. The mixing rule is not
    checked here (see :func:`mixing_violations`): a shape-valid chain is accepted.
    """
    raw = list(chain)
    if not raw:
        raise ConfigError("chain: needs at least one factor")
    factors = [Factor.checked(f, i + 1) for i, f in enumerate(raw)]
    for i in range(1, len(factors)):
        if factors[i].q != factors[i - 1].p:
            raise ConfigError(
                f"factor {i + 1}: q={factors[i].q} does not equal p={factors[i - 1].p} of factor {i}")
    if in_features is not None and factors[0].q != in_features:
        raise ConfigError(f"factor 1: q={factors[0].q} does not equal the layer's input size {in_features}")
    if out_features is not None and factors[-1].p != out_features:
        raise ConfigError(
            f"factor {len(factors)}: p={factors[-1].p} does not equal the layer's output size {out_features}")
    return tuple(factors)


def mixing_violations(chain: Sequence[Factor]) -> list[str]:
    """Messages for each broken mixing rule (empty if the chain follows it)."""
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
    """True if the product of the 0/1 patterns has no zero entry."""
    acc = chain[0].mask().astype(np.int64)
    for f in chain[1:]:
        acc = np.minimum(f.mask().astype(np.int64) @ acc, 1)
    return bool(acc.all())


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
    try:
        values = [int(tok) for tok in tokens]
    except ValueError:
        bad = next(tok for tok in tokens if not tok.lstrip("-").isdigit())
        raise ConfigError(f"{where}: {bad!r} is not an integer") from None
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

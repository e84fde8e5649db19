"""Automatic DeBut chains: mixing chains for any layer size, near a parameter target.

A chain that follows the mixing rule (t_1 = 1, t_(i+1) = r_i*t_i, r_N*t_N = p_N) is fixed by
the sub-column counts ``s_1..s_N`` (with ``s_1*...*s_N = q``, the input size) and the
sub-row counts ``r_1..r_N`` (with ``r_1*...*r_N = p``, the output size). Writing
``S_i = s_i*...*s_N`` and ``P_i = r_1*...*r_i`` (``P_0 = 1``): ``t_i = P_(i-1)``, factor i
has ``g_i = S_(i+1)`` super-blocks, reads ``S_i*P_(i-1)`` values, writes ``S_(i+1)*P_i``
and costs ``p_i*s_i = S_i*P_i`` parameters (= MACs per column).

The generator walks the states ``(S, P)`` from ``(q, 1)`` to ``(1, p)``, one factor per
step, under these rules:

* block sizes: every ``r_i`` and ``s_i`` is 1 or an allowed block size (default 2..16), never
  ``r = s = 1``; a prime factor of a size above 16 cannot be split, so it is allowed as one
  block and the factor holding it may pair it with any block size;
* rank: every intermediate width is at least ``min(q, p)`` (no bottleneck);
* shape ``monotonic``: widths move monotonically from ``q`` to ``p``; ``bulging``: widths
  may rise up to ``bulge * max(q, p)``; ``auto``: monotonic, else bulging.

Sizes are never padded: a size with a large prime factor keeps that prime as one block,
which bounds the compression it can reach (the result says so). With a compression
target, a branch-and-bound search (exact lower/upper bounds from a memoised DP) finds, for
each length N, the chain whose parameter count is closest to the target, and returns the
shortest chain within half a compression point of the best; with a shrinking level N it
returns the most compressed chain of N factors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from typing import Iterable, Sequence

from .chain import ChainCounts, Factor, chain_params, format_rshapes_line, mixing_violations, validate_chain
from .config import check_int
from .errors import ConfigError

__all__ = ["SHAPES", "GeneratedChain", "generate_chain", "mixing_chain", "chain_widths",
           "compare_with_published"]

SHAPES = ("auto", "monotonic", "bulging")
_WHERE = "chain generate"

_NODE_LIMIT = 200_000       # search nodes per chain length (a safety net; rarely reached)


def mixing_chain(s: Sequence[int], r: Sequence[int]) -> tuple[Factor, ...]:
    """The mixing chain with sub-column counts ``s`` and sub-row counts ``r`` (application order)."""
    if len(s) != len(r) or not s:
        raise ConfigError(f"s={list(s)} and r={list(r)} must be non-empty and of the same length")
    out, t = [], 1
    for i in range(len(s)):
        g = prod(s[i + 1:])
        out.append([g * r[i] * t, g * s[i] * t, r[i], s[i], t])
        t *= r[i]
    return validate_chain(out)


def chain_widths(chain: Sequence[Factor]) -> list[int]:
    """Input size, then every factor's output size."""
    return [chain[0].q] + [f.p for f in chain]


@dataclass(frozen=True)
class GeneratedChain(ChainCounts):
    """A generated chain and what it achieved against the request."""

    chain: tuple[Factor, ...]
    in_size: int                 # q = kernel^2 * in
    out_size: int                # p
    shape: str                   # the shape actually used (monotonic or bulging)
    target_compression: float | None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def peak_width(self) -> int:
        return max(chain_widths(self.chain))

    @property
    def rshapes(self) -> str:
        return format_rshapes_line(self.chain)

    def summary(self) -> str:
        want = "" if self.target_compression is None else f" (target {100 * self.target_compression:.2f}%)"
        return (f"{self.in_size} -> {self.out_size}: {len(self.chain)} factors, {self.params:,} parameters vs "
                f"{self.dense_params:,} dense, {100 * self.compression:.2f}% compression{want}, "
                f"{self.mac_reduction:.2f}x fewer MACs, widths {chain_widths(self.chain)}, {self.shape}")


def _prime_factors(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    if n > 1:
        out.append(n)
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _factorable(n: int, allowed: frozenset[int]) -> bool:
    @lru_cache(maxsize=None)
    def ok(m: int) -> bool:
        return m == 1 or any(m % b == 0 and ok(m // b) for b in allowed if b > 1)
    return ok(n)


class _Search:
    """States ``(S, P)``: S = input product still to consume, P = output product built so far."""

    def __init__(self, q: int, p: int, allowed_s: frozenset[int], allowed_r: frozenset[int], shape: str,
                 bulge: float, max_block: int) -> None:
        self.q, self.p, self.shape = q, p, shape
        self.lo = min(q, p)
        self.hi = int(bulge * max(q, p)) if shape == "bulging" else max(q, p)
        self.all_s, self.all_r = _divisors(q), _divisors(p)
        self.s_ok = {1} | set(allowed_s)
        self.r_ok = {1} | set(allowed_r)
        self.big_s = {b for b in allowed_s if b > max_block}
        self.big_r = {b for b in allowed_r if b > max_block}
        self.moves = lru_cache(maxsize=None)(self._moves)
        self.rem = lru_cache(maxsize=None)(self._rem)

    def _width_ok(self, before: int, after: int, final: bool) -> bool:
        if final:
            return True
        if not self.lo <= after <= self.hi:
            return False
        if self.shape == "monotonic":
            return (self.p <= after <= before) if self.q >= self.p else (before <= after <= self.p)
        return True

    def _moves(self, S: int, P: int) -> tuple[tuple[int, int, int], ...]:
        """(S', P', cost) of every allowed next factor."""
        out = []
        for s in self.all_s:
            if S % s:
                continue
            for r in self.all_r:
                if (r == 1 and s == 1) or (self.p // P) % r:
                    continue
                # a block of a large prime size cannot be split: its partner dimension may be anything
                if not ((s in self.s_ok and r in self.r_ok) or (s in self.big_s) or (r in self.big_r)):
                    continue
                S2, P2 = S // s, P * r
                if self._width_ok(S * P, S2 * P2, S2 == 1 and P2 == self.p):
                    out.append((S2, P2, S * P2))
        return tuple(out)

    def _rem(self, S: int, P: int, k: int) -> tuple[int, int] | None:
        """(min, max) parameters of exactly k more factors reaching (1, p), or None."""
        done = S == 1 and P == self.p
        if k == 0:
            return (0, 0) if done else None
        if done:
            return None
        lo = hi = None
        for S2, P2, cost in self.moves(S, P):
            sub = self.rem(S2, P2, k - 1)
            if sub is not None:
                lo = cost + sub[0] if lo is None else min(lo, cost + sub[0])
                hi = cost + sub[1] if hi is None else max(hi, cost + sub[1])
        return None if lo is None else (lo, hi)

    def most_compressed(self, n: int) -> list[tuple[int, int]] | None:
        """The path of states of the cheapest chain of exactly n factors (ties: narrower widths)."""
        if self.rem(self.q, 1, n) is None:
            return None
        path, S, P = [], self.q, 1
        for k in range(n, 0, -1):
            best = None
            for S2, P2, cost in self.moves(S, P):
                sub = self.rem(S2, P2, k - 1)
                if sub is not None:
                    key = (cost + sub[0], S2 * P2)
                    if best is None or key < best[0]:
                        best = (key, S2, P2)
            _, S, P = best
            path.append((S, P))
        return path

    def closest(self, n: int, target: float) -> tuple[float, list[tuple[int, int]]] | None:
        """(|params - target|, path) of the chain of exactly n factors closest to ``target``."""
        if self.rem(self.q, 1, n) is None:
            return None
        best: list = [float("inf"), None]
        nodes = [0]
        path: list[tuple[int, int]] = []

        def dfs(S: int, P: int, k: int, acc: int) -> None:
            if k == 0:
                err = abs(acc - target)
                if err < best[0]:
                    best[0], best[1] = err, list(path)
                return
            nodes[0] += 1
            if nodes[0] > _NODE_LIMIT:
                return
            cands = []
            for S2, P2, cost in self.moves(S, P):
                sub = self.rem(S2, P2, k - 1)
                if sub is None:
                    continue
                lo, hi = acc + cost + sub[0], acc + cost + sub[1]
                bound = max(lo - target, target - hi, 0.0)
                cands.append((bound, abs((lo + hi) / 2 - target), S2 * P2, S2, P2, cost))
            cands.sort()
            for bound, _, _, S2, P2, cost in cands:
                if bound >= best[0]:
                    break
                path.append((S2, P2))
                dfs(S2, P2, k - 1, acc + cost)
                path.pop()

        dfs(self.q, 1, n, 0)
        return None if best[1] is None else (best[0], best[1])

    def to_chain(self, path: list[tuple[int, int]]) -> tuple[Factor, ...]:
        s, r, S, P = [], [], self.q, 1
        for S2, P2 in path:
            s.append(S // S2)
            r.append(P2 // P)
            S, P = S2, P2
        return mixing_chain(s, r)


def _allowed_blocks(n: int, block_shapes: Iterable[int] | None, max_block: int) -> frozenset[int]:
    if block_shapes is not None:
        return frozenset(int(b) for b in block_shapes)
    big = {f for f in _prime_factors(n) if f > max_block}
    return frozenset(range(2, max_block + 1)) | frozenset(big)


def generate_chain(in_features: int, out_features: int, kernel: int = 1, *, compression: float | None = None,
                   shrinking_level: int | None = None, shape: str = "auto",
                   block_shapes: Sequence[int] | None = None, max_block: int = 16, max_factors: int = 8,
                   bulge: float = 2.0) -> GeneratedChain:
    """A mixing chain for a ``kernel x kernel`` conv (or linear, ``kernel=1``) ``in -> out`` layer.

    Give exactly one of ``compression`` (the wanted ``1 - params/dense``, in [0, 1)) or
    ``shrinking_level`` (N: the most compressed chain of exactly N factors). ``block_shapes``
    lists the allowed r and s block sizes (default: 2..``max_block`` plus large prime factors).
    Raises :class:`ConfigError` with the reason when no chain satisfies the rules.
    """
    check_int(_WHERE, "in", in_features, 1)
    check_int(_WHERE, "out", out_features, 1)
    check_int(_WHERE, "kernel", kernel, 1)
    check_int(_WHERE, "max_block", max_block, 2)
    check_int(_WHERE, "max_factors", max_factors, 1)
    if shape not in SHAPES:
        raise ConfigError(f"shape={shape!r} must be one of {', '.join(SHAPES)}")
    if (compression is None) == (shrinking_level is None):
        raise ConfigError("give exactly one of compression or shrinking_level")
    if compression is not None and (isinstance(compression, bool) or not isinstance(compression, (int, float))
                                    or not 0.0 <= compression < 1.0):
        raise ConfigError(f"compression={compression!r} must be a number in [0, 1)")
    if shrinking_level is not None:
        check_int(_WHERE, "shrinking_level", shrinking_level, 1)
    if not bulge >= 1.0:
        raise ConfigError(f"bulge={bulge!r} must be >= 1")
    if block_shapes is not None:
        bad = [b for b in block_shapes if isinstance(b, bool) or not isinstance(b, int) or b < 2]
        if bad or not block_shapes:
            raise ConfigError(f"block shapes {list(block_shapes)!r} must be integers >= 2")
    q, p = kernel * kernel * in_features, out_features
    allowed_s = _allowed_blocks(q, block_shapes, max_block)
    allowed_r = _allowed_blocks(p, block_shapes, max_block)
    for name, n, allowed in (("input size", q, allowed_s), ("output size", p, allowed_r)):
        if not _factorable(n, allowed):
            bad = sorted({f for f in _prime_factors(n) if not any(b % f == 0 for b in allowed)})
            why = f"prime factor {bad[0]}" if bad else "its factors"
            raise ConfigError(f"{name} {n} cannot be written as a product of the block sizes "
                              f"{sorted(allowed)}: {why} is not covered; allow it in --block-shapes")
    shapes = ("monotonic", "bulging") if shape == "auto" else (shape,)
    notes: list[str] = []
    big = sorted({f for f in _prime_factors(q) + _prime_factors(p) if f > max_block})
    if big and block_shapes is None:
        notes.append(f"prime factor(s) {big} cannot be split: each is one block, which limits compression")
    results: list[tuple[float, str, list[tuple[int, int]], _Search]] = []
    target = 0.0 if compression is None else (1.0 - compression) * q * p
    # "on target": within one compression point and within 10% of the target parameter count
    tol = min(0.01 * q * p, 0.1 * target)
    for used in shapes:
        search = _Search(q, p, allowed_s, allowed_r, used, bulge, max_block if block_shapes is None else 1 << 62)
        if shrinking_level is not None:
            path = search.most_compressed(shrinking_level)
            if path is not None:
                results.append((0.0, used, path, search))
                break
            continue
        found = [(n, search.closest(n, target)) for n in range(1, max_factors + 1)]
        found = [(n, r) for n, r in found if r is not None]
        if found:
            best_err = min(r[0] for _, r in found)
            # the shortest chain within half the tolerance of the closest one
            err, path = next(r for _, r in found if r[0] <= best_err + tol / 2)
            results.append((err, used, path, search))
            if err <= tol:
                break
    if results:
        # auto: keep the monotonic chain unless the bulging one is closer by more than the tolerance
        err, used, path, search = results[0]
        if len(results) > 1 and results[1][0] < err - tol:
            err, used, path, search = results[1]
        if shape == "auto" and used == "bulging":
            notes.append("a bulging chain (widths above max(in, out)) gets closer to the target than any "
                         "monotonic one" if len(results) > 1 else "no monotonic chain exists for this size "
                         "under the rules: used a bulging one")
        chain = search.to_chain(path)
        if compression is not None and err > tol:
            got = 1.0 - chain_params(chain) / (q * p)
            if got > compression:
                hint = f"larger blocks (--max-block above {max_block}) or more factors allow denser chains"
            elif big and block_shapes is None:
                hint = f"the unsplittable prime block(s) {big} keep it denser"
            else:
                hint = "more factors (--max-factors) allow sparser chains"
            notes.append(f"target {100 * compression:.2f}% is not reachable within {max_factors} factors "
                         f"under the rules ({100 * got:.2f}% is the closest): {hint}")
        return GeneratedChain(chain, q, p, used, compression, tuple(notes))
    n_txt = f"exactly {shrinking_level}" if shrinking_level is not None else f"at most {max_factors}"
    raise ConfigError(f"no {' or '.join(shapes)} mixing chain for {q} -> {p} with {n_txt} factors, block sizes "
                      f"{_fmt_blocks(allowed_s | allowed_r)} and every width >= {min(q, p)}; "
                      f"try another --shrinking-level, --shape bulging or larger blocks")


def _fmt_blocks(blocks: frozenset[int]) -> str:
    b = sorted(blocks)
    if len(b) > 4 and b == list(range(b[0], b[0] + len(b))):
        return f"{b[0]}..{b[-1]}"
    return "{" + ", ".join(map(str, b)) + "}"


def compare_with_published(lines: Sequence[tuple[str, int]], **opts) -> list[dict]:
    """For published rshapes lines ``(line, kernel)``, generate a chain of the same size and
    compression; return rows with both parameter counts, factor counts and widths."""
    from .chain import parse_rshapes_line
    rows = []
    for line, kernel in lines:
        pub = parse_rshapes_line(line)
        q, p = pub[0].q, pub[-1].p
        if q % (kernel * kernel):
            kernel = 1
        comp = 1.0 - chain_params(pub) / (q * p)
        gen = generate_chain(q // (kernel * kernel), p, kernel, compression=comp, **opts)
        rows.append({"in": q, "out": p, "published_params": chain_params(pub), "published_factors": len(pub),
                     "published_peak": max(chain_widths(pub)), "published_mixing": not mixing_violations(pub),
                     "generated_params": gen.params, "generated_factors": len(gen.chain),
                     "generated_peak": gen.peak_width, "dense": q * p, "generated": gen})
    return rows

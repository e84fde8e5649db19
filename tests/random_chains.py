"""Seeded random shape-valid DeBut chains for engine tests (t grows as the mixing rule says, but the
last factor need not be a single super-block, so products need not be dense)."""

from __future__ import annotations

import random

from litefly.chain import Factor, validate_chain


def random_mixing_chain(seed: int, max_factors: int = 3, max_width: int = 96) -> tuple[Factor, ...]:
    """A random shape-valid chain: each factor's s divides the remaining block count ``g``."""
    rng = random.Random(seed)
    while True:
        n = rng.randint(min(2, max_factors), max_factors)
        t, g = 1, rng.choice([2, 3, 4, 6, 8, 12])
        s0 = rng.choice([d for d in (1, 2, 3, 4) if g % d == 0] or [1])
        q = g * t * s0  # input width of factor 1 = (blocks after) * s * t
        chain, ok = [], True
        g_in = q // (s0 * t)
        s = s0
        for i in range(n):
            if i > 0:
                divs = [d for d in (1, 2, 3, 4) if (q // t) % d == 0]
                s = rng.choice(divs)
            g_here = q // (s * t)
            r = rng.choice([1, 2, 3, 4])
            p = g_here * r * t
            if p > max_width or p < 2:
                ok = False
                break
            chain.append([p, q, r, s, t])
            q, t = p, r * t
        if ok and chain:
            return validate_chain(chain)

"""A barrel rotator: ``n`` values rotated by a run-time amount in ``log2(n)`` stages of 2:1
multiplexers (two stages fit a LUT6), instead of an ``n``:1 multiplexer per output. The window
generator rotates a frame word onto the IN banks with it and the MAC array unskews the IN banks.
"""

from __future__ import annotations

from typing import Callable, Sequence

from amaranth import Cat, Module, Mux, Signal, Value

__all__ = ["barrel_rotate"]


def barrel_rotate(m: Module, name: str, vals: Sequence[Value], amount: Value | Callable[[int], Value],
                  down: bool = True) -> list[Value]:
    """``vals`` rotated by ``amount``: output ``i`` is ``vals[(i + amount) mod n]`` (``down``) or
    ``vals[(i - amount) mod n]``; ``n`` a power of two. ``amount`` is a value of ``log2(n)`` bits, or
    per output ``i`` the value to steer it by (copies of one register, ``fanout.replicated``). Each
    stage is a wire (``{name}{stage}``), not an expression."""
    n = len(vals)
    if n & (n - 1):
        raise ValueError(f"barrel_rotate: {n} values, expected a power of two")
    select = amount if callable(amount) else (lambda _i: amount)
    width, sign = len(vals[0]), 1 if down else -1
    out = list(vals)
    for bit in range(n.bit_length() - 1):
        stage = Signal(n * width, name=f"{name}{bit}")
        m.d.comb += stage.eq(Cat(*(Mux(select(i)[bit], out[(i + sign * (1 << bit)) % n], out[i]) for i in range(n))))
        out = [stage[i * width:(i + 1) * width] for i in range(n)]
    return out

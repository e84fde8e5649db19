"""A barrel rotator: ``n`` values rotated by a run-time amount in stages of 4:1 multiplexers,
two bits of the amount each (a 4:1 multiplexer is one LUT6: four data and two select inputs),
the last a 2:1 stage when ``log2(n)`` is odd, instead of an ``n``:1 multiplexer per output
(32:1 is two LUT levels and about nine LUTs a bit; the stages are three levels and three LUTs).
Written as 2:1 stages, the mapper packed them unevenly (up to a LUT a stage on the MAC array's
path from the IN banks). The window generator rotates a frame word onto the IN banks with it and
the MAC array unskews the IN banks.
"""

from __future__ import annotations

from typing import Callable, Sequence

from amaranth import Array, Cat, Module, Mux, Signal, Value

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
    out, bits = list(vals), n.bit_length() - 1
    for bit in range(0, bits, 2):
        stage = Signal(n * width, name=f"{name}{bit}")
        if bit + 1 < bits:          # amount bits bit, bit + 1: a 4:1 multiplexer
            m.d.comb += stage.eq(Cat(*(
                Array(out[(i + sign * (j << bit)) % n] for j in range(4))[select(i)[bit:bit + 2]]
                for i in range(n))))
        else:
            m.d.comb += stage.eq(Cat(*(Mux(select(i)[bit], out[(i + sign * (1 << bit)) % n], out[i])
                                       for i in range(n))))
        out = [stage[i * width:(i + 1) * width] for i in range(n)]
    return out

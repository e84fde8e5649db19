"""Replicated control registers: one copy per group of lanes, so that a control bit that steers
every lane (the shift amount, an accumulator's enable) drives ``REPLICA_LANES`` lanes' logic, not
all of them (issue 12: the largest fanouts were such registers, thousands of loads each).

Each copy carries the ``keep`` attribute: Yosys's ``opt_merge`` (and Vivado's equivalent-register
merging) would otherwise fold identical registers back into one.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.hdl import ShapeLike, ValueLike

__all__ = ["REPLICA_LANES", "replicated"]

REPLICA_LANES = 8          # lanes per copy of a replicated control register


def replicated(m: Module, name: str, shape: ShapeLike, next_value: ValueLike, lanes: int = 0,
               reset_less: bool = True, copies: int | None = None) -> list[Signal]:
    """``copies`` registers (default ``ceil(lanes / REPLICA_LANES)``: lane ``l`` reads copy
    ``l // REPLICA_LANES``) loaded with ``next_value`` every cycle."""
    n = copies if copies is not None else -(-lanes // REPLICA_LANES)
    copies = [Signal(shape, name=f"{name}_r{k}", reset_less=reset_less, attrs={"keep": 1}) for k in range(n)]
    m.d.sync += [c.eq(next_value) for c in copies]
    return copies

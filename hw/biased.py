"""Biased index counters: a loop's index kept as ``index + ahead - n`` (mod 2^bits, ``n`` the
loop's length), so that the carry out of an increment says the new index is ``ahead`` from the
end (1: the last, 2: the second-to-last), a carry chain in place of a compare with the limit.

The sequencer's loops, the window generator's kernel walk and its next-lane position, and the
loader's beats (32 bits) count so.
"""

from __future__ import annotations

from amaranth import Value

__all__ = ["COUNT_BITS", "biased_start", "biased_step"]

COUNT_BITS = 16         # a counter's width unless given; its increment is one bit wider (the carry)


def biased_start(n: Value, ahead: int, bits: int = COUNT_BITS) -> Value:
    """The count at index 0 of a loop of ``n`` indices: ``ahead - n`` (mod ``2^bits``)."""
    return (ahead - n)[:bits]


def biased_step(count: Value) -> tuple[Value, Value]:
    """``count`` advanced by one index: the next count (``count``'s width) and the carry out (the
    next index is ``ahead`` from the end)."""
    nxt = count + 1
    return nxt[:len(count)], nxt[len(count)]

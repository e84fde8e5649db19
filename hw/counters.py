"""Performance counters (32-bit, wrapping), one per ``regmap.COUNTERS`` name."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .registers import counters_layout

__all__ = ["Counters", "EVENTS"]

# the event that increments each counter (same order as regmap.COUNTERS)
EVENTS = {
    "CYCLES": "busy",
    "BUSY_CYCLES": "issue",
    "STARVED_CYCLES": "starved",
    "STALLED_CYCLES": "stalled",
    "COLUMNS_DONE": "column_done",
    "LOAD_CYCLES": "loading",
}


class Counters(wiring.Component):
    def __init__(self) -> None:
        assert set(EVENTS) == set(regmap.COUNTERS)
        super().__init__({
            "events": In(data.StructLayout({ev: 1 for ev in EVENTS.values()})),
            "clear": In(1),
            "counts": Out(counters_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        for name, ev in EVENTS.items():
            count = getattr(self.counts, name)
            with m.If(self.clear):
                m.d.sync += count.eq(0)
            with m.Elif(getattr(self.events, ev)):
                m.d.sync += count.eq(count + 1)
        return m

"""Channel repacking on the way in: a densely packed NHWC byte stream (``C`` bytes a pixel,
pixels back to back across beats) into NHWC-E frame beats (``ceil(C/E)`` beats a pixel,
channels past ``C`` zero).

The network's input is the one tensor the host makes; with few channels (an RGB image:
``C = 3`` in ``E = 8``-byte beats) sending it padded would cost ``E/C`` times its bytes.
Sent packed, it costs its own size. One frame beat leaves per cycle while bytes last (a
pixel needs at most ``C <= E`` bytes a beat, a beat brings ``E``), so the load takes as many
cycles as the padded stream would, one cycle later.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .spec import EngineEnvelope

__all__ = ["Repack"]


class Repack(wiring.Component):
    """``sink`` (packed bytes) -> ``source`` (NHWC-E beats). ``clear`` empties it and restarts at
    a pixel's first byte; ``channels`` is ``C`` (held while it runs)."""

    def __init__(self, envelope: EngineEnvelope) -> None:
        self._env = envelope
        sb = envelope.stream_bits
        super().__init__({
            "sink": In(stream.Signature(sb)),
            "source": Out(stream.Signature(sb)),
            "clear": In(1),
            "channels": In(16),
        })

    def elaborate(self, platform):
        e = self._env.elems_per_beat
        m = Module()
        buf = Signal(16 * e)                   # up to 2E bytes, the oldest in the low byte
        have = Signal(range(2 * e + 1))        # bytes held
        left = Signal(16)                      # bytes of the current pixel not yet sent
        need = Signal(range(e + 1))            # bytes in the next frame beat
        m.d.comb += need.eq(Mux(left > e, e, left))

        unused = Signal(range(8 * e + 1))      # bits of the frame beat past the pixel's bytes
        m.d.comb += unused.eq((e - need) * 8)
        out_ok = self.source.valid & self.source.ready
        m.d.comb += [
            self.source.valid.eq((have >= need) & (need != 0)),
            self.source.payload.eq(buf & (Const((1 << (8 * e)) - 1, 8 * e) >> unused)),
        ]
        kept = Signal(range(2 * e + 1))        # bytes held after this cycle's frame beat
        rest = Signal(16 * e)
        m.d.comb += [kept.eq(have - Mux(out_ok, need, 0)), rest.eq(Mux(out_ok, buf >> (need * 8), buf))]
        m.d.comb += self.sink.ready.eq(kept <= e)
        in_ok = self.sink.valid & self.sink.ready

        with m.If(self.clear):
            m.d.sync += [have.eq(0), buf.eq(0), left.eq(self.channels)]
        with m.Else():
            m.d.sync += [have.eq(kept + Mux(in_ok, e, 0)),
                         buf.eq(Mux(in_ok, rest | (self.sink.payload << (kept * 8)), rest))]
            with m.If(out_ok):
                m.d.sync += left.eq(Mux(left == need, self.channels, left - need))
        return m

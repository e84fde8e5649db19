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

from amaranth import Array, Cat, Module, Mux, Signal
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
        le = e.bit_length() - 1
        m = Module()
        # A ring of 2E bytes: beats come in at an E-byte half (``wp``), frame beats leave from
        # any byte (``rp``). Every quantity a cycle's handshakes select between is a function of
        # registers alone (a frame beat's bytes, the next byte counts, the next pixel state), so
        # the handshakes only pick: no variable shift or subtraction sits behind them.
        ring = [Signal(8, name=f"ring{i}") for i in range(2 * e)]
        rp = Signal(le + 1)                    # oldest byte
        wp = Signal()                          # the half the next beat fills
        have = Signal(range(2 * e + 1))        # bytes held
        left = Signal(16)                      # bytes of the current pixel not yet sent
        need = Signal(range(e + 1))            # bytes in the next frame beat: min(left, E)
        lle, lle2 = Signal(), Signal()         # left <= E, left <= 2E
        some = Signal()                        # channels != 0
        # the same at a pixel's first byte (``channels`` is held while it runs)
        c = self.channels
        need_c, lle_c, lle2_c = Signal.like(need), Signal(), Signal()

        # source.valid is (have >= need) & some, kept as a register: after a beat in it holds (E
        # bytes cover any need); after a frame beat alone it is whether the rest covers the next need
        valid = Signal()
        nn = Signal.like(need)                 # the need after a frame beat
        m.d.comb += nn.eq(Mux(lle, need_c, Mux(lle2, left - e, e)))
        out_ok = self.source.valid & self.source.ready
        m.d.comb += [
            self.source.valid.eq(valid),
            self.source.payload.eq(Cat(*[Mux(j < need, Array(ring)[(rp + j)[:le + 1]], 0) for j in range(e)])),
        ]
        # room for a beat: have <= E, or have - need <= E once a frame beat leaves (written out
        # from the registers, not behind out_ok)
        have_out = Signal.like(have)
        fits = valid & (have_out <= e)
        m.d.comb += [have_out.eq(have - need),
                     self.sink.ready.eq((have <= e) | (self.source.ready & some & fits))]
        in_ok = self.sink.valid & self.sink.ready

        with m.If(self.clear):
            m.d.sync += [have.eq(0), rp.eq(0), wp.eq(0), left.eq(c), need.eq(Mux(c > e, e, c)), valid.eq(0),
                         lle.eq(c <= e), lle2.eq(c <= 2 * e), some.eq(c != 0),
                         need_c.eq(Mux(c > e, e, c)), lle_c.eq(c <= e), lle2_c.eq(c <= 2 * e)]
        with m.Else():
            m.d.sync += have.eq(Mux(in_ok, Mux(out_ok, have_out + e, have + e), Mux(out_ok, have_out, have)))
            m.d.sync += valid.eq(Mux(in_ok, some, Mux(out_ok, some & (have_out >= nn), valid)))
            with m.If(in_ok):
                m.d.sync += wp.eq(~wp)
                for i in range(2 * e):
                    with m.If(wp == (i >= e)):
                        m.d.sync += ring[i].eq(self.sink.payload.word_select(i % e, 8))
            with m.If(out_ok):
                m.d.sync += rp.eq(rp + need)
                m.d.sync += need.eq(nn)
                with m.If(lle):                # the pixel's last frame beat: the next pixel starts
                    m.d.sync += [left.eq(c), lle.eq(lle_c), lle2.eq(lle2_c)]
                with m.Else():                 # E more bytes of this pixel sent
                    m.d.sync += [left.eq(left - e), lle.eq(lle2), lle2.eq(left <= 3 * e)]
        return m

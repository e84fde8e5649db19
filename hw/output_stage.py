"""The output stage: round half up by the factor's shift, saturate, ReLU and max pooling,
then write the row to WORK (intermediate factor) or OUT (last factor).

OUT is ``E`` banks by channel mod ``E`` (the unloader reads ``E`` channels of one lane per
cycle). Pooling: the first phase of a batch writes, later phases write ``max(old, new)``;
the old row is read in the cycle the result arrives (a read port transparent to the write
port, so a row written in the cycle before is seen).
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .sequencer import ctl_layout
from .spec import EngineEnvelope, ceil_div

__all__ = ["OutputStage", "out_meta_layout"]


def out_meta_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"lanes": ceil_log2(lanes + 1), "last_batch": 1})


class OutputStage(wiring.Component):
    def __init__(self, envelope: EngineEnvelope, fault: str | None = None) -> None:
        self._env = envelope
        self._fault = fault
        L, A, e = envelope.lanes, envelope.act_bits, envelope.elems_per_beat
        self._pw = pw = ceil_div(envelope.max_p, e)
        super().__init__({
            "ctl": In(ctl_layout(envelope)),
            "res": In(data.ArrayLayout(signed(envelope.acc_bits), L)),
            "relu_en": In(1),
            "pool_en": In(1),
            "work_w": In(WritePort.Signature(addr_width=max(1, ceil_log2(2 * envelope.max_work)), shape=L * A)),
            "out_w": In(WritePort.Signature(addr_width=ceil_log2(2 * pw), shape=L * A)).array(e),
            "out_r": In(ReadPort.Signature(addr_width=ceil_log2(2 * pw), shape=L * A)).array(e),
            "out_set": Out(2),
            "meta": Out(data.ArrayLayout(out_meta_layout(L), 2)),
        })

    def elaborate(self, platform):
        env = self._env
        L, A, E, ACC = env.lanes, env.act_bits, env.elems_per_beat, env.acc_bits
        LE = E.bit_length() - 1
        PW, WD = self._pw, env.max_work
        m = Module()
        p3 = self.ctl
        p4 = Signal(ctl_layout(env))
        m.d.sync += p4.eq(p3)

        rnd = Signal(ACC + 1)
        if self._fault == "rounding":
            m.d.comb += rnd.eq(0)
        else:
            m.d.comb += rnd.eq((C(1, ACC + 1) << p3.shift) >> 1)
        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        relu = self.relu_en & p3.fi_last
        qs = [Signal(signed(A), name=f"q{l}") for l in range(L)]
        for l in range(L):
            rounded = Signal(signed(ACC + 1), name=f"rounded{l}")
            shifted = Signal(signed(ACC + 1), name=f"shifted{l}")
            m.d.comb += [rounded.eq(self.res[l] + rnd), shifted.eq(rounded >> p3.shift)]
            sat = Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted))
            m.d.sync += qs[l].eq(Mux(relu & (shifted < 0), 0, sat))

        # OUT: read the old row at p3 (all banks), write the selected bank at p4
        out_addr3 = p3.wr[LE:] + Mux(p3.out_half, PW, 0)
        out_addr4 = p4.wr[LE:] + Mux(p4.out_half, PW, 0)
        bank4 = p4.wr[:LE] if LE else 0
        old = Signal(L * A)
        for b in range(E):
            m.d.comb += self.out_r[b].addr.eq(out_addr3)
        m.d.comb += old.eq(Cat(*[self.out_r[b].data for b in range(E)]).word_select(bank4, L * A))
        keep_max = self.pool_en & ~p4.first_phase
        if self._fault == "pool":
            keep_max = 0
        new = []
        for l in range(L):
            o = old[l * A:(l + 1) * A].as_signed()
            new.append(Mux(keep_max & (o > qs[l]), o, qs[l]))
        q_word = Cat(*qs)
        out_word = Cat(*new)
        write = p4.valid & p4.fi_last
        for b in range(E):
            m.d.comb += [self.out_w[b].addr.eq(out_addr4), self.out_w[b].data.eq(out_word),
                         self.out_w[b].en.eq(write & (bank4 == b))]
        m.d.comb += [self.work_w.addr.eq(p4.wr + Mux(p4.work_half, WD, 0)), self.work_w.data.eq(q_word),
                     self.work_w.en.eq(p4.valid & ~p4.fi_last)]
        with m.If(p4.valid & p4.batch_end):
            m.d.comb += self.out_set.eq(Mux(p4.out_half, 2, 1))
            m.d.sync += [self.meta[p4.out_half].lanes.eq(p4.lanes), self.meta[p4.out_half].last_batch.eq(p4.last_batch)]
        return m

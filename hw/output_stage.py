"""The output stage: round half up by the factor's shift, saturate, ReLU and max pooling,
then write the row to WORK (intermediate factor) or OUT (last factor), in three registered
steps (add the rounding bit; shift, and test whether the result fits; saturate and ReLU), the
write to WORK at p6 and, one registered step later, the write to OUT at p7.

OUT is ``E`` banks skewed by lane (``memories.skewed_bank``: channel ``c`` of lane ``l`` in bank
``(l + c) mod E`` at address ``c``, slot ``l // E``): a row (one channel of every lane) is one word
of each bank, its lanes rotated by ``c mod E`` within each group of ``E`` (the unloader reads ``E``
channels of one lane per cycle, one from each bank). Pooling: the first phase of a batch writes,
later phases write ``max(old, new)`` (that choice registered once per bank). The old row is read
at p5 and registered at p6, so the maximum starts from flip-flops, not from a block RAM's output (the read-compare-write loop was
the fmax proxy's critical path), and is written at p7. The read port is not transparent: a row's
write lands two cycles after its read, and the same OUT row is read again only by the next
phase, whose windows take at least ``WINDOW_SETUP + 1`` cycles to form, so every read comes after
the write before it. The shift amount and the ReLU enable are registered once per
``REPLICA_LANES`` lanes (``fanout.replicated``).
"""

from __future__ import annotations

from amaranth import C, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .cycles import WINDOW_SETUP
from .fanout import REPLICA_LANES, replicated
from .memories import out_slots, work_elements, work_half_words
from .sequencer import ctl_layout
from .spec import EngineEnvelope

__all__ = ["OutputStage", "out_meta_layout"]

# a row's OUT write lands two cycles after its read (p5 -> p7); the next read of that row is a
# phase later, at least a window's set-up and one read later (no bypass needed: docstring)
assert WINDOW_SETUP + 1 > 2


def out_meta_layout(lanes: int) -> data.StructLayout:
    """An OUT half's batch: its lanes, whether it holds one lane (the unloader's first lane is then
    its last, a flag beside the count), whether it is the pass's last batch."""
    return data.StructLayout({"lanes": ceil_log2(lanes + 1), "one": 1, "last_batch": 1})


class OutputStage(wiring.Component):
    def __init__(self, envelope: EngineEnvelope, fault: str | None = None) -> None:
        self._env = envelope
        self._fault = fault
        L, A, e = envelope.lanes, envelope.act_bits, envelope.elems_per_beat
        oa, ow = ceil_log2(2 * envelope.max_p), out_slots(envelope) * A     # OUT's address and word widths
        super().__init__({
            "ctl": In(ctl_layout(envelope)),
            "res": In(data.ArrayLayout(signed(envelope.acc_bits), L)),
            "relu_en": In(1),
            "pool_en": In(1),
            # WORK: a memory per element of its words (memories.work_elements), a row written into one
            "work_w": In(WritePort.Signature(addr_width=max(1, ceil_log2(2 * work_half_words(envelope))),
                                             shape=L * A)).array(work_elements(envelope)),
            "out_w": In(WritePort.Signature(addr_width=oa, shape=ow)).array(e),
            "out_r": In(ReadPort.Signature(addr_width=oa, shape=ow)).array(e),
            "out_set": Out(2),
            "meta": Out(data.ArrayLayout(out_meta_layout(L), 2)),
        })

    def elaborate(self, platform):
        env = self._env
        L, A, E, ACC = env.lanes, env.act_bits, env.elems_per_beat, env.acc_bits
        LE = E.bit_length() - 1
        P, S = env.max_p, out_slots(env)
        WH, WE = work_half_words(env), work_elements(env)
        LWE = WE.bit_length() - 1
        m = Module()
        # three registered steps so that no step is more than a few LUT levels deep:
        # p3 (result arrives) -> round: + 2^(shift-1) -> p4: >> shift, fits? -> p5: saturate, ReLU -> p6
        p3 = self.ctl
        p4, p5, p6 = Signal(ctl_layout(env)), Signal(ctl_layout(env)), Signal(ctl_layout(env))
        m.d.sync += [p4.eq(p3), p5.eq(p4), p6.eq(p5)]

        rnd = Signal(ACC)
        if self._fault == "rounding":
            m.d.comb += rnd.eq(0)
        else:
            # 2^(shift-1), decoded bit by bit (a variable shift of a constant is mapped as a chain
            # of small LUTs, one a shift bit: five levels before the adder); the shift is at most ACC
            m.d.comb += rnd.eq(Cat(*(p3.shift == i + 1 for i in range(ACC))))
        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        # the shift (clamped to ACC by the sequencer: a few bits, not the register field's eight),
        # registered beside the rounded value (data beside the ctl words' valid bits: reset-less;
        # one copy per REPLICA_LANES lanes)
        sh4 = replicated(m, "sh4", range(ACC + 1), p3.shift, L)
        # saturation is decided beside the shift, from the rounded value: ``rounded >> shift`` fits A
        # bits exactly when the rounded value's bits shift + A - 1 .. ACC - 1 all equal its sign
        # (bit ACC). The bits to test are a mask of the shift, registered at p4 beside sh4, so the
        # test is an AND-OR over registers (no compare, no carry chain after the shifter; p5's step
        # is then one LUT per bit before the bank rotation)
        # (each bit the sign of shift - (i - A + 2): a carry chain; written as compares with
        # constants, the mapper chained the thermometer's bits into six LUT levels)
        fits_mask = Cat(*((p3.shift - (i - A + 2))[-1] if i >= A - 1 else C(0, 1) for i in range(ACC)))
        mask4 = replicated(m, "satmask4", ACC, fits_mask, L)
        relu = replicated(m, "relu5", 1, self.relu_en & p4.fi_last, L)      # at p5, beside the shifted value
        qc = []                                                 # saturated values at p5, by lane
        for l in range(L):
            rounded = Signal(signed(ACC + 1), name=f"rounded{l}", reset_less=True)
            shifted = Signal(signed(ACC + 1), name=f"shifted{l}", reset_less=True)
            over = Signal(name=f"sat{l}", reset_less=True)       # shifted is outside lo..hi
            sign = rounded[ACC]
            m.d.sync += [rounded.eq(self.res[l] + rnd), shifted.eq(rounded >> sh4[l // REPLICA_LANES]),
                         over.eq(((rounded[:ACC] ^ sign.replicate(ACC)) & mask4[l // REPLICA_LANES]).any())]
            neg = shifted[ACC]
            sat = Mux(over, Mux(neg, lo, hi), shifted[:A].as_signed())
            q = Signal(signed(A), name=f"qc{l}")
            m.d.comb += q.eq(Mux(relu[l // REPLICA_LANES] & neg, 0, sat))
            qc.append(q)
        qc += [C(0, signed(A))] * (S * E - L)
        # p6: the row in OUT's bank order, registered: bank b, slot s holds lane s*E + (b - r) mod E,
        # r = the row's channel mod E (OUT rows), 0 for WORK rows (lane order: lane l is bank l mod E,
        # slot l // E)
        rot = Signal(LE, name="rot5")                           # E >= 4 (streams of at least 32 bits)
        m.d.comb += rot.eq(Mux(p5.fi_last, p5.wr[:LE], 0))
        qb = [[Signal(signed(A), name=f"q{b}_{s}", reset_less=True) for s in range(S)] for b in range(E)]
        for s in range(S):
            group = Cat(*qc[s * E:(s + 1) * E])
            for b in range(E):
                m.d.sync += qb[b][s].eq(group.word_select((Const(b, LE + 1) - rot)[:LE], A))

        # OUT: read the old row at p5 (every bank, one address: the channel), register it at p6,
        # write max(old, new) at p7. The write address is registered (no adder between the
        # flip-flops and the memories' many write-port cells)
        p7 = Signal(ctl_layout(env))
        m.d.sync += p7.eq(p6)
        out_addr5 = Signal(range(2 * P), name="out_addr5")
        m.d.comb += out_addr5.eq(p5.wr + Mux(p5.out_half, P, 0))
        out_addr6 = Signal.like(out_addr5, name="out_addr6", reset_less=True)
        out_addr7 = Signal.like(out_addr5, name="out_addr7", reset_less=True)
        work_addr6 = Signal(range(2 * WH), name="work_addr6", reset_less=True)
        work_part6 = Signal(max(1, LWE), name="work_part6", reset_less=True)       # the row's element of the word
        m.d.sync += [out_addr6.eq(out_addr5), out_addr7.eq(out_addr6),
                     work_addr6.eq(p5.wr[LWE:] + Mux(p5.work_half, WH, 0)), work_part6.eq(p5.wr[:LWE] if LWE else 0)]
        # pooling's "keep the maximum" at p7 (a later phase), registered from p6 one copy per bank:
        # it steers every element of the row
        keep_max = replicated(m, "keep_max7", 1, self.pool_en & ~p6.first_phase if self._fault != "pool" else 0,
                              copies=E)
        write7 = Signal(name="out_write7")
        m.d.comb += write7.eq(p7.valid & p7.fi_last)
        for b in range(E):
            old = Signal(S * A, name=f"old7_{b}", reset_less=True)
            m.d.sync += old.eq(self.out_r[b].data)
            new = []
            for s in range(S):
                q7 = Signal(signed(A), name=f"q7_{b}_{s}", reset_less=True)
                m.d.sync += q7.eq(qb[b][s])
                o = old[s * A:(s + 1) * A].as_signed()
                new.append(Mux(keep_max[b] & (o > q7), o, q7))
            m.d.comb += [self.out_r[b].addr.eq(out_addr5), self.out_w[b].addr.eq(out_addr7),
                         self.out_w[b].data.eq(Cat(*new)), self.out_w[b].en.eq(write7)]
        row = Cat(*(qb[l % E][l // E] for l in range(L)))
        for e, port in enumerate(self.work_w):
            m.d.comb += [port.addr.eq(work_addr6), port.data.eq(row),
                         port.en.eq(p6.valid & ~p6.fi_last & (work_part6 == e if WE > 1 else 1))]
        with m.If(p7.valid & p7.batch_end):
            m.d.comb += self.out_set.eq(Mux(p7.out_half, 2, 1))
            m.d.sync += [self.meta[p7.out_half].lanes.eq(p7.lanes), self.meta[p7.out_half].one.eq(p7.lanes == 1),
                         self.meta[p7.out_half].last_batch.eq(p7.last_batch)]
        return m

"""The unloader: a full OUT half to ``m_axis`` in NHWC-E order.

For each valid lane of the batch, ``ceil(P/E)`` beats: beat ``k`` holds channels
``k*E .. k*E+E-1`` of the lane, sign-extended to bytes, zeros past ``P``. OUT's banks are skewed
(``memories.skewed_bank``): channel ``k*E + j`` of lane ``l`` is in bank ``(l + j) mod E`` at address
``k*E + j``, slot ``l // E``, so each bank reads its own address and the beat's bytes are the
banks' words, rotated by ``l mod E``. TLAST on the last beat of the pass. Each bank's byte of
the lane (its slot of the word read) is registered as it leaves the memory, before the rotation,
and which bytes hold channels below ``P`` is registered from the read's channel: no path runs
from a block RAM's output through more than the slot select, nor into the FIFO through more than
the rotation. A small FIFO absorbs the two cycles of read latency so a beat leaves every cycle
the consumer takes one.

With ``LAYER.RESIDUAL`` each beat waits for its skip beat (same position and channels, from
the loader) and leaves as ``clamp(y + ((skip * M + 2^(K-1)) >> K))``, then ReLU if ``RELU``
(the output stage leaves ReLU to this add); channels past ``P`` stay zero.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .memories import out_slots
from .output_stage import out_meta_layout
from .registers import descriptor_layout
from .spec import EngineEnvelope

__all__ = ["Unloader", "beat_layout"]


def beat_layout(stream_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": stream_bits, "last": 1})


class Unloader(wiring.Component):
    def __init__(self, envelope: EngineEnvelope) -> None:
        self._env = envelope
        L, A, e = envelope.lanes, envelope.act_bits, envelope.elems_per_beat
        super().__init__({
            "desc": In(descriptor_layout(envelope.max_factors)),
            "start": In(1),
            "out_full": In(2),
            "meta": In(data.ArrayLayout(out_meta_layout(L), 2)),
            "out_clr": Out(2),
            "out_r": In(ReadPort.Signature(addr_width=ceil_log2(2 * envelope.max_p),
                                           shape=out_slots(envelope) * A)).array(e),
            "source": Out(stream.Signature(beat_layout(envelope.stream_bits))),
            "skip": In(stream.Signature(envelope.stream_bits)),
            "column_done": Out(1),      # a lane's last beat was sent
            "pass_done": Out(1),        # the pass's last beat was sent
        })

    def elaborate(self, platform):
        env = self._env
        L, A, E, SB = env.lanes, env.act_bits, env.elems_per_beat, env.stream_bits
        LE = E.bit_length() - 1
        P, S = env.max_p, out_slots(env)
        m = Module()
        # beats per lane minus 2, and whether it is 1: k keeps a registered "last beat" flag
        ocw = (self.desc.OUT_C.P + (E - 1)) >> LE
        ocw_m2 = Signal(16)
        ocw_1 = Signal()
        k_l = Signal(name="k_last")
        with m.If(self.start):
            m.d.sync += [ocw_m2.eq(ocw - 2), ocw_1.eq(ocw == 1), k_l.eq(ocw == 1)]

        half = Signal()
        lane = Signal(range(L + 1))
        lane2 = Signal(range(L + 3), init=2)      # lane + 2
        # whether the lane is the half's last, from registers: the half's first lane (`first`) is its
        # last when the half holds one (meta.one); a later lane, as registered at the lane before's
        # end (`last_next`: lane + 2 == lanes then; the half's meta is in place while it is read)
        first, last_next = Signal(init=1, name="lane_first"), Signal(name="last_next")
        k = Signal(16)
        meta = self.meta[half]
        fifo_layout = data.StructLayout({"data": SB, "last": 1, "lane_end": 1, "valid_bytes": E})
        m.submodules.fifo = fifo = SyncFIFO(width=fifo_layout.size, depth=4)
        # reads in flight: one in the memory (`inflight`), one in its output register (`inflight2`);
        # a read issues while the FIFO has room for it and both (a beat a cycle in steady state)
        inflight, inflight2 = Signal(), Signal()
        issue = Signal()
        m.d.comb += issue.eq(self.out_full.bit_select(half, 1) & (fifo.level + inflight + inflight2 < 4))
        m.d.sync += [inflight.eq(issue), inflight2.eq(inflight)]
        # bank b holds the lane's channel k*E + (b - lane) mod E
        base = Signal(range(2 * P), name="out_base")
        m.d.comb += base.eq((k << LE) + Mux(half, P, 0))
        for b in range(E):
            m.d.comb += self.out_r[b].addr.eq(base + (Const(b, LE + 1) - lane[:LE])[:LE])
        lane_end = k_l
        batch_end = lane_end & Mux(first, meta.one, last_next)
        with m.If(issue):
            m.d.sync += [k.eq(k + 1), k_l.eq(k == ocw_m2)]
            with m.If(lane_end):
                m.d.sync += [k.eq(0), k_l.eq(ocw_1), lane.eq(lane + 1), lane2.eq(lane2 + 1),
                             first.eq(0), last_next.eq(lane2 == meta.lanes)]
                with m.If(batch_end):
                    m.d.sync += [lane.eq(0), lane2.eq(2), half.eq(~half), first.eq(1)]
                    m.d.comb += self.out_clr.eq(Mux(half, 2, 1))

        # the read's lane and flags, and which of its bytes hold a channel below P (from k, in the
        # read's cycle), follow it: a cycle in the memory (r_*), a cycle in its output register (q_*)
        r_lane, q_lane = Signal.like(lane), Signal.like(lane)
        r_vb, q_vb = Signal(E), Signal(E)
        r_last, q_last, r_lane_end, q_lane_end = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [r_lane.eq(lane), r_lane_end.eq(lane_end), r_last.eq(batch_end & meta.last_batch),
                     r_vb.eq(Cat(*[(k << LE) + b < self.desc.OUT_C.P for b in range(E)])),
                     q_lane.eq(r_lane), q_lane_end.eq(r_lane_end), q_last.eq(r_last), q_vb.eq(r_vb)]
        # each bank's byte of the lane (its slot of the word the memory reads), registered: the slot
        # select between the memory and the register, the byte rotation after it, so neither path
        # holds both (a 256-way choice a bit with 16 banks of 16 slots)
        out_q = [Signal(A, name=f"out_q{b}") for b in range(E)]
        m.d.sync += [out_q[b].eq(self.out_r[b].data.word_select(r_lane[LE:], A) if S > 1
                                 else self.out_r[b].data[:A]) for b in range(E)]
        # byte j of the beat: bank (j + lane) mod E
        words = Signal(E * A, name="lane_words")
        m.d.comb += words.eq(Cat(*out_q))
        nbytes = []
        for b in range(E):
            byte = Signal(signed(8), name=f"byte{b}")
            v = words.word_select((Const(b, LE + 1) + q_lane[:LE])[:LE], A).as_signed()
            m.d.comb += byte.eq(Mux(q_vb[b], v, 0))
            nbytes.append(byte)
        w = Signal(fifo_layout)
        m.d.comb += [w.data.eq(Cat(*nbytes)), w.last.eq(q_last), w.lane_end.eq(q_lane_end),
                     w.valid_bytes.eq(q_vb), fifo.w_data.eq(w), fifo.w_en.eq(inflight2)]
        r = fifo_layout(fifo.r_data)

        if not env.residual:
            m.d.comb += [self.source.valid.eq(fifo.r_rdy), self.source.payload.data.eq(r.data),
                         self.source.payload.last.eq(r.last), fifo.r_en.eq(self.source.ready)]
        else:
            self._residual_add(m, r, fifo)
        sent = self.source.valid & self.source.ready
        m.d.comb += [self.column_done.eq(sent & r.lane_end), self.pass_done.eq(sent & r.last)]
        return m

    def _residual_add(self, m: Module, r, fifo) -> None:
        """Each output beat waits for its skip beat and leaves as the aligned sum (then ReLU)."""
        env = self._env
        A, E = env.act_bits, env.elems_per_beat
        # residual add: one skip beat per output beat
        residual, relu = Signal(), Signal()
        mult, kshift = Signal(16), Signal(5)
        with m.If(self.start):
            m.d.sync += [residual.eq(self.desc.LAYER.RESIDUAL), relu.eq(self.desc.LAYER.RELU),
                         mult.eq(self.desc.SKIP.M), kshift.eq(self.desc.SKIP.K)]
        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        summed = []
        for b in range(E):
            y = r.data.word_select(b, 8).as_signed()
            sk = self.skip.payload.word_select(b, 8).as_signed()
            prod = Signal(signed(26), name=f"skip_prod{b}")
            aligned = Signal(signed(26), name=f"skip_aligned{b}")
            z = Signal(signed(27), name=f"skip_sum{b}")
            out = Signal(signed(8), name=f"res_byte{b}")
            rnd = (Const(1, 27) << kshift)[1:]          # 2^(K-1), 0 for K = 0
            m.d.comb += [prod.eq(sk * mult), aligned.eq((prod + rnd) >> kshift), z.eq(y + aligned)]
            m.d.comb += out.eq(Mux(z > hi, hi, Mux(z < lo, lo, z)))
            with m.If(relu & (z < 0)):
                m.d.comb += out.eq(0)
            with m.If(~r.valid_bytes[b]):
                m.d.comb += out.eq(0)
            summed.append(out)
        take = fifo.r_rdy & (~residual | self.skip.valid)
        m.d.comb += [self.source.valid.eq(take), self.source.payload.data.eq(Mux(residual, Cat(*summed), r.data)),
                     self.source.payload.last.eq(r.last), fifo.r_en.eq(self.source.ready & take),
                     self.skip.ready.eq(residual & fifo.r_rdy & self.source.ready)]

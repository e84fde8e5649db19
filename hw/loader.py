"""The loader: ``s_axis`` beats into the weight, index and bias memories (``LOAD_PARAMS``) or into the
frame buffer (``START``: ``IMAGES * H * W * CW`` feature-map beats; with ``LAYER.PACKED`` the
stream carries ``C`` bytes a pixel and :class:`~.repack.Repack` pads them to beats).
``frame_count`` tells the window generator how far the frame has arrived, so windows are
formed while it loads."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .biased import biased_start, biased_step
from .registers import descriptor_layout
from .repack import Repack
from .spec import EngineEnvelope

__all__ = ["Loader"]


class Loader(wiring.Component):
    """``load_params``/``start`` are accepted strobes (the caller checks the engine is idle)."""

    def __init__(self, envelope: EngineEnvelope) -> None:
        self._env = envelope
        sb = envelope.stream_bits
        super().__init__({
            "sink": In(stream.Signature(sb)),
            "desc": In(descriptor_layout(envelope.max_factors)),
            "load_params": In(1),
            "start": In(1),
            "weight_w": In(WritePort.Signature(addr_width=ceil_log2(envelope.weight_beats), shape=sb)),
            "bias_w": In(WritePort.Signature(addr_width=ceil_log2(envelope.bias_beats), shape=sb)),
            "index_w": In(WritePort.Signature(addr_width=ceil_log2(max(2, envelope.index_beats)), shape=sb)),
            "frame_w": In(WritePort.Signature(addr_width=ceil_log2(envelope.frame_beats), shape=sb)),
            "params_busy": Out(1),
            "params_done": Out(1),       # pulse: the last parameter beat was taken
            "frame_busy": Out(1),        # receiving the feature map
            "frame_done": Out(1),        # pulse: the last feature-map beat was written
            "frame_count": Out(32),      # feature-map beats written so far in this pass
            "skip": Out(stream.Signature(sb)),   # LAYER.RESIDUAL: the skip beats after the frame, to the unloader
            # the frame buffer as a ring (EngineEnvelope.ring): the window generators' lowest beat still
            # to read, or all read; a beat is taken only while it stays within frame_beats of it
            "release": In(32),
            "release_all": In(1),
        })

    def elaborate(self, platform):
        env = self._env
        m = Module()
        desc = self.desc
        cnt = Signal(32)
        # counts the descriptor fixes, registered in every cycle (the parameter total in two steps):
        # the descriptor is written at least three cycles before the CTRL write that starts a load
        # or a pass takes effect, and these are read a cycle after that
        p_none, p_one, f_one, s_one = Signal(), Signal(), Signal(), Signal()
        p_two, f_two, s_two = Signal(), Signal(), Signal()
        p_b0, f_b0, s_b0 = (Signal(32, reset_less=True) for _ in range(3))
        total = Signal(32, reset_less=True)
        m.d.sync += total.eq(desc.WEIGHT_BEATS + desc.INDEX_BEATS + desc.BIAS_BEATS)
        m.d.sync += [p_none.eq((desc.WEIGHT_BEATS | desc.INDEX_BEATS | desc.BIAS_BEATS) == 0), p_one.eq(total == 1),
                     p_two.eq(total == 2), p_b0.eq(biased_start(total, 2, 32)),
                     f_one.eq(desc.FRAME_BEATS == 1), f_two.eq(desc.FRAME_BEATS == 2), f_b0.eq(biased_start(desc.FRAME_BEATS, 2, 32)),
                     s_one.eq(desc.SKIP_BEATS == 1), s_two.eq(desc.SKIP_BEATS == 2), s_b0.eq(biased_start(desc.SKIP_BEATS, 2, 32))]
        # cnt is the last beat's count, the second-to-last: registered flags (the first loads from
        # the second; the second is the carry out of the beats' biased count `bcnt`, counted beside
        # cnt from 2 - beats: hw/biased.py), so no 32-bit compare of the count is on their path
        cnt_l, cnt_p = Signal(), Signal()
        bcnt = Signal(32, name="beats_biased")
        bnext, bcarry = biased_step(bcnt)
        wbeats = Signal(32)
        ibeats = Signal(32)            # weight + index beats: the biases follow
        accept = Signal()
        packed = Signal()
        m.submodules.repack = rp = Repack(env)
        residual = Signal()
        if env.residual:
            m.submodules.skip_fifo = skip_fifo = SyncFIFOBuffered(width=env.stream_bits, depth=4)
            m.d.comb += [skip_fifo.w_data.eq(self.sink.payload), self.skip.payload.eq(skip_fifo.r_data),
                         self.skip.valid.eq(skip_fifo.r_rdy), skip_fifo.r_en.eq(self.skip.ready)]
        # the frame's beats: straight from s_axis, or through the repacker
        f_valid, f_data = Signal(), Signal(env.stream_bits)
        m.d.comb += [
            rp.channels.eq(desc.IN_C.C), rp.sink.payload.eq(self.sink.payload),
            f_valid.eq(Mux(packed, rp.source.valid, self.sink.valid)),
            f_data.eq(Mux(packed, rp.source.payload, self.sink.payload)),
        ]
        m.d.comb += [
            accept.eq(self.sink.valid),            # in PARAMS, where ready is 1 (not the repacker's)
            self.weight_w.data.eq(self.sink.payload),
            self.bias_w.data.eq(self.sink.payload),
            self.index_w.data.eq(self.sink.payload),
            self.index_w.addr.eq(cnt - wbeats),
            self.frame_w.data.eq(f_data),
            self.weight_w.addr.eq(cnt),
            self.bias_w.addr.eq(cnt - ibeats),
            self.frame_w.addr.eq(cnt),
            self.frame_count.eq(cnt),
        ]
        # ring: room for the next frame beat, registered (from this cycle's count, take and release:
        # a release is seen a cycle late, which only holds a beat back a cycle longer)
        room = Signal(init=1)
        take = Signal()
        if env.ring:
            gap = Signal(signed(33))
            m.d.comb += gap.eq(cnt - self.release)
            m.d.sync += room.eq(self.release_all | Mux(take, gap < env.frame_beats - 1, gap < env.frame_beats))
        # in FRAME, as a register (set entering it, cleared leaving it): the frame's handshakes and
        # the repacker's ring enables test one flip-flop, not the decoded state (the fmax proxy's
        # critical path ran from the state register to the ring)
        in_frame = Signal()
        # the repacker's clear, registered: it empties the repacker in SETUP1, the cycle after the
        # start (nothing enters or leaves it before FRAME), so the state decode does not reach the
        # repacker's registers (it was the loader's deepest path)
        rp_clear = Signal()
        m.d.sync += rp_clear.eq(0)
        m.d.comb += rp.clear.eq(rp_clear)
        with m.If(in_frame):
            m.d.comb += [rp.sink.valid.eq(packed & self.sink.valid),
                         self.sink.ready.eq(Mux(packed, rp.sink.ready, room)), rp.source.ready.eq(packed & room),
                         take.eq(f_valid & room), self.frame_w.en.eq(take)]
        with m.FSM(name="loader"):
            with m.State("IDLE"):
                with m.If(self.load_params):
                    m.d.sync += [cnt.eq(0), wbeats.eq(desc.WEIGHT_BEATS),
                                 ibeats.eq(desc.WEIGHT_BEATS + desc.INDEX_BEATS)]
                    m.next = "PARAMS_CHECK"
                with m.Elif(self.start):
                    m.d.sync += [cnt.eq(0), packed.eq(desc.LAYER.PACKED)]
                    if env.residual:
                        m.d.sync += residual.eq(desc.LAYER.RESIDUAL & (desc.SKIP_BEATS != 0))
                    m.d.sync += rp_clear.eq(1)
                    m.d.sync += self.frame_busy.eq(1)      # SETUP1, SETUP2 and FRAME, as a register
                    m.next = "SETUP1"
            with m.State("PARAMS_CHECK"):
                m.d.comb += self.params_busy.eq(1)
                m.d.sync += [bcnt.eq(p_b0), cnt_l.eq(p_one), cnt_p.eq(p_two)]
                with m.If(p_none):
                    m.d.comb += self.params_done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [self.params_busy.eq(1), self.sink.ready.eq(1)]
                m.d.comb += [self.weight_w.en.eq(accept & (cnt < wbeats)),
                             self.index_w.en.eq(accept & (cnt >= wbeats) & (cnt < ibeats)),
                             self.bias_w.en.eq(accept & (cnt >= ibeats))]
                with m.If(accept):
                    m.d.sync += [cnt.eq(cnt + 1), cnt_l.eq(cnt_p), cnt_p.eq(bcarry), bcnt.eq(bnext)]
                    with m.If(cnt_l):
                        m.d.comb += self.params_done.eq(1)
                        m.next = "IDLE"
            with m.State("SETUP1"):
                # two set-up cycles (as the window generator's), the frame size a pass constant
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.sync += [bcnt.eq(f_b0), cnt_l.eq(f_one), cnt_p.eq(f_two), in_frame.eq(1)]
                m.next = "FRAME"
            with m.State("FRAME"):
                with m.If(take):
                    m.d.sync += [cnt.eq(cnt + 1), cnt_l.eq(cnt_p), cnt_p.eq(bcarry), bcnt.eq(bnext)]
                    with m.If(cnt_l):
                        m.d.comb += self.frame_done.eq(1)
                        m.d.sync += [self.frame_busy.eq(0), cnt.eq(0), bcnt.eq(s_b0), cnt_l.eq(s_one),
                                     cnt_p.eq(s_two), in_frame.eq(0)]
                        m.next = "IDLE"
                        if env.residual:
                            with m.If(residual):
                                m.next = "SKIP"
            if env.residual:
                with m.State("SKIP"):
                    # the skip tensor follows the frame on s_axis; the unloader takes one beat per output beat
                    m.d.comb += [self.sink.ready.eq(skip_fifo.w_rdy), skip_fifo.w_en.eq(self.sink.valid)]
                    with m.If(self.sink.valid & skip_fifo.w_rdy):
                        m.d.sync += [cnt.eq(cnt + 1), cnt_l.eq(cnt_p), cnt_p.eq(bcarry), bcnt.eq(bnext)]
                        with m.If(cnt_l):
                            m.next = "IDLE"
        return m

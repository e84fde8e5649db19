"""The loader: ``s_axis`` beats into the weight and bias memories (``LOAD_PARAMS``) or into the
frame buffer (``START``: ``IMAGES * H * W * CW`` feature-map beats; with ``LAYER.PACKED`` the
stream carries ``C`` bytes a pixel and :class:`~.repack.Repack` pads them to beats).
``frame_count`` tells the window generator how far the frame has arrived, so windows are
formed while it loads."""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

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
            "frame_w": In(WritePort.Signature(addr_width=ceil_log2(envelope.frame_beats), shape=sb)),
            "params_busy": Out(1),
            "params_done": Out(1),       # pulse: the last parameter beat was taken
            "frame_busy": Out(1),        # receiving the feature map
            "frame_done": Out(1),        # pulse: the last feature-map beat was written
            "frame_count": Out(32),      # feature-map beats written so far in this pass
        })

    def elaborate(self, platform):
        env = self._env
        e = env.elems_per_beat
        le = e.bit_length() - 1
        m = Module()
        desc = self.desc
        cnt = Signal(32)
        total = Signal(32)
        wbeats = Signal(32)
        hw = Signal(32)
        img = Signal(32)
        accept = Signal()
        packed = Signal()
        m.submodules.repack = rp = Repack(env)
        # the frame's beats: straight from s_axis, or through the repacker
        f_valid, f_data = Signal(), Signal(env.stream_bits)
        m.d.comb += [
            rp.channels.eq(desc.IN_C.C), rp.sink.payload.eq(self.sink.payload),
            f_valid.eq(Mux(packed, rp.source.valid, self.sink.valid)),
            f_data.eq(Mux(packed, rp.source.payload, self.sink.payload)),
        ]
        m.d.comb += [
            accept.eq(self.sink.valid & self.sink.ready),
            self.weight_w.data.eq(self.sink.payload),
            self.bias_w.data.eq(self.sink.payload),
            self.frame_w.data.eq(f_data),
            self.weight_w.addr.eq(cnt),
            self.bias_w.addr.eq(cnt - wbeats),
            self.frame_w.addr.eq(cnt),
            self.frame_count.eq(cnt),
        ]
        with m.FSM(name="loader"):
            with m.State("IDLE"):
                with m.If(self.load_params):
                    m.d.sync += [cnt.eq(0), wbeats.eq(desc.WEIGHT_BEATS), total.eq(desc.WEIGHT_BEATS + desc.BIAS_BEATS)]
                    m.next = "PARAMS_CHECK"
                with m.Elif(self.start):
                    cw = (desc.IN_C.C + (e - 1)) >> le
                    m.d.sync += [cnt.eq(0), hw.eq(desc.IN_HW.H * cw), packed.eq(desc.LAYER.PACKED)]
                    m.d.comb += rp.clear.eq(1)
                    m.next = "SETUP1"
            with m.State("PARAMS_CHECK"):
                m.d.comb += self.params_busy.eq(1)
                with m.If(total == 0):
                    m.d.comb += self.params_done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.comb += [self.params_busy.eq(1), self.sink.ready.eq(1)]
                m.d.comb += [self.weight_w.en.eq(accept & (cnt < wbeats)),
                             self.bias_w.en.eq(accept & (cnt >= wbeats))]
                with m.If(accept):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == total - 1):
                        m.d.comb += self.params_done.eq(1)
                        m.next = "IDLE"
            with m.State("SETUP1"):
                m.d.comb += self.frame_busy.eq(1)
                m.d.sync += img.eq(hw * desc.IN_HW.W)
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += self.frame_busy.eq(1)
                m.d.sync += total.eq(img * desc.IMAGES[:16])
                m.next = "FRAME"
            with m.State("FRAME"):
                m.d.comb += [self.frame_busy.eq(1), rp.sink.valid.eq(packed & self.sink.valid),
                             self.sink.ready.eq(Mux(packed, rp.sink.ready, 1)), rp.source.ready.eq(packed),
                             self.frame_w.en.eq(f_valid)]
                with m.If(f_valid):
                    m.d.sync += cnt.eq(cnt + 1)
                    with m.If(cnt == total - 1):
                        m.d.comb += self.frame_done.eq(1)
                        m.next = "IDLE"
        return m

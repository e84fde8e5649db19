"""The window generator: im2col on chip, from the NHWC-E frame buffer into one half of IN.

Per batch and phase, for each valid lane and kernel position ``(ky, kx)`` it reads the
``CW`` beats of the lane's input pixel (or zeros for padding) and writes them as
``min(E, C - k*E)`` elements of that lane at element offset ``kpos*C + k*E``. IN is ``E``
banks (element mod E) with lane-granular write enables; an offset that is not a multiple
of ``E`` rotates the beat's bytes onto the banks. One beat per cycle, no bubble between
lanes; a few set-up cycles per phase. Windows are formed while the frame loads: a read
whose beat has not arrived yet (``frame_count``) waits, so a pass's load overlaps its compute.

The per-layer products (``CW``, strides in beats) are pass constants the host computes
(``regmap.PASS_CONSTANTS``), registered in three set-up cycles after ``go``; a batch's origin
offsets are kept by adding as positions advance; per-phase origins take two cycles; the
window generator has no multiplier, and its per-cycle path is adders and compares.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .registers import descriptor_layout
from .spec import EngineEnvelope, ceil_div

__all__ = ["WindowGenerator", "in_meta_layout"]


def in_meta_layout(lanes: int) -> data.StructLayout:
    """What the window generator tells the sequencer about a filled IN half."""
    return data.StructLayout({"lanes": unsigned(ceil_log2(lanes + 1)), "first_phase": 1, "last_phase": 1,
                              "last_batch": 1})


class WindowGenerator(wiring.Component):
    def __init__(self, envelope: EngineEnvelope, fault: str | None = None) -> None:
        self._env = envelope
        self._fault = fault
        e = envelope.elems_per_beat
        qw = ceil_div(envelope.max_q, e)
        self._qw = qw
        la = envelope.lanes * envelope.act_bits
        super().__init__({
            "desc": In(descriptor_layout(envelope.max_factors)),
            "go": In(1),                      # a pass starts (its frame is arriving)
            "frame_loading": In(1),           # the loader is still receiving the pass's frame
            "frame_count": In(32),            # frame beats written so far (valid while loading)
            "busy": Out(1),
            "load_wait": Out(1),              # holding a read whose beat has not arrived
            "frame_r": In(ReadPort.Signature(addr_width=ceil_log2(envelope.frame_beats),
                                             shape=envelope.stream_bits)),
            "in_w": In(WritePort.Signature(addr_width=ceil_log2(2 * qw), shape=la,
                                           granularity=envelope.act_bits)).array(e),
            "in_full": In(2),
            "in_set": Out(2),
            "meta": Out(data.ArrayLayout(in_meta_layout(envelope.lanes), 2)),
        })

    def elaborate(self, platform):
        env = self._env
        L, A, E = env.lanes, env.act_bits, env.elems_per_beat
        LE = E.bit_length() - 1
        QW = self._qw
        d = self.desc
        m = Module()

        def s32(name):
            return Signal(signed(32), name=name)

        def u32(name):
            return Signal(32, name=name)

        # ---- layer constants (set-up after go) ----
        cw, hwcw, npos = (u32(n) for n in ("cw", "hwcw", "npos"))
        pk = Signal(8)
        # the last values the walk compares with, registered at set-up (no subtractor on those paths)
        cw_m1, kw_m1, kh_m1, wp_m1, hp_m1 = u32("cw_m1"), Signal(16), Signal(16), u32("wp_m1"), u32("hp_m1")
        pk_m1 = Signal(8)
        xstep, ystep, xstep_cw, ystep_wcw = (u32(n) for n in ("xstep", "ystep", "xstep_cw", "ystep_wcw"))
        dw_cw, dh_wcw, sw_cw, sh_wcw, pw_cw, ph_wcw = (u32(n) for n in (
            "dw_cw", "dh_wcw", "sw_cw", "sh_wcw", "pw_cw", "ph_wcw"))
        # ---- batch start (emitted coordinates) and phase ----
        bs_x, bs_y, bs_img, bs_left = u32("bs_x"), u32("bs_y"), u32("bs_img"), u32("bs_left")
        dy, dx = Signal(8), Signal(8)
        pdy, pdx, pdy_wcw, pdx_cw = u32("pdy"), u32("pdx"), u32("pdy_wcw"), u32("pdx_cw")
        ix_first, iy_first, ca_first, ra_first = s32("ix_first"), s32("iy_first"), s32("ca_first"), s32("ra_first")
        px, pcx, py, pry = u32("px"), u32("pcx"), u32("py"), u32("pry")
        # x*xstep, x*xstep*CW, y*ystep, y*ystep*W*CW of the batch start and of the next lane,
        # kept by adding (no multiplier per batch)
        bs_px, bs_pcx, bs_py, bs_pry = u32("bs_px"), u32("bs_pcx"), u32("bs_py"), u32("bs_pry")
        nx_px, nx_pcx, nx_py, nx_pry = u32("nx_px"), u32("nx_pcx"), u32("nx_py"), u32("nx_pry")
        # ---- next lane to start ----
        nx_x, nx_y, nx_img, nx_left = u32("nx_x"), u32("nx_y"), u32("nx_img"), u32("nx_left")
        nx_ix, nx_iy, nx_ca, nx_ra = s32("nx_ix"), s32("nx_iy"), s32("nx_ca"), s32("nx_ra")
        # ---- the lane being walked ----
        w_ix, w_iy, w_ca, w_ra, w_ix0, w_ca0 = (s32(n) for n in ("w_ix", "w_iy", "w_ca", "w_ra", "w_ix0", "w_ca0"))
        ky, kx, k = Signal(16), Signal(16), Signal(16)
        eoff, kbase, rem = u32("eoff"), u32("kbase"), s32("rem")
        lane = Signal(range(L + 1))
        wh = Signal()                       # IN half being filled

        pool = d.LAYER.POOL
        addr = Signal(signed(33))
        m.d.comb += [addr.eq(w_ra + w_ca + k), self.frame_r.addr.eq(addr)]

        # emission stage -> s1 (frame data valid) -> IN write
        emit = Signal()
        lane_start = Signal()
        phase_end = Signal()
        s1 = {n: Signal(name=f"s1_{n}") for n in ("valid", "inb", "half", "done")}
        s1_lane = Signal.like(lane)
        s1_eoff = Signal(32)
        s1_n = Signal(range(E + 1))
        s1_meta = Signal(in_meta_layout(L))
        ix_hi = (w_ix <= d.IN_HW.W) if self._fault == "window_pad" else (w_ix < d.IN_HW.W)
        inb = (w_iy >= 0) & (w_iy < d.IN_HW.H) & (w_ix >= 0) & ix_hi
        # a read waits until its beat is in the frame buffer (written in an earlier cycle)
        arrived = ~inb | ~self.frame_loading | (addr < self.frame_count)
        m.d.sync += [s1["valid"].eq(emit), s1["inb"].eq(inb), s1["half"].eq(wh), s1_lane.eq(lane),
                     s1_eoff.eq(eoff), s1_n.eq(Mux(rem > E, E, rem)), s1["done"].eq(emit & phase_end)]
        last_k = k == cw_m1
        last_kx = kx == kw_m1
        last_ky = ky == kh_m1
        lane_end = last_k & last_kx & last_ky

        # IN write: bank b takes beat element (b - r) mod E
        r = s1_eoff[:LE]
        base = s1_eoff[LE:] + Mux(s1["half"], QW, 0)
        beat = self.frame_r.data
        for b in range(E):
            j = Signal(range(E), name=f"j{b}")
            m.d.comb += j.eq(Const(b, LE + 1) - r)
            elem = Signal(A, name=f"elem{b}")
            m.d.comb += elem.eq(Mux(s1["inb"], beat.word_select(j, 8)[:A], 0))
            port = self.in_w[b]
            m.d.comb += [
                port.addr.eq(base + (b < r)),
                port.data.eq(Cat(*([elem] * L))),
                port.en.eq(Mux(s1["valid"] & (j < s1_n), Const(1, L) << s1_lane, 0)),
            ]
        with m.If(s1["done"]):
            m.d.comb += self.in_set.eq(Mux(s1["half"], 2, 1))
            m.d.sync += self.meta[s1["half"]].eq(s1_meta)

        with m.FSM(name="window"):
            with m.State("IDLE"):
                with m.If(self.go):
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    cw.eq(d.CW), pk.eq(Mux(pool, d.POOL.K, 1)),
                ]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    xstep.eq(d.XSTEP), ystep.eq(d.YSTEP), dw_cw.eq(d.DW_CW), sw_cw.eq(d.SW_CW),
                    pw_cw.eq(d.PW_CW), npos.eq(d.NPOS),
                    cw_m1.eq(cw - 1), pk_m1.eq(pk - 1), kw_m1.eq(d.KERNEL.KW - 1), kh_m1.eq(d.KERNEL.KH - 1),
                    wp_m1.eq(d.OUT_HW.WP - 1), hp_m1.eq(d.OUT_HW.HP - 1),
                ]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    hwcw.eq(d.HW_CW), xstep_cw.eq(d.XSTEP_CW), ystep_wcw.eq(d.YSTEP_WCW),
                    dh_wcw.eq(d.DH_WCW), sh_wcw.eq(d.SH_WCW), ph_wcw.eq(d.PH_WCW),
                    bs_x.eq(0), bs_y.eq(0), bs_img.eq(0), bs_left.eq(npos),
                    bs_px.eq(0), bs_pcx.eq(0), bs_py.eq(0), bs_pry.eq(0),
                    dy.eq(0), dx.eq(0), pdy.eq(0), pdx.eq(0), pdy_wcw.eq(0), pdx_cw.eq(0),
                ]
                m.next = "PHASE_A"
            with m.State("PHASE_A"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    px.eq(bs_px), pcx.eq(bs_pcx), py.eq(bs_py), pry.eq(bs_pry),
                    ix_first.eq(pdx - d.PAD.PW), ca_first.eq(pdx_cw - pw_cw),
                    iy_first.eq(pdy - d.PAD.PH), ra_first.eq(pdy_wcw - ph_wcw),
                ]
                m.next = "PHASE_B"
            with m.State("PHASE_B"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    nx_ix.eq(px + ix_first), nx_ca.eq(pcx + ca_first), nx_iy.eq(py + iy_first),
                    nx_ra.eq(bs_img + pry + ra_first),
                    nx_x.eq(bs_x), nx_y.eq(bs_y), nx_img.eq(bs_img), nx_left.eq(bs_left), lane.eq(0),
                    nx_px.eq(bs_px), nx_pcx.eq(bs_pcx), nx_py.eq(bs_py), nx_pry.eq(bs_pry),
                ]
                m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(~self.in_full.bit_select(wh, 1)):
                    m.d.comb += lane_start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [self.busy.eq(1), self.load_wait.eq(~arrived)]
                with m.If(arrived):
                    m.d.comb += emit.eq(1)
                    # element offset and kernel walk
                    with m.If(~last_k):
                        m.d.sync += [k.eq(k + 1), eoff.eq(eoff + E), rem.eq(rem - E)]
                    with m.Else():
                        m.d.sync += [k.eq(0), kbase.eq(kbase + d.IN_C.C), eoff.eq(kbase + d.IN_C.C), rem.eq(d.IN_C.C)]
                        with m.If(~last_kx):
                            m.d.sync += [kx.eq(kx + 1), w_ix.eq(w_ix + d.DILATION.DW), w_ca.eq(w_ca + dw_cw)]
                        with m.Else():
                            m.d.sync += [kx.eq(0), w_ix.eq(w_ix0), w_ca.eq(w_ca0), ky.eq(ky + 1),
                                         w_iy.eq(w_iy + d.DILATION.DH), w_ra.eq(w_ra + dh_wcw)]
                    with m.If(lane_end):
                        m.d.sync += lane.eq(lane + 1)
                        with m.If((lane == L - 1) | (nx_left == 0)):
                            last_phase = (dy == pk_m1) & (dx == pk_m1)
                            m.d.comb += phase_end.eq(1)
                            m.d.sync += [
                                s1_meta.lanes.eq(lane + 1), s1_meta.first_phase.eq((dy == 0) & (dx == 0)),
                                s1_meta.last_phase.eq(last_phase), s1_meta.last_batch.eq(nx_left == 0),
                                wh.eq(~wh),
                            ]
                            with m.If(last_phase):
                                m.d.sync += [dy.eq(0), dx.eq(0), pdy.eq(0), pdx.eq(0), pdy_wcw.eq(0), pdx_cw.eq(0),
                                             bs_x.eq(nx_x), bs_y.eq(nx_y), bs_img.eq(nx_img), bs_left.eq(nx_left),
                                             bs_px.eq(nx_px), bs_pcx.eq(nx_pcx), bs_py.eq(nx_py), bs_pry.eq(nx_pry)]
                                with m.If(nx_left == 0):
                                    m.next = "IDLE"
                                with m.Else():
                                    m.next = "PHASE_A"
                            with m.Else():
                                m.next = "PHASE_A"
                                with m.If(dx == pk_m1):
                                    m.d.sync += [dx.eq(0), pdx.eq(0), pdx_cw.eq(0), dy.eq(dy + 1),
                                                 pdy.eq(pdy + d.STRIDE.SH), pdy_wcw.eq(pdy_wcw + sh_wcw)]
                                with m.Else():
                                    m.d.sync += [dx.eq(dx + 1), pdx.eq(pdx + d.STRIDE.SW), pdx_cw.eq(pdx_cw + sw_cw)]
                        with m.Else():
                            m.d.comb += lane_start.eq(1)
        # after the FSM: the lane start's loads win over the kernel walk's updates
        # lane start: working registers from nx_*, nx_* advanced to the following position
        with m.If(lane_start):
            m.d.sync += [w_ix.eq(nx_ix), w_ix0.eq(nx_ix), w_iy.eq(nx_iy), w_ca.eq(nx_ca), w_ca0.eq(nx_ca),
                         w_ra.eq(nx_ra), ky.eq(0), kx.eq(0), k.eq(0), eoff.eq(0), kbase.eq(0),
                         rem.eq(d.IN_C.C), nx_left.eq(nx_left - 1)]
            with m.If(nx_x == wp_m1):
                m.d.sync += [nx_x.eq(0), nx_ix.eq(ix_first), nx_ca.eq(ca_first), nx_px.eq(0), nx_pcx.eq(0)]
                with m.If(nx_y == hp_m1):
                    m.d.sync += [nx_y.eq(0), nx_py.eq(0), nx_pry.eq(0), nx_iy.eq(iy_first), nx_img.eq(nx_img + hwcw),
                                 nx_ra.eq(nx_img + hwcw + ra_first)]
                with m.Else():
                    m.d.sync += [nx_y.eq(nx_y + 1), nx_iy.eq(nx_iy + ystep), nx_ra.eq(nx_ra + ystep_wcw),
                                 nx_py.eq(nx_py + ystep), nx_pry.eq(nx_pry + ystep_wcw)]
            with m.Else():
                m.d.sync += [nx_x.eq(nx_x + 1), nx_ix.eq(nx_ix + xstep), nx_ca.eq(nx_ca + xstep_cw),
                             nx_px.eq(nx_px + xstep), nx_pcx.eq(nx_pcx + xstep_cw)]

        return m

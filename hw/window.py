"""The window generator: im2col on chip, from the NHWC-E frame buffer into one half of IN.

Per batch and phase, for each valid lane and kernel position ``(ky, kx)`` it reads the
``CW`` beats of the lane's input pixel (or zeros for padding) and writes them as
``min(E, C - k*E)`` elements of that lane at element offset ``kpos*C + k*E``. IN is ``E``
banks skewed by lane (``memories.skewed_bank``: element ``e`` of lane ``l`` in bank ``(l + e) mod E``
at address ``e``, slot ``l // E`` of the word) with lane-granular write enables, so the beat's
elements rotate onto the banks by ``(l + offset) mod E``. One beat per cycle, no bubble between
lanes; a few set-up cycles per phase. Windows are formed while the frame loads: a read
whose beat has not arrived yet (``frame_count``) waits, so a pass's load overlaps its compute.

The per-layer products (``CW``, strides in beats) are pass constants the host computes
(``regmap.PASS_CONSTANTS``), registered in three set-up cycles after ``go``; a batch's origin
offsets are kept by adding as positions advance; per-phase origins take two cycles; the
window generator has no multiplier. In the emission cycle it tests flip-flops: the read
address, the bounds tests, every "last index" and whether the read's beat has arrived are
registered (kept one step ahead).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .barrel import barrel_rotate
from .biased import biased_start, biased_step
from .fanout import replicated
from .memories import in_banks, in_slots
from .registers import descriptor_layout
from .spec import EngineEnvelope

__all__ = ["WindowGenerator", "in_meta_layout"]


def in_meta_layout(lanes: int) -> data.StructLayout:
    """What the window generator tells the sequencer about a filled IN half."""
    return data.StructLayout({"lanes": unsigned(ceil_log2(lanes + 1)), "first_phase": 1, "last_phase": 1,
                              "last_batch": 1})


class WindowGenerator(wiring.Component):
    """One window generator; with ``groups`` of them (``EngineEnvelope.window_generators``),
    generator ``group`` fills lanes ``group, group + groups, ...`` of every batch (the
    positions ``group`` mod ``groups``) into its own IN memories, from its own frame-buffer read
    port, so the generators form a batch's windows in parallel. They start every batch-phase
    together: each waits in its set-up (``PHASE_A``) until all have formed the one before, so
    one generator's wait for a frame beat holds the others at the next batch-phase, not later."""

    def __init__(self, envelope: EngineEnvelope, fault: str | None = None, group: int = 0, groups: int = 1) -> None:
        if groups < 1 or envelope.lanes % groups or not 0 <= group < groups:
            raise ValueError(f"window generator {group} of {groups} for {envelope.lanes} lanes")
        self._env = envelope
        self._fault = fault
        self._group, self._groups = group, groups
        fb = envelope.frame_word_beats
        la = in_slots(envelope) * envelope.act_bits
        super().__init__({
            "desc": In(descriptor_layout(envelope.max_factors)),
            "go": In(1),                      # a pass starts (its frame is arriving)
            "frame_loading": In(1),           # the loader is still receiving the pass's frame
            "frame_count": In(32),            # frame beats written so far (valid while loading)
            "busy": Out(1),
            "load_wait": Out(1),              # holding a read whose beat has not arrived
            "frame_r": In(ReadPort.Signature(addr_width=ceil_log2(envelope.frame_beats // fb),
                                             shape=envelope.stream_bits * fb)),
            "in_w": In(WritePort.Signature(addr_width=ceil_log2(2 * envelope.max_q), shape=la,
                                           granularity=envelope.act_bits)).array(in_banks(envelope)),
            # IN's halves full, as the engine's register of them will be next cycle (its input): the
            # lane start in WAIT tests a registered copy of the half's bit (`free`)
            "in_full_next": In(2),
            "in_set": Out(2),
            "meta": Out(data.ArrayLayout(in_meta_layout(envelope.lanes), 2)),
            # with several generators: the half being filled (it flips at each batch-phase's end),
            # and `sync`, every generator's half the same (all have formed the batch-phase before)
            "half": Out(1),
            "sync": In(1),
            # the frame buffer as a ring (EngineEnvelope.ring): the lowest frame beat this generator
            # may still read (the batch start's first kernel row, at each batch's first phase), and
            # 1 once the pass's windows are formed (every beat may be overwritten)
            "release": Out(32),
            "release_all": Out(1, init=1),
        })

    def elaborate(self, platform):
        env = self._env
        G, g = self._groups, self._group
        L, A, E = env.lanes // G, env.act_bits, env.elems_per_beat      # L: this generator's lanes
        LE = E.bit_length() - 1
        # a frame-buffer word holds FB beats; a pass reads RB = 2^rbl of them a cycle (the most that
        # divide CW: cycles.window_read_beats), writing up to NB = E * FB elements into NB IN banks
        FB, NB = env.frame_word_beats, in_banks(env)
        LFB, LB = FB.bit_length() - 1, NB.bit_length() - 1
        Q, S = env.max_q, in_slots(env)      # IN's half offset, lanes a bank word holds
        d = self.desc
        m = Module()

        # the walk's data registers (constants registered at set-up, coordinates and addresses
        # loaded at every phase, batch and lane start) are reset-less: neither reset reaches them,
        # only the control state (one-hot states, flags, lane counter) is reset
        def s32(name):
            return Signal(signed(32), name=name, reset_less=True)

        def u32(name):
            return Signal(32, name=name, reset_less=True)

        # ---- layer constants (set-up after go) ----
        cw, hwcw, npos = (u32(n) for n in ("cw", "hwcw", "npos"))
        rcw = u32("rcw")                       # reads per pixel: CW / RB
        rbl = Signal(range(LFB + 1), name="rbl", reset_less=True)       # log2 RB
        rb = Signal(FB + 1, name="rb", reset_less=True)                 # RB
        rbm1 = Signal(max(1, LFB), name="rbm1", reset_less=True)        # RB - 1: a read's last beat is addr | RB - 1
        erb = Signal(range(NB + 1), name="erb", reset_less=True)        # E * RB: elements a read brings
        pk = Signal(8)
        # the last values the walk compares with, registered at set-up (no subtractor on those paths)
        pk_m1 = Signal(8, reset_less=True)
        # the output position's counters' starts (biased, nx_x below), and whether a loop has one
        # value: the walk keeps registered "at the last value" flags instead of comparing its
        # counters in the emission cycle
        wp_0, hp_0 = (Signal(16, name=n, reset_less=True) for n in ("wp_start", "hp_start"))
        cw_1, kw_1, wp_1, hp_1 = (Signal(name=n) for n in ("cw_1", "kw_1", "wp_1", "hp_1"))
        # the kernel walk goes one step further: "at the second-to-last value" flags, so the last
        # flags load from a flip-flop. Its counters k, kx count biased to start at 2 - n (mod
        # 2^16, n the loop's length; hw/biased.py), registered at set-up as k0, kx0: the
        # carry out of a step's own increment is the next "second-to-last" flag, a carry chain
        # instead of a compare (the sequencer's loops do the same)
        # (k is 16 bits: whether CW - 3 fits 16 bits is kept beside it; past that k is never pen)
        k0, kx0 = (Signal(16, name=n, reset_less=True) for n in ("k_idx0", "kx_idx0"))
        cw_m3_16 = Signal(name="cw_m3_16")
        cw_2, kw_2 = Signal(name="cw_2"), Signal(name="kw_2")
        k_p, kx_p = Signal(name="k_pen"), Signal(name="kx_pen")
        k_l, kx_l = Signal(name="k_last"), Signal(name="kx_last")
        # the lane's reads (LANE_BEATS / RB: CW / RB beats for each of the KH * KW kernel positions)
        # counted as one biased 32-bit index (rd, from rd0 at a lane start), whose carry is the
        # lane's "second-to-last read" flag (rd_p, rd_2 at a lane start): the lane's last-read flag
        # loads from it, one flip-flop, not from the kernel walk's six flags
        # (LANE_BEATS / RB registered in the second set-up cycle as `reads`, its flags in the third)
        rd, rd0 = Signal(32, name="rd_idx", reset_less=True), Signal(32, name="rd_idx0", reset_less=True)
        reads = u32("lane_reads")
        rd_p, rd_2 = Signal(name="rd_pen"), Signal(name="rd_2")
        lane_l, left_z = Signal(name="lane_last"), Signal(name="left_zero")     # lane == L-1, nx_left == 0
        lane_p = Signal(name="lane_pen")                                        # lane == L-2
        left_1 = Signal(name="left_one")                                        # nx_left == 1
        nx_x_l, nx_y_l = Signal(name="nx_x_last"), Signal(name="nx_y_last")     # nx_x == WP-1, nx_y == HP-1
        # the phase after this one: the next kernel-position row (dy_next: dx last, dy not) or
        # column (dx_next: dx not last), registered when the phase starts; neither: `dxy`, the last
        dy_next, dx_next, d_first = Signal(name="dy_next"), Signal(name="dx_next"), Signal(name="d_first")
        xstep, ystep, xstep_cw, ystep_wcw = (u32(n) for n in ("xstep", "ystep", "xstep_cw", "ystep_wcw"))
        dw_cw, dh_wcw, sw_cw, sh_wcw, pw_cw, ph_wcw = (u32(n) for n in (
            "dw_cw", "dh_wcw", "sw_cw", "sh_wcw", "pw_cw", "ph_wcw"))
        # ---- batch start (emitted coordinates) and phase ----
        bs_x, bs_y = Signal(16, name="bs_xb", reset_less=True), Signal(16, name="bs_yb", reset_less=True)  # biased
        bs_img, bs_left = u32("bs_img"), u32("bs_left")
        dy, dx = Signal(8), Signal(8)
        pdy, pdx, pdy_wcw, pdx_cw = u32("pdy"), u32("pdx"), u32("pdy_wcw"), u32("pdx_cw")
        ix_first, iy_first = s32("ix_first"), s32("iy_first")
        ix_first_dw, iy_first_dh = s32("ix_first_dw"), s32("iy_first_dh")         # ... + DW, + DH
        ix_first_ok, iy_first_ok = Signal(name="ix_first_ok"), Signal(name="iy_first_ok")
        ix_first_dw_ok, iy_first_dh_ok = Signal(name="ix_first_dw_ok"), Signal(name="iy_first_dh_ok")
        px, py = u32("px"), u32("py")
        # frame addresses (row * W * CW + column * CW + beat) are kept whole, by adding: the first
        # one of the phase's walk (ra_first + ca_first), the batch start's image, image + row and
        # image + row + column parts
        def s34(name):
            return Signal(signed(34), name=name, reset_less=True)

        first_ad, img_p, row_p, ad_p, c_kx = s34("first_ad"), s34("img_p"), s34("row_p"), s34("ad_p"), s34("c_kx")
        # x*xstep, x*xstep*CW, y*ystep, y*ystep*W*CW of the batch start and of the next lane,
        # kept by adding (no multiplier per batch)
        bs_px, bs_pcx, bs_py, bs_pry = u32("bs_px"), u32("bs_pcx"), u32("bs_py"), u32("bs_pry")
        nx_px, nx_pcx, nx_py, nx_pry = u32("nx_px"), u32("nx_pcx"), u32("nx_py"), u32("nx_pry")
        # ---- next lane to start ----
        # the next lane's output column and row, each kept biased, as x + 1 - WP (mod 2^16) and
        # y + 1 - HP (hw/biased.py): an advance's own carry out says the new column is the last
        # (nx_x_last), a carry chain and no compare of the counter
        nx_x, nx_y = Signal(16, name="nx_xb", reset_less=True), Signal(16, name="nx_yb", reset_less=True)
        nx_img, nx_left = u32("nx_img"), u32("nx_left")
        nx_ix, nx_iy = s32("nx_ix"), s32("nx_iy")
        # ... + DW, + DH and their bounds tests, kept beside them: a lane start loads registers
        nx_nix, nx_niy = s32("nx_nix"), s32("nx_niy")
        nx_xok, nx_yok = Signal(name="nx_xok"), Signal(name="nx_yok")
        nx_nxok, nx_nyok = Signal(name="nx_nxok"), Signal(name="nx_nyok")
        # the next lane's first address, the first address of its output row and of its image
        nx_ad, nx_rowad, nx_imgad = s34("nx_ad"), s34("nx_rowad"), s34("nx_imgad")
        # ---- the lane being walked ----
        # the input column of the next kernel column (w_ix + DW) and of the kernel row's second
        # (w_ix0 + DW), the input row of the next kernel row (w_iy + DH): the walk's coordinates
        # one step ahead, so that their bounds test is a compare of a register
        nix, nix0, niy = s32("nix"), s32("nix0"), s32("niy")
        # the read address (w_ra + w_ca + k) and the kernel row's first (w_ra + w_ca0), registered
        addr, rowad = s34("addr"), s34("rowad")
        # whether the walk's input column (w_ix), its kernel row's first (w_ix0) and its input row
        # (w_iy) are inside the input, registered
        ix_ok, ix0_ok, iy_ok = Signal(name="ix_ok"), Signal(name="ix0_ok"), Signal(name="iy_ok")
        # ... and whether nix, nix0 and niy are: the bounds tests of the walk's next steps, kept
        # beside them, so that `arrived_next` tests flip-flops (its compares were the fmax proxy's
        # critical path)
        nix_ok, nix0_ok, niy_ok = Signal(name="nix_ok"), Signal(name="nix0_ok"), Signal(name="niy_ok")
        kx, k = Signal(16, name="kx_idx"), Signal(16, name="k_idx")
        eoff, kbase, rem = u32("eoff"), u32("kbase"), s32("rem")
        lane = Signal(range(L + 1))
        wh = Signal()                       # IN half being filled
        # with G generators, each lane start moves the next-lane registers G positions on, one
        # position a cycle (`pend` more to go, `pend_nz` its flag), and the first batch-phase
        # starts with `group` of them (`init`, G - 1 cycles for every generator, so that they
        # start together): a lane takes max(reads, G) cycles
        multi = G > 1
        # A generator's own positions can run out a batch before the pass's do (it then forms no
        # lane of the last batch): the pass's positions left from the batch start (`gl`) and
        # whether this is the last batch (`g_last`) are kept beside them
        if multi:
            pend, pend_nz, init = Signal(range(G), name="pend"), Signal(name="pend_nz"), Signal(name="init")
            gl, g_last = u32("gl"), Signal(name="g_last")
        else:
            pend_nz = Const(0, 1)
        adv = Signal()                      # the next-lane registers advance one position

        pool = d.LAYER.POOL
        m.d.comb += self.frame_r.addr.eq(addr[LFB:])

        # emission stage -> s1 (frame data valid) -> IN write
        emit = Signal()
        lane_start = Signal()
        phase_end = Signal()
        s1 = {n: Signal(name=f"s1_{n}") for n in ("valid", "inb", "half", "done")}
        s1["lane"] = Signal.like(lane, name="s1_lane")
        s1["base"] = Signal(ceil_log2(2 * Q), name="s1_base")     # the beat's first element's IN address
        s1["rot"] = Signal(max(1, LB), name="s1_rot")               # (lane + element offset) mod NB
        s1["rw"] = Signal(max(1, LB), name="s1_rw")                 # (lane + offset - first beat x E) mod NB
        s1["n"] = Signal(range(NB + 1), name="s1_n")                # the read's elements
        s1["meta"] = s1_meta = Signal(in_meta_layout(env.lanes), name="s1_meta")

        def x_ok(v):
            return (v >= 0) & ((v <= d.IN_HW.W) if self._fault == "window_pad" else (v < d.IN_HW.W))

        def y_ok(v):
            return (v >= 0) & (v < d.IN_HW.H)

        inb = ix_ok & iy_ok
        # a read waits until its beat is in the frame buffer. `arrived` is a register: each cycle it
        # is loaded with whether the NEXT cycle's read (address and bounds) has its beat by the
        # loader's count of THIS cycle, so the walk's steering tests one flip-flop; the window sees
        # the load one cycle late (cycles.LOAD_LAG). Inside the input, the address and the count
        # are both below 2^FAW: each compare is FAW bits.
        FAW = ceil_log2(env.frame_beats) + 1
        arrived, arrived_next = Signal(name="arrived"), Signal(name="arrived_next")
        m.d.sync += arrived.eq(arrived_next)
        # two copies, for the lane start's two register groups (below)
        arr_copies = replicated(m, "arrived", 1, arrived_next, reset_less=False, copies=2)

        def has_beat(a, ok):
            # the read's last beat: a is a multiple of RB (pixels start at multiples of CW)
            a = a | rbm1 if FB > 1 else a
            # a < count as the sign of their FAW-bit difference: |a - count| <= frame_beats <= 2^(FAW-1)
            # (a is at least the release, which the loader keeps within frame_beats of its count, and
            # below the count plus frame_beats: LayerDescriptor.ring_fits), so it holds when the
            # addresses run past the frame buffer's depth and wrap around it
            return ~ok | ~self.frame_loading | (a[:FAW] - self.frame_count[:FAW])[FAW - 1]
        rot = lane[:LB] + eoff[:LB]
        m.d.sync += [s1["valid"].eq(emit), s1["inb"].eq(inb), s1["half"].eq(wh), s1["lane"].eq(lane),
                     s1["base"].eq(eoff + Mux(wh, Q, 0)), s1["rot"].eq(rot),
                     s1["rw"].eq(rot - (addr[:LFB] << LE) if FB > 1 else rot),
                     s1["n"].eq(Mux(rem > erb, erb, rem)), s1["done"].eq(phase_end)]
        # the flags the emission cycle tests beside `arrived`, registered: le, the lane's last read;
        # be, also the batch's last lane (lane == L-1 or no position left). After a read of the
        # walk each loads from the lane's second-to-last-read flag (rd_p), after a lane start from
        # set-up flags; at a batch's end the phase's last is `dxy`.
        le, be = Signal(name="lane_end"), Signal(name="batch_end")
        one1 = Signal()                     # a lane is one read (CW / RB, KW, KH all 1)
        dxy = Signal()                      # the phase is the last (dx, dy both last)
        be_walk = rd_p & (lane_l | left_z)
        lane_l_ls = Signal()
        be_ls = one1 & (lane_l_ls | left_1)

        # s2: the frame word registered as it leaves the memory (its output register), with the
        # read's s1 fields (cycles.LOAD_LAG counts the stage)
        frame_q = Signal.like(self.frame_r.data, name="frame_q", reset_less=True)
        s2 = {n: Signal.like(v, name=f"s2_{n}") for n, v in s1.items()}
        m.d.sync += [frame_q.eq(self.frame_r.data), *(s2[n].eq(v) for n, v in s1.items())]
        # IN write: bank b takes the read's element j = (b - lane - offset) mod NB, at address
        # offset + j (memories.skewed_bank), in the lane's slot of the word. The read's elements are
        # the word's from its first beat on, so bank b's is the word's element (b - s2_rw) mod NB:
        # the word rotated up by s2_rw (a barrel rotator, from a registered amount)
        vals = barrel_rotate(m, "rot", [frame_q.word_select(i, 8)[:A] for i in range(NB)], s2["rw"], down=False)
        slot = s2["lane"][LB:] if S > 1 else Const(0, 1)
        for b in range(NB):
            j = Signal(max(1, LB), name=f"j{b}")
            m.d.comb += j.eq(Const(b, max(1, LB)) - s2["rot"])
            elem = Signal(A, name=f"elem{b}")
            m.d.comb += elem.eq(Mux(s2["inb"], vals[b], 0))
            port = self.in_w[b]
            m.d.comb += [
                port.addr.eq(s2["base"] + j),
                port.data.eq(Cat(*([elem] * S))),
                port.en.eq(Mux(s2["valid"] & (j < s2["n"]), Const(1, S) << slot, 0)),
            ]
        with m.If(s2["done"]):
            m.d.comb += self.in_set.eq(Mux(s2["half"], 2, 1))
            m.d.sync += self.meta[s2["half"]].eq(s2["meta"])

        # the walk's states, one-hot registers (the hot paths test one flip-flop, not a decoded state)
        states = ("IDLE", "SETUP1", "SETUP2", "SETUP3", "PHASE_A", "PHASE_B", "WAIT", "RUN")
        st = {n: Signal(name=f"st_{n.lower()}", init=(n == "IDLE")) for n in states}
        m.d.comb += self.busy.eq(~st["IDLE"])
        with m.If(st["IDLE"]):
            with m.If(self.go):
                m.d.sync += [st["IDLE"].eq(0), st["SETUP1"].eq(1), self.release.eq(0), self.release_all.eq(0)]
        with m.If(st["SETUP1"]):
            # RB: the most beats (up to FB) that divide CW
            rbl_v = 0
            for l in range(1, LFB + 1):
                rbl_v = Mux(d.CW[:l] == 0, l, rbl_v)
            m.d.sync += [
                cw.eq(d.CW), pk.eq(Mux(pool, d.POOL.K, 1)),
                rcw.eq(d.CW >> rbl_v), rbl.eq(rbl_v),
            ]
            m.d.sync += [st["SETUP1"].eq(0), st["SETUP2"].eq(1)]
        with m.If(st["SETUP2"]):
            m.d.sync += [
                xstep.eq(d.XSTEP), ystep.eq(d.YSTEP), dw_cw.eq(d.DW_CW), sw_cw.eq(d.SW_CW),
                pw_cw.eq(d.PW_CW), npos.eq(d.NPOS),
                pk_m1.eq(pk - 1),
                k0.eq(biased_start(rcw, 2)), cw_m3_16.eq((rcw - 3)[16:32] == 0),
                reads.eq(d.LANE_BEATS >> rbl),
                rb.eq(Const(1, FB + 1) << rbl), rbm1.eq((Const(1, FB + 1) << rbl) - 1),
                erb.eq(Const(E, NB.bit_length()) << rbl),
                kx0.eq(biased_start(d.KERNEL.KW, 2)),
                cw_2.eq(rcw == 2), kw_2.eq(d.KERNEL.KW == 2),
                wp_0.eq(biased_start(d.OUT_HW.WP, 1)), hp_0.eq(biased_start(d.OUT_HW.HP, 1)),
                cw_1.eq(rcw == 1), kw_1.eq(d.KERNEL.KW == 1),
                wp_1.eq(d.OUT_HW.WP == 1), hp_1.eq(d.OUT_HW.HP == 1),
            ]
            m.d.sync += [st["SETUP2"].eq(0), st["SETUP3"].eq(1)]
        with m.If(st["SETUP3"]):
            # bs_left: this generator's positions (group, group + G, ... below NPOS)
            m.d.sync += [
                hwcw.eq(d.HW_CW), xstep_cw.eq(d.XSTEP_CW), ystep_wcw.eq(d.YSTEP_WCW),
                dh_wcw.eq(d.DH_WCW), sh_wcw.eq(d.SH_WCW), ph_wcw.eq(d.PH_WCW),
                c_kx.eq(dw_cw - cw + rb),
                rd0.eq(biased_start(reads, 2, bits=32)), rd_2.eq(reads == 2), one1.eq(reads == 1),
                bs_x.eq(wp_0), bs_y.eq(hp_0), bs_img.eq(0), bs_left.eq((npos + (G - 1 - g)) >> (G.bit_length() - 1)),
                bs_px.eq(0), bs_pcx.eq(0), bs_py.eq(0), bs_pry.eq(0),
                dy.eq(0), dx.eq(0), pdy.eq(0), pdx.eq(0), pdy_wcw.eq(0), pdx_cw.eq(0),
            ]
            if multi:
                m.d.sync += [init.eq(1), gl.eq(npos), g_last.eq(npos <= env.lanes)]
            m.d.sync += [st["SETUP3"].eq(0), st["PHASE_A"].eq(1)]
        with m.If(st["PHASE_A"]):
            m.d.sync += [
                px.eq(bs_px), py.eq(bs_py),
                ix_first.eq(pdx - d.PAD.PW), iy_first.eq(pdy - d.PAD.PH),
                ix_first_dw.eq(pdx - d.PAD.PW + d.DILATION.DW), iy_first_dh.eq(pdy - d.PAD.PH + d.DILATION.DH),
                first_ad.eq((pdy_wcw - ph_wcw) + (pdx_cw - pw_cw)),
                img_p.eq(bs_img), row_p.eq(bs_img + bs_pry), ad_p.eq(bs_img + bs_pry + bs_pcx),
                dy_next.eq((dx == pk_m1) & (dy != pk_m1)), dx_next.eq(dx != pk_m1),
                d_first.eq((dy == 0) & (dx == 0)),
                dxy.eq((dx == pk_m1) & (dy == pk_m1)),
            ]
            # with several generators, the next batch-phase waits here until every generator has
            # formed this one (its loads are the same in every cycle it waits)
            with m.If(self.sync if multi else 1):
                m.d.sync += [st["PHASE_A"].eq(0), st["PHASE_B"].eq(1)]
        with m.If(st["PHASE_B"]):
            # a batch's first phase: the frame below its first position's first kernel row (the
            # image's first beat where that row is padding) is read no more
            with m.If(d_first):
                m.d.sync += self.release.eq(Mux(bs_pry >= ph_wcw, row_p - ph_wcw, img_p))
            m.d.sync += [
                nx_ix.eq(px + ix_first), nx_iy.eq(py + iy_first),
                nx_nix.eq(px + ix_first_dw), nx_niy.eq(py + iy_first_dh),
                nx_xok.eq(x_ok((px + ix_first)[:32].as_signed())), nx_yok.eq(y_ok((py + iy_first)[:32].as_signed())),
                nx_nxok.eq(x_ok((px + ix_first_dw)[:32].as_signed())),
                nx_nyok.eq(y_ok((py + iy_first_dh)[:32].as_signed())),
                ix_first_ok.eq(x_ok(ix_first)), iy_first_ok.eq(y_ok(iy_first)),
                ix_first_dw_ok.eq(x_ok(ix_first_dw)), iy_first_dh_ok.eq(y_ok(iy_first_dh)),
                nx_ad.eq(ad_p + first_ad), nx_rowad.eq(row_p + first_ad), nx_imgad.eq(img_p + first_ad),
                nx_x.eq(bs_x), nx_y.eq(bs_y), nx_img.eq(bs_img), nx_left.eq(bs_left), lane.eq(0),
                nx_px.eq(bs_px), nx_pcx.eq(bs_pcx), nx_py.eq(bs_py), nx_pry.eq(bs_pry),
                lane_l.eq(L == 1), lane_p.eq(L == 2), left_z.eq(bs_left == 0), left_1.eq(bs_left == 1),
                nx_x_l.eq(bs_x == 0), nx_y_l.eq(bs_y == 0),         # biased: x == WP - 1 is 0
            ]
            if multi:
                m.d.sync += [pend.eq(Mux(init, G - 1, 0)), pend_nz.eq(init)]
            m.d.sync += [st["PHASE_B"].eq(0), st["WAIT"].eq(1)]
        def end_batch_phase(state, lanes, last_phase, last_batch):
            """The batch-phase's windows are formed: IN's half is full (one cycle later), then the
            next phase, the next batch (its start: the next lane's position) or the end."""
            m.d.comb += phase_end.eq(1)
            m.d.sync += [
                s1_meta.lanes.eq(lanes), s1_meta.first_phase.eq(d_first),
                s1_meta.last_phase.eq(last_phase), s1_meta.last_batch.eq(last_batch),
                wh.eq(~wh), st[state].eq(0),
            ]
            with m.If(last_phase):
                m.d.sync += [dy.eq(0), dx.eq(0), pdy.eq(0), pdx.eq(0), pdy_wcw.eq(0), pdx_cw.eq(0),
                             bs_x.eq(nx_x), bs_y.eq(nx_y), bs_img.eq(nx_img), bs_left.eq(nx_left),
                             bs_px.eq(nx_px), bs_pcx.eq(nx_pcx), bs_py.eq(nx_py), bs_pry.eq(nx_pry)]
                if multi:
                    m.d.sync += [gl.eq(gl - env.lanes), g_last.eq(gl <= 2 * env.lanes)]
                with m.If(last_batch):
                    m.d.sync += [st["IDLE"].eq(1), self.release_all.eq(1)]
                with m.Else():
                    m.d.sync += st["PHASE_A"].eq(1)
            with m.Else():
                m.d.sync += st["PHASE_A"].eq(1)
            # each under one registered flag (not nested under `last_phase`): fewer terms in the enables
            with m.If(dy_next):
                m.d.sync += [dx.eq(0), pdx.eq(0), pdx_cw.eq(0), dy.eq(dy + 1),
                             pdy.eq(pdy + d.STRIDE.SH), pdy_wcw.eq(pdy_wcw + sh_wcw)]
            with m.If(dx_next):
                m.d.sync += [dx.eq(dx + 1), pdx.eq(pdx + d.STRIDE.SW), pdx_cw.eq(pdx_cw + sw_cw)]

        m.d.comb += self.half.eq(wh)
        # whether IN's half `wh` is free, registered from the engine's next value of the halves' flags:
        # exact in WAIT, since `wh` flips only at a batch-phase's end, which leaves RUN or WAIT for
        # PHASE_A or IDLE (a WAIT cycle follows PHASE_B or a WAIT cycle that kept `wh`)
        free = Signal(init=1, name="half_free")
        m.d.sync += free.eq(~self.in_full_next.bit_select(wh, 1))
        with m.If(st["WAIT"]):
            with m.If(free & ~pend_nz):
                # with several generators, one with no position in this batch (left_z before its
                # first lane) marks its part of the half formed, with no lane
                with m.If(left_z if multi else 0):
                    end_batch_phase("WAIT", 0, dxy, g_last if multi else 1)
                with m.Else():
                    m.d.sync += [st["WAIT"].eq(0), st["RUN"].eq(1)]
            if multi:
                # the first batch-phase's start has moved `group` positions on: that is this
                # generator's batch start from now on
                with m.If(init & ~pend_nz):
                    m.d.sync += [init.eq(0), bs_x.eq(nx_x), bs_y.eq(nx_y), bs_img.eq(nx_img), bs_px.eq(nx_px),
                                 bs_pcx.eq(nx_pcx), bs_py.eq(nx_py), bs_pry.eq(nx_pry)]
        with m.If(st["RUN"]):
            m.d.comb += self.load_wait.eq(~arrived)
            # with G generators a lane's last read waits until the next lane's position is ready
            with m.If(arrived & ~(le & pend_nz) if multi else arrived):
                m.d.comb += emit.eq(1)
                # element offset and kernel walk
                (nk, nk_p), (nkx, nkx_p), (nrd, nrd_p) = (biased_step(c) for c in (k, kx, rd))    # carry: "now second-to-last"
                with m.If(~k_l):
                    m.d.sync += [k.eq(nk), eoff.eq(eoff + erb), rem.eq(rem - erb),
                                 k_l.eq(k_p), k_p.eq(nk_p & cw_m3_16),
                                 addr.eq(addr + rb)]
                with m.Else():
                    m.d.sync += [k.eq(k0), kbase.eq(kbase + d.IN_C.C), eoff.eq(kbase + d.IN_C.C), rem.eq(d.IN_C.C),
                                 k_l.eq(cw_1), k_p.eq(cw_2)]
                    with m.If(~kx_l):
                        nnix = (nix + d.DILATION.DW)[:32].as_signed()
                        m.d.sync += [kx.eq(nkx), nix.eq(nnix), ix_ok.eq(nix_ok), nix_ok.eq(x_ok(nnix)),
                                     addr.eq(addr + c_kx), kx_l.eq(kx_p), kx_p.eq(nkx_p)]
                    with m.Else():
                        nniy = (niy + d.DILATION.DH)[:32].as_signed()
                        m.d.sync += [kx.eq(kx0), nix.eq(nix0), ix_ok.eq(ix0_ok), nix_ok.eq(nix0_ok),
                                     niy.eq(nniy), iy_ok.eq(niy_ok), niy_ok.eq(y_ok(nniy)),
                                     addr.eq(rowad + dh_wcw), rowad.eq(rowad + dh_wcw),
                                     kx_l.eq(kw_1), kx_p.eq(kw_2)]
                with m.If(~le):
                    m.d.sync += [rd.eq(nrd), rd_p.eq(nrd_p), le.eq(rd_p), be.eq(be_walk)]
                with m.Else():
                    m.d.sync += [lane.eq(lane + 1), lane_l.eq(lane_p), lane_p.eq(lane == L - 3)]
                # be implies le (be_walk and be_ls include le's terms): tested alone, one term fewer
                with m.If(be):
                    end_batch_phase("RUN", lane + 1, dxy, g_last if multi else left_z)    # be: the phase's last is dxy
        # after the states: the lane start's loads win over the kernel walk's updates
        # lane start: working registers from nx_*; nx_* then move to the following position
        m.d.comb += lane_l_ls.eq(Mux(st["RUN"], lane_p, lane_l))
        # a lane starts in WAIT once IN's half is free (a generator with no position left ends the
        # batch-phase instead), and in RUN after a lane's last read (le) that is not the batch's (be)
        wait_ls = st["WAIT"] & free & ~pend_nz & (~left_z if multi else 1)

        def starts(arr):
            return wait_ls | (st["RUN"] & arr & le & ~be & ~pend_nz)
        # `arrived` steers hundreds of registers through the lane start (the working registers it
        # loads, the next-lane registers it advances): each group reads its own copy of it
        # (hw/fanout.py), so no one net reaches them all (the fmax proxy's critical path was that net)
        arr_ls, arr_adv = arr_copies[0], arr_copies[1]
        m.d.comb += lane_start.eq(starts(arrived))
        with m.If(lane_start):
            m.d.sync += [le.eq(one1), be.eq(be_ls)]
        with m.If(starts(arr_ls)):
            m.d.sync += [nix.eq(nx_nix), nix0.eq(nx_nix), niy.eq(nx_niy), addr.eq(nx_ad), rowad.eq(nx_ad),
                         ix_ok.eq(nx_xok), ix0_ok.eq(nx_xok), iy_ok.eq(nx_yok),
                         nix_ok.eq(nx_nxok), nix0_ok.eq(nx_nxok), niy_ok.eq(nx_nyok),
                         rd.eq(rd0), rd_p.eq(rd_2), kx.eq(kx0), k.eq(k0), eoff.eq(0), kbase.eq(0),
                         rem.eq(d.IN_C.C), nx_left.eq(nx_left - 1), left_z.eq(left_1),
                         left_1.eq(nx_left == 2),
                         k_l.eq(cw_1), kx_l.eq(kw_1), k_p.eq(cw_2), kx_p.eq(kw_2)]
        if multi:
            # in the first batch-phase's G - 1 cycles, generator g walks its first g positions
            m.d.comb += adv.eq(starts(arr_adv) | (pend_nz & (~init | (pend >= G - g))))
            with m.If(lane_start):
                m.d.sync += [pend.eq(G - 1), pend_nz.eq(1)]
            with m.Elif(pend_nz):
                m.d.sync += [pend.eq(pend - 1), pend_nz.eq(pend != 1)]
        else:
            m.d.comb += adv.eq(starts(arr_adv))
        with m.If(adv):
            with m.If(nx_x_l):
                m.d.sync += [nx_x.eq(wp_0), nx_ix.eq(ix_first), nx_nix.eq(ix_first_dw), nx_xok.eq(ix_first_ok),
                             nx_nxok.eq(ix_first_dw_ok),
                             nx_px.eq(0), nx_pcx.eq(0),
                             nx_x_l.eq(wp_1)]
                with m.If(nx_y_l):
                    m.d.sync += [nx_y.eq(hp_0), nx_py.eq(0), nx_pry.eq(0), nx_iy.eq(iy_first), nx_niy.eq(iy_first_dh),
                                 nx_yok.eq(iy_first_ok), nx_nyok.eq(iy_first_dh_ok), nx_img.eq(nx_img + hwcw),
                                 nx_ad.eq(nx_imgad + hwcw), nx_rowad.eq(nx_imgad + hwcw), nx_imgad.eq(nx_imgad + hwcw),
                                 nx_y_l.eq(hp_1)]
                with m.Else():
                    nyi, nnyi = (nx_iy + ystep)[:32].as_signed(), (nx_niy + ystep)[:32].as_signed()
                    ny, ny_l = biased_step(nx_y)     # the carry out: "now at the last row"
                    m.d.sync += [nx_y.eq(ny), nx_iy.eq(nyi), nx_niy.eq(nnyi), nx_yok.eq(y_ok(nyi)),
                                 nx_nyok.eq(y_ok(nnyi)),
                                 nx_ad.eq(nx_rowad + ystep_wcw), nx_rowad.eq(nx_rowad + ystep_wcw),
                                 nx_py.eq(nx_py + ystep), nx_pry.eq(nx_pry + ystep_wcw), nx_y_l.eq(ny_l)]
            with m.Else():
                nxi, nnxi = (nx_ix + xstep)[:32].as_signed(), (nx_nix + xstep)[:32].as_signed()
                nxx, nxx_l = biased_step(nx_x)   # the carry out: "now at the last column"
                m.d.sync += [nx_x.eq(nxx), nx_ix.eq(nxi), nx_nix.eq(nnxi), nx_xok.eq(x_ok(nxi)),
                             nx_nxok.eq(x_ok(nnxi)),
                             nx_ad.eq(nx_ad + xstep_cw),
                             nx_px.eq(nx_px + xstep), nx_pcx.eq(nx_pcx + xstep_cw), nx_x_l.eq(nxx_l)]

        # `arrived` one cycle ahead: the read after this cycle's (the walk's next address, a lane
        # start's first, or the same one when nothing is emitted)
        m.d.comb += arrived_next.eq(Mux(
            lane_start, has_beat(nx_ad, nx_xok & nx_yok),
            Mux(emit,
                Mux(~k_l, has_beat(addr + rb, inb),
                    Mux(~kx_l, has_beat(addr + c_kx, nix_ok & iy_ok), has_beat(rowad + dh_wcw, ix0_ok & niy_ok))),
                has_beat(addr, inb))))
        return m

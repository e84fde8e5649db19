"""The DeBut SIMD engine: one broadcast weight, one MAC per lane per cycle (see docs/engine.md)."""

from __future__ import annotations

from amaranth import C, Cat, ClockDomain, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from litefly.errors import ConfigError
from litefly.hw import regmap
from litefly.hw.spec import EngineSpec

from .axil_slave import AxiLiteSlave, axil_signature

FAULTS = ("weight_addr", "rounding")
WRITE_STAGE = 4          # cycles from a row's last issue to its write-enable cycle


def _bits(n: int) -> int:
    return max(1, (max(n, 1) - 1).bit_length())


class DeButEngine(wiring.Component):
    def __init__(self, spec: EngineSpec, fault: str | None = None, external_clock: bool = True) -> None:
        if fault is not None and fault not in FAULTS:
            raise ConfigError(f"fault={fault!r} is not one of {', '.join(FAULTS)}")
        self._spec = spec
        self._fault = fault
        self._external_clock = external_clock
        sb = spec.stream_bits
        sig = {
            "aclk": In(1), "aresetn": In(1),
            "s_axis_tdata": In(sb), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "s_axis_tlast": In(1), "s_axis_tkeep": In(sb // 8),
            "m_axis_tdata": Out(sb), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1), "m_axis_tkeep": Out(sb // 8),
        }
        sig.update(axil_signature(spec.axil_addr_bits))
        super().__init__(sig)

    def elaborate(self, platform):
        spec = self._spec
        lay = spec.layer
        fmt = lay.format
        chain = lay.chain
        N = len(chain)
        L, A, W, SB = spec.lanes, spec.act_bits, spec.weight_bits, spec.stream_bits
        E = spec.elems_per_beat
        CH = L // E                       # chunks (beats) per data word
        Q1, PN = spec.in_elems, spec.out_elems
        WD = spec.work_depth
        ACC = spec.acc_bits
        EW = spec.weights_per_beat
        BP = spec.biases_per_beat
        m = Module()
        if self._external_clock:
            m.domains.sync = cd = ClockDomain("sync", local=True)
            m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]

        # ---------------- registers -------------------------------------------------
        m.submodules.axil = axil = AxiLiteSlave(spec.axil_addr_bits)
        for name in axil_signature(spec.axil_addr_bits):
            port, mine = getattr(axil, name), getattr(self, name)
            if name in ("s_axil_awready", "s_axil_wready", "s_axil_bresp", "s_axil_bvalid",
                        "s_axil_arready", "s_axil_rdata", "s_axil_rresp", "s_axil_rvalid"):
                m.d.comb += mine.eq(port)
            else:
                m.d.comb += port.eq(mine)
        tile_batches = Signal(32)
        shifts = [Signal(range(ACC), name=f"shift{i}") for i in range(N)]
        ctrl = Signal(32)
        m.d.comb += ctrl.eq(Mux(axil.wr_stb & (axil.wr_addr == regmap.REG["CTRL"]), axil.wr_data, 0))
        start = ctrl[0]
        load_params = ctrl[1]
        soft = Signal()
        m.d.comb += soft.eq(ctrl[2])
        clear_counters = ctrl[3] | soft
        with m.If(axil.wr_stb):
            with m.Switch(axil.wr_addr):
                with m.Case(regmap.REG["TILE_BATCHES"]):
                    m.d.sync += tile_batches.eq(axil.wr_data)
                for i in range(N):
                    with m.Case(regmap.SHIFT_BASE + 4 * i):
                        m.d.sync += shifts[i].eq(axil.wr_data)

        # shared flags (datapath state; soft reset clears them)
        busy = Signal()
        done = Signal()
        params_valid = Signal()
        in_full = Signal(2)
        out_full = Signal(2)

        # ---------------- memories -----------------------------------------------------
        m.submodules.in_mem = in_mem = Memory(shape=unsigned(L * A), depth=2 * Q1, init=[])
        in_wp = in_mem.write_port(granularity=E * A)
        in_rp = in_mem.read_port()
        if N > 1:
            m.submodules.work_mem = work_mem = Memory(shape=unsigned(L * A), depth=2 * WD, init=[])
            work_wp = work_mem.write_port()
            work_rp = work_mem.read_port()
        m.submodules.out_mem = out_mem = Memory(shape=unsigned(L * A), depth=2 * PN, init=[])
        out_wp = out_mem.write_port()
        out_rp = out_mem.read_port()
        m.submodules.w_mem = w_mem = Memory(shape=unsigned(SB), depth=spec.weight_beats, init=[])
        w_wp = w_mem.write_port()
        w_rp = w_mem.read_port()
        if fmt.bias:
            m.submodules.b_mem = b_mem = Memory(shape=unsigned(SB), depth=spec.bias_beats, init=[])
            b_wp = b_mem.write_port()
            b_rp = b_mem.read_port()

        # ---------------- loader ---------------------------------------------------------
        ld_params = Signal()
        ld_data = Signal()
        ld_cnt = Signal(range(max(spec.param_beats, 2)))
        ld_chunk = Signal(range(max(CH, 2)))
        ld_e = Signal(range(max(Q1, 2)))
        ld_half = Signal()
        ld_left = Signal(32)
        accept = Signal()
        m.d.comb += [
            self.s_axis_tready.eq(ld_params | (ld_data & ~in_full.bit_select(ld_half, 1))),
            accept.eq(self.s_axis_tvalid & self.s_axis_tready),
        ]
        m.d.comb += [
            w_wp.addr.eq(ld_cnt), w_wp.data.eq(self.s_axis_tdata),
            w_wp.en.eq(accept & ld_params & (ld_cnt < spec.weight_beats)),
        ]
        if fmt.bias:
            m.d.comb += [b_wp.addr.eq(ld_cnt - spec.weight_beats), b_wp.data.eq(self.s_axis_tdata),
                         b_wp.en.eq(accept & ld_params & (ld_cnt >= spec.weight_beats))]
        with m.If(accept & ld_params):
            m.d.sync += ld_cnt.eq(ld_cnt + 1)
            with m.If(ld_cnt == spec.param_beats - 1):
                m.d.sync += [ld_params.eq(0), ld_cnt.eq(0), params_valid.eq(1)]
        m.d.comb += [
            in_wp.addr.eq(Mux(ld_half, ld_e + Q1, ld_e)),
            in_wp.data.eq(Cat(*([self.s_axis_tdata[:E * A]] * CH))),
            in_wp.en.eq(Mux(accept & ld_data, 1 << ld_chunk, 0)),
        ]
        with m.If(accept & ld_data):
            m.d.sync += ld_chunk.eq(ld_chunk + 1)
            with m.If(ld_chunk == CH - 1):
                m.d.sync += [ld_chunk.eq(0), ld_e.eq(ld_e + 1)]
                with m.If(ld_e == Q1 - 1):
                    m.d.sync += [ld_e.eq(0), ld_half.eq(~ld_half), ld_left.eq(ld_left - 1)]
                    with m.If(ld_left == 1):
                        m.d.sync += ld_data.eq(0)
        in_set = Signal(2)
        m.d.comb += in_set.eq(Mux(accept & ld_data & (ld_chunk == CH - 1) & (ld_e == Q1 - 1),
                                  Mux(ld_half, 2, 1), 0))

        # ---------------- sequencer (issue) -------------------------------------------------
        # per-factor loop limits and strides, selected by the factor index
        fi = Signal(range(max(N, 2)))
        span = 2 * max(max(f.p, f.q) for f in chain) + 1
        cur = {k: Signal(range(span), name=f"cur_{k}") for k in ("s", "r", "t", "g", "st", "rt")}
        # registered (loaded when a factor starts): keeps constants out of combinational
        # processes, which Icarus would never evaluate, and off the critical path
        load_factor = Signal(range(max(N, 2)))
        load_limits = Signal()
        with m.If(load_limits):
            with m.Switch(load_factor):
                for i, f in enumerate(chain):
                    with m.Case(i):
                        m.d.sync += [cur["s"].eq(f.s), cur["r"].eq(f.r), cur["t"].eq(f.t), cur["g"].eq(f.blocks),
                                     cur["st"].eq(f.s * f.t), cur["rt"].eq(f.r * f.t)]
        maxdim = max(max(f.p, f.q) for f in chain)
        j = Signal(range(maxdim + 1))
        u = Signal(range(maxdim + 1))
        a = Signal(range(maxdim + 1))
        b = Signal(range(maxdim + 1))
        rd_bt = Signal(range(2 * maxdim + 1))
        rd_j = Signal(range(2 * maxdim + 1))
        wr_at = Signal(range(2 * maxdim + 1))
        wr_j = Signal(range(2 * maxdim + 1))
        wword = Signal(range(max(spec.weight_beats, 2)))
        wsub = Signal(range(max(EW, 2)))
        widx = Signal(range(spec.total_weights + 1))
        sq_left = Signal(32)
        sq_in = Signal()       # IN half being read
        sq_out = Signal()      # OUT half being written
        drain = Signal(range(WRITE_STAGE + 1))
        issue = Signal()
        in_clr = Signal(2)
        rd = Signal(range(2 * maxdim + 1))
        wr = Signal(range(2 * maxdim + 1))
        m.d.comb += [rd.eq(rd_j + rd_bt + u), wr.eq(wr_j + wr_at + u)]
        row_end = b == cur["s"] - 1
        fac_end = row_end & (a == cur["r"] - 1) & (u == cur["t"] - 1) & (j == cur["g"] - 1)
        idle = Signal()
        with m.FSM(name="seq"):
            with m.State("IDLE"):
                m.d.comb += idle.eq(1)
                with m.If((sq_left != 0) & in_full.bit_select(sq_in, 1) & ~out_full.bit_select(sq_out, 1)):
                    m.d.sync += [fi.eq(0), j.eq(0), u.eq(0), a.eq(0), b.eq(0), rd_bt.eq(0), rd_j.eq(0),
                                 wr_at.eq(0), wr_j.eq(0), wword.eq(0), wsub.eq(0), widx.eq(0)]
                    m.d.comb += [load_limits.eq(1), load_factor.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += issue.eq(1)
                m.d.sync += widx.eq(widx + 1)
                with m.If(wsub == EW - 1):
                    m.d.sync += [wsub.eq(0), wword.eq(wword + 1)]
                with m.Else():
                    m.d.sync += wsub.eq(wsub + 1)
                m.d.sync += [b.eq(b + 1), rd_bt.eq(rd_bt + cur["t"])]
                with m.If(row_end):
                    m.d.sync += [b.eq(0), rd_bt.eq(0), a.eq(a + 1), wr_at.eq(wr_at + cur["t"])]
                    with m.If(a == cur["r"] - 1):
                        m.d.sync += [a.eq(0), wr_at.eq(0), u.eq(u + 1)]
                        with m.If(u == cur["t"] - 1):
                            m.d.sync += [u.eq(0), j.eq(j + 1), rd_j.eq(rd_j + cur["st"]), wr_j.eq(wr_j + cur["rt"])]
                with m.If(fac_end):
                    m.d.sync += [j.eq(0), rd_j.eq(0), wr_j.eq(0)]
                    with m.If(fi == 0):
                        m.d.comb += in_clr.eq(Mux(sq_in, 2, 1))
                        m.d.sync += sq_in.eq(~sq_in)
                    with m.If(fi == N - 1):
                        m.d.sync += [sq_left.eq(sq_left - 1), sq_out.eq(~sq_out)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [fi.eq(fi + 1), drain.eq(WRITE_STAGE - 1)]
                        m.d.comb += [load_limits.eq(1), load_factor.eq(fi + 1)]
                        m.next = "DRAIN"
                with m.If(soft):
                    m.next = "IDLE"
            with m.State("DRAIN"):
                m.d.sync += drain.eq(drain - 1)
                with m.If(drain == 0):
                    m.next = "RUN"
                with m.If(soft):
                    m.next = "IDLE"
        starved = Signal()
        m.d.comb += starved.eq(busy & idle & (sq_left != 0) & ~in_full.bit_select(sq_in, 1))

        # read ports
        m.d.comb += [
            in_rp.addr.eq(Mux(sq_in, rd + Q1, rd)),
            w_rp.addr.eq(wword),
        ]
        if N > 1:
            m.d.comb += work_rp.addr.eq(Mux((fi - 1)[0], rd + WD, rd))
        if fmt.bias:
            bw = _bits(BP) if BP > 1 else 0
            m.d.comb += b_rp.addr.eq(wr >> bw if BP > 1 else wr)

        # ---------------- pipeline ------------------------------------------------------------
        # stage 1: memory data valid
        p1 = dict(valid=Signal(), first=Signal(), last=Signal(), fi=Signal.like(fi), wr=Signal.like(wr),
                  wsub=Signal.like(wsub), bsub=Signal(range(max(BP, 2))), out_half=Signal(), batch_end=Signal())
        m.d.sync += [
            p1["valid"].eq(issue), p1["first"].eq(b == 0), p1["last"].eq(row_end), p1["fi"].eq(fi),
            p1["wr"].eq(wr), p1["wsub"].eq(wsub), p1["bsub"].eq(wr if BP > 1 else 0), p1["out_half"].eq(sq_out),
            p1["batch_end"].eq(issue & fac_end & (fi == N - 1)),
        ]
        if self._fault == "weight_addr":
            m.d.sync += p1["wsub"].eq(Mux(widx == 1, 0, wsub))
        x_word = Signal(L * A)
        if N > 1:
            m.d.comb += x_word.eq(Mux(p1["fi"] == 0, in_rp.data, work_rp.data))
        else:
            m.d.comb += x_word.eq(in_rp.data)
        wsel = Signal(signed(W))
        m.d.comb += wsel.eq(w_rp.data.word_select(p1["wsub"], W))
        # stage 2: products registered
        p2 = dict(valid=Signal(), first=Signal(), last=Signal(), fi=Signal.like(fi), wr=Signal.like(wr),
                  out_half=Signal(), batch_end=Signal())
        for k, v in p2.items():
            m.d.sync += v.eq(p1[k])
        prods = [Signal(signed(A + W), name=f"prod{l}") for l in range(L)]
        for l in range(L):
            m.d.sync += prods[l].eq(x_word[l * A:(l + 1) * A].as_signed() * wsel)
        bias2 = Signal(signed(max(fmt.bias_bits, 2)))
        if fmt.bias:
            m.d.sync += bias2.eq(b_rp.data.word_select(p1["bsub"], 32)[:fmt.bias_bits].as_signed())
        # stage 3: accumulate; on a row's last term, register the result
        p3 = dict(valid=Signal(), fi=Signal.like(fi), wr=Signal.like(wr), out_half=Signal(), batch_end=Signal())
        accs = [Signal(signed(ACC), name=f"acc{l}") for l in range(L)]
        res = [Signal(signed(ACC), name=f"res{l}") for l in range(L)]
        m.d.sync += p3["valid"].eq(p2["valid"] & p2["last"])
        for k in ("fi", "wr", "out_half", "batch_end"):
            m.d.sync += p3[k].eq(p2[k])
        add_bias = Signal()
        m.d.comb += add_bias.eq((p2["fi"] == N - 1) if fmt.bias else 0)
        for l in range(L):
            total = Signal(signed(ACC), name=f"sum{l}")
            m.d.comb += total.eq(Mux(p2["first"], 0, accs[l]) + prods[l])
            with m.If(p2["valid"]):
                m.d.sync += accs[l].eq(total)
                m.d.sync += res[l].eq(total + Mux(add_bias, bias2, 0))
        # stage 4: requantise
        p4 = dict(valid=Signal(), fi=Signal.like(fi), wr=Signal.like(wr), out_half=Signal(), batch_end=Signal())
        for k, v in p4.items():
            m.d.sync += v.eq(p3[k])
        shift = Signal(range(ACC))
        with m.Switch(p3["fi"]):
            for i in range(N):
                with m.Case(i):
                    m.d.comb += shift.eq(shifts[i])
        rnd = Signal(ACC + 1)
        if self._fault == "rounding":
            m.d.comb += rnd.eq(0)
        else:
            m.d.comb += rnd.eq((C(1, ACC + 1) << shift) >> 1)
        lo, hi = -(1 << (A - 1)), (1 << (A - 1)) - 1
        relu = fmt.relu
        qs = [Signal(signed(A), name=f"q{l}") for l in range(L)]
        for l in range(L):
            rounded = Signal(signed(ACC + 1), name=f"rounded{l}")
            shifted = Signal(signed(ACC + 1), name=f"shifted{l}")
            m.d.comb += [rounded.eq(res[l] + rnd), shifted.eq(rounded >> shift)]
            sat = Mux(shifted > hi, hi, Mux(shifted < lo, lo, shifted))
            if relu:
                sat = Mux((p3["fi"] == N - 1) & (shifted < 0), 0, sat)
            m.d.sync += qs[l].eq(sat)
        q_word = Cat(*qs)
        to_out = p4["fi"] == N - 1
        m.d.comb += [
            out_wp.addr.eq(Mux(p4["out_half"], p4["wr"] + PN, p4["wr"])), out_wp.data.eq(q_word),
            out_wp.en.eq(p4["valid"] & to_out),
        ]
        if N > 1:
            m.d.comb += [work_wp.addr.eq(Mux(p4["fi"][0], p4["wr"] + WD, p4["wr"])), work_wp.data.eq(q_word),
                         work_wp.en.eq(p4["valid"] & ~to_out)]
        out_set = Signal(2)
        m.d.comb += out_set.eq(Mux(p4["valid"] & p4["batch_end"], Mux(p4["out_half"], 2, 1), 0))

        # ---------------- unloader ---------------------------------------------------------------
        m.submodules.ofifo = ofifo = SyncFIFO(width=L * A, depth=4)
        un_half = Signal()
        un_e = Signal(range(PN + 1))
        un_left = Signal(32)           # batches still to read from memory
        inflight = Signal()
        rd_issue = Signal()
        out_clr = Signal(2)
        m.d.comb += rd_issue.eq((un_left != 0) & out_full.bit_select(un_half, 1) & (ofifo.level + inflight < 3))
        m.d.comb += out_rp.addr.eq(Mux(un_half, un_e + PN, un_e))
        m.d.sync += inflight.eq(rd_issue)
        m.d.comb += [ofifo.w_en.eq(inflight), ofifo.w_data.eq(out_rp.data)]
        with m.If(rd_issue):
            m.d.sync += un_e.eq(un_e + 1)
            with m.If(un_e == PN - 1):
                m.d.sync += [un_e.eq(0), un_half.eq(~un_half), un_left.eq(un_left - 1)]
                m.d.comb += out_clr.eq(Mux(un_half, 2, 1))
        em_chunk = Signal(range(max(CH, 2)))
        em_word = Signal(range(PN + 1))
        em_left = Signal(32)
        chunk_bits = E * A
        m.d.comb += [
            self.m_axis_tvalid.eq(ofifo.r_rdy),
            self.m_axis_tdata.eq(ofifo.r_data.word_select(em_chunk, chunk_bits) if CH > 1 else ofifo.r_data),
            self.m_axis_tkeep.eq((1 << (SB // 8)) - 1),
        ]
        last_of_batch = (em_chunk == CH - 1) & (em_word == PN - 1)
        m.d.comb += self.m_axis_tlast.eq(last_of_batch & (em_left == 1))
        sent = Signal()
        m.d.comb += sent.eq(self.m_axis_tvalid & self.m_axis_tready)
        columns = Signal(32)
        with m.If(sent):
            m.d.sync += em_chunk.eq(em_chunk + 1)
            with m.If(em_chunk == CH - 1):
                m.d.comb += ofifo.r_en.eq(1)
                m.d.sync += [em_chunk.eq(0), em_word.eq(em_word + 1)]
                with m.If(em_word == PN - 1):
                    m.d.sync += [em_word.eq(0), em_left.eq(em_left - 1), columns.eq(columns + L)]
                    with m.If(em_left == 1):
                        m.d.sync += [busy.eq(0), done.eq(1)]

        # ---------------- flags, start, counters ------------------------------------------------------
        m.d.sync += [in_full.eq((in_full | in_set) & ~in_clr), out_full.eq((out_full | out_set) & ~out_clr)]
        with m.If(start & ~busy & ~ld_params & (tile_batches != 0)):
            m.d.sync += [busy.eq(1), done.eq(0), ld_data.eq(1), ld_left.eq(tile_batches),
                         sq_left.eq(tile_batches), un_left.eq(tile_batches), em_left.eq(tile_batches)]
        with m.If(load_params & ~busy & ~ld_data):
            m.d.sync += [ld_params.eq(1), ld_cnt.eq(0), params_valid.eq(0)]
        cyc = Signal(32)
        busy_cyc = Signal(32)
        starved_cyc = Signal(32)
        stalled_cyc = Signal(32)
        with m.If(clear_counters):
            m.d.sync += [cyc.eq(0), busy_cyc.eq(0), starved_cyc.eq(0), stalled_cyc.eq(0), columns.eq(0)]
        with m.Else():
            with m.If(busy):
                m.d.sync += cyc.eq(cyc + 1)
            with m.If(issue):
                m.d.sync += busy_cyc.eq(busy_cyc + 1)
            with m.If(starved):
                m.d.sync += starved_cyc.eq(starved_cyc + 1)
            with m.If(self.m_axis_tvalid & ~self.m_axis_tready):
                m.d.sync += stalled_cyc.eq(stalled_cyc + 1)

        # soft reset of the datapath state (parameters, shifts and TILE_BATCHES kept)
        with m.If(soft):
            m.d.sync += [busy.eq(0), done.eq(0), in_full.eq(0), out_full.eq(0), ld_params.eq(0), ld_data.eq(0),
                         ld_cnt.eq(0), ld_chunk.eq(0), ld_e.eq(0), ld_half.eq(0), ld_left.eq(0), sq_left.eq(0),
                         sq_in.eq(0), sq_out.eq(0), un_half.eq(0), un_e.eq(0), un_left.eq(0), em_chunk.eq(0),
                         em_word.eq(0), em_left.eq(0), params_valid.eq(0)]

        # ---------------- register reads --------------------------------------------------------------
        status = Cat(busy, done, ld_params, params_valid)
        reads = {
            "ID": regmap.ID_MAGIC, "VERSION": (regmap.VERSION[0] << 16) | regmap.VERSION[1],
            "CONFIG_HASH": lay.hash32, "LANES": L, "STATUS": status, "TILE_BATCHES": tile_batches,
            "INFO": spec.info_word, "CYCLES": cyc, "BUSY_CYCLES": busy_cyc, "STARVED_CYCLES": starved_cyc,
            "STALLED_CYCLES": stalled_cyc, "COLUMNS_DONE": columns,
        }
        with m.Switch(axil.rd_addr):
            for name, val in reads.items():
                with m.Case(regmap.REG[name]):
                    m.d.comb += axil.rd_data.eq(val)
            for i in range(N):
                with m.Case(regmap.SHIFT_BASE + 4 * i):
                    m.d.comb += axil.rd_data.eq(shifts[i])
            with m.Default():
                m.d.comb += axil.rd_data.eq(0)
        return m

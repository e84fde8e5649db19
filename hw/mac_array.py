"""The SIMD MAC array: every lane multiplies the broadcast weight by its own operand and
accumulates a row; the row's result (plus the bias on the last factor) leaves with its
control.

With ``macs_per_dsp = 2`` two lanes share one multiplier, the broadcast weight being the
shared operand (Xilinx WP486's idea, worked out here for any ``A``-bit activations and
``W <= 8``-bit weights): the operand ``a1 * 2^S + a0`` with ``S = A + W`` times ``w`` is
``w*a1 * 2^S + w*a0``. ``w*a0`` is an ``(A+W)``-bit signed value, so it is the low ``S`` bits
sign-extended, and ``w*a1`` is the rest plus the low field's sign bit (the borrow the negative
low product took from it). Exact for every operand, no correction table; the operand is
``A + S + 1`` bits (25 for int8: ``-128 * 2^16 - 128`` needs the 25th, the width of a DSP48E1's
A port) and the product ``A + S + W``.
The operand is formed from the IN/work data before its register, so Yosys maps the sum to the
DSP48E1's pre-adder and the register to its AD register (AD, B and M absorbed; the product is
split in fabric, so P is not).

With ``row_pairs`` (``docs/engine.md``, "Row pairs") each lane has its own multiplier, which
computes two rows of a DeBut block from one activation: the weight operand ``w1 * 2^S + w0``
(``w1 = 0`` on an unpaired factor), the same for every lane, registered once per ``REPLICA_LANES``
lanes, times the lane's ``x``, split as above with the roles swapped. A second accumulator per
lane holds the second row, started from its bias (read from row ``wr + t`` at T+1 through the bias
memory's second port); the pair's rows complete together and leave one a cycle, the second from a
copy of the second accumulators with its row number and the batch's end. With ``row_quads``
(``docs/engine.md``, "Row quads") a second multiplier per lane computes rows 2 and 3 from
``w3 * 2^S + w2`` (zero unless the factor is a quad); four accumulators, biases through four ports,
and the quad's rows leave one a cycle: the first from its accumulator, the others from copies
taken in the first row's cycle (a register enable), each lane's result one multiplexer over its
rows steered by a replicated row index.
On an *interleaved quad* (``cycles.factor_issue``) the second multiplier takes its own activation,
the second element of the lane's WORK word (column ``c + 1``), for rows ``wr + 1`` and
``wr + 1 + pstep`` of the neighbouring block: its bias rows and output rows are ``1`` on, not
``2 pstep``. WORK words hold two elements of every lane on a row-quad engine; a single read takes
the one ``work_odd`` names. With ``row_octets`` (``docs/engine.md``, "Row octets") a third and a
fourth multiplier per lane compute rows 4..7 (``wr + k pstep``) of an octet from the lane's ``x``
and weights 4..7 of the issue's word; eight accumulators, biases through eight ports, and the
octet's rows leave one a cycle like a quad's.

The control bits that steer every lane (IN's bank select, IN or WORK, an accumulator's enable
and first term, the bias a row starts from) are registered once per ``REPLICA_LANES`` lanes (``fanout.replicated``).

Pipeline (issue in cycle T, counted from the issue register's output, ``engine.py``: the
sequencer's issue a cycle before): T+1 memory data, registered (T+2: IN's and WORK's, the
memories' output registers), the weight operand formed and registered one copy per
``REPLICA_LANES`` lanes; T+2 IN unskewed, the operand selected and registered (B), the weight
operand copied into every DSP (A); T+3 products (M); T+4 products again (P: every DSP fully
pipelined); T+5 accumulate (a row starts from the bias on the last factor, else 0); the result
is valid at T+6 (``res``/``ctl_out``), the output stage rounds, shifts and saturates it in three
registered steps and writes it at T+9, so a dependent factor may issue at T+10:
``DRAIN_CYCLES = 9`` bubbles.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .barrel import barrel_rotate
from .fanout import REPLICA_LANES, replicated
from .memories import in_banks, in_slots, work_elements
from .sequencer import ctl_layout
from .spec import EngineEnvelope

# The attribute marking each DSP's copy of the shared weight operand (its A register on the Zynq):
# the ECP5 fmax proxy keeps these apart (boards/fmax.py, KEEP_DSP_A)
DSP_A_ATTR = "litefly_dsp_a"

__all__ = ["MacArray"]

ROW_NAMES = "bcdefgh"          # a lane's further rows' registers: acc0b, acc0c, ... (rows 1..7)


class MacArray(wiring.Component):
    def __init__(self, envelope: EngineEnvelope) -> None:
        self._env = envelope
        L, A = envelope.lanes, envelope.act_bits
        R = envelope.lane_rows
        # a row pair's or quad's further rows' biases (rows wr + k*pstep, k = 1..R-1), read at T+1
        pairs = {"bias_more_addr": Out(data.ArrayLayout(max(1, ceil_log2(envelope.bias_beats)), R - 1)),
                 "bias_more_data": In(data.ArrayLayout(envelope.stream_bits, R - 1))} if R > 1 else {}
        super().__init__({
            **pairs,
            "ctl": In(ctl_layout(envelope)),                 # issue-cycle control
            # IN banks' read data (T+1): generator g's bank b at g * NB + b (memories.in_banks)
            "in_data": In(data.ArrayLayout(in_slots(envelope) * A, envelope.window_generators * in_banks(envelope))),
            "work_data": In(work_elements(envelope) * L * A),     # WORK's word: work_elements of every lane
            "weight_data": In(envelope.stream_bits),
            "bias_data": In(envelope.stream_bits),
            "bias_en": In(1),
            "ctl_out": Out(ctl_layout(envelope)),
            "res": Out(data.ArrayLayout(signed(envelope.acc_bits), L)),
        })

    def elaborate(self, platform):
        env = self._env
        L, A, W, ACC = env.lanes, env.act_bits, env.weight_bits, env.acc_bits
        BB = A + W
        layout = ctl_layout(env)
        m = Module()
        # T+1: memory data valid; IN's and WORK's registered (T+2: the memories' output registers)
        p1, p1a = Signal(layout, name="p1"), Signal(layout, name="p1a")
        m.d.sync += [p1.eq(self.ctl), p1a.eq(p1)]
        in_q = Signal.like(self.in_data, name="in_q", reset_less=True)
        work_q = Signal.like(self.work_data, name="work_q", reset_less=True)
        m.d.sync += [in_q.eq(self.in_data), work_q.eq(self.work_data)]
        # IN's banks unskewed (memories.skewed_bank): a generator's lanes s*NB + i (slot s of every
        # bank) read bank (i + element) mod NB, so each group of NB lanes is the NB banks' slot s
        # rotated down by the element mod NB (a barrel rotator, each output steered by its lanes'
        # copy of the bank select)
        # (the bank and IN/WORK selects, registered beside p1a, one copy per REPLICA_LANES lanes)
        G, NB, S = env.window_generators, in_banks(env), in_slots(env)
        LG = L // G
        bank1 = replicated(m, "bank1", p1.bank.shape(), p1.bank, L)
        from_in1 = replicated(m, "from_in1", 1, p1.from_in, L)
        # wires, not expressions: each lane's slice of an expression is emitted as the whole
        # expression (quadratic Verilog: 70 MB at 384 lanes)
        lane_x: list = [None] * L
        for g in range(G):
            for s in range(S):
                vals = barrel_rotate(
                    m, f"rot{g}_{s}_", [in_q[g * NB + b][s * A:(s + 1) * A] for b in range(NB)],
                    lambda i, g=g, s=s: bank1[min(((s * NB + i) * G + g) // REPLICA_LANES, len(bank1) - 1)])
                for i in range(NB):
                    if s * NB + i < LG:
                        lane_x[(s * NB + i) * G + g] = vals[i]
        x_in = Signal(L * A)
        m.d.comb += x_in.eq(Cat(*lane_x))

        def operand(name, hi_sel):
            """Each lane's operand: its IN element or WORK's, the word's second element where ``hi_sel``."""
            sel = Signal(L * A, name=name)
            if hi_sel is None:
                work = [work_q[l * A:(l + 1) * A] for l in range(L)]
            else:
                work = [Mux(hi_sel[l // REPLICA_LANES], work_q[(L + l) * A:(L + l + 1) * A],
                            work_q[l * A:(l + 1) * A]) for l in range(L)]
            m.d.comb += sel.eq(Cat(*(Mux(from_in1[l // REPLICA_LANES], x_in[l * A:(l + 1) * A], work[l])
                                     for l in range(L))))
            return sel
        # row quads: WORK's words hold two elements of every lane (memories.work_elements); a lane's
        # second multiplier reads the second on an interleaved quad (column c + 1)
        x_sel = operand("x_sel", replicated(m, "work_odd1", 1, p1.work_odd, L) if env.row_quads else None)
        x_sel1 = operand("x_sel1", replicated(m, "work_hi1", 1, p1.work_odd | p1.iquad, L)) \
            if env.row_quads else x_sel
        w_sel = self.weight_data.word_select(p1.wsub, W)
        b_sel = self.bias_data.word_select(p1.bsub, 32)[:BB]
        # valid at T+3: operands (B); T+4: products (M); T+5: products again (P): every DSP's A, B, M
        # and P registers (the weight operand valid at T+2 in a copy per REPLICA_LANES lanes, at T+3
        # in a copy per DSP, its A register)
        p1b, p1c, p2 = (Signal(layout, name=n) for n in ("p1b", "p1c", "p2"))
        m.d.sync += [p1b.eq(p1a), p1c.eq(p1b), p2.eq(p1c)]
        # operands, products and sums are data (reset-less); the ctl words carry the valid bits

        def delayed(name, value, n):
            """``value`` registered ``n`` times."""
            for k in range(n):
                r = Signal.like(value, name=f"{name}_d{k + 1}", reset_less=True)
                m.d.sync += r.eq(value)
                value = r
            return value
        bias1c = delayed("bias1", b_sel.as_signed(), 3)          # read at T+1, used at T+4
        prods = [Signal(signed(A + W), name=f"prod{l}", reset_less=True) for l in range(L)]

        def dsp_product(name, a_shared, l, b, width):
            """The product register (P) of ``a_shared[l // REPLICA_LANES] * b``: a per-DSP copy of the
            shared operand (A register), the product (M), then P; ``b`` is registered at T+3 (B)."""
            a = Signal(a_shared[0].shape(), name=f"{name}_a", reset_less=True,     # no `keep`: absorbed (AREG)
                       attrs={DSP_A_ATTR: 1})
            mreg = Signal(signed(width), name=f"{name}_m", reset_less=True)
            preg = Signal(signed(width), name=name, reset_less=True)
            m.d.sync += [a.eq(a_shared[l // REPLICA_LANES]), mreg.eq(a * b), preg.eq(mreg)]
            return preg
        # row pairs and quads: the further rows' biases (rows wr + k*pstep, read at T+2, used at T+4)
        R = env.lane_rows
        if env.row_pairs:
            LBP = env.biases_per_beat.bit_length() - 1
            b_more = []
            for k in range(1, R):
                wrk_1 = Signal(17, name=f"wr{k + 1}_1")
                wrk_b = Signal(16, name=f"wr{k + 1}b", reset_less=True)
                # rows wr + pstep, wr + q, wr + q + pstep: q = 2 pstep, or 1 on an interleaved quad; an
                # octet's further rows wr + k pstep, k = 4..7
                q = Mux(p1.iquad, 1, p1.pstep << 1) if env.row_quads else None
                if k < 4:
                    step = (p1.pstep, q, q + p1.pstep if env.row_quads else None)[k - 1]    # no multiplier
                else:
                    step = (p1.pstep << 2) + (0, p1.pstep, p1.pstep << 1, (p1.pstep << 1) + p1.pstep)[k - 4]
                m.d.comb += [wrk_1.eq(p1.wr + step), self.bias_more_addr[k - 1].eq(wrk_1[LBP:])]
                m.d.sync += wrk_b.eq(wrk_1)
                data_k = self.bias_more_data[k - 1]
                b_more.append(delayed(f"bias{k + 1}", (data_k.word_select(wrk_b[:LBP], 32) if LBP
                                                       else data_k[:32])[:BB].as_signed(), 2))
            # one multiplier per lane and row pair: rows 2i, 2i+1 from the weight operand
            # w_{2i+1} * 2^S + w_{2i} (w_{2i+1} = 0 on an unpaired factor, both 0 for the second pair
            # on a factor that is not a quad), the same for every lane, formed once and registered
            # one copy per REPLICA_LANES lanes; the products split as in the lane-pair case, roles swapped
            S = A + W
            x = Signal(L * A, reset_less=True)
            m.d.sync += x.eq(x_sel)
            xs = [x]
            if env.row_quads:                    # the second multiplier's own operand
                xs.append(Signal(L * A, name="x1", reset_less=True))
                m.d.sync += xs[1].eq(x_sel1)
            row_prods = [prods] + [[Signal(signed(A + W), name=f"prod{l}{ROW_NAMES[k - 1]}", reset_less=True)
                                    for l in range(L)] for k in range(1, R)]

            def weight(k, used):                 # weight k of the word, 0 where the factor has none
                return Mux(used, self.weight_data.word_select(p1.wsub | k, W).as_signed(), 0)
            # multiplier i computes rows 2i and 2i + 1: a pair's on the first, a quad's further two on the
            # second, an octet's further four on the third and fourth (each from the lane's x)
            used = [p1.pair] + ([p1.quad] if R >= 4 else []) + ([p1.octet] * 2 if R >= 8 else [])
            for i in range(R // 2):
                w_lo = w_sel.as_signed() if i == 0 else weight(2 * i, used[i])
                w_hi = weight(2 * i + 1, used[i])
                wp = replicated(m, f"wpair{i}" if i else "wpair", signed(W + S + 1), (w_hi << S) + w_lo, L)
                lo, hi = row_prods[2 * i], row_prods[2 * i + 1]
                for l in range(L):
                    packed = dsp_product(f"rpair{l}" + ("" if i == 0 else f"_{i}"), wp, l,
                                         xs[i if i < 2 else 0][l * A:(l + 1) * A].as_signed(), A + S + W + 1)
                    m.d.comb += [lo[l].eq(packed[:S].as_signed()), hi[l].eq((packed >> S) + packed[S - 1])]
        elif env.macs_per_dsp == 1:
            x = Signal(L * A, reset_less=True)
            m.d.sync += x.eq(x_sel)
            w1 = replicated(m, "w1", signed(W), w_sel, L)
            for l in range(L):
                m.d.comb += prods[l].eq(dsp_product(f"mul{l}", w1, l, x[l * A:(l + 1) * A].as_signed(), A + W))
        else:
            # the pair's operand is formed before its register: the DSP48E1's pre-adder and AD
            # register, so the multiplier's inputs come straight from DSP registers
            S = A + W
            sel = [x_sel[l * A:(l + 1) * A].as_signed() for l in range(L)]
            w1 = replicated(m, "w1", signed(W), w_sel, L)
            for k in range(L // 2):
                op = Signal(signed(A + S + 1), name=f"op{k}", reset_less=True)
                m.d.sync += op.eq((sel[2 * k + 1] << S) + sel[2 * k])
                packed = dsp_product(f"pair{k}", w1, 2 * k, op, A + S + W)
                m.d.comb += [prods[2 * k].eq(packed[:S].as_signed()),
                             prods[2 * k + 1].eq((packed >> S) + packed[S - 1])]
        # T+5 (p2): accumulate; a row's result leaves on its last term
        accs = [Signal(signed(ACC), name=f"acc{l}", reset_less=True) for l in range(L)]
        # p2's valid and first bits, one copy per REPLICA_LANES lanes (each steers every accumulator)
        valid2 = replicated(m, "valid2", 1, p1c.valid, L, reset_less=False)
        first2 = replicated(m, "first2", 1, p1c.first, L)
        m.d.sync += self.ctl_out.eq(p2)
        m.d.sync += self.ctl_out.valid.eq(p2.valid & p2.last)
        # the bias starts the last factor's rows (one adder per lane: the sum is the same), registered
        # beside p2, one copy per REPLICA_LANES lanes
        start = replicated(m, "start2", signed(BB), Mux(p1c.fi_last & self.bias_en, bias1c, 0), L)
        rows = [(accs, prods, start)]
        if env.row_pairs:
            for k in range(1, R):
                acc_k = [Signal(signed(ACC), name=f"acc{l}{ROW_NAMES[k - 1]}", reset_less=True) for l in range(L)]
                rows.append((acc_k, row_prods[k],
                             replicated(m, f"start2{ROW_NAMES[k - 1]}", signed(BB),
                                        Mux(p1c.fi_last & self.bias_en, b_more[k - 1], 0), L)))
        for acc, prod, st in rows:
            for l in range(L):
                total = Signal(signed(ACC), name=f"{acc[l].name}_sum")
                m.d.comb += total.eq(Mux(first2[l // REPLICA_LANES], st[l // REPLICA_LANES], acc[l]) + prod[l])
                with m.If(valid2[l // REPLICA_LANES]):
                    m.d.sync += acc[l].eq(total)
        if not env.row_pairs:
            m.d.comb += [self.res[l].eq(accs[l]) for l in range(L)]
            return m
        # a pair's or quad's rows leave one a cycle: the first from its accumulators, the others in
        # the cycles after from copies of the further rows' accumulators (taken in the first row's
        # cycle, `cap`: the next rows may start in the accumulators meanwhile);
        # each further row is the one pstep on, and the last carries the batch's end
        more, end2 = Signal(3 if R >= 8 else 2, name="rows_left"), Signal(name="pair_batch_end", reset_less=True)
        # the rows' numbers: wr + pstep, then (a quad's third) wr + q, then wr + q + pstep, q = 2 pstep
        # or, on an interleaved quad, 1
        step_out = self.ctl_out.pstep
        if env.row_quads:
            step_out = Mux(self.ctl_out.iquad & (more == 2), 1 - self.ctl_out.pstep, self.ctl_out.pstep)
        with m.If(p2.valid & p2.last & p2.pair):
            rows_more = Mux(p2.quad, 3, 1) if env.row_quads else 1
            m.d.sync += [more.eq(Mux(p2.octet, 7, rows_more) if R >= 8 else rows_more), end2.eq(p2.batch_end),
                         self.ctl_out.batch_end.eq(0)]
        with m.Elif(more != 0):
            m.d.sync += [more.eq(more - 1), self.ctl_out.eq(self.ctl_out),
                         self.ctl_out.wr.eq(self.ctl_out.wr + step_out),
                         self.ctl_out.batch_end.eq(end2 & (more == 1))]
        # the further rows' accumulators are captured in the first row's cycle (`cap`: a register
        # enable, no multiplexer) and each lane's result is one multiplexer over its rows, steered
        # by the row leaving (0 the first row, from the accumulators, then 1, 2, ... from the
        # captured copies), one copy of the index per REPLICA_LANES lanes (the first copy its state)
        cap = replicated(m, "cap", 1, p2.valid & p2.last & p2.pair, L)
        row_k_next = Signal(range(R), name="row_k_next")
        sel = replicated(m, "row_sel", range(R), row_k_next, L)
        m.d.comb += row_k_next.eq(Mux(more != 0, sel[0] + 1, 0))
        for l in range(L):
            holds = [Signal(signed(ACC), name=f"hold{l}" + ("" if k == 1 else ROW_NAMES[k - 1]), reset_less=True)
                     for k in range(1, R)]
            with m.If(cap[l // REPLICA_LANES]):
                m.d.sync += [h.eq(rows[k + 1][0][l]) for k, h in enumerate(holds)]
            m.d.comb += self.res[l].eq(Array([accs[l], *holds])[sel[l // REPLICA_LANES]])
        return m

"""The issue sequencer: walks each factor's compact weights row by row, one broadcast weight
per cycle, for one (batch, phase) held in an IN half.

A sparse factor (``F<i>_SPARSE.ROWS != 0``, engines with an index memory) walks its entries
instead: each gives the operand's column and whether it ends its row. The index memory is read
one cycle ahead (its address is the next cycle's entry), so an entry costs one issue cycle like
a DeBut weight. With ``SPLIT`` (concat) columns below it read IN, the rest WORK at
``column - SPLIT``, and IN is released after the last factor that reads it.

Loop limits ``r, s, t, g`` and the products ``s*t``, ``r*t`` (``F<i>_STRIDES``, host-computed)
come from the descriptor's factor registers, tabulated when the pass starts and registered when a factor starts. A
batch-phase costs ``sum p_i*s_i`` issue cycles, ``DRAIN_CYCLES`` between dependent factors
and one cycle in IDLE (``LayerDescriptor.batch_cycles``). On a row-pair engine a DeBut factor
with ``r`` even and ``s >= 2`` (``cycles.factor_rows``, derived here from ``F<i>_RS``) walks
``r/2`` sub-row steps of ``2t`` rows, two weights an issue from an even index: ``p_i*s_i/2`` issue
cycles and one more drain cycle after it (``cycles.ChainIssue``). On a row-quad engine a DeBut
factor with ``r`` divisible by 4 and ``s >= 4`` walks ``r/4`` steps of ``4t`` rows, four weights an
issue from an index divisible by 4: ``p_i*s_i/4`` issue cycles, three more drain cycles after it,
and as the last factor two more cycles in IDLE (its four rows leave the MAC array one a cycle).
On a row-octet engine a DeBut factor with ``r`` divisible by 8 and ``s >= 8`` walks ``r/8`` steps of
``8t`` rows, eight weights an issue from an index divisible by 8: ``p_i*s_i/8`` issue cycles, seven
more drain cycles after it, and as the last factor six more cycles in IDLE.
A later factor (not factor 0, which reads IN) with ``r`` even, ``t`` even and ``s >= 4`` that is
not a quad walks as an *interleaved quad*: ``r/2`` row pairs of ``t/2`` block pairs (``u`` steps
by 2), the pair of block ``u`` from column ``c`` and the same pair of block ``u + 1`` from ``c + 1``,
which is the same WORK word (``memories.work_elements``; ``work_odd`` says which element a single
read takes). It costs what a quad does.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .biased import biased_start, biased_step
from .cycles import WINDOW_SETUP
from .memories import in_banks, work_elements, work_half_words
from .registers import descriptor_layout
from .spec import DRAIN_CYCLES, INDEX_ENTRY_BITS, ROW_END_BIT, EngineEnvelope
from .window import in_meta_layout

__all__ = ["Sequencer", "ctl_layout"]

# the next factor's limits load in the first drain cycle and are used from the first issue after it
assert DRAIN_CYCLES >= 2, "the sequencer loads a factor's limits during the drain"
# a factor's walk limits are registered two cycles after the start (the descriptor's compares, then
# the row flags, then what follows from them); the first issue waits for a formed IN half, at least
# the window generator's set-up after the start
assert WINDOW_SETUP >= 3, "the sequencer's limits are in place before the first issue"


def ctl_layout(envelope: EngineEnvelope) -> data.StructLayout:
    """Control travelling down the MAC pipeline with each issue."""
    return data.StructLayout({
        "valid": 1,
        "first": 1,            # first term of a row
        "last": 1,             # last term of a row: the row's result is complete
        "from_in": 1,          # factor 0: operand from IN, else from WORK
        "fi_last": 1,          # last factor: bias, ReLU, pooling, OUT
        "work_half": 1,        # WORK half this factor writes
        "out_half": 1,
        "bank": unsigned(max(1, ceil_log2(in_banks(envelope)))),     # IN's bank of the element (mod its banks)
        "wsub": unsigned(max(1, ceil_log2(envelope.weights_per_beat))),
        "bsub": unsigned(max(1, ceil_log2(envelope.biases_per_beat))),
        "wr": 16,              # row written
        # the factor's shift, clamped to ACC_BITS (past it the requantised value is 0 either way):
        # a few bits, which the output stage decodes
        "shift": range(envelope.acc_bits + 1),
        "first_phase": 1,      # pooling: this phase writes, later ones take the maximum
        "batch_end": 1,        # last issue of the batch's last phase
        "lanes": unsigned(ceil_log2(envelope.lanes + 1)),
        "last_batch": 1,
        **({"pair": 1,         # a row pair: rows wr and wr + pstep (a quad: also wr + 2 pstep, wr + 3 pstep)
            "pstep": 16} if envelope.row_pairs else {}),
        **({"quad": 1,         # four rows an issue (a quad or an interleaved quad)
            "iquad": 1,        # an interleaved quad: rows wr, wr + pstep from column c, wr + 1, wr + 1 + pstep from c + 1
            "work_odd": 1} if envelope.row_quads else {}),     # WORK's element is the word's second (memories.work_elements)
        **({"octet": 1} if envelope.row_octets else {}),        # eight rows an issue: wr + k pstep, k = 0..7
    })


class Sequencer(wiring.Component):
    def __init__(self, envelope: EngineEnvelope, fault: str | None = None) -> None:
        self._env = envelope
        self._fault = fault
        super().__init__({
            "desc": In(descriptor_layout(envelope.max_factors)),
            "start": In(1),                   # a pass starts: tabulate the factors
            "in_full": In(2),
            "in_meta": In(data.ArrayLayout(in_meta_layout(envelope.lanes), 2)),
            "in_clr": Out(2),
            "out_full": In(2),
            "ctl": Out(ctl_layout(envelope)),  # issue-cycle control (valid = a MAC issue)
            "in_addr": Out(ceil_log2(2 * envelope.max_q)),     # the element (+ max_q for half 1)
            "work_addr": Out(max(1, ceil_log2(2 * work_half_words(envelope)))),
            "weight_addr": Out(max(1, ceil_log2(envelope.weight_beats))),
            "bias_addr": Out(max(1, ceil_log2(envelope.bias_beats))),
            "index_addr": Out(ceil_log2(max(2, envelope.index_beats))),
            "index_data": In(envelope.stream_bits),
            "idle": Out(1),
            "waiting_in": Out(1),             # idle because the next IN half is not filled
        })

    def elaborate(self, platform):
        env = self._env
        NF = env.max_factors
        ACC = env.acc_bits
        EW = env.weights_per_beat
        LEW = EW.bit_length() - 1
        BP = env.biases_per_beat
        LBP = BP.bit_length() - 1
        Q = env.max_q
        WH, LWE = work_half_words(env), work_elements(env).bit_length() - 1    # WORK: a half's words, elements a word
        d = self.desc
        m = Module()

        # per-factor table, registered when the pass starts: the descriptor fields' compares at the
        # start, the row flags (pairs, quads, octets) from them a cycle later, what follows from the
        # flags a cycle after that (no path from the descriptor through a wide compare and the flags'
        # logic in one cycle)
        start_d, start_dd = Signal(name="start_d"), Signal(name="start_dd")
        m.d.sync += [start_d.eq(self.start), start_dd.eq(start_d)]
        tab = []
        for i in range(NF):
            f = d.F[i]
            # data registers loaded at every start: reset-less (only the walk's control is reset)
            row = {k: Signal(16, name=f"f{i}_{k}", reset_less=True) for k in ("t", "st", "rt")}
            row["shift"] = Signal(range(ACC + 1), name=f"f{i}_shift", reset_less=True)
            with m.If(self.start):
                m.d.sync += [row["t"].eq(f.TG.T), row["st"].eq(f.STRIDES.ST), row["rt"].eq(f.STRIDES.RT),
                             row["shift"].eq(Mux(f.SHIFT.SHIFT > ACC, ACC, f.SHIFT.SHIFT))]
            # each loop's index counter starts at 2 - n (mod 2^16; n the loop's length; hw/biased.py): it reaches
            # 0xFFFF at the third-to-last index, so the carry out of its increment says the next
            # index is the second-to-last (a carry chain, no compare); and whether the loop has one
            # or two indices, registered here: the walk keeps "at the last index" and "at the
            # second-to-last" flags instead of comparing its counters with the limits in the issue cycle
            # row pairs (cycles.factor_rows): a DeBut factor with r even and s >= 2 walks r/2 row pairs,
            # each 2t rows on from the one before
            # row quads (cycles.factor_rows): with r divisible by 4 and s >= 4, r/4 row quads, each 4t on
            row["pair"] = Signal(name=f"f{i}_pair")          # two or four rows an issue
            row["quad"] = Signal(name=f"f{i}_quad")          # four (a quad or an interleaved quad)
            row["quad4"] = Signal(name=f"f{i}_quad4")        # a quad (four rows of one block)
            row["iquad"] = Signal(name=f"f{i}_iquad")        # an interleaved quad
            row["oct"] = Signal(name=f"f{i}_oct")            # an octet (eight rows of one block)
            row["at"] = Signal(16, name=f"f{i}_at", reset_less=True)
            row["ustep"] = Signal(2, name=f"f{i}_ustep", reset_less=True)
            # the descriptor's compares the flags take, registered at the start
            cmp = {k: Signal(name=f"f{i}_{k}") for k in ("r_even", "r_nz", "r4", "r8", "s2", "s4", "s8",
                                                        "t_even", "t_nz", "dense")}
            # ... and R and T against the powers of two the walk's one- and two-index flags need
            # (r/2, r/4, r/8 of a pair, quad, octet: R is then a multiple of 2, 4, 8; t/2 of an
            # interleaved quad), so that those flags are a mux of flip-flops at start_dd
            req = {n: Signal(name=f"f{i}_r_is{n}") for n in (1, 2, 4, 8, 16)}
            teq = {n: Signal(name=f"f{i}_t_is{n}") for n in (1, 2, 4)}
            with m.If(self.start):
                m.d.sync += [cmp["r_even"].eq(f.RS.R[0] == 0), cmp["r_nz"].eq(f.RS.R != 0),
                             cmp["r4"].eq(f.RS.R[:2] == 0), cmp["r8"].eq(f.RS.R[:3] == 0),
                             cmp["s2"].eq(f.RS.S >= 2), cmp["s4"].eq(f.RS.S >= 4), cmp["s8"].eq(f.RS.S >= 8),
                             cmp["t_even"].eq(f.TG.T[0] == 0), cmp["t_nz"].eq(f.TG.T != 0),
                             cmp["dense"].eq(f.SPARSE.ROWS == 0 if env.index_beats else 1)]
                m.d.sync += [req[n].eq(f.RS.R == n) for n in req] + [teq[n].eq(f.TG.T == n) for n in teq]
            pair = quad = iquad = octet = 0
            if env.row_pairs:
                pair = cmp["r_even"] & cmp["r_nz"] & cmp["s2"] & cmp["dense"]
            if env.row_quads:
                quad = pair & cmp["r4"] & cmp["s4"]
                # interleaved quads (cycles.factor_issue): a factor that reads WORK (not factor 0), r
                # even, t even and s >= 4, walks r/2 row pairs of t/2 block pairs (u steps by 2)
                if i > 0:
                    iquad = pair & ~quad & cmp["t_even"] & cmp["t_nz"] & cmp["s4"]
            if env.row_octets:
                # row octets (cycles.factor_rows): with r divisible by 8 and s >= 8, r/8 row octets, each 8t on
                octet = quad & cmp["r8"] & cmp["s8"]
            with m.If(start_d):
                m.d.sync += [row["pair"].eq(pair), row["quad"].eq(quad | iquad), row["quad4"].eq(quad),
                             row["iquad"].eq(iquad)]
                if env.row_octets:
                    m.d.sync += row["oct"].eq(octet)
            # what follows from the flags is registered a cycle after them, from the registered flags
            # (no start-time path from the descriptor through them): the sequencer's first issue waits
            # for a formed IN half, at least WINDOW_SETUP cycles after the start
            pf, qf, iq, of = row["pair"], row["quad4"], row["iquad"], row["oct"]
            at = Mux(qf, f.TG.T << 2, Mux(pf, f.TG.T << 1, f.TG.T))
            r_walk = Mux(qf, f.RS.R >> 2, Mux(pf, f.RS.R >> 1, f.RS.R))
            if env.row_octets:
                at, r_walk = Mux(of, f.TG.T << 3, at), Mux(of, f.RS.R >> 3, r_walk)
            with m.If(start_dd):
                m.d.sync += [row["at"].eq(at), row["ustep"].eq(Mux(iq, 2, 1))]
            for k, v in (("r", r_walk), ("s", f.RS.S), ("t", f.TG.T), ("g", f.TG.G)):
                row[k + "3"] = Signal(16, name=f"f{i}_{k}3", reset_less=True)
                row[k + "z"] = Signal(name=f"f{i}_{k}z")
                row[k + "w"] = Signal(name=f"f{i}_{k}w")
                if k == "r":
                    # r_walk is R / 2^m (m = 0, 1, 2, 3: single rows, pairs, quads, octets; R a multiple of 2^m)
                    rz, rw = Mux(qf, req[4], Mux(pf, req[2], req[1])), Mux(qf, req[8], Mux(pf, req[4], req[2]))
                    if env.row_octets:
                        rz, rw = Mux(of, req[8], rz), Mux(of, req[16], rw)
                    with m.If(start_dd):
                        m.d.sync += [row["r3"].eq(biased_start(v, 2)), row["rz"].eq(rz), row["rw"].eq(rw)]
                elif k == "t" and i > 0 and env.row_quads:
                    # an interleaved quad's u loop runs t/2 times, stepping by 2 (its index counter
                    # counts the steps: it starts at 2 - t/2)
                    with m.If(start_dd):
                        m.d.sync += [row["t3"].eq(biased_start(Mux(iq, v >> 1, v), 2)), row["tz"].eq(Mux(iq, teq[2], teq[1])),
                                     row["tw"].eq(Mux(iq, teq[4], teq[2]))]
                else:
                    with m.If(self.start):
                        m.d.sync += [row[k + "3"].eq(biased_start(v, 2)), row[k + "z"].eq(v == 1), row[k + "w"].eq(v == 2)]
            row["ez"] = row["rz"] & row["sz"] & row["tz"] & row["gz"]      # one issue: the first is the last
            tab.append(row)
        SP = env.index_beats > 0
        for i in range(NF):
            tab[i]["split"] = Signal(16, name=f"f{i}_split", reset_less=True)
            tab[i]["rows2"] = Signal(16, name=f"f{i}_rows2", reset_less=True)
            for k in ("sparse", "rowsz", "splitz"):
                tab[i][k] = Signal(name=f"f{i}_{k}")
            if SP:
                with m.If(self.start):
                    sp = d.F[i].SPARSE
                    m.d.sync += [tab[i]["split"].eq(sp.SPLIT), tab[i]["rows2"].eq(sp.ROWS - 2),
                                 tab[i]["sparse"].eq(sp.ROWS != 0), tab[i]["rowsz"].eq(sp.ROWS == 1),
                                 tab[i]["splitz"].eq(sp.SPLIT == 0)]
        nm1 = Signal(8)
        in_last = Signal(8)              # the last factor that reads IN (factor 0, or a later concat factor)
        nm1z, in_lastz = Signal(), Signal()     # ... is factor 0
        with m.If(self.start):
            m.d.sync += [nm1.eq(d.LAYER.FACTORS - 1), in_last.eq(0), nm1z.eq(d.LAYER.FACTORS == 1), in_lastz.eq(1)]
            if SP:
                for i in range(1, NF):
                    with m.If((d.F[i].SPARSE.SPLIT != 0) & (i < d.LAYER.FACTORS)):
                        m.d.sync += [in_last.eq(i), in_lastz.eq(0)]

        cur = {k: Signal(16, name=f"cur_{k}", reset_less=True)
               for k in ("t", "at", "st", "rt", "split", "r3", "s3", "t3", "g3", "rows2")}
        cur.update({k: Signal(name=f"cur_{k}") for k in ("rz", "sz", "tz", "gz", "rw", "sw", "tw", "gw", "sparse",
                                                           "rowsz", "splitz", "pair", "quad", "iquad")})
        if env.row_octets:
            cur["oct"] = Signal(name="cur_oct")
        cur["ustep"] = Signal(2, name="cur_ustep", reset_less=True)
        cur_shift = Signal(range(ACC + 1))
        load_limits = Signal()
        drain_first = Signal()           # the drain's first cycle (registered)
        fi = Signal(8)
        u = Signal(16)                   # the block u loop's value (a step of ustep): read addresses
        # the loops' index counters, biased (start at the table's "3" entry, 2 - n): the carry out of
        # an increment is the loop's second-to-last flag
        jc, uc, ac, bc = (Signal(16, name=f"{n}_idx", reset_less=True) for n in "juab")
        # registered flags: the loop counters at their last index, b at its first, fi at the
        # last factor / the last factor reading IN / factor 0 (set when a factor's limits load,
        # then advanced with the counters: the second-to-last flags from the index counters' carries)
        b_l, a_l, u_l, j_l, b_f = (Signal(name=n) for n in ("b_last", "a_last", "u_last", "j_last", "b_first"))
        b_p, a_p, u_p, j_p = (Signal(name=n) for n in ("b_pen", "a_pen", "u_pen", "j_pen"))   # second-to-last
        fi_last, fi_inl, fi0 = Signal(), Signal(), Signal()
        # every loop at its last index (the factor's last issue), registered beside the flags from
        # their next values: the end of a factor steers the state, the read/write queues and the
        # batch's end, and testing one flip-flop keeps the AND of the four flags off those paths
        fac_end_r = Signal(name="fac_end_r")
        srow_l = Signal()
        # the factor whose limits load: one-hot (factor 0 when idle, else ``fsel``, fi one-hot)
        fsel = Signal(NF, init=1)
        lsel = Signal(NF)
        m.d.comb += lsel.eq(Mux(self.idle, 1, fsel))

        def pick(key):
            v = 0
            for i in range(NF):
                v = v | Mux(lsel[i], tab[i][key], 0)
            return v

        with m.If(load_limits):
            m.d.sync += [cur[k].eq(pick(k)) for k in cur]
            # the loops start with the factor (idle: factor 0; the drain: the next factor), all at 0
            m.d.sync += [bc.eq(pick("s3")), ac.eq(pick("r3")), uc.eq(pick("t3")), jc.eq(pick("g3"))]
            m.d.sync += cur_shift.eq(pick("shift"))
            m.d.sync += [b_l.eq(pick("sz")), a_l.eq(pick("rz")), u_l.eq(pick("tz")),
                         j_l.eq(pick("gz")), b_f.eq(1), srow_l.eq(pick("rowsz")), fac_end_r.eq(pick("ez")),
                         b_p.eq(pick("sw")), a_p.eq(pick("rw")), u_p.eq(pick("tw")), j_p.eq(pick("gw"))]

        rd_bt, rd_j, wr_at, wr_j = (Signal(17, name=n) for n in ("rd_bt", "rd_j", "wr_at", "wr_j"))
        widx = Signal(32)
        sq_in = Signal()
        sq_out = Signal()
        meta = Signal(in_meta_layout(env.lanes))
        OCT = env.row_octets
        drain = Signal(range(DRAIN_CYCLES + (7 if OCT else 3) + 1))
        # after a row-quad (octet) last factor the next batch-phase waits 2 (6) cycles in IDLE (`iw`,
        # `iw_nz` its flag): the quad's 4 (octet's 8) rows leave the MAC array one a cycle, after its last issue
        iw, iw_nz = Signal(3 if OCT else 2, name="idle_wait"), Signal(name="idle_wait_nz")
        issue = Signal()
        rd = Signal(17)
        wr = Signal(17)
        rd_work = Signal(17)
        sparse = cur["sparse"]
        from_in = Signal()
        row_end, fac_end, first = Signal(), Signal(), Signal()
        m.d.comb += [
            rd.eq(rd_j + rd_bt + u), wr.eq(wr_j + wr_at + u), rd_work.eq(rd), from_in.eq(fi0),
            row_end.eq(b_l), first.eq(b_f),
            fac_end.eq(fac_end_r),
        ]
        if SP:
            # sparse entries: the index memory's read data is this cycle's entry (addressed one cycle ahead)
            LIP = (env.entries_per_beat).bit_length() - 1
            ent = Signal(32)
            ent_next = Signal(32)
            srow = Signal(16)
            sfirst = Signal()
            entry = self.index_data.word_select(ent[:LIP], INDEX_ENTRY_BITS)
            col, rend = entry[:ROW_END_BIT], entry[ROW_END_BIT]
            split = cur["split"]
            m.d.comb += self.index_addr.eq(ent_next[LIP:])
            with m.If(sparse):
                m.d.comb += [rd.eq(col), wr.eq(srow), row_end.eq(rend), first.eq(sfirst),
                             fac_end.eq(rend & srow_l)]
                with m.If(~cur["splitz"]):
                    m.d.comb += [rd_work.eq(col - split), from_in.eq(col < split)]
                    if self._fault == "sparse_split":      # the first previous-output column read from IN
                        m.d.comb += from_in.eq(col <= split)
                with m.Else():
                    m.d.comb += rd_work.eq(col)

        ready = self.in_full.bit_select(sq_in, 1) & ~self.out_full.bit_select(sq_out, 1)

        # one-hot state registers (the issue path tests one flip-flop, not a decoded state)
        st = {n: Signal(name=f"st_{n.lower()}", init=(n == "IDLE")) for n in ("IDLE", "RUN", "DRAIN")}
        m.d.comb += self.idle.eq(st["IDLE"])
        with m.If(st["IDLE"]):
            m.d.comb += [self.idle.eq(1), self.waiting_in.eq(~self.in_full.bit_select(sq_in, 1))]
            # factor 0's limits load in every idle cycle: the load does not wait for ready
            m.d.comb += load_limits.eq(1)
            with m.If(iw_nz):
                m.d.sync += [iw.eq(iw - 1), iw_nz.eq(iw != 1)]
            with m.If(ready & ~iw_nz):
                m.d.sync += [fi.eq(0), u.eq(0), rd_bt.eq(0), rd_j.eq(0),
                             wr_at.eq(0), wr_j.eq(0), widx.eq(0), meta.eq(self.in_meta[sq_in]),
                             fi_last.eq(nm1z), fi_inl.eq(in_lastz), fi0.eq(1), fsel.eq(1)]
                if SP:
                    m.d.sync += [srow.eq(0), sfirst.eq(1)]
                m.d.sync += [st["IDLE"].eq(0), st["RUN"].eq(1)]
        with m.If(st["RUN"]):
            m.d.comb += issue.eq(1)
            # a row pair reads two weights, a quad four, an octet eight
            step = Mux(cur["quad"], 4, Mux(cur["pair"], 2, 1))
            m.d.sync += widx.eq(widx + (Mux(cur["oct"], 8, step) if OCT else step))
            if SP:
                with m.If(sparse):
                    m.d.sync += sfirst.eq(row_end)
                    with m.If(row_end):
                        m.d.sync += [srow.eq(srow + 1), srow_l.eq(srow == cur["rows2"])]
            with m.If(~sparse):
                # each index's increment, 17 bits: bit 16 (the carry) is the loop's next second-to-last flag
                (bn, bn_p), (an, an_p), (un, un_p), (jn, jn_p) = (biased_step(c) for c in (bc, ac, uc, jc))
                # the last flags' next values (a loop's last index: it was second-to-last; its
                # restart: whether it has one index), one definition for the flags and their AND
                nb_l = Mux(b_l, cur["sz"], b_p)
                na_l = Mux(b_l, Mux(a_l, cur["rz"], a_p), a_l)
                nu_l = Mux(b_l & a_l, Mux(u_l, cur["tz"], u_p), u_l)
                nj_l = Mux(b_l & a_l & u_l, j_p, j_l)
                m.d.sync += [b_l.eq(nb_l), a_l.eq(na_l), u_l.eq(nu_l), j_l.eq(nj_l),
                             fac_end_r.eq(nb_l & na_l & nu_l & nj_l)]
                m.d.sync += [bc.eq(bn), rd_bt.eq(rd_bt + cur["t"]), b_p.eq(bn_p), b_f.eq(0)]
                with m.If(b_l):
                    m.d.sync += [bc.eq(cur["s3"]), rd_bt.eq(0), b_p.eq(cur["sw"]), b_f.eq(1),
                                 ac.eq(an), wr_at.eq(wr_at + cur["at"]), a_p.eq(an_p)]
                    with m.If(a_l):
                        m.d.sync += [ac.eq(cur["r3"]), wr_at.eq(0), a_p.eq(cur["rw"]),
                                     u.eq(u + cur["ustep"]), uc.eq(un), u_p.eq(un_p)]
                        with m.If(u_l):
                            m.d.sync += [u.eq(0), uc.eq(cur["t3"]), u_p.eq(cur["tw"]),
                                         jc.eq(jn), j_p.eq(jn_p),
                                         rd_j.eq(rd_j + cur["st"]), wr_j.eq(wr_j + cur["rt"])]
            with m.If(fac_end):
                # (the index counters restart when the next factor's limits load)
                m.d.sync += [rd_j.eq(0), wr_j.eq(0)]
                if SP:
                    m.d.sync += [srow.eq(0), sfirst.eq(1)]
                with m.If(fi_inl):
                    m.d.comb += self.in_clr.eq(Mux(sq_in, 2, 1))
                    m.d.sync += sq_in.eq(~sq_in)
                with m.If(fi_last):
                    with m.If(meta.last_phase):
                        m.d.sync += sq_out.eq(~sq_out)
                    wait = Mux(cur["quad"], 2, 0)
                    m.d.sync += [st["RUN"].eq(0), st["IDLE"].eq(1), iw.eq(Mux(cur["oct"], 6, wait) if OCT else wait),
                                 iw_nz.eq(cur["quad"])]
                with m.Else():
                    # a row pair's second row is written a cycle after its first: one more bubble (a
                    # quad's fourth three cycles after: three more; an octet's eighth: seven)
                    more = Mux(cur["quad"], 3, cur["pair"])
                    m.d.sync += [fi.eq(fi + 1), drain.eq(DRAIN_CYCLES - 1 + (Mux(cur["oct"], 7, more) if OCT else more)),
                                 fi0.eq(0),
                                 fsel.eq(fsel << 1), drain_first.eq(1)]
                    m.d.sync += [st["RUN"].eq(0), st["DRAIN"].eq(1)]
        with m.If(st["DRAIN"]):
            # the next factor's limits load in the drain's first cycle, from the registered fi: the
            # end-of-factor test does not reach them in the same cycle
            m.d.sync += drain_first.eq(0)
            with m.If(drain_first):
                m.d.comb += load_limits.eq(1)
                m.d.sync += [fi_last.eq(fi == nm1), fi_inl.eq(fi == in_last)]
            with m.Elif((cur["pair"] & widx[0]) | (cur["quad"] & widx[1]) | ((cur["oct"] & widx[2]) if OCT else 0)):
                # a paired factor's weights start at an even index, a quad's at one divisible by 4, an
                # octet's by 8 (spec.weight_order): a pair, quad or octet is one read
                m.d.sync += widx.eq(widx + 1)
            m.d.sync += drain.eq(drain - 1)
            with m.If(drain == 0):
                m.d.sync += [st["DRAIN"].eq(0), st["RUN"].eq(1)]

        ctl = self.ctl
        wsub = widx[:LEW] if LEW else 0
        if self._fault == "weight_addr":
            wsub = Mux(widx == 1, 0, wsub)
        if SP:
            m.d.comb += ent_next.eq(Mux(issue & sparse, ent + 1, ent))
            with m.If(self.idle):
                m.d.comb += ent_next.eq(0)
            m.d.sync += ent.eq(ent_next)
        m.d.comb += [
            ctl.valid.eq(issue), ctl.first.eq(first), ctl.last.eq(row_end), ctl.from_in.eq(from_in),
            ctl.fi_last.eq(fi_last), ctl.work_half.eq(fi[0]), ctl.out_half.eq(sq_out),
            ctl.bank.eq(rd[:ceil_log2(in_banks(env))]), ctl.wsub.eq(wsub), ctl.bsub.eq(wr[:LBP] if LBP else 0), ctl.wr.eq(wr),
            ctl.shift.eq(cur_shift), ctl.first_phase.eq(meta.first_phase),
            ctl.batch_end.eq(issue & fac_end & fi_last & meta.last_phase),
            ctl.lanes.eq(meta.lanes), ctl.last_batch.eq(meta.last_batch),
            *([ctl.pair.eq(cur["pair"]), ctl.pstep.eq(cur["t"])] if env.row_pairs else []),
            *([ctl.quad.eq(cur["quad"]), ctl.iquad.eq(cur["iquad"]), ctl.work_odd.eq(rd_work[0])]
              if env.row_quads else []),
            *([ctl.octet.eq(cur["oct"])] if env.row_octets else []),
            self.in_addr.eq(rd + Mux(sq_in, Q, 0)),
            self.work_addr.eq(rd_work[LWE:] + Mux((fi - 1)[0], WH, 0)),
            self.weight_addr.eq(widx[LEW:]),
            self.bias_addr.eq(wr[LBP:]),
        ]
        return m

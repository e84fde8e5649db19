"""AXI4-Lite register file of the network engine, generated from :mod:`hw.regmap`.

Decode, readback and the layouts the datapath reads the descriptor through all come from
the one register map: a register with fields becomes a :class:`~amaranth.lib.data.FlexibleLayout`
of 32 bits whose fields sit at the map's ``lsb``/``width``, so ``desc.IN_HW.W`` is the
``W`` field of ``IN_HW`` wherever regmap puts it.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axil_slave import AxiLiteSlave, axil_signature
from .spec import EngineEnvelope

__all__ = ["Registers", "register_layout", "descriptor_layout", "status_layout", "counters_layout"]


def register_layout(reg: regmap.Register) -> data.Layout | unsigned:
    """A register word as a layout: its fields at their map positions (a plain 32-bit word without fields)."""
    if not reg.fields:
        return unsigned(32)
    return data.FlexibleLayout(32, {f.name: data.Field(unsigned(f.width), f.lsb) for f in reg.fields})


def _by_name(name: str) -> regmap.Register:
    return next(r for r in regmap.REGISTERS if r.name == name)


def descriptor_layout(max_factors: int) -> data.StructLayout:
    """The layer descriptor as the datapath sees it: ``desc.<REG>.<FIELD>``, ``desc.F[i].<KIND>.<FIELD>``."""
    factor = data.StructLayout({kind: register_layout(regmap.factor_reg(0, kind)) for kind, _, _ in regmap.FACTOR_REGS})
    fields = {name: register_layout(_by_name(name)) for name in regmap.DESCRIPTOR}
    fields["F"] = data.ArrayLayout(factor, max_factors)
    return data.StructLayout(fields)


def status_layout() -> data.Layout:
    return register_layout(_by_name("STATUS"))


def counters_layout() -> data.StructLayout:
    return data.StructLayout({name: unsigned(32) for name in regmap.COUNTERS})


def ctrl_layout() -> data.Layout:
    return register_layout(_by_name("CTRL"))


class Registers(wiring.Component):
    """AXI-Lite slave + descriptor/factor registers + capability words + STATUS/counter readback.

    ``ctrl`` carries the CTRL strobes: one cycle, registered, in the cycle after the write
    completes (the cycle its B response is offered, so a STATUS read issued after the response
    sees the pass started; the decode of the write does not reach the datapath in one cycle).
    The descriptor registers are outside the soft-reset domain: soft reset keeps them. They are
    reset-less flip-flops (0 from configuration, as the bitstream initialises them; no reset
    net reaches their thousand-odd bits): the host writes a layer's descriptor before its START.
    A descriptor write lands two cycles after the write completes (the address is decoded at the
    AW handshake into a registered select per register, and the strobe and data are registered
    once more, so each register's enable is one flip-flop): before any later AXI-Lite access, which
    waits for the B response to be taken.
    """

    def __init__(self, envelope: EngineEnvelope) -> None:
        self._env = envelope
        sig = dict(axil_signature(envelope.axil_addr_bits))
        sig.update({
            "desc": Out(descriptor_layout(envelope.max_factors)),
            "ctrl": Out(ctrl_layout()),
            "status": In(status_layout()),
            "counters": In(counters_layout()),
        })
        super().__init__(sig)

    def elaborate(self, platform):
        env = self._env
        m = Module()
        m.submodules.axil = axil = AxiLiteSlave(env.axil_addr_bits, read_latency=2)
        for name, member in axil_signature(env.axil_addr_bits).items():
            port, mine = getattr(axil, name), getattr(self, name)
            if member.flow == Out:
                m.d.comb += mine.eq(port)
            else:
                m.d.comb += port.eq(mine)

        # writable registers: name -> (storage value-castable, mask of implemented bits)
        desc = Signal(descriptor_layout(env.max_factors), reset_less=True)
        m.d.comb += self.desc.eq(desc)
        storage: dict[int, tuple[object, int]] = {}
        for name in regmap.DESCRIPTOR:
            storage[regmap.REG[name]] = (getattr(desc, name), _mask(_by_name(name)))
        for i in range(env.max_factors):
            for kind, _, _ in regmap.FACTOR_REGS:
                reg = regmap.factor_reg(i, kind)
                storage[reg.offset] = (getattr(desc.F[i], kind), _mask(reg))

        m.d.sync += Value.cast(self.ctrl).eq(0)
        with m.If(axil.wr_stb & (axil.wr_addr == regmap.REG["CTRL"])):
            m.d.sync += Value.cast(self.ctrl).eq(axil.wr_data & _mask(_by_name("CTRL")))
        # descriptor writes: the address decoded at the AW handshake into one registered select per
        # register; the strobe ANDed with it and the data registered once more, so no path runs from
        # the address through the decode to a thousand-odd enables (the fmax proxy's critical path)
        wsel = Signal(len(storage), name="wr_sel")
        with m.If(axil.aw_stb):
            m.d.sync += [wsel[i].eq(axil.aw_addr == offset) for i, offset in enumerate(storage)]
        we = Signal(len(storage), name="wr_en")
        wd = Signal(32, name="wr_word", reset_less=True)
        m.d.sync += [we.eq(Mux(axil.wr_stb, wsel, 0)), wd.eq(axil.wr_data)]
        for i, (target, mask) in enumerate(storage.values()):
            with m.If(we[i]):
                m.d.sync += Value.cast(target).eq(wd & mask)

        reads: dict[int, object] = {regmap.REG[n]: v for n, v in env.capability_words().items()}
        reads[regmap.REG["STATUS"]] = Value.cast(self.status)
        for name in regmap.COUNTERS:
            reads[regmap.REG[name]] = getattr(self.counters, name)
        for offset, (target, _) in storage.items():
            reads[offset] = Value.cast(target)
        # the read address decoded at the AR handshake into one registered select per register;
        # the next cycle registers the AND-OR of each group of READ_GROUP registers, the one after
        # ORs the groups into the read data (read latency 2: no path crosses the whole file)
        sel = Signal(len(reads))
        with m.If(axil.ar_stb):
            m.d.sync += [sel[i].eq(axil.ar_addr == offset) for i, offset in enumerate(reads)]
        terms = [Mux(sel[i], value, 0) for i, value in enumerate(reads.values())]
        groups = [_or_tree(terms[i:i + READ_GROUP]) for i in range(0, len(terms), READ_GROUP)]
        group_q = [Signal(32, name=f"rd_group{g}", reset_less=True) for g in range(len(groups))]
        m.d.sync += [q.eq(v) for q, v in zip(group_q, groups)]
        m.d.comb += axil.rd_data.eq(_or_tree(group_q))
        return m


READ_GROUP = 8      # registers per first-level group of the read multiplexer


def _or_tree(terms: list) -> Value:
    """The OR of ``terms`` as a balanced tree."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] | terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return Value.cast(terms[0])


def _mask(reg: regmap.Register) -> int:
    if not reg.fields:
        return 0xFFFFFFFF
    mask = 0
    for f in reg.fields:
        mask |= ((1 << f.width) - 1) << f.lsb
    return mask

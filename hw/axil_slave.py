"""AXI4-Lite register slave generic over a register map."""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


def axil_signature(addr_bits: int) -> dict:
    return {
        "s_axil_awaddr": In(addr_bits), "s_axil_awprot": In(3), "s_axil_awvalid": In(1), "s_axil_awready": Out(1),
        "s_axil_wdata": In(32), "s_axil_wstrb": In(4), "s_axil_wvalid": In(1), "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
        "s_axil_araddr": In(addr_bits), "s_axil_arprot": In(3), "s_axil_arvalid": In(1), "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rvalid": Out(1), "s_axil_rready": In(1),
    }


class AxiLiteSlave(wiring.Component):
    """Accepts AW and W in any order; presents a single-cycle write strobe and a read address.

    ``wr_stb``/``wr_addr``/``wr_data``: one cycle per completed write.
    ``rd_addr``/``rd_data``: ``rd_addr`` is registered at the read address handshake and
    ``rd_data`` (combinational from the register file) is sampled ``read_latency`` cycles after
    it (default 1), so the read mux starts at a register, not at the ``s_axil_araddr`` port; R
    follows a cycle after the sample. ``ar_stb``/``ar_addr``: the read address handshake and its
    address, for a register file that registers its own decode of the address (and, with a
    latency of 2, a first level of its read multiplexer). ``aw_stb``/``aw_addr``: the write address
    handshake and its address, likewise (the write strobe follows when W has come too).
    """

    def __init__(self, addr_bits: int, read_latency: int = 1) -> None:
        if read_latency < 1:
            raise ValueError(f"read_latency={read_latency} must be at least 1")
        self._addr_bits = addr_bits
        self._read_latency = read_latency
        sig = axil_signature(addr_bits)
        sig.update({"wr_stb": Out(1), "wr_addr": Out(addr_bits), "wr_data": Out(32),
                    "rd_addr": Out(addr_bits), "rd_data": In(32),
                    "ar_stb": Out(1), "ar_addr": Out(addr_bits), "aw_stb": Out(1), "aw_addr": Out(addr_bits)})
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        aw_ok = Signal()
        w_ok = Signal()
        awaddr = Signal(self._addr_bits)
        wdata = Signal(32)
        m.d.comb += [
            self.s_axil_awready.eq(~aw_ok & ~self.s_axil_bvalid),
            self.s_axil_wready.eq(~w_ok & ~self.s_axil_bvalid),
            self.s_axil_bresp.eq(0),
            self.s_axil_rresp.eq(0),
        ]
        m.d.comb += [self.aw_stb.eq(self.s_axil_awvalid & self.s_axil_awready), self.aw_addr.eq(self.s_axil_awaddr)]
        with m.If(self.aw_stb):
            m.d.sync += [aw_ok.eq(1), awaddr.eq(self.s_axil_awaddr)]
        with m.If(self.s_axil_wvalid & self.s_axil_wready):
            m.d.sync += [w_ok.eq(1), wdata.eq(self.s_axil_wdata)]
        m.d.comb += [self.wr_addr.eq(awaddr), self.wr_data.eq(wdata)]
        with m.If(aw_ok & w_ok):
            m.d.comb += self.wr_stb.eq(1)
            m.d.sync += [aw_ok.eq(0), w_ok.eq(0), self.s_axil_bvalid.eq(1)]
        with m.If(self.s_axil_bvalid & self.s_axil_bready):
            m.d.sync += self.s_axil_bvalid.eq(0)
        # reads: one outstanding; the address is registered, the data sampled read_latency cycles
        # later (rd_pend: a one-hot shift of the handshake)
        rd_pend = Signal(self._read_latency, name="rd_pend")
        m.d.comb += self.s_axil_arready.eq(~self.s_axil_rvalid & (rd_pend == 0))
        m.d.comb += [self.ar_stb.eq(self.s_axil_arvalid & self.s_axil_arready), self.ar_addr.eq(self.s_axil_araddr)]
        m.d.sync += rd_pend.eq(Cat(self.ar_stb, rd_pend[:-1]))
        with m.If(self.ar_stb):
            m.d.sync += self.rd_addr.eq(self.s_axil_araddr)
        with m.If(rd_pend[-1]):
            m.d.sync += [self.s_axil_rvalid.eq(1), self.s_axil_rdata.eq(self.rd_data)]
        with m.If(self.s_axil_rvalid & self.s_axil_rready):
            m.d.sync += self.s_axil_rvalid.eq(0)
        return m

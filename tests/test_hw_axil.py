"""The AXI4-Lite slave on its own: address and data in either order, back-pressure on B and R, read data."""

from __future__ import annotations

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from litefly.hw.axil_slave import AxiLiteSlave


class Harness:
    """The slave with a 4-register file behind it."""

    def __init__(self, read_latency=1):
        self.dut = AxiLiteSlave(addr_bits=8, read_latency=read_latency)
        self.m = Module()
        self.m.submodules.dut = self.dut
        self.regs = [Signal(32, name=f"r{i}") for i in range(4)]
        with self.m.If(self.dut.wr_stb):
            with self.m.Switch(self.dut.wr_addr):
                for i, r in enumerate(self.regs):
                    with self.m.Case(4 * i):
                        self.m.d.sync += r.eq(self.dut.wr_data)
        with self.m.Switch(self.dut.rd_addr):
            for i, r in enumerate(self.regs):
                with self.m.Case(4 * i):
                    self.m.d.comb += self.dut.rd_data.eq(r + 0x100 * i)


def run(tb, read_latency=1):
    h = Harness(read_latency)
    sim = Simulator(h.m)
    sim.add_clock(1e-8)

    async def bench(ctx):
        await tb(ctx, h.dut, h.regs)

    sim.add_testbench(bench)
    sim.run()


async def write(ctx, d, addr, data, order, bready_delay=0):
    if order in ("aw_first", "together"):
        ctx.set(d.s_axil_awaddr, addr)
        ctx.set(d.s_axil_awvalid, 1)
    if order in ("w_first", "together"):
        ctx.set(d.s_axil_wdata, data)
        ctx.set(d.s_axil_wvalid, 1)
    if order != "together":
        await ctx.tick()
        await ctx.tick()
        if order == "aw_first":
            ctx.set(d.s_axil_awvalid, 0)
            ctx.set(d.s_axil_wdata, data)
            ctx.set(d.s_axil_wvalid, 1)
        else:
            ctx.set(d.s_axil_wvalid, 0)
            ctx.set(d.s_axil_awaddr, addr)
            ctx.set(d.s_axil_awvalid, 1)
    await ctx.tick().until(d.s_axil_awready if order == "w_first" else d.s_axil_wready)
    ctx.set(d.s_axil_awvalid, 0)
    ctx.set(d.s_axil_wvalid, 0)
    await ctx.tick().until(d.s_axil_bvalid)
    for _ in range(bready_delay):
        assert ctx.get(d.s_axil_bvalid) and not ctx.get(d.s_axil_awready)   # no new write while B is pending
        await ctx.tick()
    ctx.set(d.s_axil_bready, 1)
    await ctx.tick()
    ctx.set(d.s_axil_bready, 0)


async def read(ctx, d, addr, rready_delay=0):
    ctx.set(d.s_axil_araddr, addr)
    ctx.set(d.s_axil_arvalid, 1)
    await ctx.tick().until(d.s_axil_arready)
    ctx.set(d.s_axil_arvalid, 0)
    value, = await ctx.tick().sample(d.s_axil_rdata).until(d.s_axil_rvalid)
    for _ in range(rready_delay):
        await ctx.tick()
        assert ctx.get(d.s_axil_rvalid) and ctx.get(d.s_axil_rdata) == value   # held until accepted
    ctx.set(d.s_axil_rready, 1)
    await ctx.tick()
    ctx.set(d.s_axil_rready, 0)
    return value


@pytest.mark.parametrize("order", ["together", "aw_first", "w_first"])
def test_write_then_read_back(order):
    async def tb(ctx, d, regs):
        await write(ctx, d, 8, 0xDEADBEEF, order, bready_delay=2)
        assert ctx.get(regs[2]) == 0xDEADBEEF and ctx.get(regs[1]) == 0
        assert await read(ctx, d, 8, rready_delay=3) == 0xDEADBEEF + 0x200
        assert await read(ctx, d, 0) == 0
        assert ctx.get(d.s_axil_bresp) == 0 and ctx.get(d.s_axil_rresp) == 0
    run(tb)


@pytest.mark.parametrize("latency", [1, 2, 3])
def test_read_latency_samples_later_and_keeps_one_read_outstanding(latency):
    """R is offered ``read_latency`` cycles after the AR handshake (the data sampled a cycle before);
    no second AR is accepted until R has been taken."""
    async def tb(ctx, d, regs):
        await write(ctx, d, 4, 0x1234, "together")
        ctx.set(d.s_axil_araddr, 4)
        ctx.set(d.s_axil_arvalid, 1)
        await ctx.tick().until(d.s_axil_arready)
        ctx.set(d.s_axil_arvalid, 0)
        cycles = 0
        while not ctx.get(d.s_axil_rvalid):
            assert not ctx.get(d.s_axil_arready)
            await ctx.tick()
            cycles += 1
        assert cycles == latency and ctx.get(d.s_axil_rdata) == 0x1234 + 0x100
        ctx.set(d.s_axil_rready, 1)
        await ctx.tick()
        ctx.set(d.s_axil_rready, 0)
        assert ctx.get(d.s_axil_arready)
    run(tb, latency)


def test_back_to_back_writes_land_in_order():
    async def tb(ctx, d, regs):
        for i in range(4):
            await write(ctx, d, 4 * i, i + 1, "together")
        assert [ctx.get(r) for r in regs] == [1, 2, 3, 4]
    run(tb)

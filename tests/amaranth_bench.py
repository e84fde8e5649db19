"""Amaranth-simulator testbench helpers for the engine: AXI-Lite and AXI-Stream in async testbenches."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from litefly.config import LayerConfig
from litefly.hw import regmap, wireformat
from litefly.hw.simd_engine import DeButEngine
from litefly.hw.spec import EngineSpec


async def axil_write(ctx, dut, offset: int, value: int) -> None:
    ctx.set(dut.s_axil_awaddr, offset)
    ctx.set(dut.s_axil_awvalid, 1)
    ctx.set(dut.s_axil_wdata, value)
    ctx.set(dut.s_axil_wvalid, 1)
    ctx.set(dut.s_axil_wstrb, 0xF)
    ctx.set(dut.s_axil_bready, 1)
    await ctx.tick().until(dut.s_axil_awready)
    ctx.set(dut.s_axil_awvalid, 0)
    ctx.set(dut.s_axil_wvalid, 0)
    await ctx.tick().until(dut.s_axil_bvalid)


async def axil_read(ctx, dut, offset: int) -> int:
    ctx.set(dut.s_axil_araddr, offset)
    ctx.set(dut.s_axil_arvalid, 1)
    ctx.set(dut.s_axil_rready, 1)
    await ctx.tick().until(dut.s_axil_arready)
    ctx.set(dut.s_axil_arvalid, 0)
    value, = await ctx.tick().sample(dut.s_axil_rdata).until(dut.s_axil_rvalid)
    return int(value)


async def stream_send(ctx, dut, beats: np.ndarray, idle: list[int] | None = None) -> None:
    for k, row in enumerate(beats):
        if idle and idle[k % len(idle)]:
            ctx.set(dut.s_axis_tvalid, 0)
            await ctx.tick()
        ctx.set(dut.s_axis_tdata, int.from_bytes(bytes(row), "little"))
        ctx.set(dut.s_axis_tvalid, 1)
        await ctx.tick().until(dut.s_axis_tready)
    ctx.set(dut.s_axis_tvalid, 0)


@dataclass
class EngineRun:
    """Outputs and register reads of one simulated run."""

    y: list[np.ndarray] = field(default_factory=list)       # per tile
    tlast: list[list[int]] = field(default_factory=list)    # beat indices with TLAST, per tile
    regs: dict[str, int] = field(default_factory=dict)


def run_engine(layer: LayerConfig, x: np.ndarray, weights, shifts, bias, tiles: list[int],
               fault: str | None = None, backpressure: list[int] | None = None,
               idle: list[int] | None = None, max_cycles: int = 400_000) -> EngineRun:
    """Load parameters, run ``tiles`` (batches per tile) over rows of ``x``, return outputs and counters."""
    spec = EngineSpec(layer)
    dut = DeButEngine(spec, fault=fault, external_clock=False)
    params = wireformat.pack_params(spec, weights, bias)
    result = EngineRun()
    sb = spec.stream_bits // 8
    starts = np.cumsum([0] + tiles) * spec.lanes

    async def driver(ctx):
        for i, s in enumerate(shifts):
            await axil_write(ctx, dut, regmap.SHIFT_BASE + 4 * i, int(s))
        await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_LOAD_PARAMS)
        await stream_send(ctx, dut, params)
        for _ in range(2):
            await ctx.tick()
        for t, nb in enumerate(tiles):
            await axil_write(ctx, dut, regmap.REG["TILE_BATCHES"], nb)
            await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_START)
            await stream_send(ctx, dut, wireformat.pack_batches(spec, x[starts[t]:starts[t + 1]]), idle)
            waited = 0
            while len(result.y) <= t:
                await ctx.tick()
                waited += 1
                assert waited < max_cycles, f"tile {t}: no output after {max_cycles} cycles"
            while (await axil_read(ctx, dut, regmap.REG["STATUS"])) & regmap.STATUS_BUSY:
                pass
        for r in spec.registers:
            if r.access != "W":
                result.regs[r.name] = await axil_read(ctx, dut, r.offset)

    async def receiver(ctx):
        for nb in tiles:
            beats, lasts = [], []
            k = 0
            while len(beats) < nb * spec.beats_out_per_batch:
                ready = 0 if (backpressure and backpressure[k % len(backpressure)]) else 1
                k += 1
                ctx.set(dut.m_axis_tready, ready)
                *_, data, valid, last = await ctx.tick().sample(dut.m_axis_tdata, dut.m_axis_tvalid, dut.m_axis_tlast)
                if valid and ready:
                    if last:
                        lasts.append(len(beats))
                    beats.append(list(int(data).to_bytes(sb, "little")))
            ctx.set(dut.m_axis_tready, 0)
            result.y.append(wireformat.unpack_batches(spec, np.array(beats, dtype=np.uint8), nb))
            result.tlast.append(lasts)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(receiver, background=True)
    sim.run()
    return result

"""A reusable cocotb 2.x testbench for the engine: clock, reset and cocotbext-axi bus models.

``EngineTB(dut, spec)`` drives a generated engine through its flat AXI ports. Register
offsets come from :mod:`litefly.hw.regmap`; stream payloads from :mod:`litefly.hw.wireformat`.
The host's simulated transport (``litefly.host.sim_transport``) builds on the same class.
"""

from __future__ import annotations

import random
from typing import Iterator

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from litefly.fixed import QuantizedLayer
from litefly.hw import regmap, wireformat
from litefly.hw.spec import EngineSpec

__all__ = ["EngineTB", "stall_generator"]


def stall_generator(prob: float, seed: int) -> Iterator[int]:
    """Endless seeded 0/1 sequence with P(1) = ``prob`` (1 = pause this cycle)."""
    rng = random.Random(seed)
    while True:
        yield 1 if rng.random() < prob else 0


class EngineTB:
    """Clock, reset, AXI-Stream source/sink and AXI-Lite master around an engine ``dut``."""

    def __init__(self, dut, spec: EngineSpec, clock_ns: float = 10.0) -> None:
        self.dut, self.spec = dut, spec
        self.clk = dut.aclk
        self.clock_ns = clock_ns
        cocotb.start_soon(Clock(dut.aclk, clock_ns, unit="ns").start())
        kw = dict(reset=dut.aresetn, reset_active_level=False)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, **kw)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, **kw)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, **kw)
        for model in (self.source, self.sink, self.axil.write_if, self.axil.read_if):
            model.log.setLevel("WARNING")

    # -- control -------------------------------------------------------------------------
    async def reset(self, cycles: int = 8) -> None:
        self.dut.aresetn.value = 0
        await ClockCycles(self.clk, cycles)
        self.dut.aresetn.value = 1
        await ClockCycles(self.clk, 2)

    def set_stalls(self, prob: float, seed: int = 0) -> None:
        """Random idle cycles on the input and back-pressure on the output (probability ``prob`` each)."""
        if prob > 0:
            self.source.set_pause_generator(stall_generator(prob, seed))
            self.sink.set_pause_generator(stall_generator(prob, seed + 1))
        else:
            for model in (self.source, self.sink):
                model.clear_pause_generator()
                model.pause = False     # clearing the generator can leave the model paused

    async def write_reg(self, reg: str | int, value: int) -> None:
        offset = regmap.REG[reg] if isinstance(reg, str) else reg
        await self.axil.write_dword(offset, int(value) & 0xFFFFFFFF)

    async def read_reg(self, reg: str | int) -> int:
        offset = regmap.REG[reg] if isinstance(reg, str) else reg
        return int(await self.axil.read_dword(offset))

    async def counters(self) -> dict[str, int]:
        names = ("STATUS", "CYCLES", "BUSY_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES", "COLUMNS_DONE")
        return {n: await self.read_reg(n) for n in names}

    # -- streams -------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Send one packet (TLAST on its last beat) and wait until it has left the source."""
        await self.source.send(AxiStreamFrame(bytes(data)))
        await self.source.wait()

    async def recv(self) -> bytes:
        """Receive one packet (up to TLAST)."""
        frame = await self.sink.recv()
        return bytes(frame.tdata)

    # -- engine-level helpers --------------------------------------------------------------
    async def load_params(self, q: QuantizedLayer) -> None:
        for i, s in enumerate(q.shifts):
            await self.write_reg(regmap.SHIFT_BASE + 4 * i, s)
        await self.write_reg("CTRL", regmap.CTRL_LOAD_PARAMS)
        await self.send(wireformat.beats_to_bytes(wireformat.pack_params(self.spec, q.weights, q.bias)))
        for _ in range(100):
            if await self.read_reg("STATUS") & regmap.STATUS_PARAMS_VALID:
                return
        raise AssertionError("parameters did not load (STATUS.PARAMS_VALID stays low)")

    async def run_tile(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """Run rows ``x`` (a multiple of lanes) as one tile; returns ``(y rows, cycles from START to TLAST)``."""
        spec = self.spec
        batches = x.shape[0] // spec.lanes
        await self.write_reg("TILE_BATCHES", batches)
        recv = cocotb.start_soon(self.recv())
        await self.write_reg("CTRL", regmap.CTRL_START)
        start = cocotb.simtime.get_sim_time("ns")
        await self.send(wireformat.beats_to_bytes(wireformat.pack_batches(spec, x)))
        data = await recv
        cycles = round((cocotb.simtime.get_sim_time("ns") - start) / self.clock_ns)
        beats = wireformat.bytes_to_beats(data, spec.stream_bits)
        return wireformat.unpack_batches(spec, beats, batches), cycles

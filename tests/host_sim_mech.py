"""cocotb module for tests/test_host_sim.py: SimTransport's bridge/resume mechanics in a real
simulator, with a stand-in testbench whose engine is the golden model (so the check is the
transport plumbing: threads, sim-time waits, timeouts), not the RTL."""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, RisingEdge

from litefly.config import LayerConfig
from litefly.fixed import QuantizedLayer
from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import drive
from litefly.host.sim_transport import SimTransport
from litefly.hw.spec import EngineSpec


class GoldenTB:
    """EngineTB's interface over the golden model, spending simulated clock cycles like a bus would."""

    def __init__(self, dut, spec, fault=None):
        self.clk, self.spec = dut.clk, spec
        self.engine = GoldenTransport(spec.layer, fault=fault)

    async def reset(self):
        await ClockCycles(self.clk, 4)

    async def write_reg(self, offset, value):
        await ClockCycles(self.clk, 3)
        self.engine.write_reg(offset, value)

    async def read_reg(self, offset):
        await ClockCycles(self.clk, 3)
        return self.engine.read_reg(offset)

    async def send(self, data: bytes):
        await ClockCycles(self.clk, len(data) // (self.spec.stream_bits // 8))
        self.engine._in += data
        self.engine._step()

    async def recv(self) -> bytes:
        while not self.engine._out:
            await RisingEdge(self.clk)
            self.engine._step()
        return self.engine._out.pop(0)


@cocotb.test()
async def mechanics(dut):
    p = json.loads(os.environ["HOST_MECH"])
    layer = LayerConfig.from_dict(p["layer"])
    spec = EngineSpec(layer)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    tb = GoldenTB(dut, spec, fault=p.get("fault"))
    await tb.reset()
    d = np.load(p["inputs"])
    n = len(layer.chain)
    q = QuantizedLayer(layer, [d[f"w{i}"] for i in range(n)], list(d["shifts"]), d["bias"] if "bias" in d else None)
    driver = EngineDriver(SimTransport(tb, spec, dut.clk), layer, timeout=0.5, buffer_bytes=p["buffer_bytes"])

    def work():
        try:
            y, st = drive(driver, q, d["cols"])
            return {"y": y.tolist(), "tiles": st["tiles"], "cycles": st["cycles"]}
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    out = await bridge(work)()
    with open(p["outputs"], "w") as f:
        json.dump(out, f)

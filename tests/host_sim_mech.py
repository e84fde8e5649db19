"""cocotb module for tests/test_sim_host.py: SimTransport's bridge/resume mechanics in a real
simulator (Icarus, a clock-only module), with a stand-in testbench whose engine is the engine
model (so what is checked is the transport plumbing: threads, simulated-cycle waits, DMA
buffers with offsets, timeouts), not the RTL."""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, RisingEdge

from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import execute, prepare_program
from litefly.host.sim_transport import SimTransport, load_jobs
from litefly.hw.spec import EngineEnvelope


class ModelTB:
    """EngineTB's interface over the engine model, spending simulated clock cycles like a bus would."""

    def __init__(self, dut, envelope, fault=None):
        self.clk, self.envelope = dut.clk, envelope
        self.engine = GoldenTransport(envelope, fault=fault)
        self.bytes_per_beat = envelope.stream_bits // 8
        self.slowdown = 1.0
        self.rx_armed = False
        self.clock_ns = 10.0

    async def reset(self):
        await ClockCycles(self.clk, 4)

    async def cycles(self, n):
        await ClockCycles(self.clk, max(1, int(n)))

    async def write_reg(self, offset, value):
        await ClockCycles(self.clk, 3)
        self.engine.write_reg(offset, value)

    async def read_reg(self, offset):
        await ClockCycles(self.clk, 3)
        return self.engine.read_reg(offset)

    async def send(self, data: bytes):
        await ClockCycles(self.clk, max(1, len(data) // self.bytes_per_beat))
        self.engine._in += data
        self.engine._step()

    async def recv(self) -> bytes:
        self.rx_armed = True
        try:
            while not self.engine._out or self.engine.fault == "short_output":
                await RisingEdge(self.clk)
                self.engine._step()
            return self.engine.take_output()
        finally:
            self.rx_armed = False

    def output_pending(self):
        return bool(self.engine._out)


@cocotb.test()
async def mechanics(dut):
    p = json.loads(os.environ["HOST_MECH"])
    envelope = EngineEnvelope.from_dict(p["envelope"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    out = {}
    for k, job in enumerate(load_jobs(p["jobs"])):
        tb = ModelTB(dut, envelope, fault=job.get("fault"))
        await tb.reset()
        transport = SimTransport(tb, envelope, clock_mhz=100.0)
        driver = EngineDriver(transport, envelope, timeout=float(job.get("timeout", 2.0)))

        def work(job=job, driver=driver):
            try:
                driver.check_identity()
                if job["kind"] == "script":
                    from litefly.sim.scripts import run_script
                    return {"trace": run_script(driver, job["script"], job["steps"], job["params"], job["x"])}
                y, stats = execute(driver, prepare_program(envelope, job["steps"], job["params"]), job["x"])
                return {"y": y.tolist(), "passes": [s["passes"] for s in stats],
                        "transfers": [s["transfers"] for s in stats]}
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}

        t0 = cocotb.simtime.get_sim_time("ns")
        res = await bridge(work)()
        res["sim_ns"] = cocotb.simtime.get_sim_time("ns") - t0
        out[str(k)] = res
    with open(p["outputs"], "w") as f:
        json.dump(out, f)

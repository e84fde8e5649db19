"""cocotb test module run by :func:`litefly.host.sim_transport.run_columns_sim` (PC only).

Builds the sim engineer's ``EngineTB``, then runs the synchronous host code
(:func:`litefly.host.runtime.drive` with an :class:`~litefly.host.driver.EngineDriver`) in
a ``cocotb.task.bridge`` thread over a :class:`~litefly.host.sim_transport.SimTransport`.
Parameters come from the runner's JSON; inputs and outputs are ``.npz`` files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.task import bridge

from litefly.hw import regmap
from litefly.hw.spec import EngineSpec

from .driver import EngineDriver
from .sim_transport import SimTransport, load_session_inputs


def _params() -> dict:
    try:
        from litefly.sim.runner import load_params
        return dict(load_params())
    except ImportError:
        pass
    for var in ("LITEFLY_SIM_PARAMS", "LITEFLY_PARAMS"):
        if os.environ.get(var):
            return json.loads(Path(os.environ[var]).read_text())
    raise RuntimeError("no simulation parameters found (litefly.sim.runner.load_params)")


class _NoStart:
    """Transport wrapper that drops CTRL.START: models an engine that never gets started."""

    def __init__(self, inner: SimTransport) -> None:
        self._inner = inner
        self.name, self.sendchannel, self.recvchannel = inner.name, inner.sendchannel, inner.recvchannel

    def write_reg(self, offset: int, value: int) -> None:
        if offset == regmap.REG["CTRL"]:
            value &= ~regmap.CTRL_START
            if not value:
                return
        self._inner.write_reg(offset, value)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@cocotb.test()
async def host_session(dut) -> None:
    """Run the host driver against the simulated engine."""
    from litefly.host.runtime import drive
    from litefly.sim.tb import EngineTB

    p = _params()
    layer, qlayer, cols = load_session_inputs(Path(p["inputs"]))
    spec = EngineSpec(layer)
    tb = EngineTB(dut, spec)
    await tb.reset()
    clk = tb.clk
    transport = SimTransport(tb, spec, clk)
    used = _NoStart(transport) if p.get("skip_start") else transport
    driver = EngineDriver(used, layer, timeout=float(p.get("timeout", 2.0)))

    def work():
        try:
            return drive(driver, qlayer, cols)
        except Exception as exc:  # reported to the host process, which raises it as one line
            return None, {"error": str(exc), "error_type": type(exc).__name__}

    y, stats = await bridge(work)()
    from cocotb.simtime import get_sim_time
    stats["sim_time_ns"] = float(get_sim_time("ns"))
    arrays = {"stats_json": np.asarray(json.dumps(stats))}
    if y is not None:
        arrays["y"] = y
    np.savez(Path(p["outputs"]), **arrays)

"""cocotb test module run by :func:`litefly.host.sim_transport.run_sim_jobs` (PC only).

Builds an :class:`~litefly.sim.tb.EngineTB`, then runs each job of the jobs file in turn in
the SAME simulation, with the synchronous host code in a ``cocotb.task.bridge`` thread over
a :class:`~litefly.host.sim_transport.SimTransport`:

* ``kind="network"``: :func:`litefly.host.runtime.execute` of the program rebuilt with
  :func:`~litefly.host.runtime.prepare_program` (stall pattern ``stall`` or ``stall_prob``,
  optional ``soft_reset`` before it);
* ``kind="script"``: a conformance script of :mod:`litefly.sim.scripts` on an
  :class:`~litefly.host.driver.EngineDriver`.

Errors of the host code are recorded per job (``error``, ``error_type``), so one failing job
does not hide the others. Outputs go to an ``.npz`` file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.task import bridge

from litefly.hw import regmap
from litefly.hw.spec import EngineEnvelope

from .driver import EngineDriver
from .sim_transport import SimTransport, load_jobs


class _NoStart:
    """Transport wrapper that drops CTRL.START: an engine that never gets started."""

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


def _set_stalls(tb, job: dict[str, Any]) -> None:
    seed = int(job.get("seed", 0))
    if job.get("stall"):
        tb.set_stall_pattern(job["stall"], seed)
    else:
        tb.set_stalls(float(job.get("stall_prob", 0.0)), seed)


@cocotb.test()
async def session(dut) -> None:
    """Run every job of the jobs file against the simulated engine."""
    from cocotb.simtime import get_sim_time

    from litefly.host.runtime import execute, prepare_program
    from litefly.sim.runner import load_params
    from litefly.sim.tb import EngineTB

    p = load_params()
    envelope = EngineEnvelope.from_dict(p["envelope"])
    jobs = load_jobs(Path(p["jobs"]))
    tb = EngineTB(dut, envelope)
    await tb.reset()
    transport = SimTransport(tb, envelope, clock_mhz=float(p.get("clock_mhz", 100.0)))
    results: list[dict[str, Any]] = []
    arrays: dict[str, Any] = {}
    identity_checked = False
    for k, job in enumerate(jobs):
        _set_stalls(tb, job)
        used = _NoStart(transport) if job.get("skip_start") else transport
        driver = EngineDriver(used, envelope, timeout=float(job.get("timeout", 2.0)),
                              clock_mhz=float(job.get("clock_mhz", p.get("clock_mhz", 100.0))))
        t0 = get_sim_time("ns")
        kind = job.get("kind", "network")

        def work(job=job, driver=driver, kind=kind) -> dict[str, Any]:
            nonlocal identity_checked
            try:
                if not identity_checked:
                    driver.check_identity()
                    identity_checked = True
                if job.get("soft_reset"):
                    driver.soft_reset()
                if kind == "script":
                    from litefly.sim.scripts import run_script
                    return {"trace": run_script(driver, job["script"], job["steps"], job["params"], job["x"])}
                program = prepare_program(envelope, job["steps"], job["params"])
                driver.reset_stats()
                y, stats = execute(driver, program, job["x"])
                return {"y": y, "stats": stats, "timings": dict(driver.timings)}
            except Exception as exc:  # reported to the host process, which raises it as one line
                return {"error": f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__,
                        "error_type": type(exc).__name__}

        out = await bridge(work)()
        if "y" in out:
            arrays[f"y{k}"] = np.asarray(out.pop("y"), dtype=np.int64)
        out["sim_time_ns"] = float(get_sim_time("ns") - t0)
        out["sim_cycles"] = int(round(out["sim_time_ns"] / tb.clock_ns))
        out["index"] = k
        if out.get("error") and job.get("kind", "network") == "network":
            # leave the engine clean for the next job
            tb.set_patterns(None, None)
            await tb.reset()
        results.append(out)
        arrays["results_json"] = np.asarray(json.dumps(results, default=_jsonable))
        np.savez(Path(p["outputs"]), **arrays)      # after every job: a crash keeps what was done
    np.savez(Path(p["outputs"]), **arrays)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)

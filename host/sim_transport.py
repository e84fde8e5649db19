"""The simulated backend: the same :class:`~litefly.host.driver.EngineDriver` code against the
cocotb + Verilator engine.

How it runs (``docs/host.md``): :func:`run_columns_sim` writes the layer's parameters and
input columns to an ``.npz`` file and calls the sim engineer's
``litefly.sim.runner.run_cocotb(layer, "litefly.host.sim_session", params)``. In the
simulator, :mod:`litefly.host.sim_session` builds an ``EngineTB`` and runs the synchronous
driver in a thread (``cocotb.task.bridge``); :class:`SimTransport`'s methods call back into
the simulator with ``cocotb.task.resume``. Outputs and statistics come back in another
``.npz``. Cycle counts are the engine's own CYCLES counter; times are "simulated at F MHz".

DMA waits are bounded in *simulated* cycles (a generous budget from the tile size), so a
stream that never ends (e.g. START never written) fails with one line instead of hanging.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import LiteflyError, ToolError
from litefly.fixed import QuantizedLayer
from litefly.hw import regmap
from litefly.hw.spec import EngineSpec

from .transport import DMATimeout, host_buffer

__all__ = ["SimTransport", "run_columns_sim", "save_session_inputs", "load_session_inputs"]


class _SimChannel:
    def __init__(self, owner: "SimTransport", direction: str) -> None:
        self._owner, self._dir = owner, direction
        self._task: Any = None
        self._buf: np.ndarray | None = None
        self._nbytes = 0
        self._start = self._budget = 0

    @property
    def idle(self) -> bool:
        return self._task is None or self._owner._resume(self._owner._task_done)(self._task)

    def transfer(self, buf: np.ndarray, nbytes: int | None = None) -> None:
        if self._task is not None:
            raise LiteflyError(f"DMA {self._dir} channel is busy: wait for the previous transfer first")
        own = self._owner
        nbytes = buf.nbytes if nbytes is None else int(nbytes)
        self._buf, self._nbytes = buf, nbytes
        if self._dir == "send":
            data = np.asarray(buf).reshape(-1).view(np.uint8)[:nbytes].tobytes()
            self._task = own._resume(own._spawn_send)(data)
        else:
            self._task = own._resume(own._spawn_recv)()
        self._budget = own.wait_budget_cycles(nbytes)

    def wait(self, timeout: float = 2.0) -> None:
        if self._task is None:
            return
        own = self._owner
        ok, result = own._resume(own._await_task)(self._task, self._budget)
        if not ok:
            what = "DMA send" if self._dir == "send" else "DMA receive"
            self._task = None
            raise DMATimeout(f"{what} did not complete within {timeout:.1f} s (budget of {self._budget} "
                             f"simulated cycles): the engine sent no TLAST (was it started?)")
        self._task = None
        if self._dir == "receive":
            data = bytes(result)
            if len(data) > self._nbytes:
                raise LiteflyError(f"DMA receive buffer of {self._nbytes} bytes is smaller than the "
                                   f"{len(data)}-byte packet")
            np.asarray(self._buf).reshape(-1).view(np.uint8)[:len(data)] = np.frombuffer(data, np.uint8)


class SimTransport:
    """Transport whose methods run inside a cocotb ``bridge`` thread and drive an ``EngineTB``."""

    name = "sim"

    def __init__(self, tb: Any, spec: EngineSpec, clk: Any) -> None:
        from cocotb.task import resume
        self._resume = resume
        self.tb, self.spec, self.clk = tb, spec, clk
        self._tile_batches = 1
        self.sendchannel = _SimChannel(self, "send")
        self.recvchannel = _SimChannel(self, "receive")

    # -- budgets -------------------------------------------------------------------------
    def wait_budget_cycles(self, nbytes: int) -> int:
        sp = self.spec
        beats = nbytes // (sp.stream_bits // 8) + 1
        work = self._tile_batches * (sp.issue_cycles_per_batch + sp.beats_in_per_batch + sp.beats_out_per_batch)
        return 4 * (work + beats) + 20_000

    # -- coroutines run in the simulator ------------------------------------------------------
    async def _spawn_send(self, data: bytes):
        import cocotb
        return cocotb.start_soon(self.tb.send(data))

    async def _spawn_recv(self):
        import cocotb
        return cocotb.start_soon(self.tb.recv())

    async def _task_done(self, task) -> bool:
        return task.done()

    async def _await_task(self, task, cycles: int):
        from cocotb.triggers import ClockCycles, First
        if not task.done():
            await First(task, ClockCycles(self.clk, cycles))
        if not task.done():
            task.cancel()
            return False, None
        return True, task.result()

    # -- registers and buffers (called from the driver thread) ---------------------------------
    def read_reg(self, offset: int) -> int:
        return int(self._resume(self.tb.read_reg)(offset))

    def write_reg(self, offset: int, value: int) -> None:
        if offset == regmap.REG["TILE_BATCHES"]:
            self._tile_batches = int(value)
        self._resume(self.tb.write_reg)(offset, int(value))

    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        return host_buffer(shape, dtype)

    def close(self) -> None:
        pass


# -- files passed between the host process and the simulator ---------------------------------------
def save_session_inputs(path: Path, layer: LayerConfig, qlayer: QuantizedLayer, cols: np.ndarray) -> None:
    arrays = {f"weights{i}": np.asarray(w, dtype=np.int64) for i, w in enumerate(qlayer.weights)}
    arrays["shifts"] = np.asarray(qlayer.shifts, dtype=np.int64)
    if qlayer.bias is not None:
        arrays["bias"] = np.asarray(qlayer.bias, dtype=np.int64)
    arrays["cols"] = np.asarray(cols)
    arrays["layer_json"] = np.asarray(json.dumps(layer.to_dict()))
    np.savez(path, **arrays)


def load_session_inputs(path: Path) -> tuple[LayerConfig, QuantizedLayer, np.ndarray]:
    with np.load(path, allow_pickle=False) as d:
        layer = LayerConfig.from_dict(json.loads(str(d["layer_json"])))
        n = len(layer.chain)
        q = QuantizedLayer(layer, [d[f"weights{i}"] for i in range(n)], [int(s) for s in d["shifts"]],
                           d["bias"] if "bias" in d.files else None)
        return layer, q, d["cols"]


def run_columns_sim(layer: LayerConfig, qlayer: QuantizedLayer, cols: np.ndarray, timeout: float = 2.0,
                    clock_mhz: float = 100.0, simulator: str = "verilator", fault: str | None = None,
                    workdir: str | Path | None = None, sim_timeout_s: float = 3600.0,
                    skip_start: bool = False, **_ignored: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Integer columns through the simulated engine; ``(y_int, stats)`` as :func:`litefly.host.runtime.drive`."""
    try:
        from litefly.sim.runner import run_cocotb
    except ImportError as exc:
        raise ToolError(f"the sim backend needs litefly.sim.runner (cocotb + Verilator): {exc}") from None
    cols = np.asarray(cols)
    with tempfile.TemporaryDirectory(prefix="litefly_host_", dir=workdir) as tmp:
        tmp = Path(tmp)
        inp, out = tmp / "inputs.npz", tmp / "outputs.npz"
        save_session_inputs(inp, layer, qlayer, cols)
        params = {"inputs": str(inp), "outputs": str(out), "timeout": float(timeout),
                  "clock_mhz": float(clock_mhz), "skip_start": bool(skip_start)}
        res = run_cocotb(layer, "litefly.host.sim_session", params, simulator=simulator, fault=fault,
                         timeout_s=sim_timeout_s)
        if not out.exists():
            raise ToolError(f"simulation of layer {layer.name!r} produced no outputs ({_summary(res)})")
        with np.load(out, allow_pickle=False) as d:
            stats = json.loads(str(d["stats_json"]))
            if "error" in stats:
                cls = DMATimeout if stats.get("error_type") == "DMATimeout" else LiteflyError
                raise cls(stats["error"])
            y = d["y"].astype(np.int64)
    stats["clock_mhz"] = float(clock_mhz)
    stats["sim"] = {k: v for k, v in (res or {}).items() if isinstance(v, (int, float, str, bool))}
    return y, stats


def _summary(res: Any) -> str:
    if isinstance(res, dict):
        return ", ".join(f"{k}={v}" for k, v in res.items() if isinstance(v, (int, float, str, bool)))[:300]
    return str(res)[:300]

"""The simulated backend: the same :class:`~litefly.host.driver.EngineDriver` code against the
cocotb + Verilator network engine.

How it runs (``docs/verification.md``): :func:`run_network_sim` writes the network program
(steps, integer parameters, input) to an ``.npz`` file and calls
``litefly.sim.runner.run_cocotb(envelope, "litefly.host.sim_session", params)``. In the
simulator, :mod:`litefly.host.sim_session` builds an :class:`~litefly.sim.tb.EngineTB`,
rebuilds the program with :func:`~litefly.host.runtime.prepare_program` and runs the
synchronous :func:`~litefly.host.runtime.execute` in a thread (``cocotb.task.bridge``);
:class:`SimTransport`'s methods call back into the simulator with ``cocotb.task.resume``.
Outputs, statistics and the driver's timings come back in another ``.npz``. Cycle counts are
the engine's own counters.

DMA waits are bounded in *simulated* cycles: the smaller of the driver's bound at the clock
and a budget from the cycle model of the descriptor last written (times the stall
pattern's slowdown), so a stream that never ends fails with one line instead of hanging.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import LiteflyError, ToolError
from litefly.fixed import QuantizedLayer
from litefly.hw import regmap
from litefly.hw.cycles import chain_issue, words_pass_cycles
from litefly.hw.spec import EngineEnvelope, ceil_div, factors_from_words
from litefly.hw.wireformat import unpack_layer_params
from litefly.network import EngineStep

from .transport import DMATimeout, host_buffer

__all__ = ["SimTransport", "run_network_sim", "run_sim_jobs", "save_jobs", "load_jobs", "program_params",
           "steps_to_json", "steps_from_json", "model_pass_cycles"]

_OFFSET_NAME = {r.offset: r.name for r in regmap.REGISTERS}


def model_pass_cycles(words: Mapping[str, int], envelope: EngineEnvelope) -> int:
    """The cycle model of the pass the descriptor ``words`` describe (0 if they describe none)."""
    try:
        n = regmap.unpack("LAYER", words["LAYER"])["FACTORS"]
        chain = factors_from_words({k: v for k, v in words.items() if not k.endswith("_SPARSE")})
        if not chain:
            return 0
        # a sparse factor's F<i>_RS and F<i>_TG are 0 (LayerDescriptor.register_words): read as a DeBut
        # factor it has no parameters and never pairs; its entries are not in the registers, all of
        # the index beats bound them
        pairs = chain_issue(chain, envelope.lane_rows)
        macs = pairs.issue + words.get("INDEX_BEATS", 0) * envelope.entries_per_beat
        p = regmap.unpack("OUT_C", words.get("OUT_C", 0))["P"]
        return words_pass_cycles(words, envelope.lanes, envelope.elems_per_beat, macs, n, p,
                                 envelope.window_generators, pairs, envelope.frame_word_beats)
    except (KeyError, ValueError, ZeroDivisionError):
        return 0


class _SimChannel:
    """A DMA channel (``transfer`` / ``idle`` / ``wait``) whose transfers are cocotb tasks."""

    def __init__(self, owner: "SimTransport", direction: str) -> None:
        self._owner, self._dir = owner, direction
        self._task: Any = None
        self._buf: np.ndarray | None = None
        self._nbytes = 0
        self.transfers = 0
        self.transferred = 0

    @property
    def idle(self) -> bool:
        return self._task is None or bool(self._owner._resume(self._owner._task_done)(self._task))

    def transfer(self, buf: np.ndarray, start: int = 0, nbytes: int | None = None) -> None:
        if self._task is not None:
            raise LiteflyError(f"DMA {self._dir} channel is busy: wait for the previous transfer first")
        own = self._owner
        view = np.asarray(buf).reshape(-1).view(np.uint8)[int(start):]
        nbytes = view.nbytes if nbytes is None else int(nbytes)
        if nbytes <= 0 or nbytes > view.nbytes:
            raise LiteflyError(f"DMA {self._dir} of {nbytes} bytes from offset {start} does not fit the "
                               f"{view.nbytes + int(start)}-byte buffer")
        self._buf, self._nbytes = view, nbytes
        if self._dir == "send":
            self._task = own._resume(own._spawn)(own.tb.send(view[:nbytes].tobytes()))
        else:
            self._task = own._resume(own._spawn)(own.tb.recv())
        self.transfers += 1

    def wait(self, timeout: float = 2.0) -> None:
        if self._task is None:
            return
        own = self._owner
        budget = own.wait_budget_cycles(self._nbytes, timeout)
        ok, result = own._resume(own._await_task)(self._task, budget)
        self._task = None
        what = "DMA send" if self._dir == "send" else "DMA receive"
        if not ok:
            raise DMATimeout(f"{what} did not complete within {budget} simulated cycles "
                             f"({budget / own.clock_hz * 1e6:.1f} us at {own.clock_hz / 1e6:g} MHz): the engine "
                             f"sent no TLAST (was it started?)")
        if self._dir == "receive":
            data = bytes(result)
            if len(data) > self._nbytes:
                raise LiteflyError(f"DMA receive buffer of {self._nbytes} bytes is smaller than the "
                                   f"{len(data)}-byte packet")
            self._buf[:len(data)] = np.frombuffer(data, np.uint8)  # type: ignore[index]
            self.transferred += len(data)
        else:
            self.transferred += self._nbytes


class SimTransport:
    """Transport whose methods run inside a cocotb ``bridge`` thread and drive an ``EngineTB``.

    Besides the transport interface it offers :meth:`settle` (let the engine run ``n``
    cycles) and :meth:`output_pending` (``m_axis_tvalid``), which conformance scripts use.
    """

    name = "sim"

    def __init__(self, tb: Any, envelope: EngineEnvelope, clock_mhz: float = 100.0) -> None:
        from cocotb.task import resume
        self._resume = resume
        self.tb, self.envelope = tb, envelope
        self.clock_hz = float(clock_mhz) * 1e6
        self.words: dict[str, int] = {}
        self._factor_names = {regmap.factor_reg(i, k).offset: regmap.factor_reg(i, k).name
                              for i in range(envelope.max_factors) for k, _, _ in regmap.FACTOR_REGS}
        self.sendchannel = _SimChannel(self, "send")
        self.recvchannel = _SimChannel(self, "receive")

    # -- budgets -------------------------------------------------------------------------
    def wait_budget_cycles(self, nbytes: int, timeout: float) -> int:
        """Simulated cycles a DMA wait may take: the model's pass (or stream) cycles with margin,
        at most the driver's ``timeout`` at the clock."""
        beats = ceil_div(max(1, nbytes), self.envelope.elems_per_beat)
        work = model_pass_cycles(self.words, self.envelope)
        budget = int(4 * getattr(self.tb, "slowdown", 1.0) * (work + beats)) + 2_000
        return max(1, min(budget, int(float(timeout) * self.clock_hz)))

    # -- coroutines run in the simulator ------------------------------------------------------
    async def _spawn(self, coro):
        import cocotb
        return cocotb.start_soon(coro)

    async def _task_done(self, task) -> bool:
        return task.done()

    async def _await_task(self, task, cycles: int):
        from cocotb.triggers import ClockCycles, First
        if not task.done():
            await First(task, ClockCycles(self.tb.clk, cycles))
        if not task.done():
            task.cancel()
            getattr(self.tb, "disarm", lambda: None)()
            self.tb.rx_armed = False
            return False, None
        return True, task.result()

    async def _settle(self, cycles: int) -> None:
        await self.tb.cycles(cycles)

    async def _pending(self) -> bool:
        return self.tb.output_pending()

    # -- registers and buffers (called from the driver thread) ---------------------------------
    def read_reg(self, offset: int) -> int:
        return int(self._resume(self.tb.read_reg)(int(offset)))

    def write_reg(self, offset: int, value: int) -> None:
        name = _OFFSET_NAME.get(int(offset)) or self._factor_names.get(int(offset))
        if name is not None and name not in ("CTRL",):
            self.words[name] = int(value) & 0xFFFFFFFF
        self._resume(self.tb.write_reg)(int(offset), int(value))

    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        return host_buffer(shape, dtype)

    def settle(self, cycles: int) -> None:
        """Let the simulated engine run ``cycles`` clock cycles."""
        self._resume(self._settle)(int(cycles))

    def output_pending(self) -> bool:
        return bool(self._resume(self._pending)())

    def close(self) -> None:
        pass


# -- programs passed between the host process and the simulator ---------------------------------------
def steps_to_json(steps: Sequence[EngineStep]) -> list[dict[str, Any]]:
    return [{"layer": s.layer.to_dict(), "in_shape": list(s.in_shape), "relu": bool(s.relu),
             "pool": None if s.pool is None else list(s.pool), "pre": s.pre, "skip": s.skip, "src": s.src,
             "foldable": bool(s.foldable)}
            for s in steps]


def steps_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[EngineStep, ...]:
    return tuple(EngineStep(LayerConfig.from_dict(d["layer"]), tuple(d["in_shape"]), bool(d["relu"]),
                            None if d["pool"] is None else tuple(d["pool"]), d.get("pre"), d.get("skip"), d.get("src"),
                            foldable=bool(d.get("foldable", True)))
                 for d in data)


def program_params(program: Any) -> dict[str, QuantizedLayer]:
    """The integer parameters of a :class:`~litefly.host.runtime.NetworkProgram`, decoded from its
    packed parameter bytes (the inverse of what :func:`~litefly.host.runtime.prepare_program` packed)."""
    env = program.envelope
    out = {}
    aligns = program.skip_align or (None,) * len(program.steps)
    for step, desc, shifts, packed, align in zip(program.steps, program.descriptors, program.shifts, program.params,
                                                 aligns):
        lay = step.layer
        flat, bias = unpack_layer_params(np.asarray(packed, np.uint8), [f.params for f in lay.chain],
                                         desc.weight_beats, lay.chain_out if lay.format.bias else 0,
                                         env.weight_bits, env.stream_bits, desc.index_beats, lay.chain,
                                         env.lane_rows)
        weights = [w.reshape(f.compact_shape) for w, f in zip(flat, lay.chain)]
        out[step.name] = QuantizedLayer(lay, weights, list(shifts), bias, skip_align=align)
    return out


def save_jobs(path: Path, jobs: Sequence[Mapping[str, Any]]) -> None:
    """Write simulation jobs to one ``.npz``.

    A job is a dict: ``kind`` ("network" or "script"), ``steps`` (EngineSteps) and ``params``
    (``{layer name: QuantizedLayer}``) and ``x`` (NCHW ints) for a network job; any other
    JSON-able keys (``stall``, ``seed``, ``timeout``, ``clock_mhz``, ``soft_reset``, ``script``...)
    are passed through.
    """
    arrays: dict[str, Any] = {}
    meta = []
    for k, job in enumerate(jobs):
        m = {key: v for key, v in job.items() if key not in ("steps", "params", "x")}
        if "steps" in job:
            m["steps"] = steps_to_json(job["steps"])
            for si, step in enumerate(job["steps"]):
                q = job["params"][step.name]
                for i, w in enumerate(q.weights):
                    arrays[f"j{k}_s{si}_w{i}"] = np.asarray(w, dtype=np.int64)
                arrays[f"j{k}_s{si}_shifts"] = np.asarray(q.shifts, dtype=np.int64)
                if q.bias is not None:
                    arrays[f"j{k}_s{si}_bias"] = np.asarray(q.bias, dtype=np.int64)
                if q.skip_align is not None:
                    arrays[f"j{k}_s{si}_skip"] = np.asarray(q.skip_align, dtype=np.int64)
        if "x" in job:
            arrays[f"j{k}_x"] = np.asarray(job["x"], dtype=np.int64)
        meta.append(m)
    arrays["meta_json"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)


def load_jobs(path: Path) -> list[dict[str, Any]]:
    """Inverse of :func:`save_jobs` (steps rebuilt as EngineSteps, parameters as QuantizedLayers)."""
    with np.load(path, allow_pickle=False) as d:
        meta = json.loads(str(d["meta_json"]))
        jobs = []
        for k, m in enumerate(meta):
            job = dict(m)
            if "steps" in m:
                steps = steps_from_json(m["steps"])
                params = {}
                for si, step in enumerate(steps):
                    lay = step.layer
                    bias_key, skip_key = f"j{k}_s{si}_bias", f"j{k}_s{si}_skip"
                    params[step.name] = QuantizedLayer(
                        lay, [d[f"j{k}_s{si}_w{i}"] for i in range(len(lay.chain))],
                        [int(s) for s in d[f"j{k}_s{si}_shifts"]], d[bias_key] if bias_key in d.files else None,
                        skip_align=tuple(int(v) for v in d[skip_key]) if skip_key in d.files else None)
                job.update(steps=steps, params=params)
            if f"j{k}_x" in d.files:
                job["x"] = d[f"j{k}_x"]
            jobs.append(job)
    return jobs


def run_sim_jobs(envelope: EngineEnvelope, jobs: Sequence[Mapping[str, Any]], simulator: str = "verilator",
                 fault: str | None = None, workdir: str | Path | None = None, sim_timeout_s: float = 1800.0,
                 clock_mhz: float = 100.0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run ``jobs`` one after another in ONE simulation of ``envelope``'s engine.

    Returns one result dict per job (``y`` as an int64 array for network jobs, ``stats``,
    ``timings``, ``trace`` for scripts, ``error``/``error_type`` if the job raised) and the
    runner's summary (``passed``, ``failures``, ``log``).
    """
    try:
        from litefly.sim.runner import run_cocotb
    except ImportError as exc:
        raise ToolError(f"the sim backend needs litefly.sim.runner (cocotb + Verilator): {exc}") from None
    with tempfile.TemporaryDirectory(prefix="litefly_host_", dir=workdir) as tmp:
        tmp = Path(tmp)
        inp, out = tmp / "jobs.npz", tmp / "outputs.npz"
        save_jobs(inp, jobs)
        params = {"jobs": str(inp), "outputs": str(out), "clock_mhz": float(clock_mhz)}
        res = run_cocotb(envelope, "litefly.host.sim_session", params, simulator=simulator, fault=fault,
                         timeout_s=sim_timeout_s)
        if not out.exists():
            why = "; ".join(res.get("failures") or []) or "no outputs written"
            raise ToolError(f"simulation of engine {envelope.name!r} produced no outputs: {why[:300]} "
                            f"(log: {res.get('log')})")
        results = []
        with np.load(out, allow_pickle=False) as d:
            meta = json.loads(str(d["results_json"]))
            for k, r in enumerate(meta):
                r = dict(r)
                if f"y{k}" in d.files:
                    r["y"] = d[f"y{k}"].astype(np.int64)
                results.append(r)
    summary = {k: v for k, v in res.items() if isinstance(v, (int, float, str, bool, list))}
    return results, summary


def run_network_sim(program: Any, x_int: np.ndarray, timeout: float = 2.0, clock_mhz: float = 100.0,
                    simulator: str = "verilator", fault: str | None = None, stall_prob: float = 0.0,
                    stall: str | None = None, seed: int = 0, workdir: str | Path | None = None,
                    sim_timeout_s: float = 1800.0, skip_start: bool = False,
                    **_ignored: Any) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, float]]:
    """``execute(driver, program, x_int)`` inside one simulation of the program's engine.

    Returns ``(y_int, stats, timings)`` as :func:`~litefly.host.runtime.execute` returns them plus
    the driver's timings. Errors of the host code inside the simulator are raised here as the
    same one-line exceptions (:class:`DMATimeout`, :class:`LiteflyError`).
    """
    params = program_params(program)
    job = {"kind": "network", "steps": program.steps, "params": params, "x": np.asarray(x_int),
           "timeout": float(timeout), "clock_mhz": float(clock_mhz), "stall_prob": float(stall_prob),
           "stall": stall, "seed": int(seed), "skip_start": bool(skip_start)}
    results, summary = run_sim_jobs(program.envelope, [job], simulator=simulator, fault=fault, workdir=workdir,
                                    sim_timeout_s=sim_timeout_s, clock_mhz=clock_mhz)
    r = results[0]
    if r.get("error"):
        cls = DMATimeout if r.get("error_type") == "DMATimeout" else LiteflyError
        raise cls(r["error"])
    if "y" not in r:
        raise ToolError(f"simulation of engine {program.envelope.name!r} returned no output "
                        f"({'; '.join(summary.get('failures') or [])[:300]})")
    stats = r.get("stats") or []
    for s in stats:
        s["clock_mhz"] = float(clock_mhz)
        s["sim_time_ns"] = r.get("sim_time_ns")
    return r["y"], stats, dict(r.get("timings") or {})

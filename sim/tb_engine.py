"""cocotb test module: the engine against the fixed-point golden model, bit for bit.

Parameters (from :func:`litefly.sim.runner.load_params`): ``vectors`` (an .npz written by
``litefly vectors``), ``tiles`` (batches per tile), ``stall_prob``, ``seed``,
``reset_midway`` (reset during a stream, then a clean second run), ``measure`` (one extra
multi-batch tile without stalls to measure the steady state). Results go back through
:func:`litefly.sim.runner.save_results`.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from litefly.config import LayerConfig
from litefly.hw import regmap, wireformat
from litefly.hw.spec import EngineSpec
from litefly.vectors import load_vectors

from .runner import load_params, save_results
from .tb import EngineTB


def first_mismatch(got: np.ndarray, want: np.ndarray, col0: int = 0) -> dict | None:
    bad = np.argwhere(got != want)
    if bad.size == 0:
        return None
    c, e = (int(v) for v in bad[0])
    return {"column": col0 + c, "element": e, "expected": int(want[c, e]), "got": int(got[c, e]),
            "count": int(bad.shape[0])}


async def identify(tb: EngineTB, layer: LayerConfig) -> dict:
    ids = {n: await tb.read_reg(n) for n in ("ID", "VERSION", "CONFIG_HASH", "LANES", "INFO")}
    assert ids["ID"] == regmap.ID_MAGIC, f"ID register reads 0x{ids['ID']:08x}"
    assert ids["VERSION"] >> 16 == regmap.VERSION[0]
    assert ids["CONFIG_HASH"] == layer.hash32
    assert ids["LANES"] == tb.spec.lanes and ids["INFO"] == tb.spec.info_word
    return ids


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def check_vectors(dut):
    """Load parameters, stream every column of the vectors file, compare each output element."""
    p = load_params()
    layer = LayerConfig.from_dict(p["layer"])
    spec = EngineSpec(layer)
    vec = load_vectors(p["vectors"])
    q = vec.quantized(layer)
    tb = EngineTB(dut, spec)
    await tb.reset()
    await identify(tb, layer)
    x, y = np.asarray(vec["x"]), np.asarray(vec["y"])
    lanes = spec.lanes
    pad = (-x.shape[0]) % lanes
    xp = np.concatenate([x, np.zeros((pad, x.shape[1]), dtype=x.dtype)]) if pad else x
    results: dict = {"columns": int(x.shape[0]), "lanes": lanes}

    if p.get("reset_midway"):
        await tb.load_params(q)
        await tb.write_reg("TILE_BATCHES", xp.shape[0] // lanes)
        await tb.write_reg("CTRL", regmap.CTRL_START)
        half = wireformat.pack_batches(spec, xp)
        sender = cocotb.start_soon(tb.send(wireformat.beats_to_bytes(half)))
        await ClockCycles(tb.clk, max(20, half.shape[0] // 2))
        sender.cancel()
        await tb.reset()
        tb.sink.clear()
        results["reset_midway"] = True

    tb.set_stalls(float(p.get("stall_prob", 0.0)), int(p.get("seed", 0)))
    await tb.load_params(q)
    await tb.write_reg("CTRL", regmap.CTRL_CLEAR_COUNTERS)
    got = []
    tiles = p.get("tiles") or [xp.shape[0] // lanes]
    col = 0
    for nb in tiles:
        xs = xp[col:col + nb * lanes]
        if xs.shape[0] == 0:
            break
        yt, cycles = await tb.run_tile(xs)
        got.append(yt)
        col += xs.shape[0]
    gy = np.concatenate(got)[:x.shape[0]]
    counters = await tb.counters()
    results.update(counters=counters, mismatch=first_mismatch(gy, y))
    results["status_done"] = bool(counters["STATUS"] & regmap.STATUS_DONE)

    if p.get("measure"):
        results["measure"] = await measure(dut, tb, q, int(p.get("measure_batches", 4)))
    save_results(results)
    if results.get("measure") and results["measure"]["mismatch"] and not results["mismatch"]:
        results["mismatch"] = results["measure"]["mismatch"]
        save_results(results)
    assert results["mismatch"] is None, "mismatch: column {column} element {element}: expected {expected}, got {got}".format(**results["mismatch"])


async def _first_valid(dut, tb: EngineTB) -> int:
    n = 0
    while True:
        await RisingEdge(tb.clk)
        n += 1
        if dut.m_axis_tvalid.value == 1:
            return n


async def _timed_tile(dut, tb: EngineTB, q, batches: int, seed: int) -> dict:
    """One tile without stalls; engine counters, latency and a golden check of its outputs."""
    spec = tb.spec
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (spec.act_bits - 1)), (1 << (spec.act_bits - 1)) - 1
    xm = rng.integers(lo, hi + 1, (batches * spec.lanes, spec.in_elems))
    await tb.write_reg("CTRL", regmap.CTRL_CLEAR_COUNTERS)
    first_beat = cocotb.start_soon(_first_valid(dut, tb))
    ym, _ = await tb.run_tile(xm)
    c = await tb.counters()
    c["latency_cycles"] = await first_beat
    c["mismatch"] = first_mismatch(ym, q.forward(xm))
    return c


async def measure(dut, tb: EngineTB, q, batches: int) -> dict:
    """Whole-tile figures for ``batches`` batches and the steady state from two tile lengths.

    Steady-state cycles per batch = (CYCLES(n2) - CYCLES(n1)) / (n2 - n1): fill and drain
    cancel, what is left is what one more batch costs.
    """
    tb.set_stalls(0.0)
    layer, lanes = tb.spec.layer, tb.spec.lanes
    n1, n2 = 1, 1 + batches
    a = await _timed_tile(dut, tb, q, n1, 11)
    b = await _timed_tile(dut, tb, q, n2, 12)
    steady = (b["CYCLES"] - a["CYCLES"]) / (n2 - n1)
    return {
        "batches": n2, "cycles": b["CYCLES"], "busy_cycles": b["BUSY_CYCLES"],
        "starved_cycles": b["STARVED_CYCLES"], "stalled_cycles": b["STALLED_CYCLES"], "columns": b["COLUMNS_DONE"],
        "latency_cycles": a["latency_cycles"],
        "cycles_per_column": b["CYCLES"] / (n2 * lanes),
        "mac_utilisation": layer.macs_per_column * n2 / b["CYCLES"],
        "steady_cycles_per_batch": steady,
        "steady_cycles_per_column": steady / lanes,
        "steady_mac_utilisation": layer.macs_per_column / steady,
        "mismatch": a["mismatch"] or b["mismatch"],
    }

"""Amaranth-simulator testbench for the network engine: AXI-Lite and AXI-Stream in async testbenches.

Register offsets and fields come from :mod:`litefly.hw.regmap`, descriptor words from
``EngineEnvelope.describe(step).register_words(images)``; tensors are packed NHWC-E here
(small local helpers) and compared with ``litefly.network.step_forward_int`` by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from litefly.fixed import QuantizedLayer
from litefly.hw import regmap, wireformat
from litefly.hw.engine import NetworkEngine
from litefly.hw.spec import BIAS_CONTAINER_BITS, EngineEnvelope, LayerDescriptor, ceil_div
from litefly.network import EngineStep


# ---------------------------------------------------------------- packing (NHWC-E, params)
def pack_nhwce(x: np.ndarray, e: int) -> np.ndarray:
    """NCHW ints -> beats ``(n*h*w*cw, e)`` uint8, channels past C zero."""
    n, c, h, w = x.shape
    cw = ceil_div(c, e)
    t = np.zeros((n, h, w, cw * e), dtype=np.int64)
    t[..., :c] = np.asarray(x).transpose(0, 2, 3, 1)
    return (t.reshape(-1, e) & 0xFF).astype(np.uint8)


def unpack_nhwce(beats: np.ndarray, n: int, c: int, h: int, w: int) -> np.ndarray:
    """Beats -> NCHW int64 (the pad channels are returned separately by :func:`pad_channels`)."""
    e = beats.shape[1]
    cw = ceil_div(c, e)
    t = beats.astype(np.int8).astype(np.int64).reshape(n, h, w, cw * e)
    return t[..., :c].transpose(0, 3, 1, 2)


def pad_channels(beats: np.ndarray, c: int) -> np.ndarray:
    e = beats.shape[1]
    cw = ceil_div(c, e)
    return beats.reshape(-1, cw * e)[:, c:]


def pack_values(values, bits: int, stream_bits: int) -> np.ndarray:
    """Signed ints, ``stream_bits // bits`` per beat, little-endian, zero padded -> ``(beats, bytes)`` uint8."""
    values = [int(v) & ((1 << bits) - 1) for v in np.asarray(values).ravel()]
    per = stream_bits // bits
    out = []
    for i in range(0, max(len(values), 1), per):
        word = 0
        for k, v in enumerate(values[i:i + per]):
            word |= v << (k * bits)
        out.append(list(word.to_bytes(stream_bits // 8, "little")))
    if not values:
        return np.zeros((0, stream_bits // 8), dtype=np.uint8)
    return np.array(out, dtype=np.uint8)


def weight_stream(env: EngineEnvelope, q: QuantizedLayer) -> list[int]:
    """The weight memory's contents, walked as the sequencer reads them: on a row-octet engine a
    factor with r divisible by 8 and s >= 8 gives rows a..a+7 of each column side by side from an
    index divisible by 8; else on a row-quad engine a
    factor with r divisible by 4 and s >= 4 gives rows a..a+3 of each column side by side from an
    index divisible by 4, and a later factor with r even, t even and s >= 4 (an interleaved quad)
    rows a, a+1 of block u then of block u+1; else on a row-pair engine a factor with r even and
    s >= 2 gives rows a, a+1 of each column side by side, from an even index."""
    out: list[int] = []
    for i, (f, w) in enumerate(zip(q.layer.chain, q.weights)):
        w = np.asarray(w, dtype=np.int64)
        n, inter = 1, False
        if f.kind == "debut" and env.row_octets and f.r % 8 == 0 and f.s >= 8:
            n = 8
        elif f.kind == "debut" and env.row_quads and f.r % 4 == 0 and f.s >= 4:
            n = 4
        elif f.kind == "debut" and env.row_quads and i > 0 and f.r % 2 == 0 and f.t % 2 == 0 and f.s >= 4:
            n, inter = 4, True
        elif f.kind == "debut" and env.row_pairs and f.r % 2 == 0 and f.s >= 2:
            n = 2
        if n > 1:
            out += [0] * (-len(out) % n)
            g, t, r, s = f.compact_shape
            w = w.reshape(g, t, r, s)
            for j in range(g):
                for u in range(0, t, 2 if inter else 1):
                    for a in range(0, r, 2 if inter else n):
                        for b in range(s):
                            if inter:
                                out += [int(w[j, u + du, a + k, b]) for du in (0, 1) for k in (0, 1)]
                            else:
                                out += [int(w[j, u, a + k, b]) for k in range(n)]
        else:
            out += [int(v) for v in w.ravel()]
    return out


def pack_layer_params(env: EngineEnvelope, q: QuantizedLayer) -> np.ndarray:
    parts = [pack_values(weight_stream(env, q), env.weight_bits, env.stream_bits)]
    entries = [col | ((k == len(row) - 1) << 15) for f in q.layer.chain if f.kind == "sparse"
               for row in f.rows() for k, col in enumerate(row)]
    if entries:
        parts.append(pack_values(entries, 16, env.stream_bits))
    if q.layer.format.bias:
        parts.append(pack_values(q.bias, BIAS_CONTAINER_BITS, env.stream_bits))
    return np.concatenate(parts)


# ---------------------------------------------------------------- bus functions
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


async def stream_send(ctx, dut, beats: np.ndarray, idle: list[int] | None = None, limit: int | None = None) -> int:
    """Send beats (stop after ``limit`` of them); returns how many were sent."""
    sent = 0
    for k, row in enumerate(beats):
        if limit is not None and sent >= limit:
            break
        if idle and idle[k % len(idle)]:
            ctx.set(dut.s_axis_tvalid, 0)
            await ctx.tick()
        ctx.set(dut.s_axis_tdata, int.from_bytes(bytes(row), "little"))
        ctx.set(dut.s_axis_tvalid, 1)
        ctx.set(dut.s_axis_tlast, int(k == len(beats) - 1))
        await ctx.tick().until(dut.s_axis_tready)
        sent += 1
    ctx.set(dut.s_axis_tvalid, 0)
    ctx.set(dut.s_axis_tlast, 0)
    return sent


class SimTimeout(AssertionError):
    pass


# ---------------------------------------------------------------- runs
@dataclass
class Pass:
    """One pass: descriptor words (shifts included), optional parameters to load first, input beats."""

    words: dict[str, int]
    x_beats: np.ndarray
    out_beats: int
    params: np.ndarray | None = None
    abort_params: int | None = None     # soft reset after this many parameter beats, then load again
    abort_frame: int | None = None      # soft reset after this many feature-map beats, then start again


def pass_for(env: EngineEnvelope, step: EngineStep, q: QuantizedLayer, x: np.ndarray,
             load_params: bool = True, packed: bool = False) -> Pass:
    """A pass of ``step`` over ``x`` (NCHW ints), packed by the host's wireformat (cross-checked
    against the local packers above); ``packed``: as plain NHWC bytes (``LAYER.PACKED``)."""
    desc: LayerDescriptor = env.describe(step, packed_input=packed)
    words = desc.register_words(x.shape[0])
    for i, s in enumerate(q.shifts):
        words[f"F{i}_SHIFT"] = regmap.pack(regmap.factor_reg(i, "SHIFT"), int(s))
    e = env.elems_per_beat
    x_beats = wireformat.pack_tensor(x, e, packed=packed).reshape(-1, e)
    local = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.int8).view(np.uint8).reshape(-1, e) if packed \
        else pack_nhwce(x, e)
    assert np.array_equal(x_beats, local), "wireformat.pack_tensor disagrees with the bench's packer"
    params = None
    if load_params:
        params = wireformat.pack_layer_params(q.weights, q.bias, env.weight_bits, env.stream_bits, q.layer.chain,
                                              env.lane_rows)
        assert np.array_equal(params, pack_layer_params(env, q)), "wireformat.pack_layer_params disagrees"
        assert params.shape[0] == desc.param_beats
    return Pass(words, x_beats, x.shape[0] * desc.out_beats_per_image, params)


@dataclass
class EngineRun:
    out: list[np.ndarray] = field(default_factory=list)      # output beats per pass
    tlast: list[list[int]] = field(default_factory=list)     # beat indices with TLAST, per pass
    regs: list[dict[str, int]] = field(default_factory=list)  # readable registers after each pass
    cycles: list[int] = field(default_factory=list)          # START to DONE, per pass (sim cycles)
    issue_span: list[int] = field(default_factory=list)      # first and last MAC issue cycle (all passes)
    issues: int = 0
    soft_reset: dict[str, int] = field(default_factory=dict)
    stream_resets: list[dict[str, int]] = field(default_factory=list)   # abort_params / abort_frame checks


def _reg(env: EngineEnvelope, name: str) -> int:
    return regmap.by_name(name, env.max_factors).offset


def run_engine(env: EngineEnvelope, passes: list[Pass], fault: str | None = None,
               backpressure: list[int] | None = None, idle: list[int] | None = None,
               abort_first: int | None = None, max_cycles: int = 200_000,
               watch_batches: bool = False) -> EngineRun:
    """Run ``passes`` in order on a fresh engine.

    ``abort_first``: run the first pass only until this many output beats were taken, then
    soft-reset the engine mid-pass (output pending), check it is quiet, and continue with
    the remaining passes (which must reload their parameters).
    """
    dut = NetworkEngine(env, fault=fault, external_clock=False)
    result = EngineRun()
    sb = env.stream_bits // 8
    state = {"cycle": 0, "abort": False}

    async def clock(ctx):
        async for _ in ctx.tick():
            state["cycle"] += 1
            if state["cycle"] > max_cycles:
                raise SimTimeout(f"simulation timed out after {max_cycles} cycles")

    async def watch(ctx):
        issue = dut.datapath.sequencer.ctl.valid
        async for _, _, valid in ctx.tick().sample(issue):
            if valid:
                if not result.issue_span:
                    result.issue_span[:] = [state["cycle"], state["cycle"]]
                result.issue_span[1] = state["cycle"]
                result.issues += 1

    async def receiver(ctx):
        for p_i, p in enumerate(passes):
            beats, lasts = [], []
            k = 0
            target = p.out_beats if not (p_i == 0 and abort_first is not None) else abort_first
            while len(beats) < target:
                ready = 0 if (backpressure and backpressure[k % len(backpressure)]) else 1
                k += 1
                ctx.set(dut.m_axis_tready, ready)
                *_, data, valid, last = await ctx.tick().sample(dut.m_axis_tdata, dut.m_axis_tvalid, dut.m_axis_tlast)
                if valid and ready:
                    if last:
                        lasts.append(len(beats))
                    beats.append(list(int(data).to_bytes(sb, "little")))
            ctx.set(dut.m_axis_tready, 0)
            if p_i == 0 and abort_first is not None:
                state["abort"] = True
                while state["abort"]:
                    await ctx.tick()
            result.out.append(np.array(beats, dtype=np.uint8).reshape(-1, sb))
            result.tlast.append(lasts)

    async def driver(ctx):
        for p_i, p in enumerate(passes):
            for name, word in p.words.items():
                await axil_write(ctx, dut, _reg(env, name), word)
            for what, limit in (("params", p.abort_params), ("frame", p.abort_frame)):
                if limit is None:
                    continue
                if what == "params":
                    await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_LOAD_PARAMS)
                    await stream_send(ctx, dut, p.params, limit=limit)
                else:
                    await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_START)
                    await stream_send(ctx, dut, p.x_beats, limit=limit)
                status = await axil_read(ctx, dut, regmap.REG["STATUS"])
                await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_SOFT_RESET)
                await ctx.tick()
                result.stream_resets.append({"what": what, "status_before": status,
                                             "tready_after": ctx.get(dut.s_axis_tready),
                                             "status_after": await axil_read(ctx, dut, regmap.REG["STATUS"])})
            if p.params is not None:
                await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_LOAD_PARAMS)
                await stream_send(ctx, dut, p.params)
                while (await axil_read(ctx, dut, regmap.REG["STATUS"])) & regmap.STATUS_LOADING:
                    pass
            await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_CLEAR_COUNTERS)
            await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_START)
            t0 = state["cycle"]
            await stream_send(ctx, dut, p.x_beats, idle)
            if p_i == 0 and abort_first is not None:
                while not state["abort"]:
                    await ctx.tick()
                # output pending: the engine holds tvalid; soft reset mid-pass
                before = {"tvalid": ctx.get(dut.m_axis_tvalid),
                          "status": await axil_read(ctx, dut, regmap.REG["STATUS"])}
                await axil_write(ctx, dut, regmap.REG["CTRL"], regmap.CTRL_SOFT_RESET)
                quiet = 0
                for _ in range(20):
                    await ctx.tick()
                    quiet |= ctx.get(dut.m_axis_tvalid) | ctx.get(dut.s_axis_tready)
                result.soft_reset = {"tvalid_before": before["tvalid"], "status_before": before["status"],
                                     "tvalid_after": quiet,
                                     "status_after": await axil_read(ctx, dut, regmap.REG["STATUS"]),
                                     "cycles_after": await axil_read(ctx, dut, regmap.REG["CYCLES"])}
                result.cycles.append(0)
                result.regs.append({})
                state["abort"] = False
                continue
            while not (await axil_read(ctx, dut, regmap.REG["STATUS"])) & regmap.STATUS_DONE:
                pass
            result.cycles.append(state["cycle"] - t0)
            regs = {}
            for r in env.registers:
                if r.access != "W":
                    regs[r.name] = await axil_read(ctx, dut, r.offset)
            result.regs.append(regs)
            while len(result.out) <= p_i:
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(receiver, background=True)
    sim.add_testbench(clock, background=True)
    if watch_batches:
        sim.add_testbench(watch, background=True)
    sim.run()
    return result

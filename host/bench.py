"""``litefly bench``: a network (or one layer) on its network engine, against the dense engine
and torch ``F.conv2d`` on this CPU, in one run.

The DeBut network runs through :class:`~litefly.host.runtime.NetworkRunner` on one engine
(:meth:`EngineEnvelope.for_network`); the dense baseline network (every layer replaced by
``layer.dense_baseline()``, the same multipliers) runs on its own engine in the same run.
Per layer and in total the report gives, each figure with its source:

* host time per stage, **measured** (the run with the least host time of ``repeats`` after a
  warm-up):
  ``quantize``, ``copy_in``, ``dispatch``, ``copy_out``, ``unpack``; the DMA/engine wait is
  reported apart (``engine_wait[s]``: on ``golden`` it is the numpy model's own run time,
  which replays the warm-up run's passes);
* engine time: the engine's CYCLES at the clock (``golden``: the cycle model, ``sim``:
  simulated, ``pynq``: the board's counters), off the board no faster than the board's DMA
  moves the layer's bytes (``dma_paced``), and MAC utilisation ``mac_cycles / cycles``;
* DMA bytes each way, the input bytes against the feature map (windows are formed on chip,
  so a 3x3 stride-1 conv reads its map about once) and against host-made im2col columns,
  transfers per run, and the roofline bounds (compute; DMA at the board's rate);
* speedups over the dense engine and over torch on this CPU (with torch's GMAC/s), each for
  the engine alone and **end to end** (engine time plus measured host time).

The JSON follows FINN's ``throughput_test`` names (``docs/host.md`` lists every field).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from litefly.chain import chain_params
from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError, LiteflyError
from litefly.fixed import QuantizedLayer, chain_dense, load_quantized, random_float_weights
from litefly.hw.spec import EngineEnvelope, LayerDescriptor, envelope_words, lane_rows
from litefly.network import (EngineStep, global_pool_int, network_forward_int, network_input_shape, plan_network,
                             quantize_network)

from .driver import STAGES, host_seconds

__all__ = ["run_bench", "roofline", "dense_network", "torch_step_time", "render_table", "plot_report",
           "HOST_STAGES", "IO_STAGES", "layer_host_stages", "io_host_stages"]

#: The host's own stages (the engine/DMA wait is reported apart as ``engine_wait[s]``).
HOST_STAGES = tuple(s for s in STAGES if s != "wait")
#: Images the random parameters are calibrated on (quantize_network; the run uses the whole batch).
CALIB_IMAGES = 2


# -- models --------------------------------------------------------------------------------------
def roofline(desc: LayerDescriptor, images: int, clock_hz: float, dma_bytes_per_s: float) -> dict[str, Any]:
    """Compute and DMA bounds of one layer on its engine, in conv positions per second (a model).

    Compute: ``lanes`` positions per batch of ``max(MAC issue, window)`` cycles. DMA: the
    busier direction's bytes per conv position at the board's one-way DMA rate. ``paced_by``: which
    of the MACs, the window generators, the unloader and the DMA takes the most cycles a batch
    (``cycles_per_batch``; more than one where they are within 1%).
    """
    env, step = desc.envelope, desc.step
    _, ho, wo = step.conv_shape
    positions = images * ho * wo
    b = desc.batch_cycles()
    in_b = images * desc.in_bytes_per_image / positions
    out_b = images * desc.out_beats_per_image * desc.bytes_per_beat / positions
    compute = env.lanes * clock_hz / max(b["mac"], b["window"])
    dma = dma_bytes_per_s / max(in_b, out_b)
    # what paces a full batch of `lanes` positions: its phases' MAC issue and window forming, its
    # unload (a beat a cycle) and its phases' conv positions at the DMA's rate, in cycles; the
    # slowest (within 1%) paces
    per_batch = {"MACs": b["mac"] * desc.phases, "window": b["window"] * desc.phases, "unloader": b["unload"],
                 "DMA": round(env.lanes * desc.phases * clock_hz / dma)}
    top = max(per_batch.values())
    return {"compute_bound_positions_per_s": compute, "dma_bound_positions_per_s": dma,
            "bound": "compute" if compute <= dma else "DMA", "attainable_positions_per_s": min(compute, dma),
            "cycles_per_batch": per_batch, "paced_by": [k for k, v in per_batch.items() if v >= 0.99 * top],
            "peak_macs_per_s": env.macs_per_cycle * clock_hz,
            "macs_per_dma_byte": step.layer.macs_per_column / max(in_b, out_b),
            "bytes_in_per_position": in_b, "bytes_out_per_position": out_b}


def lane_utilisation(macs: int, slots: int, cycles: int) -> float | None:
    """The share of the lanes' MAC slots that did a DeBut MAC: ``macs / (slots x cycles)``, ``slots``
    the engine's MACs a cycle (``EngineEnvelope.macs_per_cycle``: a lane's, two with row pairs, four with row quads, eight with row octets).
    Below the issue share (``mac_cycles / cycles``) by the idle lanes of partial batches (and with
    row pairs by the unpaired factors' idle second row)."""
    return macs / (slots * cycles) if cycles else None


def network_bounds(macs: int, slots: int, clock_hz: float, dma_s: float, e2e_s: float,
                   layers: Sequence[tuple[int, float]] = ()) -> dict[str, Any]:
    """A run's roofline bounds (a model): compute, the network's DeBut MACs on every MAC slot
    (``slots`` a cycle: :func:`lane_utilisation`) at the clock; DMA, per layer the busier direction's bytes at the board's one-way rate, summed; which
    binds, and end to end over the larger. With ``layers`` (each layer's DeBut MACs and DMA
    seconds): ``layers[s]``, the sum over the layers of the larger of the two, the bound of an
    engine that runs its layers one after another (each is compute- or DMA-bound on its own)."""
    compute = macs / (slots * clock_hz)
    bound = max(compute, dma_s)
    out = {"compute[s]": compute, "dma[s]": dma_s, "binds": "compute" if compute >= dma_s else "DMA",
           "bound[s]": bound, "end_to_end_vs_bound": e2e_s / bound if bound else None}
    if layers:
        out["layers[s]"] = sum(max(m / (slots * clock_hz), d) for m, d in layers)
    return out


def load_params_dir(network: NetworkConfig, params_dir: str | Path) -> dict[str, QuantizedLayer]:
    """Every layer's ``<name>.npz`` from an export folder (``--params``); one-line errors."""
    d = Path(params_dir)
    if not d.is_dir():
        raise ConfigError(f"--params {d}: no such folder")
    params = {}
    for lay in network.layers:
        path = d / f"{lay.name}.npz"
        if not path.is_file():
            raise ConfigError(f"--params {d}: no {path.name} for layer {lay.name!r}")
        params[lay.name] = load_quantized(lay, path)
    return params


def dense_network(network: NetworkConfig) -> NetworkConfig:
    """The same network with every layer replaced by its dense baseline ``[p, q, p, q, 1]``."""
    names = {s.name: s.dense_baseline().name for s in network.steps if isinstance(s, LayerConfig)}
    steps = tuple(s.dense_baseline() if isinstance(s, LayerConfig) else
                  replace(s, source=names.get(s.source, s.source)) if s.source else s for s in network.steps)
    return NetworkConfig(name=f"{network.name}_dense", steps=steps, input_size=network.input_size,
                         engine=network.engine, fold_input=network.fold_input)


def best_time(fn: Callable[[], Any], min_total: float = 0.05, max_reps: int = 30) -> float:
    """The least of several timed runs of ``fn`` (after one warm-up run)."""
    fn()
    best, total, reps = float("inf"), 0.0, 0
    while reps < max_reps and (total < min_total or reps < 3):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, reps = min(best, dt), total + dt, reps + 1
    return best


def torch_step_time(step: EngineStep, dense: np.ndarray, x: np.ndarray) -> float | None:
    """Seconds of the dense layer as torch runs it on this CPU (float32 ``F.conv2d`` or
    ``F.linear``, plus the ReLU and max pooling the engine fuses): the best of several runs with
    torch's threads and with one thread."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    lay = step.layer
    c, h, w = step.in_shape
    kh, kw = step.kernel
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    wt = torch.from_numpy(np.ascontiguousarray(dense.astype(np.float32).reshape(lay.chain_out, kh, kw, c)
                                               .transpose(0, 3, 1, 2)))

    def run() -> Any:
        if lay.kind == "linear":      # channels-last flatten, as the engine reads it
            y = F.linear(xt.permute(0, 2, 3, 1).reshape(xt.shape[0], -1), wt.permute(0, 2, 3, 1).reshape(
                lay.chain_out, -1))
        else:
            y = F.conv2d(xt, wt, stride=step.stride, padding=step.padding, dilation=step.dilation)
        if step.relu:
            y = F.relu(y)
        if step.pool is not None:
            y = F.max_pool2d(y, step.pool[0], step.pool[1])
        return y

    threads = torch.get_num_threads()
    best = float("inf")
    with torch.no_grad():
        for n in sorted({threads, 1}, reverse=True):    # torch's best: all threads, or 1 on a busy machine
            torch.set_num_threads(n)
            try:
                best = min(best, best_time(run))
            finally:
                torch.set_num_threads(threads)
    return best


# -- parameters ---------------------------------------------------------------------------------
def _float_bias(q: QuantizedLayer) -> np.ndarray | None:
    if q.bias is None:
        return None
    return q.bias * q.weight_scales[-1] * q.act_scales[-2]


def _params(network: NetworkConfig, steps: Sequence[EngineStep], x: np.ndarray, rng: np.random.Generator,
            params_dir: str | Path | None) -> tuple[dict[str, QuantizedLayer], dict[str, list], dict[str, Any]]:
    """DeBut parameters (loaded, or random with chained scales), their float weights and biases."""
    if params_dir is not None:
        params = load_params_dir(network, params_dir)
        return params, {n: q.float_weights() for n, q in params.items()}, \
            {n: _float_bias(q) for n, q in params.items()}
    weights = {s.name: random_float_weights(s.layer, rng) for s in steps}
    biases = {s.name: (rng.standard_normal(s.layer.chain_out) * 0.3 if s.layer.format.bias else None)
              for s in steps}
    return quantize_network(steps, weights, x, biases), weights, biases


# -- runs ---------------------------------------------------------------------------------------
def _timed_runs(runner: Any, x: np.ndarray, repeats: int, warm_up: bool = True
                ) -> tuple[np.ndarray, list[dict], dict[str, Any]]:
    """A warm-up (pynq: a run; golden: a run, whose engine-model passes the timed runs replay;
    sim: the first run's set-up, :func:`_prepare`), then ``repeats`` timed runs; the stats of the
    run with the least host time (the host's stages are short: a run that was preempted in one
    shows the machine, not the code)."""
    if warm_up and runner.backend in ("pynq", "golden"):
        runner.run(x)               # golden: the model's passes, which the timed runs replay
    elif warm_up:                   # sim: set up without running the simulator again
        _prepare(runner, x)
    best = None
    for _ in range(max(1, repeats)):
        y = runner.run(x)
        total = dict(runner.total, **{"host_stage[s]": dict(runner.total["host_stage[s]"])})
        host = host_seconds(total["host_stage[s]"])
        if best is None or host < best[0]:
            best = (host, y, [dict(s, timings=dict(s["timings"])) for s in runner.stats], total)
        del y           # a loop that is done with an output before the next run: only the best's is kept
    _, y, stats, total = best
    total["repeats"] = max(1, repeats)
    return y, stats, total


def _streamed_runs(runner: Any, x: np.ndarray, batches: int, y_ref: np.ndarray) -> dict[str, Any]:
    """``batches`` copies of ``x`` through :meth:`NetworkRunner.run_stream`: each output checked
    equal to ``y_ref`` (the serial run's), and the steady-state engine run (neither the first,
    whose own input is written before it, nor the last, whose output is read after it) with the
    least host time not covered by the engine."""
    for y in runner.run_stream(x for _ in range(batches)):
        if not np.array_equal(np.asarray(y), np.asarray(y_ref)):
            raise LiteflyError(f"network {runner.network.name!r}: a streamed run's output differs from the same "
                               f"input run alone")
        del y
    runs = runner.stream_totals
    steady = runs[1:-1] or runs

    def exposed(t: Mapping[str, Any]) -> float:
        return host_seconds(t["host_stage[s]"]) - t["hidden[s]"]
    best = min(steady, key=exposed)
    return {"batches": batches, "host_stage[s]": dict(best["host_stage[s]"]), "hidden[s]": best["hidden[s]"],
            "wall[s]": best["wall_s"]}


def _prepare(runner: Any, x: np.ndarray) -> None:
    """What a first run sets up (transport, identity check, buffers, pass plans, output memory),
    done before a single timed run so that run's host time is a steady-state one (golden and sim:
    no warm-up run): :meth:`NetworkRunner.prepare`."""
    runner.prepare(x)


#: The host's per-inference work on the network's input and output (not any layer's).
IO_STAGES = ("quantize", "copy_in", "copy_out", "unpack")


def layer_host_stages(stats: list[dict], tot: Mapping[str, float]) -> list[dict[str, float]]:
    """Host stages per layer from a run's stats: the layer's own dispatch (descriptor, parameters,
    passes, counters). The network's input and output work is :func:`io_host_stages`'s: a row
    of its own, in the total, so that no layer's row depends on where it sits in the network."""
    return [{s: (st["timings"].get("dispatch", 0.0) if s == "dispatch" else 0.0) for s in HOST_STAGES}
            for st in stats]


def io_host_stages(tot: Mapping[str, float], stats: list[dict]) -> dict[str, float]:
    """The network's own host stages of a run: its input (quantize, copy_in), its output
    (copy_out, unpack) and the dispatch no layer's own (checks, buffers, bookkeeping)."""
    io = {s: float(tot.get(s, 0.0)) for s in IO_STAGES}
    io["dispatch"] = max(0.0, float(tot.get("dispatch", 0.0)) - sum(st["timings"].get("dispatch", 0.0) for st in stats))
    return io


def run_bench(network: NetworkConfig, backend: str = "golden", board_name: str | None = None,
              clock_mhz: float | None = None, batch: int = 1, input_size: tuple[int, int] | None = None,
              seed: int = 0, params_dir: str | Path | None = None, dense: bool = True, repeats: int = 3,
              progress: Callable[[str], None] | None = None, multipliers: int | None = None,
              macs_per_dsp: int | None = None, stream_bits: int | None = None,
              window_generators: int | None = None, frame_kib: int | None = None, row_pairs: bool | None = None,
              row_quads: bool | None = None, frame_word_beats: int | None = None, out_dtype: str = "auto",
              row_octets: bool | None = None, **backend_opts: Any) -> dict[str, Any]:
    """Run the bench and return the report dict (``docs/host.md``). ``multipliers``,
    ``macs_per_dsp``, ``stream_bits``, ``window_generators``, ``frame_kib``, ``row_pairs``, ``row_quads``, ``row_octets`` and ``frame_word_beats`` override the
    network's engine settings (another engine); the dense baseline runs on an engine of the same
    lanes, packing (row pairs, quads and octets included), stream width, window generators and frame buffer size. The engine is
    ``board_name``'s (default: pynq-z2, or on ``pynq`` the board it runs on): its clock, and its
    default envelope where the network and these arguments are silent. The input is float32, as
    torch's (the baseline's) is. ``out_dtype`` is what the runtime dequantises the output into
    (``NetworkRunner(out_dtype=...)``; ``"auto"``: the input's, float32), checked equal to the
    int8 golden network's output dequantised the same way."""
    from litefly.boards.boards import get_board

    from .board_check import resolve_board
    from .runtime import NetworkRunner, dequantised, out_dtype_of, resolve_out_dtype
    if backend == "pynq":
        from .pynq_transport import import_pynq
        import_pynq()                           # first: on a PC, say that pynq is missing
    board = get_board(resolve_board(backend, board_name, backend_opts))
    f_mhz = float(clock_mhz or board.clock_mhz)
    if f_mhz <= 0:
        raise ConfigError(f"clock {f_mhz} MHz must be positive")
    f_hz = f_mhz * 1e6
    src_engine = {"sim": f"simulated at {f_mhz:g} MHz", "pynq": f"measured on {board.name} at {f_mhz:g} MHz",
                  "golden": f"model (cycle model of docs/engine.md) at {f_mhz:g} MHz"}[backend]
    t_start = time.perf_counter()
    in_shape = network_input_shape(network, input_size)
    size = (in_shape[1], in_shape[2])
    steps = plan_network(network, in_shape)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + in_shape).astype(np.float32)     # float32, as torch's input
    if network.layers[0].kind == "linear":
        x = x.reshape(batch, -1)
    x4 = x.reshape((batch,) + in_shape)
    say = progress or (lambda m: None)
    say("quantising (chained scales)")
    calib = x4[:CALIB_IMAGES]        # scales from a few images: the int8 run then sees the whole batch
    params, fweights, fbiases = _params(network, steps, calib, rng, params_dir)
    envelope = EngineEnvelope.for_network(network, size, multipliers=multipliers, macs_per_dsp=macs_per_dsp,
                                          stream_bits=stream_bits, window_generators=window_generators,
                                          frame_kib=frame_kib, board=board.name, row_pairs=row_pairs,
                                          row_quads=row_quads, frame_word_beats=frame_word_beats,
                                          row_octets=row_octets)
    opts = dict(backend_opts, out_dtype=resolve_out_dtype(out_dtype_of(out_dtype), x))
    if backend == "sim":
        repeats = 1
    if backend == "pynq":
        opts.setdefault("board", board.name)
    say(f"DeBut network on engine {envelope.name!r} ({backend})")
    runner = NetworkRunner(network, params, backend, input_size=size, envelope=envelope, clock_mhz=f_mhz, **opts)
    streamed = None
    try:
        y_eng, stats, total = _timed_runs(runner, x, repeats)
        if backend != "sim":
            say(f"a stream of {max(3, repeats)} batches (host work overlapped with the engine)")
            streamed = _streamed_runs(runner, x, max(3, repeats), y_eng)
        program = runner.program(in_shape)
        x_int = params[steps[0].name].quantize_input(x4)
        acts = [x4]        # the float activations torch sees: the int8 network's, dequantised
        y_gold = network_forward_int(steps, params, x_int,
                                     on_step=lambda s, y: acts.append(y * params[s.name].out_scale))
        # the int8 golden network's output dequantised in the runner's dtype (float64: acts[-1] itself)
        want = dequantised(y_gold, params[steps[-1].name].out_scale, opts["out_dtype"])
        if not np.array_equal(np.asarray(y_eng).reshape(y_gold.shape), want):
            raise LiteflyError(f"network {network.name!r}: the {backend} engine's output differs from the int8 "
                               f"golden network")
    finally:
        runner.close()
    host_src = f"measured on this CPU, the run with the least host time of {total.get('repeats', 1)} after a first run"
    if backend == "golden":
        host_src += (" whose engine-model passes the timed runs replay (the model's numpy work, which a board does on "
                     "no CPU, does not run between the host's stages)")
    if backend == "sim":     # the sim transport's calls wait on the simulator: time the same host code on golden
        say("host stages: the same program on the golden transport")
        with NetworkRunner(network, params, "golden", input_size=size, envelope=envelope, clock_mhz=f_mhz,
                           out_dtype=opts["out_dtype"]) as hr:
            y_h, hstats, htotal = _timed_runs(hr, x, max(repeats, 3))
            say("a stream of 3 batches on the golden transport (host work overlapped with the engine)")
            streamed = _streamed_runs(hr, x, 3, y_h)
        for st, hst in zip(stats, hstats):
            st["timings"] = dict(hst["timings"], wait=st["timings"].get("wait", 0.0))
            if "host_op" in hst:
                st["host_op"] = hst["host_op"]
        total["host_stage[s]"] = dict(htotal["host_stage[s]"], wait=total["host_stage[s]"].get("wait", 0.0))
        host_src = (f"measured on this CPU with the same driver and runtime on the golden transport (the run with "
                    f"the least host time of {htotal['repeats']}); the sim transport's calls wait on the simulator")

    dnet = dense_network(network)
    dsteps = plan_network(dnet, in_shape)
    dense_w = {ds.name: [chain_dense(s.layer.chain, fweights[s.name]).reshape(ds.layer.chain[0].compact_shape)]
               for s, ds in zip(steps, dsteps)}
    dstats = dtotal = None
    denv = EngineEnvelope.for_network(dnet, size, multipliers=envelope.multipliers, frame_kib=frame_kib,
                                      board=board.name, **envelope.packing())
    if dense:
        say(f"dense network on engine {denv.name!r} ({backend})")
        dparams = quantize_network(dsteps, dense_w, calib, {ds.name: fbiases[s.name] for s, ds in zip(steps, dsteps)})
        drunner = NetworkRunner(dnet, dparams, backend, input_size=size, envelope=denv, clock_mhz=f_mhz,
                                **{k: v for k, v in opts.items() if k != "bitfile"})
        try:
            _prepare(drunner, x)
            # the same best-of-N host measurement as the network's (the simulator runs once: its host
            # stages are measured again on the golden transport below)
            _, dstats, dtotal = _timed_runs(drunner, x, 1 if backend == "sim" else max(repeats, 3),
                                            warm_up=backend in ("pynq", "golden"))
        except LiteflyError:
            if backend != "pynq":
                raise
            dstats = dtotal = None      # no dense bitstream on the board: the dense figures are the cycle model
        finally:
            drunner.close()
        if backend == "sim" and dstats:     # host stages of the dense network: its host code on the golden transport
            with NetworkRunner(dnet, dparams, "golden", input_size=size, envelope=denv, clock_mhz=f_mhz,
                               out_dtype=opts["out_dtype"]) as hr:
                _, hstats, htotal = _timed_runs(hr, x, max(repeats, 3))
            for st, hst in zip(dstats, hstats):
                st["timings"] = dict(hst["timings"], wait=st["timings"].get("wait", 0.0))
                if "host_op" in hst:
                    st["host_op"] = hst["host_op"]
            dtotal["host_stage[s]"] = dict(htotal["host_stage[s]"], wait=dtotal["host_stage[s]"].get("wait", 0.0))

    say("torch on this CPU")
    import_ok = True
    try:
        import torch
        torch_threads = torch.get_num_threads()
    except ImportError:
        import_ok, torch_threads = False, 0
    ddescs = denv.describe_network(dsteps)
    host_layers = layer_host_stages(stats, total["host_stage[s]"])
    dhost_layers = layer_host_stages(dstats, dtotal["host_stage[s]"]) if dstats else None
    rows = []
    for k, (step, desc) in enumerate(zip(steps, program.descriptors)):
        dense_m = dense_w[dsteps[k].name][0].reshape(step.layer.chain_out, -1)
        src = getattr(step, "src", None)     # a branch input reads an earlier layer's output
        x_in = acts[next(i for i, s in enumerate(steps) if s.name == src) + 1] if src else acts[k]
        x_in = x_in if step.pre is None else global_pool_int(x_in, step.pre)   # the host op's output
        t_torch = torch_step_time(step, dense_m, x_in) if import_ok else None
        rows.append(_layer_row(k, step, desc, ddescs[k], stats[k], host_layers[k],
                               dstats[k] if dstats else None, dhost_layers[k] if dhost_layers else None,
                               t_torch, f_hz, board, batch, src_engine, backend != "pynq"))
    io = io_host_stages(total["host_stage[s]"], stats)
    dio = io_host_stages(dtotal["host_stage[s]"], dstats) if dstats else None
    host_src += (f"; float32 input, the output dequantised to {opts['out_dtype'].name}"
                 + (" (the input's dtype)" if out_dtype == "auto" else ""))
    report = _report(network, envelope, denv, rows, total, dtotal, io, dio, backend, board, f_mhz, batch, size, seed,
                     src_engine, host_src, torch_threads, time.perf_counter() - t_start)
    report["out_dtype"] = opts["out_dtype"].name
    report["total"]["streamed"] = streamed_figures(streamed, report)
    report["host_ops"] = host_op_rows(stats, dstats)
    report["total"]["host_transfers"] = 2 + 2 * len(report["host_ops"])    # each host op reads and writes a map
    return report


def host_op_rows(stats: list[dict], dstats: list[dict] | None = None) -> list[dict[str, Any]]:
    """The host ops of a run (global pools between two engine programs), one row each: the op,
    the layer it feeds, shapes and its measured host time (``host[s]``: reading the previous
    layer's output, the pool, writing the next layer's input), the dense network's beside it."""
    rows = []
    for k, st in enumerate(stats):
        op = st.get("host_op")
        if op is not None:
            dop = (dstats[k].get("host_op") or {}) if dstats else {}
            rows.append({"op": op["op"], "before": st["layer"], "in_shape": op["in_shape"],
                         "out_shape": op["out_shape"], "host[s]": op["host[s]"], "dense_host[s]": dop.get("host[s]"),
                         "source": "measured on this CPU (int8, litefly.network.global_pool_int)"})
    return rows


def _host_fold(step: EngineStep, desc: LayerDescriptor) -> dict[str, Any] | None:
    """A layer whose kernel rows the host folds into its channels (``docs/engine.md``, "Folded
    kernel rows"): the map and kernel the engine reads, and its window reads a lane folded and not."""
    fold = desc.step.fold
    if fold is None:
        return None
    env = desc.envelope
    plain = env.describe_host_input(step)
    return {"kw": fold.kw, "engine_in_shape": list(desc.step.in_shape), "engine_kernel": list(desc.step.kernel),
            "window_reads": desc.geometry(1).window_reads, "unfolded_window_reads": plain.geometry(1).window_reads}


def engine_seconds(cycles: int, param_cycles: int, bytes_in: int, bytes_out: int, clock_hz: float,
                   dma_bytes_per_s: float | None) -> float:
    """A layer's engine time from its cycles (model or simulation) and its parameter stream: a
    stream beat a cycle, but no faster than the board's DMA moves the busier direction's bytes
    (``dma_bytes_per_s``; ``None`` for cycles measured on a board, where the DMA already paced them)."""
    passes = cycles / clock_hz
    if dma_bytes_per_s:
        passes = max(passes, max(bytes_in, bytes_out) / dma_bytes_per_s)
    return passes + param_cycles / clock_hz


def _layer_row(k: int, step: EngineStep, desc: LayerDescriptor, ddesc: LayerDescriptor, st: dict,
               host: dict[str, float], dst: dict | None, dhost: dict[str, float] | None, t_torch: float | None,
               f_hz: float, board: Any, batch: int, src_engine: str, paced: bool) -> dict[str, Any]:
    lay = step.layer
    c, h, w = step.in_shape
    p, ho, wo = step.conv_shape
    kh, kw = step.kernel
    cycles = int(st["cycles"])
    # the engine's time per run: its passes and the layer's parameter stream before them (one beat a
    # cycle into the weight/bias/index memories: a model, no counter times it)
    pcycles = int(st["param_cycles"])
    dpcycles = int(dst["param_cycles"]) if dst is not None else ddesc.param_beats
    dma_rate = board.dma_bytes_per_s if paced else None
    runtime = engine_seconds(cycles, pcycles, st["bytes_in"], st["bytes_out"], f_hz, dma_rate)
    host_s = sum(host.values())
    if dst is not None:
        dcycles, dsrc = int(dst["cycles"]), src_engine
        dhost_s = sum(dhost.values()) if dhost else 0.0
    else:
        ipp = ddesc.pass_images(batch)
        dcycles = sum(ddesc.pass_cycles(min(ipp, batch - i)) for i in range(0, batch, ipp))
        dsrc, dhost_s = "model (cycle model; dense engine not run)", None
    dbytes = (dst["bytes_in"], dst["bytes_out"]) if dst is not None else (st["bytes_in"], st["bytes_out"])
    druntime = engine_seconds(dcycles, dpcycles, *dbytes, f_hz, dma_rate)
    fmap = batch * c * h * w
    im2col_bytes = batch * ho * wo * kh * kw * c
    dense_macs = batch * ho * wo * p * lay.chain_in
    e2e = runtime + host_s
    dma_time = max(st["bytes_in"], st["bytes_out"]) / board.dma_bytes_per_s
    busy = round((runtime - pcycles / f_hz) * f_hz)
    return {
        "name": step.name, "kind": lay.kind, "in_shape": list(step.in_shape), "out_shape": list(step.out_shape),
        "kernel": list(step.kernel), "stride": list(step.stride), "relu": step.relu,
        "pool": list(step.pool) if step.pool else None,
        "positions": batch * ho * wo, "macs_per_position": lay.macs_per_column,
        "dense_macs_per_position": lay.chain_in * p, "mac_reduction": lay.mac_reduction,
        "factors": len(lay.chain),
        "host_fold": _host_fold(step, desc),
        # merge: true (litefly.merge): the chain as declared, before its factors were merged
        "declared_factors": len(lay.declared_chain), "declared_macs_per_position": chain_params(lay.declared_chain),
        "cycles": cycles, "model_cycles": int(st.get("model_cycles", 0)), "mac_cycles": int(st["mac_cycles"]),
        "param_cycles": pcycles, "dense_param_cycles": dpcycles,
        "cycles_source": src_engine, "counters": st.get("counters", {}),
        # the cycles the layer's passes took: its DMA time's where the DMA paces it
        "paced_cycles": busy,
        "mac_utilisation": st["mac_cycles"] / busy if busy else None,
        "lane_utilisation": lane_utilisation(batch * ho * wo * lay.macs_per_column, desc.envelope.macs_per_cycle,
                                             busy),
        "dense_cycles": dcycles, "dense_cycles_source": dsrc,
        "runtime[s]": runtime, "dense_runtime[s]": druntime,
        # the DMA, not the engine's cycles, set the layer's time (a model: the stream slower than a beat a cycle)
        "dma_paced": bool(paced and dma_time > cycles / f_hz),
        "throughput[images/s]": batch / runtime if runtime else None,
        "host_stage[s]": host, "host[s]": host_s, "engine_wait[s]": st["timings"].get("wait", 0.0),
        "end_to_end[s]": e2e, "dense_host[s]": dhost_s,
        "dense_end_to_end[s]": None if dhost_s is None else druntime + dhost_s,
        "bytes_in": st["bytes_in"], "bytes_out": st["bytes_out"], "param_bytes": st.get("param_bytes", 0),
        "feature_map_bytes": fmap, "input_bytes_vs_feature_map": st["bytes_in"] / fmap,
        "im2col_bytes": im2col_bytes, "im2col_bytes_vs_feature_map": im2col_bytes / fmap,
        "transfers": st["transfers"], "passes": st["passes"], "images_per_pass": st["images_per_pass"],
        "DRAM_in_bandwidth[MB/s]": st["bytes_in"] / runtime / 1e6 if runtime else None,
        "DRAM_out_bandwidth[MB/s]": st["bytes_out"] / runtime / 1e6 if runtime else None,
        "dma_time[s]": dma_time,
        "roofline": roofline(desc, batch, f_hz, board.dma_bytes_per_s),
        "dense_roofline": roofline(ddesc, batch, f_hz, board.dma_bytes_per_s),
        "speedup_vs_dense_engine": druntime / runtime if runtime else None,
        "speedup_vs_dense_end_to_end": (druntime + dhost_s) / e2e if (dhost_s is not None and e2e) else None,
        "speedup_vs_dense_over_mac_reduction": (druntime / runtime / lay.mac_reduction) if runtime else None,
        "cpu_torch[s]": t_torch,
        "cpu_torch_gmacs": dense_macs / t_torch / 1e9 if t_torch else None,
        "speedup_vs_cpu_torch": t_torch / runtime if (t_torch and runtime) else None,
        "speedup_vs_cpu_torch_end_to_end": t_torch / e2e if (t_torch and e2e) else None,
    }


def _report(network, envelope, denv, rows, total, dtotal, io, dio, backend, board, f_mhz, batch, size, seed,
            src_engine, host_src, torch_threads, wall) -> dict[str, Any]:
    f_hz = f_mhz * 1e6
    cycles = sum(r["cycles"] for r in rows)
    dcycles = sum(r["dense_cycles"] for r in rows)
    pcycles = sum(r["param_cycles"] for r in rows)
    runtime = sum(r["runtime[s]"] for r in rows)
    druntime = sum(r["dense_runtime[s]"] for r in rows)
    stages = {s: total["host_stage[s]"].get(s, 0.0) for s in HOST_STAGES}
    if "host_op" in total["host_stage[s]"]:     # a network with global pools on the host
        stages["host_op"] = total["host_stage[s]"]["host_op"]
    host = sum(stages.values())
    e2e = runtime + host
    dhost = host_seconds(dtotal["host_stage[s]"]) if dtotal else None
    torch_vals = [r["cpu_torch[s]"] for r in rows]
    cpu_t = sum(torch_vals) if all(v is not None for v in torch_vals) else None
    bin_, bout = rows[0]["bytes_in"], rows[-1]["bytes_out"]
    dma_in = sum(r["bytes_in"] for r in rows)
    dma_out = sum(r["bytes_out"] for r in rows)
    dense_macs = sum(r["positions"] * r["dense_macs_per_position"] for r in rows)
    macs = sum(r["positions"] * r["macs_per_position"] for r in rows)
    busy = sum(r["paced_cycles"] for r in rows)
    lane_u = lane_utilisation(macs, envelope.macs_per_cycle, busy)
    return {
        "network": network.name, "backend": backend, "board": board.name, "fclk[mhz]": f_mhz,
        "batch_size": batch, "input_size": list(size), "seed": seed,
        "engine": {"name": envelope.name, "hash": f"0x{envelope.hash32:08x}", "lanes": envelope.lanes,
                   "dsps": envelope.dsps, "envelope": asdict(envelope), "row_pairs": envelope.row_pairs,
                   "row_quads": envelope.row_quads, "row_octets": envelope.row_octets,
                   "frame_word_beats": envelope.frame_word_beats,
                   "stream_bits": envelope.stream_bits, "frame_beats": envelope.frame_beats,
                   "macs_per_dsp": envelope.macs_per_dsp, "window_generators": envelope.window_generators,
                   "layers_served": len(rows)},
        "dense_engine": {"name": denv.name, "hash": f"0x{denv.hash32:08x}", "lanes": denv.lanes,
                         "frame_beats": denv.frame_beats},
        "sources": {"engine": src_engine,
                    "parameters": "model: each layer's parameter stream, one beat a cycle, once a run (added to the "
                                  "engine time; the counters time passes only)",
                    "host": host_src,
                    "cpu": f"torch {_torch_version()} F.conv2d/F.linear float32 (+ fused ReLU/max pool), "
                           f"best of {torch_threads} threads and 1, measured on this CPU ({platform.machine()}, "
                           f"{platform.processor() or platform.system()})",
                    "bounds": f"model: {board.name} DMA {board.dma_bytes_per_s / 1e9:g} GB/s one-way"},
        "layers": rows,
        "network_io": {"host_stage[s]": io, "host[s]": sum(io.values()),
                       "dense_host[s]": None if dio is None else sum(dio.values()),
                       "bytes_in": bin_, "bytes_out": bout},
        "total": {
            "cycles": cycles, "dense_cycles": dcycles, "mac_cycles": sum(r["mac_cycles"] for r in rows),
            "param_cycles": pcycles,
            "paced_cycles": busy,
            "mac_utilisation": sum(r["mac_cycles"] for r in rows) / busy if busy else None,
            "lane_utilisation": lane_u,
            "macs_per_dsp_cycle": lane_u * envelope.macs_per_dsp if lane_u is not None else None,
            "bounds": network_bounds(macs, envelope.macs_per_cycle, f_hz, sum(r["dma_time[s]"] for r in rows), e2e,
                                     [(r["positions"] * r["macs_per_position"], r["dma_time[s]"]) for r in rows]),
            "runtime[s]": runtime, "dense_runtime[s]": druntime,
            "throughput[images/s]": batch / runtime if runtime else None,
            "DRAM_in_bandwidth[MB/s]": dma_in / runtime / 1e6 if runtime else None,
            "DRAM_out_bandwidth[MB/s]": dma_out / runtime / 1e6 if runtime else None,
            "bytes_in": bin_, "bytes_out": bout, "dma_bytes_in": dma_in, "dma_bytes_out": dma_out,
            "host_bytes_in": bin_, "host_bytes_out": bout,
            "transfers": total["transfers"], "host_transfers": 2,
            "host_stage[s]": stages, "host[s]": host, "engine_wait[s]": total["host_stage[s]"].get("wait", 0.0),
            "host_vs_engine": host / runtime if runtime else None,
            "end_to_end[s]": e2e, "end_to_end_vs_engine": e2e / runtime if runtime else None,
            "dense_host[s]": dhost, "dense_end_to_end[s]": None if dhost is None else druntime + dhost,
            "macs": macs, "dense_macs": dense_macs, "mac_reduction": dense_macs / macs if macs else None,
            "declared_macs": sum(r["positions"] * r["declared_macs_per_position"] for r in rows),
            "speedup_vs_dense_engine": druntime / runtime if runtime else None,
            "speedup_vs_dense_end_to_end": (druntime + dhost) / e2e if (dhost is not None and e2e) else None,
            "cpu_torch[s]": cpu_t, "cpu_torch_gmacs": dense_macs / cpu_t / 1e9 if cpu_t else None,
            "speedup_vs_cpu_torch": cpu_t / runtime if (runtime and cpu_t) else None,
            "speedup_vs_cpu_torch_end_to_end": cpu_t / e2e if (e2e and cpu_t) else None,
            "bench_wall[s]": wall,
        },
    }


def streamed_figures(streamed: Mapping[str, Any] | None, report: Mapping[str, Any]) -> dict[str, Any] | None:
    """A stream's figures per batch: the host stages of a steady-state engine run, the part the
    engine's passes covered (``hidden[s]``), and end to end = engine + host - hidden, against the
    bound and torch as the one-batch figures are."""
    if streamed is None:
        return None
    tot = report["total"]
    stages = {k: v for k, v in streamed["host_stage[s]"].items() if k != "wait"}
    host = sum(stages.values())
    e2e = tot["runtime[s]"] + host - streamed["hidden[s]"]
    bound = tot["bounds"]["bound[s]"] if tot.get("bounds") else None
    cpu_t = tot.get("cpu_torch[s]")
    return {"batches": streamed["batches"], "host_stage[s]": stages, "host[s]": host,
            "hidden[s]": streamed["hidden[s]"], "exposed_host[s]": host - streamed["hidden[s]"],
            "end_to_end[s]": e2e, "end_to_end_vs_bound": e2e / bound if bound else None,
            "speedup_vs_cpu_torch_end_to_end": cpu_t / e2e if (cpu_t and e2e) else None,
            # on a board the engine and the host really overlap: the run's wall time is the measurement
            "board_wall[s]": streamed["wall[s]"] if report["backend"] == "pynq" else None,
            "source": "NetworkRunner.run_stream: while the engine runs a batch the host dequantises the one "
                      "before and quantises and packs the one after, in slices run while each pass's DMA is in "
                      "flight; hidden = the slices' measured time, up to each pass's modelled engine time; a "
                      "steady-state run of the stream (the least exposed host time)"}


def _torch_version() -> str:
    try:
        import torch
        return torch.__version__
    except ImportError:
        return "(not installed)"


# -- output -------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def fmt_us(v: float | None) -> str:
    """Seconds as whole microseconds with thousands separators ("-" for None)."""
    return "-" if v is None else f"{v * 1e6:,.0f}"


def fmt_stages(stages: Mapping[str, float]) -> str:
    """Host stages as ``name N us, ...`` (a table caption)."""
    return ", ".join(f"{k} {v * 1e6:,.0f} us" for k, v in stages.items())


def render_table(report: dict[str, Any]):
    """A rich Table of the report (per layer and total)."""
    from rich.table import Table
    eng = report["engine"]
    words = envelope_words(eng["lanes"], eng["stream_bits"], eng.get("macs_per_dsp", 1),
                           eng.get("window_generators", 1), eng.get("frame_beats"), eng.get("row_pairs", False),
                           eng.get("row_quads", False), eng.get("frame_word_beats", 1), eng.get("row_octets", False))
    t = Table(title=f"litefly bench: {report['network']} on one engine ({eng['name']} "
                    f"{eng['hash']}, {words}), {report['backend']} backend, "
                    f"batch {report['batch_size']}, input {report['input_size'][0]}x{report['input_size'][1]}")
    cols = ("layer", "cycles", "MAC util", "lane util", "engine [us]", "host [us]", "e2e [us]", "in/out [KiB]", "in x fmap",
            "xfers", "paced by", "dense cycles", "x dense engine", "x dense e2e", "MAC red.", "torch [us]",
            "torch GMAC/s", "x torch engine", "x torch e2e")
    for col in cols:
        t.add_column(col, justify="left" if col == "layer" else "right")
    ops = {o["before"]: o for o in report.get("host_ops", [])}
    for r in report["layers"]:
        if r["name"] in ops:
            o = ops[r["name"]]
            shape = "x".join(map(str, o["in_shape"])) + " -> " + "x".join(map(str, o["out_shape"]))
            t.add_row(f"host: {o['op']} ({shape})", "", "", "", "", fmt_us(o["host[s]"]), fmt_us(o["host[s]"]),
                      *[""] * 12, style="italic")
        t.add_row(r["name"], f"{r['cycles']:,}", _pct(r["mac_utilisation"]), _pct(r.get("lane_utilisation")),
                  fmt_us(r["runtime[s]"]) + ("*" if r.get("dma_paced") else ""), fmt_us(r["host[s]"]),
                  fmt_us(r["end_to_end[s]"]), f"{r['bytes_in'] / 1024:.1f}/{r['bytes_out'] / 1024:.1f}",
                  f"{r['input_bytes_vs_feature_map']:.2f}", str(r["transfers"]), _paced_by(r["roofline"]),
                  f"{r['dense_cycles']:,}", _fmt(r["speedup_vs_dense_engine"], ".2f"),
                  _fmt(r["speedup_vs_dense_end_to_end"], ".2f"), f"{r['mac_reduction']:.2f}",
                  fmt_us(r["cpu_torch[s]"]), _fmt(r["cpu_torch_gmacs"], ".2f"),
                  _fmt(r["speedup_vs_cpu_torch"], ".2f"), _fmt(r["speedup_vs_cpu_torch_end_to_end"], ".2f"))
    io = report.get("network_io")
    if io is not None:
        t.add_row("network input/output", "", "", "", "", fmt_us(io["host[s]"]), fmt_us(io["host[s]"]),
                  f"{io['bytes_in'] / 1024:.1f}/{io['bytes_out'] / 1024:.1f}", "", "", "", "", "", "", "", "", "", "",
                  "", style="italic")
    tot = report["total"]
    t.add_row("total", f"{tot['cycles']:,}", _pct(tot["mac_utilisation"]), _pct(tot.get("lane_utilisation")),
              fmt_us(tot["runtime[s]"]), fmt_us(tot["host[s]"]), fmt_us(tot["end_to_end[s]"]),
              f"{tot['host_bytes_in'] / 1024:.1f}/{tot['host_bytes_out'] / 1024:.1f}", "", str(tot["transfers"]), "",
              f"{tot['dense_cycles']:,}", _fmt(tot["speedup_vs_dense_engine"], ".2f"),
              _fmt(tot["speedup_vs_dense_end_to_end"], ".2f"), _fmt(tot["mac_reduction"], ".2f"),
              fmt_us(tot["cpu_torch[s]"]), _fmt(tot["cpu_torch_gmacs"], ".2f"),
              _fmt(tot["speedup_vs_cpu_torch"], ".2f"), _fmt(tot["speedup_vs_cpu_torch_end_to_end"], ".2f"),
              style="bold")
    st = tot["host_stage[s]"]
    t.caption = (f"MAC util: issue cycles / cycles; lane util: DeBut MACs / (MAC slots x cycles), a slot a lane "
                 f"(two with row pairs, four with row quads, eight with row octets), below it by the idle lanes of partial batches; engine: {report['sources']['engine']}, "
                 f"its time the passes' cycles (* no faster than the board's DMA moves their bytes, a model) plus "
                 f"{tot.get('param_cycles', 0):,} cycles of parameter streams (model); "
                 f"host: {report['sources']['host']} ("
                 + fmt_stages(st)
                 + f"; host/engine {_fmt(tot['host_vs_engine'], '.3f')}, engine wait {tot['engine_wait[s]'] * 1e3:.1f} ms "
                 f"apart); e2e = engine + host; CPU: {report['sources']['cpu']}; bounds: {report['sources']['bounds']}")
    return t


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """PNG: the roofline with every layer (DeBut and dense engines) on it, and the speedups per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from litefly.boards.boards import get_board
    board = get_board(report["board"])
    f_hz = report["fclk[mhz]"] * 1e6
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    rows = report["layers"]
    ai = np.logspace(-1, 4, 200)
    for peak in sorted({r["roofline"]["peak_macs_per_s"] for r in rows}):
        ax1.loglog(ai, np.minimum(peak, ai * board.dma_bytes_per_s), "k-", lw=1.2,
                   label=f"roof: {peak / 1e9:g} GMAC/s, DMA {board.dma_bytes_per_s / 1e9:g} GB/s (model)")
    for i, r in enumerate(rows):
        # the passes' time: the engine time less the parameter stream (no faster than the DMA: dma_paced)
        passes = (r["runtime[s]"] - r["param_cycles"] / f_hz, r["dense_runtime[s]"] - r["dense_param_cycles"] / f_hz)
        for kind, rf, t, macs, marker in (("DeBut", r["roofline"], passes[0], r["macs_per_position"], "o"),
                                          ("dense", r["dense_roofline"], passes[1], r["dense_macs_per_position"],
                                           "s")):
            if t > 0:
                ax1.loglog(rf["macs_per_dma_byte"], macs * r["positions"] / t, marker, color=f"C{i}",
                           label=f"{r['name']} {kind} ({rf['bound']}-bound)")
    ax1.set_xlabel("MACs per byte on the busier DMA direction")
    ax1.set_ylabel("MAC/s (engine " + report["sources"]["engine"] + ")")
    ax1.set_title(f"Roofline on {board.name}")
    ax1.legend(fontsize=7)
    names = [r["name"] for r in rows]
    xs = np.arange(len(rows))
    series = [("vs dense engine", "speedup_vs_dense_engine"), ("vs dense, end to end", "speedup_vs_dense_end_to_end"),
              ("vs torch, engine", "speedup_vs_cpu_torch"), ("vs torch, end to end", "speedup_vs_cpu_torch_end_to_end")]
    w = 0.2
    for j, (lab, key) in enumerate(series):
        ax2.bar(xs + (j - 1.5) * w, [r[key] or 0.0 for r in rows], w, label=lab)
    ax2.plot(xs, [r["mac_reduction"] for r in rows], "k_", ms=20, mew=2, label="MAC reduction")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_xticks(xs, names)
    ax2.set_yscale("log")
    ax2.set_ylabel("speedup (x)")
    ax2.set_title("Speedup per layer (end to end = engine + measured host)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The headline figures as lines (printed under the table)."""
    tot = report["total"]
    return [f"host {tot['host[s]'] * 1e3:.2f} ms per run (measured) vs engine {tot['runtime[s]'] * 1e3:.2f} ms "
            f"({report['sources']['engine']}; {tot.get('param_cycles', 0):,} of its cycles the parameter streams, "
            f"modelled) = {_fmt(tot['host_vs_engine'], '.3f')}x; end to end "
            f"{tot['end_to_end[s]'] * 1e3:.2f} ms = {_fmt(tot['end_to_end_vs_engine'], '.3f')}x the engine; "
            f"{tot['transfers']} DMA transfers per run, {tot['host_transfers']} between host and board; one engine "
            f"{report['engine']['hash']} serves {report['engine']['layers_served']} layers"] + dma_paced_lines(report) + merge_lines(report) + fold_lines(report) + bound_lines(report) + pacing_lines(report) + streamed_lines(report)


def dma_paced_lines(report: Mapping[str, Any]) -> list[str]:
    """The layers whose time the board's DMA sets, not the engine's cycles (none on a board, or in
    reports written before the bench paced them)."""
    paced = [r for r in report["layers"] if r.get("dma_paced")]
    if not paced:
        return []
    eng, f_mhz = report["engine"], report["fclk[mhz]"]
    stream = eng["stream_bits"] / 8 * f_mhz * 1e6
    names = ", ".join(f"{r['name']} ({r['cycles'] / f_mhz:,.0f} -> {r['dma_time[s]'] * 1e6:,.0f} us)" for r in paced)
    return [f"paced by the DMA ({report['sources']['bounds']}, slower than the {eng['stream_bits']}-bit stream's "
            f"{stream / 1e9:.2f} GB/s at {f_mhz:g} MHz): {names}"]


def merge_lines(report: Mapping[str, Any]) -> list[str]:
    """What ``merge: true`` changed (none when no chain merged, or in reports written before it)."""
    rows, tot = report["layers"], report["total"]
    merged = [r for r in rows if r.get("declared_factors", r.get("factors")) != r.get("factors")]
    if not merged:
        return []
    return [f"chains merged (merge: true, litefly chain merge): {', '.join(r['name'] for r in merged)}; "
            f"{sum(r['declared_factors'] for r in rows)} -> {sum(r['factors'] for r in rows)} factors, "
            f"{tot['declared_macs'] / 1e6:.1f} -> {tot['macs'] / 1e6:.1f} M DeBut MACs per run (the MAC reduction "
            f"{tot['dense_macs'] / tot['declared_macs']:.2f} -> {tot['mac_reduction']:.2f})"]


def fold_lines(report: Mapping[str, Any]) -> list[str]:
    """The layers whose kernel rows the host folds into their channels (none in reports written before)."""
    out = []
    for r in report["layers"]:
        f = r.get("host_fold")
        if f:
            c, h, w = r["in_shape"]
            ec, eh, ew = f["engine_in_shape"]
            out.append(f"kernel rows folded by the host (docs/engine.md, \"Folded kernel rows\"): {r['name']}'s "
                       f"{c}x{h}x{w} input sent as {ec}x{eh}x{ew} for a {f['engine_kernel'][0]}x{f['engine_kernel'][1]} "
                       f"kernel, {f['window_reads']} window reads a lane instead of {f['unfolded_window_reads']}")
    return out


def streamed_lines(report: Mapping[str, Any]) -> list[str]:
    """A stream's end to end per batch, host overlapped with the engine (none in reports written
    before streams were measured)."""
    tot = report["total"]
    st = tot.get("streamed")
    if not st:
        return []
    torch_x = st["speedup_vs_cpu_torch_end_to_end"]
    serial = (" (batch after batch: a host op runs between engine programs, run_stream does not pipeline across it)"
              if report.get("host_ops") else "")
    return [f"streamed ({st['batches']} batches, run_stream; a steady-state batch): host {st['host[s]'] * 1e3:.2f} ms, "
            f"{st['hidden[s]'] * 1e3:.2f} ms of it while the engine runs{serial}; end to end "
            f"{st['end_to_end[s]'] * 1e3:.2f} "
            f"ms per batch = {_fmt(st['end_to_end_vs_bound'], '.2f')}x the bound"
            + ("" if torch_x is None else f", {torch_x:.2f}x torch ({_fmt(tot['cpu_torch_gmacs'], '.1f')} GMAC/s)")
            + ("" if st.get("board_wall[s]") is None else
               f"; measured on the board: {st['board_wall[s]'] * 1e3:.2f} ms wall a batch")]


def _rows_words(eng: Mapping[str, Any]) -> str:
    """`` x N rows`` for a lane of a report's engine that computes more than one row an issue."""
    n = lane_rows(bool(eng.get("row_pairs")), bool(eng.get("row_quads")), bool(eng.get("row_octets")))
    return f" x {n} rows" if n > 1 else ""


# each unit's name in the report, and what relieves a layer it paces (the envelope's knobs; the
# DMA's rate is the board's)
_UNITS = {"MACs": ("MACs", "more lanes or rows a lane (--multipliers, --row-pairs/--row-quads/--row-octets)"),
          "window": ("window generator", "more window generators or frame-word beats (--window-generators, "
                                         "--frame-word-beats)"),
          "unloader": ("unloader", "a wider stream (--stream-bits)"),
          "DMA": ("DMA", "the board's DMA rate (no engine knob)")}


def _paced_by(rf: Mapping[str, Any]) -> str:
    """A layer's pacing unit(s) for the table (``compute``/``DMA`` in reports written before it was kept)."""
    return "+".join(rf["paced_by"]) if "paced_by" in rf else rf["bound"]


def pacing_lines(report: Mapping[str, Any]) -> list[str]:
    """What paces each layer's batches, by the cycle model, and what would relieve it (none in
    reports written before it was kept)."""
    rows = [r for r in report["layers"] if "paced_by" in r["roofline"]]
    if not rows:
        return []
    parts = []
    for r in rows:
        cyc, paced = r["roofline"]["cycles_per_batch"], r["roofline"]["paced_by"]
        rest = ", ".join(f"{_UNITS[k][0]} {v:,}" for k, v in sorted(cyc.items(), key=lambda kv: -kv[1])
                         if k not in paced)
        relief = _UNITS["DMA" if "DMA" in paced else paced[0]][1]
        parts.append(f"{r['name']} the {' and the '.join(_UNITS[k][0] for k in paced)}, {cyc[paced[0]]:,}"
                     f"{' each' if len(paced) > 1 else ''} ({rest}): {relief}")
    return [f"paced by (cycle model, cycles a batch of {report['engine']['lanes']} positions, all its phases): "
            + "; ".join(parts)]


def bound_lines(report: Mapping[str, Any]) -> list[str]:
    """The run against its roofline bound (a model) and the lanes' use, as a line (none in reports
    written before they were kept)."""
    tot, eng = report["total"], report["engine"]
    b = tot.get("bounds")
    if b is None:
        return []
    dsps, mpd = eng.get("dsps", eng["lanes"]), eng.get("macs_per_dsp", 1)
    return [f"bound ({report['board']}, model): compute {b['compute[s]'] * 1e3:.2f} ms ({tot['macs'] / 1e6:.1f} M "
            f"DeBut MACs on {eng['lanes']} lanes{_rows_words(eng)} = {dsps} DSPs x {mpd} at {report['fclk[mhz]']:g} MHz), DMA "
            f"{b['dma[s]'] * 1e3:.2f} ms: {b['binds']} binds; end to end {tot['end_to_end[s]'] * 1e3:.2f} ms = "
            f"{_fmt(b['end_to_end_vs_bound'], '.2f')}x the bound; lane utilisation {_pct(tot['lane_utilisation'])} "
            f"= {tot['macs_per_dsp_cycle']:.2f} MACs per DSP per cycle (of {mpd})"
            + ("" if b.get("layers[s]") is None else
               f"; layers one after another, each at its own bound: {b['layers[s]'] * 1e3:.2f} ms, the engine "
               f"{tot['runtime[s]'] / b['layers[s]']:.2f}x that")]

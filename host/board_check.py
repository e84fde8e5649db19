"""``litefly board check``: the board self-test (issue 13). Board-safe: numpy (+ pynq on a board).

On a board (``backend="pynq"``) it loads the network's ONE overlay from the bitstream registry
(by the engine envelope's hash and the board), and on a PC it runs the same code path against
the engine model (``golden``) or the simulated RTL (``sim``):

1. identity and hash: ``EngineDriver.check_identity`` (ID, VERSION, CONFIG_HASH = the envelope
   hash, LANES) before anything runs;
2. the network, bit-exact: ``NetworkRunner.run_int`` against the int8 golden network
   (:func:`litefly.network.network_forward_int`) on random chained-scale parameters
   (:func:`litefly.network.quantize_network` of :func:`litefly.fixed.random_float_weights`) or
   ``--params``; then every layer on its own (its golden input in, its golden output compared),
   so a failure names the layer;
3. throughput from the engine's own counters (CYCLES, BUSY_CYCLES, STARVED_CYCLES,
   STALLED_CYCLES), the measured DMA/engine wait, host time per stage, DMA transfers per
   inference;
4. the board CPU's own conv2d baseline: numpy im2col (:func:`litefly.network.im2col`) and a
   float32 matmul per layer, measured where the check runs.

It returns a report in the bench's JSON vocabulary (``docs/host.md``) and renders one table.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from litefly.boards.boards import get_board
from litefly.config import NetworkConfig
from litefly.errors import ConfigError, LiteflyError
from litefly.fixed import QuantizedLayer, chain_dense, random_float_weights
from litefly.hw.spec import EngineEnvelope
from litefly.network import (EngineStep, global_pool_int, im2col, network_forward_int, network_input_shape,
                             plan_network, quantize_network)

from .bench import HOST_STAGES, best_time, fmt_stages, fmt_us, io_host_stages, layer_host_stages, load_params_dir
from .driver import host_seconds

__all__ = ["run_board_check", "resolve_board", "render_table", "summary_lines", "cpu_conv2d_time", "HOST_STAGES", "CALIB_IMAGES"]

CALIB_IMAGES = 2


# -- parameters ---------------------------------------------------------------------------------
def _params(network: NetworkConfig, steps: Sequence[EngineStep], calib: np.ndarray, rng: np.random.Generator,
            params_dir: str | Path | None) -> tuple[dict[str, QuantizedLayer], str]:
    if params_dir is not None:
        return load_params_dir(network, params_dir), f"loaded from {Path(params_dir)}"
    weights = {s.name: random_float_weights(s.layer, rng) for s in steps}
    biases = {s.name: (rng.standard_normal(s.layer.chain_out) * 0.3 if s.layer.format.bias else None) for s in steps}
    return quantize_network(steps, weights, calib, biases), \
        f"random, chained scales calibrated on {len(calib)} image(s)"


# -- the CPU baseline -------------------------------------------------------------------------
def cpu_conv2d_time(step: EngineStep, dense: np.ndarray, x: np.ndarray) -> float:
    """Seconds of the dense layer as numpy runs it on this CPU: im2col of the float32 NCHW map,
    then ``cols @ W.T`` (float32), best of several runs. ReLU/pooling are not included."""
    xf = np.ascontiguousarray(x, dtype=np.float32)
    wt = np.ascontiguousarray(np.asarray(dense, dtype=np.float32).T)

    def run() -> np.ndarray:
        return im2col(xf, step.kernel, step.stride, step.padding, step.dilation) @ wt

    return best_time(run)


# -- the check ----------------------------------------------------------------------------------
def resolve_board(backend: str, board_name: str | None, opts: Mapping[str, Any]) -> str:
    """The board a run is for: ``board_name``, else pynq-z2 off the board, else (``pynq``) the one it runs on."""
    if backend != "pynq":
        return board_name or "pynq-z2"
    from .board_env import detect_board  # noqa: PLC0415
    name = detect_board(opts.get("bitfile"), board_name)
    if name is None:
        raise LiteflyError("cannot tell which board this is: pass --board pynq-z2|zcu104 (or set $BOARD)")
    return name


def _mismatch(got: np.ndarray, want: np.ndarray) -> tuple[bool, int]:
    got = np.asarray(got)
    if got.size != want.size:
        return False, int(want.size)
    diff = int(np.count_nonzero(got.reshape(want.shape) != want))
    return diff == 0, diff


def run_board_check(network: NetworkConfig, backend: str = "golden", board_name: str | None = None,
                    batch: int = 1, input_size: tuple[int, int] | None = None, params_dir: str | Path | None = None,
                    seed: int = 0, clock_mhz: float | None = None, repeats: int = 3, timeout: float = 2.0,
                    registry_root: str | Path | None = None, progress: Callable[[str], None] | None = None,
                    **backend_opts: Any) -> dict[str, Any]:
    """Run the board check (see the module doc) and return its report; ``report["passed"]`` says
    whether the network and every layer were bit-exact. Errors (no bitstream, a hash that does not
    match, a DMA timeout, ...) are raised as one-line :class:`~litefly.errors.LiteflyError`."""
    from .runtime import BACKENDS, NetworkRunner, execute, prepare_program  # noqa: PLC0415

    if backend not in BACKENDS:
        raise LiteflyError(f"backend {backend!r} is not known; expected one of {', '.join(BACKENDS)}")
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1")
    say = progress or (lambda m: None)
    t_start = time.perf_counter()
    opts = dict(backend_opts)
    if backend == "pynq":
        from .pynq_transport import import_pynq  # noqa: PLC0415
        import_pynq()                           # first: on a PC, say that pynq is missing
    board = get_board(resolve_board(backend, board_name, opts))
    in_shape = network_input_shape(network, input_size)
    size = (in_shape[1], in_shape[2])
    steps = plan_network(network, in_shape)
    envelope = EngineEnvelope.for_network(network, input_size, board=board.name)   # as `litefly build --board` sizes it
    bitstream: dict[str, Any] | None = None
    f_mhz = clock_mhz
    if backend == "pynq":
        if not opts.get("bitfile") and not opts.get("bitstream_dir"):
            from litefly.bitstreams import registry  # noqa: PLC0415
            say(f"looking up engine 0x{envelope.hash32:08x} for {board.name} in the registry")
            entry = registry.lookup(envelope, board.name, root=Path(registry_root) if registry_root else None)
            opts["bitfile"] = entry.bit
            bitstream = {"key": f"{entry.board}/{entry.key}", "path": str(entry.path),
                         "vivado_version": entry.build.get("vivado_version"), "clock_mhz": entry.clock_mhz,
                         "built_for": entry.network.get("name")}
            f_mhz = f_mhz or entry.clock_mhz
        else:
            bitstream = {"path": str(opts.get("bitfile") or opts.get("bitstream_dir"))}
        opts["board"] = board.name
    f_mhz = float(f_mhz or board.clock_mhz)
    if f_mhz <= 0:
        raise ConfigError(f"--clock-mhz {f_mhz:g} must be positive")
    f_hz = f_mhz * 1e6

    rng = np.random.default_rng(seed)
    x4 = rng.standard_normal((batch,) + in_shape)
    say("quantising (chained scales)")
    params, params_src = _params(network, steps, x4[:CALIB_IMAGES], rng, params_dir)
    first = params[steps[0].name]
    t0 = time.perf_counter()
    x_int = first.quantize_input(x4)
    t_quant = time.perf_counter() - t0
    golden = [x_int]
    network_forward_int(steps, params, x_int, on_step=lambda s, y: golden.append(y))
    x_run = x_int.reshape(batch, -1) if network.layers[0].kind == "linear" else x_int

    src_engine = {"sim": f"simulated RTL, CYCLES at {f_mhz:g} MHz",
                  "pynq": f"the engine's counters on {board.name} at {f_mhz:g} MHz",
                  "golden": f"engine model (cycle model of docs/engine.md) at {f_mhz:g} MHz"}[backend]
    runner = NetworkRunner(network, params, backend, input_size=size, envelope=envelope, clock_mhz=f_mhz,
                           timeout=timeout, **opts)
    layers_ok: list[tuple[bool, int]] = []
    try:
        identity: dict[str, Any]
        if backend == "sim":
            identity = {"checked": "by the driver inside the simulation (EngineDriver.check_identity)"}
        else:
            say(f"opening the {backend} engine and checking its identity")
            driver = runner._open()                 # noqa: SLF001 - one overlay for the network and the layers
            ident = driver.check_identity()
            identity = {"ID": f"0x{ident['ID']:08x}", "VERSION": f"0x{ident['VERSION']:08x}",
                        "CONFIG_HASH": f"0x{ident['CONFIG_HASH']:08x}", "LANES": ident["LANES"], "matches": True}
        say("network run(s), bit-exact against the int8 golden network")
        n_runs = 1 if backend == "sim" else max(1, repeats)
        if backend != "sim":
            runner.run_int(x_run)                   # warm-up: buffers allocated, caches warm
        best = None
        net_ok, net_diff = True, 0
        for _ in range(n_runs):
            y = runner.run_int(x_run)
            ok, diff = _mismatch(y, golden[-1])
            net_ok, net_diff = net_ok and ok, max(net_diff, diff)
            total = dict(runner.total, **{"host_stage[s]": dict(runner.total["host_stage[s]"])})
            host = host_seconds(total["host_stage[s]"])
            if best is None or host < best[0]:
                best = (host, [dict(s, timings=dict(s["timings"])) for s in runner.stats], total)
        _, stats, total = best
        total["host_stage[s]"]["quantize"] = total["host_stage[s]"].get("quantize", 0.0) + t_quant
        say("every layer on its own, bit-exact against its golden output")
        for k, step in enumerate(steps):
            prog = prepare_program(envelope, (step,), params)
            x_k = golden[k] if step.pre is None else global_pool_int(golden[k], step.pre)   # a host op first
            try:
                if backend == "sim":
                    from .sim_transport import run_network_sim  # noqa: PLC0415
                    y_k = run_network_sim(prog, x_k, timeout=timeout, clock_mhz=f_mhz, **opts)[0]
                else:
                    y_k = execute(runner._open(), prog, x_k)[0]  # noqa: SLF001
            finally:
                for b in prog.buffers.get("acts", []) + prog.buffers.get("params", []):
                    getattr(b, "freebuffer", lambda: None)()
                prog.buffers = {}
            layers_ok.append(_mismatch(y_k, golden[k + 1]))
    finally:
        runner.close()

    say("the CPU's own conv2d (numpy im2col + float32 matmul)")
    stages = {s: float(total["host_stage[s]"].get(s, 0.0)) for s in HOST_STAGES}
    host_layers = layer_host_stages(stats, stages)
    rows = []
    for k, (step, st) in enumerate(zip(steps, stats)):
        q = params[step.name]
        dense = chain_dense(step.layer.chain, q.float_weights())
        t_cpu = cpu_conv2d_time(step, dense, golden[k] if step.pre is None else global_pool_int(golden[k], step.pre))
        rows.append(_layer_row(step, st, host_layers[k], layers_ok[k], golden[k + 1].size, t_cpu, f_hz, batch))
    passed = net_ok and all(ok for ok, _ in layers_ok)
    return _report(network, envelope, board, backend, f_mhz, batch, size, seed, rows, total, stages, identity,
                   bitstream, src_engine, params_src, (net_ok, net_diff, golden[-1].size), passed,
                   time.perf_counter() - t_start)


def _layer_row(step: EngineStep, st: dict, host: dict[str, float], ok_diff: tuple[bool, int], elements: int,
               t_cpu: float, f_hz: float, batch: int) -> dict[str, Any]:
    c = st.get("counters", {})
    cycles = int(st["cycles"])
    runtime = cycles / f_hz
    host_s = sum(host.values())
    e2e = runtime + host_s
    ok, diff = ok_diff
    return {
        "name": step.name, "kind": step.layer.kind, "in_shape": list(step.in_shape),
        "out_shape": list(step.out_shape), "bit_exact": ok, "mismatches": diff, "elements": int(elements),
        "cycles": cycles, "counters": {k: int(v) for k, v in c.items()},
        "busy_cycles": int(c.get("BUSY_CYCLES", 0)), "starved_cycles": int(c.get("STARVED_CYCLES", 0)),
        "stalled_cycles": int(c.get("STALLED_CYCLES", 0)),
        "mac_utilisation": c.get("BUSY_CYCLES", 0) / cycles if cycles else None,
        "model_cycles": int(st.get("model_cycles", 0)),
        "runtime[s]": runtime, "throughput[images/s]": batch / runtime if runtime else None,
        "engine_wait[s]": float(st["timings"].get("wait", 0.0)),
        "host_stage[s]": host, "host[s]": host_s, "end_to_end[s]": e2e,
        "transfers": int(st["transfers"]), "passes": int(st.get("passes", 0)),
        "bytes_in": int(st["bytes_in"]), "bytes_out": int(st["bytes_out"]), "param_bytes": int(st.get("param_bytes", 0)),
        "cpu_numpy[s]": t_cpu,
        "speedup_vs_cpu_numpy": t_cpu / runtime if runtime else None,
        "speedup_vs_cpu_numpy_end_to_end": t_cpu / e2e if e2e else None,
    }


def _report(network, envelope, board, backend, f_mhz, batch, size, seed, rows, total, stages, identity, bitstream,
            src_engine, params_src, net, passed, wall) -> dict[str, Any]:
    f_hz = f_mhz * 1e6
    cycles = sum(r["cycles"] for r in rows)
    runtime = cycles / f_hz
    host = sum(stages.values())
    e2e = runtime + host
    io = io_host_stages(stages, [{"timings": r["host_stage[s]"]} for r in rows])
    cpu = sum(r["cpu_numpy[s]"] for r in rows)
    counters = {k: sum(r["counters"].get(k, 0) for r in rows)
                for k in ("CYCLES", "BUSY_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES", "COLUMNS_DONE", "LOAD_CYCLES")}
    net_ok, net_diff, net_elems = net
    return {
        "check": "board", "passed": bool(passed),
        "network": network.name, "layers_served": [s["name"] for s in rows],
        "backend": backend, "board": board.name, "fclk[mhz]": f_mhz, "batch_size": batch,
        "input_size": list(size), "seed": seed,
        "engine": {"name": envelope.name, "hash": f"0x{envelope.hash32:08x}", "config_hash": envelope.config_hash,
                   "lanes": envelope.lanes, "stream_bits": envelope.stream_bits, "frame_beats": envelope.frame_beats,
                   "layers_served": len(rows)},
        "identity": identity, "bitstream": bitstream,
        "network_bit_exact": bool(net_ok), "network_mismatches": int(net_diff), "network_elements": int(net_elems),
        "sources": {"engine": src_engine,
                    "host": ("wall time inside the simulator (register and DMA traffic are simulated: not the "
                             "host's real cost; quantize measured on this CPU)" if backend == "sim" else
                             "measured on this CPU (the run with the least host time after a warm-up)"),
                    "cpu": f"numpy {np.__version__} im2col + float32 matmul per layer (ReLU/pooling not included), "
                           f"measured on this CPU ({platform.machine()}, {platform.processor() or platform.system()})",
                    "params": params_src},
        "layers": rows,
        "network_io": {"host_stage[s]": io, "host[s]": sum(io.values())},
        "total": {
            "cycles": cycles, "counters": counters,
            "mac_utilisation": counters["BUSY_CYCLES"] / cycles if cycles else None,
            "runtime[s]": runtime, "throughput[images/s]": batch / runtime if runtime else None,
            "engine_wait[s]": float(total["host_stage[s]"].get("wait", 0.0)),
            "host_stage[s]": stages, "host[s]": host, "host_vs_engine": host / runtime if runtime else None,
            "end_to_end[s]": e2e, "end_to_end_throughput[images/s]": batch / e2e if e2e else None,
            "transfers": int(total["transfers"]), "transfers_per_inference": int(total["transfers"]),
            "host_transfers": 2, "bytes_in": rows[0]["bytes_in"], "bytes_out": rows[-1]["bytes_out"],
            "cpu_numpy[s]": cpu,
            "speedup_vs_cpu_numpy": cpu / runtime if runtime else None,
            "speedup_vs_cpu_numpy_end_to_end": cpu / e2e if e2e else None,
            "check_wall[s]": wall,
        },
    }


# -- output -------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def render_table(report: Mapping[str, Any]):
    """One rich Table: per layer and in total (pipe-friendly with :func:`litefly.cli.output.console`)."""
    from rich.table import Table  # noqa: PLC0415
    eng = report["engine"]
    t = Table(title=f"litefly board check: {report['network']} on engine {eng['name']} {eng['hash']} "
                    f"({eng['lanes']} lanes), {report['backend']} backend on {report['board']}, batch "
                    f"{report['batch_size']}, input {report['input_size'][0]}x{report['input_size'][1]}")
    cols = ("layer", "bit-exact", "CYCLES", "BUSY %", "STARVED", "STALLED", "engine [us]", "images/s",
            "DMA wait [us]", "host [us]", "xfers", "CPU conv2d [us]", "x CPU engine", "x CPU e2e")
    for col in cols:
        t.add_column(col, justify="left" if col in ("layer", "bit-exact") else "right")
    for r in report["layers"]:
        t.add_row(r["name"], "yes" if r["bit_exact"] else f"NO ({r['mismatches']} differ)", f"{r['cycles']:,}",
                  _fmt(r["mac_utilisation"] and 100 * r["mac_utilisation"], ".1f"), f"{r['starved_cycles']:,}",
                  f"{r['stalled_cycles']:,}", fmt_us(r["runtime[s]"]), _fmt(r["throughput[images/s]"], ",.0f"),
                  fmt_us(r["engine_wait[s]"]), fmt_us(r["host[s]"]), str(r["transfers"]), fmt_us(r["cpu_numpy[s]"]),
                  _fmt(r["speedup_vs_cpu_numpy"]), _fmt(r["speedup_vs_cpu_numpy_end_to_end"]))
    io = report.get("network_io")
    if io is not None:      # the input's quantise/copy and the output's copy/unpack: no layer's
        t.add_row("network input/output", "", "", "", "", "", "", "", "", fmt_us(io["host[s]"]), "", "", "", "",
                  style="italic")
    tot = report["total"]
    c = tot["counters"]
    t.add_row("network", "yes" if report["network_bit_exact"] else f"NO ({report['network_mismatches']} differ)",
              f"{tot['cycles']:,}", _fmt(tot["mac_utilisation"] and 100 * tot["mac_utilisation"], ".1f"),
              f"{c['STARVED_CYCLES']:,}", f"{c['STALLED_CYCLES']:,}", fmt_us(tot["runtime[s]"]),
              _fmt(tot["throughput[images/s]"], ",.0f"), fmt_us(tot["engine_wait[s]"]), fmt_us(tot["host[s]"]),
              str(tot["transfers"]), fmt_us(tot["cpu_numpy[s]"]), _fmt(tot["speedup_vs_cpu_numpy"]),
              _fmt(tot["speedup_vs_cpu_numpy_end_to_end"]), style="bold")
    st = tot["host_stage[s]"]
    t.caption = (f"engine: {report['sources']['engine']}; host ({report['sources']['host']}) per stage: "
                 + fmt_stages(st)
                 + f"; {tot['transfers_per_inference']} DMA transfers per inference (2 between host and engine "
                 f"memory); CPU: {report['sources']['cpu']}")
    return t


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    tot = report["total"]
    ident = report["identity"]
    who = (f"identity ok (ID {ident['ID']}, CONFIG_HASH {ident['CONFIG_HASH']}, {ident['LANES']} lanes)"
           if "CONFIG_HASH" in ident else f"identity checked {ident.get('checked', '')}".rstrip())
    bad = [r["name"] for r in report["layers"] if not r["bit_exact"]]
    verdict = ("PASSED: the network and every layer bit-exact against the int8 golden network"
               if report["passed"] else
               f"FAILED: {'network output' if not report['network_bit_exact'] else ''}"
               f"{' and ' if bad and not report['network_bit_exact'] else ''}"
               f"{'layer(s) ' + ', '.join(bad) if bad else ''} differ from the int8 golden network")
    return [f"{who}; {verdict}",
            f"engine {tot['runtime[s]'] * 1e3:.3f} ms + host {tot['host[s]'] * 1e3:.3f} ms = end to end "
            f"{tot['end_to_end[s]'] * 1e3:.3f} ms per batch of {report['batch_size']} "
            f"({_fmt(tot['end_to_end_throughput[images/s]'], ',.1f')} images/s); this CPU's conv2d "
            f"{tot['cpu_numpy[s]'] * 1e3:.3f} ms"]

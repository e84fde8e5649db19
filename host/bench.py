"""``litefly bench``: run a layer or network on an engine backend and report the speedup over conv2d.

Per layer the report gives (each figure with its source):

* engine cycles of the DeBut engine and of the dense engine with the same multiplier budget
  (``layer.dense_baseline()``) run on the same backend in the same run ("simulated at F MHz"
  on ``sim``; the engine's own counters on ``pynq``; "model" on ``golden``);
* bytes moved each way, the compute bound (``lanes * f / macs_per_column`` columns/s) and the
  DMA bound (``dma_bytes_per_s / bytes per column`` of the busier direction) and which limits;
* speedup (a) over the dense engine and (b) over conv2d on this CPU (numpy im2col + matmul,
  and torch ``F.conv2d`` when installed), "measured on this CPU".

The JSON fields follow FINN's ``throughput_test`` (``docs/host.md`` lists them).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import LiteflyError
from litefly.fixed import chain_dense, load_quantized, quantize_layer, random_float_weights
from litefly.hw.spec import EngineSpec

from .im2col import layer_im2col
from .runtime import layer_forward, network_forward, run_columns

__all__ = ["run_bench", "roofline", "cpu_conv_times", "render_table", "plot_report"]


def roofline(layer: LayerConfig, clock_hz: float, dma_bytes_per_s: float) -> dict[str, Any]:
    """Compute and DMA bounds of ``layer``'s engine in columns per second (a model)."""
    spec = EngineSpec(layer)
    in_b = spec.in_elems * spec.act_bits / 8
    out_b = spec.out_elems * spec.act_bits / 8
    compute = spec.lanes * clock_hz / spec.issue_cycles_per_batch
    dma = dma_bytes_per_s / max(in_b, out_b)
    return {"compute_bound_columns_per_s": compute, "dma_bound_columns_per_s": dma,
            "bound": "compute" if compute <= dma else "DMA",
            "attainable_columns_per_s": min(compute, dma),
            "peak_macs_per_s": spec.lanes * clock_hz,
            "macs_per_dma_byte": layer.macs_per_column / max(in_b, out_b),
            "bytes_in_per_column": in_b, "bytes_out_per_column": out_b}


def _best_time(fn: Callable[[], Any], min_total: float = 0.1, max_reps: int = 50) -> float:
    fn()
    best, total, reps = float("inf"), 0.0, 0
    while reps < max_reps and (total < min_total or reps < 5):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total, reps = min(best, dt), total + dt, reps + 1
    return best


def cpu_conv_times(layer: LayerConfig, x: np.ndarray, dense: np.ndarray) -> dict[str, float | None]:
    """Seconds for the dense layer on this CPU: numpy im2col + matmul (float32), torch conv2d if installed."""
    xf = x.astype(np.float32)
    w = dense.astype(np.float32)
    out: dict[str, float | None] = {"numpy_s": _best_time(lambda: layer_im2col(layer, xf)[0] @ w.T)}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        out["torch_s"] = None
        return out
    xt = torch.from_numpy(xf)
    with torch.no_grad():
        if layer.kind == "conv2d":
            kh, kw = layer.kernel
            wt = torch.from_numpy(w.reshape(layer.out_channels, kh, kw, layer.in_channels).transpose(0, 3, 1, 2).copy())
            out["torch_s"] = _best_time(lambda: F.conv2d(xt, wt, stride=layer.stride, padding=layer.padding,
                                                         dilation=layer.dilation))
        else:
            wt = torch.from_numpy(w)
            out["torch_s"] = _best_time(lambda: F.linear(xt.reshape(xt.shape[0], -1), wt))
    return out


def _dense_params(layer: LayerConfig, weights: list[np.ndarray]) -> tuple[LayerConfig, list[np.ndarray], np.ndarray]:
    base = layer.dense_baseline()
    dense = chain_dense(layer.chain, weights)
    return base, [dense.reshape(base.chain[0].compact_shape)], dense


def run_bench(network: NetworkConfig, backend: str = "sim", board_name: str = "pynq-z2",
              clock_mhz: float | None = None, batch: int = 1, input_size: tuple[int, int] = (16, 16),
              seed: int = 0, params_dir: str | Path | None = None, dense: bool = True,
              progress: Callable[[str], None] | None = None, **backend_opts: Any) -> dict[str, Any]:
    """Run the bench and return the report dict (see ``docs/host.md``)."""
    from litefly.boards.boards import get_board
    board = get_board(board_name)
    f_mhz = float(clock_mhz or board.clock_mhz)
    f_hz = f_mhz * 1e6
    if backend == "pynq":
        from .pynq_transport import import_pynq
        import_pynq()
    src_engine = {"sim": f"simulated at {f_mhz:g} MHz", "pynq": f"measured on {board.name} at {f_mhz:g} MHz",
                  "golden": f"model (issue cycles) at {f_mhz:g} MHz"}[backend]
    rng = np.random.default_rng(seed)
    first = network.layers[0]
    if first.kind == "conv2d":
        x = rng.standard_normal((batch, first.in_channels, *input_size))
    else:
        x = rng.standard_normal((batch, first.in_features))
    opts = dict(backend_opts)
    if backend == "sim":
        opts.setdefault("clock_mhz", f_mhz)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    def bench_layer(layer: LayerConfig, x: np.ndarray) -> np.ndarray:
        def run_rows(cols_f: np.ndarray) -> np.ndarray:
            if params_dir is not None:
                q = load_quantized(layer, Path(params_dir) / f"{layer.name}.npz")
                fw = q.float_weights()
            else:
                fw = random_float_weights(layer, rng)
                bias = rng.standard_normal(layer.chain_out) * 0.1 if layer.format.bias else None
                q = quantize_layer(layer, fw, cols_f, bias=bias)
            cols = q.quantize_input(cols_f)
            if progress:
                progress(f"{layer.name}: DeBut engine")
            y_int, st = run_columns(layer, q, cols, backend, **opts)
            if not np.array_equal(y_int, q.forward(cols)):
                raise LiteflyError(f"layer {layer.name!r}: engine output differs from the fixed-point golden model")
            base, dw, dense_m = _dense_params(layer, fw)
            dst = None
            if dense:
                if progress:
                    progress(f"{layer.name}: dense engine")
                qd = quantize_layer(base, dw, cols_f, bias=None if not base.format.bias else np.zeros(base.chain_out),
                                    in_scale=q.in_scale)
                dopts = dict(opts)
                if backend == "pynq":
                    bdir, files = dopts.get("bitstream_dir"), dopts.get("bitfiles") or {}
                    if base.name not in files and not (bdir and (Path(bdir) / f"{base.name}.bit").exists()):
                        dopts = None      # no dense bitstream on the board: the dense figure is the cycle model
                if dopts is not None:
                    _, dst = run_columns(base, qd, qd.quantize_input(cols_f), backend, **dopts)
            cpu = cpu_conv_times(layer, x, dense_m)
            rows.append(_layer_row(layer, base, st, dst, cpu, f_hz, board, batch, src_engine))
            return q.dequantize_output(y_int)
        return layer_forward(layer, x, run_rows)

    network_forward(network, x, bench_layer)
    return _report(network, rows, backend, board, f_mhz, batch, input_size, seed, src_engine,
                   time.perf_counter() - t_start)


def _layer_row(layer, base, st, dst, cpu, f_hz, board, batch, src_engine) -> dict[str, Any]:
    spec = EngineSpec(layer)
    cols = st["columns"]
    cycles = int(st["cycles"])
    runtime = cycles / f_hz
    rf = roofline(layer, f_hz, board.dma_bytes_per_s)
    rf_dense = roofline(base, f_hz, board.dma_bytes_per_s)
    if dst is not None:
        dcycles, dsrc = int(dst["cycles"]), src_engine
    else:
        bspec = EngineSpec(base)
        dcycles, dsrc = -(-cols // bspec.lanes) * bspec.issue_cycles_per_batch, "model (issue cycles)"
    dense_runtime = dcycles / f_hz
    dma_time = max(st["bytes_in"], st["bytes_out"]) / board.dma_bytes_per_s
    board_est = max(runtime, dma_time)
    row = {
        "name": layer.name, "columns": cols, "lanes": spec.lanes, "macs_per_column": layer.macs_per_column,
        "dense_macs_per_column": base.macs_per_column, "mac_reduction": layer.mac_reduction,
        "cycles": cycles, "cycles_source": src_engine, "counters": st.get("counters", {}),
        "dense_cycles": dcycles, "dense_cycles_source": dsrc,
        "runtime[s]": runtime, "dense_runtime[s]": dense_runtime,
        "throughput[columns/s]": cols / runtime if runtime else None,
        "throughput[images/s]": batch / runtime if runtime else None,
        "bytes_in": st["bytes_in"], "bytes_out": st["bytes_out"], "param_bytes": st.get("param_bytes", 0),
        "DRAM_in_bandwidth[MB/s]": st["bytes_in"] / runtime / 1e6 if runtime else None,
        "DRAM_out_bandwidth[MB/s]": st["bytes_out"] / runtime / 1e6 if runtime else None,
        "dma_time[s]": dma_time, "board_estimate[s]": board_est,
        "board_estimate_source": f"model: max(engine time, bytes / {board.dma_bytes_per_s / 1e9:g} GB/s DMA)",
        "roofline": rf, "dense_roofline": rf_dense,
        "speedup_vs_dense_engine": dcycles / cycles if cycles else None,
        "cpu_numpy[s]": cpu["numpy_s"], "cpu_torch[s]": cpu.get("torch_s"),
        "cpu_source": f"measured on this CPU ({platform.machine()}, {platform.processor() or platform.system()})",
        "speedup_vs_cpu_numpy": cpu["numpy_s"] / runtime if runtime else None,
        "speedup_vs_cpu_torch": (cpu["torch_s"] / runtime) if (runtime and cpu.get("torch_s")) else None,
        "host_stage[s]": st.get("timings", {}), "tiles": st.get("tiles"), "host_wall[s]": st.get("wall_s"),
    }
    return row


def _report(network, rows, backend, board, f_mhz, batch, input_size, seed, src_engine, wall) -> dict[str, Any]:
    tot_cycles = sum(r["cycles"] for r in rows)
    tot_dense = sum(r["dense_cycles"] for r in rows)
    runtime = tot_cycles / (f_mhz * 1e6)
    cpu_np = sum(r["cpu_numpy[s]"] for r in rows)
    torch_vals = [r["cpu_torch[s]"] for r in rows]
    cpu_t = sum(torch_vals) if all(v is not None for v in torch_vals) else None
    bin_, bout = sum(r["bytes_in"] for r in rows), sum(r["bytes_out"] for r in rows)
    stages: dict[str, float] = {}
    for r in rows:
        for k, v in r["host_stage[s]"].items():
            stages[k] = stages.get(k, 0.0) + v
    return {
        "network": network.name, "backend": backend, "board": board.name, "fclk[mhz]": f_mhz,
        "batch_size": batch, "input_size": list(input_size), "seed": seed,
        "sources": {"engine": src_engine, "cpu": rows[0]["cpu_source"] if rows else "",
                    "bounds": f"model: {board.name} DMA {board.dma_bytes_per_s / 1e9:g} GB/s one-way"},
        "layers": rows,
        "total": {
            "cycles": tot_cycles, "dense_cycles": tot_dense, "runtime[s]": runtime,
            "throughput[images/s]": batch / runtime if runtime else None,
            "DRAM_in_bandwidth[MB/s]": bin_ / runtime / 1e6 if runtime else None,
            "DRAM_out_bandwidth[MB/s]": bout / runtime / 1e6 if runtime else None,
            "bytes_in": bin_, "bytes_out": bout,
            "board_estimate[s]": sum(r["board_estimate[s]"] for r in rows),
            "speedup_vs_dense_engine": tot_dense / tot_cycles if tot_cycles else None,
            "cpu_numpy[s]": cpu_np, "cpu_torch[s]": cpu_t,
            "speedup_vs_cpu_numpy": cpu_np / runtime if runtime else None,
            "speedup_vs_cpu_torch": cpu_t / runtime if (runtime and cpu_t) else None,
            "host_stage[s]": stages, "bench_wall[s]": wall,
        },
    }


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def render_table(report: dict[str, Any]):
    """A rich Table of the report."""
    from rich.table import Table
    t = Table(title=f"litefly bench: {report['network']} on {report['backend']} "
                    f"({report['sources']['engine']}; batch {report['batch_size']}, "
                    f"input {report['input_size'][0]}x{report['input_size'][1]})")
    for col in ("layer", "columns", "MACs/col", "cycles", "dense cycles", "x dense", "time [us]",
                "in/out [KiB]", "bound", "CPU numpy [us]", "CPU torch [us]", "x numpy", "x torch"):
        t.add_column(col, justify="right" if col != "layer" else "left")
    for r in report["layers"]:
        t.add_row(r["name"], str(r["columns"]), str(r["macs_per_column"]), str(r["cycles"]),
                  str(r["dense_cycles"]), _fmt(r["speedup_vs_dense_engine"], ".2f"),
                  _fmt(r["runtime[s]"] * 1e6, ".1f"), f"{r['bytes_in'] / 1024:.1f}/{r['bytes_out'] / 1024:.1f}",
                  r["roofline"]["bound"], _fmt(r["cpu_numpy[s]"] and r["cpu_numpy[s]"] * 1e6, ".1f"),
                  _fmt(r["cpu_torch[s]"] and r["cpu_torch[s]"] * 1e6, ".1f"),
                  _fmt(r["speedup_vs_cpu_numpy"], ".2f"), _fmt(r["speedup_vs_cpu_torch"], ".2f"))
    tot = report["total"]
    t.add_row("total", "", "", str(tot["cycles"]), str(tot["dense_cycles"]), _fmt(tot["speedup_vs_dense_engine"], ".2f"),
              _fmt(tot["runtime[s]"] * 1e6, ".1f"), f"{tot['bytes_in'] / 1024:.1f}/{tot['bytes_out'] / 1024:.1f}", "",
              _fmt(tot["cpu_numpy[s]"] * 1e6, ".1f"), _fmt(tot["cpu_torch[s]"] and tot["cpu_torch[s]"] * 1e6, ".1f"),
              _fmt(tot["speedup_vs_cpu_numpy"], ".2f"), _fmt(tot["speedup_vs_cpu_torch"], ".2f"), style="bold")
    t.caption = (f"engine: {report['sources']['engine']}; CPU: {report['sources']['cpu']}; "
                 f"bounds: {report['sources']['bounds']}")
    return t


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """PNG: roofline with the layers (DeBut and dense engines) placed on it, and speedup per layer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from litefly.boards.boards import get_board
    board = get_board(report["board"])
    f_hz = report["fclk[mhz]"] * 1e6
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    rows = report["layers"]
    ai = np.logspace(-1, 4, 200)
    peaks = sorted({r["roofline"]["peak_macs_per_s"] for r in rows})
    for peak in peaks:
        ax1.loglog(ai, np.minimum(peak, ai * board.dma_bytes_per_s), "k-", lw=1.2,
                   label=f"roof: {peak / 1e9:g} GMAC/s, DMA {board.dma_bytes_per_s / 1e9:g} GB/s (model)")
    for i, r in enumerate(rows):
        c = f"C{i}"
        for kind, rf, cyc, macs, marker in (("DeBut", r["roofline"], r["cycles"], r["macs_per_column"], "o"),
                                             ("dense", r["dense_roofline"], r["dense_cycles"],
                                              r["dense_macs_per_column"], "s")):
            if cyc:
                perf = macs * r["columns"] / (cyc / f_hz)
                ax1.loglog(rf["macs_per_dma_byte"], perf, marker, color=c,
                           label=f"{r['name']} {kind} ({rf['bound']}-bound)")
    ax1.set_xlabel("MACs per byte on the busier DMA direction")
    ax1.set_ylabel("MAC/s (engine, " + report["sources"]["engine"] + ")")
    ax1.set_title(f"Roofline on {board.name}")
    ax1.legend(fontsize=7)
    names = [r["name"] for r in rows]
    xs = np.arange(len(rows))
    series = [("vs dense engine", "speedup_vs_dense_engine"), ("vs CPU numpy", "speedup_vs_cpu_numpy"),
              ("vs CPU torch", "speedup_vs_cpu_torch")]
    w = 0.27
    for j, (lab, key) in enumerate(series):
        vals = [r[key] or 0.0 for r in rows]
        ax2.bar(xs + (j - 1) * w, vals, w, label=lab)
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set_xticks(xs, names)
    ax2.set_yscale("log")
    ax2.set_ylabel("speedup (x)")
    ax2.set_title("Speedup per layer (engine " + report["sources"]["engine"] + ")")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)

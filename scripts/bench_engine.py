#!/usr/bin/env python
"""Measure the engine in simulation: steady-state MAC utilisation and cycle speedup over dense.

For each published chain and multiplier budget, simulate the DeBut engine and the dense
``[p, q, p, q, 1]`` engine with the same budget and stream width (cocotb + Verilator, no
stalls), and print cycles per column, MAC utilisation and the cycle speedup against the
MAC-reduction ratio. Figures are simulated cycles, not board measurements.

    python scripts/bench_engine.py [--json out/bench_engine.json] [--layers vgg_conv1 ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from litefly.config import EngineParams, load_layer
from litefly.hw.spec import EngineSpec
from litefly.sim.runner import run_cocotb
from litefly.vectors import make_vectors, save_vectors

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["vgg_conv1", "vgg_conv2", "vgg_conv3", "pointnet_fc3"]
BUDGETS = [(64, 64), (64, 128), (200, 128)]      # (multipliers, stream bits)


def measure(layer, tmp: Path) -> dict:
    spec = EngineSpec(layer)
    vec = tmp / f"{layer.name}-{spec.lanes}.npz"
    save_vectors(make_vectors(layer, seed=0, count=spec.lanes), vec)
    res = run_cocotb(layer, "litefly.sim.tb_engine", {"vectors": str(vec), "measure": True, "measure_batches": 2})
    if not res.get("passed"):
        raise SystemExit(f"{layer.name}: simulation failed: {res.get('failures')} (log {res.get('log')})")
    return res["measure"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="*", default=LAYERS)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--budgets", nargs="*", default=None, help="MULT:STREAM pairs, e.g. 64:64 200:128")
    args = ap.parse_args()
    rows = []
    budgets = [tuple(int(v) for v in b.split(":")) for b in args.budgets] if args.budgets else BUDGETS
    jobs = [(name, m, sb) for name in args.layers for (m, sb) in budgets]
    with tempfile.TemporaryDirectory() as tmp:
        for name, mult, sbits in track(jobs, description="simulating", console=Console(stderr=True)):
            base = load_layer(ROOT / "examples" / "layers" / f"{name}.yaml")
            layer = replace(base, engine=EngineParams(multipliers=mult, stream_bits=sbits))
            dense = layer.dense_baseline()
            d, b = measure(layer, Path(tmp)), measure(dense, Path(tmp))
            speedup = b["steady_cycles_per_column"] / d["steady_cycles_per_column"]
            rows.append({"layer": name, "multipliers": mult, "lanes": EngineSpec(layer).lanes, "stream_bits": sbits,
                         "mac_reduction": layer.mac_reduction, "debut": d, "dense": b, "speedup": speedup,
                         "speedup_over_reduction": speedup / layer.mac_reduction})
    table = Table(title="Engine in simulation (Verilator, no stalls): steady state per column")
    for col in ("layer", "budget/lanes", "stream", "DeBut cyc/col", "DeBut util", "dense cyc/col", "dense util",
                "MAC reduction", "cycle speedup", "speedup / reduction"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["layer"], f"{r['multipliers']}/{r['lanes']}", f"{r['stream_bits']}",
                      f"{r['debut']['steady_cycles_per_column']:.2f}",
                      f"{100 * r['debut']['steady_mac_utilisation']:.1f}%",
                      f"{r['dense']['steady_cycles_per_column']:.2f}",
                      f"{100 * r['dense']['steady_mac_utilisation']:.1f}%",
                      f"{r['mac_reduction']:.2f}x", f"{r['speedup']:.2f}x", f"{r['speedup_over_reduction']:.3f}")
    Console(width=180).print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

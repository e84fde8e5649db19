"""``litefly sim``: build the engine, run it under cocotb, check it bit for bit and report cycles."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from litefly.config import load_layer
from litefly.errors import LiteflyError
from litefly.hw.spec import EngineSpec
from litefly.vectors import load_vectors, make_vectors, save_vectors

from .tools import SIMULATORS


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--vectors", "vectors_file", type=click.Path(path_type=Path), default=None,
              help="Vectors .npz from `litefly vectors` (default: made with --seed).")
@click.option("--simulator", type=click.Choice(SIMULATORS), default="verilator", show_default=True)
@click.option("--stall-prob", type=click.FloatRange(0.0, 0.95), default=0.0, show_default=True,
              help="Probability of an idle input cycle and of output back-pressure, each cycle.")
@click.option("--seed", default=0, show_default=True, help="Seed of the vectors and of the stalls.")
@click.option("--batches", default=2, show_default=True, type=click.IntRange(min=1),
              help="Batches of columns when the vectors are made here.")
@click.option("--reset-midway/--no-reset-midway", default=False, help="Reset during a stream, then run cleanly.")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write the results as JSON.")
@click.option("--fault", type=click.Choice(["weight_addr", "rounding"]), default=None, hidden=True)
def sim(config: Path, vectors_file: Path | None, simulator: str, stall_prob: float, seed: int, batches: int,
        reset_midway: bool, report: Path | None, fault: str | None) -> None:
    """Simulate the engine of layer CONFIG and compare every output with the fixed-point golden model."""
    from .runner import run_cocotb

    console = Console(stderr=True)
    layer = load_layer(config)
    spec = EngineSpec(layer)
    with tempfile.TemporaryDirectory(prefix="litefly_vec_") as tmp:
        if vectors_file is None:
            vectors_file = Path(tmp) / "vectors.npz"
            save_vectors(make_vectors(layer, seed=seed, count=batches * spec.lanes), vectors_file)
        else:
            load_vectors(vectors_file).quantized(layer)      # checks the file belongs to this config
        params = {"vectors": str(vectors_file), "stall_prob": stall_prob, "seed": seed,
                  "reset_midway": reset_midway, "measure": True, "measure_batches": 4}
        with console.status(f"building and simulating {layer.name} on {simulator}..."):
            res = run_cocotb(layer, "litefly.sim.tb_engine", params, simulator=simulator, fault=fault)
    res["layer"] = layer.name
    res["simulator"] = simulator
    res["config_hash"] = layer.config_hash
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(res, indent=2, default=str) + "\n")
    mm = res.get("mismatch")
    if mm:
        click.echo(f"mismatch: column {mm['column']} element {mm['element']}: expected {mm['expected']}, "
                   f"got {mm['got']} ({mm['count']} wrong elements)", err=True)
        raise SystemExit(1)
    if not res.get("passed"):
        raise LiteflyError(f"simulation failed: {'; '.join(res.get('failures', []))[:300]} (log: {res.get('log')})")
    m = res["measure"]
    table = Table(title=f"{layer.name} on {simulator} (simulated): {res['columns']} columns bit-exact"
                        f"{', stalls p=' + str(stall_prob) if stall_prob else ''}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("MAC lanes", f"{spec.lanes}"),
        (f"cycles per column, whole tile of {m['batches']} batches", f"{m['cycles_per_column']:.2f}"),
        ("MAC utilisation, whole tile", f"{100 * m['mac_utilisation']:.1f}%"),
        ("cycles per column, steady state", f"{m['steady_cycles_per_column']:.2f}"),
        ("MAC utilisation, steady state", f"{100 * m['steady_mac_utilisation']:.1f}%"),
        ("latency START -> first output beat", f"{m['latency_cycles']} cycles"),
    ]
    for k, v in res["counters"].items():
        rows.append((f"counter {k} (vectors run)", str(v)))
    for r in rows:
        table.add_row(*r)
    Console().print(table)

"""The ``litefly bench`` command (click)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from litefly.errors import LiteflyError


@click.command("bench")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["sim", "pynq", "golden"]), default="sim", show_default=True,
              help="sim: cocotb+Verilator engine; pynq: a board; golden: the numpy model (cycles are a model).")
@click.option("--board", "board", type=click.Choice(["pynq-z2", "zcu104"]), default="pynq-z2", show_default=True)
@click.option("--clock-mhz", type=float, default=None, help="Engine clock (default: the board's).")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Images per run.")
@click.option("--input-size", type=(click.IntRange(1), click.IntRange(1)), default=(16, 16), show_default=True,
              metavar="H W", help="Input height and width (conv networks).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and input.")
@click.option("--params", "params_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of <layer>.npz parameter files (litefly.fixed.save_quantized) instead of random weights.")
@click.option("--bitstream-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="pynq: directory with <layer>.bit/.hwh (and <layer>_dense.bit for the dense baseline).")
@click.option("--no-dense", is_flag=True, help="Skip running the dense baseline engines (use the cycle model).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON report here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the roofline/speedup PNG here.")
def bench(config: Path, backend: str, board: str, clock_mhz: float | None, batch: int,
          input_size: tuple[int, int], seed: int, params_dir: Path | None, bitstream_dir: Path | None,
          no_dense: bool, report_path: Path | None, plot_path: Path | None) -> None:
    """Run CONFIG (a layer or network YAML) on an engine and report the speedup over conv2d."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from litefly.config import load_network

    from .bench import plot_report, render_table, run_bench

    if clock_mhz is not None and clock_mhz <= 0:
        raise LiteflyError(f"--clock-mhz {clock_mhz} must be positive")
    network = load_network(config)
    opts = {}
    if bitstream_dir is not None:
        opts["bitstream_dir"] = bitstream_dir
    console = Console(width=max(Console().width, 150))
    n_runs = len(network.layers) * (1 if no_dense else 2)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task(f"{backend}: starting", total=n_runs)

        def step(msg: str) -> None:
            if prog.tasks[0].description != f"{backend}: starting":
                prog.advance(task)
            prog.update(task, description=f"{backend}: {msg}")

        report = run_bench(network, backend=backend, board_name=board, clock_mhz=clock_mhz, batch=batch,
                           input_size=input_size, seed=seed, params_dir=params_dir, dense=not no_dense,
                           progress=step, **opts)
    console.print(render_table(report))
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
        console.print(f"report: {report_path}")
    if plot_path is not None:
        plot_report(report, plot_path)
        console.print(f"plot: {plot_path}")

"""The ``litefly bench`` command (click)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from litefly.cli.envelope_options import envelope_options, merge_option
from litefly.errors import LiteflyError


@click.command("bench")
@click.argument("config", metavar="NETWORK_OR_LAYER", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["sim", "pynq", "golden"]), default="sim", show_default=True,
              help="sim: cocotb+Verilator engine; pynq: a board; golden: the numpy engine model (cycles are the "
                   "cycle model).")
@click.option("--board", "board", type=click.Choice(["pynq-z2", "zcu104"]), default=None,
              help="The board whose clock and default engine envelope the run uses (docs/boards.md); default: "
                   "pynq-z2, or with --backend pynq the board it runs on.")
@click.option("--clock-mhz", type=float, default=None, help="Engine clock (default: the board's).")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True, help="Images per run.")
@click.option("--input-size", type=(click.IntRange(1, 4096), click.IntRange(1, 4096)), default=None,
              metavar="H W", help="Input height and width of a conv network (default: the network's "
                                  "input_size, else 16 16).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and input.")
@click.option("--params", "params_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of <layer>.npz files with chained scales (litefly convert --export, "
                   "litefly.export.save_int8) instead of random weights.")
@click.option("--bitstream-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="pynq: directory with <network>.bit/.hwh (and <network>_dense.bit for the dense baseline); "
                   "default: the bitstream registry's entry for the network engine's hash.")
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Timed runs after the first run's set-up (the report keeps the one with the least host time); "
                   "sim runs once and times the host code on the golden transport.")
@click.option("--no-dense", is_flag=True, help="Do not run the dense baseline network (its cycles come from the "
                                                "cycle model).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON report here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the roofline/speedup PNG here.")
@click.option("--fold-input/--no-fold-input", default=None,
              help="Let the host fold the first layer's kernel rows into its channels where the cycle model "
                   "says that pays (docs/engine.md, \"Folded kernel rows\"), or always send the input as it "
                   "is; default: the network's fold_input (true unless the file says false).")
@click.option("--out-dtype", type=click.Choice(["auto", "float64", "float32"]), default="auto", show_default=True,
              help="What the runtime dequantises the output into: auto, the input's dtype (the bench's input is "
                   "float32, as torch's); float64, exactly the int8 golden network's output; or float32 (half the "
                   "memory the host writes, what torch models take).")
@merge_option
@envelope_options
def bench(config: Path, backend: str, board: str | None, clock_mhz: float | None, batch: int,
          input_size: tuple[int, int] | None, seed: int, params_dir: Path | None, bitstream_dir: Path | None,
          repeats: int, no_dense: bool,
          report_path: Path | None, plot_path: Path | None, fold_input: bool | None, out_dtype: str,
          merge: bool | None, engine: dict[str, int | None]) -> None:
    """Run NETWORK_OR_LAYER (a network or layer YAML) on one network engine, with its dense baseline and
    torch on this CPU, and report host and engine time, traffic and speedups (engine alone and end to end,
    for one batch and per batch of a stream, where the host's work overlaps the engine's)."""
    from litefly.cli.output import console as make_console
    from litefly.config import load_network

    from .bench import plot_report, render_table, run_bench, summary_lines

    if clock_mhz is not None and clock_mhz <= 0:
        raise LiteflyError(f"--clock-mhz {clock_mhz} must be positive")
    network = load_network(config, merge=merge)
    if fold_input is not None:
        network = dataclasses.replace(network, fold_input=fold_input)
    if input_size is None and network.layers[0].kind == "conv2d":
        input_size = network.input_size or (16, 16)
    console = make_console(min_width=150)
    err = make_console(stderr=True)

    def step(msg: str) -> None:
        if err.is_terminal:
            err.print(f"[dim]bench: {msg}[/]")

    report = run_bench(network, backend=backend, board_name=board, clock_mhz=clock_mhz, batch=batch,
                       input_size=input_size, seed=seed, params_dir=params_dir, dense=not no_dense,
                       repeats=repeats, progress=step, out_dtype=out_dtype, **engine,
                       **({"bitstream_dir": bitstream_dir} if bitstream_dir is not None else {}))
    console.print(render_table(report))
    for line in summary_lines(report):
        console.print(line)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2))
        console.print(f"report: {report_path}")
    if plot_path is not None:
        plot_report(report, plot_path)
        console.print(f"plot: {plot_path}")

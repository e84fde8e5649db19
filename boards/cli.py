"""``litefly build`` (Vivado build for a board) and ``litefly synth`` (Yosys resource estimate)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from litefly.config import EngineParams, LayerConfig, load_layer
from litefly.errors import ConfigError

from .boards import BOARDS, get_board

_BOARD = click.option("--board", "board_name", required=True, type=click.Choice(sorted(BOARDS)),
                      help="Target board.")


def with_multipliers(layer: LayerConfig, multipliers: int | None) -> LayerConfig:
    """``layer`` with another multiplier budget (a different engine, so a different config hash)."""
    if multipliers is None:
        return layer
    return replace(layer, engine=EngineParams(multipliers=multipliers, stream_bits=layer.engine.stream_bits))


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@_BOARD
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Build directory to write.")
@click.option("--clock-mhz", type=float, default=None, help="PL clock (default: the board's).")
@click.option("--jobs", type=int, default=4, show_default=True, help="Vivado parallel jobs.")
def build(config: Path, board_name: str, out_dir: Path, clock_mhz: float | None, jobs: int) -> None:
    """Write the engine, build.tcl, constraints and README for CONFIG; run Vivado if it is on PATH."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from .vivado import run_vivado, vivado_path, write_build  # noqa: PLC0415

    console = Console()
    layer = load_layer(config)
    board = get_board(board_name)
    plan = write_build(layer, board, out_dir, clock_mhz=clock_mhz, jobs=jobs)
    console.print(f"wrote {plan.tcl}, {plan.xdc.name}, {plan.readme.name}, manifest.json and rtl/ "
                  f"({layer.name}, config {layer.config_hash[:8]}, {board.name} at {plan.clock_mhz:g} MHz)",
                  soft_wrap=True)
    if vivado_path() is None:
        console.print("Vivado is not on PATH here. On a Vivado machine run:\n"
                      f"  {plan.command}\nthen: litefly bitstreams add {plan.out_dir}", soft_wrap=True)
        return
    with Progress(TextColumn("[bold]vivado[/] {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("starting", total=7)

        def step(i: int, n: int, what: str) -> None:
            progress.update(task, completed=i - 1, total=n, description=what)
        results = run_vivado(plan, on_step=step)
        progress.update(task, completed=progress.tasks[0].total, description="done")
    console.print(f"{layer.name}.bit + .hwh written; Vivado {results['vivado_version']}, "
                  f"WNS {results['wns_ns']} ns, clock {results['clock_mhz_actual']} MHz")
    console.print(f"register it: litefly bitstreams add {plan.out_dir}")


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@_BOARD
@click.option("--multipliers", type=int, default=None, help="Override the config's multiplier budget.")
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the report as JSON.")
@click.option("--no-cache", is_flag=True, help="Rerun Yosys even if a cached result exists.")
def synth(config: Path, board_name: str, multipliers: int | None, json_file: Path | None, no_cache: bool) -> None:
    """Estimate CONFIG's engine resources on a board with Yosys synth_xilinx."""
    from .synth import estimate, render_table  # noqa: PLC0415

    console = Console()
    if json_file and not json_file.resolve().parent.is_dir():
        raise ConfigError(f"--json {json_file}: folder {json_file.parent} does not exist")
    layer = with_multipliers(load_layer(config), multipliers)
    board = get_board(board_name)
    with console.status(f"yosys synth_xilinx -family {board.family} on {layer.name} ...") as status:
        def on_pass(name: str) -> None:
            status.update(f"yosys synth_xilinx -family {board.family} on {layer.name}: {name}")
        report = estimate(layer, board, on_pass=on_pass, use_cache=not no_cache)
    console.print(render_table([report]))
    how = "cached" if report.cached else f"{report.seconds:.0f} s"
    console.print(f"{report.yosys}, {how}; FINN ceilings: LUT 70%, FF 50%, BRAM/URAM/DSP 80%")
    if report.all_muls_on_dsp:
        console.print(f"multipliers: all {len(report.muls)} $mul cells mapped to DSP slices "
                      f"({int(report.used['dsp'])} DSPs, {report.lanes} lanes)")
    else:
        console.print(f"[red]multipliers not on DSPs[/]: {len(report.muls)} $mul cells, "
                      f"{int(report.used['dsp'])} DSPs; candidates: {', '.join(report.unmapped_muls) or '(names lost)'}")
    for note in report.notes:
        console.print(f"note: {note}")
    if json_file:
        json_file.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_file}")

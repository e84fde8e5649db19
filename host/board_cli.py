"""``litefly board``: commands run on the board (board-safe: numpy, click, rich, pynq)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from litefly.boards.boards import BOARDS
from litefly.cli.envelope_options import merge_option


@click.group("board")
def board() -> None:
    """On the board: check the network's overlay bit-exactly and measure it (docs/boards.md)."""


@board.command("check")
@click.argument("config", metavar="NETWORK_OR_LAYER", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["pynq", "sim", "golden"]), default="pynq", show_default=True,
              help="pynq: the board's overlay from the registry; sim: the simulated RTL; golden: the engine model.")
@click.option("--board", "board_name", type=click.Choice(sorted(BOARDS)), default=None,
              help="The board (default: $BOARD or the CPU on a board, pynq-z2 elsewhere).")
@click.option("--batch", type=click.IntRange(1, 4096), default=1, show_default=True, help="Images per run.")
@click.option("--input-size", type=(click.IntRange(1, 4096), click.IntRange(1, 4096)), default=None,
              metavar="H W", help="Input height and width of a conv network (default: the network's input_size).")
@click.option("--params", "params_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory of <layer>.npz files with chained scales (litefly convert --export) instead of "
                   "random weights.")
@click.option("--registry", "registry_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="LITEFLY_BITSTREAMS", help="Bitstream registry (default: $LITEFLY_BITSTREAMS or the "
                                                "package's bitstreams/).")
@click.option("--bitfile", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Load this .bit (its .hwh beside it) instead of looking the engine up in the registry.")
@click.option("--clock-mhz", type=float, default=None, help="Engine clock (default: the bitstream's, else the "
                                                            "board's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights and input.")
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Timed runs after a warm-up (the report keeps the one with the least host time).")
@click.option("--timeout", type=float, default=2.0, show_default=True,
              help="Least DMA wait bound in seconds (it grows with the layer's modelled cycles).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON report here.")
@merge_option
def check(config: Path, backend: str, board_name: str | None, batch: int, input_size: tuple[int, int] | None,
          params_dir: Path | None, registry_root: Path | None, bitfile: Path | None, clock_mhz: float | None,
          seed: int, repeats: int, timeout: float, report_path: Path | None, merge: bool | None) -> None:
    """Load NETWORK_OR_LAYER's engine, check its identity and hash, run the network and every layer
    bit-exact against the int8 golden network, and report the engine's counters, DMA and host time and
    this CPU's own conv2d. Exit 0 if everything is bit-exact, 1 if not, 2 on a one-line error."""
    from litefly.cli.output import console as make_console
    from litefly.config import load_network
    from litefly.errors import LiteflyError

    from .board_check import render_table, run_board_check, summary_lines

    if clock_mhz is not None and clock_mhz <= 0:
        raise LiteflyError(f"--clock-mhz {clock_mhz} must be positive")
    if timeout <= 0:
        raise LiteflyError(f"--timeout {timeout} must be positive")
    if report_path is not None and not report_path.resolve().parent.is_dir():
        raise LiteflyError(f"--report {report_path}: folder {report_path.parent} does not exist")
    network = load_network(config, merge=merge)
    console = make_console(min_width=150)
    err = make_console(stderr=True)

    def step(msg: str) -> None:
        if err.is_terminal:
            err.print(f"[dim]board check: {msg}[/]")

    opts = {"bitfile": bitfile} if bitfile is not None else {}
    report = run_board_check(network, backend=backend, board_name=board_name, batch=batch, input_size=input_size,
                             params_dir=params_dir, seed=seed, clock_mhz=clock_mhz, repeats=repeats,
                             timeout=timeout, registry_root=registry_root, progress=step, **opts)
    console.print(render_table(report))
    for line in summary_lines(report):
        console.print(line, soft_wrap=True)
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {report_path}")
    if not report["passed"]:
        sys.exit(1)


@board.command("info")
@click.argument("config", metavar="[NETWORK_OR_LAYER]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--board", "board_names", type=click.Choice(sorted(BOARDS)), multiple=True,
              help="The board (repeatable; default: every board).")
@click.option("--input-size", type=(click.IntRange(1, 4096), click.IntRange(1, 4096)), default=None,
              metavar="H W", help="Input height and width of a conv network (default: the network's input_size).")
@merge_option
def info(config: Path | None, board_names: tuple[str, ...], input_size: tuple[int, int] | None,
         merge: bool | None) -> None:
    """Each board's facts and default engine envelope; with NETWORK_OR_LAYER, the engine `litefly build
    --board` makes for it there (envelope hash, the one the runtime looks up) and its memory plan's verdict."""
    from rich.table import Table

    from litefly.boards.boards import get_board
    from litefly.boards.memory_plan import plan_memories
    from litefly.cli.output import console as make_console
    from litefly.config import load_network
    from litefly.hw.spec import EngineEnvelope

    network = load_network(config, merge=merge) if config is not None else None
    table = Table(title="litefly boards" + (f": engine of {network.name}" if network else ""))
    for col in ("board", "part", "PL clock MHz (max)", "DSP / BRAM36 / URAM / LUT", "PYNQ", "default envelope"):
        table.add_column(col)
    if network is not None:
        table.add_column("engine (hash)")
        table.add_column("memories (estimate)")
    for name in board_names or sorted(BOARDS):
        b = get_board(name)
        default = ", ".join(f"{k} {str(v).lower() if isinstance(v, bool) else v}" for k, v in b.engine.items())
        row = [b.name, b.part, f"{b.clock_mhz:g} ({b.max_clock_mhz:g})", f"{b.dsp:,} / {b.bram36} / {b.uram} / {b.lut:,}",
               b.pynq_versions, default]
        if network is not None:
            env = EngineEnvelope.for_network(network, input_size, board=b.name)
            plan = plan_memories(env, b)
            row += [f"{env.words} (0x{env.hash32:08x})",
                    f"{plan.bram36:g} BRAM36" + (f", {plan.uram} URAM" if b.uram else "") + f": {plan.verdict(b)}"]
        table.add_row(*row)
    make_console(min_width=120).print(table)

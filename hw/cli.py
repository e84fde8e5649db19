"""``litefly gen``: write the network engine's Verilog and manifest for a network or a layer config."""

from __future__ import annotations

from pathlib import Path

import click

from litefly.boards.boards import BOARDS, get_board
from litefly.boards.memory_plan import plan_memories
from litefly.cli.envelope_options import envelope_options, merge_option
from litefly.config import load_network

from .engine import FAULTS


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--input-size", nargs=2, type=int, default=None, metavar="H W",
              help="Input feature-map size of the network's first conv layer (sizes the frame buffer).")
@envelope_options
@merge_option
@click.option("--board", "board_name", type=click.Choice(sorted(BOARDS)), default=None,
              help="Generate this board's engine, as 'litefly build' does: its default envelope where the network "
                   "and the options are silent, memories placed by its memory plan (ram_style attributes); "
                   "default: no board, the network's own envelope, every memory left to the synthesis tool.")
@click.option("--fault", type=click.Choice(FAULTS), default=None, hidden=True,
              help="Generate a deliberately broken engine (to prove the checker has teeth).")
def gen(config: Path, out_dir: Path, input_size: tuple[int, int] | None, engine: dict[str, int | None],
        board_name: str | None, fault: str | None, merge: bool | None) -> None:
    """Generate DIR/<name>.v and DIR/manifest.json for the network (or single layer) in CONFIG."""
    from .generate import generate
    from .spec import EngineEnvelope

    network = load_network(config, merge=merge)
    envelope = EngineEnvelope.for_network(network, tuple(input_size) if input_size else None, **engine,
                                          board=board_name)
    styles = None
    if board_name:
        styles = plan_memories(envelope, get_board(board_name)).styles
    g = generate(envelope, out_dir, fault=fault, ram_styles=styles)
    env = g.envelope
    click.echo(f"{g.verilog}: module {g.module} ({env.words}; {env.dsps} multipliers), "
               f"{len(network.layers)} layer(s)")
    if styles:
        click.echo(f"memory plan for {board_name}: " + ", ".join(f"{n} {s}" for n, s in sorted(styles.items())))
    click.echo(f"{g.manifest}: max q {env.max_q}, max p {env.max_p}, {env.max_factors} factors, "
               f"{env.weight_beats} weight beats, {env.frame_beats} frame beats, config hash {env.config_hash[:8]}")

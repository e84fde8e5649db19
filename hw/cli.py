"""``litefly gen``: write the engine's Verilog and manifest for a layer config."""

from __future__ import annotations

from pathlib import Path

import click

from litefly.config import load_layer

from .simd_engine import FAULTS


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path), help="Output directory.")
@click.option("--fault", type=click.Choice(FAULTS), default=None, hidden=True,
              help="Generate a deliberately broken engine (to prove the checker has teeth).")
def gen(config: Path, out_dir: Path, fault: str | None) -> None:
    """Generate DIR/<name>.v and DIR/manifest.json for the layer in CONFIG."""
    from .generate import generate

    layer = load_layer(config)
    g = generate(layer, out_dir, fault=fault)
    d = g.manifest_data
    click.echo(f"{g.verilog}: module {g.module}, {d['lanes']} MAC lanes, {d['stream_bits']}-bit streams")
    click.echo(f"{g.manifest}: {d['cycles_per_batch']} cycles per batch of {d['lanes']} columns "
               f"({d['cycles_per_column']:.2f} per column), modelled MAC utilisation "
               f"{100 * d['mac_utilisation_model']:.1f}%, config hash {d['config_hash'][:8]}")

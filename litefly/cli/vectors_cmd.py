"""``litefly vectors``: write fixed-point test vectors for a layer."""

from __future__ import annotations

from pathlib import Path

import click

from litefly.config import load_layer
from litefly.vectors import make_vectors, save_vectors


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same file).")
@click.option("--count", default=64, show_default=True, type=click.IntRange(min=1), help="Input columns.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output .npz file.")
def vectors(config: Path, seed: int, count: int, output: Path) -> None:
    """Write integer and float test vectors of layer CONFIG to an .npz file (keys in the README)."""
    layer = load_layer(config)
    vec = make_vectors(layer, seed=seed, count=count)
    save_vectors(vec, output)
    click.echo(f"wrote {output}: {count} columns, {len(layer.chain)} factors, shifts {list(vec['shifts'])}")

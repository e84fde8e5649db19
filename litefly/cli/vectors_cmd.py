"""``litefly vectors``: write fixed-point test vectors for a layer."""

from __future__ import annotations

from pathlib import Path

import click

from litefly.config import load_layer
from litefly.limits import MAX_DENSE_FACTOR_CELLS, MAX_VECTOR_COUNT, check_limit
from litefly.vectors import make_vectors, save_vectors


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 63 - 1),
              help="Random seed (same seed, same file).")
@click.option("--count", default=64, show_default=True, type=click.IntRange(1, MAX_VECTOR_COUNT),
              help=f"Input columns (at most MAX_VECTOR_COUNT={MAX_VECTOR_COUNT:,}, docs/limits.md).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Output .npz file.")
def vectors(config: Path, seed: int, count: int, output: Path) -> None:
    """Write integer and float test vectors of layer CONFIG to an .npz file (keys in the README)."""
    layer = load_layer(config)
    for i, f in enumerate(layer.chain):   # the file holds each factor as a dense p x q matrix
        check_limit(f"{layer.name}: factor {i + 1}", "p*q (dense matrix in the vectors file)", f.p * f.q,
                    MAX_DENSE_FACTOR_CELLS, "MAX_DENSE_FACTOR_CELLS")
    vec = make_vectors(layer, seed=seed, count=count)
    save_vectors(vec, output)
    click.echo(f"wrote {output}: {count} columns, {len(layer.chain)} factors, shifts {list(vec['shifts'])}")

"""``litefly chain generate``: an automatic mixing chain for a layer size (``litefly.autochain``)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from litefly.autochain import SHAPES, compare_with_published, generate_chain
from litefly.config import LayerConfig
from litefly.errors import ConfigError


def _blocks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(tok) for tok in text.replace(" ", "").split(",") if tok]
    except ValueError:
        raise ConfigError(f"--block-shapes {text!r} must be a comma list of integers, e.g. 2,4,8") from None


@click.command("generate")
@click.option("--in", "in_features", type=int, default=None, help="Input features (linear) or channels (conv).")
@click.option("--out", "out_features", type=int, default=None, help="Output features or channels.")
@click.option("--kernel", default=1, show_default=True, type=int, help="Kernel size: chain input = kernel^2 * in.")
@click.option("--compression", type=float, default=None, help="Target 1 - params/dense, e.g. 0.9.")
@click.option("--shrinking-level", type=int, default=None, help="N: the most compressed chain of exactly N factors.")
@click.option("--shape", type=click.Choice(SHAPES), default="auto", show_default=True,
              help="monotonic widths, bulging (widths up to --bulge x max size), or auto (monotonic if it can).")
@click.option("--block-shapes", default=None, help="Allowed block sizes r and s, e.g. 2,4,8 (default 2..--max-block).")
@click.option("--max-block", default=16, show_default=True, type=int)
@click.option("--max-factors", default=8, show_default=True, type=int)
@click.option("--bulge", default=2.0, show_default=True, type=float)
@click.option("--rshapes", "rshapes_file", type=click.Path(path_type=Path), default=None,
              help="Compare with every line of a published rshapes file instead (same size and compression).")
@click.option("--name", default="generated", show_default=True, help="Layer name for -o.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, help="Write a layer config YAML.")
def generate(in_features: int | None, out_features: int | None, kernel: int, compression: float | None,
             shrinking_level: int | None, shape: str, block_shapes: str | None, max_block: int, max_factors: int,
             bulge: float, rshapes_file: Path | None, name: str, output: Path | None) -> None:
    """Generate a mixing DeBut chain for an IN -> OUT layer and report what it achieves."""
    console = Console(width=max(Console().width, 120))
    opts = dict(shape=shape, block_shapes=_blocks(block_shapes), max_block=max_block, max_factors=max_factors,
                bulge=bulge)
    if rshapes_file is not None:
        _compare(console, rshapes_file, kernel, opts)
        return
    if in_features is None or out_features is None:
        raise ConfigError("give --in and --out (or --rshapes FILE)")
    gen = generate_chain(in_features, out_features, kernel, compression=compression,
                         shrinking_level=shrinking_level, **opts)
    table = Table(title=f"generated chain {gen.in_size} -> {gen.out_size} ({gen.shape})")
    for col in ("factor", escape("[p, q, r, s, t]"), "super-blocks g", "params = MACs/col"):
        table.add_column(col, justify="right")
    for i, f in enumerate(gen.chain):
        table.add_row(str(i + 1), str(f), str(f.blocks), f"{f.params:,}")
    console.print(table)
    console.print(gen.summary())
    console.print(f"rshapes: {gen.rshapes}")
    for note in gen.notes:
        console.print(f"[yellow]note[/]: {note}")
    if output is not None:
        data: dict = {"name": name, "chain": [f.as_list() for f in gen.chain]}
        if kernel == 1:
            data.update(kind="linear", in_features=in_features, out_features=out_features)
        else:
            data.update(kind="conv2d", in_channels=in_features, out_channels=out_features, kernel=kernel,
                        padding=kernel // 2)
        layer = LayerConfig.from_dict(data)
        output.write_text(f"# litefly chain generate: {gen.summary()}\n" + layer.to_yaml())
        console.print(f"wrote {output}")


def _compare(console: Console, path: Path, kernel: int, opts: dict) -> None:
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    lines = [l for l in path.read_text().splitlines() if l.strip()]
    rows = compare_with_published([(l, kernel) for l in lines], **opts)
    table = Table(title=f"generator vs {path.name} (same size, same compression target)")
    for col in ("line", "q -> p", "dense", "pub. params", "pub. N", "pub. peak", "gen. params", "gen. N",
                "gen. peak", "gen/pub"):
        table.add_column(col, justify="right")
    for i, r in enumerate(rows):
        table.add_row(str(i + 1), f"{r['in']} -> {r['out']}", f"{r['dense']:,}", f"{r['published_params']:,}",
                      str(r["published_factors"]), str(r["published_peak"]), f"{r['generated_params']:,}",
                      str(r["generated_factors"]), str(r["generated_peak"]),
                      f"{r['generated_params'] / r['published_params']:.3f}")
    console.print(table)
    console.print("pub. = published chain, gen. = generated for the same size and compression; "
                  "peak = widest intermediate width")

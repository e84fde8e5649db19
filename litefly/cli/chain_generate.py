"""``litefly chain generate``: an automatic mixing chain for a layer size (``litefly.autochain``)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from litefly.autochain import SHAPES, compare_with_published, generate_chain
from litefly.cli.output import console as make_console, print_json
from litefly.config import LayerConfig
from litefly.errors import ConfigError
from litefly.safeio import check_int_token, read_lines, short, short_text, where


def _blocks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    toks = [tok for tok in text.replace(" ", "").split(",") if tok]
    if len(toks) > 64 or not all(t.isdigit() and t.isascii() for t in toks):
        raise ConfigError(f"--block-shapes {short(text, 40)} must be a comma list of at most 64 integers, e.g. 2,4,8")
    return [check_int_token(tok, "--block-shapes") for tok in toks]


def _check_limits(in_features: int | None, out_features: int | None, kernel: int, max_block: int,
                  max_factors: int, bulge: float) -> None:
    """The documented limits (docs/limits.md) on the generator's inputs, each refused in one line."""
    from litefly import limits  # noqa: PLC0415
    wide = limits.MAX_FEATURES if kernel == 1 else limits.MAX_CHANNELS
    for opt, value in (("--in", in_features), ("--out", out_features)):
        if value is not None:
            limits.check_limit("chain generate", opt, value, wide, "MAX_FEATURES" if kernel == 1 else "MAX_CHANNELS")
    limits.check_limit("chain generate", "--kernel", kernel, limits.MAX_KERNEL, "MAX_KERNEL")
    limits.check_limit("chain generate", "--max-block", max_block, limits.MAX_BLOCK, "MAX_BLOCK")
    limits.check_limit("chain generate", "--max-factors", max_factors, limits.MAX_FACTORS, "MAX_FACTORS")
    if not (1.0 <= bulge <= 64.0):
        raise ConfigError(f"chain generate: --bulge={bulge!r} must be in [1, 64]")


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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (for scripts and pipes).")
def generate(in_features: int | None, out_features: int | None, kernel: int, compression: float | None,
             shrinking_level: int | None, shape: str, block_shapes: str | None, max_block: int, max_factors: int,
             bulge: float, rshapes_file: Path | None, name: str, output: Path | None, as_json: bool) -> None:
    """Generate a mixing DeBut chain for an IN -> OUT layer and report what it achieves."""
    console = make_console(min_width=120)
    _check_limits(in_features, out_features, kernel, max_block, max_factors, bulge)
    opts = dict(shape=shape, block_shapes=_blocks(block_shapes), max_block=max_block, max_factors=max_factors,
                bulge=bulge)
    if rshapes_file is not None:
        _compare(console, rshapes_file, kernel, opts, as_json)
        return
    if in_features is None or out_features is None:
        raise ConfigError("give --in and --out (or --rshapes FILE)")
    gen = generate_chain(in_features, out_features, kernel, compression=compression,
                         shrinking_level=shrinking_level, **opts)
    if as_json:
        print_json({"in": gen.in_size, "out": gen.out_size, "shape": gen.shape,
                    "chain": [f.as_list() for f in gen.chain], "params": gen.params, "dense_params": gen.dense_params,
                    "compression": gen.compression, "peak_width": gen.peak_width, "rshapes": gen.rshapes,
                    "notes": list(gen.notes)})
    table = Table(title=f"generated chain {gen.in_size} -> {gen.out_size} ({gen.shape})")
    for col in ("factor", escape("[p, q, r, s, t]"), "super-blocks g", "params = MACs/col"):
        table.add_column(col, justify="right")
    for i, f in enumerate(gen.chain):
        table.add_row(str(i + 1), str(f), str(f.blocks), f"{f.params:,}")
    if not as_json:
        console.print(table)
        console.print(gen.summary())
        console.print(f"rshapes: {gen.rshapes}")
        for note in gen.notes:
            console.print(f"[yellow]note[/]: {escape(note)}")
    if output is not None:
        data: dict = {"name": name, "chain": [f.as_list() for f in gen.chain]}
        if kernel == 1:
            data.update(kind="linear", in_features=in_features, out_features=out_features)
        else:
            data.update(kind="conv2d", in_channels=in_features, out_channels=out_features, kernel=kernel,
                        padding=kernel // 2)
        layer = LayerConfig.from_dict(data)
        output.write_text(f"# litefly chain generate: {gen.summary()}\n" + layer.to_yaml())
        if not as_json:
            console.print(f"wrote {output}")


def _compare(console: Console, path: Path, kernel: int, opts: dict, as_json: bool = False) -> None:
    lines = [l for l in read_lines(path, "rshapes file") if l.strip()]  # size, UTF-8, lines (litefly.safeio)
    from litefly.limits import MAX_COMPARE_LINES, check_limit  # noqa: PLC0415
    check_limit(where(path), "lines to compare", len(lines), MAX_COMPARE_LINES, "MAX_COMPARE_LINES")
    rows = compare_with_published([(l, kernel) for l in lines], **opts)
    table = Table(title=f"generator vs {escape(short_text(path.name, 60))} (same size, same compression target)")
    for col in ("line", "q -> p", "dense", "pub. params", "pub. N", "pub. peak", "gen. params", "gen. N",
                "gen. peak", "gen/pub"):
        table.add_column(col, justify="right")
    for i, r in enumerate(rows):
        table.add_row(str(i + 1), f"{r['in']} -> {r['out']}", f"{r['dense']:,}", f"{r['published_params']:,}",
                      str(r["published_factors"]), str(r["published_peak"]), f"{r['generated_params']:,}",
                      str(r["generated_factors"]), str(r["generated_peak"]),
                      f"{r['generated_params'] / r['published_params']:.3f}")
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "generated"} | {"generated_chain": r["generated"].rshapes}
                    for r in rows])
        return
    console.print(table)
    console.print("pub. = published chain, gen. = generated for the same size and compression; "
                  "peak = widest intermediate width")

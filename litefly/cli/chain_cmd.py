"""``litefly chain``: show a chain config, import a published ``rshapes`` line."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from litefly.config import LayerConfig, MixingWarning, load_config
from litefly.chain import chain_params, parse_rshapes_line
from litefly.cli.chain_generate import generate
from litefly.cli.output import console as make_console, print_json
from litefly.errors import ConfigError
from litefly.limits import MAX_NAME_CHARS
from litefly.safeio import read_lines, short, where


@click.group()
def chain() -> None:
    """Show, import and generate DeBut chains."""


def _layer_table(layer: LayerConfig) -> Table:
    table = Table(title=f"{escape(layer.name)}: {layer.kind} {layer.chain_in} -> {layer.chain_out}"
                        f" (config hash {layer.config_hash[:8]})")
    for col in ("factor", escape("[p, q, r, s, t] or sparse p x q"), "blocks / density", "params = MACs/col",
                "acc bits"):
        table.add_column(col, justify="right")
    n = len(layer.chain)
    for i, f in enumerate(layer.chain):
        table.add_row(str(i + 1), escape(str(f)), _structure(f), f"{f.params:,}",
                      str(layer.format.acc_bits(f, last=(i == n - 1))))
    return table


def _structure(f: Any) -> str:
    """A DeBut factor's super-block count, or a sparse factor's density."""
    return f"{100 * f.params / (f.p * f.q):.1f}%" if f.kind == "sparse" else str(f.blocks)


def _factor_json(f: Any) -> dict[str, Any]:
    if f.kind == "sparse":
        return {"kind": "sparse", "p": f.p, "q": f.q, "nonzeros": f.params, "longest_row": f.s,
                "density": f.params / (f.p * f.q), "concat": f.concat}
    return {"kind": "debut", "pqrst": f.as_list(), "blocks": f.blocks}


def _density(layer: LayerConfig) -> tuple[bool | None, str]:
    """(dense or None if not checked, why not checked)."""
    try:
        return layer.is_dense_product(), ""
    except ConfigError as exc:  # a non-mixing chain beyond DENSITY_CHECK_CELLS
        return None, str(exc)


def _layer_json(layer: LayerConfig) -> dict[str, Any]:
    dense, why = _density(layer)
    n = len(layer.chain)
    return {
        "name": layer.name, "kind": layer.kind, "chain_in": layer.chain_in, "chain_out": layer.chain_out,
        "config_hash": layer.config_hash,
        "factors": [{"factor": i + 1, **_factor_json(f), "params": f.params,
                     "acc_bits": layer.format.acc_bits(f, last=(i == n - 1))} for i, f in enumerate(layer.chain)],
        "params": layer.params, "dense_params": layer.dense_params, "compression": layer.compression,
        "mac_reduction": layer.mac_reduction, "mixing_violations": layer.mixing_violations(),
        "dense_product": dense, **({"dense_product_not_checked": why} if why else {}),
        "format": layer.to_dict()["format"], "engine": layer.to_dict()["engine"],
        **({"merged_from": [_factor_json(f) for f in layer.merged_from],
            "merged_from_params": chain_params(layer.merged_from)} if layer.merged_from else {}),
    }


@chain.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON (for scripts and pipes).")
def show(config: Path, as_json: bool) -> None:
    """Print factors, parameters, MACs, compression and the mixing check of CONFIG."""
    cfg = load_config(config)
    layers = cfg.layers if hasattr(cfg, "layers") else (cfg,)
    if as_json:
        print_json({"config": str(config), "layers": [_layer_json(layer) for layer in layers]})
        return
    console = make_console()
    for layer in layers:
        console.print(_layer_table(layer))
        if layer.merged_from:
            console.print(f"merged (merge: true) from the declared {len(layer.merged_from)} factors: "
                          f"{_merge_summary(layer.merged_from, layer.chain)}")
        console.print(f"parameters {layer.params:,} vs dense {layer.dense_params:,}: "
                      f"{100 * layer.compression:.2f}% compression, {layer.mac_reduction:.2f}x fewer MACs per column")
        broken = layer.mixing_violations()
        dense, why = _density(layer)
        if broken:
            for msg in broken:
                console.print(f"[yellow]mixing rule broken[/]: {msg}")
        elif any(f.kind == "sparse" for f in layer.chain):
            console.print("mixing rule: not applicable (the chain has sparse factors)")
        else:
            console.print("mixing rule: followed")
        if dense is None:
            console.print(f"product of the patterns: not checked ({escape(why)})")
        else:
            console.print(f"product of the patterns: {'dense' if dense else '[red]NOT dense[/]'}")
        fmt = layer.format
        console.print(f"format: int{fmt.act_bits} activations, int{fmt.weight_bits} weights, "
                      f"bias {'on' if fmt.bias else 'off'}, relu {'on' if fmt.relu else 'off'}; "
                      f"engine: {layer.engine.multipliers} multipliers, {layer.engine.stream_bits}-bit stream\n")


def _merge_summary(declared: Any, merged: Any) -> str:
    from litefly.hw.cycles import chain_issue
    return (f"{len(declared)} -> {len(merged)} factors, {chain_params(declared):,} -> "
            f"{chain_params(merged):,} MACs per column, {chain_issue(declared, 2).issue:,} -> "
            f"{chain_issue(merged, 2).issue:,} issue cycles per column on a row-pair engine")


@chain.command()
@click.argument("config", type=click.Path(path_type=Path))
def merge(config: Path) -> None:
    """Show what `merge: true` does to each layer of CONFIG: which adjacent factors run as one
    DeBut factor (their product, with no more MACs), and the MACs and issue cycles it saves."""
    from litefly.merge import merge_chain

    cfg = load_config(config)
    layers = cfg.layers if hasattr(cfg, "layers") else (cfg,)
    console = make_console()
    for layer in layers:
        declared = layer.declared_chain
        plan = merge_chain(declared)
        runs = ", ".join(" * ".join(str(f) for f in reversed(declared[a:b])) + f" = {f}"
                         for f, (a, b) in zip(plan.chain, plan.runs) if b - a > 1)
        console.print(f"{escape(layer.name)}: {_merge_summary(declared, plan.chain)}"
                      + (f"; {escape(runs)}" if runs else "; nothing merges"), soft_wrap=True)
        if not layer.merged_from and plan.merged:
            console.print(f"  (CONFIG does not merge {escape(layer.name)}: set merge: true on the layer or the network)")


@chain.command("import-rshapes")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--line", "line_no", required=True, type=click.IntRange(min=1), help="1-based line number.")
@click.option("--kind", type=click.Choice(["conv2d", "linear"]), default="conv2d", show_default=True)
@click.option("--kernel", default=3, show_default=True, type=click.IntRange(min=1),
              help="Kernel size of a conv2d layer (in channels = q_1 / kernel^2).")
@click.option("--padding", default=None, type=click.IntRange(min=0), help="Default: kernel // 2.")
@click.option("--stride", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--name", default=None, help="Layer name (default: FILE stem + line).")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path))
def import_rshapes(file: Path, line_no: int, kind: str, kernel: int, padding: int | None, stride: int,
                   name: str | None, output: Path) -> None:
    """Import line N of a published rshapes FILE as a layer config."""
    lines = read_lines(file, "rshapes file")  # size, UTF-8 and line count checked (litefly.safeio)
    if line_no > len(lines):
        raise ConfigError(f"{where(file)}: --line {line_no} is past the end (the file has {len(lines)} lines)")
    facts = parse_rshapes_line(lines[line_no - 1], where=f"{where(file)} line {line_no}")
    q1, pn = facts[0].q, facts[-1].p
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"--name {short(name, 40)} is longer than the limit MAX_NAME_CHARS={MAX_NAME_CHARS} "
                          f"(docs/limits.md)")
    name = name or f"{file.stem}_l{line_no}".replace("-", "_")
    data: dict = {"name": name, "kind": kind, "chain": [f.as_list() for f in facts]}
    if kind == "linear":
        data.update(in_features=q1, out_features=pn)
    else:
        if q1 % (kernel * kernel):
            raise ConfigError(f"{where(file)} line {line_no}: q_1={q1} is not a multiple of kernel^2={kernel * kernel}; "
                              f"use --kernel or --kind linear")
        data.update(in_channels=q1 // (kernel * kernel), out_channels=pn, kernel=kernel,
                    padding=kernel // 2 if padding is None else padding, stride=stride)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixingWarning)
        layer = LayerConfig.from_dict(data)
    output.write_text(f"# imported from {file.name} line {line_no}\n" + layer.to_yaml())
    layer.warn_mixing()
    click.echo(f"wrote {output}: {layer.name}, {len(layer.chain)} factors, {layer.params:,} parameters "
               f"({100 * layer.compression:.2f}% compression)")


chain.add_command(generate)

"""``litefly bitstreams``: add, list and show registered bitstreams (one per network engine and board)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from litefly.cli.output import console as output_console

from . import registry

_REGISTRY = click.option("--registry", "root", type=click.Path(path_type=Path, file_okay=False), default=None,
                         envvar="LITEFLY_BITSTREAMS",
                         help="Registry folder (default: $LITEFLY_BITSTREAMS or the repo's bitstreams/).")


@click.group()
def bitstreams() -> None:
    """Manage the registry of built bitstreams."""


@bitstreams.command()
@click.argument("build_dir", type=click.Path(path_type=Path, file_okay=False))
@_REGISTRY
@click.option("--force", is_flag=True, help="Replace an already registered build.")
def add(build_dir: Path, root: Path | None, force: bool) -> None:
    """Register a finished Vivado build BUILD_DIR (from `litefly build` + vivado)."""
    e = registry.add(build_dir, root=root, force=force)
    Console().print(f"added {e.board}/{e.key} -> {e.path}")


@bitstreams.command("list")
@_REGISTRY
def list_(root: Path | None) -> None:
    """List registered bitstreams."""
    table = Table(title=f"bitstreams in {root or registry.default_root()}")
    rows = registry.entries(root)
    for col in ("board", "bitstream", "engine hash", "network (layers)", "clock MHz", "WNS ns", "LUT", "DSP",
                "BRAM36", "Vivado"):
        table.add_column(col, no_wrap=col in ("board", "bitstream", "engine hash"))
    for e in rows:
        res, tim = e.build.get("resources", {}), e.build.get("timing", {})
        res = res if isinstance(res, dict) else {}
        tim = tim if isinstance(tim, dict) else {}
        num = lambda k: f"{res[k]:g}" if isinstance(res.get(k), (int, float)) else "?"  # noqa: E731
        net = e.network.get("name")
        layers = ", ".join(e.layers)
        table.add_row(e.board, e.key, f"0x{e.hash32:08x}", f"{net} ({layers})" if net else "?", f"{e.clock_mhz:g}",
                      str(tim.get("wns_ns")), num("lut"), num("dsp"), num("bram36"), str(e.build.get("vivado_version")))
    output_console().print(table if rows else "no bitstreams registered")


@bitstreams.command()
@click.argument("key")
@_REGISTRY
def show(key: str, root: Path | None) -> None:
    """Show KEY's build.json (KEY: <board>/<name>-<hash8> or <name>-<hash8>) and verify its files."""
    e = registry.find(key, root)
    registry.verify(e)
    click.echo(json.dumps(e.build, indent=2))
    Console().print(f"files verified against build.json ({e.path})")


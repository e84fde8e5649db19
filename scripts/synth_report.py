#!/usr/bin/env python3
"""Yosys resource estimates of network engines at two multiplier budgets on both boards.

    python scripts/synth_report.py [--multipliers 64 200] [--configs vgg_net vgg_conv1 pointnet_fc3]
                                   [--boards pynq-z2 zcu104] [--json out.json] [--markdown out.md]

A config is ``examples/<name>.yaml`` (a network) or ``examples/layers/<name>.yaml`` (a layer:
a one-layer network), or a path. Each (config, budget, board) runs ``litefly synth``'s
estimator on the network engine of the config's envelope (cached per engine hash, so a rerun
is instant). Prints a rich table with the fit verdicts and the $mul -> DSP check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from litefly.boards.boards import get_board
from litefly.boards.cli import network_envelope
from litefly.boards.synth import estimate, render_table
from litefly.config import load_network
from litefly.errors import ConfigError, LiteflyError

ROOT = Path(__file__).resolve().parents[1]


def config_path(name: str) -> Path:
    """``examples/<name>.yaml``, ``examples/layers/<name>.yaml`` or ``name`` as a path."""
    for p in (ROOT / "examples" / f"{name}.yaml", ROOT / "examples" / "layers" / f"{name}.yaml", Path(name)):
        if p.is_file():
            return p
    raise ConfigError(f"no config {name!r} (looked in examples/ and examples/layers/)")


def markdown(reports) -> str:
    rows = ["| engine | mult. budget | board | lanes | LUT | FF | DSP | BRAM36 | URAM | $mul on DSP | verdict | "
            "LUT levels (+carry) | largest fanout | yosys s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for budget, r in reports:
        sh = r.share
        f = lambda k: f"{r.used[k]:g}" + (f" ({sh[k]:.1%})" if sh[k] not in (None, float('inf')) else "")  # noqa: E731
        ok = f"{int(r.used['dsp'])}/{len(r.muls)}" + (" ok" if r.all_muls_on_dsp else " MISSING")
        rows.append(f"| {r.name} | {budget} | {r.board} | {r.lanes} | {f('lut')} | {f('ff')} | {f('dsp')} | "
                    f"{f('bram36')} | {f('uram')} | {ok} | {r.verdict} | {r.path.get('lut_levels')} (+{r.path.get('carry_cells')}) | "
                    f"{(f'`{r.fanout[0][0]}` {r.fanout[0][1]}' if r.fanout else '')} | {r.seconds:.0f} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", "--layers", dest="configs", nargs="+", default=["vgg_net", "pointnet_fc3"],
                    help="networks or layers (a layer is a one-layer network)")
    ap.add_argument("--multipliers", nargs="+", type=int, default=[64, 200])
    ap.add_argument("--boards", nargs="+", default=["pynq-z2", "zcu104"])
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    console = Console()
    reports = []
    try:
        for name in args.configs:
            network = load_network(config_path(name))
            for budget in args.multipliers:
                env = network_envelope(network, multipliers=budget)
                for bname in args.boards:
                    board = get_board(bname)
                    t0 = time.monotonic()
                    with console.status(f"{name} x{budget} on {bname}") as st:
                        r = estimate(env, board, on_pass=lambda p: st.update(f"{name} x{budget} on {bname}: {p}"))
                    r.layers = [lay.name for lay in network.layers]
                    console.print(f"{name} x{budget} {bname}: {r.verdict}, DSP {r.used['dsp']:g}/{len(r.muls)} $mul"
                                  f" ({'cached' if r.cached else f'{time.monotonic() - t0:.0f} s'})")
                    reports.append((budget, r))
    except LiteflyError as exc:
        console.print(f"error: {exc}")
        return 2
    console.print(render_table([r for _, r in reports], title="Yosys synth_xilinx estimates (engine only)"))
    if args.json:
        args.json.write_text(json.dumps([{"multipliers": b, **r.to_dict()} for b, r in reports], indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())

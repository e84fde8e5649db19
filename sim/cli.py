"""``litefly sim``: run random inputs through the simulated network engine and the int8 golden
network; report bit-exactness, cycles against the cycle model, MAC utilisation and counters."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from rich.table import Table

from litefly.boards.boards import BOARDS
from litefly.cli.envelope_options import merge_option

from .tb import STALL_PATTERNS
from .tools import SIMULATORS

FAULTS = ("weight_addr", "rounding", "window_pad", "pool")


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--simulator", type=click.Choice(SIMULATORS), default="verilator", show_default=True)
@click.option("--stall-prob", type=click.FloatRange(0.0, 0.95), default=0.0, show_default=True,
              help="Probability of an idle input cycle and of output back-pressure, each cycle.")
@click.option("--stall", "stall", type=click.Choice(sorted(STALL_PATTERNS)), default=None,
              help="A named stall pattern instead of --stall-prob (e.g. slow_sink: one output beat in four).")
@click.option("--input-size", type=(int, int), default=None, metavar="H W",
              help="Input height and width of a conv network (default: the network's input_size).")
@click.option("--images", default=2, show_default=True, type=click.IntRange(1, 4096), help="Images in the batch.")
@click.option("--seed", default=0, show_default=True, help="Seed of the parameters, the inputs and the stalls.")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write the results as JSON.")
@click.option("--board", "board", type=click.Choice(sorted(BOARDS)), default=None,
              help="Simulate the engine as it is on this board (its default envelope where the network is "
                   "silent: the engine 'litefly build --board' makes); default: the network's own engine.")
@click.option("--fault", type=click.Choice(FAULTS), default=None, hidden=True)
@merge_option
def sim(config: Path, simulator: str, stall_prob: float, stall: str | None, input_size: tuple[int, int] | None,
        images: int, seed: int, report: Path | None, board: str | None, fault: str | None,
        merge: bool | None) -> None:
    """Simulate the network engine of CONFIG (a network or a layer file) on random inputs and
    compare every output with the int8 golden network."""
    from litefly.cli.output import console as output_console
    from litefly.config import load_network
    from litefly.fixed import random_float_weights
    from litefly.host.runtime import NetworkRunner
    from litefly.hw.spec import EngineEnvelope
    from litefly.network import network_forward_int, network_input_shape, plan_network, quantize_network

    from .tools import check_simulator

    check_simulator(simulator)
    net = load_network(config, merge=merge)
    in_shape = network_input_shape(net, input_size)
    steps = plan_network(net, in_shape)
    envelope = EngineEnvelope.for_network(net, in_shape[1:] if net.layers[0].kind == "conv2d" else None, board=board)
    rng = np.random.default_rng(seed)
    xf = rng.standard_normal((images,) + tuple(in_shape))
    weights = {s.name: random_float_weights(s.layer, rng) for s in steps}
    biases = {s.name: rng.standard_normal(s.layer.chain_out) * 0.3 if s.layer.format.bias else None for s in steps}
    params = quantize_network(steps, weights, xf, biases)
    x = params[steps[0].name].quantize_input(xf)
    want = network_forward_int(steps, params, x)
    err = output_console(stderr=True)
    with err.status(f"building and simulating engine {envelope.name} ({envelope.lanes} lanes) on {simulator}..."):
        runner = NetworkRunner(net, params, backend="sim", input_size=in_shape[1:] if in_shape[1:] != (1, 1) else None,
                               envelope=envelope, simulator=simulator, fault=fault, stall_prob=stall_prob, stall=stall,
                               seed=seed)
        y = runner.run_int(x)
    y = np.asarray(y).reshape(want.shape)
    bad = np.argwhere(y != want)
    res = {"network": net.name, "engine": envelope.name, "engine_hash": f"0x{envelope.hash32:08x}", "board": board,
           "simulator": simulator, "images": images, "stall_prob": stall_prob, "stall": stall, "seed": seed,
           "bit_exact": bool(bad.size == 0), "wrong_elements": int(bad.shape[0]), "layers": runner.stats,
           "total": {k: v for k, v in runner.total.items() if k != "host_stage[s]"}}
    if bad.size:
        i = tuple(int(v) for v in bad[0])
        res["first_mismatch"] = {"index": list(i), "expected": int(want[i]), "got": int(y[i])}
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(res, indent=2, default=str) + "\n")
    if bad.size:
        m = res["first_mismatch"]
        click.echo(f"mismatch: output (n, c, y, x)={tuple(m['index'])}: expected {m['expected']}, got {m['got']} "
                   f"({res['wrong_elements']} wrong elements of {want.size})", err=True)
        raise SystemExit(1)
    stalls = f", stalls {stall}" if stall else (f", stalls p={stall_prob}" if stall_prob else "")
    table = Table(title=f"{net.name} on engine {envelope.name} ({envelope.lanes} lanes, {simulator}, simulated): "
                        f"{images} images bit-exact{stalls}")
    for col in ("layer", "cycles", "model cycles", "cycles/model", "MAC util.", "passes", "COLUMNS_DONE",
                "BUSY_CYCLES", "STARVED", "STALLED", "LOAD_CYCLES"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for s in runner.stats:
        c = s["counters"]
        table.add_row(s["layer"], f"{s['cycles']:,}", f"{s['model_cycles']:,}",
                      f"{s['cycles'] / max(1, s['model_cycles']):.3f}",
                      f"{100 * s['mac_cycles'] / max(1, s['cycles']):.1f}%", str(s["passes"]),
                      f"{c['COLUMNS_DONE']:,}", f"{c['BUSY_CYCLES']:,}", f"{c['STARVED_CYCLES']:,}",
                      f"{c['STALLED_CYCLES']:,}", f"{c['LOAD_CYCLES']:,}")
    tot = runner.total
    table.add_row("total", f"{tot['cycles']:,}", f"{sum(s['model_cycles'] for s in runner.stats):,}", "",
                  f"{100 * sum(s['mac_cycles'] for s in runner.stats) / max(1, tot['cycles']):.1f}%",
                  str(sum(s['passes'] for s in runner.stats)), "", "", "", "", "")
    output_console().print(table)
    click.echo(f"engine time at {tot['clock_mhz']:g} MHz (simulated cycles): {1e3 * tot['engine_s']:.3f} ms")

"""``litefly demo``: end-to-end demos (``digits``)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("demo")
def demo() -> None:
    """End-to-end demos (digits)."""


@demo.command("digits")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_digits"),
              show_default=True, help="Where the int8 export, bench.json and summary.json go.")
@click.option("--backend", type=click.Choice(["sim", "golden", "none"]), default="sim", show_default=True,
              help="The network engine that runs the int8 network (one engine, all layers): sim = cocotb + "
                   "Verilator, golden = the engine model; none skips it.")
@click.option("--compression", default=0.95, show_default=True, type=float, help="Per-layer target.")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1), help="Dense training epochs.")
@click.option("--kd-epochs", default=100, show_default=True, type=click.IntRange(min=0))
@click.option("--channels", default=(32, 64), show_default=True, type=(click.IntRange(1), click.IntRange(1)))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--quick", is_flag=True, help="A small, fast run: 400 training and 60 test images, few epochs.")
@click.option("--no-bench", is_flag=True, help="Skip litefly bench.")
@click.option("--bench-batch", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per litefly bench run.")
@click.option("--no-dense-bench", is_flag=True, help="Bench: use the cycle model for the dense baselines.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1))
def digits(out_dir: Path, backend: str, compression: float, epochs: int, kd_epochs: int, channels: tuple[int, int],
           seed: int, quick: bool, no_bench: bool, bench_batch: int, no_dense_bench: bool, threads: int) -> None:
    """Dense CNN -> all-DeBut -> KD -> int8 -> engine, on scikit-learn's handwritten digits."""
    import torch

    from litefly.cli.output import console as make_console
    from litefly.demo_digits import DigitsConfig, render, run_digits_demo
    from litefly.errors import ConfigError

    if not 0.0 <= compression < 1.0:
        raise ConfigError(f"--compression {compression} must be in [0, 1)")
    torch.set_num_threads(threads)
    console = make_console(min_width=150)
    cfg = DigitsConfig(channels=channels, compression=compression, epochs=epochs, kd_epochs=kd_epochs, seed=seed,
                       backend=backend, bench=not no_bench, bench_dense=not no_dense_bench, bench_batch=bench_batch)
    if quick:
        from dataclasses import replace
        cfg = replace(cfg, n_train=400, n_test=60, epochs=min(epochs, 15), kd_epochs=min(kd_epochs, 10))
    res = run_digits_demo(cfg, out_dir, log=lambda m: console.print(m), progress=True)
    for table in render(res):
        console.print(table)
    console.print(f"written: {out_dir}/summary.json, {res.export_dir}/network.yaml"
                  + (f", {out_dir}/bench.json" if res.bench else ""))

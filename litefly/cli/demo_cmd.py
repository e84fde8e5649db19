"""``litefly demo``: end-to-end demos (``digits``, ``pointnet``, ``resnet``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from litefly.cli.envelope_options import Decorator, stack_options


@click.group("demo")
def demo() -> None:
    """End-to-end demos (digits, pointnet, resnet, pixelfly)."""


def _int_tuple(name: str, text: str) -> tuple[int, ...]:
    """``--name``'s comma-separated positive integers (at most 64, each at most ``MAX_CHANNELS``:
    docs/limits.md); a one-line :class:`ConfigError` otherwise."""
    from litefly import limits
    from litefly.errors import ConfigError
    toks = [t.strip() for t in text.split(",")]
    if len(toks) > 64 or not all(t.isascii() and t.isdigit() and len(t) <= limits.MAX_INT_DIGITS for t in toks) \
            or min(int(t) for t in toks) < 1:
        raise ConfigError(f"--{name} {text[:40]!r} must be comma-separated positive integers, e.g. 16,32")
    return tuple(limits.check_limit("demo", f"--{name}", int(t), limits.MAX_CHANNELS, "MAX_CHANNELS") for t in toks)


def _out_backend_options(demo_name: str, files: str, backend: str = "golden") -> Decorator:
    """Every demo's --out (default ``demo_<name>``, holding ``files``) and --backend."""
    return stack_options(
        click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=Path(f"demo_{demo_name}"), show_default=True, help=f"Where {files} go."),
        click.option("--backend", type=click.Choice(["sim", "golden", "none"]), default=backend, show_default=True,
                     help="The network engine that runs the int8 network (one engine, all layers): sim = cocotb + "
                          "Verilator, golden = the engine model; none skips it."))


def _seed_options(quick_help: str) -> Decorator:
    """Every demo's --seed, --seeds, --quick (``quick_help`` says what it shrinks) and --threads."""
    return stack_options(
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--seeds", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Run seeds SEED .. SEED+N-1 (data split, initialisation, training) and print the mean and "
                          "spread of every accuracy (no bench); each run goes to OUT/seed<k>, the table to "
                          "OUT/seeds.json."),
        click.option("--quick", is_flag=True, help=f"A small, fast run: {quick_help}."),
        click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1)))


def _int8_options(qat_epochs: int) -> Decorator:
    """The int8 export's options: --calibration, --qat-epochs (default ``qat_epochs``), --qat-lr."""
    return stack_options(
        click.option("--calibration", type=click.Choice(["max", "mse"]), default="max", show_default=True,
                     help="int8 export: each factor's shift from the largest accumulator (max) or the one with "
                          "the least mean square error, which may clip (mse)."),
        click.option("--qat-epochs", default=qat_epochs, show_default=True, type=click.IntRange(min=0),
                     help="Quantisation-aware distillation epochs before the int8 export: the int8 engine's "
                          "rounding simulated in training (litefly.qat); 0 skips it."),
        click.option("--qat-lr", default=1e-3, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
                     help="Its learning rate (Adam, cosine schedule)."))


@demo.command("digits")
@_out_backend_options("digits", "the int8 export, bench.json and summary.json", backend="sim")
@_seed_options("400 training and 60 test images, few epochs")
@click.option("--compression", default=0.93, show_default=True, type=float, help="Per-layer target.")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1), help="Dense training epochs.")
@click.option("--kd-epochs", default=200, show_default=True, type=click.IntRange(min=0),
              help="Knowledge-distillation fine-tuning epochs (cosine learning-rate schedule).")
@click.option("--kd-alpha", default=0.9, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Distillation: weight of the teacher's soft targets (the rest: cross-entropy on the labels).")
@click.option("--channels", default=(32, 64), show_default=True, type=(click.IntRange(1), click.IntRange(1)))
@click.option("--no-bench", is_flag=True, help="Skip litefly bench.")
@click.option("--bench-batch", default=16, show_default=True, type=click.IntRange(min=1),
              help="Images per litefly bench run.")
@click.option("--no-dense-bench", is_flag=True, help="Bench: use the cycle model for the dense baselines.")
@click.option("--prune", "prune_method", default=None, metavar="METHOD",
              help="Then prune the fine-tuned DeBut network's factors into sparse factors (magnitude, snip or "
                   "synflow), fine-tune again with KD and run the pruned network on the engine.")
@click.option("--sparsity", default=None, metavar="S",
              help="With --prune: the fraction of each layer's DeBut weights removed, 0 < S < 1 (default 0.5).")
@click.option("--prune-scope", default="layer", show_default=True, metavar="SCOPE",
              help="With --prune: layer (each layer to the sparsity) or global (one ranking over the network).")
@click.option("--prune-epochs", default=50, show_default=True, type=click.IntRange(min=0),
              help="With --prune: KD fine-tuning epochs after pruning (after each round).")
@click.option("--prune-rounds", default=1, show_default=True, type=click.IntRange(min=1),
              help="With --prune: gradual pruning in this many prune + fine-tune rounds, each removing "
                   "1 - (1 - S)^(1/rounds) of the weights left.")
@_int8_options(qat_epochs=0)
def digits(out_dir: Path, backend: str, compression: float, epochs: int, kd_epochs: int, kd_alpha: float,
           channels: tuple[int, int],
           seed: int, quick: bool, no_bench: bool, bench_batch: int, no_dense_bench: bool, threads: int,
           seeds: int, prune_method: str | None, sparsity: str | None, prune_scope: str, prune_epochs: int,
           prune_rounds: int, calibration: str, qat_epochs: int, qat_lr: float) -> None:
    """Dense CNN -> all-DeBut -> KD -> int8 -> engine, on scikit-learn's handwritten digits."""

    from litefly.cli.output import console as make_console
    from litefly.demo_digits import DigitsConfig, render, run_digits_demo, run_digits_seeds
    from litefly.errors import ConfigError

    if not 0.0 <= compression < 1.0:
        raise ConfigError(f"--compression {compression} must be in [0, 1)")
    prune_sparsity = 0.5
    if prune_method is None and sparsity is not None:
        raise ConfigError("--sparsity needs --prune METHOD (magnitude, snip or synflow)")
    if prune_method is not None:
        from litefly.prune import parse_method, parse_sparsity
        prune_method = parse_method(prune_method)
        prune_sparsity = parse_sparsity(sparsity) if sparsity is not None else 0.5
    from litefly.prune import SCOPES
    if prune_scope not in SCOPES:
        raise ConfigError(f"--prune-scope {prune_scope[:40]!r} must be one of {', '.join(SCOPES)}")
    console = make_console(min_width=150)
    cfg = DigitsConfig(channels=channels, compression=compression, epochs=epochs, kd_epochs=kd_epochs, alpha=kd_alpha,
                       seed=seed, backend=backend, bench=not no_bench, bench_dense=not no_dense_bench,
                       bench_batch=bench_batch,
                       threads=threads, prune=prune_method, prune_sparsity=prune_sparsity, prune_epochs=prune_epochs,
                       prune_rounds=prune_rounds, prune_scope=prune_scope, calibration=calibration,
                       qat_epochs=qat_epochs, qat_lr=qat_lr)
    if quick:
        from dataclasses import replace
        cfg = replace(cfg, n_train=400, n_test=60, epochs=min(epochs, 15), kd_epochs=min(kd_epochs, 10),
                      prune_epochs=min(prune_epochs, 5), qat_epochs=min(qat_epochs, 2))
    _run_and_print(console, cfg, seeds, out_dir, run_digits_demo, run_digits_seeds, render,
                   "litefly demo digits (sklearn handwritten digits, test set)", "image")


@demo.command("pointnet")
@_out_backend_options("pointnet", "the int8 export and summary.json")
@_seed_options("20/5 clouds per class, 32 points, few epochs")
@click.option("--engine-clouds", type=click.IntRange(min=1), default=None,
              help="Test clouds run on the engine (default: all; a few keep a sim run short).")
@click.option("--points", default=64, show_default=True, type=click.IntRange(min=1), help="Points per cloud.")
@click.option("--train-per-class", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--test-per-class", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--mlp", default="64,64,64,128,1024", show_default=True,
              help="Widths of the shared MLP (1x1 convs over the points), comma-separated; the last is max-pooled.")
@click.option("--head", default="512,256", show_default=True,
              help="Widths of the classifier's hidden linear layers, comma-separated.")
@click.option("--compression", default=0.95, show_default=True, type=float,
              help="Per-layer target of the shared-MLP convs but the one feeding the max pool.")
@click.option("--head-compression", default=0.96, show_default=True, type=float,
              help="Per-layer target of the head's linear layers.")
@click.option("--pool-compression", default=0.95, show_default=True, type=float,
              help="Target of the last shared-MLP layer (its outputs are max-pooled): the densest mixing chain "
                   "within it whose last factor reads >= 2 inputs per output.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1), help="Dense training epochs.")
@click.option("--kd-epochs", default=300, show_default=True, type=click.IntRange(min=0))
@click.option("--kd-lr", default=1e-2, show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="Distillation learning rate (Adam, cosine schedule).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Randomly rotate, scale (0.85-1.15) and jitter (0.01) every training batch: dense training, "
                   "distillation (the teacher sees the same batch) and quantisation-aware epochs.")
@_int8_options(qat_epochs=20)
def pointnet(out_dir: Path, backend: str, engine_clouds: int | None, points: int, train_per_class: int,
             test_per_class: int, mlp: str, head: str, compression: float, head_compression: float, pool_compression: float,
             epochs: int, kd_epochs: int, kd_lr: float, seed: int, seeds: int, augment: bool, quick: bool,
             threads: int, calibration: str, qat_epochs: int, qat_lr: float) -> None:
    """Dense PointNet -> all-DeBut -> KD -> int8 -> engine, on synthetic point clouds (10 shapes)."""
    from dataclasses import replace

    from litefly.cli.output import console as make_console
    from litefly.demo_pointnet import PointNetConfig, render, run_pointnet_demo, run_pointnet_seeds
    from litefly.errors import ConfigError

    if not 0.0 <= compression < 1.0:
        raise ConfigError(f"--compression {compression} must be in [0, 1)")
    for opt, value in (("head-compression", head_compression), ("pool-compression", pool_compression)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"--{opt} {value} must be in [0, 1)")
    console = make_console(min_width=150)
    cfg = PointNetConfig(num_points=points, n_train=train_per_class, n_test=test_per_class,
                         mlp=_int_tuple("mlp", mlp), head=_int_tuple("head", head), compression=compression,
                         head_compression=head_compression, pool_compression=pool_compression, epochs=epochs,
                         kd_epochs=kd_epochs, kd_lr=kd_lr, seed=seed, threads=threads, backend=backend,
                         engine_images=engine_clouds, calibration=calibration, qat_epochs=qat_epochs, qat_lr=qat_lr,
                         augment=augment)
    if quick:
        cfg = replace(cfg, num_points=32, n_train=20, n_test=5, epochs=min(epochs, 3), kd_epochs=min(kd_epochs, 2),
                      sweeps=1, qat_epochs=min(qat_epochs, 1))
    _run_and_print(console, cfg, seeds, out_dir, run_pointnet_demo, run_pointnet_seeds, render,
                   f"litefly demo pointnet (synthetic point clouds, {cfg.num_points} points)", "cloud")


@demo.command("resnet")
@_out_backend_options("resnet", "the int8 export, summary.json and bench.json")
@_seed_options("300 training and 60 test images, few epochs")
@click.option("--engine-images", type=click.IntRange(min=1), default=None,
              help="Test images run on the engine (default: all 360; a few keep a sim run short).")
@click.option("--widths", default="16,32", show_default=True, help="Channels of each stage, comma-separated.")
@click.option("--blocks", default="1,2", show_default=True, help="Basic blocks in each stage, comma-separated.")
@click.option("--compression", default=0.95, show_default=True, type=float, help="Per-layer target.")
@click.option("--epochs", default=40, show_default=True, type=click.IntRange(min=1), help="Dense training epochs.")
@click.option("--kd-epochs", default=60, show_default=True, type=click.IntRange(min=0))
@click.option("--no-bench", is_flag=True, help="Skip litefly bench.")
def resnet(out_dir: Path, backend: str, engine_images: int | None, widths: str, blocks: str, compression: float,
           epochs: int, kd_epochs: int, seed: int, seeds: int, quick: bool, no_bench: bool, threads: int) -> None:
    """Dense ResNet -> all-DeBut -> KD -> int8 (residual adds on the engine) -> engine, on sklearn's digits."""
    from dataclasses import replace

    from litefly.cli.output import console as make_console
    from litefly.demo_resnet import ResNetConfig, render, run_resnet_demo, run_resnet_seeds
    from litefly.errors import ConfigError

    if not 0.0 <= compression < 1.0:
        raise ConfigError(f"--compression {compression} must be in [0, 1)")
    console = make_console(min_width=150)
    cfg = ResNetConfig(widths=_int_tuple("widths", widths), blocks=_int_tuple("blocks", blocks), compression=compression,
                       epochs=epochs, kd_epochs=kd_epochs, seed=seed, threads=threads, backend=backend,
                       engine_images=engine_images, bench=not no_bench)
    if quick:
        cfg = replace(cfg, n_train=300, n_test=60, epochs=min(epochs, 3), kd_epochs=min(kd_epochs, 2), sweeps=1)
    _run_and_print(console, cfg, seeds, out_dir, run_resnet_demo, run_resnet_seeds, render,
                   "litefly demo resnet (sklearn handwritten digits, test set)", "image")


@demo.command("pixelfly")
@_out_backend_options("pixelfly", "the int8 export and summary.json")
@_seed_options("400 training and 60 test images, few epochs")
@click.option("--block-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Pixelfly block size on each layer's smaller side (padded to a power-of-two block count).")
@click.option("--rank", default=2, show_default=True, type=click.IntRange(min=0), help="Rank of the U V term.")
@click.option("--n-factors", default="2", show_default=True, metavar="K",
              help="Butterfly levels of the flat block butterfly mask (a positive integer, or 'all').")
@click.option("--epochs", default=None, type=click.IntRange(min=1),
              help="Dense training epochs (default: the digits demo's).")
@click.option("--kd-epochs", default=100, show_default=True, type=click.IntRange(min=0),
              help="Distillation epochs.")
def pixelfly(out_dir: Path, backend: str, block_size: int, rank: int, n_factors: str, epochs: int | None,
             kd_epochs: int, seed: int, seeds: int, quick: bool, threads: int) -> None:
    """The digits demo's dense CNN -> Pixelfly (S x + U V x, every layer) -> KD -> int8 -> engine."""
    from dataclasses import replace

    from litefly.cli.output import console as make_console
    from litefly.demo_pixelfly import PixelflyDigitsConfig, render, run_pixelfly_demo, run_pixelfly_seeds
    from litefly.errors import ConfigError

    if n_factors == "all":
        levels = None
    elif n_factors.isdigit() and int(n_factors) >= 1:
        levels = int(n_factors)
    else:
        raise ConfigError(f"--n-factors {n_factors[:40]!r} must be a positive integer or 'all'")
    console = make_console(min_width=150)
    cfg = PixelflyDigitsConfig(block_size=block_size, rank=rank, n_factors=levels, seed=seed, backend=backend,
                               threads=threads)
    cfg = replace(cfg, epochs=epochs or cfg.epochs, kd_epochs=kd_epochs)
    if quick:
        cfg = replace(cfg, n_train=400, n_test=60, epochs=min(cfg.epochs, 15), kd_epochs=min(cfg.kd_epochs, 10))
    _run_and_print(console, cfg, seeds, out_dir, run_pixelfly_demo, run_pixelfly_seeds, render,
                   "litefly demo pixelfly (sklearn handwritten digits, test set)", "image")


def _run_and_print(console: Any, cfg: Any, seeds: int, out_dir: Path, run_one: Callable, run_many: Callable,
                   render: Callable, title: str, unit: str) -> None:
    """One demo run and its tables, or ``seeds`` runs and the table of their mean and spread."""
    def log(m: str) -> None:
        console.print(m)
    if seeds > 1:
        from litefly.seeds import render_seeds_table
        runs, summary = run_many(cfg, seeds, out_dir, log=log, progress=True)
        console.print(render_seeds_table(summary, [r.config.seed for r in runs], title))
        console.print(f"engine == int8 golden on every test {unit}: {[r.engine_equal for r in runs]}; "
                      f"written: {out_dir}/seeds.json")
        return
    res = run_one(cfg, out_dir, log=log, progress=True)
    for table in render(res):
        console.print(table)
    console.print(f"written: {out_dir}/summary.json, {res.export_dir}/network.yaml"
                  + (f", {out_dir}/bench.json" if getattr(res, "bench", None) else ""))

"""A ResNet on scikit-learn's handwritten digits, end to end (issue 15, item 5).

Steps (:func:`run_resnet_demo`), as the digits demo: train the dense
:func:`litefly.zoo.resnet_digits` (3x3 stem, basic blocks with batch norm, identity shortcuts
and a 1x1 projection shortcut where the stage changes, global average pool, linear); convert
*every* conv and linear layer to DeBut (:func:`litefly.convert.convert_model`); fine-tune with
knowledge distillation from the dense model; export int8 (:func:`litefly.export.export_int8`:
batch norms folded, each residual ``+`` an ``{op: add}``, the projection's branch an
``{op: input}``, the average pool the host op ``globalavgpool``); classify the test images with
the int8 golden network and with ONE network engine serving every layer through
:class:`litefly.host.runtime.NetworkRunner`, which must agree on every image; then
``litefly bench`` figures for the exported network.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .convert import LayerReport, train_epochs
from .demo_common import (accuracy, accuracy_table, check_backend, convert_and_distill, export_and_classify,
                          model_rows, run_engine_check, run_seeds)
from .errors import LiteflyError
from .utils import deterministic_run

__all__ = ["ResNetConfig", "ResNetResult", "run_resnet_demo", "run_resnet_seeds", "render"]


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that determines a run (the seed chooses the split, initialisation and batches)."""

    widths: tuple[int, ...] = (16, 32)
    blocks: tuple[int, ...] = (1, 2)
    compression: float = 0.95        # per-layer target (layers too small to reach it keep the closest chain)
    epochs: int = 40                 # dense training
    kd_epochs: int = 60              # DeBut fine-tuning with distillation
    lr: float = 3e-3
    kd_lr: float = 1e-2
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    sweeps: int = 5
    seed: int = 0
    threads: int | None = 1
    n_train: int | None = None       # subsets for quick runs
    n_test: int | None = None
    backend: str = "golden"          # engine column: sim | golden | none
    engine_images: int | None = None  # test images run on the engine (None: all)
    bench: bool = True
    bench_batch: int = 16


@dataclass
class ResNetResult:
    config: ResNetConfig
    rows: list[dict[str, Any]]
    layers: list[LayerReport]
    golden_pred: np.ndarray
    engine_pred: np.ndarray | None
    engine_note: str
    engine_equal: bool | None
    export_dir: Path
    network_items: list[Any]
    bench: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_resnet_demo(cfg: ResNetConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                    progress: bool = False) -> ResNetResult:
    """Run the whole demo (deterministic for ``cfg``: :func:`litefly.utils.deterministic_run`);
    writes the int8 export, ``summary.json`` (and ``bench.json``) into ``out_dir``."""
    check_backend(cfg.backend)
    if not 0.0 <= cfg.compression < 1.0:
        raise LiteflyError(f"demo: compression {cfg.compression} must be in [0, 1)")
    if len(cfg.widths) != len(cfg.blocks) or not cfg.widths or min(cfg.widths) < 1 or min(cfg.blocks) < 1 \
            or len(cfg.widths) > 4:
        raise LiteflyError(f"demo: widths {list(cfg.widths)} and blocks {list(cfg.blocks)} must be 1..4 positive "
                           f"numbers each, as many of one as of the other")
    with deterministic_run(cfg.seed, cfg.threads):
        return _run(cfg, Path(out_dir), log, progress)


def _run(cfg: ResNetConfig, out: Path, log: Callable[[str], None], progress: bool) -> ResNetResult:
    import torch.nn.functional as F

    from .demo_digits import train_on_digits
    from .zoo import resnet_digits
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    (xtr, ytr, xte, yte), dense, acc_dense = train_on_digits(
        cfg, resnet_digits(10, widths=cfg.widths, blocks=cfg.blocks),
        lambda m, x, y: train_epochs(m, x, lambda o, idx: F.cross_entropy(o, y[idx]), cfg.epochs, cfg.batch_size,
                                     cfg.lr, seed=cfg.seed, progress=progress, desc="train dense"),
        t, log, "dense ResNet")

    debut, layers, acc_fit, acc_debut = convert_and_distill(dense, xtr, ytr, xte, yte, cfg, t, log, progress)
    x_test = xte.double().numpy()
    network, params, export_dir, golden_logits, acc_golden = export_and_classify(
        debut, xtr, x_test, yte, "resnet_digits_debut", out, t)
    golden_pred = golden_logits.argmax(1)
    items = [s.to_dict() if hasattr(s, "op") else s.name for s in network.steps]
    ops = [s.op for s in network.steps if hasattr(s, "op")]
    log(f"int8 golden: {100 * acc_golden:.2f}% ({len(network.layers)} layers, {ops.count('add')} residual adds, "
        f"{ops.count('input')} branch inputs); export written to {export_dir}")
    engine_pred, engine_equal, note = run_engine_check(network, params, x_test, golden_logits, cfg.backend, (8, 8),
                                                       cfg.engine_images, "images", t, log)

    rows = model_rows(dense, debut, xte[:1], acc_dense, acc_fit, acc_debut)
    p_debut, m_debut = rows[-1]["params"], rows[-1]["macs"]
    acc_engine = None if engine_pred is None else accuracy(engine_pred, yte[:len(engine_pred)])
    rows += [
        {"model": "DeBut int8 golden", "accuracy": acc_golden, "params": p_debut, "macs": m_debut},
        {"model": f"DeBut int8 engine ({cfg.backend})", "accuracy": acc_engine, "params": p_debut, "macs": m_debut},
    ]
    report = None
    if cfg.bench:
        from litefly.host.bench import run_bench
        t1 = time.perf_counter()
        backend = cfg.backend if cfg.backend != "none" else "golden"
        log(f"litefly bench on the exported network ({backend}) ...")
        report = run_bench(network, backend=backend, input_size=(8, 8), batch=cfg.bench_batch,
                           params_dir=export_dir, dense=False)
        t["bench"] = time.perf_counter() - t1
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    t["total"] = time.perf_counter() - t0
    res = ResNetResult(cfg, rows, layers, golden_pred, engine_pred, note, engine_equal, export_dir, items, report, t)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "config": asdict(cfg), "rows": rows, "engine": note, "engine_equals_golden_on_every_image": engine_equal,
        "network": items, "layers": [r.to_dict() for r in layers], "timings_s": t}, indent=2))
    return res


def run_resnet_seeds(cfg: ResNetConfig, seeds: int, out_dir: str | Path, log: Callable[[str], None] = print,
                     progress: bool = False) -> tuple[list[ResNetResult], list[dict[str, Any]]]:
    """The demo for seeds ``cfg.seed .. cfg.seed + seeds - 1`` (each into ``out_dir/seed<k>``,
    without the bench) and :func:`litefly.seeds.summarize_seeds` of their tables (also
    ``out_dir/seeds.json``)."""
    return run_seeds(run_resnet_demo, cfg, seeds, out_dir, log, progress)


def render(res: ResNetResult) -> list:
    """Rich tables: accuracy, parameters and MACs per model, then the bench (every layer)."""
    t = accuracy_table(f"litefly demo resnet (sklearn handwritten digits, test set, seed {res.config.seed})",
                       res.rows, "image",
                       f"engine: {res.engine_note}; engine == int8 golden on every image run: {res.engine_equal}. "
                       f"Params: weights and biases of all conv and linear layers (batch norms fold into them at "
                       f"export).")
    out = [t]
    if res.bench is not None:
        from litefly.host.bench import render_table
        out.append(render_table(res.bench))
    return out

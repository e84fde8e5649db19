"""PointNet on synthetic point clouds (:mod:`litefly.datasets`), end to end.

Steps (:func:`run_pointnet_demo`), as the digits demo: train a dense PointNet without T-Nets
(:func:`litefly.zoo.pointnet_cls`: shared MLPs as 1x1 convs over the ``P x 1`` point column,
conv -> BN -> ReLU, global max pool, FC head); convert *every* conv and linear layer to DeBut
(:func:`litefly.convert.convert_model`); fine-tune with knowledge distillation from the dense
model; fold the batch norms and quantise to int8 with chained scales
(:func:`litefly.export.export_int8`: the max pool over the points becomes the host op
``globalmaxpool``); classify the test clouds with the int8 golden network and with ONE network
engine serving every layer through :class:`litefly.host.runtime.NetworkRunner` (the host runs
the global max pool between the conv layers and the head), which must agree on every cloud.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .convert import LayerReport, train_epochs
from .demo_common import (accuracy, accuracy_table, convert_and_distill, export_and_classify, model_rows, predict,
                          run_engine_check, run_seeds)
from .errors import LiteflyError
from .utils import deterministic_run

__all__ = ["PointNetConfig", "PointNetResult", "load_pointnet_data", "run_pointnet_demo", "run_pointnet_seeds",
           "render"]


@dataclass(frozen=True)
class PointNetConfig:
    """Everything that determines a run (the seed chooses the clouds, initialisation and batches)."""

    num_points: int = 64
    n_train: int = 100               # clouds per class (10 classes)
    n_test: int = 30
    mlp: tuple[int, ...] = (32, 64, 512)
    head: tuple[int, ...] = (128,)
    dropout: float = 0.3
    compression: float = 0.97        # per-layer target
    epochs: int = 30
    kd_epochs: int = 30
    lr: float = 3e-3
    kd_lr: float = 3e-3
    batch_size: int = 32
    temperature: float = 4.0
    alpha: float = 0.7
    sweeps: int = 5
    seed: int = 0
    threads: int | None = 1
    backend: str = "golden"          # engine column: sim | golden | none
    engine_images: int | None = None  # test clouds run on the engine (None: all)


@dataclass
class PointNetResult:
    config: PointNetConfig
    rows: list[dict[str, Any]]
    layers: list[LayerReport]
    golden_pred: np.ndarray
    engine_pred: np.ndarray | None
    engine_note: str
    engine_equal: bool | None
    export_dir: Path
    timings: dict[str, float] = field(default_factory=dict)


def load_pointnet_data(cfg: PointNetConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_train, y_train, x_test, y_test)``: ``(N, 3, P, 1)`` float tensors and int64 labels
    (:func:`litefly.datasets.pointcloud_splits` at ``cfg.seed``)."""
    from .datasets import pointcloud_splits
    xtr, ytr, xte, yte = pointcloud_splits(cfg.n_train, cfg.n_test, cfg.num_points, cfg.seed)
    t = torch.as_tensor
    return t(xtr), t(ytr), t(xte), t(yte)


def run_pointnet_demo(cfg: PointNetConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                      progress: bool = False) -> PointNetResult:
    """Run the whole demo (deterministic for ``cfg``: :func:`litefly.utils.deterministic_run`);
    writes the int8 export and ``summary.json`` into ``out_dir``."""
    if cfg.backend not in ("sim", "golden", "none"):
        raise LiteflyError(f"demo: backend {cfg.backend!r} must be sim, golden or none")
    if cfg.num_points < 1 or cfg.n_train < 1 or cfg.n_test < 1:
        raise LiteflyError(f"demo: num_points={cfg.num_points}, n_train={cfg.n_train} and n_test={cfg.n_test} "
                           f"must be positive")
    with deterministic_run(cfg.seed, cfg.threads):
        return _run(cfg, Path(out_dir), log, progress)


def _run(cfg: PointNetConfig, out: Path, log: Callable[[str], None], progress: bool) -> PointNetResult:
    import torch.nn.functional as F

    from .datasets import SHAPE_CLASSES
    from .zoo import pointnet_cls
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_pointnet_data(cfg)
    k = len(SHAPE_CLASSES)
    log(f"point clouds: {len(xtr)} training and {len(xte)} test clouds of {cfg.num_points} points, {k} classes")
    dense = pointnet_cls(k, cfg.num_points, mlp=cfg.mlp, head=cfg.head, dropout=cfg.dropout)
    train_epochs(dense, xtr, lambda o, idx: F.cross_entropy(o, ytr[idx]), cfg.epochs, cfg.batch_size, cfg.lr,
                 seed=cfg.seed, progress=progress, desc="train dense")
    acc_dense = accuracy(predict(dense, xte), yte)
    t["train dense"] = time.perf_counter() - t0
    log(f"dense PointNet: test accuracy {100 * acc_dense:.2f}% ({t['train dense']:.1f} s)")

    debut, layers, acc_fit, acc_debut = convert_and_distill(dense, xtr, ytr, xte, yte, cfg, t, log, progress)
    x_test = xte.double().numpy()
    network, params, export_dir, golden_logits, acc_golden = export_and_classify(
        debut, xtr, x_test, yte, "pointnet_debut", out, t)
    golden_pred = golden_logits.argmax(1)
    ops = [s.op for s in network.steps if hasattr(s, "op")]
    log(f"int8 golden: {100 * acc_golden:.2f}% (host ops in the network: {', '.join(sorted(set(ops)))}); "
        f"export written to {export_dir}")
    engine_pred, engine_equal, note = run_engine_check(network, params, x_test, golden_logits, cfg.backend,
                                                       (cfg.num_points, 1), cfg.engine_images, "clouds", t, log)

    rows = model_rows(dense, debut, xte[:1], acc_dense, acc_fit, acc_debut)
    p_debut, m_debut = rows[-1]["params"], rows[-1]["macs"]
    acc_engine = None if engine_pred is None else accuracy(engine_pred, yte[:len(engine_pred)])
    rows += [
        {"model": "DeBut int8 golden", "accuracy": acc_golden, "params": p_debut, "macs": m_debut},
        {"model": f"DeBut int8 engine ({cfg.backend})", "accuracy": acc_engine, "params": p_debut, "macs": m_debut},
    ]
    t["total"] = time.perf_counter() - t0
    res = PointNetResult(cfg, rows, layers, golden_pred, engine_pred, note, engine_equal, export_dir, t)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({
        "config": asdict(cfg), "rows": rows, "engine": note, "engine_equals_golden": engine_equal,
        "layers": [r.to_dict() for r in layers], "timings_s": t}, indent=2))
    return res


def run_pointnet_seeds(cfg: PointNetConfig, seeds: int, out_dir: str | Path, log: Callable[[str], None] = print,
                       progress: bool = False) -> tuple[list[PointNetResult], list[dict[str, Any]]]:
    """The demo for seeds ``cfg.seed .. cfg.seed + seeds - 1`` (each into ``out_dir/seed<k>``) and
    :func:`litefly.seeds.summarize_seeds` of their tables (also ``out_dir/seeds.json``)."""
    return run_seeds(run_pointnet_demo, cfg, seeds, out_dir, log, progress)


def render(res: PointNetResult) -> list:
    """Rich tables: accuracy, parameters and MACs per model."""
    cfg = res.config
    return [accuracy_table(
        f"litefly demo pointnet (synthetic point clouds, {cfg.num_points} points, test set, seed {cfg.seed})",
        res.rows, "cloud", f"engine: {res.engine_note}; engine == int8 golden on every cloud run: {res.engine_equal}. "
        f"Params: weights and biases of all conv and linear layers (batch norms fold into them at export).")]

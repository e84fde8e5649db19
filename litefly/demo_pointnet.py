"""PointNet on synthetic point clouds (:mod:`litefly.datasets`), end to end.

Steps (:func:`run_pointnet_demo`), as the digits demo: train a dense PointNet without T-Nets
(:func:`litefly.zoo.pointnet_cls`: shared MLPs as 1x1 convs over the ``P x 1`` point column,
conv -> BN -> ReLU, global max pool, FC head); convert *every* conv and linear layer to DeBut
(:func:`litefly.convert.convert_model`; the layer whose outputs are max-pooled gets its own chain,
:func:`pool_layer_chain`); fine-tune with knowledge distillation from the dense model; fold the
batch norms and quantise to int8 with chained scales (:func:`litefly.export.export_int8`: the
max pool over the points becomes the host op ``globalmaxpool``); classify the test clouds with
the int8 golden network and with ONE network engine serving every layer through
:class:`litefly.host.runtime.NetworkRunner` (the host runs the global max pool between the conv
layers and the head), which must agree on every cloud.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .autochain import chain_widths, mixing_chain
from .chain import Factor
from .convert import ConvertConfig, LayerReport, train_epochs
from .datasets import CloudAugment
from .demo_common import (accuracy, accuracy_table, check_backend, convert_and_distill, export_and_classify,
                          model_rows, predict, quantization_aware, run_engine_check, run_seeds)
from .errors import LiteflyError
from .utils import deterministic_run

__all__ = ["PointNetConfig", "PointNetResult", "load_pointnet_data", "pointnet_convert_config", "pool_layer_chain",
           "run_pointnet_demo",
           "run_pointnet_seeds", "render"]


@dataclass(frozen=True)
class PointNetConfig:
    """Everything that determines a run (the seed chooses the clouds, initialisation and batches)."""

    num_points: int = 64
    n_train: int = 100               # clouds per class (10 classes)
    n_test: int = 30
    mlp: tuple[int, ...] = (64, 64, 64, 128, 1024)   # PointNet's own widths (Qi et al.; no T-Nets)
    head: tuple[int, ...] = (512, 256)
    dropout: float = 0.3
    compression: float = 0.95        # per-layer target (every layer but the one feeding the max pool)
    pool_compression: float = 0.95   # target of the layer feeding the max pool (see pool_layer_chain)
    head_compression: float = 0.96   # per-layer target of the head's linear layers (95.7% fewer in all)
    epochs: int = 30
    kd_epochs: int = 300             # the student underfits augmented clouds: 100 epochs leave it 10 points short
    lr: float = 3e-3
    kd_lr: float = 1e-2
    batch_size: int = 32
    temperature: float = 4.0
    alpha: float = 0.7
    sweeps: int = 5
    seed: int = 0
    threads: int | None = 1
    backend: str = "golden"          # engine column: sim | golden | none
    engine_images: int | None = None  # test clouds run on the engine (None: all)
    calibration: str = "max"         # int8 export: max | mse (litefly.export.export_int8)
    qat_epochs: int = 20             # quantisation-aware distillation before the int8 export (litefly.qat)
    qat_lr: float = 1e-3
    augment: bool = True             # random rotation, scale and jitter of every training batch (dense, KD, QAT)


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


def _divisor_sequences(n: int, k: int, max_block: int) -> list[tuple[int, ...]]:
    """Every ordered ``k``-tuple of integers in ``1..max_block`` whose product is ``n``."""
    if k == 1:
        return [(n,)] if n <= max_block else []
    return [(d,) + rest for d in range(1, min(n, max_block) + 1) if n % d == 0
            for rest in _divisor_sequences(n // d, k - 1, max_block)]


def pool_layer_chain(q: int, p: int, compression: float, max_block: int = 16, max_factors: int = 4
                     ) -> tuple[Factor, ...]:
    """The chain for the ``q -> p`` layer whose outputs are max-pooled over the points.

    The cheapest chains the generator finds for an expanding layer end in a factor with
    ``s = 1`` (``[512, 64, 8, 1, 64]`` for 64 -> 512): every output is then a scaled copy of one
    of ``q`` inputs, and after BN, ReLU and the max over the points the ``p`` global features
    carry only the maximum and minimum of ``q`` numbers. This picks the mixing chain with the
    most parameters within ``(1 - compression) * q * p`` among those whose last factor reads
    ``s >= 2`` inputs per output, no width below ``min(q, p)``, blocks up to ``max_block`` and at
    most ``max_factors`` factors (ties: fewer factors, then narrower). When none fits the budget
    (small layers), the cheapest such chain; :class:`LiteflyError` when there is none at all."""
    budget = (1.0 - compression) * q * p
    best: tuple[tuple[int, int, int], tuple[Factor, ...]] | None = None
    cheapest: tuple[tuple[int, int, int], tuple[Factor, ...]] | None = None
    for k in range(2, max_factors + 1):
        for s in _divisor_sequences(q, k, max_block):
            if s[-1] < 2:
                continue
            for r in _divisor_sequences(p, k, max_block):
                if any(a * b == 1 for a, b in zip(s, r)):
                    continue
                chain = mixing_chain(s, r)
                widths = chain_widths(chain)
                params = sum(f.params for f in chain)
                if min(widths[1:-1]) < min(q, p):
                    continue
                if params <= budget and (best is None or (params, -k, -max(widths)) > best[0]):
                    best = ((params, -k, -max(widths)), chain)
                if cheapest is None or (-params, -k, -max(widths)) > cheapest[0]:
                    cheapest = ((-params, -k, -max(widths)), chain)
    if best is None and cheapest is None:
        raise LiteflyError(f"demo: no mixing chain for the {q} -> {p} pool layer has a last factor reading >= 2 "
                           f"inputs with blocks up to {max_block} and at most {max_factors} factors")
    return (best or cheapest)[1]


def run_pointnet_demo(cfg: PointNetConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                      progress: bool = False) -> PointNetResult:
    """Run the whole demo (deterministic for ``cfg``: :func:`litefly.utils.deterministic_run`);
    writes the int8 export and ``summary.json`` into ``out_dir``."""
    check_backend(cfg.backend)
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
                 seed=cfg.seed, progress=progress, desc="train dense", augment=_augment(cfg, 0))
    acc_dense = accuracy(predict(dense, xte), yte)
    t["train dense"] = time.perf_counter() - t0
    log(f"dense PointNet: test accuracy {100 * acc_dense:.2f}% ({t['train dense']:.1f} s)")

    debut, layers, acc_fit, acc_debut = _convert_and_distill(dense, xtr, ytr, xte, yte, cfg, t, log, progress)
    model = quantization_aware(debut, dense, xtr, ytr, xte, yte, cfg, t, log, progress, augment=_augment(cfg, 2))
    x_test = xte.double().numpy()
    network, params, export_dir, golden_logits, acc_golden = export_and_classify(
        model, xtr, x_test, yte, "pointnet_debut", out, t, cfg.calibration)
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


def _convert_and_distill(dense: torch.nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor,
                         yte: torch.Tensor, cfg: PointNetConfig, t: dict[str, float], log: Callable[[str], None],
                         progress: bool) -> tuple[torch.nn.Module, list[LayerReport], float, float]:
    """Every conv and linear layer to DeBut (the convs at ``cfg.compression``, the head's linear
    layers at ``cfg.head_compression``; the last shared-MLP conv, whose outputs are max-pooled,
    gets :func:`pool_layer_chain` at ``cfg.pool_compression``), then
    knowledge distillation from ``dense``. Returns the DeBut model, the layer reports and the
    test accuracy before and after fine-tuning; ``t`` gets ``convert`` and ``distill`` seconds."""
    return convert_and_distill(dense, xtr, ytr, xte, yte, cfg, t, log, progress,
                               convert=pointnet_convert_config(cfg, dense), augment=_augment(cfg, 1))


def pointnet_convert_config(cfg: PointNetConfig, dense: torch.nn.Module) -> ConvertConfig:
    """The conversion of ``dense`` (a :func:`litefly.zoo.pointnet_cls`): the shared-MLP convs at
    ``cfg.compression``, the head at ``cfg.head_compression``, the max-pooled conv's
    :func:`pool_layer_chain` at ``cfg.pool_compression``."""
    convs = [(n, m) for n, m in dense.features.named_children() if isinstance(m, torch.nn.Conv2d)]
    name, last = convs[-1]
    pool_chain = pool_layer_chain(last.in_channels, last.out_channels, cfg.pool_compression)
    return ConvertConfig(compression=cfg.compression, sweeps=cfg.sweeps, seed=cfg.seed,
                         overrides={"head.*": {"compression": cfg.head_compression},
                                    f"features.{name}": {"chain": [f.as_list() for f in pool_chain]}})


def _augment(cfg: PointNetConfig, stage: int) -> CloudAugment | None:
    """The training-batch augmentation of ``stage`` (0 dense, 1 KD, 2 QAT), or None when off."""
    return CloudAugment(cfg.seed * 3 + stage) if cfg.augment else None


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

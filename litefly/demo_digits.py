"""End-to-end demo on scikit-learn's handwritten digits (1,797 8x8 images, shipped with the package).

Steps (:func:`run_digits_demo`): train a small dense CNN; convert *every* conv and linear
layer to DeBut (:func:`litefly.convert.convert_model`, ALS from the dense weights); fine-tune
with knowledge distillation from the dense model; quantise to int8 calibrating on the
training images with chained scales and export (:func:`litefly.export.export_int8`); classify
the test set with the int8 golden network (:func:`litefly.export.int8_forward`) and with ONE
network engine serving all three layers through the host runtime
(:class:`litefly.host.runtime.NetworkRunner`; ``sim`` = cocotb + Verilator, ``golden`` = the
engine model), which must agree on every image; then ``litefly bench`` figures for the
exported network (:func:`litefly.host.bench.run_bench`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .convert import LayerReport, count_params, distill, model_macs, train_epochs
from .demo_common import (accuracy, accuracy_table, check_backend, convert_and_distill, export_and_classify,
                          model_rows, predict, quantization_aware, run_engine_check, run_seeds)
from .errors import LiteflyError
from .export import export_int8, int8_forward
from .utils import deterministic_run

__all__ = ["DigitsConfig", "DigitsResult", "load_digits_data", "make_cnn", "train_dense", "run_digits_demo", "render",
           "summary_dict", "run_digits_seeds", "train_on_digits"]


@dataclass(frozen=True)
class DigitsConfig:
    """Everything that determines a demo run (seeds fixed)."""

    channels: tuple[int, int] = (32, 64)
    compression: float = 0.93        # per-layer target (0.95: the worst seed more than 1 point below dense on an
                                     # AVX2 CPU; docs/models.md section 4)
    epochs: int = 40                 # dense training
    kd_epochs: int = 200             # DeBut fine-tuning with distillation (100 epochs: worst seed more than
                                     # 1 point below dense; docs/models.md section 4)
    lr: float = 3e-3
    kd_lr: float = 1e-2
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.9               # weight of the teacher's soft targets (0.7 with the 0.95 target before)
    sweeps: int = 10
    seed: int = 0
    n_train: int | None = None       # subsets for quick runs
    n_test: int | None = None
    backend: str = "sim"             # engine column: sim | golden | none
    bench: bool = True
    bench_dense: bool = True         # run the dense baseline engines in the bench (else: cycle model)
    bench_batch: int = 16            # images per bench run (fills the engine's lanes on the linear layer)
    threads: int | None = 1          # torch threads during the run (None: leave as is)
    prune: str | None = None         # prune the fine-tuned DeBut network: magnitude | snip | synflow
    prune_sparsity: float = 0.5      # fraction of each layer's DeBut weights removed (additional sparsity)
    prune_epochs: int = 50           # KD fine-tuning after pruning (after each round)
    prune_rounds: int = 1            # gradual pruning: this many prune + fine-tune rounds, each removing
                                     # 1 - (1 - prune_sparsity)^(1/rounds) of what is left
    prune_scope: str = "layer"       # layer | global (litefly.prune.PruneConfig.scope)
    calibration: str = "max"         # int8 export: max | mse (litefly.export.export_int8)
    qat_epochs: int = 0              # quantisation-aware distillation before each int8 export (litefly.qat)
    qat_lr: float = 1e-3


@dataclass
class DigitsResult:
    config: DigitsConfig
    rows: list[dict[str, Any]]                     # model, accuracy, params, MACs
    layers: list[LayerReport]
    golden_pred: np.ndarray
    engine_pred: np.ndarray | None
    engine_note: str
    engine_equal: bool | None
    bench: dict[str, Any] | None = None
    export_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prune: list | None = None                      # litefly.prune.PruneReport per layer, when pruned


def load_digits_data(seed: int = 0, test_size: float = 0.2):
    """``(x_train, y_train, x_test, y_test)``: NCHW float tensors in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=test_size, random_state=seed, stratify=d.target)
    t = torch.as_tensor
    return t(xtr), t(ytr, dtype=torch.long), t(xte), t(yte, dtype=torch.long)


def make_cnn(c1: int = 16, c2: int = 64, classes: int = 10) -> nn.Sequential:
    """conv3x3(1->c1) relu pool2, conv3x3(c1->c2) relu pool2, flatten, linear(4*c2 -> classes)."""
    from collections import OrderedDict
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, c1, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(c1, c2, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(4 * c2, classes)))


def train_dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                seed: int) -> None:
    """Plain cross-entropy training (:func:`litefly.convert.train_epochs`)."""
    import torch.nn.functional as F
    train_epochs(model, x, lambda out, idx: F.cross_entropy(out, y[idx]), epochs, batch_size, lr, seed=seed)


def train_on_digits(cfg: Any, dense: nn.Module, train: Callable[[nn.Module, torch.Tensor, torch.Tensor], Any],
                    t: dict[str, float], log: Callable[[str], None], what: str
                    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], nn.Module, float]:
    """The digits split of ``cfg.seed`` (``cfg.n_train``/``cfg.n_test``), ``dense`` trained on it by
    ``train(model, x, y)`` and its test accuracy, logged; the time goes to ``t["train dense"]``."""
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = digits_subset(cfg.seed, cfg.n_train, cfg.n_test)
    log(f"digits: {len(xtr)} training and {len(xte)} test images of 8x8")
    train(dense, xtr, ytr)
    acc_dense = accuracy(predict(dense, xte), yte)
    t["train dense"] = time.perf_counter() - t0
    log(f"{what}: test accuracy {100 * acc_dense:.2f}% ({t['train dense']:.1f} s)")
    return (xtr, ytr, xte, yte), dense, acc_dense


def digits_subset(seed: int, n_train: int | None, n_test: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`load_digits_data` at ``seed``, cut to the first ``n_train`` / ``n_test`` images when given."""
    xtr, ytr, xte, yte = load_digits_data(seed)
    if n_train:
        xtr, ytr = xtr[:n_train], ytr[:n_train]
    if n_test:
        xte, yte = xte[:n_test], yte[:n_test]
    return xtr, ytr, xte, yte


def run_digits_demo(cfg: DigitsConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                    progress: bool = False) -> DigitsResult:
    """Run the whole demo; writes the int8 export (and bench report) into ``out_dir``.
    ``progress`` shows a progress bar for the fine-tuning.

    Deterministic for a given ``cfg`` (:func:`litefly.utils.deterministic_run`: seeded random,
    numpy and torch, ``cfg.threads`` torch threads, deterministic algorithms; the seed also
    chooses the train/test split). Torch's settings are restored afterwards."""
    check_backend(cfg.backend)
    if cfg.prune is not None:
        from .prune import PruneConfig
        PruneConfig(cfg.prune, cfg.prune_sparsity, scope=cfg.prune_scope)     # one-line errors before training
        if isinstance(cfg.prune_rounds, bool) or not isinstance(cfg.prune_rounds, int) or cfg.prune_rounds < 1:
            raise LiteflyError(f"demo: prune_rounds={cfg.prune_rounds!r} must be a positive integer")
    with deterministic_run(cfg.seed, cfg.threads):
        return _run_digits(cfg, out_dir, log, progress)


def _run_digits(cfg: DigitsConfig, out_dir: str | Path, log: Callable[[str], None], progress: bool) -> DigitsResult:
    out = Path(out_dir)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    (xtr, ytr, xte, yte), dense, acc_dense = train_on_digits(
        cfg, make_cnn(*cfg.channels),
        lambda m, x, y: train_dense(m, x, y, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed), t, log, "dense CNN")

    debut, layers, acc_fit, acc_debut = convert_and_distill(dense, xtr, ytr, xte, yte, cfg, t, log, progress)
    debut = quantization_aware(debut, dense, xtr, ytr, xte, yte, cfg, t, log, progress)

    x_test = xte.double().numpy()
    model, prune_rows, prune_reports, name = debut, [], None, "digits_debut"
    if cfg.prune is not None:
        model, prune_rows, prune_reports = _prune(cfg, debut, dense, xtr, ytr, xte, yte, x_test, t, log)
        name = "digits_debut_pruned"
    network, params, export_dir, golden_logits, acc_golden = export_and_classify(model, xtr, x_test, yte, name, out, t,
                                                                                 cfg.calibration)
    golden_pred = golden_logits.argmax(1)
    log(f"int8 golden: {100 * acc_golden:.2f}%; export written to {export_dir}")
    engine_pred, engine_equal, note = run_engine_check(network, params, x_test, golden_logits, cfg.backend,
                                                       tuple(x_test.shape[2:]), None, "images", t, log)

    # parameters (weights and biases) and MACs of each model: every conv and linear layer counted
    rows = model_rows(dense, debut, xte[:1], acc_dense, acc_fit, acc_debut)
    p_debut, m_debut = rows[-1]["params"], rows[-1]["macs"]
    p_run, m_run = count_params(model, include_bias=True), model_macs(model, xte[:1])
    what = "DeBut" if cfg.prune is None else f"DeBut pruned {100 * cfg.prune_sparsity:g}% ({cfg.prune})"
    rows += [
        *[dict(r, params=p_debut if r["model"].startswith("DeBut int8") else p_run,
               macs=m_debut if r["model"].startswith("DeBut int8") else m_run) for r in prune_rows],
        {"model": f"{what} int8 golden", "accuracy": acc_golden, "params": p_run, "macs": m_run},
        {"model": f"{what} int8 engine ({cfg.backend})",
         "accuracy": None if engine_pred is None else accuracy(engine_pred, yte), "params": p_run,
         "macs": m_run},
    ]
    report = None
    if cfg.bench:
        from litefly.host.bench import run_bench
        backend = cfg.backend if cfg.backend != "none" else "golden"
        t1 = time.perf_counter()
        log(f"litefly bench on the exported network ({backend}) ...")
        report = run_bench(network, backend=backend, input_size=(8, 8), batch=cfg.bench_batch, params_dir=export_dir,
                           dense=cfg.bench_dense)
        t["bench"] = time.perf_counter() - t1
        (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    t["total"] = time.perf_counter() - t0
    res = DigitsResult(cfg, rows, layers, golden_pred, engine_pred, note, engine_equal, report, export_dir, t,
                       prune_reports)
    (out / "summary.json").write_text(json.dumps(summary_dict(res), indent=2))
    return res


def _prune(cfg: DigitsConfig, debut: nn.Module, dense: nn.Module, xtr: torch.Tensor, ytr: torch.Tensor,
           xte: torch.Tensor, yte: torch.Tensor, x_test: np.ndarray, t: dict[str, float],
           log: Callable[[str], None]) -> tuple[nn.Module, list[dict[str, Any]], list]:
    """Prune the fine-tuned DeBut network (:func:`litefly.prune.prune_model`) and fine-tune it with
    distillation from the dense one. Returns the pruned model, its accuracy rows (the unpruned
    network's int8 golden first: the baseline of the pruning target) and the per-layer report."""
    from .prune import PruneConfig, prune_model
    t1 = time.perf_counter()
    net0, params0 = export_int8(debut, xtr, name="digits_debut", calibration=cfg.calibration)
    acc_int8 = accuracy(int8_forward(net0, params0, x_test).argmax(1), yte)
    step = 1.0 - (1.0 - cfg.prune_sparsity) ** (1.0 / cfg.prune_rounds)
    pruned = debut
    for k in range(cfg.prune_rounds):
        pruned, reports = prune_model(pruned, PruneConfig(cfg.prune, step, scope=cfg.prune_scope), data=(xtr, ytr),
                                      example_input=xtr[:1])
        if k == 0:
            first, acc_init = reports, accuracy(predict(pruned, xte), yte)
        distill(pruned, dense, xtr, ytr, epochs=cfg.prune_epochs, batch_size=cfg.batch_size, lr=cfg.kd_lr,
                temperature=cfg.temperature, alpha=cfg.alpha, seed=cfg.seed + k)
    reports = [replace(r, before=f.before, target=cfg.prune_sparsity) for f, r in zip(first, reports)]
    acc_tuned = accuracy(predict(pruned, xte), yte)
    t["prune"] = time.perf_counter() - t1
    pruned = quantization_aware(pruned, dense, xtr, ytr, xte, yte, cfg, t, log, False, what="pruned DeBut")
    what = f"DeBut pruned {100 * cfg.prune_sparsity:g}% ({cfg.prune})"
    log(f"unpruned DeBut int8 golden {100 * acc_int8:.2f}%; {what}: "
        + ", ".join(f"{r.name} {sum(r.after)}/{sum(r.before)}" for r in reports)
        + f"; {100 * acc_init:.2f}% after the first prune and {100 * acc_tuned:.2f}% after fine-tuning"
        + (f" ({cfg.prune_rounds} rounds)" if cfg.prune_rounds > 1 else "") + f" ({t['prune']:.1f} s)")
    rows = [{"model": "DeBut int8 golden", "accuracy": acc_int8},
            {"model": f"{what} float (no fine-tuning)", "accuracy": acc_init},
            {"model": f"{what} float (KD fine-tuned)", "accuracy": acc_tuned}]
    return pruned, rows, reports


def summary_dict(res: DigitsResult) -> dict[str, Any]:
    from dataclasses import asdict
    return {
        "config": asdict(res.config), "rows": res.rows, "engine": res.engine_note,
        "engine_equals_golden_on_every_image": res.engine_equal,
        "layers": [r.to_dict() for r in res.layers],
        "prune": None if res.prune is None else [r.to_dict() for r in res.prune],
        "bench_total": None if res.bench is None else {k: v for k, v in res.bench["total"].items()
                                                       if not isinstance(v, dict)},
        "timings_s": res.timings,
    }


def render(res: DigitsResult):
    """Rich tables: accuracy/params/MACs per model, then the bench speedups."""
    t = accuracy_table("litefly demo digits (sklearn handwritten digits, test set)", res.rows, "image",
                       f"engine: {res.engine_note}; engine == int8 golden on every image: {res.engine_equal}. "
                       f"Params: weights and biases of all conv and linear layers; MACs per image.")
    out = [t]
    if res.bench is not None:
        from litefly.host.bench import render_table
        out.append(render_table(res.bench))
    return out


def run_digits_seeds(cfg: DigitsConfig, seeds: int | list[int], out_dir: str | Path,
                     log: Callable[[str], None] = print, progress: bool = False
                     ) -> tuple[list[DigitsResult], list[dict[str, Any]]]:
    """The demo once per seed (``seeds`` = a count, meaning ``cfg.seed, cfg.seed + 1, ...``, or a
    list), each into ``out_dir/seed<k>``, without the bench. Returns the runs and
    :func:`litefly.seeds.summarize_seeds` of their accuracy tables (also in ``out_dir/seeds.json``)."""
    return run_seeds(run_digits_demo, cfg, seeds, out_dir, log, progress)

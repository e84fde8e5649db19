"""The steps the demos share (digits CNN, ResNet, PointNet): convert and distil, export int8 and
classify with the golden network, run ONE network engine and check it equals the golden, the
accuracy rows and table, and the run over several seeds."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .convert import ConvertConfig, LayerReport, convert_model, count_params, distill, model_macs
from .errors import LiteflyError
from .export import export_int8, int8_forward, save_int8

__all__ = ["BACKENDS", "check_backend", "predict", "accuracy", "convert_and_distill", "distill_and_score",
           "quantization_aware", "export_and_classify", "run_engine_check", "model_rows", "accuracy_table",
           "run_seeds"]

Log = Callable[[str], None]
Augment = Callable[[torch.Tensor], torch.Tensor]      # a batch transform (litefly.datasets.CloudAugment)


BACKENDS = ("sim", "golden", "none")


def check_backend(backend: str) -> None:
    """A demo's engine backend: ``sim`` (Verilator), ``golden`` (the engine model) or ``none``."""
    if backend not in BACKENDS:
        raise LiteflyError(f"demo: backend {backend!r} must be sim, golden or none")


def predict(model: torch.nn.Module, x: torch.Tensor, chunk: int = 256) -> np.ndarray:
    """Class predictions of ``model`` (eval mode, no gradients) on ``x``, ``chunk`` samples at a time."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + chunk]) for i in range(0, len(x), chunk)]).argmax(1).numpy()


def accuracy(pred: np.ndarray, y: torch.Tensor) -> float:
    return float(np.mean(np.asarray(pred) == y.numpy()))


def convert_and_distill(dense: torch.nn.Module, xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor,
                        yte: torch.Tensor, cfg: Any, t: dict[str, float], log: Log, progress: bool,
                        convert: ConvertConfig | None = None, augment: Augment | None = None
                        ) -> tuple[torch.nn.Module, list[LayerReport], float, float]:
    """Every conv and linear layer of ``dense`` to DeBut (``convert``, by default ``cfg.compression``
    and ``cfg.sweeps`` for every layer), then knowledge distillation from ``dense``
    (``cfg.kd_epochs``, ``kd_lr``, ``batch_size``, ``temperature``, ``alpha``; ``augment``: see
    :func:`litefly.convert.distill`). Returns the DeBut
    model, the layer reports and the test accuracy before and after fine-tuning; ``t`` gets the
    ``convert`` and ``distill`` seconds."""
    t1 = time.perf_counter()
    convert = convert or ConvertConfig(compression=cfg.compression, sweeps=cfg.sweeps, seed=cfg.seed)
    debut, layers = convert_model(dense, convert, example_input=xte[:1])
    acc_fit = accuracy(predict(debut, xte), yte)
    t["convert"] = time.perf_counter() - t1
    log("converted: " + ", ".join(f"{r.name} {r.params}/{r.dense_params} params, rel. error {r.rel_error:.3f}"
                                  for r in layers) + f"; accuracy before fine-tuning {100 * acc_fit:.2f}%")
    acc_debut = distill_and_score(debut, dense, xtr, ytr, xte, yte, cfg, t, log, progress, "DeBut", augment)
    return debut, layers, acc_fit, acc_debut


def distill_and_score(model: torch.nn.Module, dense: torch.nn.Module, xtr: torch.Tensor, ytr: torch.Tensor,
                      xte: torch.Tensor, yte: torch.Tensor, cfg: Any, t: dict[str, float], log: Log, progress: bool,
                      what: str, augment: Augment | None = None) -> float:
    """Knowledge distillation of ``model`` from ``dense`` (``cfg.kd_epochs``, ``kd_lr``, ``batch_size``,
    ``temperature``, ``alpha``, ``seed``; ``augment``: see :func:`litefly.convert.distill`), logged;
    returns the test accuracy after it and puts the seconds in ``t["distill"]``."""
    t1 = time.perf_counter()
    distill(model, dense, xtr, ytr, epochs=cfg.kd_epochs, batch_size=cfg.batch_size, lr=cfg.kd_lr,
            temperature=cfg.temperature, alpha=cfg.alpha, seed=cfg.seed, progress=progress, augment=augment)
    acc = accuracy(predict(model, xte), yte)
    t["distill"] = time.perf_counter() - t1
    log(f"{what} after distillation: {100 * acc:.2f}% ({t['distill']:.1f} s)")
    return acc


def quantization_aware(model: torch.nn.Module, dense: torch.nn.Module, xtr: torch.Tensor, ytr: torch.Tensor,
                       xte: torch.Tensor, yte: torch.Tensor, cfg: Any, t: dict[str, float], log: Log,
                       progress: bool, what: str = "DeBut", augment: Augment | None = None) -> torch.nn.Module:
    """``cfg.qat_epochs`` epochs of quantisation-aware distillation from ``dense`` at ``cfg.qat_lr``
    (:func:`litefly.qat.qat_distill`, the int8 grids of ``cfg.calibration`` on ``xtr``) of ``model``
    with its batch norms folded (:func:`litefly.fold.fold_batchnorms`, a copy); ``model`` itself
    when ``cfg.qat_epochs`` is 0. Returns the model to export; ``t`` gets the seconds, summed over
    calls, as ``qat``."""
    if not cfg.qat_epochs:
        return model
    from .fold import fold_batchnorms
    from .qat import qat_distill
    t1 = time.perf_counter()
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model = fold_batchnorms(model)
    qat_distill(model, dense, xtr, ytr, cfg.qat_epochs, calibration=cfg.calibration, progress=progress,
                batch_size=cfg.batch_size, lr=cfg.qat_lr, temperature=cfg.temperature, alpha=cfg.alpha, seed=cfg.seed,
                augment=augment)
    acc = accuracy(predict(model, xte), yte)
    t["qat"] = t.get("qat", 0.0) + time.perf_counter() - t1
    log(f"{what} after {cfg.qat_epochs} quantisation-aware epochs: float {100 * acc:.2f}% "
        f"({time.perf_counter() - t1:.1f} s)")
    return model


def export_and_classify(model: torch.nn.Module, xtr: torch.Tensor, x_test: np.ndarray, yte: torch.Tensor,
                        name: str, out: Path, t: dict[str, float], calibration: str = "max"
                        ) -> tuple[Any, dict, Path, np.ndarray, float]:
    """Export ``model`` int8 (calibrated on ``xtr``, ``calibration`` as in :func:`litefly.export.export_int8`)
    into ``out/int8`` and classify ``x_test`` with the int8 golden network:
    ``(network, params, export_dir, golden logits, golden accuracy)``."""
    t1 = time.perf_counter()
    network, params = export_int8(model, xtr, name=name, calibration=calibration)
    export_dir = out / "int8"
    save_int8(network, params, export_dir)
    golden_logits = int8_forward(network, params, x_test)
    acc_golden = accuracy(golden_logits.argmax(1), yte)
    t["quantise"] = time.perf_counter() - t1
    return network, params, export_dir, golden_logits, acc_golden


def run_engine_check(network: Any, params: dict, x_test: np.ndarray, golden_logits: np.ndarray, backend: str,
                     input_size: tuple[int, int], n: int | None, unit: str, t: dict[str, float], log: Log
                     ) -> tuple[np.ndarray | None, bool | None, str]:
    """The first ``n`` (None: all) of ``x_test`` through ONE network engine serving every layer
    (:class:`~litefly.host.runtime.NetworkRunner` on ``backend``); :class:`LiteflyError` unless its
    logits equal the golden ones. Returns ``(predictions, equal, note)``; ``(None, None, note)``
    for backend ``none``."""
    if backend == "none":
        return None, None, "not run (--backend none)"
    from litefly.host.runtime import NetworkRunner
    n = len(x_test) if n is None else min(n, len(x_test))
    t1 = time.perf_counter()
    runner = NetworkRunner(network, params, backend=backend, input_size=input_size)
    env = runner.envelope
    log(f"running {n} test {unit} through one engine ({env.name} 0x{env.hash32:08x}, {len(network.layers)} "
        f"layers, {backend} backend) ...")
    try:
        logits = runner.run(x_test[:n])
    finally:
        runner.close()
    t["engine"] = time.perf_counter() - t1
    pred = logits.argmax(1)
    equal = bool(np.array_equal(logits, golden_logits[:n]))
    ops = [s["host_op"] for s in runner.stats if s.get("host_op")]
    note = (f"{'simulated engine (cocotb + Verilator)' if backend == 'sim' else 'engine model (golden)'}: "
            f"one engine 0x{env.hash32:08x} serves all {len(runner.stats)} layers on {n} {unit}, "
            f"{sum(int(s['cycles']) for s in runner.stats):,} engine cycles, "
            f"{runner.total.get('transfers', 0)} DMA transfers"
            + "".join(f", host {op['op']} {op['host[s]'] * 1e6:,.0f} us" for op in ops) + f", {t['engine']:.0f} s wall")
    log(note)
    if not equal:
        bad = np.flatnonzero(pred != golden_logits[:n].argmax(1))
        raise LiteflyError(f"demo: engine output differs from the int8 golden model on {len(bad)} test {unit} "
                           f"(first: {bad[:5].tolist()})")
    return pred, equal, note


def model_rows(dense: torch.nn.Module, debut: torch.nn.Module, example: torch.Tensor, acc_dense: float,
               acc_fit: float, acc_debut: float) -> list[dict[str, Any]]:
    """The accuracy rows of the float models, with parameters (weights and biases of every conv and
    linear layer) and MACs per sample."""
    p_dense, m_dense = count_params(dense, include_bias=True), model_macs(dense, example)
    p_debut, m_debut = count_params(debut, include_bias=True), model_macs(debut, example)
    return [
        {"model": "dense float", "accuracy": acc_dense, "params": p_dense, "macs": m_dense},
        {"model": "DeBut float (ALS init, no fine-tuning)", "accuracy": acc_fit, "params": p_debut, "macs": m_debut},
        {"model": "DeBut float (KD fine-tuned)", "accuracy": acc_debut, "params": p_debut, "macs": m_debut},
    ]


def accuracy_table(title: str, rows: Sequence[dict[str, Any]], per: str, caption: str):
    """A rich Table: accuracy, its difference to the first (dense) row, parameters and MACs per ``per``."""
    from rich.table import Table
    dense = rows[0]
    t = Table(title=title)
    for col in ("model", "accuracy", "vs dense", "params", "param reduction", f"MACs/{per}", "MAC reduction"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        acc = "not run" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        diff = "" if r["accuracy"] is None or r is dense else f"{100 * (r['accuracy'] - dense['accuracy']):+.2f}"
        t.add_row(r["model"], acc, diff, f"{r['params']:,}", f"{100 * (1 - r['params'] / dense['params']):.1f}%",
                  f"{r['macs']:,}", f"{dense['macs'] / r['macs']:.2f}x")
    t.caption = caption
    return t


def run_seeds(run: Callable[..., Any], cfg: Any, seeds: int | Sequence[int], out_dir: str | Path, log: Log,
              progress: bool) -> tuple[list[Any], list[dict[str, Any]]]:
    """``run(cfg with seed=s, out_dir/seed<s>, log, progress)`` per seed (``seeds``: a count from
    ``cfg.seed``, or a list), without the bench when ``cfg`` has one; returns the runs and
    :func:`litefly.seeds.summarize_seeds` of their tables (also in ``out_dir/seeds.json``)."""
    from .seeds import summarize_seeds
    seed_list = list(range(cfg.seed, cfg.seed + seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise LiteflyError("demo: --seeds must be at least 1")
    if hasattr(cfg, "bench"):
        cfg = replace(cfg, bench=False)
    out = Path(out_dir)
    runs = []
    for s in seed_list:
        log(f"--- seed {s} ---")
        runs.append(run(replace(cfg, seed=s), out / f"seed{s}", log, progress))
    summary = summarize_seeds([r.rows for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps({
        "config": asdict(cfg), "seeds": seed_list, "models": summary,
        "engine_equals_golden_on_every_image": [r.engine_equal for r in runs],
        "timings_s": [r.timings for r in runs]}, indent=2))
    return runs, summary

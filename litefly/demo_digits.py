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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .convert import ConvertConfig, LayerReport, convert_model, count_params, distill, model_macs, train_epochs
from .errors import LiteflyError
from .export import export_int8, int8_forward, save_int8

__all__ = ["DigitsConfig", "DigitsResult", "load_digits_data", "make_cnn", "train_dense", "run_digits_demo", "render", "summary_dict"]


@dataclass(frozen=True)
class DigitsConfig:
    """Everything that determines a demo run (seeds fixed)."""

    channels: tuple[int, int] = (32, 64)
    compression: float = 0.95
    epochs: int = 40                 # dense training
    kd_epochs: int = 100             # DeBut fine-tuning with distillation
    lr: float = 3e-3
    kd_lr: float = 1e-2
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.7
    sweeps: int = 10
    seed: int = 0
    n_train: int | None = None       # subsets for quick runs
    n_test: int | None = None
    backend: str = "sim"             # engine column: sim | golden | none
    bench: bool = True
    bench_dense: bool = True         # run the dense baseline engines in the bench (else: cycle model)
    bench_batch: int = 16            # images per bench run (fills the engine's lanes on the linear layer)


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


def _accuracy(pred: np.ndarray, y: torch.Tensor) -> float:
    return float(np.mean(np.asarray(pred) == y.numpy()))


def _predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x).argmax(1).numpy()


def run_digits_demo(cfg: DigitsConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                    progress: bool = False) -> DigitsResult:
    """Run the whole demo; writes the int8 export (and bench report) into ``out_dir``.
    ``progress`` shows a progress bar for the fine-tuning."""
    if cfg.backend not in ("sim", "golden", "none"):
        raise LiteflyError(f"demo: backend {cfg.backend!r} must be sim, golden or none")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(out_dir)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = load_digits_data(cfg.seed)
    if cfg.n_train:
        xtr, ytr = xtr[:cfg.n_train], ytr[:cfg.n_train]
    if cfg.n_test:
        xte, yte = xte[:cfg.n_test], yte[:cfg.n_test]
    log(f"digits: {len(xtr)} training and {len(xte)} test images of 8x8")

    dense = make_cnn(*cfg.channels)
    train_dense(dense, xtr, ytr, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed)
    acc_dense = _accuracy(_predict(dense, xte), yte)
    t["train dense"] = time.perf_counter() - t0
    log(f"dense CNN: test accuracy {100 * acc_dense:.2f}% ({t['train dense']:.1f} s)")

    t1 = time.perf_counter()
    debut, layers = convert_model(dense, ConvertConfig(compression=cfg.compression, sweeps=cfg.sweeps,
                                                       seed=cfg.seed), example_input=xte[:1])
    acc_fit = _accuracy(_predict(debut, xte), yte)
    t["convert"] = time.perf_counter() - t1
    log("converted: " + ", ".join(f"{r.name} {r.params}/{r.dense_params} params, rel. error {r.rel_error:.3f}"
                                  for r in layers) + f"; accuracy before fine-tuning {100 * acc_fit:.2f}%")
    t1 = time.perf_counter()
    distill(debut, dense, xtr, ytr, epochs=cfg.kd_epochs, batch_size=cfg.batch_size, lr=cfg.kd_lr,
            temperature=cfg.temperature, alpha=cfg.alpha, seed=cfg.seed, progress=progress)
    acc_debut = _accuracy(_predict(debut, xte), yte)
    t["distill"] = time.perf_counter() - t1
    log(f"DeBut after distillation: {100 * acc_debut:.2f}% ({t['distill']:.1f} s)")

    t1 = time.perf_counter()
    network, params = export_int8(debut, xtr, name="digits_debut")
    export_dir = out / "int8"
    save_int8(network, params, export_dir)
    x_test = xte.double().numpy()
    golden_logits = int8_forward(network, params, x_test)
    golden_pred = golden_logits.argmax(1)
    acc_golden = _accuracy(golden_pred, yte)
    t["quantise"] = time.perf_counter() - t1
    log(f"int8 golden: {100 * acc_golden:.2f}%; export written to {export_dir}")

    engine_pred, engine_equal, note = None, None, ""
    if cfg.backend == "none":
        note = "not run (--backend none)"
    else:
        from litefly.host.runtime import NetworkRunner
        t1 = time.perf_counter()
        runner = NetworkRunner(network, params, backend=cfg.backend, input_size=tuple(x_test.shape[2:]))
        env = runner.envelope
        log(f"running the {len(xte)} test images through one engine ({env.name} 0x{env.hash32:08x}, "
            f"{len(network.layers)} layers, {cfg.backend} backend) ...")
        try:
            engine_logits = runner.run(x_test)
        finally:
            runner.close()
        t["engine"] = time.perf_counter() - t1
        engine_pred = engine_logits.argmax(1)
        engine_equal = bool(np.array_equal(engine_logits, golden_logits))
        cycles = sum(int(s["cycles"]) for s in runner.stats)
        note = (f"{'simulated engine (cocotb + Verilator)' if cfg.backend == 'sim' else 'engine model (golden)'}: "
                f"one engine 0x{env.hash32:08x} serves all {len(runner.stats)} layers via NetworkRunner, "
                f"{cycles:,} engine cycles, {runner.total.get('transfers', 0)} DMA transfers, "
                f"{t['engine']:.0f} s wall")
        log(note)
        if not engine_equal or not np.array_equal(engine_pred, golden_pred):
            bad = np.flatnonzero(engine_pred != golden_pred)
            raise LiteflyError(f"demo: engine output differs from the int8 golden model on "
                               f"{len(bad)} test images (first: {bad[:5].tolist()})")

    # parameters (weights and biases) and MACs of each model: every conv and linear layer counted
    p_dense, m_dense = count_params(dense, include_bias=True), model_macs(dense, xte[:1])
    p_debut, m_debut = count_params(debut, include_bias=True), model_macs(debut, xte[:1])
    rows = [
        {"model": "dense float", "accuracy": acc_dense, "params": p_dense, "macs": m_dense},
        {"model": "DeBut float (ALS init, no fine-tuning)", "accuracy": acc_fit, "params": p_debut, "macs": m_debut},
        {"model": "DeBut float (KD fine-tuned)", "accuracy": acc_debut, "params": p_debut, "macs": m_debut},
        {"model": "DeBut int8 golden", "accuracy": acc_golden, "params": p_debut, "macs": m_debut},
        {"model": f"DeBut int8 engine ({cfg.backend})",
         "accuracy": None if engine_pred is None else _accuracy(engine_pred, yte), "params": p_debut,
         "macs": m_debut},
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
    res = DigitsResult(cfg, rows, layers, golden_pred, engine_pred, note, engine_equal, report, export_dir, t)
    (out / "summary.json").write_text(json.dumps(summary_dict(res), indent=2))
    return res


def summary_dict(res: DigitsResult) -> dict[str, Any]:
    from dataclasses import asdict
    return {
        "config": asdict(res.config), "rows": res.rows, "engine": res.engine_note,
        "engine_equals_golden_on_every_image": res.engine_equal,
        "layers": [r.to_dict() for r in res.layers],
        "bench_total": None if res.bench is None else {k: v for k, v in res.bench["total"].items()
                                                       if not isinstance(v, dict)},
        "timings_s": res.timings,
    }


def render(res: DigitsResult):
    """Rich tables: accuracy/params/MACs per model, then the bench speedups."""
    from rich.table import Table
    dense = res.rows[0]
    t = Table(title="litefly demo digits (sklearn handwritten digits, test set)")
    for col in ("model", "accuracy", "vs dense", "params", "param reduction", "MACs/image", "MAC reduction"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in res.rows:
        acc = "not run" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        diff = "" if r["accuracy"] is None or r is dense else f"{100 * (r['accuracy'] - dense['accuracy']):+.2f}"
        t.add_row(r["model"], acc, diff, f"{r['params']:,}", f"{100 * (1 - r['params'] / dense['params']):.1f}%",
                  f"{r['macs']:,}", f"{dense['macs'] / r['macs']:.2f}x")
    t.caption = (f"engine: {res.engine_note}; engine == int8 golden on every image: {res.engine_equal}. "
                 f"Params: weights and biases of all conv and linear layers; MACs per image.")
    out = [t]
    if res.bench is not None:
        from litefly.host.bench import render_table
        out.append(render_table(res.bench))
    return out

"""Pixelfly on scikit-learn's digits: the digits demo's dense CNN, every layer as Pixelfly, on the engine.

Steps (:func:`run_pixelfly_demo`): train the dense CNN of ``litefly demo digits``
(:func:`litefly.demo_digits.make_cnn`, :func:`~litefly.demo_digits.train_dense`, same split,
epochs and learning rate as :class:`~litefly.demo_digits.DigitsConfig`'s defaults); convert every
conv and linear layer to Pixelfly (:func:`litefly.pixelfly.pixelfly_model`: ``y = S x + U (V x)``,
``S`` on a flat block butterfly mask, a conv through its im2col matrix; the chain is ``V`` then
``[S | U]`` over ``[x ; V x]``, two sparse factors) fitted from the dense weights; fine-tune with
knowledge distillation from the dense model; export int8 (:func:`litefly.export.export_int8`,
chained scales calibrated on the training images); classify the test set with the int8 golden
network and with ONE network engine serving all layers (``golden`` = the engine model, ``sim`` =
cocotb + Verilator), which must agree on every image.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .convert import count_params, model_macs
from .demo_common import (accuracy, accuracy_table, check_backend, distill_and_score, export_and_classify, predict,
                          run_engine_check, run_seeds)
from .demo_digits import DigitsConfig, make_cnn, train_dense, train_on_digits
from .pixelfly import PixelflyConfig, PixelflyReport, pixelfly_model
from .utils import deterministic_run

__all__ = ["PixelflyDigitsConfig", "PixelflyDigitsResult", "run_pixelfly_demo", "run_pixelfly_seeds", "render",
           "summary_dict"]

_D = DigitsConfig()         # the digits demo's recipe for the dense model and the distillation


@dataclass(frozen=True)
class PixelflyDigitsConfig:
    """Everything that determines a run (seeds fixed). The dense model (channels, epochs, learning
    rate, batch size) and the distillation's learning rate and temperature default to the digits
    demo's (:class:`~litefly.demo_digits.DigitsConfig`); the distillation's epochs and weight are
    this demo's own (100 and 0.7, the figures in ``docs/models.md``)."""

    block_size: int = 1              # litefly.pixelfly.pixelfly_mask, padded to any shape
    rank: int = 2                    # of U V (capped at min(out, in) per layer)
    n_factors: int | None = 2        # butterfly levels of the flat block butterfly (None: all)
    channels: tuple[int, int] = _D.channels
    epochs: int = _D.epochs          # dense training
    kd_epochs: int = 100             # Pixelfly fine-tuning with distillation (its own; measured at 100)
    lr: float = _D.lr
    kd_lr: float = _D.kd_lr
    batch_size: int = _D.batch_size
    temperature: float = _D.temperature
    alpha: float = 0.7               # the weight docs/models.md's Pixelfly figures were measured with
    sweeps: int = _D.sweeps          # fit_pixelfly alternations
    seed: int = 0
    n_train: int | None = None       # subsets for quick runs
    n_test: int | None = None
    backend: str = "golden"          # engine column: sim | golden | none
    threads: int | None = 1

    def pixelfly(self) -> PixelflyConfig:
        return PixelflyConfig(block_size=self.block_size, rank=self.rank, n_factors=self.n_factors,
                              sweeps=self.sweeps)


@dataclass
class PixelflyDigitsResult:
    config: PixelflyDigitsConfig
    rows: list[dict[str, Any]]                     # model, accuracy, params, MACs
    layers: list[PixelflyReport]
    golden_pred: np.ndarray
    engine_pred: np.ndarray | None
    engine_note: str
    engine_equal: bool | None
    export_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_pixelfly_demo(cfg: PixelflyDigitsConfig, out_dir: str | Path, log: Callable[[str], None] = print,
                      progress: bool = False) -> PixelflyDigitsResult:
    """Run the whole demo; writes the int8 export and ``summary.json`` into ``out_dir``.
    Deterministic for a given ``cfg`` (:func:`litefly.utils.deterministic_run`)."""
    check_backend(cfg.backend)
    cfg.pixelfly()                      # one-line errors before training
    with deterministic_run(cfg.seed, cfg.threads):
        return _run(cfg, Path(out_dir), log, progress)


def _run(cfg: PixelflyDigitsConfig, out: Path, log: Callable[[str], None], progress: bool) -> PixelflyDigitsResult:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    (xtr, ytr, xte, yte), dense, acc_dense = train_on_digits(
        cfg, make_cnn(*cfg.channels),
        lambda m, x, y: train_dense(m, x, y, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed), t, log, "dense CNN")

    t1 = time.perf_counter()
    pix, layers = pixelfly_model(dense, cfg.pixelfly(), example_input=xte[:1])
    acc_fit = accuracy(predict(pix, xte), yte)
    t["convert"] = time.perf_counter() - t1
    log("Pixelfly: " + ", ".join(f"{r.name} {r.params}/{r.dense_params} params (S {r.sparse_entries}, rank "
                                 f"{r.rank}), rel. error {r.rel_error:.3f}" for r in layers)
        + f"; accuracy before fine-tuning {100 * acc_fit:.2f}%")
    acc_pix = distill_and_score(pix, dense, xtr, ytr, xte, yte, cfg, t, log, progress, "Pixelfly")

    x_test = xte.double().numpy()
    network, params, export_dir, golden_logits, acc_golden = export_and_classify(pix, xtr, x_test, yte,
                                                                                 "digits_pixelfly", out, t)
    log(f"int8 golden: {100 * acc_golden:.2f}%; export written to {export_dir}")
    engine_pred, engine_equal, note = run_engine_check(network, params, x_test, golden_logits, cfg.backend,
                                                       tuple(x_test.shape[2:]), None, "images", t, log)
    p_dense, m_dense = count_params(dense, include_bias=True), model_macs(dense, xte[:1])
    p_pix, m_pix = count_params(pix, include_bias=True), model_macs(pix, xte[:1])
    what = f"Pixelfly (block {cfg.block_size}, rank {cfg.rank}, {cfg.n_factors or 'all'} levels)"
    rows = [
        {"model": "dense float", "accuracy": acc_dense, "params": p_dense, "macs": m_dense},
        {"model": f"{what} float (fit, no fine-tuning)", "accuracy": acc_fit, "params": p_pix, "macs": m_pix},
        {"model": f"{what} float (KD fine-tuned)", "accuracy": acc_pix, "params": p_pix, "macs": m_pix},
        {"model": "Pixelfly int8 golden", "accuracy": acc_golden, "params": p_pix, "macs": m_pix},
        {"model": f"Pixelfly int8 engine ({cfg.backend})",
         "accuracy": None if engine_pred is None else accuracy(engine_pred, yte), "params": p_pix, "macs": m_pix},
    ]
    t["total"] = time.perf_counter() - t0
    res = PixelflyDigitsResult(cfg, rows, layers, golden_logits.argmax(1), engine_pred, note, engine_equal,
                               export_dir, t)
    (out / "summary.json").write_text(json.dumps(summary_dict(res), indent=2))
    return res


def summary_dict(res: PixelflyDigitsResult) -> dict[str, Any]:
    return {"config": asdict(res.config), "rows": res.rows, "engine": res.engine_note,
            "engine_equals_golden_on_every_image": res.engine_equal,
            "layers": [r.to_dict() for r in res.layers], "timings_s": res.timings}


def render(res: PixelflyDigitsResult):
    """The accuracy table (params: weights and biases of every layer, MACs per image)."""
    return [accuracy_table("litefly demo pixelfly (sklearn handwritten digits, test set)", res.rows, "image",
                           f"engine: {res.engine_note}; engine == int8 golden on every image: {res.engine_equal}. "
                           f"Params: weights and biases of all conv and linear layers; MACs per image.")]


def run_pixelfly_seeds(cfg: PixelflyDigitsConfig, seeds: int | list[int], out_dir: str | Path,
                       log: Callable[[str], None] = print, progress: bool = False
                       ) -> tuple[list[PixelflyDigitsResult], list[dict[str, Any]]]:
    """The demo once per seed, each into ``out_dir/seed<k>``; the runs and their summary
    (:func:`litefly.seeds.summarize_seeds`, also in ``out_dir/seeds.json``)."""
    return run_seeds(run_pixelfly_demo, cfg, seeds, out_dir, log, progress)

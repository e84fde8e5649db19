"""Reproducible demo figures: the same seed gives the same accuracy table; several seeds give
mean and spread (litefly.seeds, `litefly demo digits --seeds N`)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from litefly.demo_digits import DigitsConfig, run_digits_demo
from litefly.errors import LiteflyError
from litefly.seeds import summarize_seeds

QUICK = DigitsConfig(channels=(8, 16), n_train=300, n_test=80, epochs=4, kd_epochs=3, sweeps=2, backend="golden",
                     bench=False)


def _accuracies(res):
    return [r["accuracy"] for r in res.rows]


def test_same_seed_same_figures_and_torch_settings_restored(tmp_path):
    torch.set_num_threads(2)
    a = run_digits_demo(QUICK, tmp_path / "a", log=lambda m: None)
    b = run_digits_demo(QUICK, tmp_path / "b", log=lambda m: None)
    assert _accuracies(a) == _accuracies(b)
    assert (a.golden_pred == b.golden_pred).all()
    # the run leaves torch's settings as it found them
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    c = run_digits_demo(replace(QUICK, seed=1), tmp_path / "c", log=lambda m: None)
    assert _accuracies(c) != _accuracies(a)        # another seed: another split and initialisation


def _rows(*accs):
    names = ["dense", "debut", "engine"]
    return [{"model": n, "accuracy": a, "params": 10, "macs": 5} for n, a in zip(names, accs)]


def test_summarize_seeds_mean_spread_and_gap_to_the_same_seeds_dense():
    s = summarize_seeds([_rows(0.98, 0.97, None), _rows(0.96, 0.96, None), _rows(1.0, 0.97, None)])
    dense, debut, engine = s
    assert dense["mean"] == pytest.approx(0.98) and dense["std"] == pytest.approx(0.02)
    assert (dense["min"], dense["max"]) == (0.96, 1.0) and dense["gap_mean"] is None
    assert debut["gap_mean"] == pytest.approx((-0.01 + 0.0 - 0.03) / 3)
    assert debut["gap_worst"] == pytest.approx(-0.03)       # seed 2: 0.97 against its dense 1.0
    assert engine["mean"] is None and engine["gap_worst"] is None
    with pytest.raises(LiteflyError, match="same models"):
        summarize_seeds([_rows(0.9, 0.9, 0.9), _rows(0.9, 0.9)])


def test_cli_seeds_writes_the_table(tmp_path):
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "digits", "--quick", "--backend", "golden",
                        "--seeds", "2", "--epochs", "3", "--kd-epochs", "2", "--channels", "8", "16",
                        "--out", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 seeds (0, 1)" in r.stdout and "vs dense, worst seed" in r.stdout
    data = json.loads((tmp_path / "seeds.json").read_text())
    assert data["seeds"] == [0, 1] and data["engine_equals_golden_on_every_image"] == [True, True]
    assert len(data["models"][0]["accuracies"]) == 2

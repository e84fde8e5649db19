"""`litefly demo digits`: dense CNN -> all-DeBut -> KD -> int8 (chained scales) -> ONE simulated network
engine for all three layers through NetworkRunner, on real data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from litefly.demo_digits import DigitsConfig, load_digits_data, run_digits_demo
from litefly.export import int8_forward, load_int8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("digits")
    return run_digits_demo(DigitsConfig(backend="sim", bench=False), out, log=lambda m: None), out


def test_digits_all_debut_meets_the_targets_and_the_engine_equals_golden(demo):
    """The whole test set through the Verilated engine: the acceptance criteria of the demo."""
    res, tmp_path = demo
    rows = {r["model"].split(" (")[0]: r for r in res.rows}
    dense, debut = rows["dense float"], res.rows[2]
    golden, engine = rows["DeBut int8 golden"], res.rows[4]
    assert debut["model"].startswith("DeBut float (KD")
    # every conv and linear layer converted, >= 90% fewer parameters (weights and biases)
    assert [r.kind for r in res.layers] == ["conv2d", "conv2d", "linear"]
    assert 1 - debut["params"] / dense["params"] >= 0.90
    assert debut["macs"] < dense["macs"] / 5
    # accuracy: dense is a real classifier, DeBut loses at most 1 point (float and int8; the issue's
    # target, here on seed 0 only: docs/models.md section 4 has the five-seed mean and worst seed)
    assert dense["accuracy"] >= 0.95
    assert dense["accuracy"] - debut["accuracy"] <= 0.01
    assert dense["accuracy"] - golden["accuracy"] <= 0.01
    # the engine's predictions are the int8 golden predictions, image for image
    _, _, _, y_test = load_digits_data(0)
    assert res.engine_equal is True and len(res.engine_pred) == len(y_test) == 360
    assert np.array_equal(res.engine_pred, res.golden_pred)
    assert engine["accuracy"] == golden["accuracy"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine_equals_golden_on_every_image"] is True
    assert (tmp_path / "int8" / "network.yaml").exists()
    assert "one engine" in res.engine_note and "serves all 3 layers" in res.engine_note


def test_a_wrong_engine_is_caught_on_the_digits_network(demo):
    """Teeth: the same exported network on an engine with a rounding fault disagrees with golden."""
    from litefly.host.runtime import NetworkRunner
    _, out = demo
    network, params = load_int8(out / "int8")
    x = load_digits_data(0)[2][:24].double().numpy()
    wrong = NetworkRunner(network, params, backend="sim", fault="rounding").run(x)
    assert not np.array_equal(wrong, int8_forward(network, params, x))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "litefly", "demo", "digits", *args], capture_output=True,
                          text=True)


def test_cli_quick_run_and_bad_input(tmp_path):
    r = _cli("--quick", "--backend", "golden", "--bench-batch", "2", "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "DeBut int8 golden" in r.stdout and "litefly bench" in r.stdout
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["engine_equals_golden_on_every_image"] is True
    assert summary["bench_total"]["cycles"] > 0
    assert summary["bench_total"]["host[s]"] > 0 and summary["bench_total"]["end_to_end[s]"] > 0
    bench = json.loads((tmp_path / "d" / "bench.json").read_text())
    assert bench["engine"]["layers_served"] == 3 and set(bench["total"]["host_stage[s]"]) == {
        "quantize", "copy_in", "dispatch", "copy_out", "unpack"}
    r = _cli("--compression", "1.5", "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and r.stderr.strip() == "error: --compression 1.5 must be in [0, 1)"


def test_cli_defaults_are_the_config_defaults():
    """``litefly demo digits`` without options runs the documented recipe (DigitsConfig)."""
    from litefly.cli.demo_cmd import digits
    defaults = {p.name: p.default for p in digits.params}
    cfg = DigitsConfig()
    assert cfg.kd_epochs == 200 and cfg.compression == 0.93 and cfg.alpha == 0.9
    for name in ("compression", "epochs", "kd_epochs", "seed", "threads", "bench_batch"):
        assert defaults[name] == getattr(cfg, name), name
    assert defaults["kd_alpha"] == cfg.alpha
    assert tuple(defaults["channels"]) == cfg.channels


def test_the_digits_network_fits_each_board_at_its_default_envelope(demo):
    """Issue 12: block RAM and UltraRAM at most 80% for the digits network on each board's default
    envelope (the memory plan's shape estimate)."""
    from litefly.boards.boards import BOARDS, get_board
    from litefly.boards.memory_plan import plan_memories
    from litefly.hw.spec import EngineEnvelope
    _, out = demo
    network, _ = load_int8(out / "int8")
    for name in BOARDS:
        board = get_board(name)
        env = EngineEnvelope.for_network(network, board=name)
        assert env.lanes == board.engine["multipliers"]
        plan = plan_memories(env, board)
        assert plan.bram36 <= 0.8 * board.bram36 and plan.uram <= 0.8 * max(board.uram, 1), (name, plan.to_dict())

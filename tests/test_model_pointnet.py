"""`litefly demo pointnet`: PointNet (no T-Net) on synthetic point clouds, dense -> all-DeBut -> KD ->
int8 with the global max pool as a host op -> one network engine (golden backend here)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from litefly.config import HostOp
from litefly.demo_pointnet import PointNetConfig, run_pointnet_demo
from litefly.export import int8_forward, load_int8

TINY = PointNetConfig(num_points=16, n_train=8, n_test=3, mlp=(16, 32, 256), head=(64,), epochs=2, kd_epochs=1,
                      sweeps=1, backend="golden")


def test_tiny_pointnet_runs_end_to_end_and_the_engine_equals_golden(tmp_path):
    torch.set_num_threads(1)
    res = run_pointnet_demo(TINY, tmp_path, log=lambda m: None)
    names = [r["model"] for r in res.rows]
    assert names[0] == "dense float" and names[-1] == "DeBut int8 engine (golden)"
    assert [r.kind for r in res.layers] == ["conv2d"] * 3 + ["linear"] * 2     # every conv and linear converted
    dense, debut = res.rows[0], res.rows[2]
    assert debut["params"] < 0.2 * dense["params"]
    assert res.engine_equal is True and np.array_equal(res.engine_pred, res.golden_pred)
    assert len(res.golden_pred) == 30 and res.rows[4]["accuracy"] == res.rows[3]["accuracy"]
    assert "host globalmaxpool" in res.engine_note
    network, params = load_int8(tmp_path / "int8")
    ops = [s.op for s in network.steps if isinstance(s, HostOp)]
    assert "globalmaxpool" in ops and "maxpool2d" not in ops
    from litefly.demo_pointnet import load_pointnet_data
    x = load_pointnet_data(TINY)[2].double().numpy()
    assert np.array_equal(int8_forward(network, params, x).argmax(1), res.golden_pred)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine_equals_golden"] is True and summary["config"]["num_points"] == 16


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "pointnet", "--compression", "1.5", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --compression 1.5 must be in [0, 1)"

"""`litefly demo pointnet`: PointNet (no T-Net) on synthetic point clouds, dense -> all-DeBut -> KD ->
int8 with the global max pool as a host op -> one network engine (golden backend here)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from litefly.config import HostOp
from litefly.autochain import generate_chain
from litefly.chain import validate_chain
from litefly.demo_pointnet import PointNetConfig, pool_layer_chain, run_pointnet_demo
from litefly.export import int8_forward, load_int8

TINY = PointNetConfig(num_points=16, n_train=8, n_test=3, mlp=(16, 32, 256), head=(64,), epochs=2, kd_epochs=1,
                      sweeps=1, backend="golden", qat_epochs=1)


def test_tiny_pointnet_runs_end_to_end_and_the_engine_equals_golden(tmp_path):
    torch.set_num_threads(1)
    res = run_pointnet_demo(TINY, tmp_path, log=lambda m: None)
    names = [r["model"] for r in res.rows]
    assert names[0] == "dense float" and names[-1] == "DeBut int8 engine (golden)"
    assert [r.kind for r in res.layers] == ["conv2d"] * 3 + ["linear"] * 2     # every conv and linear converted
    assert res.layers[2].chain == pool_layer_chain(32, 256, TINY.pool_compression)   # the max-pooled layer's chain
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


def test_pool_layer_chain_mixes_at_least_two_inputs_into_every_pooled_feature():
    # the generator's cheapest 64 -> 512 chain ends in s = 1: 512 scaled copies of 64 features
    assert generate_chain(64, 512, compression=0.97).chain[-1].s == 1
    chain = pool_layer_chain(64, 512, 0.945)
    validate_chain(chain, 64, 512)
    params = sum(f.params for f in chain)
    assert chain[-1].s >= 2 and params <= 0.055 * 64 * 512
    assert min(f.p for f in chain) >= 64
    assert params == 1792       # the densest such chain within 5.5% of 32,768 (1,802 parameters)
    # a budget too small for any such chain gives the cheapest one
    small = pool_layer_chain(32, 256, 0.99)
    assert small[-1].s >= 2 and sum(f.params for f in small) == 768


def test_cli_refuses_bad_pool_compression_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "pointnet", "--pool-compression", "1", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --pool-compression 1.0 must be in [0, 1)"


@pytest.mark.parametrize("opt, value", [("--mlp", "64,0,128"), ("--head", "512,x"), ("--mlp", ""), ("--mlp", "1e3"),
                                        ("--head", "9" * 5000), ("--mlp", ",".join(["8"] * 65))])
def test_cli_refuses_bad_widths_in_one_line(tmp_path, opt, value):
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "pointnet", opt, value, "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {opt} {value[:40]!r} must be comma-separated positive integers, e.g. 16,32"


def test_cli_refuses_widths_above_the_channel_limit_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "pointnet", "--mlp", "64, 70000", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--mlp" in r.stderr and "70000" in r.stderr and "MAX_CHANNELS" in r.stderr


def test_default_model_is_pointnet_at_its_own_widths_and_95_percent_fewer_parameters():
    """The demo's default: PointNet's shared MLP 64-64-64-128-1024 and head 512-256, converted with the
    default per-layer targets to at least 95% fewer weights than the dense layers."""
    from dataclasses import replace

    from litefly.convert import convert_model, count_params
    from litefly.demo_pointnet import pointnet_convert_config
    from litefly.zoo import pointnet_cls
    cfg = replace(PointNetConfig(), sweeps=0)          # the chains, not their fit
    assert cfg.mlp == (64, 64, 64, 128, 1024) and cfg.head == (512, 256)
    dense = pointnet_cls(10, cfg.num_points, mlp=cfg.mlp, head=cfg.head).eval()
    debut, _ = convert_model(dense, pointnet_convert_config(cfg, dense), example_input=torch.randn(1, 3, 64, 1))
    before, after = count_params(dense), count_params(debut)
    assert after <= 0.05 * before, (after, before)


def test_cli_defaults_are_the_config_defaults():
    """``litefly demo pointnet`` without options runs the documented recipe (PointNetConfig)."""
    from litefly.cli.demo_cmd import pointnet
    defaults = {p.name: p.default for p in pointnet.params}
    cfg = PointNetConfig()
    for name in ("compression", "head_compression", "pool_compression", "epochs", "kd_epochs", "kd_lr", "seed",
                 "threads", "backend", "augment", "calibration", "qat_epochs", "qat_lr"):
        assert defaults[name] == getattr(cfg, name), name
    assert (defaults["points"], defaults["train_per_class"], defaults["test_per_class"]) == \
        (cfg.num_points, cfg.n_train, cfg.n_test)
    assert defaults["mlp"] == ",".join(map(str, cfg.mlp)) and defaults["head"] == ",".join(map(str, cfg.head))

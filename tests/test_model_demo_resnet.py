"""``litefly demo resnet``: a tiny end-to-end run (dense ResNet -> all-DeBut -> KD -> int8 with
residual adds and a projection shortcut -> engine), the bench reporting every layer, and the
CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from litefly.config import HostOp
from litefly.demo_resnet import ResNetConfig, run_resnet_demo
from litefly.errors import LiteflyError
from litefly.export import int8_forward, load_int8

torch.set_num_threads(1)


def test_tiny_resnet_runs_end_to_end_and_the_engine_equals_golden(tmp_path):
    cfg = ResNetConfig(widths=(8, 16), blocks=(1, 1), epochs=2, kd_epochs=1, sweeps=1, n_train=200, n_test=40,
                       compression=0.8, bench_batch=4)
    res = run_resnet_demo(cfg, tmp_path, log=lambda m: None)
    assert res.engine_equal is True and np.array_equal(res.engine_pred, res.golden_pred)
    ops = [i for i in res.network_items if isinstance(i, dict)]
    assert {"op": "add", "from": "conv1"} in ops and {"op": "globalavgpool"} in ops
    assert {"op": "input", "from": "layer1_0_conv2"} in ops              # the projection reads the block input
    assert [r["model"] for r in res.rows][0] == "dense float" and res.rows[-1]["accuracy"] is not None
    assert res.rows[2]["params"] < res.rows[0]["params"]
    # the export on disk is the network that ran; the bench has a row for every layer and the host op
    network, params = load_int8(res.export_dir)
    assert all(isinstance(s, HostOp) or s.name in params for s in network.steps)
    from litefly.demo_digits import load_digits_data
    x = load_digits_data(0)[2][:40].double().numpy()
    np.testing.assert_array_equal(int8_forward(network, params, x).argmax(1), res.golden_pred)
    names = [r["name"] for r in res.bench["layers"]]
    assert names == [layer.name for layer in network.layers]
    assert [r["op"] for r in res.bench["host_ops"]] == ["globalavgpool"]


def test_bad_config_is_refused_in_one_line(tmp_path):
    with pytest.raises(LiteflyError, match=r"widths \[8\] and blocks \[1, 1\] must be"):
        run_resnet_demo(ResNetConfig(widths=(8,), blocks=(1, 1)), tmp_path)
    r = subprocess.run([sys.executable, "-m", "litefly", "demo", "resnet", "--widths", "8,x", "--out",
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: --widths '8,x' must be comma-separated positive integers, e.g. 16,32"


def test_cli_defaults_are_the_config_defaults():
    """``litefly demo resnet`` without options runs the documented recipe (ResNetConfig)."""
    from litefly.cli.demo_cmd import resnet
    defaults = {p.name: p.default for p in resnet.params}
    cfg = ResNetConfig()
    for name in ("compression", "epochs", "kd_epochs", "seed", "threads", "backend"):
        assert defaults[name] == getattr(cfg, name), name
    assert defaults["widths"] == ",".join(map(str, cfg.widths)) and defaults["blocks"] == ",".join(map(str, cfg.blocks))

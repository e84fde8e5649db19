"""The network engine's RTL under cocotb/Verilator through the host's sim backend: NetworkRunner
end to end, timeouts, the deliberately faulty engines caught by the checker, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from litefly.config import NetworkConfig
from litefly.hw.spec import EngineEnvelope
from litefly.network import network_forward_int
from random_networks import ENVELOPES, random_case
from sim_common import model_run, needs_rtl
from test_conformance import PARAMS, STEPS, X
from test_random_networks import describe, mismatch

HERE = Path(__file__).resolve().parent
ENV = ENVELOPES["rand64"]

# A tiny network; its engine serves the CLI tests and, with the faults, the checker tests
# (one Verilator build each).
TINY_NET = """\
name: tiny
input_size: [5, 4]
engine: {multipliers: 4, stream_bits: 32, frame_kib: 1}
layers:
  - {name: c1, kind: conv2d, in_channels: 3, out_channels: 12, kernel: [3, 3], padding: 1,
     chain: [[12, 27, 4, 9, 1]], format: {bias: true}}
  - {op: relu}
  - {op: maxpool2d, kernel: 2}
  - {name: c2, kind: conv2d, in_channels: 12, out_channels: 12, kernel: [1, 1],
     chain: [[12, 12, 2, 2, 1], [12, 12, 2, 2, 2]]}
"""
FAULT_ENV = EngineEnvelope.for_network(NetworkConfig.from_dict(yaml.safe_load(TINY_NET)))
FAULT_SEEDS = (11, 12, 13, 14, 15, 16, 17, 18)
# The faulty engines and the CLI run on Icarus: no C++ build (seconds instead of minutes per
# engine); the random networks and conformance run on Verilator.
SIMULATOR = "icarus"
needs_icarus = pytest.mark.skipif(__import__("shutil").which("iverilog") is None, reason="Icarus not installed")
FAULTS = ("weight_addr", "rounding", "window_pad", "pool")


def fault_cases():
    """Cases that exercise what each fault breaks: padding, pooling, shifts > 0, every weight."""
    out, seed = [], 0
    while len(out) < len(FAULT_SEEDS):
        c = random_case(70_000 + seed, FAULT_ENV, stall="none")
        seed += 1
        has_pad = any(max(s.padding) > 0 for s in c.steps)
        has_pool = any(s.pool for s in c.steps)
        shifts = any(sh > 0 for q in c.params.values() for sh in q.shifts)
        k = len(out)
        if (k < 3 and has_pad and shifts) or (3 <= k < 6 and has_pool and shifts) or k >= 6:
            out.append(c)
    return out


_FAULT_CASES = None


def get_fault_cases():
    global _FAULT_CASES
    if _FAULT_CASES is None:
        _FAULT_CASES = fault_cases()
    return _FAULT_CASES


def run_fault_engine(fault, simulator=SIMULATOR):
    from litefly.host.sim_transport import run_sim_jobs
    cs = get_fault_cases()
    results, summary = run_sim_jobs(FAULT_ENV, [c.job(timeout=0.002) for c in cs], fault=fault,
                                    simulator=simulator, sim_timeout_s=900)
    return cs, results, summary


def test_fault_cases_are_right_on_the_model():
    for c in get_fault_cases():
        assert mismatch(model_run(FAULT_ENV, c.steps, c.params, c.x), c.expected) is None, describe(c)


@needs_rtl
@needs_icarus
def test_unfaulted_tiny_engine_is_bit_exact():
    cs, results, summary = run_fault_engine(None)
    assert len(results) == len(cs), summary
    for c, r in zip(cs, results):
        assert not r.get("error"), f"{describe(c)}: {r['error']}"
        assert mismatch(r["y"], c.expected) is None, describe(c)


@needs_rtl
@needs_icarus
@pytest.mark.parametrize("fault", FAULTS)
def test_checker_catches_faulty_engine(fault):
    """Each deliberately faulty engine gives a wrong output (or hangs, caught by the bounded waits)."""
    from litefly.hw.engine import FAULTS as HW_FAULTS
    if fault not in HW_FAULTS:
        pytest.fail(f"the RTL no longer offers fault {fault!r} (has {HW_FAULTS})")
    cs, results, summary = run_fault_engine(fault)
    caught = [c.label for c, r in zip(cs, results) if r.get("error") or mismatch(r["y"], c.expected)]
    assert caught or len(results) < len(cs), f"fault {fault!r} not caught by any of {len(cs)} cases"


# -- the sim backend end to end ------------------------------------------------------------------------
@needs_rtl
def test_network_runner_sim_backend_equals_golden():
    """NetworkRunner(backend="sim") runs execute() in one simulation: == golden backend == the int8 network."""
    from litefly.config import NetworkConfig
    from litefly.host.runtime import NetworkRunner
    from test_conformance import CONF_NET
    net = NetworkConfig.from_dict(CONF_NET)
    want = network_forward_int(STEPS, PARAMS, X)
    sim = NetworkRunner(net, PARAMS, backend="sim", envelope=ENV, stall="slow_sink", seed=3)
    y = sim.run_int(X)
    gold = NetworkRunner(net, PARAMS, backend="golden", envelope=ENV).run_int(X)
    np.testing.assert_array_equal(np.asarray(y).reshape(want.shape), want)
    np.testing.assert_array_equal(np.asarray(gold).reshape(want.shape), want)
    assert [s["layer"] for s in sim.stats] == [s.name for s in STEPS]
    assert all(s["cycles"] > 0 and s["backend"] == "sim" for s in sim.stats)
    assert sim.total["cycles"] == sum(s["cycles"] for s in sim.stats)
    assert set(sim.total["host_stage[s]"]) >= {"dispatch", "wait"}


RING_NET = {"name": "ring", "input_size": [8, 8], "layers": [
    {"name": "r1", "kind": "conv2d", "in_channels": 7, "out_channels": 14, "kernel": [3, 3], "padding": 1,
     "chain": [[14, 63, 2, 9, 7], [14, 14, 2, 2, 7]], "format": {"bias": True}},
    {"op": "relu"}]}


@needs_rtl
@pytest.mark.parametrize("stall", ["none", "bursty_source"])
def test_ring_pass_on_verilator_through_the_runtime(stall):
    """24 images of 8x8x7 through rand64's 512-beat frame buffer (8 images) in one pass: the runtime
    streams three buffers' worth, the output equals the int8 network, and CYCLES the model."""
    from litefly.fixed import random_float_weights
    from litefly.host.runtime import NetworkRunner
    from litefly.network import plan_network, quantize_network
    net = NetworkConfig.from_dict(RING_NET)
    steps = plan_network(net, (7, 8, 8))
    desc = ENV.describe(steps[0])
    assert ENV.ring and desc.images_per_pass == 8 and desc.pass_images(24) == 24
    rng = np.random.default_rng(5)
    xf = rng.standard_normal((24, 7, 8, 8))
    params = quantize_network(steps, {s.name: random_float_weights(s.layer, rng) for s in steps}, xf,
                              {s.name: rng.standard_normal(s.layer.chain_out) for s in steps})
    x = params["r1"].quantize_input(xf)
    sim = NetworkRunner(net, params, backend="sim", envelope=ENV, stall=stall, seed=4)
    y = sim.run_int(x)
    np.testing.assert_array_equal(np.asarray(y).reshape(-1), network_forward_int(steps, params, x).reshape(-1))
    st = sim.stats[0]
    assert (st["passes"], st["images_per_pass"]) == (1, 24)
    if stall == "none":
        assert st["cycles"] == st["model_cycles"]


@needs_rtl
def test_never_started_engine_times_out_in_one_line():
    """START dropped: the DMA wait ends after its budget of simulated cycles with a one-line DMATimeout."""
    from litefly.host.runtime import prepare_program
    from litefly.host.sim_transport import run_network_sim
    from litefly.host.transport import DMATimeout
    prog = prepare_program(ENV, STEPS, PARAMS)
    with pytest.raises(DMATimeout) as exc:
        run_network_sim(prog, X, timeout=1e-4, skip_start=True)
    msg = str(exc.value)
    assert "\n" not in msg and "did not complete within" in msg and "KeyError" not in msg


# -- the CLI -----------------------------------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "litefly", *args], capture_output=True, text=True, env=env,
                          timeout=1200)


def _small_network_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny_net.yaml"
    p.write_text(TINY_NET)
    return p


def test_cli_missing_simulator_is_one_line(tmp_path):
    env = dict(os.environ, PATH="/nonexistent")
    r = _cli("sim", str(_small_network_file(tmp_path)), "--simulator", "icarus", env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error: icarus: iverilog not found")


@needs_rtl
@needs_icarus
def test_cli_happy_path_writes_report(tmp_path):
    rep = tmp_path / "r.json"
    r = _cli("sim", str(_small_network_file(tmp_path)), "--simulator", SIMULATOR, "--stall", "slow_sink",
             "--images", "3", "--report", str(rep))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bit-exact" in r.stdout and "c1" in r.stdout and rep.exists()
    import json
    data = json.loads(rep.read_text())
    assert data["bit_exact"] and data["engine"] == FAULT_ENV.name
    assert data["layers"][0]["counters"]["COLUMNS_DONE"] == 3 * 2 * 2          # 3 images of 2x2 after pooling


@needs_rtl
@needs_icarus
def test_cli_reports_mismatch_with_exit_1(tmp_path):
    r = _cli("sim", str(_small_network_file(tmp_path)), "--simulator", SIMULATOR, "--fault", "window_pad")
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("mismatch: output (n, c, y, x)=")


def test_cli_bad_network_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nlayers: []\n")
    r = _cli("sim", str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@needs_rtl
@pytest.mark.parametrize("board", ["pynq-z2", pytest.param("zcu104", marks=pytest.mark.slow)])
def test_board_default_engine_runs_the_vgg_example_at_batch_8(tmp_path, board):
    """``litefly sim --board``: the board's default engine (the one ``litefly build --board`` makes),
    Verilated, on the VGG example at batch 8, 32x32: bit-exact, every layer one pass through the
    frame buffer as a ring, and CYCLES the cycle model's to the cycle (the figures the bench's
    golden backend reports). PYNQ-Z2 about 25 s; the ZCU104's 256-lane, 1,024-DSP engine about 4 min
    (``-m slow``)."""
    import json
    from litefly.config import load_network
    rep = tmp_path / "r.json"
    vgg = Path(__file__).resolve().parent.parent / "examples" / "vgg_net.yaml"
    r = _cli("sim", str(vgg), "--board", board, "--images", "8", "--report", str(rep))
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(rep.read_text())
    env = EngineEnvelope.for_network(load_network(vgg), (32, 32), board=board)
    assert data["bit_exact"] and data["board"] == board and data["engine_hash"] == f"0x{env.hash32:08x}"
    assert [s["passes"] for s in data["layers"]] == [1, 1, 1]
    assert all(s["cycles"] == s["model_cycles"] for s in data["layers"]), [(s["cycles"], s["model_cycles"])
                                                                          for s in data["layers"]]
    # the bench's figures: each layer's planned pass of all 8 images (266,585 and, with row octets, 94,545 cycles)
    from litefly.network import plan_network
    descs = env.describe_network(plan_network(load_network(vgg), (3, 32, 32)))
    assert [s["cycles"] for s in data["layers"]] == [d.pass_cycles(8) for d in descs]

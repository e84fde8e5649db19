"""The simulated backend's plumbing, without the RTL: SimTransport + EngineDriver + execute in a
cocotb bridge thread (Icarus, clock-only module), with the engine model standing in for the
engine (tests/host_sim_mech.py); job files round-trip; the runner's one-line errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from litefly.errors import ToolError
from litefly.host.sim_transport import load_jobs, program_params, save_jobs
from litefly.host.runtime import prepare_program
from random_networks import ENVELOPES, random_case
from test_conformance import PARAMS, STEPS, X
from sim_common import model_script

HERE = Path(__file__).parent
ENV = ENVELOPES["rand64"]


@pytest.fixture(scope="module")
def icarus_build(tmp_path_factory):
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog not installed")
    from cocotb_tools.runner import get_runner
    d = tmp_path_factory.mktemp("mech")
    (d / "clkonly.v").write_text("module clkonly(input clk); endmodule\n")
    r = get_runner("icarus")
    r.build(sources=[d / "clkonly.v"], hdl_toplevel="clkonly", build_dir=d / "build", timescale=("1ns", "1ps"))
    return r, d


def run_mech(icarus_build, jobs, tag):
    r, d = icarus_build
    inp, out = d / f"jobs_{tag}.npz", d / f"out_{tag}.json"
    save_jobs(inp, jobs)
    env = {"HOST_MECH": json.dumps({"envelope": ENV.to_dict(), "jobs": str(inp), "outputs": str(out)}),
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    r.test(test_module="host_sim_mech", hdl_toplevel="clkonly", build_dir=d / "build", test_dir=d,
           extra_env=env, timescale=("1ns", "1ps"))
    return json.loads(out.read_text())


def test_jobs_round_trip(tmp_path):
    c = random_case(3, ENV)
    save_jobs(tmp_path / "j.npz", [c.job(), {"kind": "script", "script": "passes", "steps": STEPS,
                                             "params": PARAMS, "x": X, "seed": 2}])
    a, b = load_jobs(tmp_path / "j.npz")
    assert [s.name for s in a["steps"]] == [s.name for s in c.steps] and a["stall"] == c.stall
    assert [s.in_shape for s in a["steps"]] == [s.in_shape for s in c.steps]
    assert a["steps"] == c.steps                      # every field, fold_input's `foldable` included
    from litefly.host.sim_transport import steps_from_json, steps_to_json
    off = tuple(dataclasses.replace(s, foldable=False) for s in c.steps)
    assert steps_from_json(steps_to_json(off)) == off
    for s in c.steps:
        for w0, w1 in zip(c.params[s.name].weights, a["params"][s.name].weights):
            np.testing.assert_array_equal(w0, w1)
    np.testing.assert_array_equal(a["x"], c.x)
    assert b["script"] == "passes" and b["seed"] == 2


def test_program_params_round_trip():
    """run_network_sim ships a NetworkProgram as integer parameters: decoding the packed bytes
    and preparing again gives the same packed bytes."""
    c = random_case(5, ENV)
    prog = prepare_program(ENV, c.steps, c.params)
    again = prepare_program(ENV, c.steps, program_params(prog))
    for a, b in zip(prog.params, again.params):
        np.testing.assert_array_equal(a, b)


def test_sim_transport_mechanics(icarus_build):
    cases = [random_case(s, ENV) for s in (1, 2, 7)]
    jobs = [c.job() for c in cases]
    jobs.append({"kind": "script", "script": "reset_output_pending", "steps": STEPS, "params": PARAMS, "x": X})
    jobs.append({"kind": "network", "steps": STEPS, "params": PARAMS, "x": X, "fault": "never_start",
                 "timeout": 1e-4})
    res = run_mech(icarus_build, jobs, "main")
    for k, c in enumerate(cases):
        assert "error" not in res[str(k)], res[str(k)]
        np.testing.assert_array_equal(np.array(res[str(k)]["y"]), c.expected)
    assert res["3"]["trace"] == model_script(ENV, "reset_output_pending", STEPS, PARAMS, X)
    err = res["4"]["error"]
    # the receive waits at most the driver's bound (1e-4 s = 10,000 cycles at 100 MHz), in simulated time
    assert err.startswith("DMATimeout: output DMA receive did not complete within"), err
    assert res["4"]["sim_ns"] < 2e6


def test_runner_missing_generator_or_simulator_is_one_line(monkeypatch):
    from litefly.sim import runner
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolError) as exc:
        runner.prepare(ENV, "icarus")
    assert "\n" not in str(exc.value)


def test_run_cocotb_timeout_is_a_one_line_tool_error(monkeypatch, tmp_path):
    """A simulation that outlives its wall-clock budget is killed: one-line ToolError, no KeyError."""
    from litefly.sim import runner

    class Gen:
        verilog = tmp_path / "hang.v"
        module = "hang"
        manifest_data: dict = {}

    Gen.verilog.write_text("module hang(input clk); endmodule\n")
    monkeypatch.setattr(runner, "check_simulator", lambda name: None)
    import litefly.hw as hw_pkg  # noqa: F401

    def fake_generate(envelope, out_dir, fault=None):
        return Gen

    import sys
    import types
    mod = types.ModuleType("litefly.hw.generate")
    mod.generate = fake_generate
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", mod)
    monkeypatch.setenv("LITEFLY_CACHE", str(tmp_path / "cache"))
    # the child process sleeps: python -c 'sleep' stands in for a hung simulator
    monkeypatch.setattr(runner.sys, "executable", shutil.which("sleep") or "/bin/sleep")
    monkeypatch.setattr(runner, "_child_argv", lambda jfile: ["30"], raising=False)
    with pytest.raises(ToolError) as exc:
        runner.run_cocotb(ENV, "nothing", {}, simulator="icarus", timeout_s=1.0)
    msg = str(exc.value)
    assert "\n" not in msg and "did not finish within 1 s" in msg

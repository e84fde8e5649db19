"""Conformance: the same register/stream scripts (sequences of EngineDriver operations) on the
engine model (GoldenTransport) and on the RTL (Verilator, SimTransport) give the same outputs,
the same STATUS words and the same exact counters, soft reset in the middle of a pass included.

The scripts live in ``litefly.sim.scripts``. ``test_checker_catches_old_soft_reset`` shows the
comparison fails on the old behaviour (an engine whose soft reset keeps PARAMS_VALID, or
leaves the pending output on m_axis), modelled on the model side so it runs without the RTL.
"""

from __future__ import annotations

import numpy as np
import pytest

from litefly.config import NetworkConfig
from litefly.fixed import random_float_weights
from litefly.host.golden_transport import GoldenTransport
from litefly.hw import regmap
from litefly.network import network_forward_int, plan_network, quantize_network
from litefly.sim.scripts import SCRIPTS
from random_networks import ENVELOPES
from sim_common import first_diff, model_script, needs_rtl

ENV = ENVELOPES["rand64"]          # shares its Verilator build with test_random_networks


CONF_NET = {"name": "conf", "input_size": [6, 5], "layers": [
    {"name": "c1", "kind": "conv2d", "in_channels": 5, "out_channels": 12, "kernel": [3, 2], "stride": [1, 2],
     "padding": [1, 1], "dilation": [1, 1], "chain": [[30, 30, 3, 3, 1], [12, 30, 2, 5, 3]],
     "format": {"bias": True}},
    {"op": "relu"},
    {"op": "maxpool2d", "kernel": 2},
    {"op": "flatten"},
    {"name": "f2", "kind": "linear", "in_features": 36, "out_features": 8, "chain": [[8, 36, 2, 9, 1]],
     "format": {"bias": True, "relu": False}},
]}


def conformance_network():
    """Conv 3x2 (C=5, pad 1, stride 1x2) + ReLU + 2x2 pool, flatten, linear: 2 layers, 3 images."""
    net = NetworkConfig.from_dict(CONF_NET)
    steps = plan_network(net, (5, 6, 5))
    rng = np.random.default_rng(3)
    xf = rng.standard_normal((3, 5, 6, 5))
    params = quantize_network(steps, {s.name: random_float_weights(s.layer, rng) for s in steps}, xf,
                              {s.name: rng.standard_normal(s.layer.chain_out) for s in steps})
    x = params[steps[0].name].quantize_input(xf)
    x[0, 0, 0, :] = -128
    x[1, 1, 2, :] = 127
    return steps, params, x


STEPS, PARAMS, X = conformance_network()


class OldSoftResetKeepsParams(GoldenTransport):
    """The old model: soft reset kept PARAMS_VALID (the RTL cleared it)."""

    def _reset_datapath(self) -> None:
        valid = getattr(self, "_params_valid", False)
        super()._reset_datapath()
        self._params_valid = valid


class OldSoftResetKeepsOutput(GoldenTransport):
    """The old RTL: soft reset left the pending output word(s) on m_axis (tvalid stayed 1)."""

    def _reset_datapath(self) -> None:
        pending = list(getattr(self, "_out", []))
        super()._reset_datapath()
        self._out = pending


def test_model_scripts_run_and_are_deterministic():
    for name in SCRIPTS:
        a = model_script(ENV, name, STEPS, PARAMS, X)
        b = model_script(ENV, name, STEPS, PARAMS, X)
        assert a == b and len(a) > 2, name


def test_model_network_script_equals_golden_network():
    trace = dict((t, v) for t, v in model_script(ENV, "network", STEPS, PARAMS, X))
    want = network_forward_int(STEPS, PARAMS, X)
    assert trace["network output"] == want.astype(int).ravel().tolist()


def test_model_soft_reset_contract():
    """After SOFT_RESET with output pending: STATUS all clear, counters zero, next pass correct."""
    trace = dict((t, v) for t, v in model_script(ENV, "reset_output_pending", STEPS, PARAMS, X))
    assert trace["STATUS after SOFT_RESET (output was pending)"] == 0
    assert set(trace["counters after SOFT_RESET"].values()) == {0}
    st = regmap.unpack("STATUS", trace["STATUS after pass after reset"])
    assert st["DONE"] == 1 and st["PARAMS_VALID"] == 1 and st["BUSY"] == 0


@pytest.mark.parametrize("old", [OldSoftResetKeepsParams, OldSoftResetKeepsOutput], ids=["params_valid", "tvalid"])
def test_checker_catches_old_soft_reset(old):
    """The comparison has teeth: the old soft-reset behaviours give a different trace."""
    diffs = [first_diff(model_script(ENV, name, STEPS, PARAMS, X),
                        model_script(ENV, name, STEPS, PARAMS, X, transport_cls=old))
             for name in ("reset_output_pending", "reset_idle_keeps_descriptor")]
    assert any(diffs), f"{old.__name__} is not told apart from the contract"


def test_model_done_only_after_output_sent():
    from sim_common import model_driver
    from litefly.host.runtime import prepare_program
    from litefly.hw.wireformat import pack_tensor
    d = model_driver(ENV)
    prog = prepare_program(ENV, STEPS, PARAMS)
    desc = prog.descriptors[0]
    d.write_descriptor(desc, prog.shifts[0], 1)
    buf = d.transport.allocate((prog.params[0].size,))
    buf[:] = prog.params[0]
    d.load_params(buf, prog.params[0].size)
    data = pack_tensor(X[:1], ENV.elems_per_beat)
    d.ctrl("START")
    d.transport.sendchannel.transfer(data, nbytes=data.size)
    d.transport.sendchannel.wait(1.0)
    st = d.status()                     # no receive armed: the output cannot have been sent
    assert st["DONE"] == 0 and st["BUSY"] == 1


# -- the RTL --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rtl_traces():
    from litefly.host.sim_transport import run_sim_jobs
    jobs = [{"kind": "script", "script": name, "steps": STEPS, "params": PARAMS, "x": X, "soft_reset": True}
            for name in SCRIPTS]
    # the same scripts again against a slow consumer and a bursty producer
    jobs += [{"kind": "script", "script": name, "steps": STEPS, "params": PARAMS, "x": X, "soft_reset": True,
              "stall": "both_slow", "seed": 4} for name in ("passes", "reset_output_pending", "network")]
    results, summary = run_sim_jobs(ENV, jobs, sim_timeout_s=900)
    return jobs, results, summary


@needs_rtl
@pytest.mark.parametrize("k", range(len(SCRIPTS) + 3))
def test_rtl_conforms_to_model(rtl_traces, k):
    jobs, results, summary = rtl_traces
    job, res = jobs[k], results[k] if k < len(results) else {"error": f"no result ({summary.get('failures')})"}
    assert not res.get("error"), f"{job['script']}: {res.get('error_type')}: {res['error']}"
    want = model_script(ENV, job["script"], STEPS, PARAMS, X)
    diff = first_diff(want, res["trace"])
    assert diff is None, f"{job['script']} ({job.get('stall', 'none')}): {diff}"

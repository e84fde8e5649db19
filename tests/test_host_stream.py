"""NetworkRunner.run_stream: a batch's input and output work overlapped with the engine's run of
its neighbour (two buffer sets), outputs equal to run()'s, and the host time the passes cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litefly.config import LayerConfig, NetworkConfig, load_network
from litefly.errors import ShapeError
from litefly.fixed import random_float_weights
from litefly.host.runtime import NetworkRunner
from litefly.network import plan_network, quantize_network

from network_params import calibrated_network_params
from test_residual import projection_net, tiny_resnet

VGG = Path(__file__).resolve().parent.parent / "examples" / "vgg_net.yaml"


@pytest.fixture(scope="module")
def vgg():
    net = load_network(VGG)
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((3, 3, 8, 8)) for _ in range(4)]
    params, _ = calibrated_network_params(net, xs[0], np.random.default_rng(8))
    return net, params, xs


def serial(runner: NetworkRunner, xs) -> list[np.ndarray]:
    return [np.array(runner.run(x)) for x in xs]


def test_stream_outputs_equal_run_and_the_host_work_runs_during_passes(vgg):
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    want = serial(runner, xs)
    got = [np.array(y) for y in runner.run_stream(iter(xs))]
    assert len(got) == 4
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    runs = runner.stream_totals
    assert len(runs) == 4 and runner.total is runs[-1]
    for k, t in enumerate(runs):
        host = sum(v for s, v in t["host_stage[s]"].items() if s != "wait")
        assert 0 <= t["hidden[s]"] <= min(host, t["engine_s"])
        assert t["cycles"] == sum(st["cycles"] for st in runner.stats)
        # the steady-state runs dequantise the batch before and quantise the batch after during passes
        if 0 < k < 3:
            assert t["hidden[s]"] > 0 and t["host_stage[s]"]["unpack"] > 0 and t["host_stage[s]"]["quantize"] > 0
    assert runs[0]["host_stage[s]"]["unpack"] == 0          # nothing before the first batch to read out
    assert runs[-1]["host_stage[s]"]["quantize"] == 0       # nothing after the last batch to write


def test_a_wrong_pipeline_fails_the_comparison(vgg, monkeypatch):
    """The test above can fail: a stream that wrote the next batch into the buffers the engine is
    running on (one buffer set) gives wrong outputs."""
    from litefly.host import runtime
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    want = serial(runner, xs)
    real = runtime._buffers

    def one_set(driver, program, batch, sets=1):
        bufs = real(driver, program, batch, 1)
        return dict(bufs, sets=[bufs["acts"], bufs["acts"]])
    monkeypatch.setattr(runtime, "_buffers", one_set)
    got = [np.array(y) for y in runner.run_stream(xs)]
    assert any(not np.array_equal(g, w) for g, w in zip(got, want))


def test_outputs_stay_valid_while_the_consumer_keeps_them(vgg):
    """Output memory is reused only once the consumer has dropped an output: a list of all of them holds."""
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    want = serial(runner, xs)
    kept = list(runner.run_stream(xs))
    for g, w in zip(kept, want):
        np.testing.assert_array_equal(g, w)


def test_a_batch_of_another_size_drains_and_restarts_the_pipeline(vgg):
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    batches = [xs[0], xs[1][:2], xs[2][:2], xs[3], np.concatenate([xs[0], xs[1]])]
    want = serial(runner, batches)
    got = [np.array(y) for y in runner.run_stream(batches)]
    assert [g.shape[0] for g in got] == [3, 2, 2, 3, 6]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert runner.stream_totals[0]["host_stage[s]"]["unpack"] > 0     # drained: its own output read at once


def test_bad_input_in_a_stream_yields_what_came_before_then_one_line(vgg):
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    want = serial(runner, xs[:2])
    bad = xs[2].copy()
    bad[1, 0, 2, 2] = np.nan
    got = []
    with pytest.raises(ShapeError, match=r"the input holds NaN") as err:
        for y in runner.run_stream([xs[0], xs[1], bad, xs[3]]):
            got.append(np.array(y))
    assert "\n" not in str(err.value)
    assert len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ShapeError, match=r"expected \(N, 3, H, W\)"):
        list(runner.run_stream([xs[0], np.zeros((2, 5, 8, 8))]))
    # the runner still works after a refused stream
    np.testing.assert_array_equal(runner.run(xs[0]), want[0])


def test_residual_branch_and_linear_networks_stream_exactly():
    net = projection_net()
    steps = plan_network(net, (3, 8, 8))
    rng = np.random.default_rng(3)
    w = {s.name: random_float_weights(s.layer, rng) for s in steps}
    xs = [rng.standard_normal((2, 3, 8, 8)) for _ in range(3)]
    params = quantize_network(steps, w, xs[0])
    runner = NetworkRunner(net, params, "golden")
    want = serial(runner, xs)
    for g, w_ in zip(runner.run_stream(xs), want):
        np.testing.assert_array_equal(g, w_)
    lay = LayerConfig.from_dict({"name": "fc", "kind": "linear", "in_features": 16, "out_features": 16,
                                 "chain": [[16, 16, 4, 4, 1], [16, 16, 4, 4, 4]], "format": {"bias": True}})
    lin = NetworkConfig("lin", (lay,))
    xs = [np.random.default_rng(k).standard_normal((5, 16)) for k in range(3)]
    lparams, _ = calibrated_network_params(lin, xs[0], np.random.default_rng(4))
    runner = NetworkRunner(lin, lparams, "golden")
    want = serial(runner, xs)
    got = list(runner.run_stream(xs))
    assert all(g.shape == (5, 16) for g in got)
    for g, w_ in zip(got, want):
        np.testing.assert_array_equal(g, w_)


def test_host_ops_between_programs_run_batch_after_batch():
    """A global pool on the host splits the network into engine programs: the stream runs the
    batches one after another (nothing hidden), with the same outputs."""
    net, steps, params, _ = tiny_resnet()
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((2, 3, 6, 6)) for _ in range(3)]
    runner = NetworkRunner(net, params, "golden", input_size=(6, 6))
    want = serial(runner, xs)
    got = list(runner.run_stream(xs))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert [t["hidden[s]"] for t in runner.stream_totals] == [0.0, 0.0, 0.0]


def test_an_engine_done_at_once_hides_nothing(vgg):
    """On a board the slices run while the receive channel is busy: a channel idle at once (an
    engine already done) runs them after the pass, so nothing is counted as hidden."""
    net, params, xs = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    want = serial(runner, xs[:3])
    driver = runner._open()

    class IdleAtOnce:
        idle = True

        def __init__(self, ch):
            self._ch = ch

        def __getattr__(self, name):
            return getattr(self._ch, name)

    class Board:
        def __init__(self, tr):
            self._tr, self.recvchannel = tr, IdleAtOnce(tr.recvchannel)

        def __getattr__(self, name):
            return getattr(self._tr, name)
    driver.transport = Board(driver.transport)
    got = [np.array(y) for y in runner.run_stream(xs[:3])]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert all(t["hidden[s]"] == 0.0 for t in runner.stream_totals)


def test_an_empty_stream_yields_nothing(vgg):
    net, params, _ = vgg
    runner = NetworkRunner(net, params, "golden", input_size=(8, 8))
    assert list(runner.run_stream([])) == [] and runner.stream_totals == []

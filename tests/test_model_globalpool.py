"""Global pooling as a host op (globalavgpool / globalmaxpool): exact integer semantics, planning,
export of the PyTorch forms, refusals in one line, the runtime between two engine programs and
the bench's host-op row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from litefly.config import HostOp, NetworkConfig, load_network
from litefly.convert import ConvertConfig, convert_model
from litefly.errors import ConfigError, LiteflyError
from litefly.export import export_int8, int8_forward, load_int8, save_int8
from litefly.network import global_pool_int, network_forward_int, plan_network, step_forward_int

torch.set_num_threads(1)


# -- integer semantics ------------------------------------------------------------------------------
def test_global_max_is_the_int8_max_and_avg_rounds_half_up():
    x = np.array([[[[1, 2]], [[-1, -2]], [[127, 126]], [[-128, -128]], [[3, 3]]]], np.int8)   # (1, 5, 1, 2)
    assert global_pool_int(x, "globalmaxpool").ravel().tolist() == [2, -1, 127, -128, 3]
    # 1.5 -> 2, -1.5 -> -1 (half up, towards +inf), 126.5 -> 127, exact values stay
    avg = global_pool_int(x, "globalavgpool")
    assert avg.dtype == np.int8 and avg.shape == (1, 5, 1, 1)
    assert avg.ravel().tolist() == [2, -1, 127, -128, 3]


def test_global_avg_matches_round_half_up_of_the_exact_mean_on_random_maps():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (3, 7, 5, 6)).astype(np.int8)
    mean = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    want = np.floor(mean + 0.5)           # the sums are integers over 30: no float tie is ambiguous here
    assert np.array_equal(global_pool_int(x, "globalavgpool"), want.astype(np.int8))
    assert np.array_equal(global_pool_int(x, "globalmaxpool"), x.max(axis=(2, 3), keepdims=True))
    with pytest.raises(ConfigError, match="not a global pool"):
        global_pool_int(x, "avgpool2d")


# -- planning -----------------------------------------------------------------------------------------
def _conv(name="c", cin=4, cout=8):
    from litefly.config import LayerConfig
    return LayerConfig.from_dict({"name": name, "kind": "conv2d", "in_channels": cin, "out_channels": cout,
                                  "kernel": 3, "padding": 1, "chain": [[cout, 9 * cin, cout, 9 * cin, 1]]})


def _lin(name="fc", cin=8, cout=3):
    from litefly.config import LayerConfig
    return LayerConfig.from_dict({"name": name, "kind": "linear", "in_features": cin, "out_features": cout,
                                  "chain": [[cout, cin, cout, cin, 1]]})


@pytest.mark.parametrize("op", ["globalavgpool", "globalmaxpool"])
def test_plan_puts_the_pool_before_the_next_layer(op):
    net = NetworkConfig("n", (_conv(), HostOp("relu"), HostOp(op), HostOp("flatten"), _lin()))
    steps = plan_network(net, (4, 6, 5))
    assert [s.pre for s in steps] == [None, op]
    assert steps[0].relu and steps[0].out_shape == (8, 6, 5) and steps[1].in_shape == (8, 1, 1)
    # no flatten needed: a 1x1 map is what a linear layer reads
    assert plan_network(NetworkConfig("n", (_conv(), HostOp(op), _lin())), (4, 6, 5))[1].pre == op


@pytest.mark.parametrize("ops,match", [
    ((HostOp("globalmaxpool"),), "not followed by a layer"),
    ((HostOp("globalmaxpool"), HostOp("relu"), _lin()), "put it before the global pool"),
    ((HostOp("globalavgpool"), HostOp("globalmaxpool"), _lin()), "does not follow a layer's map"),
    ((HostOp("flatten"), HostOp("globalmaxpool"), _lin(cin=240)), "does not follow a layer's map"),
])
def test_plan_refuses_misplaced_global_pools(ops, match):
    with pytest.raises(ConfigError, match=match) as e:
        plan_network(NetworkConfig("n", (_conv(),) + ops), (4, 6, 5))
    assert "\n" not in str(e.value)


def test_network_file_round_trip(tmp_path):
    net = NetworkConfig("n", (_conv(), HostOp("globalavgpool"), _lin()), input_size=(6, 5))
    import yaml
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(net.to_dict()))
    assert load_network(tmp_path / "n.yaml") == net
    assert net.to_dict()["layers"][1] == {"op": "globalavgpool"}


# -- export -------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self, pool, fc_in=16):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 1), nn.Linear(fc_in, 5)
        self.pool = pool

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        p = self.pool
        if p == "mean":
            x = x.mean((2, 3))
        elif p == "amax":
            x = torch.amax(x, dim=(-2, -1), keepdim=True).flatten(1)
        elif p == "mean1":
            x = x.mean(1).flatten(1)
        elif p == "fmax":
            x = nn.functional.adaptive_max_pool2d(x, 1).flatten(1)
        else:
            x = p(x).flatten(1)
        return self.fc(x)


def _debut(pool, h=6, w=6, n=24, fc_in=16):
    torch.manual_seed(0)
    model = _Net(pool, fc_in)
    x = torch.randn(n, 3, h, w)
    debut, _ = convert_model(model, ConvertConfig(compression=0.5, sweeps=0), example_input=x[:1])
    return debut, x


@pytest.mark.parametrize("pool,op,h,w", [
    (nn.AdaptiveAvgPool2d(1), "globalavgpool", 6, 6), (nn.AdaptiveMaxPool2d((1, 1)), "globalmaxpool", 6, 6),
    ("mean", "globalavgpool", 6, 6), ("amax", "globalmaxpool", 6, 6), ("fmax", "globalmaxpool", 6, 6),
    (nn.MaxPool2d((16, 1)), "globalmaxpool", 16, 1),         # PointNet's pool over P x 1 points
    (nn.AvgPool2d(6), "globalavgpool", 6, 6),                # ResNet's AvgPool2d(8) on its 8x8 map
    (nn.MaxPool2d(6), "globalmaxpool", 6, 6),                # a window above the engine's 4
])
def test_export_maps_global_pools_and_int8_matches_float(pool, op, h, w):
    debut, x = _debut(pool, h, w)
    network, params = export_int8(debut, x)
    kinds = [s.op if isinstance(s, HostOp) else s.kind for s in network.steps]
    assert op in kinds and "avgpool2d" not in kinds
    y = int8_forward(network, params, x.double().numpy())
    with torch.no_grad():
        f = debut(x).double().numpy()
    assert np.abs(y - f).max() <= 0.1 * np.abs(f).max()


def test_a_small_max_pool_over_the_whole_map_stays_fused_on_the_engine():
    debut, x = _debut(nn.MaxPool2d(4), 4, 4)
    network, _ = export_int8(debut, x)
    steps = plan_network(network, (3, 4, 4))
    assert steps[1].pool == (4, 4) and steps[2].pre is None


@pytest.mark.parametrize("pool,h,w,fc_in,match", [
    (nn.AdaptiveAvgPool2d(2), 6, 6, 64, r"AdaptiveAvgPool2d 'pool' with output size 2 .* only output size 1"),
    ("mean1", 6, 6, 36, r"mean over dims \(1,\) is not a global pool over H and W"),
    (nn.AvgPool2d(2), 6, 6, 144, r"'pool' \(average pooling\) after layer 'c2' .* not the whole 6x6 map"),
    (nn.MaxPool2d((3, 1)), 6, 1, 32, r"'pool' \(MaxPool2d\) after layer 'c2' has a 3x1 window on a 6x1 map"),
])
def test_export_refuses_other_pools_in_one_line_naming_op_and_layer(pool, h, w, fc_in, match):
    debut, x = _debut(pool, h, w, fc_in=fc_in)
    with pytest.raises(LiteflyError, match=match) as e:
        export_int8(debut, x)
    assert "\n" not in str(e.value)


# -- runtime and bench --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    debut, x = _debut(nn.AdaptiveMaxPool2d(1))
    network, params = export_int8(debut, x, name="gpool")
    out = tmp_path_factory.mktemp("gpool")
    save_int8(network, params, out)
    return network, params, x.double().numpy(), out


def test_runner_runs_two_engine_programs_with_the_pool_between_them(exported):
    from litefly.host.runtime import NetworkRunner
    network, params, x, out = exported
    network, params = load_int8(out)                 # the network file keeps the op
    golden = int8_forward(network, params, x)
    with NetworkRunner(network, params, "golden", input_size=(6, 6)) as r:
        assert [op for op, _ in r.segments((3, 6, 6))] == [None, "globalmaxpool"]
        y = r.run(x)
        assert np.array_equal(y, golden)
        ops = [s.get("host_op") for s in r.stats]
        assert ops[:2] == [None, None] and ops[2]["op"] == "globalmaxpool"
        assert ops[2]["in_shape"] == [16, 6, 6] and ops[2]["out_shape"] == [16, 1, 1] and ops[2]["host[s]"] > 0
        assert r.total["host_stage[s]"]["host_op"] == pytest.approx(ops[2]["host[s]"])
        # the golden network without the host op would be wrong: the pool is really applied
        steps = plan_network(network, (3, 6, 6))
        q = params[steps[0].name].quantize_input(x)
        mid = network_forward_int(steps[:2], params, q)
        assert np.array_equal(step_forward_int(steps[2], params[steps[2].name], mid.max(axis=(2, 3), keepdims=True))
                              * params[steps[2].name].out_scale, golden.reshape(golden.shape + (1, 1)))


def test_bench_reports_the_host_op_with_its_measured_time(exported):
    from litefly.host.bench import render_table, run_bench
    network, _, _, out = exported
    rep = run_bench(network, backend="golden", input_size=(6, 6), batch=2, params_dir=out, repeats=1)
    (op,) = rep["host_ops"]
    assert op["op"] == "globalmaxpool" and op["before"] == network.layers[-1].name and op["host[s]"] > 0
    assert rep["total"]["host_stage[s]"]["host_op"] == pytest.approx(op["host[s]"])
    assert rep["total"]["host_transfers"] == 4
    from rich.console import Console
    c = Console(width=400, record=True)
    c.print(render_table(rep))
    assert "host: globalmaxpool (16x6x6 -> 16x1x1)" in c.export_text()


def test_board_check_passes_every_layer_with_the_host_op_between(exported):
    from litefly.host.board_check import run_board_check
    network, _, _, out = exported
    rep = run_board_check(network, backend="golden", input_size=(6, 6), batch=2, params_dir=out, repeats=1)
    assert rep["passed"] is True

@pytest.mark.slow
def test_simulated_engine_equals_golden_with_a_global_average_pool_between_programs(tmp_path):
    """The Verilated engine runs the two programs; the host pools between them (one short sim run)."""
    from litefly.host.runtime import NetworkRunner
    debut, x = _debut(nn.AdaptiveAvgPool2d(1), n=6)
    network, params = export_int8(debut, x, name="gpool_sim")
    xs = x.double().numpy()
    with NetworkRunner(network, params, "sim", input_size=(6, 6)) as r:
        y = r.run(xs)
        assert r.stats[2]["host_op"]["op"] == "globalavgpool"
    assert np.array_equal(y, int8_forward(network, params, xs))

"""The engine in Amaranth's simulator against the fixed-point golden model (exact integer equality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amaranth_bench import run_engine
from litefly.chain import butterfly_chain
from litefly.config import LayerConfig, load_layer
from litefly.hw import regmap
from litefly.hw.generate import engine_timing, generate
from litefly.hw.spec import EngineSpec
from litefly.vectors import make_vectors

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "layers"


def linear(name, chain, multipliers=16, stream_bits=64, **fmt) -> LayerConfig:
    return LayerConfig.from_dict({"name": name, "kind": "linear", "in_features": chain[0][1],
                                  "out_features": chain[-1][0], "chain": chain, "format": fmt,
                                  "engine": {"multipliers": multipliers, "stream_bits": stream_bits}})


def check_engine(layer: LayerConfig, tiles=(2,), seed=0, **kw):
    spec = EngineSpec(layer)
    vec = make_vectors(layer, seed=seed, count=sum(tiles) * spec.lanes)
    q = vec.quantized(layer)
    run = run_engine(layer, vec["x"], q.weights, q.shifts, q.bias, list(tiles), **kw)
    got = np.concatenate(run.y)
    assert got.shape == vec["y"].shape
    bad = np.argwhere(got != vec["y"])
    assert bad.size == 0, f"column {bad[0][0]} element {bad[0][1]}: expected {vec['y'][tuple(bad[0])]}, got {got[tuple(bad[0])]}"
    for t, nb in enumerate(tiles):
        assert run.tlast[t] == [nb * spec.beats_out_per_batch - 1]
    return spec, run


def test_butterfly16_two_tiles_counters():
    layer = linear("bf16", [f.as_list() for f in butterfly_chain(16)], multipliers=16)
    spec, run = check_engine(layer, tiles=(2, 1))
    r = run.regs
    assert r["ID"] == regmap.ID_MAGIC and r["CONFIG_HASH"] == layer.hash32 and r["LANES"] == spec.lanes
    assert r["INFO"] == spec.info_word
    assert r["COLUMNS_DONE"] == 3 * spec.lanes
    assert r["BUSY_CYCLES"] == 3 * spec.issue_cycles_per_batch
    assert r["STATUS"] & regmap.STATUS_DONE and r["STATUS"] & regmap.STATUS_PARAMS_VALID
    assert r["STALLED_CYCLES"] == 0


@pytest.mark.parametrize("fmt", [{}, {"bias": True}, {"bias": True, "relu": True}, {"act_bits": 6, "weight_bits": 5, "bias": True}])
def test_two_factor_chain_formats(fmt):
    # 24 -> 12 -> 16 with r, s, t that are not powers of two
    layer = linear("two", [[12, 24, 1, 2, 1], [16, 12, 4, 3, 1]], multipliers=20, stream_bits=32 if fmt.get("act_bits") == 6 else 64, **fmt)
    check_engine(layer, tiles=(2,))


def test_dense_baseline_with_backpressure_and_idle():
    layer = linear("dense", [[8, 12, 8, 12, 1]], multipliers=8, bias=True, relu=True)
    spec, run = check_engine(layer, tiles=(3,), backpressure=[0, 1, 1], idle=[0, 0, 1])
    assert run.regs["STALLED_CYCLES"] > 0


def test_monarch_example_bias_relu():
    check_engine(load_layer(EXAMPLES / "monarch64.yaml"), tiles=(1,))


@pytest.mark.parametrize("fault", ["weight_addr", "rounding"])
def test_fault_is_caught(fault):
    layer = linear("bf16", [f.as_list() for f in butterfly_chain(16)], multipliers=16)
    with pytest.raises(AssertionError, match="column"):
        check_engine(layer, tiles=(2,), fault=fault)


def test_generate_writes_verilog_and_manifest(tmp_path):
    layer = load_layer(EXAMPLES / "vgg_conv2.yaml")
    g = generate(layer, tmp_path)
    text = g.verilog.read_text()
    assert f"module {layer.name}(" in text.replace(" (", "(")
    for port in ("aclk", "aresetn", "s_axis_tdata", "m_axis_tlast", "s_axil_awaddr", "s_axil_rdata"):
        assert port in text
    d = g.manifest_data
    assert d["config_hash"] == layer.config_hash and d["lanes"] == 64
    assert {r["name"] for r in d["registers"]} >= {"ID", "CTRL", "STATUS", "CYCLES", "SHIFT6"}
    assert d["cycles_per_batch"] == engine_timing(EngineSpec(layer))["cycles_per_batch"]
    assert d["mac_utilisation_model"] > 0.99
    faulty = generate(layer, tmp_path / "f", fault="rounding")
    assert faulty.module == "vgg_conv2_fault_rounding"

"""Yosys resource estimates of network engines: cell counting, fit verdicts, the DSP mapping check,
caching, CLI."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from litefly.boards.boards import get_board
from litefly.boards.synth import CEILINGS, count_resources, estimate, verdict
from litefly.config import load_layer, load_network
from litefly.errors import ToolError
from litefly.hw.spec import EngineEnvelope

ROOT = Path(__file__).resolve().parents[1]
FC3 = ROOT / "examples" / "layers" / "pointnet_fc3.yaml"
VGG_NET = ROOT / "examples" / "vgg_net.yaml"

# Small designs standing in for an engine (TEST FIXTURES): Yosys runs in seconds on them.
GOOD = """module tiny(input clk, input signed [7:0] a0, b0, a1, b1, output reg signed [15:0] y0, y1);
  reg [7:0] mem [0:1023]; reg [9:0] addr; reg [7:0] q;
  always @(posedge clk) begin y0 <= a0*b0; y1 <= a1*b1 + q; addr <= addr + 1; q <= mem[addr]; mem[addr] <= a0; end
endmodule
"""
# the 3x3 product is too narrow for Yosys's DSP inference: it lands in LUTs
BAD = """module tiny(input clk, input signed [7:0] a, b, input [2:0] c, d, output reg signed [15:0] y, output reg [5:0] z);
  always @(posedge clk) begin y <= a*b; z <= c*d; end
endmodule
"""


@dataclass
class Eng:
    verilog: Path
    manifest: Path
    manifest_data: dict
    module: str


def generator(text: str, lanes: int = 2, seen: list | None = None):
    def generate(envelope, out_dir, fault=None):
        assert isinstance(envelope, EngineEnvelope)
        if seen is not None:
            seen.append(envelope)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tiny.v").write_text(text)
        (out / "manifest.json").write_text("{}")
        return Eng(out / "tiny.v", out / "manifest.json", {"lanes": lanes}, "tiny")
    return generate


def test_count_resources() -> None:
    cells = {"LUT6": 10, "LUT2": 5, "RAM64M": 2, "SRLC32E": 3, "FDRE": 7, "FDCE": 1, "DSP48E2": 4,
             "RAMB36E2": 2, "RAMB18E2": 3, "URAM288": 1, "CARRY8": 9, "IBUF": 40}
    assert count_resources(cells) == {"lut": 26.0, "ff": 8.0, "dsp": 4.0, "bram36": 3.5, "uram": 1.0}


def test_verdicts() -> None:
    cap = {"lut": 100, "ff": 100, "dsp": 10, "bram36": 10, "uram": 0}
    assert verdict({"lut": 70, "ff": 50, "dsp": 8, "bram36": 8, "uram": 0}, cap) == "fits"
    assert verdict({"lut": 71, "ff": 51, "dsp": 1, "bram36": 0, "uram": 0}, cap) == "tight (lut > 70%, ff > 50%)"
    assert verdict({"lut": 1, "ff": 1, "dsp": 11, "bram36": 0, "uram": 1}, cap) == "does not fit (dsp, uram)"
    assert CEILINGS == {"lut": 0.70, "ff": 0.50, "bram36": 0.80, "uram": 0.80, "dsp": 0.80}


def test_estimate_maps_multipliers_and_caches(tmp_path: Path) -> None:
    layer, board = load_layer(FC3), get_board("pynq-z2")
    passes: list[str] = []
    seen: list = []
    r = estimate(layer, board, generate=generator(GOOD, seen=seen), cache=tmp_path, on_pass=passes.append)
    assert seen == [EngineEnvelope.for_network(load_network(FC3))]      # a layer is a one-layer network
    assert r.config_hash == seen[0].config_hash and r.layers == ["pointnet_fc3"]
    assert not r.cached and "SYNTH_XILINX" in passes
    assert r.used["dsp"] == 2 and len(r.muls) == 2 and r.all_muls_on_dsp and r.unmapped_muls == []
    assert r.dsp_registers["dsps"] == 2 and set(r.dsp_registers) == {"dsps", "AREG", "BREG", "MREG", "PREG"}
    assert isinstance(r.longest_path, int) and r.longest_path > 0
    assert r.used["bram36"] == 0.5 and r.cells.get("RAMB18E1") == 1
    assert r.capacity["dsp"] == 220 and r.verdict == "fits" and r.lanes == 2
    assert r.share["dsp"] == pytest.approx(2 / 220)
    d = r.to_dict()
    assert d["dsp_check"] == {"muls": 2, "dsps": 2, "lanes": 2, "macs_per_dsp_per_cycle": 1.0, "all_on_dsp": True,
                              "unmapped": []}
    again = estimate(layer, board, generate=generator(GOOD), cache=tmp_path)
    assert again.cached and again.used == r.used


def test_dsp_register_and_longest_path_parsers() -> None:
    from litefly.boards.synth import dsp_registers, longest_path
    dump = """
  cell \\DSP48E1 \\u0
    parameter \\AREG 1
    parameter \\BREG 2
    parameter \\MREG 1'1
    parameter \\PREG 1'0
  end
  cell \\DSP48E1 \\u1
    parameter \\AREG 0
    parameter \\BREG 0
    parameter \\MREG 1'0
    parameter \\PREG 1'1
  end
"""
    assert dsp_registers(dump) == {"dsps": 2, "AREG": 1, "BREG": 1, "MREG": 1, "PREG": 1}
    assert longest_path("Longest topological path in top (length=7):\n    0: x") == 7
    assert longest_path("no path") is None


def test_estimate_names_multipliers_left_in_luts(tmp_path: Path) -> None:
    r = estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(BAD), cache=tmp_path)
    assert r.used["dsp"] == 1 and len(r.muls) == 2 and not r.all_muls_on_dsp
    assert len(r.unmapped_muls) == 1 and r.unmapped_muls[0].startswith("$mul$") and r.used["lut"] > 0


def test_estimate_ultrascale(tmp_path: Path) -> None:
    r = estimate(load_layer(FC3), get_board("zcu104"), generate=generator(GOOD), cache=tmp_path)
    assert r.family == "xcup" and r.cells.get("DSP48E2") == 2 and r.all_muls_on_dsp
    assert r.capacity["uram"] == 96


def test_missing_yosys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITEFLY_YOSYS", "no-such-yosys-binary")
    with pytest.raises(ToolError, match="LITEFLY_YOSYS='no-such-yosys-binary' is not an executable on PATH"):
        estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(GOOD), cache=tmp_path, use_cache=False)


def test_cli_synth_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from litefly.cli.main import main
    fake = types.ModuleType("litefly.hw.generate")
    fake.generate = generator(GOOD)
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", fake)
    monkeypatch.setenv("LITEFLY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    main(["synth", str(FC3), "--board", "pynq-z2", "--json", str(out)])
    d = json.loads(out.read_text())
    assert d["board"] == "pynq-z2" and d["used"]["dsp"] == 2 and d["verdict"] == "fits"
    assert d["config_hash"] == EngineEnvelope.for_network(load_network(FC3)).config_hash
    assert d["dsp_check"]["all_on_dsp"] and d["layers"] == ["pointnet_fc3"]
    main(["synth", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "--multipliers", "32",
          "--json", str(out)])
    d = json.loads(out.read_text())
    env = EngineEnvelope.for_network(load_network(VGG_NET), (16, 16), multipliers=32)
    assert d["name"] == "vgg_head" and d["config_hash"] == env.config_hash and d["envelope"]["lanes"] == 32
    assert d["layers"] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(FC3), "--board", "pynq-z2", "--json", str(tmp_path / "nodir" / "r.json")])
    assert exc.value.code == 2


@pytest.mark.slow
@pytest.mark.parametrize("board_name", ["pynq-z2", "zcu104"])
def test_real_engine_multipliers_on_dsps(board_name: str, tmp_path: Path) -> None:
    """Yosys on the real generated engine (minutes): every lane's multiplier is a DSP slice."""
    generate = pytest.importorskip("litefly.hw.generate").generate
    layer = load_layer(FC3)
    r = estimate(layer, get_board(board_name), generate=generate, cache=tmp_path)
    assert r.all_muls_on_dsp, r.unmapped_muls
    assert r.used["dsp"] >= r.lanes
    assert r.verdict == "fits"

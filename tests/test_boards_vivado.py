"""The generated Vivado build of a network engine, checked by executing build.tcl in tclsh with
recording stubs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from boards_fakes import fake_generate
from litefly.boards.boards import BOARDS, get_board
from litefly.boards.vivado import (BD_NAME, DMA_CELL, ENGINE_CELL, engine_ports, parse_utilization,
                                   read_results, write_build)
from litefly.config import load_layer, load_network
from litefly.errors import ConfigError
from litefly.hw.spec import EngineEnvelope

ROOT = Path(__file__).resolve().parents[1]
VGG2 = ROOT / "examples" / "layers" / "vgg_conv2.yaml"
VGG_NET = ROOT / "examples" / "vgg_net.yaml"
TCLSH = shutil.which("tclsh")

# Every command that is not plain Tcl lands in `unknown`, which records it (fields separated
# by \x1f) and returns something plausible: a cell's name for create_bd_cell, the pattern for
# get_* queries, "1" for HAS_TLAST, the object for the rest.
HARNESS = r"""
set ::log [open [lindex $argv 0] w]
proc unknown {args} {
    puts $::log [join [lmap a $args {string map [list "\n" " "] $a}] "\x1f"]
    set cmd [lindex $args 0]
    switch -- $cmd {
        create_bd_cell { return [lindex $args end] }
        get_property {
            if {[lindex $args 1] eq "CONFIG.HAS_TLAST"} { return 1 }
            if {[lindex $args 1] eq "PROGRESS"} { return "100%" }
            if {[string match "STATS.*" [lindex $args 1]]} { return 0.25 }
            return "99.999"
        }
        version { return "2099.1-stub" }
        make_wrapper { return "/stub/litefly_wrapper.v" }
        default { return [lindex $args end] }
    }
}
source [lindex $argv 1]
close $::log
"""


def run_tcl(script: Path, tmp: Path) -> list[list[str]]:
    harness = tmp / "harness.tcl"
    harness.write_text(HARNESS)
    log = tmp / "calls.log"
    res = subprocess.run([TCLSH, str(harness), str(log), str(script)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"tclsh rejected {script.name}:\n{res.stdout}\n{res.stderr}"
    return [line.split("\x1f") for line in log.read_text().splitlines()]


def fake_vivado_products(out: Path, name: str) -> None:
    """Files Vivado would have made inside the project (TEST FIXTURES), so the export step runs."""
    runs = out / "vivado" / f"litefly_{name}.runs" / "impl_1"
    runs.mkdir(parents=True)
    (runs / f"{BD_NAME}_wrapper.bit").write_bytes(b"\x00\x09fixture-bit")
    hh = out / "vivado" / f"litefly_{name}.gen" / "sources_1" / "bd" / BD_NAME / "hw_handoff"
    hh.mkdir(parents=True)
    (hh / f"{BD_NAME}.hwh").write_text("<EDKSYSTEM/>")


def props(call: list[str]) -> dict[str, str]:
    """The CONFIG dict of a `set_property -dict [list ...] obj` call."""
    assert call[:2] == ["set_property", "-dict"]
    items = call[2].split()
    return dict(zip(items[::2], items[1::2]))


def build_for(board_name: str, tmp: Path, config: Path = VGG2, **kw):
    """A build of ``config``'s network engine (a layer is a one-layer network); returns (envelope, plan)."""
    net = load_network(config)
    plan = write_build(net, get_board(board_name), tmp / "build", generate=fake_generate, **kw)
    return plan.envelope, plan


@pytest.mark.skipif(TCLSH is None, reason="tclsh not installed")
@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_block_design(board_name: str, tmp_path: Path) -> None:
    board = get_board(board_name)
    layer, plan = build_for(board_name, tmp_path)
    spec = layer
    fake_vivado_products(plan.out_dir, layer.name)
    calls = run_tcl(plan.tcl, tmp_path)
    cmds = [c[0] for c in calls]

    # project for the right part and board
    create = next(c for c in calls if c[0] == "create_project")
    assert board.part in create
    assert ["set_property", "board_part", board.board_part, "current_project"] in calls
    added = next(c for c in calls if c[0] == "add_files" and "-fileset" not in c)
    assert str(plan.engine_verilog) in added[-1] and str(plan.wrapper) in added[-1]

    # PS with the board preset, HP port at the board's width, PL clock at the engine clock
    ps = next(c for c in calls if c[0] == "create_bd_cell" and board.ps in " ".join(c))
    ps_name = ps[-1]
    auto = next(c for c in calls if c[0] == "apply_bd_automation")
    assert f"xilinx.com:bd_rule:{board.ps}" in auto and 'apply_board_preset "1"' in auto[-2]
    psp = props(next(c for c in calls if c[0] == "set_property" and c[-1] == ps_name))
    if board.ps == "processing_system7":
        assert psp["CONFIG.PCW_USE_S_AXI_HP0"] == "1"
        assert psp["CONFIG.PCW_S_AXI_HP0_DATA_WIDTH"] == str(board.hp_width_bits) == "64"
        assert float(psp["CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ"]) == board.clock_mhz
        assert psp["CONFIG.PCW_USE_M_AXI_GP0"] == "1"
    else:
        assert psp["CONFIG.PSU__USE__S_AXI_GP2"] == "1"                       # S_AXI_HP0_FPD
        assert psp["CONFIG.PSU__SAXIGP2__DATA_WIDTH"] == str(board.hp_width_bits) == "128"
        assert float(psp["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"]) == board.clock_mhz
        assert psp["CONFIG.PSU__USE__M_AXI_GP0"] == "1" and psp["CONFIG.PSU__USE__M_AXI_GP1"] == "0"

    # DMA: simple mode, 26-bit length, both channels at the engine's stream width
    assert ["create_bd_cell", "-type", "ip", "-vlnv", "xilinx.com:ip:axi_dma", DMA_CELL] in calls
    dma = props(next(c for c in calls if c[0] == "set_property" and c[-1] == DMA_CELL))
    assert dma["CONFIG.c_include_sg"] == "0" and dma["CONFIG.c_sg_length_width"] == "26"
    assert dma["CONFIG.c_include_mm2s"] == "1" and dma["CONFIG.c_include_s2mm"] == "1"
    for k in ("c_m_axis_mm2s_tdata_width", "c_s_axis_s2mm_tdata_width", "c_m_axi_mm2s_data_width",
              "c_m_axi_s2mm_data_width"):
        assert dma[f"CONFIG.{k}"] == str(spec.stream_bits)

    # the engine as an RTL module reference (the attribute wrapper)
    assert ["create_bd_cell", "-type", "module", "-reference", f"{layer.name}_bd", ENGINE_CELL] in calls

    # interface nets: control, memory and the stream loop (TLAST travels on the m_axis interface)
    nets = {(c[1], c[2]) for c in calls if c[0] == "connect_bd_intf_net"}
    assert nets == {
        (f"{ps_name}/{board.gp_master}", "axi_smc_lite/S00_AXI"),
        ("axi_smc_lite/M00_AXI", f"{DMA_CELL}/S_AXI_LITE"),
        ("axi_smc_lite/M01_AXI", f"{ENGINE_CELL}/s_axil"),
        (f"{DMA_CELL}/M_AXI_MM2S", "axi_smc_mem/S00_AXI"),
        (f"{DMA_CELL}/M_AXI_S2MM", "axi_smc_mem/S01_AXI"),
        ("axi_smc_mem/M00_AXI", f"{ps_name}/{board.hp_port}"),
        (f"{DMA_CELL}/M_AXIS_MM2S", f"{ENGINE_CELL}/s_axis"),
        (f"{ENGINE_CELL}/m_axis", f"{DMA_CELL}/S_AXIS_S2MM"),
    }
    tlast_check = [c for c in calls if c[0] == "get_property" and c[1] == "CONFIG.HAS_TLAST"]
    assert tlast_check and tlast_check[0][2] == f"{ENGINE_CELL}/m_axis"

    # one clock: the PS PL clock drives every clock pin; resets from proc_sys_reset
    clk = next(c for c in calls if c[0] == "connect_bd_net" and c[1] == f"{ps_name}/{board.pl_clock}")
    for pin in [f"{ps_name}/{p}" for p in board.ps_clock_pins] + [
            f"{ENGINE_CELL}/aclk", f"{DMA_CELL}/s_axi_lite_aclk", f"{DMA_CELL}/m_axi_mm2s_aclk",
            f"{DMA_CELL}/m_axi_s2mm_aclk", "axi_smc_lite/aclk", "axi_smc_mem/aclk", "rst_pl/slowest_sync_clk"]:
        assert pin in clk[2].split()
    assert ["connect_bd_net", f"{ps_name}/{board.pl_resetn}", "rst_pl/ext_reset_in"] in calls
    freq = next(c for c in calls if c[:2] == ["set_property", "CONFIG.FREQ_HZ"])
    assert freq[-1] == f"{ENGINE_CELL}/aclk"          # the engine clock follows the PS's real frequency
    rst = next(c for c in calls if c[0] == "connect_bd_net" and c[1] == "rst_pl/peripheral_aresetn")
    assert f"{ENGINE_CELL}/aresetn" in rst[2].split()

    # address map: the engine's AXI-Lite slave at the board's base with a range covering the map
    eng_addr = next(c for c in calls if c[0] == "assign_bd_address" and f"{ENGINE_CELL}/s_axil/reg0" in c)
    assert int(eng_addr[eng_addr.index("-offset") + 1], 16) == board.engine_base
    rng = eng_addr[eng_addr.index("-range") + 1]
    assert rng.endswith("K") and int(rng[:-1]) * 1024 >= 1 << spec.axil_addr_bits
    assert f"{ps_name}/Data" in eng_addr
    assert any(c == ["assign_bd_address"] for c in calls)        # DMA masters -> DDR

    # the flow, in order
    order = ["create_bd_design", "validate_bd_design", "save_bd_design", "generate_target", "make_wrapper",
             "launch_runs", "wait_on_run", "open_run", "report_utilization", "report_timing_summary"]
    idx = [cmds.index(c) for c in order]
    assert idx == sorted(idx)
    runs = [c for c in calls if c[0] == "launch_runs"]
    assert runs[0][1] == "synth_1" and runs[1][1] == "impl_1" and "write_bitstream" in runs[1]
    assert ["set_property", "top", f"{BD_NAME}_wrapper", "current_fileset"] in calls

    # export: <name>.bit + <name>.hwh side by side, and the results file
    assert (plan.out_dir / f"{layer.name}.bit").read_bytes() == b"\x00\x09fixture-bit"
    assert (plan.out_dir / f"{layer.name}.hwh").read_text() == "<EDKSYSTEM/>"
    res = read_results(plan.out_dir)
    assert res["vivado_version"] == "2099.1-stub" and res["wns_ns"] == 0.25 and res["timing_met"]
    assert res["clock_mhz_requested"] == board.clock_mhz


@pytest.mark.skipif(TCLSH is None, reason="tclsh not installed")
def test_export_fails_loudly_without_bitstream(tmp_path: Path) -> None:
    _, plan = build_for("pynq-z2", tmp_path)
    harness = tmp_path / "harness.tcl"
    harness.write_text(HARNESS)
    res = subprocess.run([TCLSH, str(harness), str(tmp_path / "log"), str(plan.tcl)], capture_output=True, text=True)
    assert res.returncode != 0 and "litefly: bitstream not found" in res.stderr


@pytest.mark.skipif(TCLSH is None, reason="tclsh not installed")
@pytest.mark.parametrize("board_name", sorted(BOARDS))
def test_constraints_are_only_comments(board_name: str, tmp_path: Path) -> None:
    layer, plan = build_for(board_name, tmp_path, clock_mhz=125.0)
    fake_vivado_products(plan.out_dir, layer.name)
    text = plan.xdc.read_text()
    assert "125 MHz" in text and "8.000 ns" in text
    assert run_tcl(plan.xdc, tmp_path) == []          # no create_clock or pin constraints
    psp = props(next(c for c in run_tcl(plan.tcl, tmp_path) if c[0] == "set_property" and "-dict" in c
                     and ("PCW" in c[2] or "PSU" in c[2])))
    assert any(float(v) == 125.0 for k, v in psp.items() if "FREQMHZ" in k)


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")
def test_wrapper_compiles_and_declares_interfaces(tmp_path: Path) -> None:
    layer, plan = build_for("pynq-z2", tmp_path)
    spec = layer
    res = subprocess.run(["iverilog", "-o", str(tmp_path / "a.out"), "-s", f"{layer.name}_bd",
                          str(plan.wrapper), str(plan.engine_verilog)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = plan.wrapper.read_text()
    assert 'xilinx.com:signal:clock:1.0 aclk CLK' in text
    assert "ASSOCIATED_BUSIF s_axis:m_axis:s_axil, ASSOCIATED_RESET aresetn" in text
    assert "POLARITY ACTIVE_LOW" in text
    assert f"ADDR_WIDTH {spec.axil_addr_bits}" in text and "HAS_TLAST 1" in text
    for name, _, _, bus, sig in engine_ports(spec):
        if bus:
            kind = "aximm" if bus == "s_axil" else "axis"
            assert f'"xilinx.com:interface:{kind}:1.0 {bus} {sig}" *)' in text, name


def test_bad_options(tmp_path: Path) -> None:
    layer = load_network(VGG2)
    with pytest.raises(ConfigError, match=r"--clock-mhz 900 is out of range for pynq-z2: expected 10..150 MHz"):
        write_build(layer, get_board("pynq-z2"), tmp_path, clock_mhz=900, generate=fake_generate)
    with pytest.raises(ConfigError, match="--jobs 0 must be at least 1"):
        write_build(layer, get_board("zcu104"), tmp_path, jobs=0, generate=fake_generate)


def test_build_info_and_readme(tmp_path: Path) -> None:
    layer, plan = build_for("zcu104", tmp_path)
    info = json.loads((plan.out_dir / "build_info.json").read_text())
    assert info["config_hash"] == layer.config_hash and info["board"] == "zcu104"
    assert EngineEnvelope.from_dict(info["envelope"]) == layer and info["hash32"] == f"0x{layer.hash32:08x}"
    assert info["network"]["name"] == "vgg_conv2" and info["network"]["layers"][0]["name"] == "vgg_conv2"
    assert json.loads(plan.manifest.read_text())["config_hash"] == layer.config_hash
    assert "vivado -mode batch -source build.tcl" in plan.readme.read_text()


def test_one_build_for_a_network(tmp_path: Path) -> None:
    """A network's build is one engine: the envelope of all its layers, named after the network."""
    env, plan = build_for("pynq-z2", tmp_path, VGG_NET, input_size=(32, 32))
    net = load_network(VGG_NET)
    assert env == EngineEnvelope.for_network(net, (32, 32), board="pynq-z2") and plan.name == "vgg_head"
    info = json.loads((plan.out_dir / "build_info.json").read_text())
    assert [l["name"] for l in info["network"]["layers"]] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    assert info["network"]["input_size"] == [32, 32] and info["envelope"]["max_q"] == env.max_q
    assert env.max_q == max(l.chain_in for l in net.layers) and env.max_p == max(l.chain_out for l in net.layers)
    tcl = plan.tcl.read_text()
    assert "set name vgg_head" in tcl and f"engine hash {env.config_hash}" in tcl
    assert f"CONFIG.c_m_axis_mm2s_tdata_width {{{env.stream_bits}}}" in tcl
    readme = plan.readme.read_text()
    assert "vgg_conv1, vgg_conv2, vgg_conv3" in readme and f"0x{env.hash32:08x}" in readme
    # the engine's frame buffer follows the input size: another size can be another engine
    big = EngineEnvelope.for_network(net, (224, 224))
    assert big.config_hash != env.config_hash


def test_parse_utilization_ultrascale() -> None:
    text = ("| CLB LUTs*                  | 20480 |     0 |    230400 |  8.89 |\n"
            "| CLB Registers              | 30000 |     0 |    460800 |  6.51 |\n"
            "| Block RAM Tile    |   40.5 |     0 |       312 | 12.98 |\n"
            "| URAM              |    4 |     0 |        96 |  4.17 |\n"
            "| DSPs              |  200 |     0 |      1728 | 11.57 |\n")
    assert parse_utilization(text) == {"lut": 20480, "ff": 30000, "bram36": 40.5, "uram": 4, "dsp": 200}


def test_cli_build_without_vivado(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import types

    from litefly.cli.main import main
    fake = types.ModuleType("litefly.hw.generate")
    fake.generate = fake_generate
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", fake)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")     # no vivado
    main(["build", str(VGG2), "--board", "pynq-z2", "-o", str(tmp_path / "b"), "--clock-mhz", "90"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Vivado is not on PATH" in out and "vivado -mode batch -source build.tcl" in out
    assert (tmp_path / "b" / "build.tcl").exists()
    main(["build", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "-o", str(tmp_path / "n")])
    out = " ".join(capsys.readouterr().out.split())
    env = EngineEnvelope.for_network(load_network(VGG_NET), (16, 16), board="zcu104")   # the board's default
    assert env.lanes == 256 and env.window_generators == 4 and env.row_quads and env.row_octets
    assert f"engine vgg_head 0x{env.hash32:08x}" in out and "3 layers: vgg_conv1, vgg_conv2, vgg_conv3" in out
    assert json.loads((tmp_path / "n" / "build_info.json").read_text())["config_hash"] == env.config_hash
    main(["build", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "-o", str(tmp_path / "w"),
          "--multipliers", "128", "--macs-per-dsp", "2", "--stream-bits", "128"])
    wide = EngineEnvelope.for_network(load_network(VGG_NET), (16, 16), multipliers=128, macs_per_dsp=2,
                                      stream_bits=128, board="zcu104")
    assert (f"engine vgg_head 0x{wide.hash32:08x} (128 lanes, eight rows per lane on four multipliers, 4 window "
            f"generators, "
            f"128-bit stream, 256 KiB frame buffer, 2 beats a frame word)") in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "w" / "build_info.json").read_text())["config_hash"] == wide.config_hash
    # --no-merge: the published chains as declared, the engine (and bitstream) of a file with merge: false
    main(["build", str(VGG_NET), "--board", "zcu104", "--input-size", "16", "16", "-o", str(tmp_path / "p"),
          "--no-merge"])
    declared = EngineEnvelope.for_network(load_network(VGG_NET, merge=False), (16, 16), board="zcu104")
    assert declared.hash32 != env.hash32
    assert f"engine vgg_head 0x{declared.hash32:08x}" in " ".join(capsys.readouterr().out.split())
    assert json.loads((tmp_path / "p" / "build_info.json").read_text())["config_hash"] == declared.config_hash
    with pytest.raises(SystemExit) as exc:
        main(["build", str(VGG2), "--board", "pynq-z2", "-o", str(tmp_path / "c"), "--clock-mhz", "400"])
    assert exc.value.code == 2
    assert "error: --clock-mhz 400 is out of range" in capsys.readouterr().err


def test_cli_build_refuses_an_engine_whose_memories_do_not_fit(tmp_path: Path, capsys, monkeypatch) -> None:
    """A build whose memory plan exceeds the board's block RAM is refused in one line before anything is
    written (Vivado would fail an hour later); over the 80% ceiling it is written with the verdict."""
    import types

    from litefly.cli.main import main
    fake = types.ModuleType("litefly.hw.generate")
    fake.generate = fake_generate
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", fake)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")     # no vivado
    with pytest.raises(SystemExit) as exc:
        main(["build", str(VGG_NET), "--board", "pynq-z2", "-o", str(tmp_path / "big"), "--multipliers", "256"])
    err = " ".join(capsys.readouterr().err.split())
    assert exc.value.code == 2 and not (tmp_path / "big").exists()
    assert err.startswith("error: engine vgg_head (256 lanes, four rows per lane on two multipliers, 64-bit "
                          "stream, 64 KiB frame buffer, 4 beats a frame word) does not fit (bram36) on pynq-z2 by "
                          "its memory plan: 235 of 140 BRAM36")
    assert err.endswith("or --skip-fit-check")          # the whole advice, not cut
    main(["build", str(VGG_NET), "--board", "pynq-z2", "-o", str(tmp_path / "tight"), "--multipliers", "112"])
    assert "memories tight (bram36 > 80%)" in " ".join(capsys.readouterr().out.split())
    main(["build", str(VGG_NET), "--board", "pynq-z2", "-o", str(tmp_path / "big"), "--multipliers", "256",
          "--skip-fit-check"])
    assert (tmp_path / "big" / "build.tcl").exists()


def _real_generate():
    return pytest.importorskip("litefly.hw.generate", reason="engine generator not available").generate


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")
def test_wrapper_matches_real_engine(tmp_path: Path) -> None:
    """The wrapper instantiates the generated engine port for port (iverilog elaborates both)."""
    generate = _real_generate()
    layer = load_layer(ROOT / "examples" / "layers" / "pointnet_fc3.yaml")
    plan = write_build(layer, get_board("pynq-z2"), tmp_path / "b", generate=generate)
    res = subprocess.run(["iverilog", "-o", str(tmp_path / "a.out"), "-s", f"{plan.info['module']}_bd",
                          str(plan.wrapper), str(plan.engine_verilog)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "warning" not in res.stderr.lower(), res.stderr      # no port width mismatch
    assert json.loads(plan.manifest.read_text())["config_hash"] == plan.envelope.config_hash


@pytest.mark.skipif(TCLSH is None, reason="tclsh not installed")
def test_cli_build_runs_vivado_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """With `vivado` on PATH the build runs it and collects the results (TEST FIXTURE: a fake
    `vivado` that executes build.tcl in tclsh with the recording stubs)."""
    import os
    import types

    from litefly.cli.main import main
    fake = types.ModuleType("litefly.hw.generate")
    fake.generate = fake_generate
    monkeypatch.setitem(sys.modules, "litefly.hw.generate", fake)
    (tmp_path / "harness.tcl").write_text(HARNESS)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vivado = bindir / "vivado"
    vivado.write_text(f"#!/bin/sh\nexec {TCLSH} {tmp_path / 'harness.tcl'} {tmp_path / 'calls.log'} build.tcl\n")
    vivado.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin")
    out = tmp_path / "b"
    fake_vivado_products(out, "vgg_conv2")
    main(["build", str(VGG2), "--board", "zcu104", "-o", str(out), "--jobs", "2"])
    text = " ".join(capsys.readouterr().out.split())
    assert "vgg_conv2.bit + .hwh written; Vivado 2099.1-stub, WNS 0.25 ns" in text
    assert (out / "vgg_conv2.bit").exists() and (out / "vivado.log").read_text().count("LITEFLY-STEP") == 7
    calls = [l.split("\x1f") for l in (tmp_path / "calls.log").read_text().splitlines()]
    assert ["launch_runs", "synth_1", "-jobs", "2"] in calls

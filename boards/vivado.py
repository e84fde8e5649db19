"""Vivado build generation for a network's engine on a PYNQ board (no Vivado needed to generate).

One engine (one bitstream) serves every layer of a network: ``write_build(network, board,
out_dir)`` builds the engine of the network's envelope (:meth:`EngineEnvelope.for_network`;
a layer config is a one-layer network, an :class:`EngineEnvelope` is taken as it is) and
writes, into ``out_dir``:

* ``rtl/<module>.v`` + ``manifest.json``: the engine (``litefly.hw.generate.generate(envelope, dir)``);
* ``rtl/<module>_bd.v``: a thin wrapper whose ``X_INTERFACE_INFO`` attributes make Vivado see
  ``s_axis``/``m_axis`` (AXI4-Stream), ``s_axil`` (AXI4-Lite), ``aclk`` (clock, with
  ``ASSOCIATED_BUSIF``) and ``aresetn`` (active-low reset) as interfaces, whatever the names;
* ``build.tcl``: project-mode flow: project for the board part, block design (PS with the
  board preset, HP port, PL clock, AXI DMA without scatter-gather, SmartConnects,
  ``proc_sys_reset``, the engine as an RTL module reference, address map), validate, wrapper,
  synthesis, implementation, bitstream, reports, export of ``<name>.bit`` + ``<name>.hwh``;
* ``constraints.xdc``, ``build_info.json`` (what ``litefly bitstreams add`` records: the
  envelope, its ``config_hash`` and the network it was built for) and ``README.md`` with the
  one command to run on a Vivado machine.

Every number comes from the :class:`~litefly.hw.spec.EngineEnvelope` and the
:class:`~litefly.boards.boards.Board` (whose part and clocks are the Amaranth platform class's in
``boards/platforms.py``, read without importing Amaranth). Board-safe: no amaranth unless the
engine is generated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError, LiteflyError, ToolError
from litefly.hw.spec import DMA_LENGTH_BITS, EngineEnvelope

from .boards import Board
from .memory_plan import plan_memories

__all__ = ["BuildPlan", "BD_NAME", "ENGINE_CELL", "DMA_CELL", "write_build", "wrapper_verilog",
           "build_tcl", "constraints_xdc", "run_vivado", "vivado_path", "parse_utilization",
           "STEPS", "engine_ports", "envelope_of", "network_summary"]

BD_NAME = "litefly"              # block design name (the .hwh is renamed to <engine name>.hwh)
ENGINE_CELL = "engine_0"         # PYNQ: overlay.engine_0
DMA_CELL = "axi_dma_0"           # PYNQ: overlay.axi_dma_0
RESULTS_FILE = "vivado_results.json"
STEPS = ("project", "block design", "validate", "synthesis", "implementation + bitstream",
         "reports", "export")


@dataclass
class BuildPlan:
    """What :func:`write_build` wrote."""

    out_dir: Path
    name: str
    board: Board
    clock_mhz: float
    jobs: int
    tcl: Path
    xdc: Path
    readme: Path
    engine_verilog: Path
    wrapper: Path
    manifest: Path
    info: dict[str, Any] = field(default_factory=dict)
    envelope: EngineEnvelope | None = None

    @property
    def command(self) -> str:
        return f"cd {self.out_dir} && vivado -mode batch -source build.tcl"


# -- the engine wrapper ---------------------------------------------------------------------

_AXIL_PORTS = (  # (suffix, direction, width or None for address width, AXI signal name)
    ("awaddr", "input", None, "AWADDR"), ("awprot", "input", 3, "AWPROT"),
    ("awvalid", "input", 1, "AWVALID"), ("awready", "output", 1, "AWREADY"),
    ("wdata", "input", 32, "WDATA"), ("wstrb", "input", 4, "WSTRB"),
    ("wvalid", "input", 1, "WVALID"), ("wready", "output", 1, "WREADY"),
    ("bresp", "output", 2, "BRESP"), ("bvalid", "output", 1, "BVALID"),
    ("bready", "input", 1, "BREADY"), ("araddr", "input", None, "ARADDR"),
    ("arprot", "input", 3, "ARPROT"), ("arvalid", "input", 1, "ARVALID"),
    ("arready", "output", 1, "ARREADY"), ("rdata", "output", 32, "RDATA"),
    ("rresp", "output", 2, "RRESP"), ("rvalid", "output", 1, "RVALID"),
    ("rready", "input", 1, "RREADY"),
)


def envelope_of(target: EngineEnvelope | NetworkConfig | LayerConfig,
                input_size: tuple[int, int] | None = None, multipliers: int | None = None,
                board: str | None = None) -> EngineEnvelope:
    """The engine envelope a build serves: a network's (:meth:`EngineEnvelope.for_network` at
    ``input_size`` on ``board``), a layer's (a one-layer network) or an envelope as given."""
    if isinstance(target, EngineEnvelope):
        return target
    if isinstance(target, LayerConfig):
        target = NetworkConfig.single(target)
    if not isinstance(target, NetworkConfig):
        raise ConfigError(f"cannot build an engine for {type(target).__name__}; give a network, a layer or an "
                          f"EngineEnvelope")
    return EngineEnvelope.for_network(target, input_size, multipliers=multipliers, board=board)


def network_summary(network: NetworkConfig | LayerConfig | None,
                    input_size: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """What build_info.json / build.json record about the network a build was made for."""
    if network is None:
        return None
    if isinstance(network, LayerConfig):
        network = NetworkConfig.single(network)
    size = input_size or network.input_size
    return {"name": network.name, "input_size": list(size) if size else None,
            "layers": [{"name": lay.name, "kind": lay.kind, "config_hash": lay.config_hash}
                       for lay in network.layers],
            "config": network.to_dict()}


def engine_ports(envelope: EngineEnvelope) -> list[tuple[str, str, int, str, str]]:
    """The engine's ports as ``(name, direction, width, interface, AXI signal)``."""
    s, k = envelope.stream_bits, envelope.stream_bits // 8
    spec = envelope
    ports: list[tuple[str, str, int, str, str]] = [("aclk", "input", 1, "", "CLK"),
                                                   ("aresetn", "input", 1, "", "RST")]
    for bus, into in (("s_axis", True), ("m_axis", False)):
        i, o = ("input", "output") if into else ("output", "input")
        ports += [(f"{bus}_tdata", i, s, bus, "TDATA"), (f"{bus}_tvalid", i, 1, bus, "TVALID"),
                  (f"{bus}_tready", o, 1, bus, "TREADY"), (f"{bus}_tlast", i, 1, bus, "TLAST"),
                  (f"{bus}_tkeep", i, k, bus, "TKEEP")]
    for suffix, d, w, sig in _AXIL_PORTS:
        ports.append((f"s_axil_{suffix}", d, w or spec.axil_addr_bits, "s_axil", sig))
    return ports


def wrapper_verilog(spec: EngineEnvelope, module: str) -> str:
    """Verilog of ``<module>_bd``: the engine with Vivado interface attributes on every port."""
    lines = [f"// Generated by litefly for engine {spec.name!r} (engine hash {spec.config_hash[:8]}).",
             "// Wraps the engine so Vivado IP integrator infers its AXI interfaces, clock and reset.",
             f"module {module}_bd ("]
    decls = []
    for name, d, w, bus, sig in engine_ports(spec):
        attrs = []
        if name == "aclk":
            attrs.append('(* X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 aclk CLK" *)')
            attrs.append('(* X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axis:m_axis:s_axil, '
                         'ASSOCIATED_RESET aresetn" *)')
        elif name == "aresetn":
            attrs.append('(* X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 aresetn RST" *)')
            attrs.append('(* X_INTERFACE_PARAMETER = "POLARITY ACTIVE_LOW" *)')
        else:
            kind = "aximm" if bus == "s_axil" else "axis"
            attrs.append(f'(* X_INTERFACE_INFO = "xilinx.com:interface:{kind}:1.0 {bus} {sig}" *)')
            if name == "s_axil_awaddr":
                attrs.append(f'(* X_INTERFACE_PARAMETER = "PROTOCOL AXI4LITE, DATA_WIDTH 32, '
                             f'ADDR_WIDTH {spec.axil_addr_bits}" *)')
            if name == "m_axis_tdata":
                attrs.append(f'(* X_INTERFACE_PARAMETER = "TDATA_NUM_BYTES {spec.stream_bits // 8}, '
                             f'HAS_TLAST 1, HAS_TKEEP 1, HAS_TSTRB 0, TUSER_WIDTH 0, TID_WIDTH 0, '
                             f'TDEST_WIDTH 0" *)')
        rng = f"[{w - 1}:0] " if w > 1 else ""
        decls.append("  " + " ".join(attrs) + f"\n  {d} wire {rng}{name}")
    lines.append(",\n".join(decls))
    lines.append(");")
    conns = ",\n".join(f"    .{n}({n})" for n, *_ in engine_ports(spec))
    lines += [f"  {module} engine (\n{conns}\n  );", "endmodule", ""]
    return "\n".join(lines)


# -- Tcl ----------------------------------------------------------------------------------

def _ps_tcl(board: Board, clock_mhz: float) -> list[str]:
    """Create the PS with the board preset, one GP master, the HP slave and the PL clock."""
    if board.ps == "processing_system7":
        return [
            "set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:processing_system7 processing_system7_0]",
            'apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config '
            '{make_external "FIXED_IO, DDR" apply_board_preset "1" Master "Disable" Slave "Disable"} $ps',
            "set_property -dict [list \\",
            "    CONFIG.PCW_USE_M_AXI_GP0 {1} \\",
            f"    CONFIG.PCW_USE_S_AXI_{board.hp_port.removeprefix('S_AXI_')} {{1}} \\",
            f"    CONFIG.PCW_S_AXI_{board.hp_port.removeprefix('S_AXI_')}_DATA_WIDTH {{{board.hp_width_bits}}} \\",
            "    CONFIG.PCW_EN_CLK0_PORT {1} \\",
            "    CONFIG.PCW_EN_RST0_PORT {1} \\",
            f"    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {{{clock_mhz:g}}} \\",
            "] $ps",
            "set act_clock_param CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ",
        ]
    if board.ps == "zynq_ultra_ps_e":
        hp = {"S_AXI_HP0_FPD": "GP2", "S_AXI_HP1_FPD": "GP3", "S_AXI_HP2_FPD": "GP4",
              "S_AXI_HP3_FPD": "GP5"}[board.hp_port]
        return [
            "set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]",
            'apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $ps',
            "set_property -dict [list \\",
            "    CONFIG.PSU__USE__M_AXI_GP0 {1} \\",
            "    CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \\",
            "    CONFIG.PSU__USE__M_AXI_GP1 {0} \\",
            "    CONFIG.PSU__USE__M_AXI_GP2 {0} \\",
            f"    CONFIG.PSU__USE__S_AXI_{hp} {{1}} \\",
            f"    CONFIG.PSU__SAXI{hp}__DATA_WIDTH {{{board.hp_width_bits}}} \\",
            "    CONFIG.PSU__FPGA_PL0_ENABLE {1} \\",
            f"    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{clock_mhz:g}}} \\",
            "] $ps",
            "set act_clock_param CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ",
        ]
    raise ConfigError(f"board {board.name}: PS {board.ps!r} is not supported by the Vivado flow")


def _vivado_check_tcl(board: Board) -> list[str]:
    """Name the Vivado release each of the board's PYNQ images was built with; warn (not fail) on another."""
    rel = board.vivado_releases
    images = ", ".join(f"PYNQ v{img}: Vivado {v}" for img, v in rel.items())
    expected = " ".join(sorted(set(rel.values())))
    return [
        f"# Vivado release of the {board.name} PYNQ images' own overlays: {images}.",
        "# Another release usually works (PYNQ reads the .hwh, not the tool version) but is not the",
        "# combination the image was tested with, so it is a warning, not an error.",
        f"set litefly_vivado_expected {{{expected}}}",
        "set litefly_vivado [version -short]",
        "set litefly_vivado_release [join [lrange [split $litefly_vivado .] 0 1] .]",
        "if {[lsearch -exact $litefly_vivado_expected $litefly_vivado_release] < 0} {",
        f'    puts "WARNING: litefly: Vivado $litefly_vivado is not a release the {board.name} PYNQ images were '
        f'built with ({images}); building anyway: if the overlay does not load on the board, rebuild with that release"',
        "}",
    ]


def _range(nbytes: int) -> str:
    nbytes = max(4096, 1 << (nbytes - 1).bit_length())
    return f"{nbytes // 1024}K" if nbytes < (1 << 20) else f"{nbytes >> 20}M"


def build_tcl(spec: EngineEnvelope, board: Board, module: str, clock_mhz: float, jobs: int,
              engine_file: str, wrapper_file: str) -> str:
    """The Vivado batch script (paths relative to the script's folder)."""
    name = spec.name
    s = spec.stream_bits
    burst = 16 if board.ps == "processing_system7" else 64   # AXI3 HP ports take 16-beat bursts
    engine_range = _range(1 << spec.axil_addr_bits)
    clocks = " ".join(f"$ps/{p}" for p in board.ps_clock_pins)
    step = iter(range(1, len(STEPS) + 1))

    def mark(i: int) -> str:
        return f'puts "LITEFLY-STEP {i}/{len(STEPS)} {STEPS[i - 1]}"'

    t: list[str] = [
        f"# Vivado build of the litefly network engine {name!r} for {board.name} ({board.part}).",
        f"# engine hash {spec.config_hash} (CONFIG_HASH register 0x{spec.hash32:08x})",
        "# Generated by `litefly build`; run:  vivado -mode batch -source build.tcl",
        f"# part and default PL clock: litefly.boards.platforms.{board.platform}",
        "",
        "set script_dir [file dirname [file normalize [info script]]]",
        f"set name {name}",
        f"set part {board.part}",
        f"set board_part {board.board_part}",
        f"set clock_mhz {clock_mhz:g}",
        f"set jobs {jobs}",
        f"set bd {BD_NAME}",
        "set proj_dir [file join $script_dir vivado]",
        "",
        *_vivado_check_tcl(board),
        "",
        "proc litefly_find_one {patterns what} {",
        "    foreach p $patterns {",
        "        set hits [glob -nocomplain $p]",
        "        if {[llength $hits] > 0} { return [lindex $hits 0] }",
        "    }",
        '    error "litefly: $what not found (looked for: $patterns)"',
        "}",
        "proc litefly_check_run {run} {",
        "    if {[get_property PROGRESS [get_runs $run]] ne \"100%\"} {",
        '        error "litefly: $run failed: [get_property STATUS [get_runs $run]] (see vivado/*.runs/$run/runme.log)"',
        "    }",
        "}",
        "",
        mark(next(step)),
        "create_project -force litefly_$name $proj_dir -part $part",
        "set_property board_part $board_part [current_project]",
        "set_property target_language Verilog [current_project]",
        f"add_files -norecurse [list [file join $script_dir {engine_file}] [file join $script_dir {wrapper_file}]]",
        "add_files -fileset constrs_1 -norecurse [file join $script_dir constraints.xdc]",
        "update_compile_order -fileset sources_1",
        "",
        mark(next(step)),
        "create_bd_design $bd",
        *_ps_tcl(board, clock_mhz),
        "",
        f"# AXI DMA: simple mode (no scatter-gather), {DMA_LENGTH_BITS}-bit length register, stream width of the engine",
        f"set dma [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma {DMA_CELL}]",
        "set_property -dict [list \\",
        "    CONFIG.c_include_sg {0} \\",
        f"    CONFIG.c_sg_length_width {{{DMA_LENGTH_BITS}}} \\",
        "    CONFIG.c_sg_include_stscntrl_strm {0} \\",
        "    CONFIG.c_include_mm2s {1} \\",
        "    CONFIG.c_include_s2mm {1} \\",
        "    CONFIG.c_addr_width {32} \\",
        f"    CONFIG.c_m_axi_mm2s_data_width {{{s}}} \\",
        f"    CONFIG.c_m_axis_mm2s_tdata_width {{{s}}} \\",
        f"    CONFIG.c_m_axi_s2mm_data_width {{{s}}} \\",
        f"    CONFIG.c_s_axis_s2mm_tdata_width {{{s}}} \\",
        f"    CONFIG.c_mm2s_burst_size {{{burst}}} \\",
        f"    CONFIG.c_s2mm_burst_size {{{burst}}} \\",
        "] $dma",
        "",
        f"set engine [create_bd_cell -type module -reference {module}_bd {ENGINE_CELL}]",
        "set smc_lite [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_smc_lite]",
        "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {2}] $smc_lite",
        "set smc_mem [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axi_smc_mem]",
        "set_property -dict [list CONFIG.NUM_SI {2} CONFIG.NUM_MI {1}] $smc_mem",
        "set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset rst_pl]",
        "",
        "# control: GP master -> DMA registers + engine registers",
        f"connect_bd_intf_net [get_bd_intf_pins $ps/{board.gp_master}] [get_bd_intf_pins $smc_lite/S00_AXI]",
        "connect_bd_intf_net [get_bd_intf_pins $smc_lite/M00_AXI] [get_bd_intf_pins $dma/S_AXI_LITE]",
        "connect_bd_intf_net [get_bd_intf_pins $smc_lite/M01_AXI] [get_bd_intf_pins $engine/s_axil]",
        "# data: DMA masters -> HP port",
        "connect_bd_intf_net [get_bd_intf_pins $dma/M_AXI_MM2S] [get_bd_intf_pins $smc_mem/S00_AXI]",
        "connect_bd_intf_net [get_bd_intf_pins $dma/M_AXI_S2MM] [get_bd_intf_pins $smc_mem/S01_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins $smc_mem/M00_AXI] [get_bd_intf_pins $ps/{board.hp_port}]",
        "# streams: DMA MM2S -> engine -> DMA S2MM (the engine drives TLAST at the end of each tile)",
        "connect_bd_intf_net [get_bd_intf_pins $dma/M_AXIS_MM2S] [get_bd_intf_pins $engine/s_axis]",
        "connect_bd_intf_net [get_bd_intf_pins $engine/m_axis] [get_bd_intf_pins $dma/S_AXIS_S2MM]",
        "# one clock domain: the PS PL clock",
        f"connect_bd_net [get_bd_pins $ps/{board.pl_clock}] [get_bd_pins [list {clocks} "
        "$dma/s_axi_lite_aclk $dma/m_axi_mm2s_aclk $dma/m_axi_s2mm_aclk $smc_lite/aclk $smc_mem/aclk "
        "$rst/slowest_sync_clk $engine/aclk]]",
        f"connect_bd_net [get_bd_pins $ps/{board.pl_resetn}] [get_bd_pins $rst/ext_reset_in]",
        "connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins [list $dma/axi_resetn $engine/aresetn]]",
        "connect_bd_net [get_bd_pins $rst/interconnect_aresetn] [get_bd_pins [list $smc_lite/aresetn $smc_mem/aresetn]]",
        "# the module reference takes the clock frequency the PS really generates (the PLL may round)",
        f"set_property CONFIG.FREQ_HZ [get_property CONFIG.FREQ_HZ [get_bd_pins $ps/{board.pl_clock}]] "
        "[get_bd_pins $engine/aclk]",
        "",
        "# address map",
        f"assign_bd_address -offset 0x{board.dma_base:08X} -range 64K -target_address_space "
        "[get_bd_addr_spaces $ps/Data] [get_bd_addr_segs $dma/S_AXI_LITE/Reg]",
        f"assign_bd_address -offset 0x{board.engine_base:08X} -range {engine_range} -target_address_space "
        "[get_bd_addr_spaces $ps/Data] [get_bd_addr_segs $engine/s_axil/reg0]",
        "assign_bd_address",
        "",
        mark(next(step)),
        "validate_bd_design",
        "if {[get_property CONFIG.HAS_TLAST [get_bd_intf_pins $engine/m_axis]] ne \"1\"} {",
        '    error "litefly: the engine m_axis has no TLAST; the DMA S2MM transfer would never complete"',
        "}",
        "set act_clock_mhz [get_property $act_clock_param $ps]",
        "if {abs($act_clock_mhz - $clock_mhz) > 0.01 * $clock_mhz} {",
        '    puts "WARNING: litefly: requested PL clock $clock_mhz MHz, the PS generates $act_clock_mhz MHz"',
        "}",
        "save_bd_design",
        "set bd_file [get_files $bd.bd]",
        "generate_target all $bd_file",
        "add_files -norecurse [make_wrapper -files $bd_file -top]",
        "set_property top ${bd}_wrapper [current_fileset]",
        "update_compile_order -fileset sources_1",
        "",
        mark(next(step)),
        "launch_runs synth_1 -jobs $jobs",
        "wait_on_run synth_1",
        "litefly_check_run synth_1",
        "",
        mark(next(step)),
        "launch_runs impl_1 -to_step write_bitstream -jobs $jobs",
        "wait_on_run impl_1",
        "litefly_check_run impl_1",
        "",
        mark(next(step)),
        "open_run impl_1",
        "report_utilization -file [file join $script_dir utilization.rpt]",
        "report_timing_summary -max_paths 10 -file [file join $script_dir timing.rpt]",
        "set wns [get_property STATS.WNS [get_runs impl_1]]",
        "set tns [get_property STATS.TNS [get_runs impl_1]]",
        "set whs [get_property STATS.WHS [get_runs impl_1]]",
        "",
        mark(next(step)),
        "# PYNQ loads <name>.bit with <name>.hwh side by side",
        "set bit [litefly_find_one [list [file join $proj_dir litefly_$name.runs impl_1 ${bd}_wrapper.bit]] bitstream]",
        "set hwh [litefly_find_one [list \\",
        "    [file join $proj_dir litefly_$name.gen sources_1 bd $bd hw_handoff $bd.hwh] \\",
        "    [file join $proj_dir litefly_$name.srcs sources_1 bd $bd hw_handoff $bd.hwh]] {hardware handoff}]",
        "file copy -force $bit [file join $script_dir $name.bit]",
        "file copy -force $hwh [file join $script_dir $name.hwh]",
        f"set f [open [file join $script_dir {RESULTS_FILE}] w]",
        'puts $f "\\{"',
        'puts $f "  \\"vivado_version\\": \\"[version -short]\\","',
        'puts $f "  \\"clock_mhz_requested\\": \\"$clock_mhz\\","',
        'puts $f "  \\"clock_mhz_actual\\": \\"$act_clock_mhz\\","',
        'puts $f "  \\"wns_ns\\": \\"$wns\\","',
        'puts $f "  \\"tns_ns\\": \\"$tns\\","',
        'puts $f "  \\"whs_ns\\": \\"$whs\\""',
        'puts $f "\\}"',
        "close $f",
        'puts "LITEFLY-DONE $name.bit $name.hwh wns=$wns"',
        "",
    ]
    return "\n".join(t)


def constraints_xdc(spec: EngineEnvelope, board: Board, clock_mhz: float) -> str:
    """Constraints: the design has no board pins and one PS-generated clock, so almost none."""
    return "\n".join([
        f"# litefly engine {spec.name} on {board.name} ({board.part})",
        f"# The engine, DMA and interconnect run on the PS clock {board.pl_clock} at {clock_mhz:g} MHz",
        f"# (period {1000.0 / clock_mhz:.3f} ns). The PS IP's own XDC already creates that clock,",
        "# so no create_clock here (a second definition would override it), no pin constraints",
        "# (all I/O is PS-PL AXI), and no false paths (one clock domain, reset synchronised by",
        "# proc_sys_reset). Timing closure is checked from the implementation's WNS.",
        "",
    ])


def _readme(plan: BuildPlan, spec: EngineEnvelope) -> str:
    b = plan.board
    net = plan.info.get("network") or {}
    layers = ", ".join(l["name"] for l in net.get("layers", [])) or "(envelope given directly)"
    return f"""# Vivado build: engine {plan.name} on {b.name}

Generated by `litefly build` for engine hash `{spec.config_hash[:8]}` (CONFIG_HASH 0x{spec.hash32:08x}:
{spec.lanes} lanes, {spec.stream_bits}-bit stream, PL clock {plan.clock_mhz:g} MHz, part `{b.part}`).
One bitstream serves every layer of network `{net.get("name", plan.name)}`: {layers}.

On a machine with Vivado (board files for `{b.board_part}` installed):

    vivado -mode batch -source build.tcl

It writes `{plan.name}.bit`, `{plan.name}.hwh`, `utilization.rpt`, `timing.rpt` and
`{RESULTS_FILE}` here. Vivado release: {", ".join(f"PYNQ v{i} images were built with {v}" for i, v in b.vivado_releases.items())};
`build.tcl` warns (and goes on) with another release.
Then register the result and copy it to the board:

    litefly bitstreams add {plan.out_dir}

On the board, `litefly board check NETWORK --backend pynq --board {b.name}` finds it in the
registry by the engine hash (docs/boards.md).

IP names in the overlay: `{DMA_CELL}` (AXI DMA, simple mode) and `{ENGINE_CELL}` (the engine,
AXI-Lite at 0x{b.engine_base:08X}). The board needs `pip install "litefly[board]" "{b.pynq}"`.
"""


def write_build(target: EngineEnvelope | NetworkConfig | LayerConfig, board: Board, out_dir: str | Path,
                clock_mhz: float | None = None, jobs: int = 4, generate: Callable[..., Any] | None = None,
                input_size: tuple[int, int] | None = None, multipliers: int | None = None,
                network: NetworkConfig | LayerConfig | None = None) -> BuildPlan:
    """Generate the engine of ``target`` (a network, a layer = one-layer network, or an envelope)
    and write every file of a Vivado build into ``out_dir``.

    ``input_size`` (H, W) sizes the frame buffer of a conv network (default: the network's own);
    ``network`` names the network an envelope was derived from (recorded in build_info.json)."""
    clock = float(board.clock_mhz if clock_mhz is None else clock_mhz)
    if not (10.0 <= clock <= board.max_clock_mhz):
        raise ConfigError(f"--clock-mhz {clock:g} is out of range for {board.name}: "
                          f"expected 10..{board.max_clock_mhz:g} MHz")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1")
    env = envelope_of(target, input_size, multipliers, board.name)
    if network is None and not isinstance(target, EngineEnvelope):
        network = target
    if not env.name.isidentifier() or len(env.name) > 128:
        raise ConfigError(f"engine name {env.name[:40]!r} is not an identifier: name the network with letters, "
                          f"digits and underscores (it names the Verilog module and the .bit)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if generate is None:
        try:
            from litefly.hw.generate import generate  # noqa: PLC0415 (amaranth is heavy)
        except ModuleNotFoundError as exc:
            raise ToolError(f"cannot generate the engine: {exc} (litefly.hw.generate needs the PC extras: "
                            f"pip install 'litefly[pc]')") from None
    memories = plan_memories(env, board)
    eng = generate(env, out / "rtl", ram_styles=memories.styles)
    engine_v = Path(eng.verilog)
    manifest = out / "manifest.json"
    if Path(eng.manifest).resolve() != manifest.resolve():
        shutil.copyfile(eng.manifest, manifest)
    wrapper = out / "rtl" / f"{eng.module}_bd.v"
    wrapper.write_text(wrapper_verilog(env, eng.module))
    rel = lambda p: Path(os.path.relpath(p, out)).as_posix()  # noqa: E731
    tcl = out / "build.tcl"
    tcl.write_text(build_tcl(env, board, eng.module, clock, jobs, rel(engine_v), rel(wrapper)))
    xdc = out / "constraints.xdc"
    xdc.write_text(constraints_xdc(env, board, clock))
    info = {
        "name": env.name, "board": board.name, "part": board.part, "board_part": board.board_part,
        "config_hash": env.config_hash, "hash32": f"0x{env.hash32:08x}", "envelope": env.to_dict(),
        "network": network_summary(network, input_size),
        "clock_mhz": clock, "module": eng.module, "memory_plan": memories.to_dict(),
        "vivado_expected": board.vivado_releases,
        "ip": {"dma": DMA_CELL, "engine": ENGINE_CELL, "engine_base": board.engine_base,
               "dma_base": board.dma_base, "engine_vlnv": f"xilinx.com:module_ref:{eng.module}_bd:1.0"},
    }
    (out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    plan = BuildPlan(out_dir=out, name=env.name, board=board, clock_mhz=clock, jobs=jobs, tcl=tcl,
                     xdc=xdc, readme=out / "README.md", engine_verilog=engine_v, wrapper=wrapper,
                     manifest=manifest, info=info, envelope=env)
    plan.readme.write_text(_readme(plan, env))
    return plan


# -- running Vivado -----------------------------------------------------------------------

def vivado_path() -> str | None:
    return shutil.which("vivado")


def run_vivado(plan: BuildPlan, on_step: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Run ``build.tcl`` with Vivado; ``on_step(i, n, what)`` follows progress. Returns the results."""
    exe = vivado_path()
    if exe is None:
        raise ToolError("vivado is not on PATH")
    log = plan.out_dir / "vivado.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([exe, "-mode", "batch", "-nojournal", "-notrace", "-source", "build.tcl"],
                                cwd=plan.out_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            m = re.match(r"LITEFLY-STEP (\d+)/(\d+) (.*)", line.strip())
            if m and on_step:
                on_step(int(m[1]), int(m[2]), m[3])
        rc = proc.wait()
    if rc != 0:
        raise ToolError(f"vivado failed (exit {rc}); see {log}")
    return read_results(plan.out_dir)


def read_results(build_dir: Path) -> dict[str, Any]:
    """Vivado results of a finished build: version, clock, timing and utilisation."""
    path = Path(build_dir) / RESULTS_FILE
    if not path.exists():
        raise LiteflyError(f"{build_dir}: no {RESULTS_FILE}; run `vivado -mode batch -source build.tcl` there first")
    raw = json.loads(path.read_text())
    res: dict[str, Any] = {"vivado_version": raw.get("vivado_version")}
    for key in ("clock_mhz_requested", "clock_mhz_actual", "wns_ns", "tns_ns", "whs_ns"):
        try:
            res[key] = float(raw.get(key))
        except (TypeError, ValueError):
            res[key] = None
    res["timing_met"] = res["wns_ns"] is not None and res["wns_ns"] >= 0 and (res["whs_ns"] or 0) >= 0
    rpt = Path(build_dir) / "utilization.rpt"
    res["utilization"] = parse_utilization(rpt.read_text()) if rpt.exists() else {}
    return res


_UTIL_ROWS = {  # report_utilization row label -> our key (7-series and UltraScale+ spellings)
    "Slice LUTs": "lut", "CLB LUTs": "lut", "Slice Registers": "ff", "CLB Registers": "ff",
    "DSPs": "dsp", "Block RAM Tile": "bram36", "URAM": "uram",
}


def parse_utilization(text: str) -> dict[str, float]:
    """Used counts from a Vivado ``report_utilization`` text report (first table row per resource)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2:
            continue
        label = re.sub(r"\*+$", "", cells[0]).strip()
        key = _UTIL_ROWS.get(label)
        if key and key not in out:
            try:
                out[key] = float(cells[1])
            except ValueError:
                continue
    return out

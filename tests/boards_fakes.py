"""Test fixtures for the boards/bitstreams tests: a port-only engine and fake Vivado outputs.

Not a test module (no ``test_`` prefix). Board-safe (no amaranth): ``fake_generate`` stands
in for ``litefly.hw.generate.generate(envelope, out_dir)`` where only the engine's *ports*
and its manifest's identity matter (Tcl, wrapper, registry); it writes a Verilog module with
exactly the engine's port list and a manifest carrying the envelope and its hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from litefly.boards.vivado import engine_ports
from litefly.hw.spec import EngineEnvelope


@dataclass
class FakeEngine:
    verilog: Path
    manifest: Path
    manifest_data: dict
    module: str
    envelope: EngineEnvelope


def fake_generate(envelope, out_dir, fault=None, ram_styles=None):
    assert isinstance(envelope, EngineEnvelope), "the boards flow generates the engine of an envelope"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    module = envelope.name
    ports = engine_ports(envelope)
    decl = ",\n".join(f"  {d} wire {f'[{w - 1}:0] ' if w > 1 else ''}{n}" for n, d, w, *_ in ports)
    outs = "\n".join(f"  assign {n} = 0;" for n, d, *_ in ports if d == "output")
    v = out / f"{module}.v"
    v.write_text(f"// TEST FIXTURE: port-only stand-in for the engine\nmodule {module} (\n{decl}\n);\n{outs}\nendmodule\n")
    data = {"module": module, "fault": fault, "envelope": envelope.to_dict(), "config_hash": envelope.config_hash,
            "hash32": envelope.hash32, "lanes": envelope.lanes, "stream_bits": envelope.stream_bits,
            "axil_addr_bits": envelope.axil_addr_bits, "verilog": v.name}
    m = out / "manifest.json"
    m.write_text(json.dumps(data))
    return FakeEngine(verilog=v, manifest=m, manifest_data=data, module=module, envelope=envelope)


UTILIZATION_7 = """\
1. Slice Logic
--------------

+----------------------------+-------+-------+-----------+-------+
|          Site Type         |  Used | Fixed | Available | Util% |
+----------------------------+-------+-------+-----------+-------+
| Slice LUTs                 |  9120 |     0 |     53200 | 17.14 |
|   LUT as Logic             |  8800 |     0 |     53200 | 16.54 |
| Slice Registers            | 12011 |     0 |    106400 | 11.29 |
+----------------------------+-------+-------+-----------+-------+
| Block RAM Tile             |  12.5 |     0 |       140 |  8.93 |
| DSPs                       |    64 |     0 |       220 | 29.09 |
"""


def fake_vivado_outputs(build_dir: Path, name: str, wns: str = "0.412") -> None:
    """What `vivado -mode batch -source build.tcl` leaves behind (TEST FIXTURE: random .bit)."""
    d = Path(build_dir)
    (d / f"{name}.bit").write_bytes(os.urandom(4096))
    (d / f"{name}.hwh").write_text("<?xml version='1.0'?><EDKSYSTEM><!-- test fixture --></EDKSYSTEM>\n")
    (d / "utilization.rpt").write_text(UTILIZATION_7)
    (d / "vivado_results.json").write_text(json.dumps({
        "vivado_version": "2022.1", "clock_mhz_requested": "100", "clock_mhz_actual": "100.0",
        "wns_ns": wns, "tns_ns": "0.000", "whs_ns": "0.021"}))

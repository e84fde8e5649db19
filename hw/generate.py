"""Export an engine to Verilog with its ``manifest.json`` (the host's and the docs' source of truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amaranth
from amaranth import Shape
from amaranth.back import verilog
from amaranth.lib import wiring

from litefly.config import LayerConfig
from litefly.errors import ConfigError

from .simd_engine import FAULTS, WRITE_STAGE, DeButEngine
from .spec import EngineSpec

__all__ = ["GeneratedEngine", "generate", "engine_timing", "module_name"]


@dataclass(frozen=True)
class GeneratedEngine:
    verilog: Path
    manifest: Path
    manifest_data: dict[str, Any]
    module: str


def module_name(layer: LayerConfig, fault: str | None = None) -> str:
    return layer.name if fault is None else f"{layer.name}_fault_{fault}"


def engine_timing(spec: EngineSpec) -> dict[str, Any]:
    """The engine's cycle model: issue cycles, drain bubbles and the per-batch start cycle."""
    n = spec.num_factors
    issue = spec.issue_cycles_per_batch
    per_batch = issue + WRITE_STAGE * (n - 1) + 1
    return {
        "pipeline_latency": WRITE_STAGE,
        "drain_cycles": WRITE_STAGE,
        "cycles_per_batch": per_batch,
        "cycles_per_column": per_batch / spec.lanes,
        "mac_utilisation_model": issue / per_batch,
        "in_beats_per_batch": spec.beats_in_per_batch,
        "out_beats_per_batch": spec.beats_out_per_batch,
        "stream_bound_cycles_per_batch": max(spec.beats_in_per_batch, spec.beats_out_per_batch),
    }


def generate(layer: LayerConfig, out_dir: str | Path, fault: str | None = None) -> GeneratedEngine:
    """Write ``<out_dir>/<module>.v`` and ``<out_dir>/manifest.json`` for ``layer``."""
    if fault is not None and fault not in FAULTS:
        raise ConfigError(f"fault={fault!r} is not one of {', '.join(FAULTS)}")
    spec = EngineSpec(layer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = DeButEngine(spec, fault=fault)
    module = module_name(layer, fault)
    text = verilog.convert(engine, name=module, emit_src=False)
    vpath = out_dir / f"{module}.v"
    vpath.write_text(text)
    ports = [{"name": name, "direction": "in" if member.flow == wiring.In else "out",
              "width": Shape.cast(member.shape).width}
             for name, member in engine.signature.members.items()]
    data = spec.manifest_base()
    data.update(module=module, fault=fault, ports=ports, amaranth_version=amaranth.__version__,
                verilog=vpath.name, **engine_timing(spec))
    mpath = out_dir / "manifest.json"
    mpath.write_text(json.dumps(data, indent=2) + "\n")
    return GeneratedEngine(vpath, mpath, data, module)

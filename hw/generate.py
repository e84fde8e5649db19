"""Export a network engine to Verilog with its ``manifest.json`` (the host's and the docs' source of truth)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import amaranth
from amaranth import Shape
from amaranth.back import verilog
from amaranth.lib import wiring

from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError

from . import regmap
from .engine import FAULTS, NetworkEngine
from .cycles import LOAD_LAG, OUT_LAG, PASS_TAIL, REPACK_LAG
from .spec import BIAS_CONTAINER_BITS, DRAIN_CYCLES, EngineEnvelope

__all__ = ["GeneratedEngine", "generate", "module_name", "manifest_for", "FAULTS"]


@dataclass(frozen=True)
class GeneratedEngine:
    verilog: Path
    manifest: Path
    manifest_data: dict[str, Any]
    module: str
    envelope: EngineEnvelope


def module_name(envelope: EngineEnvelope, fault: str | None = None) -> str:
    return envelope.name if fault is None else f"{envelope.name}_fault_{fault}"


def _as_envelope(target: EngineEnvelope | NetworkConfig | LayerConfig) -> EngineEnvelope:
    if isinstance(target, EngineEnvelope):
        return target
    if isinstance(target, LayerConfig):
        target = NetworkConfig.single(target)
    if isinstance(target, NetworkConfig):
        return EngineEnvelope.for_network(target)
    raise ConfigError(f"cannot generate an engine for {type(target).__name__}; give an EngineEnvelope, "
                      f"a NetworkConfig or a LayerConfig")


def _register_dict(reg: regmap.Register) -> dict[str, Any]:
    return {"name": reg.name, "offset": reg.offset, "access": reg.access, "doc": reg.doc,
            "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "doc": f.doc} for f in reg.fields]}


def manifest_for(envelope: EngineEnvelope, module: str, ports: list[dict[str, Any]],
                 fault: str | None = None) -> dict[str, Any]:
    """The manifest of an engine (everything except the Verilog text)."""
    e = envelope.elems_per_beat
    return {
        "module": module,
        "fault": fault,
        "interface_version": list(regmap.VERSION),
        "envelope": envelope.to_dict(),
        "config_hash": envelope.config_hash,
        "hash32": envelope.hash32,
        "lanes": envelope.lanes,
        "stream_bits": envelope.stream_bits,
        "elems_per_beat": e,
        "ports": ports,
        "axil_addr_bits": envelope.axil_addr_bits,
        "registers": [_register_dict(r) for r in envelope.registers],
        "capabilities": envelope.capability_words(),
        "tensor_layout": (f"NHWC-E: image, row, column, then ceil(C/{e}) beats of {e} int8 channels; "
                          f"channels past C are zero; with LAYER.PACKED the input stream is plain NHWC "
                          f"(C bytes a pixel)"),
        "parameter_load": {
            "command": "CTRL.LOAD_PARAMS, then WEIGHT_BEATS + BIAS_BEATS beats on s_axis",
            "weights": (f"all factors' weights in compact (g, t, r, s) order, factors in chain order, "
                        f"{envelope.weights_per_beat} {envelope.weight_bits}-bit weights per beat "
                        f"(weight k of a beat in bits [k*{envelope.weight_bits}, (k+1)*{envelope.weight_bits})), "
                        f"zero-padded to a beat"),
            "biases": (f"if LAYER.BIAS: P biases as sign-extended {BIAS_CONTAINER_BITS}-bit containers, "
                       f"{envelope.biases_per_beat} per beat, zero-padded"),
        },
        "cycle_model": {
            "source": "hw/cycles.py pass_cycles / frame_ready (LayerDescriptor.pass_cycles)",
            "drain_cycles": DRAIN_CYCLES,
            "load_lag": LOAD_LAG, "repack_lag": REPACK_LAG, "pass_tail": PASS_TAIL, "out_lag": OUT_LAG,
            "notes": ("per batch and phase: max(sum p_i*s_i (over each factor's rows an issue: 2 on row-paired, "
                      "4 on row-quad and interleaved-quad factors, 8 on row-octet factors: cycles.factor_issue) + "
                      "DRAIN_CYCLES*(N-1) (+ rows - 1 after each multi-row factor) + 1 "
                      "(+ rows - 2 after a last factor of 4 or 8 rows) issue cycles, "
                      "lanes*KH*KW*CW window cycles, ceil(lanes/G)*max(KH*KW*CW, G) with G > 1 window "
                      "generators); the window generators fill one IN half while the "
                      "MAC array reads the other, the unloader drains one OUT half while the array "
                      "writes the other; the frame loads (a beat a cycle) while windows are formed, a "
                      "window read waiting for its beat; a pass ends when its output is out and its "
                      "frame is in"),
        },
        "macs_per_dsp": envelope.macs_per_dsp,
        "row_pairs": envelope.row_pairs,
        "row_quads": envelope.row_quads,
        "row_octets": envelope.row_octets,
        "frame_word_beats": envelope.frame_word_beats,
        "dsps": envelope.dsps,
        "window_generators": envelope.window_generators,
        "amaranth_version": amaranth.__version__,
    }


def generate(target: EngineEnvelope | NetworkConfig | LayerConfig, out_dir: str | Path,
             fault: str | None = None, ram_styles: Mapping[str, str] | None = None) -> GeneratedEngine:
    """Write ``<out_dir>/<module>.v`` and ``<out_dir>/manifest.json`` for the engine of ``target``.

    ``ram_styles`` (memory name -> ``ram_style``, from a board's memory plan) places memories; it
    changes the Verilog's attributes, not the engine (same hash, same behaviour)."""
    if fault is not None and fault not in FAULTS:
        raise ConfigError(f"fault={fault!r} is not one of {', '.join(FAULTS)}")
    envelope = _as_envelope(target)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = NetworkEngine(envelope, fault=fault, ram_styles=ram_styles)
    module = module_name(envelope, fault)
    text = verilog.convert(engine, name=module, emit_src=False)
    vpath = out_dir / f"{module}.v"
    vpath.write_text(text)
    ports = [{"name": name, "direction": "in" if member.flow == wiring.In else "out",
              "width": Shape.cast(member.shape).width}
             for name, member in engine.signature.members.items()]
    data = manifest_for(envelope, module, ports, fault)
    data["verilog"] = vpath.name
    data["ram_styles"] = dict(sorted((ram_styles or {}).items()))
    mpath = out_dir / "manifest.json"
    mpath.write_text(json.dumps(data, indent=2) + "\n")
    return GeneratedEngine(vpath, mpath, data, module, envelope)

"""The network engine's AXI4-Lite register map: the one definition the RTL decode and
readback, the manifest, the host driver, the engine model and the testbenches use.

All registers are 32 bits wide at word-aligned byte offsets. Registers with fields are
written and read through :func:`pack` / :func:`unpack`; nothing else in the project
spells an offset or a bit position. Per factor ``i`` (0-based) five registers
``F<i>_RS``, ``F<i>_TG``, ``F<i>_SHIFT``, ``F<i>_SPARSE``, ``F<i>_STRIDES`` follow the fixed registers at
``FACTOR_BASE + FACTOR_STRIDE*i``.

Register groups:

* identity and capabilities (R): what the host checks before it trusts an engine;
* control and status;
* the layer descriptor (RW): the geometry of the layer the next ``LOAD_PARAMS`` /
  ``START`` uses; it stays until rewritten (soft reset keeps it);
* the pass constants (RW): products of descriptor fields the host computes
  (:func:`litefly.hw.spec.pass_constants`), so the engine has no set-up multipliers;
* performance counters (R, 32-bit, wrapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["Field", "Register", "REGISTERS", "REG", "ID_MAGIC", "VERSION", "FACTOR_BASE", "FACTOR_STRIDE",
           "FACTOR_REGS", "COUNTERS", "DESCRIPTOR", "PASS_CONSTANTS", "register_map", "address_bits", "factor_reg", "pack", "unpack",
           "by_name", "CTRL_START", "CTRL_LOAD_PARAMS", "CTRL_SOFT_RESET", "CTRL_CLEAR_COUNTERS",
           "STATUS_BUSY", "STATUS_DONE", "STATUS_LOADING", "STATUS_PARAMS_VALID"]

ID_MAGIC = 0x4C464C59          # "LFLY"
# (major, minor): 2 = network engine (run-time layer descriptors); 3 = packed input
# (LAYER.PACKED) and the frame loaded under the windows (a 2.x engine would misread packed input);
# 3.1 adds sparse factors (F<i>_SPARSE, INDEX_BEATS, CAP_INDEX_BEATS) and residual adds
# (LAYER.RESIDUAL, SKIP, SKIP_BEATS); 3.2 runs the frame buffer as a ring (a 3.1 engine would let
# a pass larger than its frame buffer overwrite beats its windows have not read); 3.3 adds the
# pass constant LANE_BEATS (a 3.2 host leaves it 0, and a window never ends its lane). The envelope
# hash covers the version: a bitstream of another version is another engine.
VERSION = (3, 3)
FACTOR_BASE = 0x100
FACTOR_STRIDE = 0x20           # F<i>_RS, F<i>_TG, F<i>_SHIFT, F<i>_SPARSE, F<i>_STRIDES


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    doc: str


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str                # "R", "RW" or "W" (write-only strobes, read as 0)
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _pair(lo: str, hi: str, what: str) -> tuple[Field, ...]:
    return (Field(lo, 0, 16, f"{what} ({lo})"), Field(hi, 16, 16, f"{what} ({hi})"))


REGISTERS: tuple[Register, ...] = (
    # -- identity and capabilities --------------------------------------------------------------
    Register("ID", 0x00, "R", f"constant 0x{ID_MAGIC:08X} ('LFLY')"),
    Register("VERSION", 0x04, "R", "interface version", (
        Field("MINOR", 0, 16, "minor version"), Field("MAJOR", 16, 16, "major version"))),
    Register("CONFIG_HASH", 0x08, "R", "first 32 bits of the engine envelope's hash (EngineEnvelope.hash32)"),
    Register("LANES", 0x0C, "R", "MAC lanes = output positions per batch"),
    Register("CTRL", 0x10, "W", "control strobes, self-clearing", (
        Field("START", 0, 1, "run one pass of the layer in the descriptor over IMAGES images"),
        Field("LOAD_PARAMS", 1, 1, "consume WEIGHT_BEATS + BIAS_BEATS parameter beats from s_axis"),
        Field("SOFT_RESET", 2, 1, "reset loader, window generator, sequencer, MAC pipeline, output stage, "
                                  "unloader, flags and counters; descriptor and weight memory kept, "
                                  "PARAMS_VALID cleared"),
        Field("CLEAR_COUNTERS", 3, 1, "zero the performance counters"),
    )),
    Register("STATUS", 0x14, "R", "engine state", (
        Field("BUSY", 0, 1, "a pass is in progress"),
        Field("DONE", 1, 1, "the last pass finished (its last output beat was sent); cleared by START"),
        Field("LOADING", 2, 1, "a parameter load is in progress"),
        Field("PARAMS_VALID", 3, 1, "a complete parameter load finished since the last reset"),
    )),
    Register("INFO", 0x18, "R", "static widths", (
        Field("STREAM_BYTES", 0, 8, "AXI-Stream data width in bytes = tensor elements per beat"),
        Field("ACT_BITS", 8, 8, "activation width"),
        Field("WEIGHT_BITS", 16, 8, "weight width"),
        Field("MAX_FACTORS", 24, 8, "most factors a layer may have"),
    )),
    Register("CAP_DEPTHS", 0x1C, "R", "largest chain sizes the memories hold", (
        Field("MAX_Q", 0, 16, "largest chain input q_1 (IN memory, elements per column)"),
        Field("MAX_P", 16, 16, "largest chain output p_N (OUT memory)"),
    )),
    Register("CAP_WORK", 0x20, "R", "largest intermediate width p_1..p_(N-1) (WORK memory)"),
    Register("CAP_PARAM_BEATS", 0x24, "R", "weight memory depth in beats", (
        Field("WEIGHT_BEATS", 0, 24, "weight memory depth in beats"),
        Field("ACC_BITS", 24, 8, "accumulator width"),
    )),
    Register("CAP_FRAME_BEATS", 0x28, "R", "frame buffer depth in beats (input feature map of one pass)"),
    Register("CAP_FEATURES", 0x30, "R", "optional parts the engine was generated with", (
        Field("RESIDUAL", 0, 1, "residual adds (LAYER.RESIDUAL)"),
        Field("MACS_PER_DSP", 1, 2, "lanes sharing one multiplier (1 or 2)"),
        Field("WINDOWS", 3, 3, "window generators (1, 2 or 4)"),
        Field("ROW_PAIRS", 6, 1, "a multiplier's two MACs are two rows of one lane (else two lanes)"),
        Field("ROW_QUADS", 7, 1, "with ROW_PAIRS: two multipliers per lane, four rows of a block an issue"),
        Field("FRAME_WORD_BEATS", 8, 3, "beats a frame-buffer word holds (1, 2 or 4): a window read takes up "
                                        "to that many beats of a pixel"),
        Field("INTERLEAVED_QUADS", 11, 1, "with ROW_QUADS: a later factor with r and t even and s >= 4 issues "
                                          "rows of two neighbouring blocks from two WORK columns"),
        Field("ROW_OCTETS", 12, 1, "with ROW_QUADS: four multipliers per lane, eight rows of a block an issue"))),
    Register("CAP_INDEX_BEATS", 0x2C, "R", "index memory depth in beats (sparse factors' column indices); "
                                           "0: the engine runs DeBut factors only"),
    # -- layer descriptor ------------------------------------------------------------------------
    Register("LAYER", 0x40, "RW", "chain length and fused operations", (
        Field("FACTORS", 0, 8, "number of factors N (1..MAX_FACTORS)"),
        Field("BIAS", 8, 1, "add the bias after the last factor"),
        Field("RELU", 9, 1, "ReLU after the last factor's requantisation"),
        Field("POOL", 10, 1, "max pooling of the outputs (POOL_K x POOL_K windows, step POOL_S)"),
        Field("PACKED", 11, 1, "the input stream is packed NHWC (C bytes a pixel, no padding channels), "
                               "repacked to NHWC-E on the way in"),
        Field("RESIDUAL", 12, 1, "add a skip tensor (the output's shape, NHWC-E, streamed after the frame) "
                                 "aligned by SKIP, before ReLU; RELU then applies after the add"),
    )),
    Register("IN_C", 0x44, "RW", "input channels C (beats per pixel: ceil(C / STREAM_BYTES))", (
        Field("C", 0, 16, "input channels"),)),
    Register("IN_HW", 0x48, "RW", "input feature map size", _pair("H", "W", "input")),
    Register("OUT_C", 0x4C, "RW", "output channels P = p_N", (Field("P", 0, 16, "output channels"),)),
    Register("CONV_HW", 0x50, "RW", "convolution output size (before pooling)", _pair("HO", "WO", "conv output")),
    Register("OUT_HW", 0x54, "RW", "emitted output size (after pooling; = CONV_HW without POOL)",
             _pair("HP", "WP", "emitted")),
    Register("KERNEL", 0x58, "RW", "kernel size", _pair("KH", "KW", "kernel")),
    Register("STRIDE", 0x5C, "RW", "stride", _pair("SH", "SW", "stride")),
    Register("PAD", 0x60, "RW", "zero padding", _pair("PH", "PW", "padding")),
    Register("DILATION", 0x64, "RW", "dilation", _pair("DH", "DW", "dilation")),
    Register("POOL", 0x68, "RW", "max pooling window", (
        Field("K", 0, 8, "window POOL_K x POOL_K"), Field("S", 8, 8, "step"))),
    Register("IMAGES", 0x6C, "RW", "images in the next pass (the frame buffer holds them all, or streams them as a ring)"),
    Register("WEIGHT_BEATS", 0x70, "RW", "parameter beats holding the weights (compact order)"),
    Register("BIAS_BEATS", 0x74, "RW", "parameter beats holding the biases (32-bit containers); 0 without BIAS"),
    Register("INDEX_BEATS", 0x78, "RW", "parameter beats holding the sparse factors' entries (16 bits each: "
                                        "column in bits 0-14, row end in bit 15), after the weights"),
    Register("SKIP", 0xA0, "RW", "residual add: skip aligned to the output's scale as "
                                 "(skip * M + 2^(K-1)) >> K (no rounding term for K = 0)", (
        Field("M", 0, 16, "unsigned multiplier"), Field("K", 16, 5, "right shift"))),
    Register("SKIP_BEATS", 0xA4, "RW", "skip beats after the frame (IMAGES * HP * WP * ceil(P / STREAM_BYTES)); "
                                       "0 without RESIDUAL"),
    # -- pass constants: products of the fields above, computed by the host (no set-up multipliers) --
    *(Register(name, 0xC0 + 4 * k, "RW", doc) for k, (name, doc) in enumerate((
        ("CW", "beats per input pixel, ceil(C / STREAM_BYTES)"),
        ("HPWP", "emitted positions per image, HP * WP"),
        ("XSTEP", "conv columns per emitted column, (POOL ? POOL_S : 1) * SW"),
        ("YSTEP", "conv rows per emitted row, (POOL ? POOL_S : 1) * SH"),
        ("W_CW", "frame beats per input row, W * CW"),
        ("DW_CW", "DW * CW"), ("SW_CW", "SW * CW"), ("PW_CW", "PW * CW"),
        ("NPOS", "emitted positions of the pass, HPWP * IMAGES"),
        ("HW_CW", "frame beats per image, H * W * CW"),
        ("XSTEP_CW", "XSTEP * CW"), ("YSTEP_WCW", "YSTEP * W * CW"),
        ("DH_WCW", "DH * W * CW"), ("SH_WCW", "SH * W * CW"), ("PH_WCW", "PH * W * CW"),
        ("FRAME_BEATS", "frame beats of the pass, IMAGES * H * W * CW"),
    ))),
    Register("LANE_BEATS", 0xA8, "RW", "frame beats of one window (a lane's reads x RB), KH * KW * CW"),
    # -- performance counters --------------------------------------------------------------------
    Register("CYCLES", 0x80, "R", "cycles with BUSY set"),
    Register("BUSY_CYCLES", 0x84, "R", "cycles the MAC array issued a multiply-accumulate"),
    Register("STARVED_CYCLES", 0x88, "R", "BUSY cycles the MAC array waited for a window batch (frame arrival waits excluded)"),
    Register("STALLED_CYCLES", 0x8C, "R", "cycles m_axis_tvalid was high and m_axis_tready low"),
    Register("COLUMNS_DONE", 0x90, "R", "output positions whose outputs were fully sent"),
    Register("LOAD_CYCLES", 0x94, "R", "BUSY cycles spent receiving the pass's input feature map (windows are formed meanwhile)"),
)

FACTOR_REGS: tuple[tuple[str, str, tuple[Field, ...]], ...] = (
    ("RS", "sub-rows r and sub-columns s of factor i", _pair("R", "S", "block grid")),
    ("TG", "diagonal size t and super-blocks g = q/(s*t) of factor i", _pair("T", "G", "blocks")),
    ("SHIFT", "requantisation shift of factor i", (Field("SHIFT", 0, 8, "right shift"),)),
    ("SPARSE", "factor i's kind: 0 = DeBut (RS, TG); else a sparse factor of ROWS rows whose entries "
               "come from the index memory", (
        Field("ROWS", 0, 16, "rows p of a sparse factor (0: a DeBut factor)"),
        Field("SPLIT", 16, 16, "concat: columns below SPLIT read the layer input, the others the previous "
                               "factor's output at column - SPLIT (0: no concat)"))),
    ("STRIDES", "factor i's read and write steps per super-block (host-computed products)", (
        Field("ST", 0, 16, "s * t"), Field("RT", 16, 16, "r * t"))),
)

COUNTERS = ("CYCLES", "BUSY_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES", "COLUMNS_DONE", "LOAD_CYCLES")
DESCRIPTOR = ("LAYER", "IN_C", "IN_HW", "OUT_C", "CONV_HW", "OUT_HW", "KERNEL", "STRIDE", "PAD", "DILATION",
              "POOL", "IMAGES", "WEIGHT_BEATS", "BIAS_BEATS", "INDEX_BEATS", "SKIP", "SKIP_BEATS")
PASS_CONSTANTS = ("CW", "HPWP", "XSTEP", "YSTEP", "W_CW", "DW_CW", "SW_CW", "PW_CW", "NPOS", "HW_CW", "XSTEP_CW",
                  "YSTEP_WCW", "DH_WCW", "SH_WCW", "PH_WCW", "FRAME_BEATS", "LANE_BEATS")
DESCRIPTOR = DESCRIPTOR + PASS_CONSTANTS

REG = {r.name: r.offset for r in REGISTERS}
_BY_NAME = {r.name: r for r in REGISTERS}

CTRL_START = 1 << 0
CTRL_LOAD_PARAMS = 1 << 1
CTRL_SOFT_RESET = 1 << 2
CTRL_CLEAR_COUNTERS = 1 << 3
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_LOADING = 1 << 2
STATUS_PARAMS_VALID = 1 << 3


def factor_reg(i: int, kind: str) -> Register:
    """``F<i>_RS``, ``F<i>_TG``, ``F<i>_SHIFT``, ``F<i>_SPARSE`` or ``F<i>_STRIDES``."""
    for k, (name, doc, fields) in enumerate(FACTOR_REGS):
        if name == kind:
            return Register(f"F{i}_{name}", FACTOR_BASE + FACTOR_STRIDE * i + 4 * k, "RW",
                            doc.replace("factor i", f"factor {i}"), fields)
    raise KeyError(f"no factor register {kind!r}")


def register_map(max_factors: int) -> list[Register]:
    """The fixed registers plus the factor registers of ``max_factors`` factors."""
    return list(REGISTERS) + [factor_reg(i, k) for i in range(max_factors) for k, _, _ in FACTOR_REGS]


def by_name(name: str, max_factors: int = 64) -> Register:
    """The register called ``name`` (``F<i>_...`` included)."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    if name.startswith("F") and "_" in name:
        idx, kind = name[1:].split("_", 1)
        if idx.isdigit() and int(idx) < max_factors:
            return factor_reg(int(idx), kind)
    raise KeyError(f"no register {name!r}")


def address_bits(max_factors: int) -> int:
    """AXI-Lite address width covering every register."""
    top = FACTOR_BASE + FACTOR_STRIDE * max_factors
    return max(8, (top - 1).bit_length())


def pack(reg: Register | str, values: Mapping[str, int] | int) -> int:
    """A register word from its field values (an int passes through for field-less registers)."""
    reg = by_name(reg) if isinstance(reg, str) else reg
    if isinstance(values, int):
        if reg.fields and len(reg.fields) > 1:
            raise ValueError(f"register {reg.name} has fields {reg.field_names}; give them by name")
        values = {reg.fields[0].name: values} if reg.fields else {"": values}
    if not reg.fields:
        v = int(values[""])
        if not 0 <= v < 1 << 32:
            raise ValueError(f"register {reg.name}: value {v} does not fit 32 bits")
        return v
    word = 0
    for name, v in values.items():
        f = next((f for f in reg.fields if f.name == name), None)
        if f is None:
            raise ValueError(f"register {reg.name} has no field {name!r} (fields: {', '.join(reg.field_names)})")
        v = int(v)
        if not 0 <= v < 1 << f.width:
            raise ValueError(f"register {reg.name}.{name}: value {v} does not fit {f.width} bits")
        word |= v << f.lsb
    return word


def unpack(reg: Register | str, word: int) -> dict[str, int]:
    """Field values of a register word."""
    reg = by_name(reg) if isinstance(reg, str) else reg
    if not reg.fields:
        return {reg.name: int(word) & 0xFFFFFFFF}
    return {f.name: (int(word) >> f.lsb) & ((1 << f.width) - 1) for f in reg.fields}

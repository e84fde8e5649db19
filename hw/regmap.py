"""The engine's AXI4-Lite register map: the one definition the RTL, manifest, host and docs use.

All registers are 32 bits wide at word-aligned byte offsets. ``SHIFT[i]`` (one per factor)
follows the fixed registers at ``SHIFT_BASE + 4*i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Field", "Register", "REGISTERS", "REG", "ID_MAGIC", "VERSION", "SHIFT_BASE",
           "register_map", "CTRL_START", "CTRL_LOAD_PARAMS", "CTRL_SOFT_RESET", "CTRL_CLEAR_COUNTERS",
           "STATUS_BUSY", "STATUS_DONE", "STATUS_LOADING", "STATUS_PARAMS_VALID"]

ID_MAGIC = 0x4C464C59          # "LFLY"
VERSION = (1, 0)               # (major, minor) of the engine interface
SHIFT_BASE = 0x40

CTRL_START = 1 << 0            # start a tile of TILE_BATCHES batches
CTRL_LOAD_PARAMS = 1 << 1      # the next parameter words on s_axis are weights (then biases)
CTRL_SOFT_RESET = 1 << 2       # reset the datapath and counters (weights, shifts, TILE_BATCHES kept)
CTRL_CLEAR_COUNTERS = 1 << 3   # zero the performance counters

STATUS_BUSY = 1 << 0           # a tile is in progress
STATUS_DONE = 1 << 1           # the last tile finished (cleared by START)
STATUS_LOADING = 1 << 2        # a parameter load is in progress
STATUS_PARAMS_VALID = 1 << 3   # a full parameter load completed since reset


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
    access: str                # "R", "RW" or "W" (write-only, self-clearing bits read as 0)
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)


REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x00, "R", f"constant 0x{ID_MAGIC:08X} ('LFLY')"),
    Register("VERSION", 0x04, "R", "interface version, major << 16 | minor"),
    Register("CONFIG_HASH", 0x08, "R", "first 32 bits of the layer config hash (LayerConfig.hash32)"),
    Register("LANES", 0x0C, "R", "MAC lanes (multipliers) = columns per batch"),
    Register("CTRL", 0x10, "W", "control strobes, self-clearing", (
        Field("START", 0, 1, "start a tile of TILE_BATCHES batches"),
        Field("LOAD_PARAMS", 1, 1, "consume weights (then biases) from s_axis"),
        Field("SOFT_RESET", 2, 1, "reset datapath and counters; parameters kept"),
        Field("CLEAR_COUNTERS", 3, 1, "zero the performance counters"),
    )),
    Register("STATUS", 0x14, "R", "engine state", (
        Field("BUSY", 0, 1, "a tile is in progress"),
        Field("DONE", 1, 1, "the last tile finished; cleared by START"),
        Field("LOADING", 2, 1, "a parameter load is in progress"),
        Field("PARAMS_VALID", 3, 1, "a complete parameter load finished since reset"),
    )),
    Register("TILE_BATCHES", 0x18, "RW", "batches per tile (columns per tile / LANES); TLAST ends each tile"),
    Register("INFO", 0x1C, "R", "static shape info", (
        Field("STREAM_BYTES", 0, 8, "AXI-Stream data width in bytes"),
        Field("ACT_BITS", 8, 8, "activation width"),
        Field("WEIGHT_BITS", 16, 8, "weight width"),
        Field("FACTORS", 24, 8, "number of factors in the chain"),
    )),
    Register("CYCLES", 0x20, "R", "cycles with BUSY set"),
    Register("BUSY_CYCLES", 0x24, "R", "cycles the MAC array issued a multiply-accumulate"),
    Register("STARVED_CYCLES", 0x28, "R", "BUSY cycles the MAC array waited for an input batch"),
    Register("STALLED_CYCLES", 0x2C, "R", "cycles m_axis_tvalid was high and m_axis_tready low"),
    Register("COLUMNS_DONE", 0x30, "R", "columns whose outputs were fully sent"),
)

REG = {r.name: r.offset for r in REGISTERS}


def register_map(num_factors: int) -> list[Register]:
    """The fixed registers plus one ``SHIFT<i>`` register per factor."""
    shifts = [Register(f"SHIFT{i}", SHIFT_BASE + 4 * i, "RW", f"requantisation shift of factor {i + 1}")
              for i in range(num_factors)]
    return list(REGISTERS) + shifts


def address_bits(num_factors: int) -> int:
    """AXI-Lite address width covering every register."""
    top = SHIFT_BASE + 4 * num_factors
    return max(8, (top - 1).bit_length())

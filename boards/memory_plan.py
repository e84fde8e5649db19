"""Where the engine's memories go on a board: block RAM or UltraRAM (``ram_style``).

The engine is generated per envelope; its memories (``litefly.hw.memories.engine_memories``)
get a ``ram_style`` attribute per board when the board has UltraRAM. Without one, Yosys and
Vivado put every memory deeper than LUT-RAM's in block RAM, and on the ZCU104 (312 BRAM36, 96
URAM288) the 96 UltraRAMs stay empty while the block RAM runs out.

The plan balances the two: it estimates each memory's cost in BRAM36 and in URAM288 from its
shape (the primitives' aspect ratios; with byte-granular writes, 8 data bits per 9-bit byte
lane), then moves memories to UltraRAM, most block RAM saved
per UltraRAM first, while that lowers the larger of the two shares (each over its FINN ceiling,
``synth.CEILINGS``). Memories of at most :data:`LUTRAM_DEPTH` words are left to the tools, which
put them in LUT-RAM (every Yosys run measured so far did). The estimate counts one copy per
read port (``EngineMemory.read_ports``): block RAM and UltraRAM have one read port beside the
write port.

This is an estimate from shapes alone: ``litefly synth`` reports what Yosys then maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from litefly.hw.memories import EngineMemory, engine_memories
from litefly.hw.spec import EngineEnvelope

from .boards import Board

__all__ = ["MemoryPlan", "plan_memories", "bram36_blocks", "uram_blocks", "LUTRAM_DEPTH"]

LUTRAM_DEPTH = 64
# (width, depth) of a RAMB36 and a RAMB18 in simple dual-port mode (7-series and UltraScale)
_RAMB36 = ((1, 32768), (2, 16384), (4, 8192), (9, 4096), (18, 2048), (36, 1024), (72, 512))
_RAMB18 = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
_URAM = (72, 4096)                      # URAM288


def _blocks(width: int, depth: int, shape: tuple[int, int], granularity: int | None) -> int | None:
    """Primitives of ``shape`` for the memory; with a write granularity that is not a multiple of 9,
    each 9-bit byte-enable lane holds 8 data bits (the parity bit is not addressable on its own),
    and shapes narrower than 9 bits have no byte enables."""
    w, d = shape
    if granularity is not None and granularity % 9:
        if w < 9:
            return None
        w = w // 9 * 8
    return -(-width // w) * -(-depth // d)


@functools.lru_cache(maxsize=4096)
def bram36_blocks(width: int, depth: int, granularity: int | None = None) -> float:
    """BRAM36 equivalents of one copy of a ``width`` x ``depth`` memory (RAMB18 = 0.5).

    The words may be split by depth between two aspect ratios, as Yosys maps them: a 48-bit,
    1,152-word memory of byte writes is 1,024 words in three RAMB18s of 18 x 1,024 and 128 words in
    two of 36 x 512, 2.5 BRAM36, where one ratio alone needs 3. A memory of byte writes may also
    be split by width at its write lanes, each part mapped on its own: a 40-bit, 1,152-word one is
    32 bits in 1.5 BRAM36 and 8 bits in one RAMB18, 2 BRAM36 (Yosys 0.70 maps 19 shapes of IN,
    OUT and frame memories exactly so: ``tests/test_memory_plan.py``)."""
    best = _one_part(width, depth, granularity)
    if granularity is not None:
        for part in range(granularity, width, granularity):
            best = min(best, _one_part(part, depth, granularity) + bram36_blocks(width - part, depth, granularity))
    return best


def _one_part(width: int, depth: int, granularity: int | None) -> float:
    """:func:`bram36_blocks` of a memory mapped whole by width (split by depth at most)."""
    shapes = [(s, 1.0) for s in _RAMB36] + [(s, 0.5) for s in _RAMB18]

    def whole(d: int) -> float:
        return min(cost * n for s, cost in shapes if (n := _blocks(width, d, s, granularity)) is not None)

    best = whole(depth)
    for (w, d), cost in shapes:
        full = depth // d
        if 0 < full and depth % d and (n := _blocks(width, full * d, (w, d), granularity)) is not None:
            best = min(best, cost * n + whole(depth % d))
    return best


def uram_blocks(width: int, depth: int, granularity: int | None = None) -> int:
    """URAM288 blocks of one copy of a ``width`` x ``depth`` memory."""
    n = _blocks(width, depth, _URAM, granularity)
    assert n is not None
    return n


@dataclass
class MemoryPlan:
    board: str
    styles: dict[str, str]               # memory name -> ram_style (memories left out: the tools' choice)
    bram36: float                        # estimated block RAM (BRAM36 equivalents)
    uram: int                            # estimated UltraRAM (URAM288)
    rows: list[dict[str, Any]] = field(default_factory=list)    # per kind of memory, for reports

    def verdict(self, board: Board) -> str:
        """The fit verdict of these memories alone on ``board`` (``fits``, ``tight (...)`` or
        ``does not fit (...)``, as ``litefly synth`` judges a whole engine)."""
        from .synth import verdict  # noqa: PLC0415 (synth imports this module)
        used = {**dict.fromkeys(board.capacity, 0.0), "bram36": self.bram36, "uram": float(self.uram)}
        return verdict(used, board.capacity)

    def to_dict(self) -> dict[str, Any]:
        return {"board": self.board, "styles": self.styles, "bram36": self.bram36, "uram": self.uram,
                "rows": self.rows}


def _place(mem: EngineMemory, style: str | None) -> tuple[float, int]:
    """(BRAM36, URAM) of ``mem`` placed as ``style`` (None: the tools' default)."""
    if style is None and mem.depth <= LUTRAM_DEPTH:
        return 0.0, 0
    if style == "ultra":
        return 0.0, uram_blocks(mem.width, mem.depth, mem.granularity) * mem.read_ports
    return bram36_blocks(mem.width, mem.depth, mem.granularity) * mem.read_ports, 0


def _kind(name: str) -> str:
    return name.rstrip("0123456789_")


def plan_memories(env: EngineEnvelope, board: Board, styles: dict[str, str] | None = None) -> MemoryPlan:
    """The memory plan of the engine of ``env`` on ``board`` (no styles on a board without UltraRAM);
    with ``styles``, the cost of that placement instead (what a run with those ``ram_style`` attributes maps)."""
    from .synth import CEILINGS  # noqa: PLC0415 (synth imports this module)

    mems = engine_memories(env)
    if styles is not None:
        return _rows(board, mems, dict(styles))
    styles = {}
    cost = {m.name: _place(m, None) for m in mems}
    bram = sum(b for b, _ in cost.values())
    uram = 0

    def worst(b: float, u: float) -> float:
        return max(b / (board.bram36 * CEILINGS["bram36"]),
                   u / (board.uram * CEILINGS["uram"]) if board.uram else 0.0)

    if board.uram:
        movable = [m for m in mems if cost[m.name][0] > 0]
        movable.sort(key=lambda m: (-cost[m.name][0] / _place(m, "ultra")[1], m.name))
        for mem in movable:
            b, u = bram - cost[mem.name][0], uram + _place(mem, "ultra")[1]
            if u <= board.uram and worst(b, u) < worst(bram, uram):
                styles[mem.name], bram, uram = "ultra", b, u
    return _rows(board, mems, styles)


def _rows(board: Board, mems: list[EngineMemory], styles: dict[str, str]) -> MemoryPlan:
    """The plan of ``mems`` placed as ``styles``: totals and a row per kind of memory and placement."""
    bram, uram = 0.0, 0
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for mem in mems:
        style = styles.get(mem.name)
        b, u = _place(mem, style)
        where = style or ("LUT-RAM (tools)" if mem.depth <= LUTRAM_DEPTH else "block (tools)")
        row = rows.setdefault((_kind(mem.name), where), {
            "memory": _kind(mem.name), "role": mem.role, "count": 0, "width": mem.width, "depth": mem.depth,
            "read_ports": mem.read_ports, "placed": where, "bram36": 0.0, "uram": 0})
        row["count"] += 1
        row["bram36"] += b
        row["uram"] += u
        bram, uram = bram + b, uram + u
    return MemoryPlan(board.name, styles, bram, uram, list(rows.values()))

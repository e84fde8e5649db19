"""``litefly build`` (Vivado build for a board) and ``litefly synth`` (Yosys resource estimate).

Both take a network YAML (or a layer YAML: a one-layer network) and build the network
engine of its envelope (:meth:`litefly.hw.spec.EngineEnvelope.for_network`): one engine,
one bitstream, for every layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from litefly.cli.envelope_options import envelope_options, merge_option
from litefly.cli.output import console as output_console
from litefly.progress import status
from litefly.config import NetworkConfig, load_network
from litefly.errors import ConfigError
from litefly.hw.spec import EngineEnvelope

from .boards import BOARDS, get_board
from .memory_plan import plan_memories

_BOARD = click.option("--board", "board_name", required=True, type=click.Choice(sorted(BOARDS)),
                      help="Target board.")
_INPUT_SIZE = click.option("--input-size", type=(click.IntRange(1, 4096), click.IntRange(1, 4096)), default=None,
                           metavar="H W", help="Input height and width of a conv network (sizes the frame "
                                               "buffer; default: the network's input_size).")


def network_envelope(network: NetworkConfig, input_size: tuple[int, int] | None = None,
                     multipliers: int | None = None, macs_per_dsp: int | None = None,
                     stream_bits: int | None = None, window_generators: int | None = None,
                     frame_kib: int | None = None, board: str | None = None,
                     row_pairs: bool | None = None, row_quads: bool | None = None,
                     frame_word_beats: int | None = None, row_octets: bool | None = None) -> EngineEnvelope:
    """The envelope of ``network`` at ``input_size`` on ``board`` (its default envelope where the
    network and the options are silent; another multiplier budget, packing, stream width,
    window-generator count or frame buffer size is another engine and hash)."""
    return EngineEnvelope.for_network(network, input_size, multipliers=multipliers, macs_per_dsp=macs_per_dsp,
                                      stream_bits=stream_bits, window_generators=window_generators,
                                      frame_kib=frame_kib, board=board, row_pairs=row_pairs, row_quads=row_quads,
                                      frame_word_beats=frame_word_beats, row_octets=row_octets)


def _describe(env: EngineEnvelope, network: NetworkConfig) -> str:
    return (f"engine {env.name} 0x{env.hash32:08x} ({env.words}) for "
            f"{len(network.layers)} layer{'s' if len(network.layers) != 1 else ''}: "
            f"{', '.join(l.name for l in network.layers)}")


@click.command()
@click.argument("config", metavar="NETWORK_OR_LAYER", type=click.Path(path_type=Path, dir_okay=False))
@_BOARD
@_INPUT_SIZE
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Build directory to write.")
@click.option("--clock-mhz", type=float, default=None, help="PL clock (default: the board's).")
@click.option("--jobs", type=int, default=4, show_default=True, help="Vivado parallel jobs.")
@click.option("--skip-fit-check", is_flag=True,
              help="Write the build even if the memory plan's estimate exceeds the board's block RAM or UltraRAM.")
@envelope_options
@merge_option
def build(config: Path, board_name: str, input_size: tuple[int, int] | None, out_dir: Path,
          clock_mhz: float | None, jobs: int, skip_fit_check: bool, engine: dict[str, int | None],
          merge: bool | None) -> None:
    """Write the network engine, build.tcl, constraints and README for NETWORK_OR_LAYER; run Vivado if it is
    on PATH. One bitstream serves every layer of the network."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from .vivado import run_vivado, vivado_path, write_build  # noqa: PLC0415

    console = output_console()
    network = load_network(config, merge=merge)
    board = get_board(board_name)
    env = network_envelope(network, input_size, **engine, board=board.name)
    memories = plan_memories(env, board)
    fit = memories.verdict(board)
    if fit.startswith("does not fit") and not skip_fit_check:
        uram = f", {memories.uram} of {board.uram} URAM" if board.uram else ""
        raise ConfigError(f"engine {env.name} ({env.words}) {fit} on {board.name} by its memory plan: "
                          f"{memories.bram36:g} of {board.bram36} BRAM36{uram}; use fewer --multipliers (or "
                          f"engine: boards: {board.name}: ...) or --skip-fit-check")
    plan = write_build(env, board, out_dir, clock_mhz=clock_mhz, jobs=jobs, input_size=input_size,
                       network=network)
    console.print(f"wrote {plan.tcl}, {plan.xdc.name}, {plan.readme.name}, manifest.json and rtl/ "
                  f"({_describe(env, network)}; {board.name} at {plan.clock_mhz:g} MHz)", soft_wrap=True)
    console.print(_plan_text(plan.info["memory_plan"]) + f"; memories {fit}", soft_wrap=True)
    if vivado_path() is None:
        console.print("Vivado is not on PATH here. On a Vivado machine run:\n"
                      f"  {plan.command}\nthen: litefly bitstreams add {plan.out_dir}", soft_wrap=True)
        return
    with Progress(TextColumn("[bold]vivado[/] {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("starting", total=7)

        def step(i: int, n: int, what: str) -> None:
            progress.update(task, completed=i - 1, total=n, description=what)
        results = run_vivado(plan, on_step=step)
        progress.update(task, completed=progress.tasks[0].total, description="done")
    console.print(f"{plan.name}.bit + .hwh written; Vivado {results['vivado_version']}, "
                  f"WNS {results['wns_ns']} ns, clock {results['clock_mhz_actual']} MHz")
    console.print(f"register it: litefly bitstreams add {plan.out_dir}")


@click.command()
@click.argument("config", metavar="NETWORK_OR_LAYER", type=click.Path(path_type=Path, dir_okay=False))
@_BOARD
@_INPUT_SIZE
@envelope_options
@merge_option
@click.option("--json", "json_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the report as JSON.")
@click.option("--no-cache", is_flag=True, help="Rerun Yosys (and nextpnr) even if a cached result exists.")
@click.option("--memory-plan/--no-memory-plan", default=True, show_default=True,
              help="Place the engine's memories in block RAM or UltraRAM by the board's memory plan (what "
                   "'litefly build' does); without it every memory is left to Yosys.")
@click.option("--fmax-proxy", is_flag=True,
              help="Also place and route the engine on an ECP5 85F (Yosys synth_ecp5 + nextpnr-ecp5, out of "
                   "context) for an fmax PROXY: a slower 40 nm fabric, not the Zynq. Takes minutes.")
@click.option("--proxy-lanes", type=click.IntRange(1, 4096), default=None, metavar="N",
              help="Lanes of the engine the proxy places and routes (same network and packing; default "
                   "16, or the board envelope's if smaller).")
@click.option("--proxy-timeout", type=click.FloatRange(min=1.0), default=None, metavar="S",
              help="Wall-clock bound of the proxy in seconds (Yosys + nextpnr; default 2700). If routing has "
                   "not finished then, nextpnr's post-placement estimate is reported as such.")
@click.option("--proxy-mhz", type=click.FloatRange(min=1.0), default=None, metavar="F",
              help="nextpnr's target clock for the proxy (default 125 MHz).")
def synth(config: Path, board_name: str, input_size: tuple[int, int] | None, engine: dict[str, int | None],
          json_file: Path | None,
          no_cache: bool, memory_plan: bool, fmax_proxy: bool, proxy_lanes: int | None, proxy_timeout: float | None,
          proxy_mhz: float | None, merge: bool | None) -> None:
    """Estimate the resources of NETWORK_OR_LAYER's network engine on a board with Yosys synth_xilinx
    (with --fmax-proxy, also an fmax proxy from an ECP5 place and route)."""
    from . import fmax  # noqa: PLC0415
    from .synth import DSP_REGISTERS, estimate, render_table  # noqa: PLC0415

    console = output_console()   # whole table (no cut columns) when piped
    if json_file and not json_file.resolve().parent.is_dir():
        raise ConfigError(f"--json {json_file}: folder {json_file.parent} does not exist")
    if not fmax_proxy and (proxy_lanes, proxy_timeout, proxy_mhz) != (None, None, None):
        raise ConfigError("--proxy-lanes, --proxy-timeout and --proxy-mhz go with --fmax-proxy")
    network = load_network(config, merge=merge)
    board = get_board(board_name)
    env = network_envelope(network, input_size, **engine, board=board.name)
    proxy_env = None
    if fmax_proxy:      # check the tools and the proxy's envelope before the long Yosys run
        fmax.proxy_device(), fmax.nextpnr_command()
        # the proxy's frame buffer: the option's, else the network's own (not the board's default: the
        # ZCU104's 256 KiB a window generator does not fit the ECP5's block RAM, and depth is not timing)
        own_frame = network.engine.for_board(board.name, board_default=False).frame_kib
        proxy_env = network_envelope(network, input_size, proxy_lanes or min(fmax.DEFAULT_LANES, env.lanes),
                                     frame_kib=engine["frame_kib"] or own_frame, **env.packing())
        fmax.check_proxy_memories(proxy_env)
    with status(f"yosys synth_xilinx -family {board.family} on engine {env.name}"):  # lines when piped
        report = estimate(env, board, use_cache=not no_cache, memory_plan=memory_plan)
    report.layers = [lay.name for lay in network.layers]
    console.print(render_table([report]))
    console.print(_describe(env, network), soft_wrap=True)
    how = "cached" if report.cached else f"{report.seconds:.0f} s"
    console.print(f"{report.yosys}, {how}; FINN ceilings: LUT 70%, FF 50%, BRAM/URAM/DSP 80%")
    if report.memory_plan:
        console.print(_plan_text(report.memory_plan), soft_wrap=True)
    if report.all_muls_on_dsp:
        dsps = int(report.used["dsp"])
        console.print(f"multipliers: all {len(report.muls)} $mul cells mapped to DSP slices "
                      f"({dsps} DSPs, {report.lanes} lanes{f', {env.lane_rows} rows each' if env.row_pairs else ''}: "
                      f"{report.macs_per_cycle / max(1, dsps):.2f} MACs per DSP per cycle)")
    else:
        console.print(f"[red]multipliers not on DSPs[/]: {len(report.muls)} $mul cells, "
                      f"{int(report.used['dsp'])} DSPs; candidates: {', '.join(report.unmapped_muls) or '(names lost)'}")
    regs = report.dsp_registers
    if regs.get("dsps"):
        console.print(f"DSP pipeline registers absorbed (of {regs['dsps']} DSPs): "
                      + ", ".join(f"{r} {regs.get(r, 0)}" for r in DSP_REGISTERS))
    if report.path:
        console.print(f"logic depth: {_path_text(report.path)}", soft_wrap=True)
    if report.fanout:
        (top, n), rest = report.fanout[0], report.fanout[1:4]
        console.print(f"largest fanout (clock excluded): {top} drives {n} cells"
                      + (f"; next: {', '.join(f'{m} {k}' for m, k in rest)}" if rest else ""), soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {note}")
    data = report.to_dict()
    if proxy_env is not None:
        timeout = proxy_timeout or fmax.DEFAULT_TIMEOUT_S
        with status(f"fmax proxy: yosys synth_ecp5 + nextpnr-ecp5 on engine {proxy_env.name} at "
                    f"{proxy_env.lanes} lanes (at most {timeout:g} s)"):
            proxy = fmax.run_proxy(proxy_env, timeout_s=timeout, target_mhz=proxy_mhz or fmax.DEFAULT_TARGET_MHZ,
                                   use_cache=not no_cache)
        console.print(proxy.summary, soft_wrap=True)
        if proxy_env.lanes != env.lanes:
            console.print(f"the proxy ran at {proxy_env.lanes} lanes, the {board.name} engine has {env.lanes}",
                          soft_wrap=True)
        took = "cached" if proxy.cached else ", ".join(f"{k} {v:.0f} s" for k, v in proxy.seconds.items())
        crit = proxy.critical_path
        if crit:
            console.print(f"proxy critical path: {crit['from']} -> {crit['to']} ({crit['logic_ns']} ns logic, "
                          f"{crit['routing_ns']} ns routing)", soft_wrap=True)
        console.print(f"proxy: {proxy.command} ({took}; log {proxy.log})", soft_wrap=True)
        data["fmax_proxy"] = proxy.to_dict()
    if json_file:
        json_file.write_text(json.dumps(data, indent=2) + "\n")
        console.print(f"wrote {json_file}")


def _plan_text(plan: dict) -> str:
    """A memory plan (:meth:`litefly.boards.memory_plan.MemoryPlan.to_dict`) in words."""
    def row(r: dict) -> str:
        ports = f", {r['read_ports']} read ports" if r["read_ports"] > 1 else ""
        cost = (f"{r['uram']} URAM" if r["uram"] else f"{r['bram36']:g} BRAM36" if r["bram36"] else "")
        return f"{r['count']} x {r['memory']} ({r['width']} x {r['depth']}{ports}) {r['placed']}" + \
            (f" {cost}" if cost else "")
    return (f"memory plan for {plan['board']} (estimated from shapes: {plan['bram36']:g} BRAM36, {plan['uram']} URAM): "
            + "; ".join(row(r) for r in plan["rows"]))


def _path_text(path: dict) -> str:
    """The deepest path of a synth report (:class:`litefly.boards.logic_depth.PathReport`) in words."""
    text = (f"{path['lut_levels']} LUT levels between registers on Yosys's default (abc9) mapping, which "
            f"lets paths off its critical one grow to its delay (docs/boards.md, \"Logic depth\") "
            f"(+{path['carry_cells']} CARRY cells, {path['cells']} cells in all), from {path['start']} to {path['end']}")
    if path.get("through"):          # reports cached before the path's cells were kept have none
        text += f" through {' -> '.join(path['through'])}"
    if path.get("by_block"):
        text += "; deepest per block: " + ", ".join(f"{b} {n}" for b, n in path["by_block"].items())
    return text + (f"; {path['loops']} combinational loops" if path.get("loops") else "")

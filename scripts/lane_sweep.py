"""What more lanes buy: a network on engines of growing lane count and stream width (issue 12).

For each ``--lanes`` x ``--stream-bits`` x ``--window-generators`` envelope (the board's packing,
row pairs on both boards, unless ``--no-row-pairs``: two lanes per DSP, or ``--unpacked``)
this runs :func:`litefly.host.bench.run_bench` on the golden backend (engine cycles from the
cycle model, ``hw/cycles.py``, which the RTL's CYCLES equals; host time measured on this CPU)
and prints, per envelope:

* DSPs (lanes with row pairs, twice that with row quads, four times with row octets, else lanes / MACs per DSP), engine cycles, MAC utilisation, engine and end-to-end time at the
  board's clock, and the speedup over torch ``F.conv2d`` on this CPU with torch's GMAC/s, as
  measured beside the envelope and against the fastest torch of the sweep (one figure for every
  row: on a loaded machine torch moves from row to row);
* the bench's bounds (``litefly.host.bench.network_bounds``): compute (the network's DeBut MACs
  over MAC slots x clock) and DMA (per layer the larger of the bytes it streams in and out over the
  board's one-way DMA rate, summed), and end to end over the larger one; the lane utilisation
  (DeBut MACs over MAC slots x cycles, two slots a lane with row pairs, four with row quads, eight with row octets, below the issue share by
  partial batches' idle lanes and unpaired factors' idle second rows);
* per layer, what paces a steady-state batch in the cycle model: the MAC issue (``mac``), the
  window generators that form the next batch's im2col columns (``window``: each reads one
  stream-wide beat into one of its lanes per cycle, so ``lanes / G x kh x kw x ceil(C / E)`` cycles
  a batch with G generators) or the unload (``unload``); when ``window`` paces, more lanes add
  nothing, more window generators do;
* the memories' block RAM and UltraRAM on the board, estimated from their shapes after the board's
  memory plan (``litefly.boards.memory_plan``; ``litefly synth`` measures them with Yosys), as a
  share of the board, with ``litefly synth``'s verdict against FINN's 80% ceilings.

Run: ``python scripts/lane_sweep.py [examples/vgg_net.yaml] [--lanes 64 128 192 256] [--stream-bits 64 128]
[--window-generators 1 2 4] [--frame-kib 64 256] [--board pynq-z2] [--batch 8]``; an axis not given is the
board's default envelope's (``docs/boards.md``, "Default envelopes"), so ``--board B`` alone is that envelope's row.
Model figures, not board measurements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from litefly.boards.boards import get_board
from litefly.boards.memory_plan import plan_memories
from litefly.config import FRAME_WORD_BEATS, WINDOW_GENERATORS, load_network
from litefly.errors import LiteflyError
from litefly.host.bench import run_bench
from litefly.hw.spec import EngineEnvelope, LayerDescriptor
from litefly.network import network_input_shape, plan_network


def limiters(network, size, envelope: EngineEnvelope) -> list[str]:
    """Per engine layer: the slowest of MAC issue, window and unload in a full batch."""
    out = []
    for step in plan_network(network, network_input_shape(network, size)):
        b = LayerDescriptor(envelope, step).batch_cycles()
        out.append(f"{step.name} {max(b, key=b.get)}")
    return out


def memory_fit(envelope: EngineEnvelope, board_name: str) -> str:
    """The memory plan's estimate on the board: BRAM36 (and URAM) shares and a verdict."""
    board = get_board(board_name)
    plan = plan_memories(envelope, board)
    text = f"{plan.bram36:g} BRAM ({plan.bram36 / board.bram36:.0%})"
    if board.uram:
        text += f" + {plan.uram} URAM ({plan.uram / board.uram:.0%})"
    return f"{text}: {plan.verdict(board)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("network", nargs="?", default="examples/vgg_net.yaml", type=Path)
    # an axis not given is the board's default envelope's (litefly.boards.boards.Board.engine)
    ap.add_argument("--lanes", type=int, nargs="+", default=[None])
    ap.add_argument("--stream-bits", type=int, nargs="+", default=[None], choices=(32, 64, 128))
    ap.add_argument("--board", default="pynq-z2", choices=("pynq-z2", "zcu104"))
    ap.add_argument("--clock-mhz", type=float, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--input-size", type=int, nargs=2, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-generators", type=int, nargs="+", default=[None], choices=WINDOW_GENERATORS)
    ap.add_argument("--frame-kib", type=int, nargs="+", default=[None],
                    help="frame buffer sizes in KiB (default: the board's, else the network's; a larger one: "
                         "fewer passes)")
    ap.add_argument("--unpacked", action="store_true", help="one lane per DSP (default: the board's, two)")
    ap.add_argument("--row-pairs", action=argparse.BooleanOptionalAction, default=None,
                    help="a DSP's two MACs are two rows of one lane (default: the board's)")
    ap.add_argument("--row-quads", action=argparse.BooleanOptionalAction, default=None,
                    help="two row-pair DSPs per lane, four rows an issue (default: the board's)")
    ap.add_argument("--row-octets", action=argparse.BooleanOptionalAction, default=None,
                    help="four row-pair DSPs per lane, eight rows an issue (default: the board's)")
    ap.add_argument("--frame-word-beats", type=int, choices=FRAME_WORD_BEATS, default=None,
                    help="beats a frame-buffer word holds, read by a window generator at once (default: the board's)")
    a = ap.parse_args(argv)
    try:
        network = load_network(a.network)
        size = tuple(a.input_size) if a.input_size else (network.input_size or (16, 16))
        mpd = 1 if a.unpacked else None
        rows = []
        for sb, lanes, wg, fk in ((sb, lanes, wg, fk) for sb in a.stream_bits for lanes in a.lanes
                                  for wg in a.window_generators for fk in a.frame_kib):
            r = run_bench(network, "golden", a.board, a.clock_mhz, a.batch, size, dense=False,
                          repeats=a.repeats, multipliers=lanes, macs_per_dsp=mpd, stream_bits=sb,
                          window_generators=wg, frame_kib=fk, row_pairs=a.row_pairs, row_quads=a.row_quads,
                          frame_word_beats=a.frame_word_beats, row_octets=a.row_octets)
            t, b = r["total"], r["total"]["bounds"]
            env = EngineEnvelope(**r["engine"]["envelope"])          # the one run_bench derived
            compute, dma = b["compute[s]"], b["dma[s]"]
            kib = env.frame_beats * env.stream_bits // 8 // 1024
            head = (f"| {env.lanes} | {env.dsps} | {env.stream_bits} | {env.window_generators} "
                    f"| {kib} | {t['cycles']:,} "
                    f"| {100 * t['mac_utilisation']:.1f}% | {100 * t['lane_utilisation']:.1f}% "
                    f"| {1e3 * t['runtime[s]']:.2f} | {1e3 * compute:.2f} | {1e3 * dma:.2f} "
                    f"| {1e3 * t['end_to_end[s]']:.2f} | {b['end_to_end_vs_bound']:.2f} "
                    f"| {t['speedup_vs_cpu_torch_end_to_end']:.2f} ({t['cpu_torch_gmacs']:.0f}) ")
            rows.append((t, head, f"| {', '.join(limiters(network, size, env))} | {memory_fit(env, a.board)} |"))
            print(f"lane_sweep: {env.words} done", file=sys.stderr, flush=True)
        # torch is measured beside every envelope; on a loaded machine it moves from row to row, so
        # each row is also set against the fastest torch of the sweep (one figure for all rows)
        best = min(t["cpu_torch[s]"] for t, _, _ in rows)
        print(f"torch F.conv2d on this CPU: fastest of the sweep {1e3 * best:.2f} ms "
              f"({rows[0][0]['dense_macs'] / best / 1e9:.0f} GMAC/s)\n")
        print("| lanes | DSPs | stream | windows | frame KiB | cycles | MAC util | lane util | engine ms | compute bound ms | DMA bound ms | "
              "e2e ms | e2e / bound | x torch e2e (torch GMAC/s) | x fastest torch e2e | paced by (per layer) | "
              "memories (estimate) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for t, head, tail in rows:
            print(f"{head}| {best / t['end_to_end[s]']:.2f} {tail}")
    except LiteflyError as exc:
        print(f"lane_sweep: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

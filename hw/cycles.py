"""The one cycle model of a pass (numpy only; the board imports it).

:func:`pass_cycles` is the engine's ``CYCLES`` for one pass, to within a few cycles per
batch, from the quantities a descriptor fixes; :func:`words_pass_cycles` takes them from the
descriptor registers (the engine model's and the testbenches' view), and
:meth:`litefly.hw.spec.LayerDescriptor.pass_cycles` from a planned layer. All three are the
same function.

The frame loads while windows are formed (``docs/engine.md``): a window read waits until its
beat has arrived, one beat a cycle from the start of the pass. :func:`frame_ready` gives,
per batch-phase, the earliest cycle its windows can be complete because of that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from . import regmap

__all__ = ["DRAIN_CYCLES", "WINDOW_SETUP", "LOAD_LAG", "REPACK_LAG", "PASS_TAIL", "SKIP_LAG", "PassGeometry", "batch_cycles", "frame_ready",
           "pass_cycles", "words_pass_cycles"]

DRAIN_CYCLES = 7           # issue-to-write latency: the bubble between dependent factors
WINDOW_SETUP = 3           # window-generator set-up cycles per batch and phase
LOAD_LAG = 2               # cycles from a beat's arrival to the window write that uses it (the
                           # window's `arrived` is registered: it sees the loader's count a cycle late)
REPACK_LAG = 1             # the repacker's register stage (packed input)
PASS_TAIL = 6              # start-up and end-of-pass cycles (the pass's set-up, output pipeline, DONE)
SKIP_LAG = 4               # residual: from the skip's last beat on s_axis to DONE (FIFO, add, flags)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class PassGeometry:
    """A pass's input frame and window walk: what decides when each window's beats arrive."""

    images: int
    cw: int                                   # beats per input pixel
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)          # positions per image after pooling (HP, WP)
    pool: tuple[int, int] = (1, 1)            # (kernel, stride); (1, 1) without pooling
    packed: bool = False                      # the frame arrives packed, through the repacker

    @classmethod
    def from_words(cls, words: Mapping[str, int], elems_per_beat: int) -> "PassGeometry":
        u = regmap.unpack
        lay = u("LAYER", words.get("LAYER", 0))
        hw, k = u("IN_HW", words.get("IN_HW", 0)), u("KERNEL", words.get("KERNEL", 0))
        s = u("STRIDE", words.get("STRIDE", 0))
        pad, dil = u("PAD", words.get("PAD", 0)), u("DILATION", words.get("DILATION", 0))
        out, pool = u("OUT_HW", words.get("OUT_HW", 0)), u("POOL", words.get("POOL", 0))
        c = u("IN_C", words.get("IN_C", 0))["C"]
        return cls(int(words.get("IMAGES", 0)), _ceil_div(c, elems_per_beat), hw["H"], hw["W"], (k["KH"], k["KW"]),
                   (s["SH"], s["SW"]), (pad["PH"], pad["PW"]), (dil["DH"], dil["DW"]), (out["HP"], out["WP"]),
                   (pool["K"], pool["S"]) if lay["POOL"] else (1, 1), bool(lay["PACKED"]))

    @property
    def window_reads(self) -> int:
        return self.kernel[0] * self.kernel[1] * self.cw

    @property
    def positions(self) -> int:
        return self.images * self.out_hw[0] * self.out_hw[1]

    @property
    def load_beats(self) -> int:
        """Cycles the frame takes to arrive: a beat a cycle (one more through the repacker)."""
        return self.images * self.h * self.w * self.cw + (REPACK_LAG if self.packed else 0)


def _last_valid(origin: np.ndarray, size: int, k: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Per origin: the largest kernel index whose input coordinate is inside ``0..size-1``, and
    whether any is."""
    first = np.maximum(0, -np.floor_divide(origin, step))
    last = np.minimum(k - 1, np.floor_divide(size - 1 - origin, step))
    return last, (last >= first) & (last >= 0)


def frame_ready(geom: PassGeometry, lanes: int) -> np.ndarray:
    """Per batch-phase, in the engine's order: the earliest cycle (from the start of the pass)
    its windows can be complete given one frame beat arriving per cycle.

    A lane's last in-frame read is its highest address, and within a lane addresses grow at
    least as fast as reads are issued, so each lane's constraint is that read's arrival plus
    the reads after it in the batch-phase."""
    g = geom
    n = g.positions
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    hp, wp = g.out_hw
    pk, ps = g.pool
    p = np.arange(n, dtype=np.int64)
    img, rem = np.divmod(p, hp * wp)
    py, px = np.divmod(rem, wp)
    batch, lane = np.divmod(p, lanes)
    nl = np.minimum(lanes, n - batch * lanes)           # lanes in each position's batch
    wr = g.window_reads
    lag = LOAD_LAG + (REPACK_LAG if g.packed else 0)
    out = []
    for dy in range(pk):
        for dx in range(pk):
            iy0 = (py * ps + dy) * sh - ph
            ix0 = (px * ps + dx) * sw - pw
            ky, oky = _last_valid(iy0, g.h, kh, dh)
            kx, okx = _last_valid(ix0, g.w, kw, dw)
            addr = ((img * g.h + iy0 + ky * dh) * g.w + ix0 + kx * dw) * g.cw + g.cw - 1
            after = (nl - 1 - lane) * wr + (wr - 1 - ((ky * kw + kx) * g.cw + g.cw - 1))
            t = np.where(oky & okx, addr + after + lag, np.iinfo(np.int64).min // 2)
            out.append(np.maximum.reduceat(t, np.arange(0, n, lanes)))
    return np.stack(out, axis=1).reshape(-1)          # batch-major, phase-minor


def batch_cycles(lanes: int, macs: int, factors: int, window_reads: int, out_cw: int) -> dict[str, int]:
    """Per full batch of ``lanes`` positions and per phase: MAC issue cycles (with the bubbles
    between factors), window-generator cycles (one beat read per lane, kernel position and
    channel beat, plus set-up) and unload cycles (one beat per lane and channel beat)."""
    return {"mac": macs + DRAIN_CYCLES * (factors - 1) + 1, "window": lanes * window_reads + WINDOW_SETUP,
            "unload": lanes * out_cw}


def pass_cycles(lanes: int, macs: int, factors: int, window_reads: int, out_cw: int, positions: int,
                phases: int, load_beats: int = 0, ready: np.ndarray | None = None, skip_beats: int = 0) -> int:
    """The one cycle model of a pass (the RTL's CYCLES to within a few cycles per batch).

    Form the first batch-phase's windows; every further batch-phase's windows overlap the
    previous one's MAC issue (double-buffered IN), the slower setting the pace; the last issue
    drains; the last batch unloads (earlier batches unload behind the MAC issue,
    double-buffered OUT, unless unloading is the slower, from the first batch or from any later
    one whose issue ended late, e.g. waiting for its frame beats). Windows are formed for valid lanes
    only, so a partial last batch is cheaper to form. No batch-phase's windows complete before
    their frame beats have arrived (``ready``, from :func:`frame_ready`), and no pass ends
    before its ``load_beats`` have. A residual pass's output beats wait for their ``skip_beats``,
    which follow the frame on the stream: no such pass ends before the frame and the skip have
    arrived and the skip's last beat has been added (``SKIP_LAG``).
    """
    b = batch_cycles(lanes, macs, factors, window_reads, out_cw)
    mac, w_full = b["mac"], b["window"]
    batches = _ceil_div(positions, lanes)
    last = positions - (batches - 1) * lanes
    w_last = last * window_reads + WINDOW_SETUP
    n = batches * phases
    # per batch-phase: cycles after the previous one's windows (the first: from the start)
    steps = np.full(n, max(mac, w_full), dtype=np.int64)
    steps[n - phases:] = max(mac, w_last)
    steps[0] = w_full if batches > 1 else w_last
    ends = np.cumsum(steps)
    if ready is not None and len(ready):
        # end_k = max(end_{k-1} + step_k, ready_k) = ends_k + max(0, max_{j<=k}(ready_j - ends_j))
        slack = np.maximum.accumulate(np.maximum(np.asarray(ready, dtype=np.int64) - ends, 0))
        ends = ends + slack
    # the last batch unloads after the later of its own issue and the unloading of the batches
    # before it: each batch's unload starts no earlier than its last phase's issue ends
    k = np.arange(batches)
    behind = ends[k * phases + phases - 1] - ends[0] + (batches - 1 - k) * b["unload"]
    rest = max(int(ends[-1] - ends[0]), (batches - 1) * b["unload"], int(behind[1:].max(initial=0)))
    total = int(ends[0]) + rest + mac + DRAIN_CYCLES + last * out_cw + PASS_TAIL
    return max(total, load_beats + 4, load_beats + skip_beats + SKIP_LAG if skip_beats else 0)


def words_pass_cycles(words: Mapping[str, int], lanes: int, elems_per_beat: int, macs: int, factors: int,
                      out_channels: int) -> int:
    """:func:`pass_cycles` of the pass the descriptor registers ``words`` describe."""
    g = PassGeometry.from_words(words, elems_per_beat)
    skip = words.get("SKIP_BEATS", 0) if regmap.unpack("LAYER", words.get("LAYER", 0))["RESIDUAL"] else 0
    return pass_cycles(lanes, macs, factors, g.window_reads, _ceil_div(out_channels, elems_per_beat),
                       g.positions, g.pool[0] ** 2, g.load_beats, frame_ready(g, lanes), skip)

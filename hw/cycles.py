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
from typing import Any, Mapping, Sequence

import numpy as np

from . import regmap

__all__ = ["ChainIssue", "chain_issue", "factor_issue", "factor_rows", "DRAIN_CYCLES", "OUT_LAG", "ISSUE_LAG", "WINDOW_SETUP", "IN_WRITE_LAG", "LOAD_LAG", "REPACK_LAG", "PASS_TAIL", "SKIP_LAG", "RELEASE_LAG", "PassGeometry", "batch_cycles", "frame_ready", "ring_batches", "ring_arrival",
           "lane_cycles", "window_read_beats", "pass_cycles", "pass_schedule", "words_pass_cycles"]

DRAIN_CYCLES = 9           # issue-to-write latency: the bubble between dependent factors
OUT_LAG = 1                # OUT is written a registered step after WORK (pooling's read-modify-write)
ISSUE_LAG = 1              # the issue register: an issue's reads start a cycle after the sequencer's
                           # (engine.py; between dependent factors it delays the write and the read alike)
WINDOW_SETUP = 3           # window-generator set-up cycles per batch and phase
IN_WRITE_LAG = 1           # the window generator's frame word registered before its IN write
LOAD_LAG = 2 + IN_WRITE_LAG  # cycles from a beat's arrival to the window write that uses it (the
                           # window's `arrived` is registered: it sees the loader's count a cycle late)
REPACK_LAG = 1             # the repacker's register stage (packed input)
PASS_TAIL = 8              # start-up and end-of-pass cycles (the pass's set-up, output pipeline, the last beat registered, DONE)
SKIP_LAG = 5               # residual: from the skip's last beat on s_axis to DONE (FIFO, add, the last beat registered, flags)
RELEASE_LAG = 4            # a ring's release: from the issue before the batch's first phase to the loader (a bound)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def factor_issue(factor: Any, lane_rows: int = 1, reads_in: bool = False) -> tuple[int, bool]:
    """How an engine whose lanes compute ``lane_rows`` rows an issue (``EngineEnvelope.lane_rows``:
    1, 2 with row pairs, 4 with row quads, 8 with row octets) issues ``factor``'s rows: (rows an
    issue, interleaved).

    A DeBut factor with ``r`` divisible by ``n`` rows (they read the same column) and ``s`` at least
    ``n`` (the rows leave the MAC array one a cycle, so a row may end at most every ``n`` cycles)
    issues ``n = 8``, else 4, else 2, else 1 rows of one block. On a row-quad engine a factor that reads WORK
    (``reads_in`` false: not factor 0) with ``r`` even, ``t`` even and ``s >= 4`` issues an
    *interleaved quad* instead of a pair: a row pair of block ``u`` on the lane's first multiplier and
    the same rows of block ``u + 1`` on its second, each from its own column (``c`` and ``c + 1``, one
    WORK word: ``memories.work_elements``). The sequencer derives the same from ``F<i>_RS``, ``F<i>_TG``."""
    if factor.kind != "debut":
        return 1, False
    if lane_rows >= 8 and factor.r % 8 == 0 and factor.s >= 8:
        return 8, False
    if lane_rows >= 4 and factor.r % 4 == 0 and factor.s >= 4:
        return 4, False
    if lane_rows >= 4 and not reads_in and factor.r % 2 == 0 and factor.t % 2 == 0 and factor.s >= 4:
        return 4, True
    if lane_rows >= 2 and factor.r % 2 == 0 and factor.s >= 2:
        return 2, False
    return 1, False


def factor_rows(factor: Any, lane_rows: int = 1, reads_in: bool = False) -> int:
    """Rows of ``factor``'s blocks issued at a time (:func:`factor_issue`)."""
    return factor_issue(factor, lane_rows, reads_in)[0]


@dataclass(frozen=True)
class ChainIssue:
    """A chain's issue cycles per batch-phase (per column: a batch's lanes issue together) and the
    multi-row factors' extra pipeline cycles."""

    issue: int                 # issue cycles: ``p*s`` over each factor's rows an issue
    pair_drains: int = 0       # extra cycles per batch-phase: a factor of n rows an issue followed by
                               # another drains n - 1 cycles longer; a last factor of n >= 4 rows holds
                               # the next batch-phase n - 2 cycles in IDLE (its rows leave over n cycles)
    pair_tail: int = 0         # the last factor's rows an issue less one: its last row is written that much later


def chain_issue(chain: Sequence[Any], lane_rows: int = 1) -> ChainIssue:
    """The :class:`ChainIssue` of ``chain`` on an engine whose lanes compute ``lane_rows`` rows."""
    rows = [factor_rows(f, lane_rows, i == 0) for i, f in enumerate(chain)]
    last = rows[-1] if rows else 1
    return ChainIssue(sum(f.params // n for f, n in zip(chain, rows)),
                      sum(n - 1 for n in rows[:-1]) + max(0, last - 2), last - 1)


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
    read_beats: int = 1                       # beats a window read takes (:func:`window_read_beats`)

    @classmethod
    def from_words(cls, words: Mapping[str, int], elems_per_beat: int, frame_word_beats: int = 1) -> "PassGeometry":
        u = regmap.unpack
        lay = u("LAYER", words.get("LAYER", 0))
        hw, k = u("IN_HW", words.get("IN_HW", 0)), u("KERNEL", words.get("KERNEL", 0))
        s = u("STRIDE", words.get("STRIDE", 0))
        pad, dil = u("PAD", words.get("PAD", 0)), u("DILATION", words.get("DILATION", 0))
        out, pool = u("OUT_HW", words.get("OUT_HW", 0)), u("POOL", words.get("POOL", 0))
        cw = _ceil_div(u("IN_C", words.get("IN_C", 0))["C"], elems_per_beat)
        return cls(int(words.get("IMAGES", 0)), cw, hw["H"], hw["W"], (k["KH"], k["KW"]),
                   (s["SH"], s["SW"]), (pad["PH"], pad["PW"]), (dil["DH"], dil["DW"]), (out["HP"], out["WP"]),
                   (pool["K"], pool["S"]) if lay["POOL"] else (1, 1), bool(lay["PACKED"]),
                   window_read_beats(cw, frame_word_beats))

    @property
    def pixel_reads(self) -> int:
        """Window reads per input pixel: its beats, ``read_beats`` a read."""
        return self.cw // self.read_beats

    @property
    def window_reads(self) -> int:
        return self.kernel[0] * self.kernel[1] * self.pixel_reads

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


def _positions(g: PassGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pass's emitted positions in the engine's order, as (image, row, column) arrays."""
    img, rem = np.divmod(np.arange(g.positions, dtype=np.int64), g.out_hw[0] * g.out_hw[1])
    py, px = np.divmod(rem, g.out_hw[1])
    return img, py, px


def window_read_beats(cw: int, frame_word_beats: int) -> int:
    """Beats a window generator reads a cycle from a frame buffer of ``frame_word_beats`` beats a
    word: the most (a power of two, at most a word) that divide a pixel's ``cw`` beats, so that
    every pixel starts a read and a read never crosses a word."""
    b = frame_word_beats
    while cw % b:
        b //= 2
    return b


def lane_cycles(window_reads: int, windows: int = 1) -> int:
    """Cycles a window generator spends on a lane: its reads, and with ``windows`` generators at
    least ``windows`` (the next lane's position is ``windows`` positions on, one a cycle)."""
    return max(window_reads, windows) if windows > 1 else window_reads


def frame_ready(geom: PassGeometry, lanes: int, windows: int = 1, arrival: np.ndarray | None = None) -> np.ndarray:
    """Per batch-phase, in the engine's order: the earliest cycle (from the start of the pass)
    its windows can be complete given one frame beat arriving per cycle (or beat ``a`` taken by
    the loader at cycle ``arrival[a]``: :func:`ring_arrival`).

    Within a kernel row a lane's in-frame reads are one run of addresses that grow at least as
    fast as the reads are issued, so the row's last in-frame read is the one that can hold the
    walk up (between rows, padding reads can make the address grow more slowly than the reads,
    on maps narrower than the kernel's span). Each lane's constraint is the latest of its rows'
    last in-frame reads' arrival plus the cycles after that read in its generator's batch-phase
    (with ``windows`` generators lane ``i`` is generator ``i mod windows``'s, and each lane takes
    ``lane_cycles``)."""
    g = geom
    n = g.positions
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    pk, ps = g.pool
    img, py, px = _positions(g)
    batch, lane = np.divmod(np.arange(n, dtype=np.int64), lanes)
    nl = np.minimum(lanes, n - batch * lanes)           # lanes in each position's batch
    wr = g.window_reads
    lt = lane_cycles(wr, windows)
    own, grp = np.divmod(lane, windows)
    n_own = (nl - grp + windows - 1) // windows         # the generator's lanes in the batch
    lag = LOAD_LAG + (REPACK_LAG if g.packed else 0)
    never = np.iinfo(np.int64).min // 2
    out = []
    for dy in range(pk):
        for dx in range(pk):
            iy0 = (py * ps + dy) * sh - ph
            ix0 = (px * ps + dx) * sw - pw
            kx, okx = _last_valid(ix0, g.w, kw, dw)
            t = np.full(n, never, dtype=np.int64)
            for ky in range(kh):
                iy = iy0 + ky * dh
                addr = ((img * g.h + iy) * g.w + ix0 + kx * dw) * g.cw + g.cw - 1
                r = (ky * kw + kx) * g.pixel_reads + g.pixel_reads - 1    # the read's index in its lane
                after = (n_own - 1 - own) * lt + (wr - 1 - r)
                ok = okx & (iy >= 0) & (iy < g.h)
                taken = addr if arrival is None else arrival[np.where(ok, addr, 0)]
                t = np.maximum(t, np.where(ok, taken + after + lag, never))
            out.append(np.maximum.reduceat(t, np.arange(0, n, lanes)))
    return np.stack(out, axis=1).reshape(-1)          # batch-major, phase-minor


def ring_batches(geom: PassGeometry, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per batch of a pass: the frame beat the window generators release at its start (its first
    position's first kernel row at the first phase, or its image's first beat where that row is
    padding; ``WindowGenerator.release``) and the highest frame beat any of its windows reads
    (the release less one if it reads none)."""
    g = geom
    n = g.positions
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    pk, ps = g.pool
    img, py, px = _positions(g)
    starts = np.arange(0, n, lanes)
    wcw = g.w * g.cw
    iy_first = py[starts] * ps * sh - ph
    release = img[starts] * g.h * wcw + np.maximum(iy_first, 0) * wcw
    top = np.full(n, -1, dtype=np.int64)
    for dy in range(pk):
        for dx in range(pk):
            iy0 = (py * ps + dy) * sh - ph
            ix0 = (px * ps + dx) * sw - pw
            kx, okx = _last_valid(ix0, g.w, kw, dw)
            ky, oky = _last_valid(iy0, g.h, kh, dh)
            addr = ((img * g.h + iy0 + ky * dh) * g.w + ix0 + kx * dw) * g.cw + g.cw - 1
            top = np.maximum(top, np.where(okx & oky, addr, -1))
    return release, np.maximum(np.maximum.reduceat(top, starts), release - 1)


def ring_arrival(release: np.ndarray, phases: int, issue: Sequence[int], frame_beats: int,
                 beats: int) -> np.ndarray:
    """Per frame beat of a ring pass, the cycle the loader takes it: one a cycle, but beat ``a``
    only once the window generators have released a batch ``j`` with ``release[j] + frame_beats
    > a`` (:func:`ring_batches`). Batch ``j``'s release is counted from the issue of the
    batch-phase before its first, plus :data:`RELEASE_LAG`: the generators publish it as they
    start forming that first phase, which is after they formed the one before and so before that
    one's issue, and the loader sees it two cycles later. A bound, so a ring the model finds
    never holding a read back holds none in the RTL either."""
    a = np.arange(beats, dtype=np.int64)
    # the first batch whose release lets beat a in (releases only grow)
    j = np.searchsorted(release + frame_beats, a, side="right")
    if j.size and j.max() >= release.size:
        return np.full(beats, np.iinfo(np.int64).max // 4, dtype=np.int64)      # never let in: no ring
    pub = np.array([0] + [issue[b * phases - 1] + RELEASE_LAG for b in range(1, release.size)], dtype=np.int64)
    allow = np.where(j == 0, 0, pub[j])
    return a + np.maximum.accumulate(np.maximum(allow - a, 0))


def batch_cycles(lanes: int, macs: int, factors: int, window_reads: int, out_cw: int,
                 windows: int = 1, pair_drains: int = 0) -> dict[str, int]:
    """Per full batch of ``lanes`` positions and per phase: MAC issue cycles (with the bubbles
    between factors), window-generator cycles (one beat read per lane, kernel position and
    channel beat, plus set-up; ``windows`` generators share the lanes) and unload cycles (one
    beat per lane and channel beat). ``macs`` is the issue cycles per column
    (:attr:`ChainIssue.issue`), ``pair_drains`` the multi-row factors' extra cycles (:class:`ChainIssue`)."""
    return {"mac": macs + DRAIN_CYCLES * (factors - 1) + pair_drains + 1,
            "window": _ceil_div(lanes, windows) * lane_cycles(window_reads, windows) + WINDOW_SETUP,
            "unload": lanes * out_cw}


def pass_cycles(lanes: int, macs: int, factors: int, window_reads: int, out_cw: int, positions: int,
                phases: int, load_beats: int = 0, ready: np.ndarray | None = None, skip_beats: int = 0,
                windows: int = 1, pair_drains: int = 0, pair_tail: int = 0) -> int:
    """The one cycle model of a pass (the RTL's CYCLES to within a few cycles per batch):
    :func:`pass_schedule`'s end."""
    return pass_schedule(lanes, macs, factors, window_reads, out_cw, positions, phases, load_beats, ready,
                         skip_beats, windows, pair_drains, pair_tail)[1]


def pass_schedule(lanes: int, macs: int, factors: int, window_reads: int, out_cw: int, positions: int,
                  phases: int, load_beats: int = 0, ready: np.ndarray | None = None, skip_beats: int = 0,
                  windows: int = 1, pair_drains: int = 0, pair_tail: int = 0) -> tuple[list[int], int]:
    """The cycle model of a pass: each batch-phase's issue start and the pass's cycles.

    Form the first batch-phase's windows; every further batch-phase's windows overlap the
    previous one's MAC issue (double-buffered IN), the slower setting the pace; the last issue
    drains; the last batch unloads (earlier batches unload behind the MAC issue,
    double-buffered OUT: a batch's issue waits for the batch two before it to have unloaded,
    when unloading is the slower). Windows are formed for valid lanes
    only, so a partial last batch is cheaper to form. No batch-phase's windows complete before
    their frame beats have arrived (``ready``, from :func:`frame_ready`), and no pass ends
    before its ``load_beats`` have. A residual pass's output beats wait for their ``skip_beats``,
    which follow the frame on the stream: no such pass ends before the frame and the skip have
    arrived and the skip's last beat has been added (``SKIP_LAG``). On a row-pair or row-quad engine
    ``macs`` is the issue cycles (:func:`chain_issue`) and a factor's rows of one issue are written
    one a cycle (``pair_drains``, ``pair_tail``).

    With ``windows`` generators, generator ``g`` forms lanes ``g, g + windows, ...``; they start
    every batch-phase together, so its windows take the first generator's lanes times
    :func:`lane_cycles`, and the first batch-phase ``windows - 1`` more cycles (generator ``g``
    first walks ``g`` positions on).
    """
    b = batch_cycles(lanes, macs, factors, window_reads, out_cw, windows, pair_drains)
    mac, w_full = b["mac"], b["window"]
    lt = lane_cycles(window_reads, windows)
    batches = _ceil_div(positions, lanes)
    last = positions - (batches - 1) * lanes
    w_last = _ceil_div(last, windows) * lt + WINDOW_SETUP
    n = batches * phases
    # per batch-phase: cycles after the previous one's issue start (the first: from the start;
    # the last batch's phases form only its valid lanes)
    first = WINDOW_SETUP + IN_WRITE_LAG + windows - 1 + _ceil_div(min(lanes, positions), windows) * lt
    step, step_last = max(mac, w_full), max(mac, w_last)
    ready = [] if ready is None else np.asarray(ready, dtype=np.int64).tolist()
    unload = b["unload"]
    # per batch-phase k, E: when its issue starts, the later of the pace after the one before,
    # its frame beats (ready) and OUT's half being free (batch b writes the half batch b - 2 used:
    # its unload has ended). A batch unloads from its last phase's issue end + drain, after the
    # batch before it has unloaded.
    issue: list[int] = []
    u_start: list[int] = []
    u_end: list[int] = []
    for k in range(n):
        bt, ph = divmod(k, phases)
        e = first if k == 0 else issue[-1] + (step_last if bt == batches - 1 else step)
        if ready:
            e = max(e, ready[k])
        if bt >= 2:
            e = max(e, u_end[bt - 2])
        issue.append(e)
        if ph == phases - 1:
            # its last OUT row written (``mac`` holds a 4-row last factor's 2 IDLE cycles, pair_tail - 1,
            # which come after that row's issue)
            done = e + mac + DRAIN_CYCLES + ISSUE_LAG + OUT_LAG + min(pair_tail, 1)
            us = done if bt == 0 else max(done, u_start[-1] + unload)
            u_start.append(us)
            u_end.append(us + (unload if bt < batches - 1 else last * out_cw))
    total = u_end[-1] + PASS_TAIL
    return issue, max(total, load_beats + 4, load_beats + skip_beats + SKIP_LAG if skip_beats else 0)


def words_pass_cycles(words: Mapping[str, int], lanes: int, elems_per_beat: int, macs: int, factors: int,
                      out_channels: int, windows: int = 1, pairs: ChainIssue | None = None,
                      frame_word_beats: int = 1) -> int:
    """:func:`pass_cycles` of the pass the descriptor registers ``words`` describe (``windows``:
    the engine's window generators; ``macs``: the issue cycles per column; ``pairs``: a row-pair
    engine's :func:`chain_issue`, for its extra drain and tail cycles; ``frame_word_beats``: the
    beats of the engine's frame-buffer word)."""
    g = PassGeometry.from_words(words, elems_per_beat, frame_word_beats)
    skip = words.get("SKIP_BEATS", 0) if regmap.unpack("LAYER", words.get("LAYER", 0))["RESIDUAL"] else 0
    return pass_cycles(lanes, macs, factors, g.window_reads, _ceil_div(out_channels, elems_per_beat),
                       g.positions, g.pool[0] ** 2, g.load_beats, frame_ready(g, lanes, windows), skip, windows,
                       pairs.pair_drains if pairs else 0, pairs.pair_tail if pairs else 0)

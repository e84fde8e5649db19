"""Boundaries of the envelope the simulated engines are built for: a layer exactly at each
limit fits, one past it is refused naming the limit; the stream sizes at their edges."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError
from litefly.hw.spec import EngineEnvelope
from litefly.network import plan_network

BASE = EngineEnvelope(name="lim", lanes=8, stream_bits=64, act_bits=8, weight_bits=8, max_factors=2, max_q=24,
                      max_p=16, max_work=24, weight_beats=64, frame_beats=64, acc_bits=20)


def step_of(chain, kind="linear", bias=False, cin=None, size=(1, 1), kernel=(1, 1)):
    d = {"name": "l", "kind": kind, "chain": chain, "format": {"bias": bias}}
    if kind == "linear":
        d.update(in_features=chain[0][1], out_features=chain[-1][0])
        shape = (chain[0][1], 1, 1)
    else:
        d.update(in_channels=cin, out_channels=chain[-1][0], kernel=list(kernel))
        shape = (cin,) + tuple(size)
    return plan_network(NetworkConfig.single(LayerConfig.from_dict(d)), shape)[0]


@pytest.mark.parametrize("field,ok_chain,bad_chain,reg", [
    ("max_q", [[8, 24, 1, 3, 1]], [[8, 32, 1, 4, 1]], "MAX_Q"),
    ("max_p", [[16, 16, 2, 2, 1]], [[18, 18, 2, 2, 1]], "MAX_P"),
    ("max_work", [[24, 12, 2, 1, 1], [12, 24, 1, 2, 1]], [[32, 16, 2, 1, 1], [16, 32, 1, 2, 1]], "CAP_WORK"),
    ("max_factors", [[8, 8, 1, 1, 1], [8, 8, 1, 1, 1]], [[8, 8, 1, 1, 1]] * 3, "MAX_FACTORS"),
])
def test_limit_fits_at_and_refused_past(field, ok_chain, bad_chain, reg):
    BASE.check_fits(step_of(ok_chain))
    with pytest.raises(ConfigError, match=reg):
        BASE.check_fits(step_of(bad_chain))


def test_weight_beats_boundary():
    env = replace(BASE, weight_beats=2, max_q=24, max_p=16)   # 16 weights in 2 beats of 8
    env.check_fits(step_of([[8, 8, 2, 2, 1]]))                # 8 * 2 = 16 weights
    env.check_fits(step_of([[8, 16, 1, 2, 1]]))               # 8 * 2 = 16 weights
    with pytest.raises(ConfigError, match="WEIGHT_BEATS"):
        env.check_fits(step_of([[9, 9, 3, 3, 1]]))            # 27 weights: 4 beats


def test_accumulator_bits_count_the_bias_on_the_last_factor():
    """s = 8 needs 8+8+3 = 19 bits; with a bias the last factor needs 8+8+ceil(log2 10) = 20."""
    env19 = replace(BASE, acc_bits=19)
    env19.check_fits(step_of([[1, 8, 1, 8, 1]]))                          # no bias: 19 bits
    with pytest.raises(ConfigError, match="ACC_BITS"):
        env19.check_fits(step_of([[1, 8, 1, 8, 1]], bias=True))          # bias: 20 bits
    # the bias counts on the LAST factor only: s=8 first, s=1 last, with a bias -> 19 bits fit
    env19.check_fits(step_of([[1, 8, 1, 8, 1], [1, 1, 1, 1, 1]], bias=True))


def test_frame_beats_boundary():
    env = replace(BASE, frame_beats=20, max_q=81, acc_bits=24)
    env.check_fits(step_of([[4, 27, 4, 27, 1]], kind="conv2d", cin=3, size=(4, 5), kernel=(3, 3)))  # 20 beats
    with pytest.raises(ConfigError, match="CAP_FRAME_BEATS"):
        env.check_fits(step_of([[4, 27, 4, 27, 1]], kind="conv2d", cin=3, size=(3, 7), kernel=(3, 3)))


def test_sixteen_bit_fields_boundary():
    """A size of 65,535 fits the 16-bit descriptor fields; 65,536 is refused naming them."""
    env = replace(BASE, frame_beats=70_000)                  # one beat a pixel: the frame holds a 65,536 row
    env.check_fits(step_of([[8, 8, 1, 1, 1]], kind="conv2d", cin=8, size=(1, 65_535)))
    with pytest.raises(ConfigError, match="16-bit descriptor fields"):
        env.check_fits(step_of([[8, 8, 1, 1, 1]], kind="conv2d", cin=8, size=(1, 65_536)))


def test_images_per_pass_cap_and_floor():
    big = replace(BASE, frame_beats=70_000)
    desc = big.describe(step_of([[8, 8, 1, 1, 1]]))          # one beat per image
    assert desc.images_per_pass == 65_535                      # capped at 16 bits' worth
    small = replace(BASE, frame_beats=7)
    d = small.describe(step_of([[4, 4, 1, 1, 1]], kind="conv2d", cin=4, size=(2, 3)))  # 6 beats per image
    assert d.images_per_pass == 1
    assert replace(BASE, frame_beats=12).describe(step_of([[4, 4, 1, 1, 1]], kind="conv2d", cin=4,
                                                          size=(2, 3))).images_per_pass == 2


def test_cycle_model_by_hand():
    """The one cycle model on numbers worked by hand (docs/engine.md; the RTL tests hold CYCLES to it):
    first window (8 lanes x 3 reads + 3 set-up + 1, IN_WRITE_LAG) + the next batch-phases at max(mac 10+9+1=20,
    window 27), the partial last one at max(20, 4x3+3) + last issue 20 + drain 9 + the issue
    register 1 (ISSUE_LAG) + OUT's write step 1 (OUT_LAG) + unload of the last 4 lanes + 8 (PASS_TAIL). The frame loads meanwhile: it
    only counts where a window waits for it."""
    from litefly.hw.cycles import IN_WRITE_LAG, ISSUE_LAG, OUT_LAG
    from litefly.hw.spec import batch_cycles, pass_cycles
    assert OUT_LAG == ISSUE_LAG == IN_WRITE_LAG == 1
    assert batch_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1) == {"mac": 20, "window": 27,
                                                                                   "unload": 8}
    assert pass_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1, positions=20, phases=1,
                       load_beats=50) == 28 + (27 + 20) + 20 + 9 + 1 + 1 + 4 * 1 + 8
    # the first batch's windows wait for their beats until cycle 100; the later ones do not wait
    assert pass_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1, positions=20, phases=1,
                       load_beats=50, ready=[100, 0, 0]) == 100 + (27 + 20) + 20 + 9 + 1 + 1 + 4 * 1 + 8
    # ... and a pass never ends before its frame is in
    assert pass_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1, positions=20, phases=1,
                       load_beats=500) == 504
    # pooling: 3 more phases of max(mac 31, window 11) after the first window (11 + 1)
    assert pass_cycles(lanes=8, macs=30, factors=1, window_reads=1, out_cw=1, positions=8, phases=4,
                       load_beats=0) == 12 + 3 * 31 + 31 + 9 + 1 + 1 + 8 + 8
    # one partial batch: its windows are formed for its 4 valid lanes only (4x3 + 3), not 8
    assert pass_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1, positions=4, phases=1,
                       load_beats=0) == (4 * 3 + 3 + 1) + 20 + 9 + 1 + 1 + 4 * 1 + 8
    # unload-bound: the first batch's 72 unload beats (from 12 + 3 + 9 + 1 + 1) outlast the second batch's
    # window and issue
    assert pass_cycles(lanes=8, macs=2, factors=1, window_reads=1, out_cw=9, positions=16, phases=1,
                       load_beats=0) == 12 + 3 + 9 + 1 + 1 + 72 + 8 * 9 + 8


def _ready_read_by_read(g, lanes, windows=1):
    """frame_ready's definition walked read by read: a batch-phase's windows cannot be complete
    before any in-frame read's beat has arrived (+ LOAD_LAG) and the cycles after it in its
    generator's walk have passed (generator ``i mod windows`` walks lane ``i``; a lane takes at
    least ``windows`` cycles when there are several)."""
    from litefly.hw.cycles import LOAD_LAG
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = g.kernel, g.stride, g.padding, g.dilation
    hp, wp = g.out_hw
    pk, ps = g.pool
    wr = kh * kw * g.cw
    out = []
    for b0 in range(0, g.positions, lanes):
        lanes_here = range(b0, min(b0 + lanes, g.positions))
        for dy in range(pk):
            for dx in range(pk):
                reads = []          # (address or None, cycles after it in its generator's walk)
                for pos in lanes_here:
                    lane = pos - b0
                    later = len(range(lane + windows, len(lanes_here), windows))   # own lanes after it
                    lane_cycles = max(wr, windows) if windows > 1 else wr
                    img, rem = divmod(pos, hp * wp)
                    oy, ox = (rem // wp) * ps + dy, (rem % wp) * ps + dx
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * sh - ph + ky * dh, ox * sw - pw + kx * dw
                            inside = 0 <= iy < g.h and 0 <= ix < g.w
                            for k in range(g.cw):
                                r = (ky * kw + kx) * g.cw + k
                                reads.append((((img * g.h + iy) * g.w + ix) * g.cw + k if inside else None,
                                              later * lane_cycles + wr - 1 - r))
                out.append(max((a + LOAD_LAG + after for a, after in reads if a is not None), default=None))
    return out


def test_frame_ready_by_hand():
    """When a batch-phase's windows can be complete, the frame arriving one beat a cycle."""
    from litefly.hw.cycles import LOAD_LAG, PassGeometry, frame_ready
    # 1x1 conv over a 4x4 map, 1 beat per pixel, 8 lanes: lane j reads beat j of its batch
    g = PassGeometry(images=1, cw=1, h=4, w=4, kernel=(1, 1), out_hw=(4, 4))
    assert frame_ready(g, 8).tolist() == [7 + LOAD_LAG, 15 + LOAD_LAG]
    # 3x3, padding 1, 4x4 map, one batch of 16 lanes: lane 0's last read (beat (1*4+1)*2+1 = 11,
    # the last of its 18) binds, as 15 lanes x 18 reads follow it
    g = PassGeometry(images=1, cw=2, h=4, w=4, kernel=(3, 3), padding=(1, 1), out_hw=(4, 4))
    assert frame_ready(g, 16).tolist() == [11 + 15 * 18 + LOAD_LAG]


@pytest.mark.parametrize("seed", range(60))
def test_frame_ready_is_the_read_by_read_bound(seed):
    """The closed form (each kernel row's last in-frame read of each lane binds) equals the
    read-by-read bound on random geometries: strides, padding, dilation, pooling, maps narrower
    than the kernel's span, several images, partial batches, 1, 2 or 4 window generators."""
    from litefly.hw.cycles import PassGeometry, frame_ready
    rng = np.random.default_rng(seed)
    kh, kw = (int(v) for v in rng.integers(1, 4, 2))
    dh, dw = (int(v) for v in rng.integers(1, 3, 2))
    sh, sw = (int(v) for v in rng.integers(1, 3, 2))
    ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    h = int(rng.integers(max(1, (kh - 1) * dh + 1 - 2 * ph), 9))
    w = int(rng.integers(max(1, (kw - 1) * dw + 1 - 2 * pw), 9))
    ho, wo = (h + 2 * ph - (kh - 1) * dh - 1) // sh + 1, (w + 2 * pw - (kw - 1) * dw - 1) // sw + 1
    pool = (2, 2) if rng.random() < 0.3 and ho >= 2 and wo >= 2 else (1, 1)
    out_hw = ((ho - pool[0]) // pool[1] + 1, (wo - pool[0]) // pool[1] + 1)
    g = PassGeometry(images=int(rng.integers(1, 4)), cw=int(rng.integers(1, 3)), h=h, w=w, kernel=(kh, kw),
                     stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), out_hw=out_hw, pool=pool)
    lanes = int(rng.choice([2, 3, 8, 16]))
    windows = int(rng.choice([1, 2, 4])) if lanes % 4 == 0 else 1
    fast = frame_ready(g, lanes, windows).tolist()
    slow = _ready_read_by_read(g, lanes, windows)
    assert [f if s is not None else None for f, s in zip(fast, slow)] == slow
    assert all(f < 0 for f, s in zip(fast, slow) if s is None)

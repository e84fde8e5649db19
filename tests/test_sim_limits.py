"""Boundaries of the envelope the simulated engines are built for: a layer exactly at each
limit fits, one past it is refused naming the limit; the stream sizes at their edges."""

from __future__ import annotations

from dataclasses import replace

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
    load 50 + first window (8 lanes x 3 reads + 3 set-up) + the next batch-phases at max(mac
    10+5+1=16, window 27), the partial last one at max(16, 4x3+3) + last issue 16 + drain 5 +
    unload of the last 4 lanes + 8."""
    from litefly.hw.spec import batch_cycles, pass_cycles
    assert batch_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1) == {"mac": 16, "window": 27,
                                                                                   "unload": 8}
    assert pass_cycles(lanes=8, macs=10, factors=2, window_reads=3, out_cw=1, positions=20, phases=1,
                       load_beats=50) == 50 + 27 + (27 + 16) + 16 + 5 + 4 * 1 + 8
    # pooling: 3 more phases of max(mac 31, window 11) after the first window
    assert pass_cycles(lanes=8, macs=30, factors=1, window_reads=1, out_cw=1, positions=8, phases=4,
                       load_beats=0) == 11 + 3 * 31 + 31 + 5 + 8 + 8
    # unload-bound: the first batch's 72 unload beats outlast the second batch's window and issue
    assert pass_cycles(lanes=8, macs=2, factors=1, window_reads=1, out_cw=9, positions=16, phases=1,
                       load_beats=0) == 11 + 72 + 3 + 5 + 8 * 9 + 8

"""Random networks of random DeBut chains and conv geometries, bit-exact against the int8 golden
network (``litefly.network.network_forward_int``), on the engine model and on the RTL.

Default run: 152 (network, stall pattern) cases on three small envelopes, each envelope ONE
Verilator build and ONE simulation session (a cocotb test looping over the cases, with a soft
reset before some of them). ``-m sweep``: 1,000 more.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from random_networks import ENVELOPES, STALLS, Case, cases
from sim_common import model_run, needs_rtl

DEFAULT = {"rand64": range(0, 64), "rand32": range(1000, 1048), "rand16rq": range(2000, 2040),
           "rand16ro": range(3000, 3024)}
SWEEP = {"rand64": range(5000, 5500), "rand32": range(9000, 9500), "rand16rq": range(12000, 12500),
         "rand16ro": range(15000, 15300)}

_CASES: dict[str, list[Case]] = {}


def default_cases(env_name: str) -> list[Case]:
    if env_name not in _CASES:
        _CASES[env_name] = cases(env_name, DEFAULT[env_name])
    return _CASES[env_name]


def mismatch(got: np.ndarray, want: np.ndarray) -> str | None:
    if got.shape != want.shape:
        return f"shape {got.shape} != expected {want.shape}"
    bad = np.argwhere(got != want)
    if bad.size == 0:
        return None
    i = tuple(int(v) for v in bad[0])
    return f"{bad.shape[0]} wrong elements, first at (n, c, y, x)={i}: expected {int(want[i])}, got {int(got[i])}"


def describe(c: Case) -> str:
    geo = "; ".join(f"{s.layer.kind} {s.in_shape} k{s.kernel} s{s.stride} p{s.padding} d{s.dilation} "
                    f"chain {[f.as_list() for f in s.layer.chain]} relu={s.relu} pool={s.pool}" for s in c.steps)
    return f"{c.label} images={c.x.shape[0]}: {geo}"


# -- the coverage the issue asks for is really there --------------------------------------------------
def test_random_cases_cover_the_extremes():
    cs = default_cases("rand64") + default_cases("rand32")
    assert len(cs) >= 100
    steps = [s for c in cs for s in c.steps]
    conv = [s for s in steps if s.layer.kind == "conv2d"]
    assert any(s.kernel[0] != s.kernel[1] for s in conv)
    assert any(s.stride[0] != s.stride[1] for s in conv)
    assert any(s.padding[0] != s.padding[1] for s in conv)
    assert any(max(s.dilation) > 1 for s in conv)
    assert any(s.in_shape[0] % 8 for s in conv)
    assert any(s.pool and s.pool[0] == 2 for s in steps) and any(s.pool and s.pool[0] == 3 for s in steps)
    assert any(s.relu for s in steps)
    assert any(s.layer.kind == "linear" and i > 0 for c in cs for i, s in enumerate(c.steps))
    assert any(c.steps[0].layer.kind == "linear" for c in cs)          # host im2col columns as 1x1 images
    assert sum(len(c.steps) >= 2 for c in cs) >= 30
    assert any(c.x.min() == -128 for c in cs) and any(c.x.max() == 127 for c in cs)
    assert sum((c.expected == -128).any() and (c.expected == 127).any() for c in cs) >= 5   # saturates both ends
    ext = [c for c in cs if c.kind != "calibrated"]
    assert any((np.concatenate([w.ravel() for w in q.weights]) == -128).any() for c in ext for q in c.params.values())
    assert any(q.bias is not None and q.bias.max() == (1 << 15) - 1 and q.bias.min() == -(1 << 15)
               for c in ext for q in c.params.values())
    assert sum(c.x.shape[0] > 1 for c in cs) >= 50                           # several images per pass
    assert sum(c.stall in ("slow_sink", "rand60_sink") and max(c.batches()) >= 4 for c in cs) >= 10
    assert set(collections.Counter(c.stall for c in cs)) == set(STALLS)
    # sparse factors (issue 14): alone, beside DeBut factors, reading [input ; previous output]
    facs = [(s, f) for s in steps for f in s.layer.chain]
    assert sum(f.kind == "sparse" for _, f in facs) >= 20
    assert sum(f.kind == "sparse" and f.concat for _, f in facs) >= 4
    assert any({f.kind for f in s.layer.chain} == {"sparse", "debut"} for s in steps)
    assert any(f.kind == "sparse" and f.s == 1 for _, f in facs)          # rows of one entry


def test_row_quad_cases_issue_one_two_and_four_rows():
    """rand16rq's chains have factors of each issue width: four rows (r divisible by 4, s >= 4, or
    interleaved: r and t even after the first factor), two and one; some of them as a chain's first
    or last factor (a quad's IDLE wait, the pad before it)."""
    from litefly.hw.cycles import factor_issue
    chains = [s.layer.chain for c in default_cases("rand16rq") for s in c.steps]
    kinds = [[factor_issue(f, 4, i == 0) for i, f in enumerate(ch)] for ch in chains]
    issues = collections.Counter(k for ks in kinds for k in ks)
    assert issues[4, False] >= 8 and issues[4, True] >= 4 and issues[2, False] >= 8 and issues[1, False] >= 8, issues
    assert sum(ks[-1][0] == 4 for ks in kinds) >= 3 and sum(ks[-1] == (4, True) for ks in kinds) >= 2
    assert sum(len(ks) > 1 and ks[0][0] < 4 and ks[1][0] == 4 for ks in kinds) >= 1


def test_row_octet_cases_issue_eight_rows_first_between_and_last():
    """rand16ro's chains have octets (r divisible by 8, s >= 8) as a chain's first factor (reading IN),
    after a narrower factor (the pad to an index divisible by 8), before another factor (seven more
    drain cycles) and as the last (six cycles in IDLE), beside quads, pairs and single rows."""
    from litefly.hw.cycles import factor_issue
    chains = [s.layer.chain for c in default_cases("rand16ro") for s in c.steps]
    kinds = [[factor_issue(f, 8, i == 0)[0] for i, f in enumerate(ch)] for ch in chains]
    issues = collections.Counter(k for ks in kinds for k in ks)
    assert issues[8] >= 10 and issues[4] >= 5 and issues[2] >= 5 and issues[1] >= 10, issues
    assert sum(ks[0] == 8 for ks in kinds) >= 5 and sum(ks[-1] == 8 for ks in kinds) >= 5
    assert sum(8 in ks[:-1] for ks in kinds) >= 5 and sum(8 in ks[1:] and ks[0] < 8 for ks in kinds) >= 2


def test_some_cases_fold_their_first_layers_kernel_rows():
    """The host folds a first conv layer's kernel rows into its channels where the cycle model says
    it saves FOLD_GAIN of the pass (EngineEnvelope.describe_network): on every envelope some cases'
    first layers run folded, packed and not, with stride, dilation and padding, so the model and
    RTL runs cover it."""
    folds = []
    for name in DEFAULT:
        env = ENVELOPES[name]
        mine = [(d.step.fold, d.packed_input) for c in default_cases(name)
                for d in env.describe_network(c.steps)[:1] if d.step.fold is not None]
        assert mine, name
        folds += mine
    assert len(folds) >= 4
    assert any(f.stride > 1 for f, _ in folds) and any(f.dilation > 1 for f, _ in folds)
    assert {f.pad for f, _ in folds} >= {0, 1, 2} and {f.kw for f, _ in folds} == {2, 3}
    assert {packed for _, packed in folds} == {True, False}


def test_frame_word_cases_read_one_two_and_four_beats():
    """rand64's frame words hold four beats: its layers read pixels one, two and four beats at a time
    (a pixel of 1..4 beats), and rand16rq's (two-beat words) one and two."""
    from litefly.hw.cycles import window_read_beats
    for name, want in (("rand64", {1: 10, 2: 10, 4: 4}), ("rand16rq", {1: 10, 2: 10})):
        env = ENVELOPES[name]
        reads = collections.Counter(window_read_beats(-(-s.in_shape[0] // env.elems_per_beat), env.frame_word_beats)
                                    for c in default_cases(name) for s in c.steps)
        assert all(reads[b] >= n for b, n in want.items()), (name, reads)


@pytest.mark.parametrize("env_name", list(DEFAULT))
def test_model_transport_equals_golden_network(env_name):
    """The engine model (windows gathered from the NHWC-E frame) == network_forward_int (im2col)."""
    env = ENVELOPES[env_name]
    for c in default_cases(env_name):
        got = model_run(env, c.steps, c.params, c.x)
        assert mismatch(got, c.expected) is None, describe(c)


@pytest.mark.sweep
@pytest.mark.parametrize("env_name", list(SWEEP))
def test_sweep_model_transport(env_name):
    env = ENVELOPES[env_name]
    for c in cases(env_name, SWEEP[env_name]):
        assert mismatch(model_run(env, c.steps, c.params, c.x), c.expected) is None, describe(c)


# -- the RTL -------------------------------------------------------------------------------------------
def run_session(env_name: str, cs: list[Case]):
    from litefly.host.sim_transport import run_sim_jobs
    jobs = [c.job(soft_reset=(k % 5 == 4)) for k, c in enumerate(cs)]
    results, summary = run_sim_jobs(ENVELOPES[env_name], jobs, sim_timeout_s=1800)
    return results, summary


_SESSIONS: dict[str, tuple] = {}


def session(env_name: str):
    if env_name not in _SESSIONS:
        _SESSIONS[env_name] = run_session(env_name, default_cases(env_name))
    return _SESSIONS[env_name]


def check_result(c: Case, res: dict) -> None:
    assert not res.get("error"), f"{describe(c)}: {res.get('error_type')}: {res.get('error')}"
    msg = mismatch(res["y"], c.expected)
    assert msg is None, f"{describe(c)}: {msg}"
    for st, s in zip(c.steps, res["stats"]):
        desc = c.envelope.describe(st)
        cnt = s["counters"]
        assert cnt["COLUMNS_DONE"] == c.x.shape[0] * desc.out_positions_per_image, (describe(c), st.name, cnt)
        assert cnt["BUSY_CYCLES"] == s["mac_cycles"], (describe(c), st.name, cnt, s["mac_cycles"])


@needs_rtl
@pytest.mark.parametrize("env_name,k", [(e, k) for e in DEFAULT for k in range(len(DEFAULT[e]))])
def test_rtl_random_network(env_name, k):
    results, summary = session(env_name)
    c = default_cases(env_name)[k]
    assert k < len(results), f"case {k} did not run: {summary.get('failures')} (log: {summary.get('log')})"
    check_result(c, results[k])


def _cycle_report(env_name: str):
    """(case/layer, CYCLES, model) of every no-stall case."""
    results, _ = session(env_name)
    rows = []
    for c, res in zip(default_cases(env_name), results):
        if c.stall != "none" or res.get("error"):
            continue
        rows += [(f"{c.label}/{st.name}", s["cycles"], s["model_cycles"]) for st, s in zip(c.steps, res["stats"])]
    return rows


@needs_rtl
@pytest.mark.parametrize("env_name", list(DEFAULT))
def test_rtl_cycles_are_the_model(env_name):
    """Without stalls CYCLES is the cycle model to the cycle (the frame loading under the windows
    included), on full and partial batches alike."""
    rows = _cycle_report(env_name)
    assert rows
    off = [f"{n}: CYCLES {c} vs model {m}" for n, c, m in rows if c != m]
    assert not off, "; ".join(off[:5])


@needs_rtl
@pytest.mark.sweep
@pytest.mark.parametrize("env_name", list(SWEEP))
def test_sweep_rtl_random_networks(env_name):
    cs = cases(env_name, SWEEP[env_name])
    results, summary = run_session(env_name, cs)
    assert len(results) == len(cs), summary.get("failures")
    bad = []
    for c, res in zip(cs, results):
        try:
            check_result(c, res)
        except AssertionError as exc:
            bad.append(str(exc).splitlines()[0][:300])
    assert not bad, f"{len(bad)} of {len(cs)} cases wrong; first: {bad[0]}"

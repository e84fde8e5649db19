"""Sparse factors (issue 14) in the chain config and the golden models: validation with one-line
errors (and exit 2 from the CLI), the pattern's round trip, the integer and float forwards, the
concat factor's shared accumulator scale, and the engine's index entries."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from litefly.chain import SparseFactor, factor_from_config, validate_chain
from litefly.config import LayerConfig
from litefly.errors import ConfigError
from litefly.fixed import chain_dense, factor_dense, float_forward, quantize_layer, random_float_weights
from litefly.hw.spec import ROW_END_BIT, EngineEnvelope, factors_from_words, index_entries


def sp(rows, q, concat=False) -> dict:
    d = {"p": len(rows), "q": q, "rows": rows}
    if concat:
        d["concat"] = True
    return {"sparse": d}


BAD = {
    "columns out of order": ([sp([[0, 2], [3, 1]], 4)], r"row 1: column 1 after 3; columns must be strictly increasing"),
    "repeated column": ([sp([[0, 0]], 4)], r"row 0: column 0 after 0"),
    "column out of range": ([sp([[0, 4]], 4)], r"row 0: column 4 is outside 0..3"),
    "negative column": ([sp([[-1]], 4)], r"column -1 is outside 0..3"),
    "empty row": ([sp([[0], []], 4)], r"row 1 has no entries"),
    "row count": ([{"sparse": {"p": 3, "q": 4, "rows": [[0]]}}], r"rows must list the columns of each of its p=3 rows"),
    "not an integer": ([sp([[0, "a"]], 4)], r"row 0: column 'a' is not an integer"),
    "unknown key": ([{"sparse": {"p": 1, "q": 4, "rows": [[0]], "mask": 1}}], r"unknown key 'mask'"),
    "concat first": ([sp([[0]], 4, concat=True)], r"concat needs a previous factor"),
    "concat width": ([sp([[0], [1]], 4), sp([[0]], 5, concat=True)], r"q=5 with concat does not equal the input "
                                                                      r"size 4 plus p=2 of factor 1 = 6"),
    "width after": ([sp([[0], [1]], 4), [3, 3, 1, 1, 3]], r"factor 2: q=3 does not equal p=2 of factor 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sparse_factors_are_one_line_errors(case):
    chain, message = BAD[case]
    with pytest.raises(ConfigError, match=message) as info:
        validate_chain(chain)
    assert "\n" not in str(info.value)


def test_cli_refuses_a_bad_sparse_layer_with_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "kind": "linear", "in_features": 4, "out_features": 2,
                                    "chain": [sp([[0, 2], [3, 1]], 4)]}))
    r = subprocess.run([sys.executable, "-m", "litefly", "chain", "show", str(path)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "strictly increasing" in r.stderr


def test_cli_shows_a_sparse_chain(tmp_path):
    rng = np.random.default_rng(0)
    v = SparseFactor.from_mask(np.ones((4, 16), bool)).to_config()
    s = SparseFactor.from_mask(rng.random((8, 20)) < 0.25, concat=True).to_config()
    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump({"name": "lr", "kind": "linear", "in_features": 16, "out_features": 8,
                                    "chain": [v, s]}))
    r = subprocess.run([sys.executable, "-m", "litefly", "chain", "show", "--json", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    import json
    f = json.loads(r.stdout)["layers"][0]["factors"]
    assert f[0]["kind"] == "sparse" and f[0]["density"] == 1.0 and f[1]["concat"] is True
    r = subprocess.run([sys.executable, "-m", "litefly", "chain", "show", str(path)], capture_output=True, text=True)
    assert "mixing rule: not applicable" in r.stdout and "over [input; previous]" in r.stdout


def test_pattern_round_trip_and_empty_rows():
    mask = np.zeros((3, 5), bool)
    mask[0, [1, 4]] = True
    mask[2, 2] = True
    f = SparseFactor.from_mask(mask)
    assert f.rows() == [[1, 4], [0], [2]] and f.params == 4 and f.s == 2     # the empty row keeps column 0
    assert factor_from_config(f.to_config()) == f and hash(factor_from_config(f.to_config())) == hash(f)
    w = np.array([3, -2, 7, 5])
    assert factor_dense(f, w).tolist() == [[0, 3, 0, 0, -2], [7, 0, 0, 0, 0], [0, 0, 5, 0, 0]]


def test_integer_and_float_forwards_agree_with_the_dense_matrix():
    rng = np.random.default_rng(1)
    chain = validate_chain([SparseFactor.from_mask(rng.random((6, 10)) < 0.4).to_config(), [6, 6, 2, 2, 1],
                            SparseFactor.from_mask(rng.random((5, 16)) < 0.5, concat=True).to_config()])
    ws = [rng.integers(-128, 128, size=f.compact_shape) for f in chain]
    x = rng.integers(-128, 128, size=(7, 10))
    y1 = x @ factor_dense(chain[0], ws[0]).T
    y2 = y1 @ factor_dense(chain[1], ws[1]).T
    want = np.concatenate([x, y2], axis=1) @ factor_dense(chain[2], ws[2]).T
    got = float_forward(chain, ws, x)          # exact integers in float64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(x @ chain_dense(chain, ws).T, want)


def test_concat_factor_shares_one_accumulator_scale():
    """[S | U] over [x ; V x]: the weights on x are quantised at acc_scale / x's scale, so the
    integer layer tracks the float one (relative error of 8-bit quantisation)."""
    rng = np.random.default_rng(2)
    v = SparseFactor.from_mask(np.ones((3, 24), bool))
    s = SparseFactor.from_mask(rng.random((16, 27)) < 0.3, concat=True)
    lay = LayerConfig.from_dict({"name": "lr", "kind": "linear", "in_features": 24, "out_features": 16,
                                 "chain": [v.to_config(), s.to_config()]})
    w = random_float_weights(lay, rng)
    w[1] = w[1] * np.where(s.nonzero_indices()[1] < 24, 1.0, 30.0)       # the low-rank part much larger
    x = rng.standard_normal((300, 24))
    q = quantize_layer(lay, w, x)
    ref = float_forward(lay.chain, w, x)
    err = np.abs(q.forward_float(x) - ref).max() / np.abs(ref).max()
    assert err < 0.03, err
    np.testing.assert_allclose(float_forward(lay.chain, q.float_weights(), x), ref, atol=0.05 * np.abs(ref).max())


def test_index_entries_and_the_engine_model_view():
    rng = np.random.default_rng(3)
    f0 = SparseFactor.from_mask(rng.random((5, 12)) < 0.3)
    f1 = SparseFactor.from_mask(rng.random((4, 17)) < 0.3, concat=True)
    lay = LayerConfig.from_dict({"name": "s", "kind": "linear", "in_features": 12, "out_features": 4,
                                 "chain": [f0.to_config(), f1.to_config()]})
    e = index_entries(lay.chain)
    assert e.size == f0.params + f1.params
    assert int((e >> ROW_END_BIT).sum()) == f0.p + f1.p                  # one row end per row
    env = EngineEnvelope.for_layers("s", [lay])
    from litefly.network import EngineStep
    words = env.describe(EngineStep(lay, (12, 1, 1), relu=False)).register_words(1)
    assert factors_from_words(words, e) == [f0, f1]
    with pytest.raises(ConfigError, match="sparse rows, the index memory holds"):
        factors_from_words(words, e[:-3])

"""K-matrix import (issue 14, item 2): transposed DeBut factors and B B^T chains against the explicit
dense products."""

from __future__ import annotations

import numpy as np
import pytest

from litefly.chain import Factor, SparseFactor, butterfly_chain, validate_chain
from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError
from litefly.fixed import chain_dense, factor_dense, quantize_layer
from litefly.kmatrix import (butterfly_factor_from_twiddle, kaleidoscope_chain, kmatrix_chain, transpose_chain,
                             transpose_factor)
from litefly.network import network_forward_int, plan_network
from litefly.host.runtime import NetworkRunner


@pytest.mark.parametrize("pqrst", [[8, 8, 2, 2, 1], [8, 8, 2, 2, 4], [6, 4, 3, 2, 1], [12, 8, 3, 2, 2],
                                   [384, 576, 4, 6, 1], [128, 256, 4, 8, 32]])
def test_transposed_factor_is_a_debut_factor_with_r_and_s_swapped(pqrst: list[int]) -> None:
    f = Factor.checked(pqrst)
    w = np.random.default_rng(0).standard_normal(f.compact_shape)
    ft, wt = transpose_factor(f, w)
    assert ft.as_list() == [f.q, f.p, f.s, f.r, f.t]
    assert np.array_equal(factor_dense(ft, wt), factor_dense(f, w).T)


def test_transposed_sparse_factor_and_chain() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((6, 5)) < 0.5
    mask[np.arange(5), np.arange(5)] = True
    mask[5, 0] = True
    sf = SparseFactor.from_mask(mask)
    w = rng.standard_normal(sf.params)
    st, wt = transpose_factor(sf, w)
    assert np.array_equal(factor_dense(st, wt), factor_dense(sf, w).T)
    chain = validate_chain([[8, 8, 2, 2, 1], [8, 8, 4, 4, 2], [8, 8, 2, 2, 4]])
    ws = [rng.standard_normal(f.compact_shape) for f in chain]
    tc, tw = transpose_chain(chain, ws)
    assert np.allclose(chain_dense(tc, tw), chain_dense(chain, ws).T)
    with pytest.raises(ConfigError, match="concat factor") as info:
        transpose_factor(SparseFactor.from_mask(np.ones((2, 4)), concat=True), np.ones(8))
    assert "\n" not in str(info.value)


def test_twiddle_matches_the_butterfly_factor_definition() -> None:
    """Factor of stride d: block-diagonal n/(2d) blocks of [[D1, D2], [D3, D4]] (d x d diagonals),
    twiddle[(block, lane)] = the lane's 2 x 2 matrix, written out entry by entry."""
    n = 8
    tw = np.arange(1, 2 * n + 1, dtype=np.float64).reshape(n // 2, 2, 2)
    for k in range(3):
        d = 1 << k
        want = np.zeros((n, n))
        for blk in range(n // (2 * d)):
            for lane in range(d):
                for i in range(2):
                    for j in range(2):
                        want[blk * 2 * d + i * d + lane, blk * 2 * d + j * d + lane] = tw[blk * d + lane, i, j]
        f, w = butterfly_factor_from_twiddle(tw, k)
        assert f.as_list() == [8, 8, 2, 2, d]
        assert np.array_equal(factor_dense(f, w), want)
    with pytest.raises(ConfigError, match="factor_index=3"):
        butterfly_factor_from_twiddle(tw, 3)


def butterfly_weights(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.standard_normal(f.compact_shape) for f in butterfly_chain(n)]


def test_kaleidoscope_chain_equals_b1_b2t() -> None:
    rng = np.random.default_rng(2)
    n = 16
    b1, b2 = butterfly_weights(n, rng), butterfly_weights(n, rng)
    chain, weights = kaleidoscope_chain(n, b1, b2)
    assert [f.t for f in chain] == [8, 4, 2, 1, 1, 2, 4, 8]
    dense1, dense2 = chain_dense(butterfly_chain(n), b1), chain_dense(butterfly_chain(n), b2)
    assert np.allclose(chain_dense(chain, weights), dense1 @ dense2.T)
    # width 2: two terms, the first applied first
    b3, b4 = butterfly_weights(n, rng), butterfly_weights(n, rng)
    kc, kw = kmatrix_chain(n, [(b1, b2), (b3, b4)])
    want = (chain_dense(butterfly_chain(n), b3) @ chain_dense(butterfly_chain(n), b4).T) @ (dense1 @ dense2.T)
    assert len(kc) == 16 and np.allclose(chain_dense(kc, kw), want)
    with pytest.raises(ConfigError, match="B2 has 3 factor weights"):
        kaleidoscope_chain(n, b1, b2[:3])


def test_kmatrix_layer_runs_on_the_engine_model() -> None:
    rng = np.random.default_rng(3)
    n = 16
    chain, weights = kaleidoscope_chain(n, butterfly_weights(n, rng), butterfly_weights(n, rng))
    layer = LayerConfig(name="kmat", kind="linear", in_features=n, out_features=n, chain=chain)
    assert layer.mixing_violations() and layer.is_dense_product()
    x = rng.standard_normal((20, n))
    q = quantize_layer(layer, weights, x)
    net = NetworkConfig.single(layer)
    golden = network_forward_int(plan_network(net, (n, 1, 1)), {"kmat": q}, q.quantize_input(x).reshape(20, n, 1, 1))
    with NetworkRunner(net, {"kmat": q}, backend="golden") as runner:
        assert np.array_equal(runner.run_int(q.quantize_input(x)), golden.reshape(20, n))

"""Merging adjacent DeBut factors (litefly.merge): the recognised products, the cheapest cut, the
merged weights, and the ``merge`` setting of layer and network files."""

from __future__ import annotations

import itertools
import textwrap

import numpy as np
import pytest

from litefly.chain import Factor, butterfly_chain, parse_rshapes_line, validate_chain
from litefly.config import LayerConfig, load_network
from litefly.errors import ConfigError
from litefly.merge import merge_chain, merge_weights, product_factor

from published_chains import ALL

SMALL = [line for line in ALL if max(f.q for f in parse_rshapes_line(line)) <= 1152]


def _dense(f: Factor, w: np.ndarray | None = None) -> np.ndarray:
    m = np.zeros((f.p, f.q))
    rows, cols = f.nonzero_indices()
    m[rows, cols] = 1.0 if w is None else np.asarray(w).ravel()
    return m


def _product(chain, weights=None) -> np.ndarray:
    m = np.eye(chain[0].q)
    for i, f in enumerate(chain):
        m = _dense(f, None if weights is None else weights[i]) @ m
    return m


def _debut_factors(p: int, q: int):
    """Every valid DeBut factor of shape p x q (brute force)."""
    for s in range(1, q + 1):
        for t in range(1, q // s + 1):
            if q % (s * t):
                continue
            r, rem = divmod(p * s, q)
            if rem or r < 1:
                continue
            try:
                yield Factor.checked([p, q, r, s, t])
            except ConfigError:
                pass


@pytest.mark.parametrize("line", SMALL[:8] + ["256 256 2 2 1 256 256 2 2 2 256 256 2 2 4 256 256 2 2 8"])
def test_product_factor_is_the_product_pattern_exactly_when_one_exists(line):
    chain = parse_rshapes_line(line)
    for a, b in zip(chain, chain[1:]):
        f = product_factor([a, b])
        support = _product([a, b]) != 0
        if f is not None:
            assert (f.p, f.q) == (b.p, a.q) and np.array_equal(_dense(f) != 0, support)
        else:                               # no DeBut factor has the product's pattern
            assert not any(np.array_equal(_dense(g) != 0, support) for g in _debut_factors(b.p, a.q))


def _cuts(n: int):
    for bits in itertools.product((0, 1), repeat=n - 1):
        edges = [0] + [i + 1 for i, cut in enumerate(bits) if cut] + [n]
        yield list(zip(edges, edges[1:]))


# chains whose products reach a column along several paths (the merged weight is their sum)
COLLIDING = ["8 8 2 2 1 8 8 2 2 1", "16 16 4 4 1 16 16 2 2 1 16 16 4 4 1", "32 32 2 2 1 16 32 1 2 1 16 16 2 2 1"]


@pytest.mark.parametrize("line", SMALL + COLLIDING)
def test_merge_chain_is_the_cheapest_cut_and_keeps_the_product(line):
    chain = parse_rshapes_line(line)
    plan = merge_chain(chain)
    validate_chain(plan.chain, chain[0].q, chain[-1].p)
    assert sum(f.params for f in plan.chain) <= sum(f.params for f in chain)
    if line in COLLIDING:
        assert len(plan.chain) == 1
    best = None
    for runs in _cuts(len(chain)):
        fs = [product_factor(chain[a:b]) for a, b in runs]
        if any(f is None or f.params > sum(g.params for g in chain[a:b]) for f, (a, b) in zip(fs, runs)):
            continue
        key = (sum(f.params for f in fs), len(fs))
        best = key if best is None or key < best else best
    assert (sum(f.params for f in plan.chain), len(plan.chain)) == best
    rng = np.random.default_rng(len(line))
    weights = [rng.standard_normal(f.compact_shape) for f in chain]
    merged = merge_weights(plan, weights)
    assert [w.shape for w in merged] == [f.compact_shape for f in plan.chain]
    np.testing.assert_allclose(_product(plan.chain, merged), _product(chain, weights), rtol=0, atol=1e-9)


def test_the_vgg_example_merges_its_halving_factors():
    net = load_network("examples/vgg_net.yaml")
    chains = {layer.name: [f.as_list() for f in layer.chain] for layer in net.layers}
    assert chains["vgg_conv2"] == [[512, 576, 8, 9, 1], [256, 512, 2, 4, 8], [128, 256, 2, 4, 16],
                                   [64, 128, 2, 4, 32]]
    conv2 = net.layers[1]
    assert len(conv2.merged_from) == 7 and conv2.macs_per_column == 6400
    assert sum(f.params for f in conv2.merged_from) == 7296
    assert conv2.dense_baseline().merged_from == ()          # another chain: not merged from anything


def test_a_butterfly_merges_into_radix_4_at_the_same_macs():
    plan = merge_chain(butterfly_chain(64))     # two radix-2 stages are one radix-4 stage: same MACs
    assert [f.as_list() for f in plan.chain] == [[64, 64, 4, 4, 1], [64, 64, 4, 4, 4], [64, 64, 4, 4, 16]]
    assert sum(f.params for f in plan.chain) == sum(f.params for f in plan.declared) == 768
    three = parse_rshapes_line("64 64 2 2 1 64 64 2 2 2 64 64 2 2 4")
    assert merge_chain(three[:1]).chain == three[:1]
    assert len(merge_chain(three).chain) == 2       # a radix-8 stage would cost 512 MACs, not 384


def _layer(extra: str = "") -> dict:
    import yaml
    return yaml.safe_load(textwrap.dedent("""\
        name: l
        kind: linear
        in_features: 64
        out_features: 32
        rshapes: "64 64 2 2 1 32 64 1 2 2"
        """) + extra)


def test_merge_setting_layer_wins_over_network_and_round_trips(tmp_path):
    assert LayerConfig.from_dict(_layer()).chain == parse_rshapes_line("64 64 2 2 1 32 64 1 2 2")
    merged = LayerConfig.from_dict(_layer("merge: true\n"))
    assert [f.as_list() for f in merged.chain] == [[32, 64, 2, 4, 1]]
    assert LayerConfig.from_dict(_layer(), merge=True).chain == merged.chain
    assert LayerConfig.from_dict(_layer("merge: false\n"), merge=True).chain == merged.merged_from
    again = LayerConfig.from_dict(merged.to_dict(), merge=True)        # a merged chain is a fixed point
    assert again.chain == merged.chain and again.hash32 == merged.hash32 and not again.merged_from
    (tmp_path / "l.yaml").write_text(LayerConfig.from_dict(_layer()).to_yaml())
    (tmp_path / "n.yaml").write_text("name: n\nmerge: true\nlayers:\n  - file: l.yaml\n")
    assert load_network(tmp_path / "n.yaml").layers[0].chain == merged.chain


@pytest.mark.parametrize("where, text", [("layer", "merge: 1\n"), ("network", None)])
def test_merge_must_be_a_bool(tmp_path, where, text):
    if where == "layer":
        with pytest.raises(ConfigError, match=r"^layer 'l': merge=1 is not true or false$"):
            LayerConfig.from_dict(_layer(text))
    else:
        (tmp_path / "n.yaml").write_text("name: n\nmerge: yes please\nlayers:\n  - op: relu\n")
        with pytest.raises(ConfigError, match=r"network: merge='yes please' is not true or false$"):
            load_network(tmp_path / "n.yaml")


def test_merge_weights_checks_its_input():
    plan = merge_chain(parse_rshapes_line("64 64 2 2 1 32 64 1 2 2"))
    with pytest.raises(ConfigError, match="got 1 weight tensors, the chain has 2 factors"):
        merge_weights(plan, [np.zeros(128)])
    with pytest.raises(ConfigError, match=r"factor \[32, 64, 1, 2, 2\] has 64 weights, got 3"):
        merge_weights(plan, [np.zeros(128), np.zeros(3)])


def test_sparse_factors_stay_and_wide_chains_stay_bounded():
    from litefly.config import load_layer
    pix = load_layer("examples/layers/pixelfly64.yaml")
    plan = merge_chain(pix.chain)
    assert plan.chain == pix.chain and not plan.merged
    assert product_factor(pix.chain) is None
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(f.params) for f in pix.chain]
    assert all(np.array_equal(a.ravel(), b) for a, b in zip(merge_weights(plan, weights), weights))
    assert LayerConfig.from_dict({**pix.to_dict(), "merge": True}).chain == pix.chain
    wide = merge_chain(butterfly_chain(1 << 20))        # runs beyond MERGE_MAX_CELLS are not tried
    validate_chain(wide.chain, 1 << 20, 1 << 20)

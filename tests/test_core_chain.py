"""Chains: counts, special cases, the published chains, and every validation rule's message."""

from __future__ import annotations


import pytest

from litefly.chain import (Factor, block_diagonal_chain, butterfly_chain, chain_is_dense, chain_params,
                           compression, mixing_violations, monarch_chain, parse_rshapes_line, validate_chain)
from litefly.config import LayerConfig, MixingWarning
from litefly.errors import ConfigError
from published_chains import ALL, MIXING_BREAKERS


def test_butterfly_1024():
    c = butterfly_chain(1024)
    assert len(c) == 10 and chain_params(c) == 20_480
    assert not mixing_violations(c) and c[0].t == 1 and c[-1].t == 512


def test_vgg_worked_example():
    c = parse_rshapes_line("384 576 4 6 1 256 384 4 6 4 256 256 2 2 16 128 256 4 8 32")
    assert [f.params for f in c] == [2304, 1536, 512, 1024]
    assert chain_params(c) == 5376 and round(100 * compression(c), 2) == 92.71


@pytest.mark.parametrize("n,b", [(16, 4), (64, 8), (12, 3)])
def test_block_diagonal_and_monarch(n, b):
    bd = block_diagonal_chain(n, b)
    assert bd == (Factor(n, n, b, b, 1),) and chain_params(bd) == n * b
    mo = monarch_chain(n, b)
    assert mo[1] == Factor(n, n, n // b, n // b, b) and chain_is_dense(mo)
    assert not chain_is_dense(bd) or b == n


def test_factor_pattern_counts():
    f = Factor.checked([64, 72, 8, 9, 8])
    m = f.mask()
    assert (m.sum(axis=1) == f.s).all() and (m.sum(axis=0) == f.r).all() and m.sum() == f.params


@pytest.mark.parametrize("line", ALL, ids=lambda l: l[:24])
def test_published_chains_validate(line):
    c = parse_rshapes_line(line)
    assert all(c[i + 1].q == c[i].p for i in range(len(c) - 1))
    if line not in MIXING_BREAKERS:
        return
    assert mixing_violations(c)


@pytest.mark.parametrize("line", MIXING_BREAKERS)
def test_mixing_breakers_warn_with_density(line):
    c = parse_rshapes_line(line)
    layer = LayerConfig(name="x", kind="linear", in_features=c[0].q, out_features=c[-1].p, chain=c)
    with pytest.warns(MixingWarning, match=r"mixing rule wants .*\(the product is (NOT )?dense\)"):
        layer.warn_mixing()


@pytest.mark.parametrize("values,message", [
    ([48, 48, 2, 6, 1, 0], "factor 1: expected five integers"),
    ([48, 48, 2, 6.0, 1], "factor 1: s=6.0 is not an integer"),
    ([48, 48, 2, 0, 1], "factor 1: s=0 must be a positive integer"),
    ([16, 44, 2, 6, 1], r"factor 1: q=44 is not a multiple of s\*t=6"),
    ([20, 48, 2, 6, 1], r"factor 1: p=20 does not equal \(q/\(s\*t\)\)\*r\*t=16"),
])
def test_factor_rules(values, message):
    with pytest.raises(ConfigError, match=message):
        validate_chain([values])


def test_second_factor_is_named():
    with pytest.raises(ConfigError, match=r"factor 2: q=48 is not a multiple of s\*t=10"):
        validate_chain([[48, 48, 2, 2, 1], [48, 48, 2, 5, 2]])


def test_chain_compatibility_rules():
    with pytest.raises(ConfigError, match="factor 2: q=32 does not equal p=16 of factor 1"):
        validate_chain([[16, 16, 2, 2, 1], [32, 32, 2, 2, 2]])
    with pytest.raises(ConfigError, match="factor 1: q=16 does not equal the layer's input size 27"):
        validate_chain([[16, 16, 2, 2, 1]], in_features=27)
    with pytest.raises(ConfigError, match="factor 1: p=16 does not equal the layer's output size 8"):
        validate_chain([[16, 16, 2, 2, 1]], out_features=8)
    with pytest.raises(ConfigError, match="needs at least one factor"):
        validate_chain([])


@pytest.mark.parametrize("line,message", [
    ("36 27 4 3", "has 4 numbers, expected a multiple of 5"),
    ("36 27 x 3 1", "'x' is not an integer"),
    ("", "is empty"),
])
def test_rshapes_line_errors(line, message):
    with pytest.raises(ConfigError, match=message):
        parse_rshapes_line(line)


def test_special_case_errors():
    with pytest.raises(ConfigError, match="butterfly size n=24 must be a power of two"):
        butterfly_chain(24)
    with pytest.raises(ConfigError, match="block size b=5 must be a positive divisor of n=16"):
        monarch_chain(16, 5)

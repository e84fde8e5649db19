"""Documented limits (``litefly.limits``, ``docs/limits.md``), polynomial chain analyses, safe
output in pipes and the progress helper (issue 16)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from litefly import limits
from litefly.chain import (_dense_by_reachability, butterfly_chain, chain_is_dense, mixing_violations,
                           parse_rshapes_line, validate_chain)
from litefly.config import LayerConfig, NetworkConfig
from litefly.errors import ConfigError


def dense_by_masks(chain) -> bool:
    """The old definition: the product of the 0/1 masks has no zero (small chains only)."""
    acc = chain[0].mask().astype(np.int64)
    for f in chain[1:]:
        acc = np.minimum(f.mask().astype(np.int64) @ acc, 1)
    return bool(acc.all())


@st.composite
def small_chains(draw):
    q = draw(st.sampled_from([2, 3, 4, 6, 8, 12, 16, 24]))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        divs = [d for d in range(1, q + 1) if q % d == 0]
        st_ = draw(st.sampled_from(divs))
        t = draw(st.sampled_from([d for d in divs if st_ % d == 0]))
        s, r = st_ // t, draw(st.integers(1, 4))
        p = (q // (s * t)) * r * t
        if p > 48:
            break
        out.append([p, q, r, s, t])
        q = p
    if not out:
        out = [[q, q, 1, 1, 1]]
    return validate_chain(out)


@settings(max_examples=300, deadline=2000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(small_chains())
def test_density_check_equals_the_mask_product(chain):
    want = dense_by_masks(chain)
    assert chain_is_dense(chain) == want
    assert _dense_by_reachability(chain) == want


@pytest.mark.parametrize("chain", [
    [[6, 6, 3, 3, 1], [4, 6, 2, 3, 2], [6, 4, 3, 2, 1], [6, 6, 3, 3, 1]],
    [[16, 16, 4, 4, 1], [8, 16, 1, 2, 2], [4, 8, 2, 4, 2]],
    [[32, 32, 2, 2, 1], [48, 32, 3, 2, 2], [4, 48, 2, 24, 2]],
])
def test_dense_chains_that_break_the_mixing_rule(chain):
    c = validate_chain(chain)
    assert mixing_violations(c) and chain_is_dense(c) and dense_by_masks(c)


def test_density_check_refuses_beyond_its_limit(monkeypatch):
    c = validate_chain([[32, 32, 2, 2, 1], [48, 32, 3, 2, 2], [4, 48, 2, 24, 2]])
    monkeypatch.setattr(limits, "DENSITY_CHECK_CELLS", 16)
    with pytest.raises(ConfigError, match="above the limit DENSITY_CHECK_CELLS=16"):
        chain_is_dense(c)


def test_65536_point_butterfly_is_analysed_in_under_2_s():
    n = 65536
    t0 = time.perf_counter()
    layer = LayerConfig.from_dict({"name": "bf", "kind": "linear", "in_features": n, "out_features": n,
                                   "chain": [[n, n, 2, 2, 2 ** i] for i in range(16)]})
    assert layer.params == 16 * 2 * n and not layer.mixing_violations() and layer.is_dense_product()
    assert len(layer.config_hash) == 64
    assert time.perf_counter() - t0 < 2.0


def test_large_non_mixing_chain_is_refuted_quickly():
    n = 65536
    chain = [[n, n, 2, 2, 2 ** i] for i in range(16) if i != 8]   # a stage missing: not dense
    t0 = time.perf_counter()
    assert not chain_is_dense(validate_chain(chain))
    assert time.perf_counter() - t0 < 2.0


def test_largest_butterfly_within_the_limits():
    c = butterfly_chain(limits.MAX_FEATURES)
    assert len(c) == 20 and chain_is_dense(c)


BASE = {"name": "l", "kind": "linear", "in_features": 16, "out_features": 16, "chain": [[16, 16, 16, 16, 1]]}
CONV = {"name": "c", "kind": "conv2d", "in_channels": 4, "out_channels": 4, "kernel": 1, "chain": [[4, 4, 4, 4, 1]]}


@pytest.mark.parametrize("data,limit", [
    ({**BASE, "in_features": 2 ** 21}, "MAX_FEATURES"),
    ({**BASE, "chain": [[16, 16, 16, 16, 1]] * 65}, "MAX_FACTORS"),
    ({**BASE, "in_features": 2 ** 20, "out_features": 2 ** 20, "chain": [[2 ** 20, 2 ** 20, 2 ** 17, 2 ** 17, 1]]},
     "MAX_BLOCK"),
    ({**BASE, "in_features": 2 ** 20, "out_features": 2 ** 20, "chain": [[2 ** 20, 2 ** 20, 2 ** 16, 2 ** 16, 1]]},
     "MAX_FACTOR_PARAMS"),
    ({**CONV, "in_channels": 2 ** 17}, "MAX_CHANNELS"),
    ({**CONV, "kernel": 33}, "MAX_KERNEL"),
    ({**CONV, "stride": [1, 33]}, "MAX_STRIDE"),
    ({**CONV, "dilation": 40}, "MAX_DILATION"),
    ({**CONV, "padding": 5000}, "MAX_PADDING"),
    ({**BASE, "name": "n" * 129}, "MAX_NAME_CHARS"),
    ({**BASE, "rshapes": "16 16 16 16 1 " * 65, "chain": None}, "MAX_FACTORS"),
    ({**BASE, "rshapes": "1" * 30 + " 16 16 16 1", "chain": None}, "MAX_INT_DIGITS"),
])
def test_each_limit_is_named_in_one_line(data, limit):
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(ConfigError) as exc:
        LayerConfig.from_dict(data)
    msg = str(exc.value)
    assert f"limit {limit}=" in msg and "docs/limits.md" in msg and "\n" not in msg and len(msg) < 300, msg


def test_network_limits():
    with pytest.raises(ConfigError, match="MAX_NETWORK_STEPS"):
        NetworkConfig.from_dict({"layers": [BASE] + [{"op": "relu"}] * limits.MAX_NETWORK_STEPS})
    with pytest.raises(ConfigError, match="MAX_POOL"):
        NetworkConfig.from_dict({"layers": [BASE, {"op": "maxpool2d", "kernel": 1000}]})
    with pytest.raises(ConfigError, match="MAX_NAME_CHARS"):
        NetworkConfig.from_dict({"name": "n" * 1000, "layers": [BASE]})
    assert limits.check_image_size(8192, 10) == (8192, 10)
    with pytest.raises(ConfigError, match="MAX_IMAGE"):
        limits.check_image_size(8193, 10)


def test_rshapes_tokens_are_capped_before_conversion():
    with pytest.raises(ConfigError, match="MAX_INT_DIGITS"):
        parse_rshapes_line("9" * 5000 + " 1 1 1 1")
    with pytest.raises(ConfigError, match="'x' is not an integer"):
        parse_rshapes_line("1 1 x 1 1")


def test_short_never_expands_huge_values():
    from litefly.safeio import one_line, short
    assert short(10 ** 5000) == "<integer of about 5,001 digits>"
    assert len(short("x" * 2_000_000)) < 90
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert len(short(deep)) <= 60
    assert one_line("a\nb\n" + "c" * 1000) .count("\n") == 0 and len(one_line("c" * 1000)) == 300


# -- output in pipes --------------------------------------------------------------------------------
def test_tables_print_whole_when_not_a_terminal(capsys):
    from rich.table import Table

    from litefly.cli.output import console, print_table, table_rows, tsv
    table = Table(title="t")
    for col in ("layer", "board", "LUT", "FF", "DSP", "BRAM36", "URAM", "verdict"):
        table.add_column(col)
    long = "vgg_conv_layer_with_a_long_name_" * 3
    table.add_row(long, "pynq-z2", "12345 (23.2%)", "23456 (22.0%)", "220 (100.0%)", "12 (8.6%)", "0 (n/a)",
                  "fits, but DSP bound")
    assert console().width >= 1000    # capsys: stdout is not a terminal
    print_table(table)
    out = capsys.readouterr().out
    assert long in out and "fits, but DSP bound" in out and "…" not in out
    print_table(table, as_json=True)
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["layer"] == long and rows == table_rows(table)
    assert tsv(table).splitlines()[1].split("\t")[0] == long


def test_chain_show_json(capsys):
    from pathlib import Path

    from litefly.cli.main import main
    path = Path(__file__).resolve().parents[1] / "examples" / "vgg_net.yaml"
    main(["chain", "show", "--json", str(path)])
    data = json.loads(capsys.readouterr().out)
    assert [l["name"] for l in data["layers"]] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    l1 = data["layers"][0]
    assert l1["params"] == sum(f["params"] for f in l1["factors"]) and l1["dense_product"] is True


def test_user_file_errors_are_one_line(tmp_path, capsys):
    from litefly.cli.main import main
    rs = tmp_path / "r.txt"
    rs.write_text("16 16 16 16 1\n")
    with pytest.raises(SystemExit) as exc:
        main(["chain", "import-rshapes", str(rs), "--line", "1", "--kind", "linear",
              "-o", str(tmp_path / "no" / "dir" / "x.yaml")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "No such file" in err


# -- progress --------------------------------------------------------------------------------------------
def test_progress_prints_lines_without_a_terminal():
    from litefly.progress import progress, status
    buf = io.StringIO()
    assert list(progress(range(5), "epochs", stream=buf)) == list(range(5))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "epochs: started" and lines[-1].startswith("epochs: done, 5/5 (100%)")
    buf = io.StringIO()
    with progress(3, "columns", stream=buf) as bar:
        bar.update(3)
    assert "columns: done, 3/3" in buf.getvalue()
    buf = io.StringIO()
    with status("verilator build", stream=buf, heartbeat=0.05):
        time.sleep(0.2)
    out = buf.getvalue().splitlines()
    assert out[0] == "verilator build ..." and "still running" in out[1] and "done in" in out[-1]


def test_progress_uses_tqdm_on_a_terminal():
    from litefly.progress import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    bar = progress(range(3), "x", stream=Tty())
    assert type(bar).__module__.startswith("tqdm")
    assert list(bar) == [0, 1, 2]

"""Vectors files are reproducible and self-consistent; the board-side modules import without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from litefly.config import load_layer
from litefly.fixed import factor_dense
from litefly.vectors import load_vectors

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "layers"


def test_same_seed_same_file(tmp_path):
    cfg = EXAMPLES / "monarch64.yaml"
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        r = subprocess.run([sys.executable, "-m", "litefly", "vectors", str(cfg), "--seed", str(seed), "--count", "10",
                            "-o", str(tmp_path / f"{name}.npz")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    a, b, c = (load_vectors(tmp_path / f"{n}.npz") for n in "abc")
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x"], c["x"])


def test_vectors_are_consistent(tmp_path):
    layer = load_layer(EXAMPLES / "vgg_conv1.yaml")
    from litefly.vectors import make_vectors
    v = make_vectors(layer, seed=1, count=20)
    assert v["x"].shape == (20, 27) and v["y"].shape == (20, 64) and v["bias"].shape == (64,)
    for i, f in enumerate(layer.chain):
        assert v[f"factor{i}"].shape == (f.p, f.q)
        np.testing.assert_array_equal(v[f"factor{i}"], factor_dense(f, v[f"weights{i}"]))
    # integer path from the dense factors by hand equals the stored outputs
    np.testing.assert_array_equal(v.quantized(layer).forward(v["x"]), v["y"])
    # the float outputs are what the float weights give, and the dequantised int path is close to them
    err = np.abs(v["y"] * v["act_scales"][-1] - v["y_float"]).max()
    assert err < 0.1 * np.abs(v["y_float"]).max()


def test_board_side_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['amaranth'] = None; sys.modules['cocotb'] = None\n"
            "import litefly.chain, litefly.config, litefly.fixed, litefly.vectors, litefly.hw.spec, "
            "litefly.hw.wireformat, litefly.hw.regmap, litefly.host.runtime, litefly.host.driver, "
            "litefly.host.pynq_transport, litefly.host.golden_transport, litefly.cli.main\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr

"""``litefly bench``: the CLI writes its table, JSON report and PNG; bounds and sources are stated."""

import json
import subprocess
import sys

import pytest

from litefly.config import load_layer
from litefly.host.bench import roofline

from test_host_sim import needs_sim


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "litefly", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def check_report(report, backend, n_layers):
    assert report["backend"] == backend and len(report["layers"]) == n_layers
    for row in report["layers"]:
        assert row["cycles"] > 0 and row["dense_cycles"] > row["cycles"]
        assert row["speedup_vs_dense_engine"] == pytest.approx(row["dense_cycles"] / row["cycles"])
        assert row["roofline"]["bound"] in ("compute", "DMA")
        assert row["cpu_numpy[s]"] > 0 and "measured on this CPU" in row["cpu_source"]
        for key in ("runtime[s]", "throughput[images/s]", "DRAM_in_bandwidth[MB/s]", "DRAM_out_bandwidth[MB/s]",
                    "host_stage[s]", "bytes_in", "bytes_out"):
            assert key in row
    assert report["total"]["cycles"] == sum(r["cycles"] for r in report["layers"])


def test_bench_golden_cli_writes_report_and_plot(tmp_path):
    rep, png = tmp_path / "b.json", tmp_path / "b.png"
    r = run_cli("examples/vgg_net.yaml", "--backend", "golden", "--input-size", "8", "8",
                "--report", str(rep), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "vgg_conv2" in r.stdout and "model (issue cycles)" in r.stdout
    report = json.loads(rep.read_text())
    check_report(report, "golden", 3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_bad_input_is_one_line():
    r = run_cli("examples/nope.yaml", "--backend", "golden")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_roofline_names_the_limiting_bound():
    lay = load_layer("examples/layers/vgg_conv2.yaml")
    slow_dma = roofline(lay, 100e6, 1e6)
    assert slow_dma["bound"] == "DMA"
    fast_dma = roofline(lay, 100e6, 1e12)
    assert fast_dma["bound"] == "compute"
    assert fast_dma["compute_bound_columns_per_s"] == pytest.approx(64 * 100e6 / lay.macs_per_column)


@needs_sim
def test_bench_sim_cli(tmp_path):
    rep, png = tmp_path / "s.json", tmp_path / "s.png"
    r = run_cli("examples/layers/vgg_conv1.yaml", "--backend", "sim", "--input-size", "8", "8",
                "--report", str(rep), "--plot", str(png), timeout=1200)
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    check_report(report, "sim", 1)
    assert report["sources"]["engine"] == "simulated at 100 MHz"
    assert png.exists()

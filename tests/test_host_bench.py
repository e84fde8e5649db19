"""``litefly bench``: one engine for the network, the dense network on its own engine, torch on this
CPU; host stages apart from the engine wait; engine-alone and end-to-end speedups; one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from litefly.config import load_network
from litefly.host.bench import HOST_STAGES, roofline, run_bench
from litefly.hw.spec import EngineEnvelope, lane_rows
from litefly.network import plan_network

ROOT = Path(__file__).resolve().parent.parent
VGG = ROOT / "examples" / "vgg_net.yaml"


def _rows(eng: dict) -> int:
    """Rows a lane of the report's engine computes an issue (``spec.lane_rows``)."""
    return lane_rows(eng["row_pairs"], eng["row_quads"], eng["row_octets"])


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "litefly", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def check_report(report, backend, n_layers, batch):
    assert report["backend"] == backend and len(report["layers"]) == n_layers
    assert report["engine"]["layers_served"] == n_layers          # one engine for the whole network
    tot = report["total"]
    for row in report["layers"]:
        assert 0 < row["cycles"] < row["dense_cycles"]
        # engine time: the passes' cycles and the parameter stream (a beat a cycle), the dense engine's alike
        assert row["param_cycles"] > 0 and row["dense_param_cycles"] > row["param_cycles"]
        # ... no faster than the board's DMA moves the busier direction's bytes (a model; pynq: measured)
        f = report["fclk[mhz]"] * 1e6
        passes = row["cycles"] / f
        paced = backend != "pynq" and row["dma_time[s]"] > passes
        assert row["dma_paced"] == paced
        assert row["runtime[s]"] == pytest.approx(max(passes, row["dma_time[s]"] if paced else 0)
                                                  + row["param_cycles"] / f)
        if not paced:
            assert row["speedup_vs_dense_engine"] == pytest.approx((row["dense_cycles"] + row["dense_param_cycles"])
                                                                   / (row["cycles"] + row["param_cycles"]))
        # utilisation over the cycles the passes took: the DMA time's where it paces them
        assert row["paced_cycles"] == (round(row["dma_time[s]"] * f) if paced else row["cycles"])
        assert row["mac_utilisation"] == pytest.approx(row["mac_cycles"] / row["paced_cycles"])
        assert 0 < row["mac_utilisation"] <= 1
        # the lanes' MAC slots (two a lane with row pairs, four with row quads, eight with octets) that did a DeBut MAC: at
        # most the issue share (idle lanes of partial batches, unpaired factors' idle second rows)
        slots = report["engine"]["lanes"] * _rows(report["engine"])
        assert row["lane_utilisation"] == pytest.approx(row["positions"] * row["macs_per_position"]
                                                        / (slots * row["paced_cycles"]))
        assert 0 < row["lane_utilisation"] <= row["mac_utilisation"] + 1e-12
        assert row["roofline"]["bound"] in ("compute", "DMA")
        cyc = row["roofline"]["cycles_per_batch"]
        assert row["roofline"]["paced_by"] and max(cyc.values()) == cyc[row["roofline"]["paced_by"][0]]
        assert set(row["host_stage[s]"]) == set(HOST_STAGES)
        assert row["end_to_end[s]"] == pytest.approx(row["runtime[s]"] + row["host[s]"])
        assert row["speedup_vs_dense_end_to_end"] > 0
        assert row["input_bytes_vs_feature_map"] == pytest.approx(row["bytes_in"] / row["feature_map_bytes"])
        for key in ("runtime[s]", "throughput[images/s]", "DRAM_in_bandwidth[MB/s]", "DRAM_out_bandwidth[MB/s]",
                    "engine_wait[s]", "transfers", "bytes_out", "im2col_bytes"):
            assert key in row
    assert tot["cycles"] == sum(r["cycles"] for r in report["layers"])
    assert tot["param_cycles"] == sum(r["param_cycles"] for r in report["layers"])
    assert tot["runtime[s]"] == pytest.approx(sum(r["runtime[s]"] for r in report["layers"]))
    assert tot["runtime[s]"] >= (tot["cycles"] + tot["param_cycles"]) / (report["fclk[mhz]"] * 1e6) * (1 - 1e-12)
    assert set(tot["host_stage[s]"]) == set(HOST_STAGES)           # host stages only: the wait is apart
    assert tot["host[s]"] == pytest.approx(sum(tot["host_stage[s]"].values()))
    # every host second once: each layer's own dispatch, plus the network's input/output row
    io = report["network_io"]
    assert set(io["host_stage[s]"]) == {"quantize", "copy_in", "copy_out", "unpack", "dispatch"} and io["host[s]"] > 0
    assert all(set(k for k, v in r["host_stage[s]"].items() if v) <= {"dispatch"} for r in report["layers"])
    assert tot["host[s]"] == pytest.approx(io["host[s]"] + sum(r["host[s]"] for r in report["layers"]), rel=1e-6)
    assert tot["engine_wait[s]"] > 0
    assert tot["end_to_end[s]"] == pytest.approx(tot["runtime[s]"] + tot["host[s]"])
    assert tot["transfers"] == sum(r["transfers"] for r in report["layers"])
    eng, b = report["engine"], tot["bounds"]
    slots = eng["lanes"] * _rows(eng)
    assert b["compute[s]"] == pytest.approx(tot["macs"] / (slots * report["fclk[mhz]"] * 1e6))
    assert b["dma[s]"] == pytest.approx(sum(r["dma_time[s]"] for r in report["layers"]))
    assert b["binds"] == ("compute" if b["compute[s]"] >= b["dma[s]"] else "DMA")
    assert b["end_to_end_vs_bound"] == pytest.approx(tot["end_to_end[s]"] / max(b["compute[s]"], b["dma[s]"]))
    # layers one after another, each at the larger of its own compute and DMA bounds
    f = report["fclk[mhz]"] * 1e6
    assert b["layers[s]"] == pytest.approx(sum(max(r["positions"] * r["macs_per_position"] / (slots * f),
                                                   r["dma_time[s]"]) for r in report["layers"]))
    assert b["layers[s]"] >= max(b["compute[s]"], b["dma[s]"]) * (1 - 1e-12)
    assert tot["paced_cycles"] == sum(r["paced_cycles"] for r in report["layers"])
    assert tot["lane_utilisation"] == pytest.approx(tot["macs"] / (slots * tot["paced_cycles"]))
    assert tot["macs_per_dsp_cycle"] == pytest.approx(tot["lane_utilisation"] * eng["macs_per_dsp"])
    assert eng["dsps"] == (eng["lanes"] * _rows(eng) // 2 if eng["row_pairs"] else eng["lanes"] // eng["macs_per_dsp"])
    assert EngineEnvelope(**eng["envelope"]).hash32 == int(eng["hash"], 16)     # the engine that ran
    assert report["batch_size"] == batch
    # a stream of batches (its outputs checked equal to the run's): end to end = engine + host - hidden
    st = tot["streamed"]
    assert st["batches"] >= 3 and set(st["host_stage[s]"]) == set(HOST_STAGES)
    assert st["host[s]"] == pytest.approx(sum(st["host_stage[s]"].values()))
    assert 0 < st["hidden[s]"] <= min(st["host[s]"], tot["runtime[s]"])
    assert st["end_to_end[s]"] == pytest.approx(tot["runtime[s]"] + st["host[s]"] - st["hidden[s]"])
    assert st["end_to_end_vs_bound"] == pytest.approx(st["end_to_end[s]"] / max(b["compute[s]"], b["dma[s]"]))


def test_bench_golden_cli_writes_report_and_plot(tmp_path):
    rep, png = tmp_path / "b.json", tmp_path / "b.png"
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--batch", "2", "--repeats", "1",
                "--report", str(rep), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "vgg_conv2" in r.stdout and "cycle model" in r.stdout and "x torch e2e" in r.stdout
    assert "compute binds; end to end" in r.stdout and "MACs per DSP per cycle (of 2)" in r.stdout
    assert "streamed (3 batches, run_stream; a steady-state batch)" in " ".join(r.stdout.split())
    report = json.loads(rep.read_text())
    check_report(report, "golden", 3, 2)
    conv2 = report["layers"][1]                          # 3x3 stride 1, 64 channels: windows formed on chip
    assert conv2["input_bytes_vs_feature_map"] == pytest.approx(1.0)
    assert conv2["im2col_bytes_vs_feature_map"] == pytest.approx(9.0)
    assert report["layers"][0]["pool"] is None and report["layers"][1]["pool"] == [2, 2]
    for row in report["layers"]:                        # torch measured in the same run, with its GMAC/s
        assert row["cpu_torch[s]"] > 0 and row["cpu_torch_gmacs"] > 0 and row["speedup_vs_cpu_torch_end_to_end"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the example merges its chains: the report keeps the declared MACs, the summary says what merged
    assert [(row["declared_factors"], row["factors"]) for row in report["layers"]] == [(3, 2), (7, 4), (7, 3)]
    assert report["total"]["declared_macs"] > report["total"]["macs"]
    assert "chains merged (merge: true, litefly chain merge): vgg_conv1, vgg_conv2, vgg_conv3; 17 -> 9 factors" in \
        " ".join(r.stdout.split())
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--repeats", "1", "--no-dense",
                "--no-merge", "--report", str(rep))
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    assert [row["factors"] for row in report["layers"]] == [3, 7, 7] and "chains merged" not in r.stdout
    assert report["total"]["declared_macs"] == report["total"]["macs"]


def test_bench_row_quads_option(tmp_path):
    """--row-quads: two row-pair DSPs per lane, fewer engine cycles on the example (its quad factors
    issue four rows); --row-quads beside --no-row-pairs is one line."""
    reports = {}
    for flag in ("--row-quads", "--no-row-quads"):
        rep = tmp_path / f"{flag}.json"
        r = run_cli(str(VGG), "--backend", "golden", "--board", "pynq-z2", "--input-size", "8", "8", "--repeats",
                    "1", flag, "--report", str(rep))
        assert r.returncode == 0, r.stderr
        reports[flag] = json.loads(rep.read_text())
        check_report(reports[flag], "golden", 3, 1)
    q, p = reports["--row-quads"]["engine"], reports["--no-row-quads"]["engine"]
    assert q["row_quads"] and not p["row_quads"] and q["dsps"] == 2 * q["lanes"] and p["dsps"] == p["lanes"]
    assert q["hash"] != p["hash"]
    assert reports["--row-quads"]["total"]["cycles"] < reports["--no-row-quads"]["total"]["cycles"]
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--row-quads", "--no-row-pairs")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "row_quads gives a lane two row-pair multipliers: it needs row_pairs (got False)" in r.stderr


def test_bench_row_octets_option(tmp_path):
    """--row-octets on the PYNQ-Z2's envelope: four row-pair DSPs per lane, fewer engine cycles on the
    example (vgg_conv2's and vgg_conv3's first factors issue eight rows); --no-row-octets on the
    ZCU104 turns its default off; --row-octets on a 32-bit stream is one line."""
    reports = {}
    for board, flag in (("pynq-z2", "--row-octets"), ("pynq-z2", "--no-row-octets"), ("zcu104", "--no-row-octets")):
        rep = tmp_path / f"{board}{flag}.json"
        r = run_cli(str(VGG), "--backend", "golden", "--board", board, "--input-size", "8", "8", "--repeats",
                    "1", flag, "--report", str(rep))
        assert r.returncode == 0, r.stderr
        reports[board, flag] = json.loads(rep.read_text())
        check_report(reports[board, flag], "golden", 3, 1)
    o, q = reports["pynq-z2", "--row-octets"], reports["pynq-z2", "--no-row-octets"]
    assert o["engine"]["row_octets"] and not q["engine"]["row_octets"] and o["engine"]["dsps"] == 4 * o["engine"]["lanes"]
    assert o["total"]["cycles"] < q["total"]["cycles"]
    z = reports["zcu104", "--no-row-octets"]["engine"]
    assert not z["row_octets"] and z["row_quads"] and z["dsps"] == 2 * z["lanes"]
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--row-octets", "--stream-bits", "32")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "row_octets gives a lane four row-pair multipliers: it needs row_quads (got True) and eight weights " \
           "per beat (got 4)" in r.stderr


def test_bench_frame_word_beats_option(tmp_path):
    """--frame-word-beats 4: the example's 64- and 128-channel layers read four beats a window read,
    so the window-paced layers take fewer cycles on one window generator; another engine (hash);
    a value other than 1, 2, 4 is refused by the option in one line."""
    reports = {}
    for fb in ("1", "4"):
        rep = tmp_path / f"fb{fb}.json"
        r = run_cli(str(VGG), "--backend", "golden", "--board", "pynq-z2", "--input-size", "16", "16", "--repeats",
                    "1", "--window-generators", "1", "--frame-word-beats", fb, "--no-dense", "--report", str(rep))
        assert r.returncode == 0, r.stderr
        reports[fb] = json.loads(rep.read_text())
    one, four = reports["1"], reports["4"]
    assert four["engine"]["envelope"]["frame_word_beats"] == 4 and one["engine"]["hash"] != four["engine"]["hash"]
    assert four["layers"][1]["cycles"] < one["layers"][1]["cycles"]
    assert four["total"]["cycles"] < one["total"]["cycles"]
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--frame-word-beats", "3")
    assert r.returncode == 2 and "'3' is not one of '1', '2', '4'" in r.stderr


def test_bench_single_layer_and_exported_params(tmp_path):
    """A layer file is a one-layer network; --params takes an export (chained scales)."""
    from litefly.export import save_int8
    from network_params import calibrated_network_params
    import numpy as np
    net = load_network(VGG)
    params, _ = calibrated_network_params(net, np.random.default_rng(0).standard_normal((2, 3, 8, 8)),
                                          np.random.default_rng(1))
    save_int8(net, params, tmp_path / "int8")
    report = run_bench(load_network(tmp_path / "int8" / "network.yaml"), "golden", batch=1, input_size=(8, 8),
                       params_dir=tmp_path / "int8", repeats=1, dense=False)
    assert report["layers"][2]["dense_cycles_source"].startswith("model")
    one = run_bench(load_network(ROOT / "examples" / "layers" / "vgg_conv1.yaml"), "golden", input_size=(8, 8),
                    repeats=1)
    assert len(one["layers"]) == 1 and one["engine"]["layers_served"] == 1
    # parameters of the declared chains do not load into the merged ones: one line saying why
    save_int8(load_network(VGG, merge=False), calibrated_network_params(
        load_network(VGG, merge=False), np.random.default_rng(0).standard_normal((2, 3, 8, 8)),
        np.random.default_rng(1))[0], tmp_path / "pub")
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--params", str(tmp_path / "pub"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "parameters are for the declared chain of layer 'vgg_conv1', which merge: true merges into 2 " \
           "factors; quantise the merged chain (litefly convert --merge) or run the chains as declared " \
           "(--no-merge)" in r.stderr


def test_bench_user_errors_are_one_line_exit_2(tmp_path):
    r = run_cli("examples/nope.yaml", "--backend", "golden")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
    # a network whose layer does not fit the engine its `engine:` settings make: the limit is named
    net = tmp_path / "tiny.yaml"
    net.write_text(f"name: tiny\nengine: {{frame_kib: 1}}\nlayers:\n  - file: {ROOT}/examples/layers/vgg_conv1.yaml\n")
    r = run_cli(str(net), "--backend", "golden", "--input-size", "32", "32")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "does not fit engine 'tiny'" in r.stderr and "CAP_FRAME_BEATS" in r.stderr
    r = run_cli(str(VGG), "--backend", "golden", "--params", str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "vgg_conv1.npz" in r.stderr


def test_bench_envelope_options_make_another_engine():
    """--multipliers/--macs-per-dsp/--stream-bits size the engine (and its dense baseline alike)."""
    net = load_network(VGG)
    base = run_bench(net, "golden", batch=2, input_size=(8, 8), repeats=1)
    wide = run_bench(net, "golden", batch=2, input_size=(8, 8), repeats=1, multipliers=128, macs_per_dsp=2,
                     stream_bits=128)
    env = EngineEnvelope.for_network(net, (8, 8), multipliers=128, macs_per_dsp=2, stream_bits=128, board="pynq-z2")
    assert wide["engine"]["hash"] == f"0x{env.hash32:08x}" != base["engine"]["hash"]
    assert (wide["engine"]["lanes"], wide["engine"]["stream_bits"]) == (128, 128)
    assert wide["dense_engine"]["lanes"] == 128
    assert wide["total"]["cycles"] < base["total"]["cycles"]
    r = run_cli(str(VGG), "--backend", "golden", "--multipliers", "0")
    assert r.returncode == 2 and r.stderr == "error: engine: multipliers=0 must be at least 1\n"
    r = run_cli(str(VGG), "--backend", "golden", "--stream-bits", "48")
    assert r.returncode == 2 and "'48' is not one of '32', '64', '128'" in r.stderr


def test_bench_window_generators_make_another_engine_and_lift_the_window_bound():
    """--window-generators: another engine (its dense baseline alike), fewer cycles where the window
    generator paced the batches (vgg_conv3 at 256 lanes; vgg_conv1's kernel rows are folded by the
    host, so its windows no longer pace it), refused in one line if not 1, 2 or 4."""
    net = load_network(VGG)
    one = run_bench(net, "golden", batch=1, input_size=(16, 16), repeats=1, multipliers=256, dense=False,
                    window_generators=1)
    four = run_bench(net, "golden", batch=1, input_size=(16, 16), repeats=1, multipliers=256, dense=False,
                     window_generators=4)
    env = EngineEnvelope.for_network(net, (16, 16), multipliers=256, window_generators=4, board="pynq-z2")
    assert four["engine"]["hash"] == f"0x{env.hash32:08x}" != one["engine"]["hash"]
    assert (four["engine"]["window_generators"], one["engine"]["window_generators"]) == (4, 1)
    assert four["layers"][2]["cycles"] < 0.9 * one["layers"][2]["cycles"]
    assert four["total"]["cycles"] < one["total"]["cycles"]
    r = run_cli(str(VGG), "--backend", "golden", "--window-generators", "3")
    assert r.returncode == 2 and "'3' is not one of '1', '2', '4'" in r.stderr


def test_bench_frame_kib_and_the_ring():
    """--frame-kib: another engine (its dense baseline alike). A frame buffer of a power-of-two depth
    is a ring: every pass of the VGG example streams the whole batch, so a larger one changes no
    cycle; one of another depth takes as many images as it holds, more passes and more cycles; one
    that cannot hold a layer's input is refused in one line."""
    net = load_network(VGG)
    base = run_bench(net, "golden", batch=4, input_size=(32, 32), repeats=1, dense=False)
    big = run_bench(net, "golden", batch=4, input_size=(32, 32), repeats=1, dense=False, frame_kib=256)
    odd = run_bench(net, "golden", batch=4, input_size=(32, 32), repeats=1, dense=False, frame_kib=96)
    assert big["engine"]["hash"] != base["engine"]["hash"]
    assert big["engine"]["frame_beats"] == big["dense_engine"]["frame_beats"] == 256 * 1024 // 8
    assert base["engine"]["frame_beats"] == 64 * 1024 // 8
    assert all(r["passes"] == 1 and r["images_per_pass"] == 4 for r in base["layers"] + big["layers"])
    assert big["total"]["cycles"] == base["total"]["cycles"]
    # the host folds vgg_conv1's kernel rows (docs/engine.md): the report and the summary say so
    assert base["layers"][0]["host_fold"] == {"kw": 3, "engine_in_shape": [9, 32, 32], "engine_kernel": [3, 1],
                                              "window_reads": 3, "unfolded_window_reads": 9}
    assert all(r["host_fold"] is None for r in base["layers"][1:])
    from litefly.host.bench import summary_lines
    assert ("kernel rows folded by the host (docs/engine.md, \"Folded kernel rows\"): vgg_conv1's 3x32x32 input "
            "sent as 9x32x32 for a 3x1 kernel, 3 window reads a lane instead of 9") in summary_lines(base)
    conv2 = odd["layers"][1]                    # 96 KiB holds one 32x32x64 map: four passes
    assert (conv2["passes"], conv2["images_per_pass"]) == (4, 1)
    assert odd["total"]["cycles"] > base["total"]["cycles"]
    r = run_cli(str(VGG), "--backend", "golden", "--frame-kib", "8", "--no-dense", "--repeats", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "vgg_conv2" in r.stderr and "CAP_FRAME_BEATS = 1024" in r.stderr


def test_engine_time_is_no_faster_than_the_boards_dma():
    """On the ZCU104 the 128-bit stream at 187.5 MHz (3.0 GB/s) outruns the board's DMA (2.4 GB/s, a
    model): vgg_conv1, whose 64-channel output binds it, takes its DMA time, not its cycles' time,
    and the bench says so; vgg_conv2 (compute-bound) keeps its cycles'."""
    from litefly.host.bench import engine_seconds, summary_lines
    assert engine_seconds(300, 10, 4000, 8000, 100e6, 2e9) == pytest.approx(4e-6 + 1e-7)   # the DMA's 4 us
    assert engine_seconds(300, 10, 4000, 8000, 100e6, None) == pytest.approx(3.1e-6)       # measured on a board
    assert engine_seconds(900, 10, 4000, 8000, 100e6, 2e9) == pytest.approx(9.1e-6)        # the cycles'
    rep = run_bench(load_network(VGG), "golden", board_name="zcu104", batch=2, input_size=(32, 32), repeats=1)
    check_report(rep, "golden", 3, 2)
    conv1, conv2 = rep["layers"][:2]
    assert conv1["dma_paced"] and not conv2["dma_paced"]
    assert conv1["dma_time[s]"] == pytest.approx(conv1["bytes_out"] / 2.4e9)
    assert conv1["runtime[s]"] == pytest.approx(conv1["dma_time[s]"] + conv1["param_cycles"] / 187.5e6)
    line = next(x for x in summary_lines(rep) if x.startswith("paced by the DMA"))
    assert "slower than the 128-bit stream's 3.00 GB/s at 187.5 MHz" in line and "vgg_conv1 (" in line


def test_roofline_names_the_limiting_bound():
    net = load_network(VGG)
    step = plan_network(net, (3, 8, 8))[1]
    desc = EngineEnvelope.for_network(net, (8, 8)).describe(step)
    assert roofline(desc, 1, 100e6, 1e6)["bound"] == "DMA"
    fast = roofline(desc, 1, 100e6, 1e12)
    assert fast["bound"] == "compute"
    b = desc.batch_cycles()
    assert fast["compute_bound_positions_per_s"] == pytest.approx(64 * 100e6 / max(b["mac"], b["window"]))


def test_pacing_names_the_unit_that_takes_each_layers_batches():
    """The PYNQ-Z2 default engine on the VGG example (cycle model): vgg_conv1's 64-channel output
    leaves a beat a cycle on the 64-bit stream, as fast as the board's DMA takes it (768 cycles a
    batch of 96 positions each); vgg_conv2's four pooling phases are paced by its window generator;
    vgg_conv3's by its MACs. The report line names each and what would relieve it."""
    from litefly.host.bench import pacing_lines
    net = load_network(VGG, merge=True)
    env = EngineEnvelope.for_network(net, (32, 32), board="pynq-z2")
    descs = env.describe_network(plan_network(net, (3, 32, 32)))
    rfs = [roofline(d, 8, 100e6, 0.8e9) for d in descs]
    assert [rf["paced_by"] for rf in rfs] == [["unloader", "DMA"], ["window"], ["MACs"]]
    for d, rf in zip(descs, rfs):
        b = d.batch_cycles()
        assert rf["cycles_per_batch"]["MACs"] == b["mac"] * d.phases
        assert rf["cycles_per_batch"]["window"] == b["window"] * d.phases
        assert rf["cycles_per_batch"]["unloader"] == b["unload"]
    assert rfs[0]["cycles_per_batch"]["DMA"] == 768 == rfs[0]["cycles_per_batch"]["unloader"]
    # vgg_conv2's batch is four pooling phases of 96 conv positions, 64 input bytes each: 3,072 cycles at 8 B a cycle
    assert rfs[1]["cycles_per_batch"]["DMA"] == 96 * 4 * 64 // 8
    # a faster DMA leaves vgg_conv1 to the unloader alone
    assert roofline(descs[0], 8, 100e6, 2e9)["paced_by"] == ["unloader"]
    rep = {"engine": {"lanes": env.lanes}, "layers": [{"name": d.step.name, "roofline": rf} for d, rf in zip(descs, rfs)]}
    (line,) = pacing_lines(rep)
    assert line.startswith("paced by (cycle model, cycles a batch of 96 positions")
    assert "vgg_conv1 the unloader and the DMA, 768 each (window generator 291, MACs 211): the board's DMA rate" in line
    assert "vgg_conv2 the window generator, 6,924 (MACs 6,556" in line and "--window-generators" in line
    assert "vgg_conv3 the MACs, 1,947 (window generator 1,731" in line and "--multipliers" in line
    # reports written before the pacing was kept: no line
    assert pacing_lines({"engine": {"lanes": 4}, "layers": [{"name": "x", "roofline": {"bound": "DMA"}}]}) == []


def _sim_ready() -> bool:
    try:
        from litefly.host import sim_transport
        from litefly.sim.tools import have_simulator
        return hasattr(sim_transport, "run_network_sim") and have_simulator("verilator")
    except Exception:  # noqa: BLE001 - not landed or no tools
        return False


@pytest.mark.skipif(not _sim_ready(), reason="the sim backend (run_network_sim + Verilator) is not available")
def test_bench_sim_cli(tmp_path):
    rep = tmp_path / "s.json"
    r = run_cli(str(VGG), "--backend", "sim", "--input-size", "8", "8", "--report", str(rep), timeout=1800)
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    check_report(report, "sim", 3, 1)
    assert report["sources"]["engine"] == "simulated at 100 MHz"


def test_bench_no_fold_input_sends_the_input_as_it_is(tmp_path):
    """--no-fold-input: the host sends vgg_conv1's RGB input unfolded (3 bytes a pixel, nine window
    reads a lane), in more cycles than the default, which folds it."""
    reports = []
    for flag in ("--fold-input", "--no-fold-input"):
        out = tmp_path / f"{flag}.json"
        r = run_cli(str(VGG), "--backend", "golden", "--no-dense", "--repeats", "1", flag, "--report", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
        reports.append(json.loads(out.read_text()))
    folded, plain = (rep["layers"][0] for rep in reports)
    assert folded["host_fold"]["window_reads"] == 3 and plain["host_fold"] is None
    assert (folded["bytes_in"], plain["bytes_in"]) == (9 * 32 * 32, 3 * 32 * 32)
    assert plain["cycles"] > folded["cycles"]


def test_bench_out_dtype_float32(tmp_path):
    """--out-dtype float32: the runtime's output in float32, checked against the golden network's
    output dequantised the same way; the report and the host source say so."""
    rep = tmp_path / "b.json"
    r = run_cli(str(VGG), "--backend", "golden", "--input-size", "8", "8", "--batch", "2", "--repeats", "1",
                "--no-dense", "--out-dtype", "float32", "--report", str(rep))
    assert r.returncode == 0, r.stderr
    report = json.loads(rep.read_text())
    assert report["out_dtype"] == "float32" and report["sources"]["host"].endswith("dequantised to float32")
    r = run_cli(str(VGG), "--backend", "golden", "--out-dtype", "int8")
    assert r.returncode == 2 and "int8" in r.stderr and "Traceback" not in r.stderr

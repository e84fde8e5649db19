"""Board-side end to end on the golden backend: the driver, wire format, runtime and the board check
(`litefly board check`) on numpy only, and the failure modes injected into the model transport.

The golden backend (``host/golden_transport.py``) is the model transport: the real
:class:`~litefly.host.driver.EngineDriver` drives it through registers and DMA channels, as
it drives a board. Only the public API is used: ``NetworkRunner(network, params,
backend="golden").run(x)`` against the golden network output that ``tests/network_params.py``
computes while it calibrates the parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_network
from litefly.errors import LiteflyError
from litefly.host.runtime import NetworkRunner
from litefly.host.transport import DMATimeout
from litefly.hw.spec import EngineEnvelope
from network_params import calibrated_network_params

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[1]
VGG_NET = ROOT / "examples" / "vgg_net.yaml"
PC_ONLY = ("torch", "amaranth", "cocotb", "matplotlib")


def run_cli_as_on_a_board(args: list[str], cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """``litefly ARGS`` in a fresh interpreter where the PC-only packages cannot be imported
    (as on a PYNQ image); ``prelude`` runs first (e.g. a fake ``pynq``)."""
    code = ("import sys, types\n"
            f"for m in {PC_ONLY!r}: sys.modules[m] = None\n"
            + prelude +
            "from litefly.cli.main import main\n"
            f"main({args!r})\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_golden_network_runner_matches_the_golden_network():
    net = load_network(VGG_NET)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((2, net.layers[0].in_channels, 8, 8))
    params, ref = calibrated_network_params(net, x, rng)
    runner = NetworkRunner(net, params, backend="golden")
    y = runner.run(x)
    assert y.shape == ref.shape and y.shape[0] == 2
    np.testing.assert_array_equal(y, ref)
    assert len(runner.stats) == len(net.layers)
    np.testing.assert_array_equal(runner.run(x), y)          # buffers reused: same result on a second run


def test_golden_bench_cli_runs_without_pc_tools(tmp_path):
    """`litefly bench NET --backend golden` as on a board: torch, amaranth, cocotb unavailable."""
    report = tmp_path / "bench.json"
    r = run_cli_as_on_a_board(["bench", str(VGG_NET), "--backend", "golden", "--input-size", "8", "8",
                               "--report", str(report)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["backend"] == "golden" and len(data["layers"]) == 3
    assert all(row["cpu_torch[s]"] is None for row in data["layers"])     # no torch: numpy baseline only


# -- litefly board check (issue 13 item 3): the same code path as on a board, on the model ----------

def test_board_check_cli_golden_without_pc_tools(tmp_path):
    """`litefly board check NET --backend golden` as on a board (torch, amaranth, cocotb unavailable):
    identity and hash, every layer bit-exact, the counters, host stages and the CPU's own conv2d."""
    report = tmp_path / "check.json"
    r = run_cli_as_on_a_board(["board", "check", str(VGG_NET), "--backend", "golden", "--input-size", "8", "8",
                               "--batch", "2", "--repeats", "1", "--report", str(report)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "litefly board check: vgg_head" in out and "PASSED" in out and "CPU conv2d" in out
    data = json.loads(report.read_text())
    env = EngineEnvelope.for_network(load_network(VGG_NET), (8, 8), board="pynq-z2")  # its default board
    assert data["passed"] and data["network_bit_exact"] and data["backend"] == "golden"
    assert data["identity"]["CONFIG_HASH"] == f"0x{env.hash32:08x}" and data["engine"]["hash"] == data["identity"]["CONFIG_HASH"]
    assert [row["name"] for row in data["layers"]] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    for row in data["layers"]:
        assert row["bit_exact"] and row["mismatches"] == 0
        assert row["counters"]["CYCLES"] == row["cycles"] > 0 and row["busy_cycles"] > 0
        assert {"STARVED_CYCLES", "STALLED_CYCLES"} <= set(row["counters"])
        assert row["cpu_numpy[s]"] > 0 and row["engine_wait[s]"] >= 0
    tot = data["total"]
    assert tot["transfers_per_inference"] == tot["transfers"] >= 2 * 3 + 3     # params + in/out per layer
    assert set(tot["host_stage[s]"]) == {"quantize", "copy_in", "dispatch", "copy_out", "unpack"}
    assert tot["host_stage[s]"]["quantize"] > 0 and tot["cpu_numpy[s]"] > 0


def _params_x(net, size=(8, 8), seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, net.layers[0].in_channels) + size)
    params, _ = calibrated_network_params(net, x, rng)
    return params, x


def test_board_check_reports_a_wrong_layer(monkeypatch):
    """An engine that gets one layer wrong fails the check, and the report names the layer."""
    from litefly.host import golden_transport
    from litefly.host.board_check import run_board_check
    from litefly.hw import regmap
    real = golden_transport.GoldenTransport._run_pass

    def wrong(self, words, frame, skip=b""):
        out = bytearray(real(self, words, frame, skip))
        # vgg_conv1 only: 3 input channels, 9 with its kernel rows folded by the host
        if regmap.unpack("IN_C", words["IN_C"])["C"] in (3, 9):
            out[0] ^= 1
        return bytes(out)
    monkeypatch.setattr(golden_transport.GoldenTransport, "_run_pass", wrong)
    rep = run_board_check(load_network(VGG_NET), "golden", input_size=(8, 8), repeats=1)
    assert not rep["passed"]
    bad = {r["name"]: r["mismatches"] for r in rep["layers"] if not r["bit_exact"]}
    assert set(bad) == {"vgg_conv1"} and bad["vgg_conv1"] == 1


def test_dma_that_does_not_complete_is_one_line_with_status_and_counters():
    """The model engine drops its last output beat and TLAST: the wait is bounded and says why."""
    from litefly.host.board_check import run_board_check
    net = load_network(VGG_NET)
    params, x = _params_x(net)
    with pytest.raises(DMATimeout) as e:
        NetworkRunner(net, params, backend="golden", input_size=(8, 8), fault="short_output", timeout=0.2).run(x)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("output DMA receive did not complete within 0.20 s (the engine sent no TLAST): STATUS=")
    assert "CYCLES=" in msg and "STALLED_CYCLES=" in msg and "CTRL.SOFT_RESET" in msg
    with pytest.raises(DMATimeout, match=r"^output DMA receive did not complete within 0\.20 s"):
        run_board_check(net, "golden", input_size=(8, 8), repeats=1, timeout=0.2, fault="short_output")


def test_bitstream_hash_mismatch_is_one_line():
    from litefly.host.board_check import run_board_check
    net = load_network(VGG_NET)
    env = EngineEnvelope.for_network(net, (8, 8))
    params, x = _params_x(net)
    with pytest.raises(LiteflyError) as e:
        NetworkRunner(net, params, backend="golden", input_size=(8, 8), config_hash=0x0BADF00D).run(x)
    assert str(e.value) == (f"bitstream engine hash 0x0badf00d does not match engine 'vgg_head' "
                            f"(0x{env.hash32:08x}): load the bitstream built for this network")
    with pytest.raises(LiteflyError, match="^bitstream engine hash 0x0badf00d does not match"):
        run_board_check(net, "golden", input_size=(8, 8), config_hash=0x0BADF00D)


def test_board_check_pynq_without_a_registered_engine(tmp_path):
    """On a board (pynq importable) with no bitstream for the network's engine: one line, exit 2, naming
    what the registry has for the board and how to build one."""
    fake_pynq = "fake = types.ModuleType('pynq'); fake.__version__ = '3.1.2'; sys.modules['pynq'] = fake\n"
    r = run_cli_as_on_a_board(["board", "check", str(VGG_NET), "--board", "pynq-z2", "--registry", str(tmp_path)],
                              tmp_path, prelude=fake_pynq)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: no bitstream for engine 'vgg_head' (0x")
    assert "on pynq-z2" in r.stderr and "(registered for pynq-z2: none)" in r.stderr and "litefly build" in r.stderr


def test_board_info_cli_without_pc_tools(tmp_path):
    """`litefly board info NET` as on a board: each board's default envelope, and the engine (hash)
    `litefly build --board` makes for the network there, the one the runtime looks up."""
    r = run_cli_as_on_a_board(["board", "info", str(VGG_NET)], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = " ".join(r.stdout.split())
    net = load_network(VGG_NET)
    for name in ("pynq-z2", "zcu104"):
        env = EngineEnvelope.for_network(net, board=name)
        assert f"{env.words} (0x{env.hash32:08x})" in out
    assert ("multipliers 96, macs_per_dsp 2, stream_bits 64, window_generators 1, row_pairs true, row_quads true, "
            "frame_word_beats 4") in out
    assert "112 BRAM36: fits" in out and "217 BRAM36, 66 URAM: fits" in out
    r = run_cli_as_on_a_board(["board", "info", "--board", "zcu104"], tmp_path)
    assert r.returncode == 0 and "xczu7ev-ffvc1156-2-e" in r.stdout and "pynq-z2" not in r.stdout
    # --no-merge: the chains as declared, another engine (the one a --no-merge build makes)
    r = run_cli_as_on_a_board(["board", "info", str(VGG_NET), "--board", "pynq-z2", "--no-merge"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    env = EngineEnvelope.for_network(load_network(VGG_NET, merge=False), board="pynq-z2")
    assert env.hash32 != EngineEnvelope.for_network(net, board="pynq-z2").hash32
    assert f"(0x{env.hash32:08x})" in " ".join(r.stdout.split())

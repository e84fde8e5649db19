"""The PYNQ transport against a fake ``pynq`` module (injected into sys.modules; tests only):
one overlay per network, every layer run on it bit-exact, and its refusals."""

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_network
from litefly.errors import LiteflyError
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import NetworkRunner
from litefly.host.transport import DMATimeout
from litefly.hw.spec import EngineEnvelope
from network_params import calibrated_network_params

ROOT = Path(__file__).resolve().parents[1]
NETWORK = load_network(ROOT / "examples" / "vgg_net.yaml")
SIZE = (8, 8)
# a runner on a board sizes the engine as `litefly build --board` does: the board's default envelope
ENVELOPE = EngineEnvelope.for_network(NETWORK, SIZE, board="zcu104")
Z2_ENVELOPE = EngineEnvelope.for_network(NETWORK, SIZE, board="pynq-z2")


def make_fake_pynq(engine: GoldenTransport, vlnv: str) -> types.ModuleType:
    """A tiny stand-in for pynq: Overlay/ip_dict, DefaultIP binding by VLNV, allocate, AXI DMA channels."""
    pynq = types.ModuleType("pynq")
    registry: dict[str, type] = {}
    calls: list[str] = []
    overlays: list[str] = []

    class DefaultIP:
        bindto: list[str] = []

        def __init_subclass__(cls, **kw):
            super().__init_subclass__(**kw)
            for v in cls.bindto:
                registry[v] = cls

        def __init__(self, description):
            self.description = description

        def read(self, offset):
            calls.append(f"read {offset:#x}")
            return engine.read_reg(offset)

        def write(self, offset, value):
            calls.append(f"write {offset:#x}")
            engine.write_reg(offset, value)

    class Channel:
        def __init__(self, ch):
            self._ch = ch

        @property
        def idle(self):
            engine._step()
            return self._ch.idle

        def transfer(self, buf, start=0, nbytes=0):     # pynq's signature: nbytes=0 means to the end
            assert isinstance(buf, np.ndarray)
            calls.append(f"transfer {start} {nbytes}")
            self._ch.transfer(buf, start=start, nbytes=nbytes or buf.nbytes - start)

        def wait(self):   # pynq's wait has no timeout: the transport must not call it
            raise AssertionError("unbounded wait() called")

    class DMA:
        def __init__(self):
            self.sendchannel, self.recvchannel = Channel(engine.sendchannel), Channel(engine.recvchannel)

    class Overlay:
        def __init__(self, bitfile, download=True):
            overlays.append(str(bitfile))
            self.bitfile = bitfile
            self.ip_dict = {"engine_0": {"type": vlnv, "phys_addr": 0x43C00000, "addr_range": 0x1000},
                            "axi_dma_0": {"type": "xilinx.com:ip:axi_dma:7.1", "phys_addr": 0x40400000,
                                          "addr_range": 0x10000}}
            cls = registry.get(vlnv)
            self.engine_0 = cls(self.ip_dict["engine_0"]) if cls else None
            self.axi_dma_0 = DMA()

    class Buffer(np.ndarray):
        def flush(self):
            calls.append("flush")

        def invalidate(self):
            calls.append("invalidate")

        def freebuffer(self):
            pass

    pynq.DefaultIP, pynq.Overlay = DefaultIP, Overlay
    pynq.allocate = lambda shape, dtype=np.uint8: np.zeros(shape, dtype).view(Buffer)
    pynq.MMIO = None
    pynq.calls = calls
    pynq.overlays = overlays
    return pynq


def engine_vlnv_of(envelope: EngineEnvelope) -> str:
    from litefly.host.pynq_transport import engine_vlnv
    return engine_vlnv(f"{envelope.name}_bd")           # the boards flow's wrapper module


def bitfile(tmp_path: Path, name: str = ENVELOPE.name) -> Path:
    bit = tmp_path / f"{name}.bit"
    bit.write_bytes(b"")
    bit.with_suffix(".hwh").write_text("")          # PynqTransport refuses a .bit without its .hwh
    return bit


@pytest.fixture
def net_params():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + SIZE)
    params, ref = calibrated_network_params(NETWORK, x, rng)
    return params, x, ref


def test_one_overlay_runs_every_layer_bit_exact(monkeypatch, tmp_path, net_params):
    params, x, ref = net_params
    fake = make_fake_pynq(GoldenTransport(ENVELOPE), engine_vlnv_of(ENVELOPE))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    bit = bitfile(tmp_path)
    runner = NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitfile=bit, board="zcu104")
    y = runner.run(x)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(runner.run(x), ref)             # buffers and overlay reused
    runner.close()
    assert fake.overlays == [str(bit)]                             # ONE overlay for the whole network
    assert len(runner.stats) == 3 and all(s["backend"] == "pynq" and s["cycles"] > 0 for s in runner.stats)
    assert "flush" in fake.calls and "invalidate" in fake.calls    # cache maintenance happened
    assert "read 0x8" in fake.calls                                # CONFIG_HASH read via the bound DefaultIP
    # pynq's transfer(array, start=, nbytes=): passes of a layer address their slice of one buffer
    assert any(c.startswith("transfer ") for c in fake.calls)


def test_bitstream_dir_finds_the_engine_bit(monkeypatch, tmp_path, net_params):
    params, x, ref = net_params
    fake = make_fake_pynq(GoldenTransport(Z2_ENVELOPE), engine_vlnv_of(Z2_ENVELOPE))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    bitfile(tmp_path)
    with NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitstream_dir=tmp_path, board="pynq-z2") as r:
        np.testing.assert_array_equal(r.run(x), ref)
        assert r.envelope == Z2_ENVELOPE and r.envelope.lanes == 96 and r.envelope.frame_word_beats == 4
    assert fake.overlays == [str(tmp_path / f"{Z2_ENVELOPE.name}.bit")]


def test_pynq_refusals(monkeypatch, tmp_path, net_params):
    params, x, _ = net_params
    bit = bitfile(tmp_path)
    monkeypatch.setitem(sys.modules, "pynq", make_fake_pynq(GoldenTransport(ENVELOPE, config_hash=0x1234ABCD),
                                                             engine_vlnv_of(ENVELOPE)))
    with pytest.raises(LiteflyError, match=rf"^bitstream engine hash 0x1234abcd does not match engine "
                                           rf"'vgg_head' \(0x{ENVELOPE.hash32:08x}\): load the bitstream built"):
        NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitfile=bit, board="zcu104").run(x)
    monkeypatch.setitem(sys.modules, "pynq", make_fake_pynq(GoldenTransport(ENVELOPE, fault="never_start"),
                                                             engine_vlnv_of(ENVELOPE)))
    with pytest.raises(DMATimeout, match=r"^feature-map DMA send did not complete within|^output DMA receive did "
                                         r"not complete within 0\.30 s") as e:
        NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitfile=bit, board="zcu104", timeout=0.3).run(x)
    assert "STATUS=" in str(e.value) and "CYCLES=" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LiteflyError, match="no such bitstream"):
        NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitstream_dir=tmp_path / "nowhere",
                      board="zcu104").run(x)


def test_pynq_missing_says_so_in_one_line():
    code = ("import sys; sys.modules['pynq'] = None\n"
            "from litefly.cli.main import main\n"
            "main(['bench', 'examples/layers/vgg_conv1.yaml', '--backend', 'pynq', '--input-size', '8', '8'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: the pynq backend needs the 'pynq' package")


def test_host_modules_import_without_torch_or_hw_tools():
    code = ("import sys\n"
            "for m in ('torch', 'amaranth', 'cocotb', 'pynq'): sys.modules[m] = None\n"
            "import litefly.host.driver, litefly.host.runtime, litefly.host.pynq_transport, "
            "litefly.host.golden_transport, litefly.host.board_check, litefly.host.board_cli, litefly.host.accuracy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr


def test_a_stream_on_a_board_equals_single_runs(monkeypatch, tmp_path, net_params):
    """run_stream on the pynq transport: outputs equal run()'s; the slices check the DMA channel's
    `idle` (this fake's engine is done at the first look, so they run after the passes)."""
    params, x, ref = net_params
    fake = make_fake_pynq(GoldenTransport(ENVELOPE), engine_vlnv_of(ENVELOPE))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    xs = [x, x[::-1].copy(), x]
    with NetworkRunner(NETWORK, params, "pynq", input_size=SIZE, bitfile=bitfile(tmp_path), board="zcu104") as r:
        want = [np.array(r.run(b)) for b in xs]
        got = [np.array(y) for y in r.run_stream(xs)]
        assert len(r.stream_totals) == 3 and all(t["hidden[s]"] == 0.0 for t in r.stream_totals)
    np.testing.assert_array_equal(want[0], ref)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)

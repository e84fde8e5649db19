"""The PYNQ transport against a fake ``pynq`` module (injected into sys.modules; tests only)."""

import subprocess
import sys
import types

import numpy as np
import pytest

from litefly.config import load_layer
from litefly.errors import LiteflyError
from litefly.fixed import quantize_layer, random_float_weights
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import run_columns
from litefly.host.transport import DMATimeout

LAYER = load_layer("examples/layers/vgg_conv1.yaml")


def make_fake_pynq(engine: GoldenTransport, vlnv: str) -> types.ModuleType:
    """A tiny stand-in for pynq: Overlay/ip_dict, DefaultIP binding by VLNV, allocate, AXI DMA channels."""
    pynq = types.ModuleType("pynq")
    registry: dict[str, type] = {}
    calls: list[str] = []

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

        def transfer(self, buf, start=0, nbytes=0):
            assert isinstance(buf, np.ndarray) and start == 0
            self._ch.transfer(buf, nbytes or buf.nbytes)

        def wait(self):   # pynq's wait has no timeout: the transport must not call it
            raise AssertionError("unbounded wait() called")

    class DMA:
        def __init__(self):
            self.sendchannel, self.recvchannel = Channel(engine.sendchannel), Channel(engine.recvchannel)

    class Overlay:
        def __init__(self, bitfile, download=True):
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
    return pynq


@pytest.fixture
def params():
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((200, LAYER.chain_in))
    q = quantize_layer(LAYER, random_float_weights(LAYER, rng), cols, bias=rng.standard_normal(64) * 0.1)
    return q, q.quantize_input(cols)


def test_pynq_transport_runs_driver_bit_exact(monkeypatch, tmp_path, params):
    from litefly.host.pynq_transport import engine_vlnv
    q, xi = params
    fake = make_fake_pynq(GoldenTransport(LAYER), engine_vlnv(LAYER.name))
    monkeypatch.setitem(sys.modules, "pynq", fake)
    bit = tmp_path / "vgg_conv1.bit"
    bit.write_bytes(b"")
    y, stats = run_columns(LAYER, q, xi, "pynq", bitstream_dir=tmp_path)
    np.testing.assert_array_equal(y, q.forward(xi))
    assert stats["backend"] == "pynq" and stats["cycles"] > 0
    assert "flush" in fake.calls and "invalidate" in fake.calls        # cache maintenance happened
    assert any(c.startswith("read 0x8") for c in fake.calls)           # CONFIG_HASH read via DefaultIP


def test_pynq_refusals(monkeypatch, tmp_path, params):
    from litefly.host.pynq_transport import engine_vlnv
    q, xi = params
    (tmp_path / "vgg_conv1.bit").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pynq", make_fake_pynq(GoldenTransport(LAYER, config_hash=0x1234ABCD),
                                                             engine_vlnv(LAYER.name)))
    with pytest.raises(LiteflyError, match="bitstream config hash 0x1234abcd does not match layer 'vgg_conv1'"):
        run_columns(LAYER, q, xi, "pynq", bitstream_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "pynq", make_fake_pynq(GoldenTransport(LAYER, fault="never_start"),
                                                             engine_vlnv(LAYER.name)))
    with pytest.raises(DMATimeout, match=r"^DMA receive did not complete within 0\.3 s"):
        run_columns(LAYER, q, xi, "pynq", bitstream_dir=tmp_path, timeout=0.3)
    with pytest.raises(LiteflyError, match="no such bitstream"):
        run_columns(LAYER, q, xi, "pynq", bitstream_dir=tmp_path / "nowhere")


def test_pynq_missing_says_so_in_one_line():
    code = ("import sys; sys.modules['pynq'] = None\n"
            "from litefly.cli.main import main\n"
            "main(['bench', 'examples/layers/vgg_conv1.yaml', '--backend', 'pynq'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: the pynq backend needs the 'pynq' package")


def test_host_modules_import_without_torch_or_hw_tools():
    code = ("import sys\n"
            "for m in ('torch', 'amaranth', 'cocotb', 'pynq'): sys.modules[m] = None\n"
            "import litefly.host.driver, litefly.host.runtime, litefly.host.pynq_transport, "
            "litefly.host.golden_transport, litefly.host.im2col, litefly.host.tiling, litefly.host.accuracy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

"""The PYNQ transport's board-side checks and failure modes, each a one-line error naming the fix.

Faults are injected with the fake ``pynq`` of ``test_host_pynq`` (the engine model behind
registers and DMA channels); the network's one overlay is found by ``PynqTransport.for_network``
(an explicit ``.bit``, a folder, or the registry by the envelope hash). The last tests use pynq's REAL classes (``DefaultIP`` binding by
VLNV, the simple-DMA channel, ``allocate``) where they import without a board: in ``.ci/run``'s
Python 3.10 venv with pynq 3.1.2; elsewhere they skip.
"""

from __future__ import annotations

import inspect
import json
import sys

import numpy as np
import pytest

from litefly.errors import LiteflyError
from litefly.host import board_env
from litefly.host.board_env import PynqVersionError, check_pynq_version, detect_board
from litefly.host.golden_transport import GoldenTransport
from litefly.host.pynq_transport import (DMA_MAX_BYTES, CMAAllocationError, PynqTransport, _PynqChannel,
                                         engine_vlnv, preflight)
from litefly.host.runtime import NetworkRunner
from litefly.host.transport import DMATimeout
from network_params import calibrated_network_params
from litefly.hw.spec import EngineEnvelope
from test_host_pynq import NETWORK, SIZE, make_fake_pynq

pytestmark = pytest.mark.board


# the runner on a ZCU104 sizes the engine as `litefly build --board zcu104` does: the board's default envelope
ENVELOPE = EngineEnvelope.for_network(NETWORK, SIZE, board="zcu104")
NAME = ENVELOPE.name          # vgg_head: the network engine's name, and its .bit/.hwh


@pytest.fixture
def params():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3) + SIZE)
    p, _ = calibrated_network_params(NETWORK, x, rng)
    return p, x


@pytest.fixture
def bitdir(tmp_path, monkeypatch):
    """A folder with vgg_head.bit + .hwh, and a host that does not look like a board."""
    monkeypatch.delenv("BOARD", raising=False)
    monkeypatch.setattr(board_env.platform, "machine", lambda: "x86_64")
    (tmp_path / f"{NAME}.bit").write_bytes(b"\0" * 16)
    (tmp_path / f"{NAME}.hwh").write_text("<EDKSYSTEM/>")
    return tmp_path


def install_fake(monkeypatch, version="3.1.2", **engine):
    fake = make_fake_pynq(GoldenTransport(ENVELOPE, **engine), engine_vlnv(NAME))
    if version is not None:
        fake.__version__ = version
    monkeypatch.setitem(sys.modules, "pynq", fake)
    return fake


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# -- failure modes --------------------------------------------------------------------------
# The loading checks are exercised on PynqTransport.for_network / preflight directly (no engine
# run needed); the hash refusal and the DMA bound go through the runtime, as on a board.

def test_hwh_missing_beside_the_bit(monkeypatch, bitdir):
    fake = install_fake(monkeypatch)
    (bitdir / f"{NAME}.hwh").unlink()
    with pytest.raises(LiteflyError) as e:
        PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)
    msg = one_line(e)
    assert msg.startswith(f"{NAME}.hwh is missing beside {bitdir / (NAME + '.bit')}")
    assert f"copy {NAME}.hwh from the Vivado build folder" in msg
    with pytest.raises(LiteflyError, match=f"{NAME}.hwh is missing beside"):
        preflight(fake, bitdir / f"{NAME}.bit")
    assert fake.overlays == []                  # refused before any overlay load


@pytest.mark.parametrize("version,board,why", [
    ("4.0.0", "pynq-z2", "pynq 4.0.0 is not supported on pynq-z2 (PYNQ 4 removed Zynq-7000 support): it needs "
                         "pynq 3.x; flash the PYNQ v3.1 image or run `pip install \"pynq>=3.0,<4\"`"),
    ("2.7.0", "zcu104", "pynq 2.7.0 is not supported on zcu104: it needs pynq 3.x and 4.x; flash the PYNQ v3.1 "
                        "image or run `pip install \"pynq>=3.0,<5\"`"),
    ("2.7.0", None, "pynq 2.7.0 is not supported by litefly (needs pynq 3.x or 4.x)"),
])
def test_pynq_version_not_supported_on_this_board(monkeypatch, bitdir, version, board, why):
    fake = install_fake(monkeypatch, version)
    opts = {"board": board} if board else {}
    with pytest.raises(PynqVersionError) as e:
        PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir, **opts)
    assert one_line(e).startswith(why)
    assert fake.calls == []                     # refused before any overlay load or register access


def test_pynq_version_rule_finds_the_board_by_itself(monkeypatch, bitdir):
    install_fake(monkeypatch, "4.0.0")
    # the registry's build.json beside the .bit names the board
    (bitdir / "build.json").write_text(json.dumps({"board": "pynq-z2"}))
    with pytest.raises(PynqVersionError, match="not supported on pynq-z2"):
        PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)
    (bitdir / "build.json").unlink()
    # PYNQ images set $BOARD; the CPU is the last resort (armv7l: a Zynq-7000 board)
    monkeypatch.setenv("BOARD", "Pynq-Z2")
    with pytest.raises(PynqVersionError, match="not supported on pynq-z2"):
        PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)
    monkeypatch.setenv("BOARD", "ZCU104")
    tr = PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)            # pynq 4 on ZCU104 loads
    assert tr.ip_name == "engine_0" and tr.dma_name == "axi_dma_0"
    monkeypatch.delenv("BOARD")
    monkeypatch.setattr(board_env.platform, "machine", lambda: "armv7l")
    with pytest.raises(PynqVersionError, match="not supported on pynq-z2"):
        PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)


def test_board_detection_and_version_rules():
    assert detect_board(board="zcu104") == "zcu104"
    assert detect_board(environ={"BOARD": "Pynq-Z2"}, machine="x86_64") == "pynq-z2"
    assert detect_board(environ={"BOARD": "ZCU104"}, machine="armv7l") == "zcu104"
    assert detect_board(environ={}, machine="aarch64") == "zcu104"
    assert detect_board(environ={}, machine="x86_64") is None
    for v in ("3.0.1", "3.1.2"):
        check_pynq_version(v, "pynq-z2")
        check_pynq_version(v, "zcu104")
    check_pynq_version("4.0.0", "zcu104")
    check_pynq_version(None, "pynq-z2")            # unreadable version: nothing to judge
    with pytest.raises(PynqVersionError):
        check_pynq_version("4.0.0", "pynq-z2")
    with pytest.raises(PynqVersionError):
        check_pynq_version("5.0", "zcu104")


def test_cma_allocation_failure_names_size_and_fix(monkeypatch, bitdir):
    fake = install_fake(monkeypatch)

    def refuse(shape, dtype=np.uint8):      # what pynq 3.1's XRT allocator raises when CMA is exhausted
        raise RuntimeError("BO allocation failed: std::bad_alloc")
    fake.allocate = refuse
    tr = PynqTransport.for_network(ENVELOPE, bitstream_dir=bitdir)
    with pytest.raises(CMAAllocationError) as e:
        tr.allocate((4 << 20,), np.uint8)
    msg = one_line(e)
    assert msg.startswith("cannot allocate a 4.00 MiB (4194304 bytes) contiguous DMA buffer from CMA "
                          "(BO allocation failed: std::bad_alloc): shrink it with a smaller --batch")
    assert "two activation buffers" in msg and "--input-size" in msg
    fake.allocate = lambda shape, dtype=np.uint8: (_ for _ in ()).throw(MemoryError())
    with pytest.raises(CMAAllocationError, match=r"^cannot allocate a 64\.00 MiB \(67108864 bytes\)"):
        tr.allocate((16 << 20,), np.uint32)


def test_cma_failure_through_the_runtime(monkeypatch, bitdir, params):
    p, x = params
    fake = install_fake(monkeypatch)
    fake.allocate = lambda shape, dtype=np.uint8: (_ for _ in ()).throw(RuntimeError("No free CMA"))
    with pytest.raises(CMAAllocationError, match=r"^cannot allocate a .* MiB \(\d+ bytes\) contiguous DMA buffer "
                                                 r"from CMA \(No free CMA\): shrink it with a smaller --batch"):
        NetworkRunner(NETWORK, p, "pynq", input_size=SIZE, bitstream_dir=bitdir, board="zcu104").run(x)


def test_bitstream_hash_mismatch(monkeypatch, bitdir, params):
    p, x = params
    install_fake(monkeypatch, config_hash=0x0BADF00D)
    with pytest.raises(LiteflyError) as e:
        NetworkRunner(NETWORK, p, "pynq", input_size=SIZE, bitstream_dir=bitdir, board="zcu104").run(x)
    assert one_line(e).startswith(f"bitstream engine hash 0x0badf00d does not match engine {NAME!r} "
                                  f"(0x{ENVELOPE.hash32:08x})")
    assert "load the bitstream built for this network" in str(e.value)


def test_dma_that_never_completes_is_bounded(monkeypatch, bitdir, params):
    """The engine drops its last beat and TLAST: the receive is abandoned within the bound, with STATUS
    and the counters read back, instead of pynq's unbounded wait()."""
    p, x = params
    install_fake(monkeypatch, fault="short_output")
    with pytest.raises(DMATimeout) as e:
        NetworkRunner(NETWORK, p, "pynq", input_size=SIZE, bitstream_dir=bitdir, board="zcu104",
                      timeout=0.2).run(x)
    msg = one_line(e)
    assert msg.startswith("output DMA receive did not complete within 0.20 s (the engine sent no TLAST): STATUS=")
    assert "CYCLES=" in msg and "BUSY_CYCLES=" in msg and "CTRL.SOFT_RESET" in msg


def test_registry_lookup_by_envelope_hash(monkeypatch, tmp_path, params):
    """Without a .bit or a folder the transport asks the registry for the envelope hash on the board."""
    from boards_fakes import fake_generate, fake_vivado_outputs
    from litefly.bitstreams import registry
    from litefly.boards.boards import get_board
    from litefly.boards.vivado import write_build
    p, x = params
    monkeypatch.delenv("BOARD", raising=False)
    plan = write_build(NETWORK, get_board("zcu104"), tmp_path / "build", generate=fake_generate, input_size=SIZE)
    fake_vivado_outputs(plan.out_dir, NAME)
    e = registry.add(plan.out_dir, root=tmp_path / "reg")
    fake = install_fake(monkeypatch, "4.0.0")           # pynq 4 on ZCU104: fine
    with NetworkRunner(NETWORK, p, "pynq", input_size=SIZE, registry_root=tmp_path / "reg", board="zcu104") as r:
        r.run(x)
    assert fake.overlays == [str(e.bit)]
    with pytest.raises(LiteflyError, match=r"^no bitstream for engine 'vgg_head' \(0x[0-9a-f]{8}\) on pynq-z2: it "
                                           r"was built for zcu104"):
        PynqTransport.for_network(ENVELOPE, registry_root=tmp_path / "reg", board="pynq-z2")
    monkeypatch.setattr(board_env.platform, "machine", lambda: "x86_64")
    with pytest.raises(LiteflyError, match=r"^cannot tell which board this is .* pass --board"):
        PynqTransport.for_network(ENVELOPE, registry_root=tmp_path / "reg")


def test_pynq_installed_but_broken_says_which_dependency(monkeypatch, tmp_path):
    """pynq 3.1.2 with pycparser 3 fails on `from pycparser.plyparser import ...`: not 'pynq missing'."""
    from litefly.host.pynq_transport import import_pynq
    (tmp_path / "pynq").mkdir()
    (tmp_path / "pynq" / "__init__.py").write_text("from litefly_no_such_dependency.plyparser import ParseError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pynq", raising=False)
    with pytest.raises(LiteflyError) as e:
        import_pynq()
    assert one_line(e).startswith("pynq is installed but `import pynq` fails (No module named "
                                  "'litefly_no_such_dependency'): reinstall its dependencies")


# -- pynq's real classes (no board needed) --------------------------------------------------

def real_pynq():
    return pytest.importorskip("pynq", reason="pynq is not installed here; .ci/run's Python 3.10 venv "
                                              "(pynq 3.1.2, numpy 1.26) runs these")


def test_real_pynq_imports_and_its_version_is_accepted():
    pynq = real_pynq()
    from pynq import DefaultIP, Overlay, allocate  # noqa: F401
    from pynq.lib.dma import DMA
    check_pynq_version(pynq.__version__, "zcu104")
    if pynq.__version__.startswith("3."):
        check_pynq_version(pynq.__version__, "pynq-z2")
    # the overlay's DMA is found by the VLNV prefix pynq's own DMA driver binds to
    from litefly.host.pynq_transport import DMA_VLNV_PREFIX
    assert any(v.startswith(DMA_VLNV_PREFIX) for v in DMA.bindto)


def test_real_defaultip_binds_the_engine_by_vlnv():
    pynq = real_pynq()
    from pynq.overlay import _ip_drivers
    from litefly.host.pynq_transport import _bind_engine_driver, engine_vlnvs
    vlnvs = engine_vlnvs(NAME, "litefly_vgg_head")
    cls = _bind_engine_driver(pynq, vlnvs)
    assert issubclass(cls, pynq.DefaultIP) and cls.bindto == vlnvs
    assert _bind_engine_driver(pynq, vlnvs) is cls                  # bound once per VLNV set
    for v in vlnvs:
        assert _ip_drivers[v] is cls                                 # what Overlay uses to pick the driver
    assert callable(cls.read) and callable(cls.write)


class _Regs:
    """A register file standing in for the DMA's MMIO (pynq's channel class is the real one)."""

    def __init__(self):
        self.r: dict[int, int] = {}

    def read(self, off):
        return self.r.get(off, 0)

    def write(self, off, value):
        self.r[off] = value


class _Buf(np.ndarray):
    physical_address = 0x1000_0000

    def flush(self):
        pass


def test_real_simple_dma_channel_through_the_bounded_wait():
    real_pynq()
    from pynq.lib.dma import DMA_TYPE_RX, DMA_TYPE_TX, _SDMAChannel
    assert "nbytes" in inspect.signature(_SDMAChannel.transfer).parameters
    regs = _Regs()
    send = _SDMAChannel(regs, DMA_MAX_BYTES, 8, DMA_TYPE_TX, False)
    recv = _SDMAChannel(regs, DMA_MAX_BYTES, 8, DMA_TYPE_RX, False)
    assert regs.r[0x00] & 1 and regs.r[0x30] & 1                     # both channels started (DMACR.RS)
    buf = np.zeros(4096, np.uint8).view(_Buf)
    ch_s, ch_r = _PynqChannel(send, "send"), _PynqChannel(recv, "receive")
    ch_s.transfer(buf, nbytes=1000)
    assert regs.r[0x28] == 1000 and regs.r[0x18] == 0x1000_0000    # MM2S length and address
    ch_r.transfer(buf)
    assert regs.r[0x30 + 0x28] == 4096
    regs.r[0x04] = 0x2                                               # MM2S idle
    ch_s.wait(timeout=0.5)
    with pytest.raises(DMATimeout, match=r"^DMA receive did not complete within 0\.1 s"):
        ch_r.wait(timeout=0.1)                                       # S2MM never idle: bounded, not pynq's wait()
    regs.r[0x34] = 0x10                                              # S2MM DMAIntErr
    with pytest.raises(LiteflyError, match=r"^DMA receive reported an error \(DMASR=0x00000010\)"):
        ch_r.wait(timeout=0.5)
    # start/nbytes map to pynq's own keywords: the MM2S address is the buffer's plus the offset
    regs.r[0x04] = 0x2
    ch_s.transfer(buf, start=512, nbytes=256)
    assert regs.r[0x28] == 256 and regs.r[0x18] == 0x1000_0000 + 512
    with pytest.raises(LiteflyError, match=r"^DMA send of 4096 bytes at offset 512 does not fit"):
        ch_s.transfer(buf, start=512, nbytes=4096)
    # the 26-bit length register: pynq refuses a longer transfer, the runtime never asks for one
    big = np.zeros(1, np.uint8).view(_Buf)
    regs.r[0x04] = 0x2
    with pytest.raises(ValueError, match="exceeds"):
        send.transfer(big, nbytes=DMA_MAX_BYTES + 1)


def test_real_allocate_without_a_board():
    pynq = real_pynq()
    try:
        buf = pynq.allocate((64,), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - pynq raises RuntimeError('No Devices Found') without XRT/a board
        tr = PynqTransport.__new__(PynqTransport)
        tr.pynq = pynq
        with pytest.raises(CMAAllocationError, match=r"^cannot allocate a 0\.00 MiB \(64 bytes\)"):
            tr.allocate((64,), np.uint8)
        pytest.skip(f"pynq.allocate needs a device (no XRT/board here: {type(exc).__name__}: {exc}); "
                    f"checked only that the transport reports its failure in one line")
    assert buf.nbytes == 64 and hasattr(buf, "physical_address")
    buf.freebuffer()

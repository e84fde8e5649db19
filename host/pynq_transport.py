"""The board transport: a PYNQ overlay's engine registers and AXI DMA (pynq 3.x and 4.x).

One overlay per network: :meth:`PynqTransport.for_network` finds the bitstream of the
network's engine (an explicit ``bitfile``, a registry folder, or the bitstream registry
looked up by the envelope hash and the board), checks it before loading (:func:`preflight`:
the ``.hwh`` beside the ``.bit`` and a pynq this board runs, ``host/board_env.py``), binds
the engine driver and loads the overlay once; every layer then runs on it.

``pynq`` is imported inside functions only, so this module imports on a PC. The engine
sits in the block design as the RTL module reference cell ``engine_0`` (VLNV
``xilinx.com:module_ref:<module>[_bd]:1.0``); a :class:`pynq.DefaultIP` subclass bound to it
gives register access (``read``/``write``), with :class:`pynq.MMIO` at the address from the
overlay's ``ip_dict`` as a fallback. The DMA is the overlay's ``axi_dma`` instance. Its
channels' ``transfer(buf, start, nbytes)`` map to pynq's; ``wait(timeout)`` polls ``idle``
(and the DMA status register's error bits) against a deadline instead of pynq's unbounded
``wait()``, and raises :class:`~litefly.host.transport.DMATimeout`. A contiguous (CMA)
buffer that pynq cannot allocate is reported with its size and how to shrink it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from litefly.errors import ConfigError, LiteflyError
from litefly.hw.spec import DMA_LENGTH_BITS, DMA_MAX_BYTES
from litefly.hw.spec import EngineEnvelope
from litefly.safeio import read_json

from .board_env import check_pynq_version, detect_board
from .transport import DMATimeout

__all__ = ["PynqTransport", "CMAAllocationError", "import_pynq", "preflight", "engine_vlnv", "engine_vlnvs",
           "ENGINE_CELL", "DMA_LENGTH_BITS", "DMA_MAX_BYTES", "find_bitstream"]



class CMAAllocationError(LiteflyError):
    """pynq could not allocate a physically contiguous (CMA) DMA buffer."""

DMA_VLNV_PREFIX = "xilinx.com:ip:axi_dma:"


def import_pynq():
    """Import ``pynq`` or say in one line that it is missing."""
    try:
        import pynq
    except ImportError as exc:
        if exc.name not in (None, "pynq"):      # pynq is there but one of its own imports is not
            raise LiteflyError(f"pynq is installed but `import pynq` fails ({exc}): reinstall its dependencies "
                               f"with `pip install \"litefly[board]\"` (it pins pycparser<3, which pynq 3.1 "
                               f"needs)") from None
        raise LiteflyError("the pynq backend needs the 'pynq' package, which is only available on a PYNQ board "
                           "(PYNQ-Z2: pynq 3.x, ZCU104: pynq 3.x/4.x); use --backend sim or golden on a PC") from None
    return pynq


def preflight(pynq, bitfile: str | Path, board: str | None = None) -> None:
    """Checks before ``pynq.Overlay(bitfile)``, each a one-line error naming the fix: the ``.hwh``
    beside the ``.bit``, and a pynq version this board runs (``board`` or detected)."""
    path = Path(bitfile)
    hwh = path.with_suffix(".hwh")
    if not hwh.exists():
        raise LiteflyError(f"{hwh.name} is missing beside {path}: PYNQ needs the hardware handoff of the same "
                           f"name; copy {hwh.name} from the Vivado build folder (build.tcl writes both) or the "
                           f"whole registry folder (`litefly bitstreams add` keeps both)")
    check_pynq_version(getattr(pynq, "__version__", None), detect_board(path, board))


ENGINE_CELL = "engine_0"      # the engine's cell name in the boards flow's block design (boards/vivado.py)


def engine_vlnv(module: str) -> str:
    return f"xilinx.com:module_ref:{module}:1.0"


def engine_vlnvs(engine_name: str, module: str | None = None) -> list[str]:
    """VLNVs the engine's module reference may have: the engine (network) name or the generated
    module, bare or with ``_bd`` (the boards flow's wrapper)."""
    names = [engine_name, f"{engine_name}_bd"]
    if module and module != engine_name:
        names += [module, f"{module}_bd"]
    return [engine_vlnv(n) for n in names]


_BOUND: dict[tuple[int, str], type] = {}


def _bind_engine_driver(pynq, vlnvs: list[str]) -> type:
    """A ``DefaultIP`` subclass bound to the engine's VLNVs (registered before the overlay loads).

    Any ``DefaultIP`` has ``read``/``write``, so register access works even if the binding misses.
    """
    key = (id(pynq.DefaultIP), tuple(vlnvs))
    if key not in _BOUND:
        _BOUND[key] = type("LiteflyEngineIP", (pynq.DefaultIP,), {
            "bindto": list(vlnvs),
            "__doc__": "litefly engine registers (see litefly.hw.regmap).",
        })
    return _BOUND[key]


class _PynqChannel:
    """One AXI DMA channel: pynq's ``transfer(array, start=, nbytes=)`` and a bounded wait."""

    def __init__(self, channel: Any, direction: str) -> None:
        self._ch, self._dir = channel, direction

    @property
    def idle(self) -> bool:
        return bool(self._ch.idle)

    def transfer(self, buf: np.ndarray, start: int = 0, nbytes: int | None = None) -> None:
        start = int(start)
        n = buf.nbytes - start if nbytes is None else int(nbytes)
        if n <= 0 or n > DMA_MAX_BYTES or start < 0 or start + n > buf.nbytes:
            raise LiteflyError(f"DMA {self._dir} of {n} bytes at offset {start} does not fit the "
                               f"{buf.nbytes}-byte buffer and the {DMA_LENGTH_BITS}-bit length register "
                               f"(1..{DMA_MAX_BYTES} bytes)")
        if start == 0 and n == buf.nbytes:
            self._ch.transfer(buf)
        else:
            self._ch.transfer(buf, start=start, nbytes=n)

    def wait(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ch.idle:
            if getattr(self._ch, "error", False):
                raise LiteflyError(f"DMA {self._dir} reported an error (DMASR=0x{self._status():08x}): reset the "
                                   f"overlay (load it again) and check the bitstream matches the network")
            if time.monotonic() > deadline:
                what = "DMA send" if self._dir == "send" else "DMA receive"
                raise DMATimeout(f"{what} did not complete within {timeout:.1f} s (DMASR=0x{self._status():08x}): "
                                 f"the engine sent no TLAST (is the bitstream built for this network and the "
                                 f"engine started?)")

    def _status(self) -> int:
        """The channel's DMASR (status register), 0 if unreadable."""
        try:
            return int(self._ch._mmio.read(self._ch._offset + 4))
        except Exception:  # noqa: BLE001 - diagnostic only
            return 0


def find_bitstream(envelope: EngineEnvelope, bitfile: str | Path | None = None,
                   bitstream_dir: str | Path | None = None, registry_root: str | Path | None = None,
                   board: str | None = None) -> Path:
    """The ``.bit`` of ``envelope``'s engine: ``bitfile``; else ``<bitstream_dir>/<name>.bit`` (a
    registry folder or a Vivado build folder); else the registry's entry for the envelope hash on
    ``board`` (given, or detected: ``$BOARD``, the CPU). One-line errors name the fix."""
    if bitfile is not None:
        path = Path(bitfile)
        if not path.is_file():
            raise LiteflyError(f"{path}: no such bitstream file (engine {envelope.name!r})")
        return path
    if bitstream_dir is not None:
        d = Path(bitstream_dir)
        path = d / f"{envelope.name}.bit"
        if not path.is_file():
            bits = sorted(d.glob("*.bit")) if d.is_dir() else []
            if len(bits) != 1:
                raise LiteflyError(f"{d}: no such bitstream {path.name} for engine {envelope.name!r} "
                                   f"({len(bits)} .bit files there); pass bitfile=")
            path = bits[0]
        return path
    from litefly.bitstreams import registry  # noqa: PLC0415
    name = detect_board(None, board)
    if name is None:
        raise LiteflyError(f"cannot tell which board this is to find engine {envelope.name!r} "
                           f"(0x{envelope.hash32:08x}) in the bitstream registry: pass --board pynq-z2|zcu104 "
                           f"(or set $BOARD)")
    entry = registry.lookup(envelope, name, root=Path(registry_root) if registry_root else None)
    return entry.bit


class PynqTransport:
    """Engine registers and DMA of a loaded PYNQ overlay."""

    name = "pynq"
    bitfile: Path | None = None

    def __init__(self, overlay: Any, ip_name: str | None = None, dma_name: str | None = None,
                 engine_name: str | None = None, module: str | None = None) -> None:
        self.pynq = import_pynq()
        self.overlay = overlay
        ips = dict(overlay.ip_dict)
        if ip_name is None and ENGINE_CELL in ips:
            ip_name = ENGINE_CELL
        if ip_name is None:
            want = set(engine_vlnvs(engine_name, module)) if engine_name else set()
            found = [n for n, d in ips.items() if d.get("type") in want]
            if not found:
                found = [n for n, d in ips.items() if str(d.get("type", "")).startswith("xilinx.com:module_ref:")]
            if len(found) != 1:
                raise LiteflyError(f"cannot find the litefly engine in the overlay (IPs: {', '.join(sorted(ips))}); "
                                   f"pass ip_name=")
            ip_name = found[0]
        if dma_name is None:
            dmas = [n for n, d in ips.items() if str(d.get("type", "")).startswith(DMA_VLNV_PREFIX)]
            if len(dmas) != 1:
                raise LiteflyError(f"expected one AXI DMA in the overlay, found {len(dmas)}; pass dma_name=")
            dma_name = dmas[0]
        if ip_name not in ips or dma_name not in ips:
            missing = ip_name if ip_name not in ips else dma_name
            raise LiteflyError(f"overlay has no IP named {missing!r} (IPs: {', '.join(sorted(ips))})")
        self.ip_name, self.dma_name = ip_name, dma_name
        ip = getattr(overlay, ip_name, None)
        if ip is None or not hasattr(ip, "read"):
            d = ips[ip_name]
            ip = self.pynq.MMIO(d["phys_addr"], d["addr_range"])
        self._ip = ip
        dma = getattr(overlay, dma_name)
        self.sendchannel = _PynqChannel(dma.sendchannel, "send")
        self.recvchannel = _PynqChannel(dma.recvchannel, "receive")

    @classmethod
    def for_network(cls, envelope: EngineEnvelope, bitfile: str | Path | None = None,
                    bitstream_dir: str | Path | None = None, registry_root: str | Path | None = None,
                    board: str | None = None, download: bool = True, ip_name: str | None = None,
                    dma_name: str | None = None, **_ignored: Any) -> "PynqTransport":
        """Load the ONE overlay of ``envelope``'s network engine and open it.

        The bitstream is ``bitfile``, ``<bitstream_dir>/<name>.bit`` or the registry's entry for the
        envelope hash on ``board`` (:func:`find_bitstream`); :func:`preflight` checks the ``.hwh``
        and the pynq version (``board``, else the ``build.json`` beside the ``.bit``, ``$BOARD``
        or the CPU) before anything is loaded. The driver checks the engine's identity and hash
        (``EngineDriver.check_identity``) before the first layer runs."""
        pynq = import_pynq()
        path = find_bitstream(envelope, bitfile, bitstream_dir, registry_root, board)
        preflight(pynq, path, board)
        module = None
        manifest = path.with_name("manifest.json")
        if manifest.is_file():
            try:
                data = read_json(manifest, "manifest.json")      # size/depth-checked (litefly.safeio)
                module = data.get("module") if isinstance(data.get("module"), str) else None
            except (ConfigError, OSError, ValueError, AttributeError):
                module = None
        _bind_engine_driver(pynq, engine_vlnvs(envelope.name, module))
        overlay = pynq.Overlay(str(path), download=download)
        tr = cls(overlay, ip_name=ip_name, dma_name=dma_name, engine_name=envelope.name, module=module)
        tr.bitfile = path
        return tr

    def read_reg(self, offset: int) -> int:
        return int(self._ip.read(offset))

    def write_reg(self, offset: int, value: int) -> None:
        self._ip.write(offset, int(value) & 0xFFFFFFFF)

    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        try:
            return self.pynq.allocate(shape=shape, dtype=dtype)
        except (RuntimeError, MemoryError, OSError, ValueError) as exc:
            nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise CMAAllocationError(
                f"cannot allocate a {nbytes / 2**20:.2f} MiB ({nbytes} bytes) contiguous DMA buffer from CMA "
                f"({why}): shrink it with a smaller --batch (the runtime holds two activation buffers of the "
                f"network's largest tensor at the batch size, plus each layer's parameters), a smaller "
                f"--input-size, or free CMA (other overlays' buffers, a reboot; `grep -i cma /proc/meminfo`)") \
                from None

    def close(self) -> None:
        pass

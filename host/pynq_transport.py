"""The board transport: a PYNQ overlay's engine registers and AXI DMA (pynq 3.x and 4.x).

``pynq`` is imported inside functions only, so this module imports on a PC. The engine
sits in the block design as the RTL module reference cell ``engine_0`` (VLNV
``xilinx.com:module_ref:<module>[_bd]:1.0``); a :class:`pynq.DefaultIP` subclass bound to it
gives register access (``read``/``write``), with :class:`pynq.MMIO` at the address from the
overlay's ``ip_dict`` as a fallback. The DMA is the overlay's ``axi_dma`` instance.
DMA waits poll ``channel.idle`` with a timeout instead of pynq's unbounded ``wait()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import LiteflyError

from .transport import DMATimeout

__all__ = ["PynqTransport", "import_pynq", "engine_vlnv", "engine_vlnvs", "ENGINE_CELL"]

DMA_VLNV_PREFIX = "xilinx.com:ip:axi_dma:"


def import_pynq():
    """Import ``pynq`` or say in one line that it is missing."""
    try:
        import pynq
    except ImportError:
        raise LiteflyError("the pynq backend needs the 'pynq' package, which is only available on a PYNQ board "
                           "(PYNQ-Z2: pynq 3.x, ZCU104: pynq 3.x/4.x); use --backend sim on a PC") from None
    return pynq


ENGINE_CELL = "engine_0"      # the engine's cell name in the boards flow's block design (boards/vivado.py)


def engine_vlnv(module: str) -> str:
    return f"xilinx.com:module_ref:{module}:1.0"


def engine_vlnvs(layer_name: str, module: str | None = None) -> list[str]:
    """VLNVs the engine's module reference may have: the layer or engine module, bare or with ``_bd``."""
    names = [layer_name, f"{layer_name}_bd"] + ([module, f"{module}_bd"] if module else [])
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
    """One AXI DMA channel with a bounded wait."""

    def __init__(self, channel: Any, direction: str) -> None:
        self._ch, self._dir = channel, direction

    @property
    def idle(self) -> bool:
        return bool(self._ch.idle)

    def transfer(self, buf: np.ndarray, nbytes: int | None = None) -> None:
        if nbytes is None or nbytes == buf.nbytes:
            self._ch.transfer(buf)
        else:
            self._ch.transfer(buf, nbytes=int(nbytes))

    def wait(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ch.idle:
            if getattr(self._ch, "error", False):
                raise LiteflyError(f"DMA {self._dir} reported an error (DMASR=0x{self._status():08x})")
            if time.monotonic() > deadline:
                what = "DMA send" if self._dir == "send" else "DMA receive"
                raise DMATimeout(f"{what} did not complete within {timeout:.1f} s: the engine sent no TLAST "
                                 f"(is the bitstream built for this layer and the engine started?)")

    def _status(self) -> int:
        try:
            return int(self._ch._mmio.read(self._ch._offset + 4))
        except Exception:  # noqa: BLE001 - diagnostic only
            return 0


class PynqTransport:
    """Engine registers and DMA of a loaded PYNQ overlay."""

    name = "pynq"

    def __init__(self, overlay: Any, ip_name: str | None = None, dma_name: str | None = None,
                 layer_name: str | None = None) -> None:
        self.pynq = import_pynq()
        self.overlay = overlay
        ips = dict(overlay.ip_dict)
        if ip_name is None and ENGINE_CELL in ips:
            ip_name = ENGINE_CELL
        if ip_name is None:
            want = set(engine_vlnvs(layer_name)) if layer_name else set()
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
    def for_layer(cls, layer: LayerConfig, bitfile: str | Path | None = None,
                  bitfiles: dict[str, str] | None = None, bitstream_dir: str | Path | None = None,
                  ip_name: str | None = None, dma_name: str | None = None, download: bool = True,
                  **_ignored: Any) -> "PynqTransport":
        """Load the overlay built for ``layer`` (``bitfile``, ``bitfiles[layer.name]`` or
        ``<bitstream_dir>/<layer.name>.bit``) and open its engine."""
        pynq = import_pynq()
        path = bitfile or (bitfiles or {}).get(layer.name)
        if path is None and bitstream_dir is not None:
            path = Path(bitstream_dir) / f"{layer.name}.bit"
        if path is None:
            raise LiteflyError(f"no bitstream given for layer {layer.name!r}: pass bitfile=, bitfiles= or "
                               f"bitstream_dir= (with {layer.name}.bit and its .hwh)")
        if not Path(path).exists():
            raise LiteflyError(f"{path}: no such bitstream file (layer {layer.name!r})")
        module = None
        manifest = Path(path).with_name("manifest.json")
        if manifest.exists():
            import json
            module = json.loads(manifest.read_text()).get("module")
        _bind_engine_driver(pynq, engine_vlnvs(layer.name, module))
        overlay = pynq.Overlay(str(path), download=download)
        return cls(overlay, ip_name=ip_name, dma_name=dma_name, layer_name=layer.name)

    def read_reg(self, offset: int) -> int:
        return int(self._ip.read(offset))

    def write_reg(self, offset: int, value: int) -> None:
        self._ip.write(offset, int(value) & 0xFFFFFFFF)

    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        return self.pynq.allocate(shape=shape, dtype=dtype)

    def close(self) -> None:
        pass

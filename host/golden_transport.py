"""A pure-numpy transport that models the engine at the register and stream level.

It implements the protocol of :mod:`litefly.hw.regmap` / :mod:`litefly.hw.wireformat`
with :mod:`litefly.fixed` doing the arithmetic, so the driver runs unchanged against it:
fast tests, and a reference for the simulated and board backends. Cycle counters follow
the engine's issue model (``issue_cycles_per_batch`` per batch), labelled "model".

Faults (for refusal tests): ``fault="never_start"`` ignores ``CTRL.START`` so the receive
DMA never completes; ``config_hash=`` / ``lanes=`` / ``version=`` impersonate another bitstream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import LiteflyError
from litefly.fixed import QuantizedLayer
from litefly.hw import regmap
from litefly.hw.spec import EngineSpec
from litefly.hw.wireformat import pack_elements, unpack_elements, unpack_params

from .transport import host_buffer, poll_until

__all__ = ["GoldenTransport"]

_R = regmap.REG


class _Channel:
    def __init__(self, owner: "GoldenTransport", direction: str) -> None:
        self._owner, self._dir = owner, direction
        self._buf: np.ndarray | None = None
        self._nbytes = 0
        self.idle = True
        self.transferred = 0

    def transfer(self, buf: np.ndarray, nbytes: int | None = None) -> None:
        if not self.idle:
            raise LiteflyError(f"DMA {self._dir} channel is busy: wait for the previous transfer first")
        nbytes = buf.nbytes if nbytes is None else int(nbytes)
        if nbytes <= 0 or nbytes >= 1 << 26:
            raise LiteflyError(f"DMA {self._dir} length {nbytes} bytes is outside 1..{(1 << 26) - 1} (26-bit register)")
        self._buf, self._nbytes, self.idle = buf, nbytes, False
        self._owner._step()

    def wait(self, timeout: float = 2.0) -> None:
        what = "DMA send" if self._dir == "send" else "DMA receive"
        poll_until(lambda: self._owner._step() or self.idle, timeout, what, interval=0.001)


class GoldenTransport:
    """The engine as a numpy model behind the transport interface."""

    name = "golden"

    def __init__(self, layer: LayerConfig, fault: str | None = None, config_hash: int | None = None,
                 lanes: int | None = None, version: tuple[int, int] | None = None) -> None:
        if fault not in (None, "never_start"):
            raise LiteflyError(f"golden transport: fault={fault!r} is not known, expected 'never_start' or None")
        self.layer, self.spec, self.fault = layer, EngineSpec(layer), fault
        ver = version or regmap.VERSION
        self._ro = {
            _R["ID"]: regmap.ID_MAGIC,
            _R["VERSION"]: (ver[0] << 16) | ver[1],
            _R["CONFIG_HASH"]: layer.hash32 if config_hash is None else config_hash,
            _R["LANES"]: self.spec.lanes if lanes is None else lanes,
            _R["INFO"]: self.spec.info_word,
        }
        self._shifts = [0] * self.spec.num_factors
        self._tile_batches = 1
        self._counters = dict.fromkeys(("CYCLES", "BUSY_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES",
                                        "COLUMNS_DONE"), 0)
        self._params: QuantizedLayer | None = None
        self._loading = self._busy = self._done = False
        self._in = bytearray()          # bytes sent to s_axis, not yet consumed
        self._out: list[bytes] = []     # packets (one per tile, TLAST at the end) waiting for S2MM
        self.sendchannel = _Channel(self, "send")
        self.recvchannel = _Channel(self, "receive")

    # -- registers -------------------------------------------------------------------
    def read_reg(self, offset: int) -> int:
        if offset in self._ro:
            return self._ro[offset]
        if offset == _R["STATUS"]:
            return ((regmap.STATUS_BUSY if self._busy else 0) | (regmap.STATUS_DONE if self._done else 0)
                    | (regmap.STATUS_LOADING if self._loading else 0)
                    | (regmap.STATUS_PARAMS_VALID if self._params is not None else 0))
        if offset == _R["TILE_BATCHES"]:
            return self._tile_batches
        for name, value in self._counters.items():
            if offset == _R[name]:
                return value & 0xFFFFFFFF
        idx = (offset - regmap.SHIFT_BASE) // 4
        if offset >= regmap.SHIFT_BASE and idx < len(self._shifts) and offset % 4 == 0:
            return self._shifts[idx]
        return 0

    def write_reg(self, offset: int, value: int) -> None:
        value = int(value) & 0xFFFFFFFF
        if offset == _R["CTRL"]:
            if value & regmap.CTRL_SOFT_RESET:
                self._busy = self._loading = self._done = False
                self._in.clear()
                self._out.clear()
                self._counters = dict.fromkeys(self._counters, 0)
            if value & regmap.CTRL_CLEAR_COUNTERS:
                self._counters = dict.fromkeys(self._counters, 0)
            if value & regmap.CTRL_LOAD_PARAMS:
                self._loading = True
            if value & regmap.CTRL_START and self.fault != "never_start":
                self._busy, self._done = True, False
        elif offset == _R["TILE_BATCHES"]:
            self._tile_batches = value
        elif regmap.SHIFT_BASE <= offset < regmap.SHIFT_BASE + 4 * len(self._shifts) and offset % 4 == 0:
            self._shifts[(offset - regmap.SHIFT_BASE) // 4] = value
        self._step()

    # -- buffers ---------------------------------------------------------------------
    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        return host_buffer(shape, dtype)

    def close(self) -> None:
        pass

    # -- the engine --------------------------------------------------------------------
    def _step(self) -> bool:
        """Advance the model as far as the data present allows. Returns False (for polling)."""
        spec, sb = self.spec, self.spec.stream_bits // 8
        snd = self.sendchannel
        if not snd.idle:                       # MM2S pushes its whole buffer into the engine's input
            self._in += np.asarray(snd._buf).reshape(-1).view(np.uint8)[:snd._nbytes].tobytes()
            snd.idle, snd.transferred = True, snd.transferred + snd._nbytes
        if self._loading and len(self._in) >= spec.param_beats * sb:
            self._load_params(bytes(self._in[:spec.param_beats * sb]))
            del self._in[:spec.param_beats * sb]
            self._loading = False
        if self._busy and self._params is not None:
            n = self._tile_batches
            need = n * spec.beats_in_per_batch * sb
            if len(self._in) >= need:
                beats = np.frombuffer(bytes(self._in[:need]), dtype=np.uint8).reshape(-1, sb)
                del self._in[:need]
                x = unpack_batches_in(spec, beats, n)
                params = QuantizedLayer(self.layer, self._params.weights, list(self._shifts), self._params.bias)
                y = params.forward(x)
                self._out.append(pack_batches_out(spec, y))
                self._counters["CYCLES"] += n * spec.issue_cycles_per_batch
                self._counters["BUSY_CYCLES"] += n * spec.issue_cycles_per_batch
                self._counters["COLUMNS_DONE"] += n * spec.lanes
                self._busy, self._done = False, True
        rcv = self.recvchannel
        if not rcv.idle and self._out:
            packet = self._out.pop(0)
            if len(packet) > rcv._nbytes:
                raise LiteflyError(f"DMA receive buffer of {rcv._nbytes} bytes is smaller than the "
                                   f"{len(packet)}-byte tile")
            np.asarray(rcv._buf).reshape(-1).view(np.uint8)[:len(packet)] = np.frombuffer(packet, np.uint8)
            rcv.idle, rcv.transferred = True, rcv.transferred + len(packet)
        return False

    def _load_params(self, data: bytes) -> None:
        spec = self.spec
        beats = np.frombuffer(data, dtype=np.uint8).reshape(-1, spec.stream_bits // 8)
        weights, bias = unpack_params(spec, beats[:spec.param_beats])
        self._params = QuantizedLayer(self.layer, weights, [0] * spec.num_factors, bias)


def unpack_batches_in(spec: EngineSpec, beats: np.ndarray, batches: int) -> np.ndarray:
    """Input beats of ``batches`` batches back to columns ``(batches*lanes, q_1)`` (the engine's view)."""
    n = batches * spec.lanes * spec.in_elems
    vals = unpack_elements(beats, spec.act_bits, spec.elems_per_beat, n)
    return vals.reshape(batches, spec.in_elems, spec.lanes).transpose(0, 2, 1).reshape(-1, spec.in_elems)


def pack_batches_out(spec: EngineSpec, y: np.ndarray) -> bytes:
    """Output columns to m_axis bytes (element-major per batch, as :func:`unpack_batches` reads them)."""
    b = y.shape[0] // spec.lanes
    order = y.reshape(b, spec.lanes, spec.out_elems).transpose(0, 2, 1)
    return pack_elements(order, spec.act_bits, spec.elems_per_beat, spec.stream_bits).tobytes()


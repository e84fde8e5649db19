"""The engine driver: identity check, parameter load and double-buffered tiled execution.

One driver, any transport (:mod:`litefly.host.transport`): the same code runs on a PYNQ
board, against the cocotb/Verilator engine and against the numpy golden model. Per-stage
host timings (pack, copy in, execute/wait, copy out, unpack) are kept as FINN's
``driver_base`` does. Board-safe: numpy only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import LiteflyError, ShapeError
from litefly.fixed import QuantizedLayer, int_range
from litefly.hw import regmap
from litefly.hw.spec import EngineSpec
from litefly.hw.wireformat import pack_batches, pack_params, unpack_batches

from .tiling import DEFAULT_BUFFER_BYTES, TilePlan, align_up, plan_tiles

__all__ = ["EngineDriver", "layer_from", "STAGES", "COUNTERS"]

STAGES = ("pack", "copy_in", "execute", "copy_out", "unpack")
COUNTERS = ("CYCLES", "BUSY_CYCLES", "STARVED_CYCLES", "STALLED_CYCLES", "COLUMNS_DONE")
_R = regmap.REG


def layer_from(layer_or_manifest: LayerConfig | Mapping[str, Any] | str | Path) -> LayerConfig:
    """A :class:`LayerConfig` from itself, a manifest dict, or a ``manifest.json`` path."""
    if isinstance(layer_or_manifest, LayerConfig):
        return layer_or_manifest
    data = layer_or_manifest
    if isinstance(data, (str, Path)):
        p = Path(data)
        if not p.exists():
            raise LiteflyError(f"{p}: no such manifest file")
        data = json.loads(p.read_text())
    if not isinstance(data, Mapping) or "layer" not in data:
        raise LiteflyError("expected a LayerConfig, a manifest dict or a manifest.json path (with a 'layer' entry)")
    return LayerConfig.from_dict(data["layer"])


class EngineDriver:
    """Drive one engine through a transport.

    ``timeout`` (seconds) bounds every DMA wait; ``buffer_bytes`` is the per-buffer budget
    of the tile plan (two input and two output buffers are allocated).
    """

    def __init__(self, transport: Any, layer_or_manifest: LayerConfig | Mapping[str, Any] | str | Path,
                 timeout: float = 2.0, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.transport = transport
        self.layer = layer_from(layer_or_manifest)
        self.spec = EngineSpec(self.layer)
        self.timeout = float(timeout)
        self.buffer_bytes = int(buffer_bytes)
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.bytes_in = self.bytes_out = self.param_bytes = 0
        self.tiles_run = 0
        self.cycles = 0                    # 64-bit accumulation of the 32-bit CYCLES counter
        self._bufs: dict[tuple[str, int], list[np.ndarray]] = {}
        self._params_loaded: QuantizedLayer | None = None

    # -- registers -----------------------------------------------------------------------
    def read(self, name: str) -> int:
        return int(self.transport.read_reg(self._offset(name)))

    def write(self, name: str, value: int) -> None:
        self.transport.write_reg(self._offset(name), int(value))

    def _offset(self, name: str) -> int:
        if name.startswith("SHIFT"):
            return regmap.SHIFT_BASE + 4 * int(name[5:])
        return _R[name]

    def check_identity(self) -> dict[str, int]:
        """Refuse (one line) a bitstream that is not this layer's engine; return the identity registers."""
        ident = {n: self.read(n) for n in ("ID", "VERSION", "CONFIG_HASH", "LANES")}
        name = self.layer.name
        if ident["ID"] != regmap.ID_MAGIC:
            raise LiteflyError(f"no litefly engine found: ID register reads 0x{ident['ID']:08x}, expected "
                               f"0x{regmap.ID_MAGIC:08x} ('LFLY'): is the right overlay loaded?")
        major = ident["VERSION"] >> 16
        if major != regmap.VERSION[0]:
            raise LiteflyError(f"bitstream interface version {major}.{ident['VERSION'] & 0xFFFF} is not supported "
                               f"by this litefly (needs {regmap.VERSION[0]}.x): rebuild the bitstream")
        if ident["CONFIG_HASH"] != self.layer.hash32:
            raise LiteflyError(f"bitstream config hash 0x{ident['CONFIG_HASH']:08x} does not match layer {name!r} "
                               f"(0x{self.layer.hash32:08x}): load the bitstream built for this config")
        if ident["LANES"] != self.spec.lanes:
            raise LiteflyError(f"bitstream has {ident['LANES']} lanes, layer {name!r} expects {self.spec.lanes}: "
                               f"load the bitstream built for this config")
        return ident

    # -- buffers -------------------------------------------------------------------------
    def _buffers(self, kind: str, nbytes: int) -> list[np.ndarray]:
        key = (kind, align_up(nbytes))
        if key not in self._bufs:
            for k in [k for k in self._bufs if k[0] == kind]:   # one pair per direction
                for b in self._bufs.pop(k):
                    getattr(b, "freebuffer", lambda: None)()
            self._bufs[key] = [self.transport.allocate((key[1],), np.uint8) for _ in range(2)]
        return self._bufs[key]

    # -- parameters ----------------------------------------------------------------------
    def load_params(self, qlayer: QuantizedLayer) -> None:
        """Write the shifts and stream the weights (and biases) into the engine."""
        if qlayer.layer.config_hash != self.layer.config_hash:
            raise LiteflyError(f"parameters are for layer {qlayer.layer.name!r} "
                               f"(0x{qlayer.layer.hash32:08x}), the engine is {self.layer.name!r} "
                               f"(0x{self.layer.hash32:08x})")
        for i, s in enumerate(qlayer.shifts):
            self.write(f"SHIFT{i}", s)
        beats = pack_params(self.spec, qlayer.weights, qlayer.bias)
        nbytes = beats.nbytes
        buf = self.transport.allocate((align_up(nbytes),), np.uint8)
        buf[:nbytes] = beats.reshape(-1)
        buf.flush()
        self.write("CTRL", regmap.CTRL_LOAD_PARAMS)
        self.transport.sendchannel.transfer(buf, nbytes=nbytes)
        self.transport.sendchannel.wait(self.timeout)
        deadline = time.monotonic() + self.timeout
        while not self.read("STATUS") & regmap.STATUS_PARAMS_VALID:
            if time.monotonic() > deadline:
                raise LiteflyError(f"engine did not report PARAMS_VALID within {self.timeout:.1f} s "
                                   f"after a {nbytes}-byte parameter stream")
        getattr(buf, "freebuffer", lambda: None)()
        self.param_bytes += nbytes
        self._params_loaded = qlayer

    # -- execution -------------------------------------------------------------------------
    def check_columns(self, x: np.ndarray) -> np.ndarray:
        """Validate integer input columns ``(n, q_1)``; one-line :class:`ShapeError` otherwise."""
        name, q = self.layer.name, self.spec.in_elems
        if not isinstance(x, np.ndarray):
            raise ShapeError(f"layer {name!r}: input is a {type(x).__name__}, expected a numpy integer array (n, {q})")
        if x.ndim != 2 or x.shape[1] != q or x.shape[0] < 1:
            raise ShapeError(f"layer {name!r}: input columns have shape {x.shape}, expected (n, {q})")
        if not np.issubdtype(x.dtype, np.integer):
            raise ShapeError(f"layer {name!r}: input dtype {x.dtype} is not an integer type "
                             f"(quantise with QuantizedLayer.quantize_input first)")
        lo, hi = int_range(self.spec.act_bits)
        if x.min() < lo or x.max() > hi:
            raise ShapeError(f"layer {name!r}: input values {x.min()}..{x.max()} are outside the "
                             f"{self.spec.act_bits}-bit range {lo}..{hi}")
        return x

    def plan(self, columns: int) -> TilePlan:
        return plan_tiles(self.spec, columns, self.buffer_bytes)

    def run_columns(self, x: np.ndarray) -> np.ndarray:
        """Run input columns ``(n, q_1)`` through the engine; returns ``(n, p_N)`` int64.

        Double-buffered: while the engine works on tile k, the host packs tile k+1 into the
        other input buffer and unpacks tile k-1 from the other output buffer.
        """
        if self._params_loaded is None:
            raise LiteflyError(f"layer {self.layer.name!r}: call load_params() before run_columns()")
        x = self.check_columns(x)
        plan = self.plan(x.shape[0])
        ins = self._buffers("in", plan.in_buffer_bytes)
        outs = self._buffers("out", plan.out_buffer_bytes)
        y = np.empty((x.shape[0], self.spec.out_elems), dtype=np.int64)
        tiles = plan.tiles
        self._pack(x, tiles[0], ins[0])
        self._start(tiles[0], ins[0], outs[0])
        for k, tile in enumerate(tiles):
            if k + 1 < len(tiles):
                self._pack(x, tiles[k + 1], ins[(k + 1) % 2])
            self._wait(tile)
            if k + 1 < len(tiles):
                self._start(tiles[k + 1], ins[(k + 1) % 2], outs[(k + 1) % 2])
            self._unpack(tile, outs[k % 2], y)
        self.bytes_in += plan.bytes_in
        self.bytes_out += plan.bytes_out
        return y

    def _pack(self, x: np.ndarray, tile, buf: np.ndarray) -> None:
        t0 = time.perf_counter()
        cols = x[tile.col_start:tile.col_start + tile.columns]
        pad = tile.batches * self.spec.lanes - tile.columns
        if pad:
            cols = np.concatenate([cols, np.zeros((pad, cols.shape[1]), dtype=cols.dtype)])
        beats = pack_batches(self.spec, cols)
        t1 = time.perf_counter()
        buf[:tile.in_bytes] = beats.reshape(-1)
        buf.flush()
        t2 = time.perf_counter()
        self.timings["pack"] += t1 - t0
        self.timings["copy_in"] += t2 - t1

    def _start(self, tile, inbuf: np.ndarray, outbuf: np.ndarray) -> None:
        t0 = time.perf_counter()
        tr = self.transport
        self.write("TILE_BATCHES", tile.batches)
        tr.recvchannel.transfer(outbuf, nbytes=tile.out_bytes)
        self.write("CTRL", regmap.CTRL_START)
        tr.sendchannel.transfer(inbuf, nbytes=tile.in_bytes)
        self.timings["execute"] += time.perf_counter() - t0

    def _wait(self, tile) -> None:
        t0 = time.perf_counter()
        tr = self.transport
        tr.sendchannel.wait(self.timeout)
        tr.recvchannel.wait(self.timeout)
        self.timings["execute"] += time.perf_counter() - t0
        cyc = self.read("CYCLES")
        self.cycles += (cyc - (self.cycles & 0xFFFFFFFF)) & 0xFFFFFFFF
        self.tiles_run += 1

    def _unpack(self, tile, buf: np.ndarray, y: np.ndarray) -> None:
        t0 = time.perf_counter()
        buf.invalidate()
        raw = np.array(buf[:tile.out_bytes], dtype=np.uint8, copy=True)
        t1 = time.perf_counter()
        out = unpack_batches(self.spec, raw.reshape(-1, self.spec.stream_bits // 8), tile.batches)
        y[tile.col_start:tile.col_start + tile.columns] = out[:tile.columns]
        self.timings["unpack"] += time.perf_counter() - t1
        self.timings["copy_out"] += t1 - t0

    # -- counters ----------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """The engine's performance counters (32-bit registers as read)."""
        return {n: self.read(n) for n in COUNTERS}

    def clear_counters(self) -> None:
        self.write("CTRL", regmap.CTRL_CLEAR_COUNTERS)
        self.cycles = 0

    def reset_stats(self) -> None:
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.bytes_in = self.bytes_out = self.tiles_run = 0

    def close(self) -> None:
        for bufs in self._bufs.values():
            for b in bufs:
                getattr(b, "freebuffer", lambda: None)()
        self._bufs.clear()

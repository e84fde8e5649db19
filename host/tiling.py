"""Tile plan: how many columns go through the engine per DMA transfer (numpy-free).

Rules (``docs/host.md``):

* a tile is a whole number of batches (``lanes`` columns each): TILE_BATCHES is set per tile
  and the engine asserts TLAST on the tile's last output beat, which ends the S2MM transfer;
* a tile's input and output byte counts stay below PYNQ AXI DMA's 26-bit length register
  (``< 2**26`` bytes) and within ``buffer_bytes`` (default 4 MiB, the driver holds two input
  and two output buffers of that size: double buffering);
* buffers are allocated rounded up to ``ALIGN`` (64) bytes; the transfer length is exact;
* the last tile may be shorter; its last batch is padded with zero columns, whose outputs
  are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from litefly.errors import LiteflyError
from litefly.hw.spec import EngineSpec

__all__ = ["ALIGN", "DMA_MAX_BYTES", "DEFAULT_BUFFER_BYTES", "Tile", "TilePlan", "plan_tiles", "align_up"]

ALIGN = 64
DMA_MAX_BYTES = (1 << 26) - 1
DEFAULT_BUFFER_BYTES = 4 << 20


def align_up(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


@dataclass(frozen=True)
class Tile:
    index: int
    col_start: int        # first real column
    columns: int          # real columns in this tile
    batches: int          # batches sent (columns padded up to batches*lanes)
    in_bytes: int
    out_bytes: int


@dataclass(frozen=True)
class TilePlan:
    columns: int
    lanes: int
    batches_per_tile: int
    in_bytes_per_batch: int
    out_bytes_per_batch: int
    tiles: tuple[Tile, ...]

    @property
    def in_buffer_bytes(self) -> int:
        return align_up(self.batches_per_tile * self.in_bytes_per_batch)

    @property
    def out_buffer_bytes(self) -> int:
        return align_up(self.batches_per_tile * self.out_bytes_per_batch)

    @property
    def padded_columns(self) -> int:
        return sum(t.batches for t in self.tiles) * self.lanes

    @property
    def bytes_in(self) -> int:
        return sum(t.in_bytes for t in self.tiles)

    @property
    def bytes_out(self) -> int:
        return sum(t.out_bytes for t in self.tiles)


def plan_tiles(spec: EngineSpec, columns: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
               max_batches: int | None = None) -> TilePlan:
    """Split ``columns`` input columns into tiles for ``spec``'s engine."""
    if columns < 1:
        raise LiteflyError(f"nothing to run: {columns} columns")
    sb = spec.stream_bits // 8
    in_b, out_b = spec.beats_in_per_batch * sb, spec.beats_out_per_batch * sb
    limit = min(int(buffer_bytes), DMA_MAX_BYTES)
    per_tile = limit // max(in_b, out_b)
    if per_tile < 1:
        raise LiteflyError(f"buffer budget of {buffer_bytes} bytes is below one batch "
                           f"({max(in_b, out_b)} bytes); raise buffer_bytes")
    total_batches = -(-columns // spec.lanes)
    per_tile = min(per_tile, total_batches, max_batches or per_tile, 0xFFFFFFFF)
    tiles, start, b0, k = [], 0, 0, 0
    while b0 < total_batches:
        nb = min(per_tile, total_batches - b0)
        real = min(nb * spec.lanes, columns - start)
        tiles.append(Tile(k, start, real, nb, nb * in_b, nb * out_b))
        start += real
        b0 += nb
        k += 1
    return TilePlan(columns, spec.lanes, per_tile, in_b, out_b, tuple(tiles))

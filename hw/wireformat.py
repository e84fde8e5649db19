"""Packing of feature maps (NHWC-E), weights and biases into AXI-Stream bytes (numpy only).

Used by the host runtime, the engine model, the testbenches and the docs alike;
``docs/engine.md`` describes the orders. Beats are rows of a ``(beats, stream_bits/8)``
uint8 array, little-endian.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from litefly.errors import ShapeError
from litefly.network import RowFold

from .spec import BIAS_CONTAINER_BITS, INDEX_ENTRY_BITS, index_entries, layer_weights_flat, layer_weights_unflat

__all__ = ["pack_elements", "unpack_elements", "pack_tensor", "unpack_tensor", "tensor_bytes",
           "pack_layer_params", "unpack_layer_params", "unpack_index", "beats_to_bytes", "bytes_to_beats"]


def pack_elements(values: np.ndarray, bits: int, per_beat: int, stream_bits: int) -> np.ndarray:
    """Pack signed ints, ``per_beat`` per beat, into beats; returns a ``(beats, stream_bits//8)`` uint8 array."""
    values = np.asarray(values, dtype=np.int64).ravel()
    nbeats = -(-values.size // per_beat)
    padded = np.zeros(nbeats * per_beat, dtype=np.int64)
    padded[:values.size] = values
    u = (padded & ((1 << bits) - 1)).astype(np.uint64).reshape(nbeats, per_beat)
    if bits % 8 == 0 and per_beat * bits == stream_bits:
        nbytes = bits // 8
        le = u.astype(f"<u{nbytes}" if nbytes in (1, 2, 4, 8) else "<u8")
        if nbytes in (1, 2, 4, 8):
            return le.view(np.uint8).reshape(nbeats, stream_bits // 8).copy()
    out = np.zeros((nbeats, stream_bits // 8), dtype=np.uint8)
    for k in range(per_beat):
        for bit0 in range(0, bits, 8):
            pos = k * bits + bit0
            byte, off = divmod(pos, 8)
            chunk = (u[:, k] >> np.uint64(bit0)) & np.uint64(0xFF)
            out[:, byte] |= ((chunk << np.uint64(off)) & np.uint64(0xFF)).astype(np.uint8)
            if off and byte + 1 < out.shape[1]:
                out[:, byte + 1] |= (chunk >> np.uint64(8 - off)).astype(np.uint8)
    return out


def unpack_elements(beats: np.ndarray, bits: int, per_beat: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_elements`: the first ``count`` signed values as int64."""
    beats = np.asarray(beats, dtype=np.uint8)
    nbeats, nbytes = beats.shape
    if bits % 8 == 0 and bits // 8 in (1, 2, 4, 8) and per_beat * bits == nbytes * 8:
        vals = beats.reshape(-1).view(f"<i{bits // 8}").astype(np.int64)
        return vals[:count]
    words = np.zeros((nbeats, per_beat), dtype=np.int64)
    bitsarr = np.unpackbits(beats, axis=1, bitorder="little")
    for k in range(per_beat):
        field = bitsarr[:, k * bits:(k + 1) * bits].astype(np.int64)
        words[:, k] = (field << np.arange(bits)).sum(axis=1)
    signed = np.where(words >= (1 << (bits - 1)), words - (1 << bits), words)
    return signed.reshape(-1)[:count]


def pack_tensor(x: np.ndarray, elems_per_beat: int, out: np.ndarray | None = None,
                packed: bool = False, fold: RowFold | None = None) -> np.ndarray:
    """An NCHW integer tensor as NHWC-E bytes (``docs/engine.md``): uint8, one beat per ``E`` bytes.
    With ``packed``, plain NHWC bytes (``C`` a pixel, no padding channels: the engine's
    ``LAYER.PACKED`` input, repacked on chip). With ``fold``, the tensor with its kernel rows
    folded into the channels (:func:`~litefly.network.fold_rows`), written without an
    intermediate copy.

    ``out`` (a uint8 buffer of at least the tensor's size) is filled in place if given.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"tensor has shape {x.shape}, expected (N, C, H, W)")
    if fold is not None and x.shape[3] != fold.width:
        raise ShapeError(f"tensor has shape {x.shape}, expected (N, C, H, {fold.width}) to fold its kernel rows")
    n, c0, h, w0 = x.shape
    kw = 1 if fold is None else fold.kw
    c = c0 * kw
    w = w0 if fold is None else fold.out_width
    cp = c if packed else -(-c // elems_per_beat) * elems_per_beat
    size = n * h * w * cp
    dst = np.empty(size, dtype=np.uint8) if out is None else out
    if dst.size < size:
        raise ShapeError(f"buffer of {dst.size} bytes is smaller than the {size}-byte tensor")
    view = dst[:size].view(np.int8).reshape(n, h, w, cp)
    if cp != c or fold is not None:     # padding: one contiguous fill, the channels written over it
        dst[:size] = 0
    for kx in range(kw):
        lo, hi, part = (0, w, x) if fold is None else fold.source(x, kx)
        if hi <= lo:            # this kernel column reads only padding
            continue
        dv = view[:, :, lo:hi, kx * c0: (kx + 1) * c0]
        # A channel at a time while there are few: a transposed copy's inner loop would run over
        # the channels (1..16 elements); one channel is one long strided copy.
        if c0 <= 16:
            for ch in range(c0):
                dv[..., ch] = part[:, ch]
        else:
            dv[...] = part.transpose(0, 2, 3, 1)
    return dst[:size]


def tensor_bytes(shape: tuple[int, ...], elems_per_beat: int, packed: bool = False) -> int:
    """Bytes of an ``(N, C, H, W)`` tensor in NHWC-E (or packed NHWC)."""
    n, c, h, w = shape
    return n * h * w * (c if packed else -(-c // elems_per_beat) * elems_per_beat)


def unpack_tensor(data: np.ndarray, shape: tuple[int, int, int, int], elems_per_beat: int) -> np.ndarray:
    """NHWC-E bytes back to an NCHW int64 tensor of ``shape``."""
    n, c, h, w = shape
    size = tensor_bytes(shape, elems_per_beat)
    raw = np.asarray(data).reshape(-1).view(np.uint8)
    if raw.size < size:
        raise ShapeError(f"got {raw.size} bytes, a {n}x{c}x{h}x{w} tensor needs {size}")
    cp = size // max(1, n * h * w)
    return raw[:size].view(np.int8).reshape(n, h, w, cp)[..., :c].transpose(0, 3, 1, 2).astype(np.int64)


def pack_layer_params(weights: list[np.ndarray], bias: np.ndarray | None, weight_bits: int,
                      stream_bits: int, chain: Sequence[Any] = (), lane_rows: int = 1) -> np.ndarray:
    """Parameter beats of one layer: compact weights (in weight-memory order,
    :func:`~litefly.hw.spec.weight_order`, on a row-pair or row-quad engine: ``lane_rows`` 2 or 4), padded to a beat; then the sparse
    factors' index entries (:func:`~litefly.hw.spec.index_entries` of ``chain``), padded; then
    32-bit biases, padded."""
    if lane_rows > 1:
        flat = layer_weights_flat(chain, weights, lane_rows)
    else:
        flat = np.concatenate([np.asarray(w, dtype=np.int64).ravel() for w in weights])
    parts = [pack_elements(flat, weight_bits, stream_bits // weight_bits, stream_bits)]
    entries = index_entries(chain)
    if entries.size:
        parts.append(pack_elements(entries, INDEX_ENTRY_BITS, stream_bits // INDEX_ENTRY_BITS, stream_bits))
    if bias is not None:
        parts.append(pack_elements(bias, BIAS_CONTAINER_BITS, stream_bits // BIAS_CONTAINER_BITS, stream_bits))
    return np.concatenate(parts)


def unpack_layer_params(beats: np.ndarray, weight_counts: list[int], weight_beats: int, bias_count: int,
                        weight_bits: int, stream_bits: int, index_beats: int = 0, chain: Sequence[Any] = (),
                        lane_rows: int = 1) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Inverse of :func:`pack_layer_params`: flat weights per factor (compact order) and the biases
    (or None). A row-pair or row-quad engine's weights (``lane_rows`` 2 or 4) need the ``chain``."""
    beats = np.asarray(beats, dtype=np.uint8).reshape(-1, stream_bits // 8)
    per = stream_bits // weight_bits
    if lane_rows > 1:
        flat = unpack_elements(beats[:weight_beats], weight_bits, per, weight_beats * per)
        weights = layer_weights_unflat(chain, flat, lane_rows)
    else:
        total = sum(weight_counts)
        flat = unpack_elements(beats[:weight_beats], weight_bits, per, total)
        weights, off = [], 0
        for k in weight_counts:
            weights.append(flat[off:off + k])
            off += k
    bias = None
    if bias_count:
        bias = unpack_elements(beats[weight_beats + index_beats:], BIAS_CONTAINER_BITS, stream_bits // BIAS_CONTAINER_BITS,
                               bias_count)
    return weights, bias


def unpack_index(beats: np.ndarray, weight_beats: int, index_beats: int, stream_bits: int) -> np.ndarray:
    """The index entries (unsigned) of a parameter stream, all ``index_beats`` beats' worth."""
    beats = np.asarray(beats, dtype=np.uint8).reshape(-1, stream_bits // 8)[weight_beats:weight_beats + index_beats]
    per = stream_bits // INDEX_ENTRY_BITS
    return unpack_elements(beats, INDEX_ENTRY_BITS, per, beats.shape[0] * per) & ((1 << INDEX_ENTRY_BITS) - 1)


def beats_to_bytes(beats: np.ndarray) -> bytes:
    return np.ascontiguousarray(beats, dtype=np.uint8).tobytes()


def bytes_to_beats(data: bytes, stream_bits: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, stream_bits // 8)


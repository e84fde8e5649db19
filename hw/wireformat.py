"""Packing of columns, weights and biases into AXI-Stream beats (numpy only).

Used by the host runtime, the cocotb testbenches and the docs alike; :mod:`hw.spec`
describes the orders. A beat is returned as an unsigned Python int / uint64 words.
"""

from __future__ import annotations

import numpy as np

from litefly.errors import ShapeError

from .spec import EngineSpec

__all__ = ["pack_elements", "unpack_elements", "pack_batches", "unpack_batches", "pack_params",
           "beats_to_bytes", "bytes_to_beats"]


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


def pack_batches(spec: EngineSpec, x: np.ndarray) -> np.ndarray:
    """Pack input columns (rows of ``x``, shape ``(batches*lanes, q_1)``) into beats, element-major per batch."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != spec.in_elems or x.shape[0] % spec.lanes:
        raise ShapeError(f"columns have shape {x.shape}, expected (a multiple of {spec.lanes}, {spec.in_elems})")
    b = x.shape[0] // spec.lanes
    order = x.reshape(b, spec.lanes, spec.in_elems).transpose(0, 2, 1)   # (batch, element, lane)
    return pack_elements(order, spec.act_bits, spec.elems_per_beat, spec.stream_bits)


def unpack_batches(spec: EngineSpec, beats: np.ndarray, batches: int) -> np.ndarray:
    """Unpack output beats of ``batches`` batches into rows ``(batches*lanes, p_N)``."""
    n = batches * spec.lanes * spec.out_elems
    vals = unpack_elements(beats, spec.act_bits, spec.elems_per_beat, n)
    if vals.size != n:
        raise ShapeError(f"got {vals.size} output elements, expected {n}")
    return vals.reshape(batches, spec.out_elems, spec.lanes).transpose(0, 2, 1).reshape(-1, spec.out_elems)


def pack_params(spec: EngineSpec, weights: list[np.ndarray], bias: np.ndarray | None) -> np.ndarray:
    """Parameter beats: flat compact weights, padded; then biases (if the format has them), padded."""
    flat = np.concatenate([np.asarray(w, dtype=np.int64).ravel() for w in weights])
    if flat.size != spec.total_weights:
        raise ShapeError(f"got {flat.size} weights, the chain has {spec.total_weights}")
    parts = [pack_elements(flat, spec.weight_bits, spec.weights_per_beat, spec.stream_bits)]
    if spec.layer.format.bias:
        if bias is None or np.size(bias) != spec.out_elems:
            raise ShapeError(f"expected {spec.out_elems} biases, got {None if bias is None else np.size(bias)}")
        parts.append(pack_elements(bias, BIAS_CONTAINER_BITS, spec.biases_per_beat, spec.stream_bits))
    return np.concatenate(parts)


def beats_to_bytes(beats: np.ndarray) -> bytes:
    return np.ascontiguousarray(beats, dtype=np.uint8).tobytes()


def bytes_to_beats(data: bytes, stream_bits: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, stream_bits // 8)


BIAS_CONTAINER_BITS = 32


def unpack_params(spec: EngineSpec, beats: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Inverse of :func:`pack_params`: compact weights per factor and the biases (or None)."""
    beats = np.asarray(beats, dtype=np.uint8)
    if beats.shape[0] != spec.param_beats:
        raise ShapeError(f"got {beats.shape[0]} parameter beats, expected {spec.param_beats}")
    flat = unpack_elements(beats[:spec.weight_beats], spec.weight_bits, spec.weights_per_beat, spec.total_weights)
    weights, off = [], 0
    for f in spec.layer.chain:
        weights.append(flat[off:off + f.params].reshape(f.compact_shape))
        off += f.params
    bias = None
    if spec.layer.format.bias:
        bias = unpack_elements(beats[spec.weight_beats:], BIAS_CONTAINER_BITS, spec.biases_per_beat, spec.out_elems)
    return weights, bias

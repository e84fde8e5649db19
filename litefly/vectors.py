"""Test vectors: random float weights and inputs, quantised, run through both golden models.

The ``.npz`` keys (all documented in the README):

=================  ====================================================================
``x``              int64 ``(count, q_1)``: integer input columns, one per row
``y``              int64 ``(count, p_N)``: fixed-point golden outputs
``factor{i}``      int64 ``(p_i, q_i)``: dense integer weight matrix of factor i (0-based)
``weights{i}``     int64 compact ``(q/(s*t), t, r, s)`` weights of factor i
``shifts``         int64 ``(N,)``: requantisation shift per factor
``bias``           int64 ``(p_N,)``: integer bias (present only if the format has one)
``x_float``        float64 ``(count, q_1)``: the float inputs that were quantised
``w_float{i}``     float64 compact float weights of factor i
``bias_float``     float64 ``(p_N,)`` float bias (if any)
``y_float``        float64 ``(count, p_N)``: float golden outputs of the float weights
``act_scales``     float64 ``(N+1,)``: scale of the input and of each factor's output
``weight_scales``  float64 ``(N,)``
``config_hash``    str: the layer's config hash; ``seed``: the seed
=================  ====================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import LayerConfig
from .errors import ShapeError
from .fixed import QuantizedLayer, float_forward, quantize_layer, random_float_weights

__all__ = ["make_vectors", "save_vectors", "load_vectors", "Vectors"]


class Vectors(dict):
    """The arrays of a vectors file, with helpers to rebuild the quantised layer."""

    def quantized(self, layer: LayerConfig) -> QuantizedLayer:
        if str(self["config_hash"]) != layer.config_hash:
            raise ShapeError(f"vectors were made for config hash {str(self['config_hash'])[:8]}, "
                             f"this layer has {layer.config_hash[:8]}")
        n = len(layer.chain)
        return QuantizedLayer(layer, [np.asarray(self[f"weights{i}"]) for i in range(n)],
                              [int(s) for s in self["shifts"]], self.get("bias"),
                              list(self["weight_scales"]), list(self["act_scales"]))


def make_vectors(layer: LayerConfig, seed: int = 0, count: int = 64) -> Vectors:
    """Random weights and ``count`` input columns for ``layer``, quantised, with golden outputs."""
    if count < 1:
        raise ShapeError(f"count={count} must be at least 1")
    rng = np.random.default_rng(seed)
    w_float = random_float_weights(layer, rng)
    bias_float = rng.standard_normal(layer.chain_out) * 0.5 if layer.format.bias else None
    x_float = rng.standard_normal((count, layer.chain_in))
    q = quantize_layer(layer, w_float, x_float, bias=bias_float)
    x = q.quantize_input(x_float)
    y = q.forward(x)
    y_float = float_forward(layer.chain, w_float, x_float, bias_float, layer.format.relu)
    out: Vectors = Vectors(x=x, y=y, shifts=np.asarray(q.shifts, dtype=np.int64),
                           x_float=x_float, y_float=y_float,
                           act_scales=np.asarray(q.act_scales), weight_scales=np.asarray(q.weight_scales),
                           config_hash=np.asarray(layer.config_hash), seed=np.asarray(seed))
    for i, (dense, wq, wf) in enumerate(zip(q.dense_factors(), q.weights, w_float)):
        out[f"factor{i}"] = dense
        out[f"weights{i}"] = np.asarray(wq, dtype=np.int64)
        out[f"w_float{i}"] = wf
    if layer.format.bias:
        out["bias"] = np.asarray(q.bias, dtype=np.int64)
        out["bias_float"] = bias_float
    return out


def save_vectors(vectors: Vectors, path: str | Path) -> None:
    np.savez_compressed(path, **vectors)


def load_vectors(path: str | Path) -> Vectors:
    from .safeio import load_npz, one_line  # noqa: PLC0415 - size, headers, no pickle (litefly.safeio)
    path = Path(path)
    if not path.exists():
        raise ShapeError(f"{path}: no such vectors file")
    return Vectors(load_npz(path, "vectors file", error=lambda text: ShapeError(one_line(f"{path}: {text}"))))

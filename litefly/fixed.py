"""Fixed-point golden model of a DeBut chain (numpy only): the engine's bit-exact contract.

Arithmetic (``docs/arithmetic.md`` states it in full):

* activations are signed ``act_bits`` integers, weights signed ``weight_bits`` integers;
* factor i computes ``acc = R_i x`` exactly (its accumulator width
  :meth:`NumericFormat.acc_bits` is proven sufficient, so nothing wraps);
* the last factor adds the bias (signed ``act_bits + weight_bits``) to ``acc`` if enabled;
* requantisation: ``y = clamp((acc + 2^(shift-1)) >> shift)`` with an arithmetic
  (floor) shift, i.e. round half up, and no rounding term for ``shift == 0``;
  ``clamp`` saturates to ``[-2^(act_bits-1), 2^(act_bits-1) - 1]``;
* ReLU, if enabled, is ``max(y, 0)`` after the last factor's requantisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .chain import AnyFactor, Factor
from .config import LayerConfig
from .errors import ShapeError

__all__ = ["skip_alignment", "add_skip", "equalize_factors", "requantize", "factor_forward", "factor_input",
           "factor_dense", "chain_dense", "QuantizedLayer", "quantize_layer", "quantize_tensor", "dequantize",
           "float_forward", "int_range", "random_float_weights"]


def int_range(bits: int) -> tuple[int, int]:
    """Inclusive range of a signed ``bits``-wide integer."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def requantize(acc: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """Round half up by an arithmetic right shift, then saturate to signed ``bits``."""
    acc = np.asarray(acc, dtype=np.int64)
    if shift > 0:
        acc = (acc + (1 << (shift - 1))) >> shift
    lo, hi = int_range(bits)
    return np.clip(acc, lo, hi)


def factor_forward(factor: AnyFactor, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x @ R^T`` for rows of ``x`` (shape ``(n, q)``), weights in the compact layout ``(g, t, r, s)``
    (a sparse factor: its ``nnz`` values in row order).

    Integer inputs give exact int64 results; float inputs give float results.
    """
    if factor.kind == "sparse":
        return _sparse_forward(factor, weights, x)
    g, t, r, s = factor.compact_shape
    n = x.shape[0]
    xr = x.reshape(n, g, s, t)
    out = np.einsum("gtrb,ngbt->ngrt", weights, xr, optimize=True)
    return out.reshape(n, factor.p)


def _sparse_forward(factor, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Row sums of ``w * x[:, column]`` by segments (every row has an entry); exact for integers."""
    x = np.asarray(x)
    w = np.asarray(weights).reshape(-1)
    prods = x[:, factor.indices] * w
    return np.add.reduceat(prods, factor.indptr[:-1], axis=1) if prods.shape[0] else prods[:, :factor.p]


def factor_input(factor: AnyFactor, x0: np.ndarray, y: np.ndarray) -> np.ndarray:
    """What ``factor`` reads: the previous output ``y``, or ``[x0 ; y]`` for a concat factor."""
    return np.concatenate([x0, y], axis=1) if factor.concat else y


def factor_dense(factor: AnyFactor, weights: np.ndarray) -> np.ndarray:
    """The p x q matrix of one factor from its compact weights (indexed by the structure, not by value)."""
    weights = np.asarray(weights)
    if weights.shape != factor.compact_shape:
        raise ShapeError(f"factor {factor}: weights have shape {weights.shape}, expected {factor.compact_shape}")
    rows, cols = factor.nonzero_indices()
    dense = np.zeros((factor.p, factor.q), dtype=weights.dtype)
    dense[rows, cols] = weights.ravel()
    return dense


def factor_compact(factor: Factor, dense: np.ndarray) -> np.ndarray:
    """Inverse of :func:`factor_dense`: read the structural nonzeros of a p x q matrix."""
    rows, cols = factor.nonzero_indices()
    return np.asarray(dense)[rows, cols].reshape(factor.compact_shape)


def chain_dense(chain: Sequence[AnyFactor], weights: Sequence[np.ndarray]) -> np.ndarray:
    """The dense product ``R_N ... R_1`` (float64; a concat factor multiplies ``[I ; product so far]``)."""
    m = factor_dense(chain[0], weights[0]).astype(np.float64)
    eye = np.eye(chain[0].q)
    for f, w in zip(chain[1:], weights[1:]):
        m = factor_dense(f, w).astype(np.float64) @ factor_input(f, eye.T, m.T).T
    return m


def float_forward(chain: Sequence[Factor], weights: Sequence[np.ndarray], x: np.ndarray,
                  bias: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
    """Float reference in numpy (rows of ``x`` are input columns)."""
    y = x0 = np.asarray(x, dtype=np.float64)
    for f, w in zip(chain, weights):
        y = factor_forward(f, np.asarray(w, dtype=np.float64), factor_input(f, x0, y))
    if bias is not None:
        y = y + bias
    return np.maximum(y, 0.0) if relu else y


@dataclass
class QuantizedLayer:
    """Integer weights, shifts and bias of a layer, plus the float scales that give them meaning.

    ``weights[i]`` is factor i's compact ``(g, t, r, s)`` int array. The float value of an
    activation ``X_i`` is ``X_i * act_scales[i]``; ``act_scales[0]`` is the input scale.
    """

    layer: LayerConfig
    weights: list[np.ndarray]
    shifts: list[int]
    bias: np.ndarray | None = None
    weight_scales: list[float] = field(default_factory=list)
    act_scales: list[float] = field(default_factory=list)
    skip_align: tuple[int, int] | None = None     # residual add: (M, K), skip * M / 2^K at the output scale

    def __post_init__(self) -> None:
        fmt, chain = self.layer.format, self.layer.chain
        if len(self.weights) != len(chain) or len(self.shifts) != len(chain):
            raise ShapeError(f"layer {self.layer.name!r}: {len(self.weights)} weight arrays and "
                             f"{len(self.shifts)} shifts for a chain of {len(chain)} factors")
        wlo, whi = int_range(fmt.weight_bits)
        for i, (f, w) in enumerate(zip(chain, self.weights)):
            w = np.asarray(w)
            if w.shape != f.compact_shape:
                raise ShapeError(f"factor {i + 1}: weights have shape {w.shape}, expected {f.compact_shape}")
            if w.size and (w.min() < wlo or w.max() > whi):
                raise ShapeError(f"factor {i + 1}: weights outside the {fmt.weight_bits}-bit range {wlo}..{whi}")
            acc_bits = fmt.acc_bits(f, last=(i == len(chain) - 1))
            if not 0 <= self.shifts[i] < acc_bits:
                raise ShapeError(f"factor {i + 1}: shift={self.shifts[i]} must be in 0..{acc_bits - 1}")
        if fmt.bias and (self.bias is None or np.shape(self.bias) != (self.layer.chain_out,)):
            raise ShapeError(f"layer {self.layer.name!r}: the format has a bias; expected {self.layer.chain_out} "
                             f"bias values, got {None if self.bias is None else np.shape(self.bias)}")
        if not fmt.bias and self.bias is not None:
            raise ShapeError(f"layer {self.layer.name!r}: bias given but the format has bias: false")
        if self.bias is not None:
            blo, bhi = int_range(fmt.bias_bits)
            if self.bias.min() < blo or self.bias.max() > bhi:
                raise ShapeError(f"bias outside the {fmt.bias_bits}-bit range {blo}..{bhi}")

    @property
    def in_scale(self) -> float:
        return self.act_scales[0]

    @property
    def out_scale(self) -> float:
        return self.act_scales[-1]

    def forward(self, x: np.ndarray, intermediates: bool = False):
        """Integer forward of rows of ``x`` (``(n, chain_in)`` signed ints) -> ``(n, chain_out)`` int64."""
        fmt, chain = self.layer.format, self.layer.chain
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != chain[0].q:
            raise ShapeError(f"layer {self.layer.name!r}: input has shape {x.shape}, expected (n, {chain[0].q})")
        if not np.issubdtype(x.dtype, np.integer):
            raise ShapeError(f"layer {self.layer.name!r}: input dtype {x.dtype} is not an integer type")
        lo, hi = int_range(fmt.act_bits)
        if x.size and (x.min() < lo or x.max() > hi):
            raise ShapeError(f"layer {self.layer.name!r}: input values outside the {fmt.act_bits}-bit range {lo}..{hi}")
        y = x0 = x.astype(np.int64)
        steps = [y]
        for i, (f, w) in enumerate(zip(chain, self.weights)):
            acc = factor_forward(f, np.asarray(w, dtype=np.int64), factor_input(f, x0, y))
            last = i == len(chain) - 1
            if last and self.bias is not None:
                acc = acc + self.bias.astype(np.int64)
            alo, ahi = int_range(fmt.acc_bits(f, last))
            assert acc.size == 0 or (acc.min() >= alo and acc.max() <= ahi), "accumulator bound violated"
            y = requantize(acc, self.shifts[i], fmt.act_bits)
            if last and fmt.relu:
                y = np.maximum(y, 0)
            steps.append(y)
        return steps if intermediates else y

    def dense_factors(self) -> list[np.ndarray]:
        """Each factor's dense integer p x q matrix."""
        return [factor_dense(f, np.asarray(w, dtype=np.int64)) for f, w in zip(self.layer.chain, self.weights)]

    def weight_scale_arrays(self) -> list[np.ndarray]:
        """Each factor's float value of one weight step, per weight (compact layout): its weight
        scale, except a concat factor's weights on the layer input, which are at the accumulator
        scale over the input's scale (see :func:`quantize_layer`)."""
        out = []
        for i, (f, ws) in enumerate(zip(self.layer.chain, self.weight_scales)):
            scale = np.full(f.compact_shape, ws)
            if f.concat:
                on_input = f.nonzero_indices()[1] < self.layer.chain_in
                scale[on_input] = ws * self.act_scales[i] / self.act_scales[0]
            out.append(scale)
        return out

    def float_weights(self) -> list[np.ndarray]:
        """The weights this quantisation represents, as floats."""
        return [np.asarray(w, dtype=np.float64) * s for w, s in zip(self.weights, self.weight_scale_arrays())]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize_tensor(x, self.in_scale, self.layer.format.act_bits)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        return dequantize(y, self.out_scale)

    def forward_float(self, x: np.ndarray) -> np.ndarray:
        """Float rows in, float rows out, through the integer path: quantise, :meth:`forward`, dequantise."""
        return self.dequantize_output(self.forward(self.quantize_input(x)))


def skip_alignment(ratio: float) -> tuple[int, int]:
    """``(M, K)`` with ``M / 2^K`` closest to ``ratio`` (> 0), ``M`` at most 16 bits, ``K`` at most 31."""
    if not ratio > 0:
        raise ShapeError(f"residual add: scale ratio {ratio!r} must be positive")
    k = int(np.clip(15 - int(np.floor(np.log2(ratio))), 0, 31))
    while k > 0 and round(ratio * 2 ** k) >= 1 << 16:
        k -= 1
    return min(int(round(ratio * 2 ** k)), (1 << 16) - 1), k


def add_skip(y: np.ndarray, skip: np.ndarray, align: tuple[int, int], bits: int) -> np.ndarray:
    """The residual add: ``clamp(y + ((skip * M + 2^(K-1)) >> K))`` (no rounding term for K = 0)."""
    m, k = align
    aligned = np.asarray(skip, dtype=np.int64) * m
    if k > 0:
        aligned = (aligned + (1 << (k - 1))) >> k
    lo, hi = int_range(bits)
    return np.clip(np.asarray(y, dtype=np.int64) + aligned, lo, hi)


def quantize_tensor(x: np.ndarray, scale: float, bits: int, dtype: Any = np.int64,
                    work: np.ndarray | None = None) -> np.ndarray:
    """``clamp(floor(x / scale + 1/2))`` (round half up, saturate) as ``dtype`` (int64 unless
    given; a narrower integer type, e.g. int8 for ``bits <= 8``, holds the same values).

    Computed in one float64 array, in place: a new one, or ``work`` (float64, ``x``'s shape),
    which a caller quantising many inputs of one shape keeps instead of allocating each time."""
    lo, hi = int_range(bits)
    x = np.asarray(x, dtype=np.float64)
    y = np.empty(x.shape) if work is None else work
    np.divide(x, scale, out=y)
    y += 0.5
    np.floor(y, out=y)
    np.clip(y, lo, hi, out=y)
    q = y.astype(dtype)
    return q[()] if q.ndim == 0 else q


def dequantize(y: np.ndarray, scale: float) -> np.ndarray:
    return np.asarray(y, dtype=np.float64) * scale


def _max_abs_scale(values: np.ndarray, bits: int) -> float:
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    return (m if m > 0 else 1.0) / ((1 << (bits - 1)) - 1)


def quantize_layer(layer: LayerConfig, weights: Sequence[np.ndarray], calib_x: np.ndarray,
                   bias: np.ndarray | None = None, in_scale: float | None = None,
                   calibration: str = "max") -> QuantizedLayer:
    """Quantise float compact weights for ``layer`` using sample inputs ``calib_x`` (rows).

    Per factor: the weight scale maps the largest |weight| to the top of the range (on the
    last factor, coarser if the bias would not fit its ``bias_bits`` otherwise); the
    shift is the smallest one that keeps the calibration data's largest accumulator
    within the activation range after rounding (``calibration="max"``), or, with ``"mse"``, the
    one of that shift and the two below it (which clip the largest values) whose requantised
    output is closest to the accumulator in mean square. The input scale maps the largest |input|
    to the top of the range unless given.
    """
    fmt, chain = layer.format, layer.chain
    if fmt.bias and bias is None:
        bias = np.zeros(layer.chain_out)
    calib_x = np.asarray(calib_x, dtype=np.float64)
    if calib_x.ndim != 2 or calib_x.shape[1] != layer.chain_in:
        raise ShapeError(f"layer {layer.name!r}: calibration input has shape {calib_x.shape}, "
                         f"expected (n, {layer.chain_in})")
    a_scale = in_scale or _max_abs_scale(calib_x, fmt.act_bits)
    act_scales = [a_scale]
    x = x0 = quantize_tensor(calib_x, a_scale, fmt.act_bits)
    q_weights, w_scales, shifts = [], [], []
    q_bias = None
    _, amax = int_range(fmt.act_bits)
    for i, (f, w) in enumerate(zip(chain, weights)):
        last = i == len(chain) - 1
        w = np.asarray(w, dtype=np.float64)
        if w.shape != f.compact_shape:
            raise ShapeError(f"factor {i + 1}: weights have shape {w.shape}, expected {f.compact_shape}")
        # a concat factor's products must share one accumulator scale: a weight on the layer input
        # is quantised at ws * act_scales[-1] / act_scales[0] (``col`` rescales it to the same grid)
        col = np.ones(w.shape)
        if f.concat:
            col[f.nonzero_indices()[1] < layer.chain_in] = act_scales[0] / act_scales[-1]
        ws = _max_abs_scale(w * col, fmt.weight_bits)
        if last and fmt.bias and act_scales[-1] > 0:
            # the bias lives at the accumulator scale in bias_bits: coarsen the weights rather
            # than let a large bias saturate
            ws = max(ws, float(np.max(np.abs(bias), initial=0.0)) / (int_range(fmt.bias_bits)[1] * act_scales[-1]))
        wq = quantize_tensor(w * col, ws, fmt.weight_bits)
        acc = factor_forward(f, wq, factor_input(f, x0, x))
        acc_scale = ws * act_scales[-1]
        if last and fmt.bias:
            q_bias = quantize_tensor(np.asarray(bias) / acc_scale, 1.0, fmt.bias_bits)
            acc = acc + q_bias
        peak = int(np.max(np.abs(acc))) if acc.size else 0
        shift = 0
        max_shift = fmt.acc_bits(f, last) - 1
        while shift < max_shift and ((peak + (1 << shift >> 1)) >> shift) > amax:
            shift += 1
        if calibration == "mse":
            shift = _mse_shift(acc, shift, fmt.act_bits, last and fmt.relu)
        x = requantize(acc, shift, fmt.act_bits)
        if last and fmt.relu:
            x = np.maximum(x, 0)
        q_weights.append(wq)
        w_scales.append(ws)
        shifts.append(shift)
        act_scales.append(acc_scale * (1 << shift))
    return QuantizedLayer(layer, q_weights, shifts, q_bias, w_scales, act_scales)


def _mse_shift(acc: np.ndarray, shift: int, bits: int, relu: bool) -> int:
    """Of ``shift`` and up to two smaller shifts, the one whose requantised ``acc`` (rescaled)
    is nearest ``acc`` in mean square; ReLU'd outputs are compared after the ReLU."""
    ref = np.maximum(acc, 0) if relu else acc
    best, best_err = shift, None
    for s in range(shift, max(shift - 3, -1), -1):
        q = requantize(acc, s, bits)
        if relu:
            q = np.maximum(q, 0)
        err = float(np.mean((q.astype(np.float64) * (1 << s) - ref) ** 2))
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best


def equalize_factors(chain: Sequence[AnyFactor], weights: Sequence[np.ndarray], iters: int = 20) -> list[np.ndarray]:
    """Rescale consecutive factors so that each intermediate channel has the same weight range
    on both sides (cross-layer equalisation, Nagel et al. 2019); the product is unchanged.

    Nothing but a requantisation sits between two factors of a chain, so row ``j`` of factor
    ``i`` may be multiplied by ``c_j`` and column ``j`` of factor ``i+1`` divided by it.
    With ``c_j = sqrt(range_(i+1)(j) / range_i(j))`` both ranges become their geometric mean,
    which keeps small channels from losing their bits to a per-factor weight scale.
    """
    ws = [np.array(w, dtype=np.float64).ravel() for w in weights]
    if len(ws) != len(chain):
        raise ShapeError(f"{len(ws)} weight arrays for a chain of {len(chain)} factors")
    for f, w in zip(chain, ws):
        if w.size != f.params:
            raise ShapeError(f"factor {f.as_list()}: {w.size} weights, expected {f.params}")
    idx = [f.nonzero_indices() for f in chain]
    for _ in range(iters):
        for i in range(len(chain) - 1):
            if chain[i + 1].concat:
                continue        # its columns mix the layer input in: left as they are
            r1 = np.zeros(chain[i].p)
            np.maximum.at(r1, idx[i][0], np.abs(ws[i]))
            r2 = np.zeros(chain[i + 1].q)
            np.maximum.at(r2, idx[i + 1][1], np.abs(ws[i + 1]))
            ok = (r1 > 0) & (r2 > 0)
            c = np.ones_like(r1)
            c[ok] = np.sqrt(r2[ok] / r1[ok])
            ws[i] *= c[idx[i][0]]
            ws[i + 1] /= c[idx[i + 1][1]]
    return [w.reshape(f.compact_shape) for f, w in zip(chain, ws)]


def random_float_weights(layer: LayerConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """Random compact weights with variance ``1/s`` per factor (keeps activations O(1))."""
    return [rng.standard_normal(f.compact_shape) / np.sqrt(f.s) for f in layer.chain]


def save_quantized(q: QuantizedLayer, path) -> None:
    """Save a quantised layer's parameters (keys as in the vectors file: ``weights{i}``, ``shifts``,
    ``bias``, ``weight_scales``, ``act_scales``, ``config_hash``)."""
    arrays = {f"weights{i}": np.asarray(w, dtype=np.int64) for i, w in enumerate(q.weights)}
    arrays.update(shifts=np.asarray(q.shifts, dtype=np.int64), weight_scales=np.asarray(q.weight_scales),
                  act_scales=np.asarray(q.act_scales), config_hash=np.asarray(q.layer.config_hash))
    if q.bias is not None:
        arrays["bias"] = np.asarray(q.bias, dtype=np.int64)
    if q.skip_align is not None:
        arrays["skip_align"] = np.asarray(q.skip_align, dtype=np.int64)
    np.savez_compressed(path, **arrays)


def load_quantized(layer: LayerConfig, path) -> QuantizedLayer:
    """Load parameters saved by :func:`save_quantized` (or a vectors file) for ``layer``; checks the hash."""
    from .safeio import load_npz
    d = load_npz(path, "parameter file", error=lambda text: ShapeError(f"{path}: {text}"))
    got = str(d["config_hash"]) if "config_hash" in d else "?"
    if got != layer.config_hash:
        if layer.merged_from and got == layer.with_chain(layer.declared_chain).config_hash:
            raise ShapeError(f"{path}: parameters are for the declared chain of layer {layer.name!r}, which "
                             f"merge: true merges into {len(layer.chain)} factors; quantise the merged chain "
                             f"(litefly convert --merge) or run the chains as declared (--no-merge)")
        raise ShapeError(f"{path}: parameters are for config hash {got[:8]}, layer {layer.name!r} has "
                         f"{layer.config_hash[:8]}")
    n = len(layer.chain)
    missing = [k for k in [f"weights{i}" for i in range(n)] + ["shifts", "weight_scales", "act_scales"] if k not in d]
    if missing:
        raise ShapeError(f"{path}: parameter file lacks {', '.join(missing)}")
    skip = tuple(int(v) for v in d["skip_align"]) if "skip_align" in d else None
    if skip is not None and (len(skip) != 2 or not 0 <= skip[0] < 1 << 16 or not 0 <= skip[1] < 32):
        raise ShapeError(f"{path}: skip_align={skip} must be (M, K) with M in 0..65535 and K in 0..31")
    return QuantizedLayer(layer, [d[f"weights{i}"] for i in range(n)], [int(s) for s in d["shifts"]],
                          d["bias"] if "bias" in d else None, list(d["weight_scales"]), list(d["act_scales"]),
                          skip)

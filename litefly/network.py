"""Network maths of the engine's contract (numpy only; the board imports it).

* :func:`im2col` / :func:`col2im` / :func:`output_size`: convolution windows in the reference
  ordering (kernel position outer, channel inner).
* :func:`plan_network`: a :class:`~litefly.config.NetworkConfig` at an input shape becomes a
  list of :class:`EngineStep` (one per layer), each with the ReLU and max pooling that follow
  it fused in, its input/output shapes and the window geometry the engine walks. Operations
  the engine cannot fuse are refused in one line.
* :func:`step_forward_int` / :func:`network_forward_int`: the int8 golden network on NCHW
  integer tensors, layer output feeding the next layer unchanged (no requantisation between
  layers: the scales are chained, :func:`check_scales`).
* :func:`quantize_network`: quantise float weights layer by layer with chained scales.

Flatten: the engine keeps tensors channels-last, so a network's ``flatten`` is the
channels-last flatten ``x.permute(0, 2, 3, 1).flatten(1)``: a linear layer after a
``(C, H, W)`` map reads element ``(h*W + w)*C + c``, which is a ``H x W`` convolution over
the map. For ``H = W = 1`` (global pooling, or a linear network) both orders agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from .config import HostOp, LayerConfig, NetworkConfig
from .errors import ConfigError, ShapeError
from .fixed import QuantizedLayer, add_skip, int_range, quantize_layer, skip_alignment

__all__ = ["EngineStep", "RowFold", "fold_rows", "output_size", "im2col", "col2im", "plan_network", "step_forward_int",
           "network_forward_int", "maxpool_int", "global_pool_int", "GLOBAL_POOLS", "check_scales",
           "quantize_network", "network_input_shape"]

#: Host ops that pool a whole map to ``C x 1 x 1`` on the host, between two engine layers.
GLOBAL_POOLS = ("globalavgpool", "globalmaxpool")

Pair = tuple[int, int]


def output_size(h: int, w: int, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """Output height and width of a convolution (as ``torch.nn.Conv2d``)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def im2col(x: np.ndarray, kernel: Pair, stride: Pair = (1, 1), padding: Pair = (0, 0),
           dilation: Pair = (1, 1)) -> np.ndarray:
    """Columns ``(n*h_out*w_out, kh*kw*c)`` of an NCHW array, in the reference ordering; dtype kept."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"im2col: input has shape {x.shape}, expected (N, C, H, W)")
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho, wo = output_size(h, w, kernel, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ShapeError(f"im2col: input {h}x{w} is smaller than the {kh}x{kw} kernel "
                         f"(padding {ph},{pw}, dilation {dh},{dw})")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    out = np.empty((n, ho, wo, kh * kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            out[:, :, :, i * kw + j, :] = patch.transpose(0, 2, 3, 1)
    return out.reshape(n * ho * wo, kh * kw * c)


def col2im(y: np.ndarray, n: int, h_out: int, w_out: int) -> np.ndarray:
    """Output rows ``(n*h_out*w_out, c_out)`` back to NCHW ``(n, c_out, h_out, w_out)``."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] != n * h_out * w_out:
        raise ShapeError(f"col2im: rows have shape {y.shape}, expected ({n * h_out * w_out}, C)")
    return np.ascontiguousarray(y.reshape(n, h_out, w_out, y.shape[1]).transpose(0, 3, 1, 2))


def maxpool_int(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Max pooling of an NCHW array, ``k x k`` windows at step ``s``, windows that do not fit dropped."""
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    if ho < 1 or wo < 1:
        raise ShapeError(f"pooling window {k} is larger than the {h}x{w} map")
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :ho, :wo]
    return win.max(axis=(-2, -1))


def global_pool_int(x: np.ndarray, op: str) -> np.ndarray:
    """A host global pool of an NCHW integer array to ``(N, C, 1, 1)``, exact in integers, dtype kept.

    ``globalmaxpool``: the maximum over the ``H*W`` positions. ``globalavgpool``: the sum ``S``
    over ``n = H*W`` positions divided with round half up, ``floor((2*S + n) / (2*n))`` (as the
    requantisation rounds, ``docs/arithmetic.md``); the result lies between the smallest and the
    largest input, so it keeps the input's range and scale."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"{op}: input has shape {x.shape}, expected (N, C, H, W)")
    if op == "globalmaxpool":
        return x.max(axis=(2, 3), keepdims=True)
    if op == "globalavgpool":
        n = x.shape[2] * x.shape[3]
        total = x.sum(axis=(2, 3), keepdims=True, dtype=np.int64)
        return ((2 * total + n) // (2 * n)).astype(x.dtype)
    raise ConfigError(f"{op!r} is not a global pool; expected one of {', '.join(GLOBAL_POOLS)}")


class RowFold(NamedTuple):
    """A kernel row folded into the channels by the host (``docs/engine.md``, "Folded kernel rows"):
    the engine reads ``(KW*C, H, Wo)``, whose pixel ``(y, xo)`` holds the source pixels
    ``(y, xo*stride - pad + kx*dilation)`` for ``kx = 0..KW-1`` (zeros outside the map), channel
    ``kx*C + c``; it walks a ``KH x 1`` kernel. The column order ``(ky, kx, c)`` is the
    reference's, so the layer and its weights are unchanged."""

    kw: int
    stride: int
    pad: int
    dilation: int
    width: int              # the source map's width W

    @property
    def out_width(self) -> int:
        """``Wo``: the folded map's width, the convolution's output width."""
        return output_size(1, self.width, (1, self.kw), (1, self.stride), (0, self.pad), (1, self.dilation))[1]

    def columns(self, kx: int) -> tuple[int, int, int]:
        """For kernel column ``kx``: the output columns ``lo..hi-1`` whose source pixel lies in the
        map, and the first of those source pixels (the rest follow at ``stride``)."""
        off = kx * self.dilation - self.pad
        lo = -(off // self.stride) if off < 0 else 0
        hi = min(self.out_width, (self.width - 1 - off) // self.stride + 1) if self.width - 1 >= off else 0
        return lo, max(lo, hi), lo * self.stride + off

    def source(self, x: np.ndarray, kx: int) -> tuple[int, int, np.ndarray]:
        """For kernel column ``kx`` of the NCHW array ``x``: the output columns ``lo..hi-1`` of
        :meth:`columns` and their source pixels, a strided view ``(N, C, H, hi - lo)``."""
        lo, hi, src = self.columns(kx)
        return lo, hi, x[..., src: src + (hi - lo - 1) * self.stride + 1: self.stride]


def fold_rows(x: np.ndarray, fold: RowFold) -> np.ndarray:
    """An NCHW ``(N, C, H, W)`` array with its kernel rows folded into the channels: ``(N, KW*C, H, Wo)``."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[3] != fold.width:
        raise ShapeError(f"fold_rows: input has shape {x.shape}, expected (N, C, H, {fold.width})")
    n, c, h, _ = x.shape
    wo = fold.out_width
    out = np.zeros((n, fold.kw, c, h, wo), dtype=x.dtype)
    for kx in range(fold.kw):
        lo, hi, part = fold.source(x, kx)
        out[:, kx, :, :, lo:hi] = part
    return out.reshape(n, fold.kw * c, h, wo)


@dataclass(frozen=True)
class EngineStep:
    """One layer as the engine runs it: the layer, its input shape and the fused output stage."""

    layer: LayerConfig
    in_shape: tuple[int, int, int]          # (C, H, W) of the input tensor
    relu: bool                              # ReLU after requantisation (format.relu or a fused op)
    pool: Pair | None = None                # fused max pooling (kernel, stride)
    pre: str | None = None                  # a host op (GLOBAL_POOLS) that makes in_shape from the previous output
    skip: str | None = None                 # residual add of this earlier step's output, before the ReLU
    src: str | None = None                  # the earlier step whose output this one reads (None: the previous)
    fold: RowFold | None = None             # the host folds the kernel rows into the channels (in_shape is folded)
    foldable: bool = True                   # the host may fold them (the network's fold_input)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def channels(self) -> int:
        return self.in_shape[0]

    @property
    def kernel(self) -> Pair:
        """The window the engine walks: the layer's kernel, or the whole map for a linear layer."""
        if self.layer.kind == "conv2d":
            return self.layer.kernel if self.fold is None else (self.layer.kernel[0], 1)
        return self.in_shape[1], self.in_shape[2]

    @property
    def stride(self) -> Pair:
        if self.layer.kind != "conv2d":
            return 1, 1
        return self.layer.stride if self.fold is None else (self.layer.stride[0], 1)

    @property
    def padding(self) -> Pair:
        if self.layer.kind != "conv2d":
            return 0, 0
        return self.layer.padding if self.fold is None else (self.layer.padding[0], 0)

    @property
    def dilation(self) -> Pair:
        if self.layer.kind != "conv2d":
            return 1, 1
        return self.layer.dilation if self.fold is None else (self.layer.dilation[0], 1)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the tensor the step's input is made from (``in_shape`` unless folded)."""
        if self.fold is None:
            return self.in_shape
        c, h, _ = self.in_shape
        return c // self.fold.kw, h, self.fold.width

    def row_folded(self) -> "EngineStep | None":
        """The step with its kernel rows folded into the channels by the host (:class:`RowFold`),
        or None where there is nothing to fold (not a convolution, a one-column kernel, folded) or
        the network says not to (``fold_input: false``)."""
        lay = self.layer
        if lay.kind != "conv2d" or lay.kernel[1] == 1 or self.fold is not None or not self.foldable:
            return None
        c, h, w = self.in_shape
        fold = RowFold(lay.kernel[1], lay.stride[1], lay.padding[1], lay.dilation[1], w)
        return replace(self, in_shape=(fold.kw * c, h, fold.out_width), fold=fold)

    @property
    def conv_shape(self) -> tuple[int, int, int]:
        """``(P, Ho, Wo)`` before pooling."""
        ho, wo = output_size(self.in_shape[1], self.in_shape[2], self.kernel, self.stride, self.padding,
                             self.dilation)
        return self.layer.chain_out, ho, wo

    @property
    def out_shape(self) -> tuple[int, int, int]:
        """``(P, Hp, Wp)``: what the engine emits (pooled if pooling is fused)."""
        p, ho, wo = self.conv_shape
        if self.pool is None:
            return p, ho, wo
        k, s = self.pool
        return p, (ho - k) // s + 1, (wo - k) // s + 1

    @property
    def macs_per_image(self) -> int:
        _, ho, wo = self.conv_shape
        return ho * wo * self.layer.macs_per_column

    def with_layer(self, layer: LayerConfig) -> "EngineStep":
        """The same step with another layer of the same sizes (e.g. the dense baseline)."""
        return replace(self, layer=layer)


def network_input_shape(network: NetworkConfig, input_size: Pair | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the network's input: ``input_size`` (or the network's own) for a conv network."""
    first = network.layers[0]
    if first.kind == "linear":
        return first.in_features, 1, 1
    size = input_size or network.input_size
    if size is None:
        raise ConfigError(f"network {network.name!r}: give the input size (H, W) of its first conv layer")
    return first.in_channels, int(size[0]), int(size[1])


def plan_network(network: NetworkConfig, in_shape: tuple[int, int, int]) -> tuple[EngineStep, ...]:
    """The network as engine steps at input shape ``(C, H, W)``; one-line errors for what does not fuse."""
    steps: list[EngineStep] = []
    c, h, w = (int(v) for v in in_shape)
    flat = False
    name = network.name
    host: str | None = None         # a global pool the host runs before the next layer
    branch: str | None = None       # {op: input}: the next layer reads this earlier layer's output
    for k, item in enumerate(network.steps):
        if isinstance(item, LayerConfig):
            lay = item
            if lay.kind == "conv2d":
                if flat:
                    raise ConfigError(f"network {name!r}: conv2d layer {lay.name!r} follows a flatten")
                if c != lay.in_channels:
                    raise ShapeError(f"network {name!r}: layer {lay.name!r} expects {lay.in_channels} input "
                                     f"channels, it gets {c} (a {c}x{h}x{w} map)")
            else:
                if c * h * w != lay.in_features:
                    raise ShapeError(f"network {name!r}: linear layer {lay.name!r} expects {lay.in_features} "
                                     f"features, it gets a {c}x{h}x{w} map ({c * h * w})")
                if h * w > 1 and not flat:
                    raise ConfigError(f"network {name!r}: linear layer {lay.name!r} reads a {c}x{h}x{w} map; "
                                      f"put a flatten op before it")
            step = EngineStep(lay, (c, h, w), relu=lay.format.relu, pre=host, src=branch,
                              foldable=network.fold_input)
            host = branch = None
            _, ho, wo = step.conv_shape
            if ho < 1 or wo < 1:
                raise ShapeError(f"network {name!r}: layer {lay.name!r} gets a {h}x{w} map, smaller than its "
                                 f"{step.kernel[0]}x{step.kernel[1]} window")
            steps.append(step)
            c, h, w = step.out_shape
            flat = False
            continue
        op: HostOp = item
        where = f"network {name!r}: step {k + 1} ({op.op})"
        if op.op == "flatten":
            flat = True
            continue
        if branch is not None:
            raise ConfigError(f"{where} follows an input op; the layer that reads {branch!r} comes next")
        if op.op == "input":
            src = next((st for st in steps if st.name == op.source), None)
            if src is None or host is not None:
                raise ConfigError(f"{where}: from={op.source!r} is not an earlier layer (or a global pool is "
                                  f"pending)")
            branch, (c, h, w), flat = src.name, src.out_shape, False
            continue
        if op.op == "add":
            if not steps or flat or host is not None:
                raise ConfigError(f"{where} does not follow a layer's map; the engine adds the skip to the output "
                                  f"of the layer before it")
            last = steps[-1]
            src = next((st for st in steps[:-1] if st.name == op.source), None)
            if src is None:
                raise ConfigError(f"{where}: from={op.source!r} is not a layer before {last.name!r}")
            if last.skip is not None or last.pool is not None or last.relu:
                what = "an add" if last.skip else "a max pooling" if last.pool else "a ReLU"
                raise ConfigError(f"{where}: layer {last.name!r} already has {what}; the engine adds the skip "
                                  f"to the layer's output before ReLU and without pooling")
            if src.out_shape != last.out_shape:
                raise ShapeError(f"{where}: layer {src.name!r} outputs {'x'.join(map(str, src.out_shape))}, "
                                 f"layer {last.name!r} {'x'.join(map(str, last.out_shape))}; an add needs one shape")
            steps[-1] = replace(last, skip=src.name)
            continue
        if op.op in GLOBAL_POOLS:
            if not steps or flat or host is not None:
                raise ConfigError(f"{where} does not follow a layer's map; a global pool runs on the host "
                                  f"between two layers")
            host, c, h, w = op.op, c, 1, 1
            continue
        if host is not None:
            raise ConfigError(f"{where} follows {host}; put it before the global pool (in the layer before it)")
        if not steps or (flat and op.op != "relu"):
            raise ConfigError(f"{where} does not follow a layer; the engine fuses relu and max pooling into "
                              f"the layer before them")
        last = steps[-1]
        if op.op == "relu":
            steps[-1] = replace(last, relu=True)
        elif op.op == "maxpool2d":
            stride = op.stride or op.kernel
            if last.pool is not None:
                raise ConfigError(f"{where}: layer {last.name!r} already has a fused pooling")
            if last.skip is not None:
                raise ConfigError(f"{where}: layer {last.name!r} has a residual add; the engine does not pool "
                                  f"after an add")
            if not 1 <= op.kernel <= 4 or not 1 <= stride <= 4:
                raise ConfigError(f"{where}: pooling window {op.kernel} step {stride} is outside the engine's "
                                  f"1..4")
            _, ho, wo = last.conv_shape
            if op.kernel > ho or op.kernel > wo:
                raise ShapeError(f"{where}: pooling window {op.kernel} is larger than the {ho}x{wo} map")
            steps[-1] = replace(last, pool=(op.kernel, stride))
            c, h, w = steps[-1].out_shape
        else:
            raise ConfigError(f"{where} after layer {last.name!r} does not run on the engine (it fuses relu "
                              f"and max pooling; the host runs global pools); replace it or run that part on "
                              f"the host")
    if host is not None:
        raise ConfigError(f"network {name!r}: the {host} at the end is not followed by a layer; a global pool "
                          f"runs on the host between two layers")
    if branch is not None:
        raise ConfigError(f"network {name!r}: the input op (from {branch!r}) at the end is not followed by a layer")
    return tuple(steps)


def step_forward_int(step: EngineStep, q: QuantizedLayer, x: np.ndarray, skip: np.ndarray | None = None,
                     relu: bool | None = None) -> np.ndarray:
    """One engine step on an NCHW integer tensor -> NCHW integer tensor (the golden contract);
    ``skip``: the NCHW tensor a residual step adds (:func:`~litefly.fixed.add_skip`) before ReLU.
    ``relu=False`` leaves the ReLU out (calibration)."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != step.in_shape:
        raise ShapeError(f"layer {step.name!r}: input has shape {x.shape}, expected (N, "
                         f"{', '.join(map(str, step.in_shape))})")
    cols = im2col(x, step.kernel, step.stride, step.padding, step.dilation)
    y = q.forward(cols)
    if step.skip is not None:
        if skip is None or q.skip_align is None:
            raise ShapeError(f"layer {step.name!r} adds the output of {step.skip!r}: give the skip tensor and "
                             f"the parameters' skip_align (quantize_network sets it)")
        want = (x.shape[0],) + step.out_shape
        if tuple(np.shape(skip)) != want:
            raise ShapeError(f"layer {step.name!r}: skip has shape {np.shape(skip)}, expected {want}")
        y = add_skip(y, np.asarray(skip).transpose(0, 2, 3, 1).reshape(y.shape), q.skip_align,
                     step.layer.format.act_bits)
    if step.relu if relu is None else relu:
        y = np.maximum(y, 0)
    _, ho, wo = step.conv_shape
    y = col2im(y, x.shape[0], ho, wo)
    if step.pool is not None:
        y = maxpool_int(y, *step.pool)
    return y


def _read_later(steps: Sequence[EngineStep]) -> set[str]:
    """The steps whose outputs a later step reads again: a residual add's skip or a branch's input."""
    return {st.skip for st in steps if st.skip} | {st.src for st in steps if st.src}


def network_forward_int(steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer], x: np.ndarray,
                        on_step: Callable[[EngineStep, np.ndarray], None] | None = None) -> np.ndarray:
    """The int8 golden network: NCHW integers in, NCHW integers of the last step out. A step's
    host op (``step.pre``, a global pool) is applied to its input first (:func:`global_pool_int`)."""
    y = np.asarray(x)
    outs: dict[str, np.ndarray] = {}
    keep = _read_later(steps)
    for step in steps:
        if step.src is not None:
            y = outs[step.src]
        if step.pre is not None:
            y = global_pool_int(y, step.pre)
        y = step_forward_int(step, params[step.name], y, outs.get(step.skip) if step.skip else None)
        if step.name in keep:
            outs[step.name] = y
        if on_step is not None:
            on_step(step, y)
    return y


def check_scales(steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer], rtol: float = 1e-9) -> None:
    """Refuse parameters whose layer input scale is not the output scale of the layer it reads."""
    by_name = {st.name: st for st in steps}
    for prev, b in zip(steps, steps[1:]):
        a = by_name.get(b.src, prev) if b.src else prev
        sa, sb = params[a.name].out_scale, params[b.name].in_scale
        if abs(sa - sb) > rtol * max(abs(sa), abs(sb)):
            raise ConfigError(f"layer {b.name!r} expects input scale {sb:.6g} but layer {a.name!r} outputs at "
                              f"{sa:.6g}: the engine passes int8 tensors unchanged between layers, so quantise "
                              f"the network with chained scales (litefly.network.quantize_network)")


def _residual_scale(step: EngineStep, q: QuantizedLayer, x_int: np.ndarray, skip: np.ndarray,
                    s_skip: float) -> None:
    """Widen a residual step's output scale (its last shift) until the calibration sum
    ``output + skip`` fits the activation range, then set ``q.skip_align`` (in place)."""
    fmt = step.layer.format
    _, amax = int_range(fmt.act_bits)
    q.skip_align = (1, 0)
    y = step_forward_int(step, q, x_int, np.zeros_like(skip), relu=False)      # the output alone
    peak = float(np.max(np.abs(y * q.out_scale + skip * s_skip), initial=0.0))
    top = fmt.acc_bits(step.layer.chain[-1], last=True) - 1
    while peak > amax * q.out_scale and q.shifts[-1] < top:
        q.shifts[-1] += 1
        q.act_scales[-1] *= 2
    q.skip_align = skip_alignment(s_skip / q.out_scale)


def quantize_network(steps: Sequence[EngineStep], weights: Mapping[str, Sequence[np.ndarray]],
                     calib_x: np.ndarray, biases: Mapping[str, np.ndarray | None] | None = None,
                     in_scale: float | None = None, calibration: str = "max") -> dict[str, QuantizedLayer]:
    """Quantise float compact weights layer by layer, each layer calibrated on what the int8
    network feeds it, with its input scale equal to the previous layer's output scale
    (``calibration``: how each factor's shift is chosen, see :func:`litefly.fixed.quantize_layer`)."""
    biases = biases or {}
    params: dict[str, QuantizedLayer] = {}
    x_float = np.asarray(calib_x, dtype=np.float64)
    scale = in_scale
    x_int: np.ndarray | None = None
    outs: dict[str, tuple[np.ndarray, float]] = {}
    keep = _read_later(steps)
    for step in steps:
        if step.src is not None:
            x_int, scale = outs[step.src]
            x_float = x_int * scale
        if step.pre is not None and x_int is not None:
            x_int = global_pool_int(x_int, step.pre)
            x_float = x_int * scale
        cols_f = im2col(x_float, step.kernel, step.stride, step.padding, step.dilation)
        q = quantize_layer(step.layer, weights[step.name], cols_f, bias=biases.get(step.name), in_scale=scale,
                           calibration=calibration)
        params[step.name] = q
        if x_int is None:
            x_int = q.quantize_input(x_float)
        skip = None
        if step.skip is not None:
            skip, s_skip = outs[step.skip]
            _residual_scale(step, q, x_int, skip, s_skip)
        x_int = step_forward_int(step, q, x_int, skip)
        if step.name in keep:
            outs[step.name] = (x_int, q.out_scale)
        scale = q.out_scale
        x_float = x_int * scale
    return params

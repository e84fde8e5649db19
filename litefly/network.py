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

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .config import HostOp, LayerConfig, NetworkConfig
from .errors import ConfigError, ShapeError
from .fixed import QuantizedLayer, quantize_layer

__all__ = ["EngineStep", "output_size", "im2col", "col2im", "plan_network", "step_forward_int",
           "network_forward_int", "maxpool_int", "check_scales", "quantize_network", "network_input_shape"]

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


@dataclass(frozen=True)
class EngineStep:
    """One layer as the engine runs it: the layer, its input shape and the fused output stage."""

    layer: LayerConfig
    in_shape: tuple[int, int, int]          # (C, H, W) of the input tensor
    relu: bool                              # ReLU after requantisation (format.relu or a fused op)
    pool: Pair | None = None                # fused max pooling (kernel, stride)

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
            return self.layer.kernel
        return self.in_shape[1], self.in_shape[2]

    @property
    def stride(self) -> Pair:
        return self.layer.stride if self.layer.kind == "conv2d" else (1, 1)

    @property
    def padding(self) -> Pair:
        return self.layer.padding if self.layer.kind == "conv2d" else (0, 0)

    @property
    def dilation(self) -> Pair:
        return self.layer.dilation if self.layer.kind == "conv2d" else (1, 1)

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
        return EngineStep(layer, self.in_shape, self.relu, self.pool)


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
            step = EngineStep(lay, (c, h, w), relu=lay.format.relu)
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
        if not steps or (flat and op.op != "relu"):
            raise ConfigError(f"{where} does not follow a layer; the engine fuses relu and max pooling into "
                              f"the layer before them")
        last = steps[-1]
        if op.op == "relu":
            steps[-1] = EngineStep(last.layer, last.in_shape, True, last.pool)
        elif op.op == "maxpool2d":
            stride = op.stride or op.kernel
            if last.pool is not None:
                raise ConfigError(f"{where}: layer {last.name!r} already has a fused pooling")
            if not 1 <= op.kernel <= 4 or not 1 <= stride <= 4:
                raise ConfigError(f"{where}: pooling window {op.kernel} step {stride} is outside the engine's "
                                  f"1..4")
            _, ho, wo = last.conv_shape
            if op.kernel > ho or op.kernel > wo:
                raise ShapeError(f"{where}: pooling window {op.kernel} is larger than the {ho}x{wo} map")
            steps[-1] = EngineStep(last.layer, last.in_shape, last.relu, (op.kernel, stride))
            c, h, w = steps[-1].out_shape
        else:
            raise ConfigError(f"{where} after layer {last.name!r} does not run on the engine (it fuses relu "
                              f"and max pooling); replace it or run that part on the host")
    return tuple(steps)


def step_forward_int(step: EngineStep, q: QuantizedLayer, x: np.ndarray) -> np.ndarray:
    """One engine step on an NCHW integer tensor -> NCHW integer tensor (the golden contract)."""
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != step.in_shape:
        raise ShapeError(f"layer {step.name!r}: input has shape {x.shape}, expected (N, "
                         f"{', '.join(map(str, step.in_shape))})")
    cols = im2col(x, step.kernel, step.stride, step.padding, step.dilation)
    y = q.forward(cols)
    if step.relu:
        y = np.maximum(y, 0)
    _, ho, wo = step.conv_shape
    y = col2im(y, x.shape[0], ho, wo)
    if step.pool is not None:
        y = maxpool_int(y, *step.pool)
    return y


def network_forward_int(steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer], x: np.ndarray,
                        on_step: Callable[[EngineStep, np.ndarray], None] | None = None) -> np.ndarray:
    """The int8 golden network: NCHW integers in, NCHW integers of the last step out."""
    y = np.asarray(x)
    for step in steps:
        y = step_forward_int(step, params[step.name], y)
        if on_step is not None:
            on_step(step, y)
    return y


def check_scales(steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer], rtol: float = 1e-9) -> None:
    """Refuse parameters whose layer input scale is not the previous layer's output scale."""
    for a, b in zip(steps, steps[1:]):
        sa, sb = params[a.name].out_scale, params[b.name].in_scale
        if abs(sa - sb) > rtol * max(abs(sa), abs(sb)):
            raise ConfigError(f"layer {b.name!r} expects input scale {sb:.6g} but layer {a.name!r} outputs at "
                              f"{sa:.6g}: the engine passes int8 tensors unchanged between layers, so quantise "
                              f"the network with chained scales (litefly.network.quantize_network)")


def quantize_network(steps: Sequence[EngineStep], weights: Mapping[str, Sequence[np.ndarray]],
                     calib_x: np.ndarray, biases: Mapping[str, np.ndarray | None] | None = None,
                     in_scale: float | None = None) -> dict[str, QuantizedLayer]:
    """Quantise float compact weights layer by layer, each layer calibrated on what the int8
    network feeds it, with its input scale equal to the previous layer's output scale."""
    biases = biases or {}
    params: dict[str, QuantizedLayer] = {}
    x_float = np.asarray(calib_x, dtype=np.float64)
    scale = in_scale
    x_int: np.ndarray | None = None
    for step in steps:
        cols_f = im2col(x_float, step.kernel, step.stride, step.padding, step.dilation)
        q = quantize_layer(step.layer, weights[step.name], cols_f, bias=biases.get(step.name), in_scale=scale)
        params[step.name] = q
        if x_int is None:
            x_int = q.quantize_input(x_float)
        x_int = step_forward_int(step, q, x_int)
        scale = q.out_scale
        x_float = x_int * scale
    return params

"""Quantise a DeBut model for the network engine and export it as litefly configs plus weights.

:func:`export_int8` traces a model whose forward is a sequence of
``DeButConv2d``/``DeButLinear`` layers and the operations the engine fuses (ReLU, max
pooling, the channels-last flatten; dropout and identity are skipped, BatchNorm is folded
into the layer before it) and builds a :class:`~litefly.config.NetworkConfig` that keeps
those ops: :func:`litefly.network.plan_network` fuses them into the layers. The layers are
quantised with **chained scales** (:func:`litefly.network.quantize_network`): each layer is
calibrated on what the int8 network feeds it, and its input scale is the previous layer's
output scale, so layer k's int8 output is layer k+1's input as it stands on the board.

Flatten: the engine keeps tensors channels-last, so its flatten is
``x.permute(0, 2, 3, 1).flatten(1)``. Write it that way, or use :class:`FlattenHWC`. A
channel-major ``nn.Flatten``/``torch.flatten`` of a map with ``H*W > 1`` is refused in one
line naming it (``litefly convert`` replaces it and permutes the next Linear's columns, see
:func:`litefly.convert.channels_last_flatten`); of a ``C x 1 x 1`` map both orders agree.
Global pooling (``nn.AdaptiveAvgPool2d(1)``, ``nn.AdaptiveMaxPool2d(1)``, ``mean``/``amax``
over H and W, or a pooling window that is the whole map) is the host ops ``globalavgpool`` /
``globalmaxpool``, run exactly in integers between two engine layers
(:func:`litefly.network.global_pool_int`). Other average pooling, and anything else the engine
cannot run between layers, is refused in one line naming the operation and the layer.

Residual networks (:func:`trace_steps`): a ``+`` (``torch.add``, ``a.add(b)``, ``out += b``) of the
output of the layer just before it (batch norm folded, no ReLU yet) and an earlier layer's
output is ``{op: add, from: LAYER}`` (the ReLU after it fuses after the add), and a layer that
reads an earlier layer's output rather than the result just before it gets ``{op: input, from:
LAYER}`` in front (a 1x1 projection shortcut, conv -> BN, exports as a DeBut layer like any other).
Option-A shortcuts (subsample and zero-pad channels) are refused in one line: use a projection.

On disk (:func:`save_int8` / :func:`load_int8`): ``DIR/network.yaml`` (layers inline) and
``DIR/<layer>.npz`` (:func:`litefly.fixed.save_quantized`), which is what
``litefly bench DIR/network.yaml --params DIR`` and
``litefly.host.runtime.NetworkRunner`` consume. Before quantising, each chain's factors are
equalised channel by channel (:func:`litefly.fixed.equalize_factors`), which leaves the float
product unchanged and cuts the int8 logit error of the digits demo's network from 18% to 6%.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
import yaml
from torch import nn

from .config import EngineParams, HostOp, LayerConfig, NetworkConfig, NumericFormat, load_network
from .errors import ConfigError, LiteflyError
from .fixed import QuantizedLayer, equalize_factors, load_quantized, save_quantized
from .network import GLOBAL_POOLS, network_forward_int, output_size, plan_network, quantize_network
from .nn import DeButConv2d, DeButLinear

__all__ = ["FlattenHWC", "Branch", "trace_steps", "export_int8", "save_int8", "load_int8", "int8_forward"]


class FlattenHWC(nn.Module):
    """The engine's flatten: channels-last, ``x.permute(0, 2, 3, 1).flatten(1)`` (free on the
    engine, whose tensors are NHWC). Use it instead of ``nn.Flatten`` before a DeBut linear layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.ndim == 4 else x.flatten(1)


@dataclass(frozen=True)
class ChannelMajorFlatten:
    """A channel-major flatten found by :func:`trace_steps` (``nn.Flatten``, ``torch.flatten``):
    the same as the engine's flatten only for a ``C x 1 x 1`` map (:func:`export_int8` checks)."""

    what: str


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (DeButConv2d, DeButLinear, FlattenHWC)) or super().is_leaf_module(m, qualname)


def _layer_name(qualname: str, used: set[str]) -> str:
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in qualname) or "layer"
    if not name[0].isalpha():
        name = "layer_" + name
    base, i = name, 2
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name


@dataclass(frozen=True)
class WindowPool:
    """A pooling with a non-square window found by :func:`trace_steps`: it exports only as a
    global pool, when the window is the whole map (e.g. PointNet's ``MaxPool2d((P, 1))`` over
    ``P x 1`` points); :func:`export_int8` checks the map size."""

    kind: str                       # maxpool2d or avgpool2d
    kernel: tuple[int, int]
    what: str


def _pool_op(kind: str, kernel: Any, stride: Any, padding: Any = 0, where: str = "", what: str = ""
             ) -> HostOp | WindowPool:
    k = kernel if isinstance(kernel, int) else kernel[0]
    s = stride if isinstance(stride, int) else (stride[0] if stride else k)
    if padding not in (0, (0, 0)):
        raise ConfigError(f"{where}: only unpadded pooling exports (got kernel {kernel}, padding {padding})")
    if not isinstance(kernel, int) and len(set(kernel)) != 1:
        return WindowPool(kind, (int(kernel[0]), int(kernel[1])), what)
    return HostOp(op=kind, kernel=int(k), stride=int(s or k))


_GLOBAL = {"mean": "globalavgpool", "amax": "globalmaxpool"}


def _global_reduce(node: torch.fx.Node, name: str, where: str) -> HostOp:
    """``x.mean((2, 3))`` / ``torch.amax(x, (-2, -1), keepdim=True)``: a global pool, or one line."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, (tuple, list)) else dims
    if dims is None or {d + 4 if isinstance(d, int) and d < 0 else d for d in dims} != {2, 3} or \
            set(node.kwargs) - {"dim", "keepdim"}:
        raise ConfigError(f"{where}: {name} over dims {dims} is not a global pool over H and W; only {name} over "
                          f"(2, 3) of an (N, C, H, W) map runs on the host")
    return HostOp(_GLOBAL[name])


def _adaptive_pool(kind: str, size: Any, where: str, what: str) -> HostOp:
    if size not in (1, (1, 1), [1, 1]):
        raise ConfigError(f"{where}: {what} with output size {size} has no engine or host equivalent; only "
                          f"output size 1 (a global pool, run on the host) exports")
    return HostOp(kind)


@dataclass(frozen=True)
class Branch:
    """A residual ``add`` or a branch ``input`` found by :func:`trace_steps`. ``layer`` is the
    index (in the steps) of the layer whose output the engine adds to the output of the layer
    before the add, or which the layer after the input reads instead of the previous result."""

    op: str                         # add | input
    layer: int


_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_ADD_METHODS = ("add", "add_", "__add__", "__iadd__")


def _is_add(node: torch.fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or \
        (node.op == "call_method" and node.target in _ADD_METHODS)


def _is_alias(model: nn.Module, node: torch.fx.Node) -> bool:
    """Operations that pass their input on unchanged at inference (dropout, identity, contiguous)."""
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), (nn.Dropout, nn.Identity))
    if node.op == "call_function":
        return node.target in (F.dropout, operator.pos)
    return node.op == "call_method" and node.target == "contiguous"


def _what(node: torch.fx.Node) -> str:
    t = node.target
    return f"{node.name!r} ({t if isinstance(t, str) else getattr(t, '__name__', t)})"


def _node_step(model: nn.Module, node: torch.fx.Node, where: str, permuted: bool
               ) -> nn.Module | HostOp | ChannelMajorFlatten | WindowPool | str:
    """One single-input node as a step, or ``"permute"`` (a channels-last permute) or ``"bn"``
    (a batch norm, for the caller to fold); one-line refusals for the rest."""
    if node.op == "call_module":
        mod = model.get_submodule(node.target)
        if isinstance(mod, (DeButConv2d, DeButLinear)):
            return mod
        if isinstance(mod, nn.ReLU):
            return HostOp("relu")
        if isinstance(mod, nn.MaxPool2d):
            if mod.dilation not in (1, (1, 1)) or mod.ceil_mode:
                raise ConfigError(f"{where}: MaxPool2d with dilation or ceil_mode does not run on the host")
            return _pool_op("maxpool2d", mod.kernel_size, mod.stride, mod.padding, where,
                            f"{node.target!r} (MaxPool2d)")
        if isinstance(mod, nn.AvgPool2d):
            return _pool_op("avgpool2d", mod.kernel_size, mod.stride, mod.padding, where,
                            f"{node.target!r} (AvgPool2d)")
        if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            kind = "globalavgpool" if isinstance(mod, nn.AdaptiveAvgPool2d) else "globalmaxpool"
            return _adaptive_pool(kind, mod.output_size, where, f"{type(mod).__name__} {node.target!r}")
        if isinstance(mod, FlattenHWC):
            return HostOp("flatten")
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise ConfigError(f"{where}: only Flatten(start_dim=1) is supported")
            return HostOp("flatten") if permuted else ChannelMajorFlatten(f"{node.target!r} (nn.Flatten)")
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return "bn"
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            raise ConfigError(f"{where}: layer {node.target!r} is still a dense {type(mod).__name__}; "
                              f"convert it to DeBut first (litefly convert)")
        raise ConfigError(f"{where}: module {type(mod).__name__} has no engine or host equivalent")
    if node.op in ("call_function", "call_method"):
        fn = node.target
        if fn in (F.relu, torch.relu, "relu", "relu_"):
            return HostOp("relu")
        if fn in (torch.flatten, "flatten") and (node.args[1:] or (node.kwargs.get("start_dim"),)) in ((1,), (1, -1)):
            return HostOp("flatten") if permuted else ChannelMajorFlatten(f"{node.name!r} (torch.flatten)")
        if fn in ("permute", torch.permute) and tuple(node.args[1:] if len(node.args) > 2 else
                                                      (node.args[1:] or [()])[0]) == (0, 2, 3, 1):
            return "permute"
        if fn in (F.max_pool2d, F.avg_pool2d):
            kind = "maxpool2d" if fn is F.max_pool2d else "avgpool2d"
            kernel = node.args[1] if len(node.args) > 1 else node.kwargs.get("kernel_size")
            stride = node.args[2] if len(node.args) > 2 else node.kwargs.get("stride")
            return _pool_op(kind, kernel, stride or kernel, node.kwargs.get("padding", 0), where,
                            f"{node.name!r} ({fn.__name__})")
        if fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) or \
                getattr(fn, "__name__", "") in ("adaptive_max_pool2d", "_adaptive_max_pool2d"):
            kind = "globalavgpool" if fn is F.adaptive_avg_pool2d else "globalmaxpool"
            size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
            return _adaptive_pool(kind, size, where, f"{node.name!r} ({getattr(fn, '__name__', fn)})")
        if fn in (torch.mean, "mean", torch.amax, "amax"):
            return _global_reduce(node, fn if isinstance(fn, str) else fn.__name__, where)
        name = getattr(fn, "__name__", fn)
        hint = ("; an option-A shortcut (subsample and zero-pad the channels) does not run on the engine: use a "
                "1x1 projection shortcut (conv -> BN, option B, as litefly.zoo.BasicBlock)"
                if fn in (F.pad, operator.getitem, "__getitem__") else "")
        raise ConfigError(f"{where}: function {name!r} has no engine or host equivalent{hint}")
    raise ConfigError(f"{where}: unsupported graph node kind {node.op!r}")


Step = nn.Module | HostOp | ChannelMajorFlatten | WindowPool | Branch


def trace_steps(model: nn.Module) -> list[tuple[str, Step]]:
    """The model's forward as ``(qualified name, step)`` pairs in order; a step is a DeBut
    module, a :class:`HostOp`, a :class:`ChannelMajorFlatten`, a :class:`WindowPool` or a
    :class:`Branch`. ``x.permute(0, 2, 3, 1)`` followed by a flatten, and :class:`FlattenHWC`,
    are the channels-last ``flatten`` op. ``nn.AdaptiveAvgPool2d(1)``, ``nn.AdaptiveMaxPool2d(1)``
    (and their functions) and ``mean``/``amax`` over dims (2, 3) are the host's
    ``globalavgpool``/``globalmaxpool``; a pooling window that is the whole map becomes one at
    export (:func:`export_int8` knows the map sizes).

    Residual networks: ``a + b`` (``torch.add``, ``a.add(b)``, ``out += b``) where ``a`` is the
    result of the operation just before (a layer's output, BN folded, no ReLU yet) and ``b`` an
    earlier layer's output becomes ``Branch("add", b's layer)``; a layer that reads an earlier
    layer's output instead of the result just before it (a projection shortcut, or a block's
    first conv after it) gets ``Branch("input", that layer)`` before it. Dropout and identity
    pass their input on. Everything else that is not a straight chain is refused in one line
    naming the operation and the layer."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds
        raise LiteflyError(f"export: cannot trace the model's forward with torch.fx ({exc})") from None
    steps: list[tuple[str, Step]] = []
    tail: torch.fx.Node | None = None       # the node whose value the steps so far compute
    alias: dict[torch.fx.Node, torch.fx.Node] = {}          # dropout/identity -> its input
    value: dict[torch.fx.Node, tuple[int, int]] = {}        # node -> (layer index, version) it equals
    version: dict[int, int] = {}            # each op fused into a layer gives its output a new version
    permuted = None         # a pending x.permute(0, 2, 3, 1): the next step must flatten

    def real(n: torch.fx.Node) -> torch.fx.Node:
        while n in alias:
            n = alias[n]
        return n

    def uses(n: torch.fx.Node) -> int:
        return sum(uses(u) if u in alias else 1 for u in n.users)

    def layer_of(n: torch.fx.Node) -> int | None:
        """The layer whose engine output ``n`` is (no op fused into it since), or None."""
        v = value.get(n)
        return v[0] if v is not None and version[v[0]] == v[1] else None

    def last_layer() -> str:
        return next((q for q, s in reversed(steps) if isinstance(s, (DeButConv2d, DeButLinear))), "(none)")

    def fuse(n: torch.fx.Node, node: torch.fx.Node, what: str) -> None:
        """``node`` applies an op to layer output ``n``: the layer's output changes, so ``n`` must
        have no other use (the engine keeps only the output after the op)."""
        lay = layer_of(n)
        if lay is None:
            return
        if uses(n) > 1:
            raise ConfigError(f"export: {what} after layer {steps[lay][0]!r} changes its output, which "
                              f"{n.name!r} also passes to another operation; the engine keeps only the output "
                              f"after {what}")
        version[lay] += 1
        value[node] = (lay, version[lay])

    for node in graph.nodes:
        if node.op == "placeholder":
            if tail is not None:
                raise LiteflyError(f"export: the model takes a second input {node.name!r}; only one input exports")
            tail = node
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, torch.fx.Node) or real(out) is not tail:
                raise LiteflyError("export: the model's output is not the last operation of a straight chain of "
                                   "layers and residual adds")
            break
        where = f"export: {node.name!r} after layer {last_layer()!r}" if steps else f"export: {node.name!r}"
        ins = [real(a) for a in (*node.args, *node.kwargs.values()) if isinstance(a, torch.fx.Node)]
        if _is_alias(model, node) and len(ins) == 1:
            alias[node] = ins[0]
            continue
        if permuted is not None and not (len(ins) == 1 and ins[0] is permuted):
            raise ConfigError(f"export: {permuted.name!r} (permute(0, 2, 3, 1)) is not followed by a flatten; "
                              f"only the channels-last flatten x.permute(0, 2, 3, 1).flatten(1) exports")
        if _is_add(node):
            a, b = (ins + [None, None])[:2]
            if len(ins) != 2 or len(node.args) + len(node.kwargs) != 2:
                raise ConfigError(f"{where}: the add adds a constant or scales an "
                                  f"operand; only the sum of two layer outputs (a residual add) exports")
            if b is tail:
                a, b = b, a
            lay, src = layer_of(a), layer_of(b)
            if a is not tail or lay is None:
                raise ConfigError(f"{where}: the engine adds a skip to the "
                                  f"output of the layer just before the add, and neither {a.name!r} nor {b.name!r} "
                                  f"is that output")
            if src is None or src == lay:
                kept = "the network input" if b.op == "placeholder" else repr(b.name)
                raise ConfigError(f"{where} adds {kept}, which is not an "
                                  f"earlier layer's output; the engine adds an earlier layer's output (an identity "
                                  f"or projection shortcut), so only straight chains of layers and such residual "
                                  f"adds export")
            fuse(a, node, "the add")
            steps.append((node.name, Branch("add", src)))
            tail = node
            continue
        if len(ins) != 1:
            raise LiteflyError(f"export: operation {_what(node)} after layer {last_layer()!r} takes {len(ins)} "
                               f"tensors; only straight chains of layers, the ops between them and residual adds "
                               f"(a + b) export")
        a = ins[0]
        step = _node_step(model, node, where, permuted is not None)
        if a is not tail:
            src = layer_of(a)
            if not isinstance(step, (DeButConv2d, DeButLinear)) or src is None:
                kept = "the network input" if a.op == "placeholder" else repr(a.name)
                raise LiteflyError(
                    f"export: operation {_what(node)} reads {kept}, which is neither the result of the operation "
                    f"before it (after layer {last_layer()!r}) nor a layer's output the engine keeps; only straight "
                    f"chains of layers, residual adds and layers reading an earlier layer's output export")
            steps.append((node.name, Branch("input", src)))
        if step == "permute":
            permuted = node
            tail = node
            continue
        permuted = None
        if step == "bn":
            mod = model.get_submodule(node.target)
            lay = layer_of(a)
            if lay is None or lay != len(steps) - 1:
                raise ConfigError(f"{where}: {type(mod).__name__} {node.target!r} does not follow a DeBut "
                                  f"layer directly, so it cannot be folded")
            from .fold import fold_batchnorm
            fuse(a, node, f"{type(mod).__name__} {node.target!r}")
            steps[lay] = (steps[lay][0], fold_batchnorm(steps[lay][1], mod))
        elif isinstance(step, (DeButConv2d, DeButLinear)):
            value[node] = (len(steps), 0)
            version[len(steps)] = 0
            steps.append((str(node.target), step))
        else:
            if isinstance(step, HostOp) and step.op in ("relu", "maxpool2d"):
                fuse(a, node, _what(node))
            steps.append((str(node.target), step))
        tail = node
    return steps


def _layer_config(name: str, mod: DeButConv2d | DeButLinear, relu: bool, fmt: NumericFormat,
                  engine: EngineParams) -> LayerConfig:
    form = replace(fmt, bias=mod.bias is not None, relu=relu)
    if isinstance(mod, DeButLinear):
        return LayerConfig(name=name, kind="linear", in_features=mod.in_features, out_features=mod.out_features,
                           chain=mod.chain, format=form, engine=engine)
    return LayerConfig(name=name, kind="conv2d", in_features=mod.in_channels, out_features=mod.out_channels,
                       chain=mod.chain, format=form, engine=engine, kernel=mod.kernel_size, stride=mod.stride,
                       padding=mod.padding, dilation=mod.dilation)


def _input_shape(network: NetworkConfig, x: np.ndarray) -> tuple[int, int, int]:
    first = network.layers[0]
    if first.kind == "linear":
        return first.in_features, 1, 1
    if x.ndim != 4:
        raise ConfigError(f"network {network.name!r}: input has shape {x.shape}, expected (N, C, H, W)")
    return int(x.shape[1]), int(x.shape[2]), int(x.shape[3])


def int8_forward(network: NetworkConfig, params: Mapping[str, QuantizedLayer], x: np.ndarray) -> np.ndarray:
    """The int8 golden network on float input, as the engine computes it: the input quantised
    once at the first layer's scale, :func:`litefly.network.network_forward_int` (ReLU and max
    pooling fused, channels-last flatten), the output dequantised once. Same shape and values
    as :meth:`litefly.host.runtime.NetworkRunner.run`."""
    x = np.asarray(x, dtype=np.float64)
    in_shape = _input_shape(network, x)
    steps = plan_network(network, in_shape)
    first, last = params[steps[0].name], params[steps[-1].name]
    y = network_forward_int(steps, params, first.quantize_input(x.reshape((x.shape[0],) + in_shape)))
    if network.layers[-1].kind == "linear" and y.shape[2:] == (1, 1):
        y = y.reshape(y.shape[0], -1)
    return y * last.out_scale


def _resolve_flattens(steps: list, in_shape: tuple[int, int, int]) -> list:
    """Channel-major flattens of a ``C x 1 x 1`` map become the flatten op; of a larger map, one
    line naming the op and the DeBut layer it feeds, with the fix. A pooling whose window is the
    whole map becomes the host's global pool (max pooling only where the engine cannot fuse it:
    a window above 4); any other average pooling or non-square window is refused in one line."""
    c, h, w = in_shape
    prev_layer = None
    out = []
    cur: int | None = None                              # the layer whose output (c, h, w) is
    shape_of: dict[int, tuple[int, int, int]] = {}      # each layer's output shape after its fused ops
    for i, (qual, step) in enumerate(steps):
        if isinstance(step, Branch):
            if step.op == "input":
                cur, prev_layer = step.layer, steps[step.layer][0]
                c, h, w = shape_of[cur]
            out.append((qual, step))
            continue
        if isinstance(step, (DeButConv2d, DeButLinear)):
            cur = i
            if isinstance(step, DeButLinear):
                c, h, w = step.out_features, 1, 1
            else:
                h, w = output_size(h, w, step.kernel_size, step.stride, step.padding, step.dilation)
                c = step.out_channels
            prev_layer = qual
        elif isinstance(step, ChannelMajorFlatten):
            nxt = next((q for q, s in steps[i + 1:] if isinstance(s, (DeButConv2d, DeButLinear))), None)
            if h * w > 1:
                raise ConfigError(
                    f"export: {step.what} flattens a {c}x{h}x{w} map channel-major before DeBut layer {nxt!r}, "
                    f"but the engine flattens channels-last: use litefly.export.FlattenHWC() (or "
                    f"x.permute(0, 2, 3, 1).flatten(1)) and permute {nxt!r}'s input columns to match, or convert "
                    f"the dense model with `litefly convert`, which does both")
            step = HostOp("flatten")
            c, h, w = c * h * w, 1, 1
        elif isinstance(step, WindowPool):
            if step.kernel != (h, w):
                raise ConfigError(f"export: {step.what} after layer {prev_layer!r} has a {step.kernel[0]}x"
                                  f"{step.kernel[1]} window on a {h}x{w} map; only square windows (max pooling, "
                                  f"fused on the engine) or a window over the whole map (a global pool on the "
                                  f"host) export")
            step = HostOp("global" + step.kind[:3] + "pool")
            h, w = 1, 1
        elif isinstance(step, HostOp):
            if step.op in ("avgpool2d", "maxpool2d") and step.kernel == h == w and \
                    (step.op == "avgpool2d" or step.kernel > 4):
                step = HostOp("global" + step.op[:3] + "pool")      # the window is the whole map
            if step.op == "avgpool2d":
                raise ConfigError(f"export: {qual!r} (average pooling) after layer {prev_layer!r} does not run on "
                                  f"the engine, which fuses only ReLU and max pooling, and its {step.kernel}x"
                                  f"{step.kernel} window is not the whole {h}x{w} map (a global pool, run on the "
                                  f"host); use max pooling, or end the exported part before it")
            if step.op in ("globalavgpool", "globalmaxpool"):
                h, w = 1, 1
            elif step.op == "maxpool2d":
                k, st = step.kernel, step.stride or step.kernel
                h, w = (h - k) // st + 1, (w - k) // st + 1
            elif step.op == "flatten":
                c, h, w = c * h * w, 1, 1
        if isinstance(step, HostOp) and step.op in ("flatten",) + GLOBAL_POOLS:
            cur = None
        if cur is not None:
            shape_of[cur] = (c, h, w)
        out.append((qual, step))
    return out


def export_int8(model: nn.Module, calib_x: torch.Tensor | np.ndarray, name: str = "network",
                fmt: NumericFormat | None = None, engine: EngineParams | None = None, equalize: bool = True,
                calibration: str = "max", modules: dict[str, nn.Module] | None = None
                ) -> tuple[NetworkConfig, dict[str, QuantizedLayer]]:
    """Trace, quantise with chained scales (calibrating on ``calib_x``, e.g. training images)
    and return the network and its parameters ``{layer name: QuantizedLayer}``.

    The network keeps its ReLU and max-pooling ops (:func:`litefly.network.plan_network` fuses
    them into the layers). ``equalize`` first balances each chain's factors channel by channel
    (:func:`litefly.fixed.equalize_factors`; the float layer is unchanged), which shrinks the
    int8 error of chains whose factors have very uneven channel ranges. ``calibration``: ``max``
    (no value clips) or ``mse`` (each shift may clip the largest values when that lowers the
    mean square error on ``calib_x``; :func:`litefly.fixed.quantize_layer`). ``modules``, when
    given, receives ``{layer name: DeBut module}``."""
    if calibration not in ("max", "mse"):
        raise ConfigError(f"export: calibration {calibration!r} is not one of 'max', 'mse'")
    fmt = fmt or NumericFormat()
    engine = engine or EngineParams()
    model = model.eval()
    x = calib_x.detach().cpu().double().numpy() if isinstance(calib_x, torch.Tensor) else np.asarray(calib_x, float)
    steps = trace_steps(model)
    if not any(isinstance(m, (DeButConv2d, DeButLinear)) for _, m in steps):
        raise ConfigError("export: the model has no DeBut layer")
    first = next(m for _, m in steps if isinstance(m, (DeButConv2d, DeButLinear)))
    in_shape = (first.in_features, 1, 1) if isinstance(first, DeButLinear) and x.ndim == 2 else \
        tuple(int(v) for v in x.shape[1:])
    if len(in_shape) != 3:
        raise ConfigError(f"export: calibration input has shape {x.shape}, expected (N, C, H, W) or (N, features)")
    steps = _resolve_flattens(steps, in_shape)
    used: set[str] = set()
    plan: list[LayerConfig | HostOp] = []
    modules_by_name: dict[str, nn.Module] = {}
    names: dict[int, str] = {}
    for i, (qual, step) in enumerate(steps):
        if isinstance(step, HostOp):
            plan.append(step)
            continue
        if isinstance(step, Branch):
            plan.append(HostOp(step.op, source=names[step.layer]))
            continue
        layer = _layer_config(_layer_name(qual, used), step, False, fmt, engine)
        names[i] = layer.name
        modules_by_name[layer.name] = step
        plan.append(layer)
    size = (in_shape[1], in_shape[2]) if isinstance(first, DeButConv2d) else None
    network = NetworkConfig(name=name, steps=tuple(plan), input_size=size)
    try:
        esteps = plan_network(network, in_shape)
    except ConfigError as exc:
        raise ConfigError(f"export: {exc}") from None
    weights, biases = {}, {}
    for st in esteps:
        mod = modules_by_name[st.name]
        w = mod.compact_numpy()
        weights[st.name] = equalize_factors(st.layer.chain, w) if equalize else w
        biases[st.name] = mod.bias.detach().double().numpy() if mod.bias is not None else None
    params = quantize_network(esteps, weights, x.reshape((x.shape[0],) + in_shape), biases, calibration=calibration)
    if modules is not None:
        modules.update(modules_by_name)
    return network, params


def save_int8(network: NetworkConfig, params: Mapping[str, QuantizedLayer], out_dir: str | Path) -> Path:
    """Write ``network.yaml`` and one ``<layer>.npz`` per layer; returns the YAML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "network.yaml"
    path.write_text("# litefly int8 export: run with `litefly bench network.yaml --params .`\n"
                    + yaml.safe_dump(network.to_dict(), sort_keys=False, default_flow_style=None))
    for layer in network.layers:
        save_quantized(params[layer.name], out / f"{layer.name}.npz")
    return path


def load_int8(out_dir: str | Path) -> tuple[NetworkConfig, dict[str, QuantizedLayer]]:
    """Load what :func:`save_int8` wrote (config hashes are checked)."""
    out = Path(out_dir)
    network = load_network(out / "network.yaml")
    return network, {l.name: load_quantized(l, out / f"{l.name}.npz") for l in network.layers}

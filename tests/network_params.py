"""Seeded random quantised parameters for a network, with chained scales (litefly.network.quantize_network)."""

from __future__ import annotations

import numpy as np

from litefly.config import LayerConfig, NetworkConfig
from litefly.fixed import QuantizedLayer, quantize_layer, random_float_weights
from litefly.network import im2col, network_forward_int, network_input_shape, plan_network, quantize_network


def random_quantized(layer: LayerConfig, x: np.ndarray, rng: np.random.Generator) -> QuantizedLayer:
    """Random weights (and bias, if the format has one) of one layer, quantised on the columns of ``x``
    (NCHW for a conv layer, ``(n, in_features)`` for a linear one)."""
    x = np.asarray(x, dtype=np.float64)
    cols = im2col(x, layer.kernel, layer.stride, layer.padding, layer.dilation) if layer.kind == "conv2d" else \
        x.reshape(x.shape[0], -1)
    bias = rng.standard_normal(layer.chain_out) * 0.3 if layer.format.bias else None
    return quantize_layer(layer, random_float_weights(layer, rng), cols, bias=bias)


def calibrated_network_params(network: NetworkConfig, x: np.ndarray, rng: np.random.Generator
                              ) -> tuple[dict[str, QuantizedLayer], np.ndarray]:
    """Parameters for every layer with chained scales, each calibrated on what the int8 network
    feeds it, and the int8 golden network's float output for ``x`` (what ``NetworkRunner.run`` returns)."""
    x = np.asarray(x, dtype=np.float64)
    size = tuple(x.shape[2:]) if x.ndim == 4 else None
    in_shape = network_input_shape(network, size)
    steps = plan_network(network, in_shape)
    x4 = x.reshape((x.shape[0],) + in_shape)
    weights = {s.name: random_float_weights(s.layer, rng) for s in steps}
    biases = {s.name: rng.standard_normal(s.layer.chain_out) * 0.3 if s.layer.format.bias else None for s in steps}
    params = quantize_network(steps, weights, x4, biases)
    y = network_forward_int(steps, params, params[steps[0].name].quantize_input(x4))
    if steps[-1].layer.kind == "linear" and y.shape[2:] == (1, 1):
        y = y.reshape(y.shape[0], -1)
    return params, y * params[steps[-1].name].out_scale

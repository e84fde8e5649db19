"""Seeded random quantised parameters for a network, each layer calibrated on what reaches it."""

from __future__ import annotations

import numpy as np

from litefly.config import LayerConfig, NetworkConfig
from litefly.fixed import QuantizedLayer, quantize_layer, random_float_weights
from litefly.host.im2col import layer_im2col
from litefly.host.runtime import network_forward, run_layer


def random_quantized(layer: LayerConfig, x: np.ndarray, rng: np.random.Generator) -> QuantizedLayer:
    """Random weights (and bias, if the format has one) quantised on the columns of ``x``."""
    cols, _ = layer_im2col(layer, x)
    bias = rng.standard_normal(layer.chain_out) * 0.3 if layer.format.bias else None
    return quantize_layer(layer, random_float_weights(layer, rng), cols, bias=bias)


def calibrated_network_params(network: NetworkConfig, x: np.ndarray, rng: np.random.Generator
                              ) -> tuple[dict[str, QuantizedLayer], np.ndarray]:
    """Parameters for every layer, calibrated on the golden activations reaching it, and the
    golden network output for ``x``."""
    params: dict[str, QuantizedLayer] = {}

    def calibrate(layer: LayerConfig, h: np.ndarray) -> np.ndarray:
        params[layer.name] = q = random_quantized(layer, h, rng)
        return run_layer(layer, q, h, "golden")

    return params, network_forward(network, x, calibrate)

"""Run layers and networks on an engine backend: ``golden`` (numpy model), ``sim``
(cocotb + Verilator) or ``pynq`` (a board). Board-safe: numpy only at import time.

Stable API (used by the demos and ``litefly bench``; ``docs/host.md``):

* :func:`run_columns` ``(layer, qlayer, cols_int, backend, **opts) -> (y_int, stats)``
* :func:`run_layer` ``(layer, qlayer, x_float, backend, **opts) -> y_float``
* :class:`NetworkRunner` ``(network, params, backend, **opts)`` with ``.run(x_float)``,
  ``.run_int(x_int)`` and ``.stats`` (one dict per layer of the last run).

``stats`` holds: ``backend``, ``cycles`` (engine CYCLES counter, accumulated to 64 bits),
``counters`` (raw registers), ``timings`` (host seconds per stage), ``bytes_in``,
``bytes_out``, ``param_bytes``, ``tiles``, ``columns``, ``wall_s``, and for ``sim`` the
``clock_mhz`` the simulated time refers to.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from litefly.config import HostOp, LayerConfig, NetworkConfig
from litefly.errors import LiteflyError
from litefly.fixed import QuantizedLayer

from .driver import EngineDriver
from .hostops import apply_host_op
from .im2col import layer_col2im, layer_im2col

__all__ = ["BACKENDS", "drive", "run_columns", "run_layer", "layer_forward", "network_forward", "NetworkRunner"]

BACKENDS = ("golden", "sim", "pynq")


def drive(driver: EngineDriver, qlayer: QuantizedLayer, cols: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The whole per-layer host sequence on an open driver: identity, parameters, columns, counters."""
    t0 = time.perf_counter()
    driver.check_identity()
    driver.clear_counters()
    driver.load_params(qlayer)
    driver.reset_stats()
    y = driver.run_columns(cols)
    stats = {
        "backend": getattr(driver.transport, "name", "?"),
        "cycles": driver.cycles,
        "counters": driver.counters(),
        "timings": dict(driver.timings),
        "bytes_in": driver.bytes_in,
        "bytes_out": driver.bytes_out,
        "param_bytes": driver.param_bytes,
        "tiles": driver.tiles_run,
        "columns": int(cols.shape[0]),
        "wall_s": time.perf_counter() - t0,
    }
    return y, stats


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LiteflyError(f"backend {backend!r} is not known; expected one of {', '.join(BACKENDS)}")


def run_columns(layer: LayerConfig, qlayer: QuantizedLayer, cols: np.ndarray, backend: str = "golden",
                **opts: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Integer columns ``(n, chain_in)`` through ``layer``'s engine on ``backend``."""
    _check_backend(backend)
    timeout = opts.pop("timeout", 2.0)
    if backend == "sim":
        from .sim_transport import run_columns_sim
        return run_columns_sim(layer, qlayer, cols, timeout=timeout, **opts)
    if backend == "golden":
        from .golden_transport import GoldenTransport
        transport = GoldenTransport(layer, **opts)
    else:
        from .pynq_transport import PynqTransport
        transport = PynqTransport.for_layer(layer, **opts)
    driver = EngineDriver(transport, layer, timeout=timeout)
    try:
        return drive(driver, qlayer, cols)
    finally:
        driver.close()
        transport.close()


def run_layer(layer: LayerConfig, qlayer: QuantizedLayer, x: np.ndarray, backend: str = "golden",
              **opts: Any) -> np.ndarray:
    """Float input (NCHW for conv2d, ``(n, features)`` for linear) -> float output, through the engine."""
    y, _ = _run_layer_float(layer, qlayer, x, backend, opts)
    return y


def layer_forward(layer: LayerConfig, x: np.ndarray, run_rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """One layer on float input: im2col, ``run_rows(float columns) -> float output rows``, col2im."""
    cols, geom = layer_im2col(layer, np.asarray(x, dtype=np.float64))
    return layer_col2im(layer, run_rows(cols), geom)


def network_forward(network: NetworkConfig, x: np.ndarray,
                    run_layer_fn: Callable[[LayerConfig, np.ndarray], np.ndarray]) -> np.ndarray:
    """The network's steps in order: host ops in numpy, layers by ``run_layer_fn(layer, x)``."""
    y = np.asarray(x, dtype=np.float64)
    for step in network.steps:
        y = apply_host_op(step, y) if isinstance(step, HostOp) else run_layer_fn(step, y)
    return y


def _run_layer_float(layer, qlayer, x, backend, opts) -> tuple[np.ndarray, dict[str, Any]]:
    stats: dict[str, Any] = {}

    def run_rows(cols: np.ndarray) -> np.ndarray:
        yi, st = run_columns(layer, qlayer, qlayer.quantize_input(cols), backend, **dict(opts))
        stats.update(st)
        return qlayer.dequantize_output(yi)

    return layer_forward(layer, x, run_rows), stats


class NetworkRunner:
    """Run a :class:`~litefly.config.NetworkConfig` layer after layer on one backend.

    ``params`` maps each layer's name to its :class:`~litefly.fixed.QuantizedLayer`.
    Between layers, activations are dequantised floats; host ops run on them in numpy.
    """

    def __init__(self, network: NetworkConfig, params: Mapping[str, QuantizedLayer], backend: str = "sim",
                 **backend_opts: Any) -> None:
        _check_backend(backend)
        for lay in network.layers:
            q = params.get(lay.name)
            if q is None:
                raise LiteflyError(f"network {network.name!r}: no parameters for layer {lay.name!r}")
            if q.layer.config_hash != lay.config_hash:
                raise LiteflyError(f"network {network.name!r}: parameters for {lay.name!r} are for another "
                                   f"config (0x{q.layer.hash32:08x}, expected 0x{lay.hash32:08x})")
        self.network, self.params, self.backend, self.opts = network, dict(params), backend, backend_opts
        self.stats: list[dict[str, Any]] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float input of the first layer -> float output of the last step."""
        self.stats = []

        def run(layer: LayerConfig, y: np.ndarray) -> np.ndarray:
            y, st = _run_layer_float(layer, self.params[layer.name], y, self.backend, self.opts)
            st["layer"] = layer.name
            self.stats.append(st)
            return y

        return network_forward(self.network, x, run)

    def run_int(self, x_int: np.ndarray) -> np.ndarray:
        """Integer input at the first layer's input scale -> integer output at the last layer's output scale."""
        layers = self.network.layers
        first, last = self.params[layers[0].name], self.params[layers[-1].name]
        if not np.issubdtype(np.asarray(x_int).dtype, np.integer):
            raise LiteflyError(f"run_int: input dtype {np.asarray(x_int).dtype} is not an integer type")
        y = self.run(np.asarray(x_int, dtype=np.float64) * first.in_scale)
        return np.floor(y / last.out_scale + 0.5).astype(np.int64)

"""Host-side cost per column on this CPU: im2col, packing, unpacking, col2im (numpy only).

Runs the driver on the golden transport (engine time excluded: only host stages are
reported) for each layer of a network. Usage:

    python scripts/bench_host.py examples/vgg_net.yaml --input-size 32 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from litefly.config import HostOp, load_network
from litefly.fixed import quantize_layer, random_float_weights
from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.hostops import apply_host_op
from litefly.host.im2col import layer_col2im, layer_im2col


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--input-size", type=int, nargs=2, default=(32, 32))
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    net = load_network(a.config)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.batch, net.layers[0].in_channels, *a.input_size))
    print(f"{'layer':12s} {'columns':>8s} {'im2col':>9s} {'pack':>9s} {'copy_in':>9s} {'unpack':>9s} "
          f"{'col2im':>9s}  (us per column; pack MB/s)")
    for step in net.steps:
        if isinstance(step, HostOp):
            x = apply_host_op(step, x)
            continue
        t0 = time.perf_counter()
        cols, geom = layer_im2col(step, x)
        t_im2col = time.perf_counter() - t0
        q = quantize_layer(step, random_float_weights(step, rng), cols)
        xi = q.quantize_input(cols)
        d = EngineDriver(GoldenTransport(step), step)
        d.load_params(q)
        d.reset_stats()
        y = d.run_columns(xi)
        t0 = time.perf_counter()
        out = layer_col2im(step, y, geom)
        t_col2im = time.perf_counter() - t0
        n = cols.shape[0]
        us = {k: v / n * 1e6 for k, v in d.timings.items()}
        print(f"{step.name:12s} {n:8d} {t_im2col / n * 1e6:9.3f} {us['pack']:9.3f} {us['copy_in']:9.3f} "
              f"{us['unpack']:9.3f} {t_col2im / n * 1e6:9.3f}  ({d.bytes_in / d.timings['pack'] / 1e6:.0f} MB/s)")
        x = q.dequantize_output(out)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Host time per inference against the engine's, on one network engine (numpy only).

Runs a network through ``NetworkRunner`` on the golden transport (the engine model) at each
batch size and prints, for the run with the least host time of ``--repeats`` after a warm-up,
the host's stages (quantize, copy_in, dispatch, copy_out, unpack; the DMA/engine wait apart),
the engine time at ``--clock-mhz`` (cycle model) and their ratio. Usage:

    python scripts/bench_host.py examples/vgg_net.yaml --input-size 32 32 --batch 1 8 32
"""

from __future__ import annotations

import argparse

import numpy as np

from litefly.config import load_network
from litefly.fixed import random_float_weights
from litefly.host.driver import STAGES
from litefly.host.runtime import NetworkRunner
from litefly.network import network_input_shape, plan_network, quantize_network


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--input-size", type=int, nargs=2, default=(32, 32))
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--clock-mhz", type=float, default=100.0)
    a = ap.parse_args()
    net = load_network(a.config)
    in_shape = network_input_shape(net, tuple(a.input_size))
    steps = plan_network(net, in_shape)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((2,) + in_shape)
    params = quantize_network(steps, {s.name: random_float_weights(s.layer, rng) for s in steps}, calib,
                              {s.name: rng.standard_normal(s.layer.chain_out) * 0.3 if s.layer.format.bias else None
                               for s in steps})
    runner = NetworkRunner(net, params, "golden", input_size=tuple(a.input_size), clock_mhz=a.clock_mhz)
    host_stages = [s for s in STAGES if s != "wait"]
    print(f"{'batch':>5s} " + " ".join(f"{s + ' us':>12s}" for s in host_stages)
          + f" {'host us':>9s} {'engine us':>10s} {'host/engine':>11s} {'transfers':>9s}")
    for batch in a.batch:
        x = rng.standard_normal((batch,) + in_shape)
        runner.run(x)
        best = None
        for _ in range(a.repeats):
            runner.run(x)
            st = runner.total["host_stage[s]"]
            host = sum(st[s] for s in host_stages)
            if best is None or host < best[0]:
                best = (host, dict(st))
        host, st = best
        engine = runner.total["engine_s"]
        print(f"{batch:5d} " + " ".join(f"{st[s] * 1e6:12.1f}" for s in host_stages)
              + f" {host * 1e6:9.1f} {engine * 1e6:10.1f} {host / engine:11.3f} {runner.total['transfers']:9d}")


if __name__ == "__main__":
    main()

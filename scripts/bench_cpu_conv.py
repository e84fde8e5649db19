#!/usr/bin/env python
"""CPU micro-benchmark: DeButConv2d forward against F.conv2d on the same layer (torch, this machine).

For three published VGG-CIFAR100 chains, times the DeBut forward (im2col + one einsum per
factor) and F.conv2d with the dense reconstruction of the same weights, on a CIFAR-size
input, and prints the ratios measured in this one run.

    python scripts/bench_cpu_conv.py [--batch 8] [--size 32] [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table

from litefly.cli.output import console
from litefly.config import load_layer
from litefly.nn import from_layer

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table = Table(title=f"DeButConv2d vs F.conv2d on this CPU (torch {torch.__version__}, {args.threads} threads, "
                        f"batch {args.batch}, {args.size}x{args.size}; best of {args.repeats})")
    for col in ("layer", "MAC reduction", "DeBut ms", "conv2d ms", "conv2d / DeBut"):
        table.add_column(col, justify="right")
    with torch.no_grad():
        for name in ("vgg_conv1", "vgg_conv2", "vgg_conv3"):
            layer = load_layer(ROOT / "examples" / "layers" / f"{name}.yaml")
            mod = from_layer(layer).eval()
            w = mod.dense_weight()
            x = torch.randn(args.batch, layer.in_channels, args.size, args.size)
            torch.testing.assert_close(mod(x), F.conv2d(x, w, mod.bias, stride=mod.stride, padding=mod.padding),
                                       rtol=1e-3, atol=1e-3)
            t_debut = timed(lambda: mod(x), args.repeats)
            t_conv = timed(lambda: F.conv2d(x, w, mod.bias, stride=mod.stride, padding=mod.padding), args.repeats)
            table.add_row(name, f"{layer.mac_reduction:.2f}x", f"{1e3 * t_debut:.2f}", f"{1e3 * t_conv:.2f}",
                          f"{t_conv / t_debut:.2f}x")
    console().print(table)


if __name__ == "__main__":
    main()

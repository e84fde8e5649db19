#!/usr/bin/env python
"""CPU training benchmark: DeButConv2d forward+backward against F.conv2d on the same layer.

For the three VGG example layers (``examples/layers/vgg_conv1..3.yaml``), times one
forward+backward pass (loss = sum of outputs; gradients for the input and every parameter) of

* ``DeButConv2d`` in its automatic form (``mode="auto"``: the cost model picks, per shape,
  factor-by-factor einsums or the dense weight formed from the factors + ``F.conv2d``),
* the factor-by-factor form alone (``mode="factors"``, what every forward did before),
* ``F.conv2d`` with a dense weight parameter of the same shape (the baseline),

checks that both DeBut forms agree with each other and with ``F.conv2d`` on the product of the
factors, and prints the ratios measured in this one run.

    python scripts/bench_train_conv.py [--batch 8] [--size 32] [--repeats 10] [--threads 1]

Times are the best of ``--repeats`` rounds; within a round the DeBut layer and F.conv2d run
in turn, so the ratios hold on a shared machine better than the absolute times.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from litefly.config import load_layer
from litefly.nn import from_layer

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("vgg_conv1", "vgg_conv2", "vgg_conv3")


def timed(fns, repeats: int) -> list[float]:
    """Best wall time of each function over ``repeats`` rounds after two warm-up rounds; the
    functions are called in turn within each round, so a load change on a shared machine hits
    them alike."""
    for _ in range(2):
        for fn in fns:
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    table = Table(title=f"forward+backward, DeButConv2d vs F.conv2d (torch {torch.__version__}, {args.threads} "
                        f"thread(s), batch {args.batch}, {args.size}x{args.size}; best of {args.repeats})")
    for col in ("layer", "MAC reduction", "auto form", "DeBut auto ms", "DeBut factors ms", "conv2d ms",
                "auto / conv2d", "factors / conv2d"):
        table.add_column(col, justify="right")
    for name in LAYERS:
        layer = load_layer(ROOT / "examples" / "layers" / f"{name}.yaml")
        mod = from_layer(layer)
        x = torch.randn(args.batch, layer.in_channels, args.size, args.size, requires_grad=True)
        weight = mod.dense_weight().detach().clone().requires_grad_()
        bias = mod.bias.detach().clone().requires_grad_()
        with torch.no_grad():
            mod.mode = "factors"
            y_fact = mod(x)
            mod.mode = "dense"
            y_dense = mod(x)
            y_conv = F.conv2d(x, weight, bias, mod.stride, mod.padding, mod.dilation)
        torch.testing.assert_close(y_dense, y_fact, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(y_conv, y_fact, rtol=1e-4, atol=1e-4)

        def debut_step() -> None:
            mod.zero_grad(set_to_none=True)
            x.grad = None
            mod(x).sum().backward()

        def conv_step() -> None:
            weight.grad = bias.grad = x.grad = None
            F.conv2d(x, weight, bias, mod.stride, mod.padding, mod.dilation).sum().backward()

        ho, wo = mod.output_size(args.size, args.size)
        mod.mode = "auto"
        form = mod.form(args.batch * ho * wo)
        t_auto, t_conv = timed([debut_step, conv_step], args.repeats)
        mod.mode = "factors"
        t_fact, t_conv2 = timed([debut_step, conv_step], max(2, args.repeats // 3))
        t_conv = min(t_conv, t_conv2)
        table.add_row(name, f"{layer.mac_reduction:.2f}x", form, f"{1e3 * t_auto:.2f}", f"{1e3 * t_fact:.2f}",
                      f"{1e3 * t_conv:.2f}", f"{t_auto / t_conv:.2f}x", f"{t_fact / t_conv:.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()

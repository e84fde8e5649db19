"""The int8 golden network's error against the float layer, published chain against merged.

For each published chain given (default: the VGG example's two large layers and a ResNet-110
layer), a float DeBut conv layer with random weights (``litefly.nn`` initialisation, seeds 0..N-1)
is quantised to int8 as ``litefly convert --export`` does (``litefly.export.export_int8``,
calibrated on uniform inputs), once as published and once after ``litefly.merge.merge_model``
(the same float function). Prints the relative RMS error of the int8 golden output
(``int8_forward``) against the float layer's output on held-out inputs, per chain and seed
mean: the merged chain requantises fewer times.

Run: ``python scripts/merge_int8_error.py [--seeds 3] [--size 8]``. Float weights here are random,
not trained: the figures compare the two chains' arithmetic, not a model's accuracy.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from litefly.chain import parse_rshapes_line
from litefly.export import export_int8, int8_forward
from litefly.merge import merge_model
from litefly.nn import DeButConv2d

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from published_chains import RESNET110, VGG_MONO  # noqa: E402

CHAINS = {"vgg_conv2": VGG_MONO[1], "vgg_conv3": VGG_MONO[2], "resnet110_4": RESNET110[3]}


def int8_error(model: nn.Module, calib: torch.Tensor, x: torch.Tensor) -> float:
    """Relative RMS error of the int8 golden network (exported from ``model``) on ``x``."""
    net, params = export_int8(model, calib, name="layer")
    yq = int8_forward(net, params, x.double().numpy())
    yf = model(x).detach().double().numpy().reshape(yq.shape)
    return float(np.sqrt(((yq - yf) ** 2).mean() / (yf ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--size", type=int, default=8, help="input height and width")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'chain':<14} {'factors':>9} {'MACs/col':>13} {'int8 error, published':>22} {'merged':>8}")
    for name, line in CHAINS.items():
        chain = parse_rshapes_line(line)
        cin = chain[0].q // 9
        errs: dict[str, list[float]] = {"published": [], "merged": []}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            layer = nn.Sequential(DeButConv2d(cin, chain[-1].p, 3, chain, padding=1), nn.ReLU()).eval()
            merged = copy.deepcopy(layer)
            plan = merge_model(merged)[0][1]
            calib, x = torch.rand(64, cin, args.size, args.size), torch.rand(16, cin, args.size, args.size)
            errs["published"].append(int8_error(layer, calib, x))
            errs["merged"].append(int8_error(merged, calib, x))
        print(f"{name:<14} {len(plan.declared):>4} -> {len(plan.chain):<2} "
              f"{sum(f.params for f in plan.declared):>6,}->{sum(f.params for f in plan.chain):<6,} "
              f"{np.mean(errs['published']):>22.4f} {np.mean(errs['merged']):>8.4f}")


if __name__ == "__main__":
    main()

"""Engine cycles of pruned layers against their density (issue 14, targets "pruned layers").

Each layer of the VGG example network (``examples/vgg_net.yaml``) is pruned to 50%, 80% and 90%
weight sparsity with :func:`litefly.prune.prune_model` (magnitude, on seeded random weights: the
cycle counts depend on the number of stored entries only, not on which ones), from two sources:

* ``debut``: its published DeBut chain, every factor a sparse factor with the kept pattern;
* ``dense``: the dense conv layer, ONE sparse factor.

The pruned layer replaces the unpruned one in the network, the network is planned on its own
engine envelope (64 lanes, 64-bit stream, as the example) and the engine's cycle model is read:

* ``MAC cycles / batch``: :meth:`litefly.hw.spec.LayerDescriptor.batch_cycles` ``["mac"]``, the issue
  cycles of one batch of 64 positions: one cycle per stored entry (row overhead: every row holds
  at least one entry) plus the drain between dependent factors;
* ``pass cycles``: :meth:`LayerDescriptor.pass_cycles` of one pass of ``--images`` images, what
  ``litefly bench --backend golden`` reports (window formation, load and unload included).

Each is divided by the unpruned layer's value and compared with the density (stored entries over
the unpruned weights: every entry a row keeps to have one is counted, so the row floor is in it).
The parameter load (``param beats``: weight, index and bias beats, one cycle each, once per layer
and run, not per batch) shows the index memory's cost: a sparse factor's entry is a weight and a
16-bit index entry.

Then the target of issue 14 for pruned **dense** layers (a dense layer as ONE sparse factor): MAC
cycles per batch over the unpruned ones within 5% of the density at 50%, 80% and 90% sparsity,
one line per layer and sparsity, and a verdict. Run:
``python scripts/bench_pruned.py [--images 8] [--method magnitude] [--tolerance 0.05]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from litefly.config import LayerConfig, NetworkConfig, load_network
from litefly.hw.spec import EngineEnvelope
from litefly.network import network_input_shape, plan_network
from litefly.nn import from_layer
from litefly.prune import PruneConfig, prune_model

ROOT = Path(__file__).resolve().parent.parent


def _cycles(network: NetworkConfig, name: str, images: int) -> tuple[int, int, int]:
    """(MAC-issue cycles per batch, cycles of one pass of ``images`` images, parameter beats) of layer ``name``."""
    steps = plan_network(network, network_input_shape(network))
    env = EngineEnvelope.for_network(network)
    desc = next(d for d in env.describe_network(steps) if d.layer.name == name)
    return desc.batch_cycles()["mac"], desc.pass_cycles(desc.pass_images(images)), desc.param_beats


def _replace(network: NetworkConfig, layer: LayerConfig) -> NetworkConfig:
    steps = tuple(layer if isinstance(s, LayerConfig) and s.name == layer.name else s for s in network.steps)
    return NetworkConfig(name=network.name, steps=steps, input_size=network.input_size, engine=network.engine)


def _pruned_chain(layer: LayerConfig, source: str, sparsity: float, method: str, seed: int) -> tuple:
    torch.manual_seed(seed)
    if source == "debut":
        mod: nn.Module = from_layer(layer)
    else:
        mod = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding,
                        layer.dilation, bias=layer.format.bias)
    example = torch.randn(8, layer.in_channels, 32, 32)
    data = (example, torch.randint(0, layer.out_channels, (8,)))
    model = nn.Sequential(mod, nn.AdaptiveAvgPool2d(1), nn.Flatten()) if method == "snip" else nn.Sequential(mod)
    pruned, _ = prune_model(model, PruneConfig(method, sparsity), data=data, example_input=example[:1])
    return pruned[0].chain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", default=str(ROOT / "examples" / "vgg_net.yaml"))
    ap.add_argument("--images", type=int, default=8, help="images per pass for the pass cycles")
    ap.add_argument("--method", default="magnitude", choices=("magnitude", "snip", "synflow"))
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="target: pruned dense layers' MAC cycles per batch within this of the density")
    args = ap.parse_args()
    torch.set_num_threads(1)
    network = load_network(args.network)
    print(f"| layer | source | sparsity | entries / weights | density | MAC cycles / batch | x unpruned "
          f"| / density | pass cycles ({args.images} images) | x unpruned | / density | param beats | x unpruned |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    checks = []         # (layer, sparsity, density, MAC cycles / batch over unpruned) of the dense source
    for layer in network.layers:
        for source in ("debut", "dense"):
            base_layer = layer if source == "debut" else layer.dense_baseline().with_chain(
                layer.dense_baseline().chain, name=layer.name)
            base_net = _replace(network, base_layer)
            mac0, pass0, par0 = _cycles(base_net, layer.name, args.images)
            print(f"| {layer.name} | {source} | 0% | {base_layer.params:,} | 1.000 | {mac0:,} | 1.000 | | "
                  f"{pass0:,} | 1.000 | | {par0:,} | 1.000 |")
            for sp in args.sparsity:
                chain = _pruned_chain(layer, source, sp, args.method, args.seed)
                pruned = layer.with_chain(chain)
                mac, cyc, par = _cycles(_replace(network, pruned), layer.name, args.images)
                density = pruned.params / base_layer.params
                print(f"| {layer.name} | {source} | {100 * sp:g}% | {pruned.params:,} / {base_layer.params:,} | "
                      f"{density:.3f} | {mac:,} | {mac / mac0:.3f} | {mac / mac0 / density:.3f} | {cyc:,} | "
                      f"{cyc / pass0:.3f} | {cyc / pass0 / density:.3f} | {par:,} | {par / par0:.3f} |")
                if source == "dense":
                    checks.append((layer.name, sp, density, mac / mac0))
    print()
    print(f"Target (issue 14): a pruned dense layer (one sparse factor) issues its MAC cycles per batch within "
          f"{100 * args.tolerance:g}% of its density (stored entries, row floor included, over the dense weights).")
    print("| layer | sparsity | density | MAC cycles / batch x unpruned | / density | within |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for name, sp, density, ratio in checks:
        off = ratio / density - 1.0
        worst = max(worst, abs(off))
        ok = "yes" if abs(off) <= args.tolerance else "NO"
        print(f"| {name} | {100 * sp:g}% | {density:.4f} | {ratio:.4f} | {ratio / density:.4f} | {ok} |")
    verdict = "met" if worst <= args.tolerance else "NOT met"
    print(f"\nworst |cycles ratio / density - 1| = {100 * worst:.2f}% over {len(checks)} pruned dense layers: "
          f"target {verdict}")


if __name__ == "__main__":
    main()

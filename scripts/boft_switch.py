"""What switching a BOFT adapter costs on the engine: parameter-stream bytes and load time.

For each layer size: a frozen ``nn.Linear``, two PEFT BOFT adapters with random weights
(``init_weights=False``), each imported as a chain (``litefly.boft.import_boft``), quantised to
int8 and packed as the host streams it (``pack_layer_params``). Printed: the stream split into
rotation / diag(s) / frozen weights, index entries and bias (``litefly.boft.switch_report``,
from the descriptor's beat counts), the bytes that really differ between the two packed streams,
the stream time at one beat per cycle (the loader's rate; DMA set-up and host packing not
modelled), and the modelled cycles of one batch-of-lanes pass against the frozen layer alone
(what keeping the adapter unmerged costs).

PEFT needs its CUDA block-diagonal kernel for more than one butterfly factor; on a CPU this
script stands it in with ``torch.block_diag`` (same result, see tests/test_model_boft.py).

Run: ``python scripts/boft_switch.py [--clock-mhz 100]``
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from litefly.boft import import_boft, switch_report
from litefly.config import EngineParams, NetworkConfig
from litefly.fixed import quantize_layer
from litefly.hw.spec import EngineEnvelope
from litefly.hw.wireformat import pack_layer_params
from litefly.network import plan_network

CASES = [(64, 32, 8, 3), (512, 512, 16, 4), (768, 768, 32, 4)]     # in, out, block size, butterfly factors


class _BlockDiagKernel:
    @staticmethod
    def forward(x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.stack([torch.block_diag(*torch.unbind(x[i])) for i in range(x.shape[0])])]


def adapter_layer(base: torch.nn.Linear, block: int, factors: int, seed: int):
    import peft
    import peft.tuners.boft.layer as boft_layer
    boft_layer._FBD_CUDA = _BlockDiagKernel()
    torch.manual_seed(seed)
    cfg = peft.BOFTConfig(target_modules=["0"], boft_block_size=block, boft_n_butterfly_factor=factors,
                          init_weights=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(torch.nn.Sequential(base), cfg)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clock-mhz", type=float, default=100.0)
    ap.add_argument("--multipliers", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| layer | factors (rotation + frozen + diag s) | stream bytes | rotation w. | diag(s) w. | frozen w. "
          "| index | bias | bytes rewritten on a switch (measured diff) | load [us] all / switch | "
          "cycles of a 1-image pass, chain / frozen alone |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n_in, n_out, block, factors in CASES:
        torch.manual_seed(0)
        base = torch.nn.Linear(n_in, n_out)
        x = torch.randn(64, n_in).double().numpy()
        streams, cfg, n_rot = [], None, 0
        for seed in (1, 2):
            model = adapter_layer(base, block, factors, seed)
            cfg, weights, bias, n_rot = import_boft(model.base_model.model[0], f"boft{n_in}",
                                                    engine=EngineParams(multipliers=args.multipliers))
            model.unload()
            q = quantize_layer(cfg, weights, x, bias=bias)
            env = EngineEnvelope.for_network(NetworkConfig.single(cfg))
            streams.append(pack_layer_params(q.weights, q.bias, env.weight_bits, env.stream_bits, cfg.chain).ravel())
        rep = switch_report(cfg, n_rot, clock_mhz=args.clock_mhz)
        diff = int(np.count_nonzero(streams[0] != streams[1]))
        net = NetworkConfig.single(cfg)
        env = EngineEnvelope.for_network(net)
        step = plan_network(net, (n_in, 1, 1))[0]
        frozen = cfg.with_chain(cfg.chain[n_rot:-1], name="frozen")
        fstep = step.with_layer(frozen)
        fenv = EngineEnvelope.for_layers("frozen", [frozen])
        chain_cycles = env.describe(step).pass_cycles(1)
        frozen_cycles = fenv.describe(fstep).pass_cycles(1)
        print(f"| {n_in} -> {n_out}, b={block} | {n_rot} + 1 + 1 | {rep['bytes_total']:,} | "
              f"{rep['bytes_rotation_weights']:,} | {rep['bytes_scale_weights']:,} | "
              f"{rep['bytes_weights'] - rep['bytes_rotation_weights'] - rep['bytes_scale_weights']:,} | "
              f"{rep['bytes_index']:,} | {rep['bytes_bias']:,} | {rep['bytes_switch']:,} ({diff:,}) | "
              f"{rep['load_us_total']:.2f} / {rep['load_us_switch']:.2f} | {chain_cycles:,} / {frozen_cycles:,} |")


if __name__ == "__main__":
    main()

"""Export correctness on the paper's deep networks with random weights (issue 15 target).

For ResNet-56 (CIFAR size, 10 classes) and VGG-16-BN (CIFAR variant, 100 classes) from
:mod:`litefly.zoo`: convert every conv and linear layer to DeBut (generated chains at the given
compression, random factors unless ``--sweeps N`` fits them to the dense layer's random weights by
ALS), give every batch norm non-trivial eval-mode
statistics (running mean and variance measured on calibration inputs in train mode, then a
random affine ``gamma ~ U(0.5, 1.5)``, ``beta ~ U(-0.3, 0.3)``), export int8
(:func:`litefly.export.export_int8`: BN folded, residual adds and branch inputs, global
average pool on the host, chained scales calibrated on ``--calib`` inputs), and report

* top-1 agreement of the int8 golden network with the float DeBut network on ``--inputs``
  fresh inputs from the same distribution (standard normal pixels);
* the engine (``NetworkRunner``, golden backend by default) against the int8 golden network
  on ``--engine-inputs`` of them: outputs must be equal.

With ``--dense`` every conv and linear layer becomes a ONE-factor DeBut layer holding the dense
random weights (``[p, q, p, q, 1]``: the float network is the dense one) instead of a generated
chain: the same int8 scheme (per-tensor power-of-two scales) with one requantisation per layer
instead of one per factor, so what the chains add shows against it. ``--center`` shifts the
classifier's bias so that the mean logit over the calibration inputs is zero per class: a random
deep network's logits are otherwise about 98% an input-independent offset (ResNet-56 predicts
one class for every input), and top-1 agreement then measures that offset alone.

Usage: ``python scripts/export_check.py [--models resnet56 vgg16_bn] [--inputs 256] [--dense] [--center]
[--sweeps N] [--calibration max|mse]``.
Exit status 1 if a target is missed (agreement < 97% or engine != golden).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn

from litefly.chain import dense_chain
from litefly.convert import (ConvertConfig, _dense_matrix, _set_module, convert_model, convertible_layers,
                             count_params)
from litefly.errors import LiteflyError
from litefly.export import export_int8, int8_forward
from litefly.nn import DeButLinear, debut_like
from litefly.utils import deterministic_run
from litefly.zoo import resnet56, vgg16_bn

MODELS = {"resnet56": lambda: resnet56(10), "vgg16_bn": lambda: vgg16_bn(100)}


def randomize_batchnorm(model: nn.Module, calib: torch.Tensor, gen: torch.Generator) -> None:
    """Running statistics measured on ``calib`` (train-mode passes, cumulative average), then a
    random affine per channel; the model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(calib), 32):
            model(calib[i:i + 32])
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.rand(bn.num_features, generator=gen) * 0.6 - 0.3)
            bn.momentum = 0.1
    model.eval()


def center_logits(model: nn.Module, calib: torch.Tensor) -> None:
    """Shift the classifier's bias so the logits' mean over ``calib`` is zero per class: a random
    deep network's logits are otherwise about 98% an input-independent offset (it predicts one or
    two classes for every input), and top-1 agreement then measures that offset alone."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, DeButLinear))][-1]
    with torch.no_grad():
        mean = torch.cat([model(calib[i:i + 64]) for i in range(0, len(calib), 64)]).mean(0)
        last.bias -= mean


def one_factor_model(dense: nn.Module) -> nn.Module:
    """``dense`` with every conv/linear as a one-factor DeBut layer of the same weights (in place)."""
    for name, mod in convertible_layers(dense):
        w = _dense_matrix(mod)                        # DeBut im2col order: (kh, kw, c_in)
        _set_module(dense, name, debut_like(mod, dense_chain(*w.shape), [w], dtype=mod.weight.dtype))
    return dense


def check_model(name: str, inputs: int, calib_n: int, engine_inputs: int, compression: float, seed: int,
                backend: str, calibration: str = "max", dense_layers: bool = False, sweeps: int = 0,
                center: bool = False) -> dict:
    """Build, export and compare one model; returns the figures."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    calib = torch.randn(calib_n, 3, 32, 32, generator=gen)
    test = torch.randn(inputs, 3, 32, 32, generator=gen)
    dense = MODELS[name]()
    params_dense = count_params(dense)
    if dense_layers:
        debut = one_factor_model(dense)
    else:
        debut, _ = convert_model(dense, ConvertConfig(compression=compression, sweeps=sweeps, seed=seed),
                                 example_input=calib[:1])
    randomize_batchnorm(debut, calib, gen)
    if center:
        center_logits(debut, calib)
    t_build = time.perf_counter() - t0
    t1 = time.perf_counter()
    network, params = export_int8(debut, calib, name=name, calibration=calibration)
    t_export = time.perf_counter() - t1
    with torch.no_grad():
        ref = torch.cat([debut(test[i:i + 64]) for i in range(0, inputs, 64)]).double().numpy()
    t1 = time.perf_counter()
    x = test.double().numpy()
    got = np.concatenate([int8_forward(network, params, x[i:i + 32]) for i in range(0, inputs, 32)])
    t_golden = time.perf_counter() - t1
    agree = float(np.mean(got.argmax(1) == ref.argmax(1)))
    top2 = np.sort(ref, axis=1)
    classes = int(np.unique(ref.argmax(1)).size)
    margin = float(np.median((top2[:, -1] - top2[:, -2]) / (np.abs(ref).max(axis=1) + 1e-12)))
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    from litefly.host.runtime import NetworkRunner
    t1 = time.perf_counter()
    runner = NetworkRunner(network, params, backend=backend, input_size=(32, 32))
    try:
        eng = runner.run(x[:engine_inputs])
        stats = runner.stats
    finally:
        runner.close()
    t_engine = time.perf_counter() - t1
    ops = [s.op for s in network.steps if hasattr(s, "op")]
    return {"model": name, "layers": len(network.layers), "adds": ops.count("add"), "inputs_ops": ops.count("input"),
            "params_dense": params_dense, "params_debut": count_params(debut),
            "agreement": agree, "classes_predicted": classes, "n": inputs, "rel_logit_error": rel, "median_top2_margin": margin,
            "engine_equal": bool(np.array_equal(eng, got[:engine_inputs])), "engine_n": engine_inputs,
            "engine_layers": len(stats), "engine_cycles": sum(int(s["cycles"]) for s in stats),
            "seconds": {"build": t_build, "export": t_export, "golden": t_golden, "engine": t_engine}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--engine-inputs", type=int, default=2)
    ap.add_argument("--compression", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=("golden", "sim"), default="golden")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibration", choices=("max", "mse"), default="max",
                    help="how each factor's shift is chosen (litefly.export.export_int8)")
    ap.add_argument("--sweeps", type=int, default=0,
                    help="ALS sweeps fitting each chain to the dense layer's random weights (0: random factors)")
    ap.add_argument("--center", action="store_true",
                    help="shift the classifier's bias so the mean logit over the calibration inputs is 0")
    ap.add_argument("--dense", action="store_true",
                    help="one-factor (dense) layers instead of DeBut chains: the per-tensor W8A8 floor")
    a = ap.parse_args(argv)
    if a.inputs < 1 or a.calib < 1 or not 1 <= a.engine_inputs <= a.inputs or not 0 <= a.compression < 1:
        print("export_check: --inputs, --calib >= 1, 1 <= --engine-inputs <= --inputs, 0 <= --compression < 1",
              file=sys.stderr)
        return 2
    ok = True
    for name in a.models:
        try:
            with deterministic_run(a.seed, a.threads):
                r = check_model(name, a.inputs, a.calib, a.engine_inputs, a.compression, a.seed, a.backend,
                                a.calibration, a.dense, a.sweeps, a.center)
        except LiteflyError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        hit = r["agreement"] >= 0.97 and r["engine_equal"]
        ok &= hit
        s = r["seconds"]
        kind = "one-factor (dense)" if a.dense else "DeBut"
        print(f"{name}: {r['layers']} {kind} layers ({r['adds']} residual adds, {r['inputs_ops']} branch inputs), "
              f"{r['params_debut']:,}/{r['params_dense']:,} weights; int8 top-1 == float top-1 on "
              f"{round(r['agreement'] * r['n'])}/{r['n']} inputs ({100 * r['agreement']:.1f}%), relative logit "
              f"error {r['rel_logit_error']:.3f}, float top-1 takes {r['classes_predicted']} classes, median top-2 margin {r['median_top2_margin']:.3f} of max |logit|; "
              f"engine ({a.backend}, {r['engine_layers']} layer runs, {r['engine_cycles']:,} cycles) == int8 golden "
              f"on {r['engine_n']} inputs: {r['engine_equal']}; {'PASS' if hit else 'MISS'} "
              f"[build {s['build']:.0f} s, export {s['export']:.0f} s, golden {s['golden']:.0f} s, "
              f"engine {s['engine']:.0f} s]", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

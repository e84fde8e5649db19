"""What numeric format the export-agreement target needs on random networks (issue 15).

``scripts/export_check.py`` measures the engine's int8 export of ResNet-56 and VGG-16-BN with
random weights against their float selves. This script asks the question below the engine:
with DENSE layers (no DeBut chains, one rounding per layer), which formats keep the float
network's top-1 on at least 97% of the inputs? Each conv and linear layer's weights are
rounded to ``w`` bits and its input activations to ``a`` bits (simulated in float, round to
nearest, saturating), with per-tensor or per-output-channel weight scales, each scale either
the exact ``max / (2^(bits-1) - 1)`` or the power of two at or above it (the engine's shifts).
Activation ranges come from ``--calib`` inputs (max calibration). The networks are built as
``export_check`` builds them (batch-norm statistics measured on the calibration inputs, a
random affine per channel), optionally with centred logits (``--center`` there).

Usage: ``python scripts/format_floor.py [--models resnet56 vgg16_bn] [--formats a8w8t2 a8w8cf a16w8t2 ...]``
where a format is ``a<bits>w<bits>`` then ``t`` (per-tensor) or ``c`` (per-channel weights)
then ``2`` (power-of-two scales) or ``f`` (exact scales).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_check import MODELS, center_logits, randomize_batchnorm  # noqa: E402

DEFAULT_FORMATS = ("a8w8t2", "a8w8tf", "a8w8cf", "a16w8t2", "a16w8cf", "a12w12t2", "a16w16t2")


@dataclass(frozen=True)
class Format:
    act_bits: int
    w_bits: int
    per_channel: bool
    pow2: bool

    @classmethod
    def parse(cls, text: str) -> "Format":
        m = re.fullmatch(r"a(\d+)w(\d+)([tc])([2f])", text)
        if not m or not (2 <= int(m[1]) <= 32 and 2 <= int(m[2]) <= 32):
            raise ValueError(f"format {text!r} is not a<bits>w<bits>[t|c][2|f] with 2..32 bits, e.g. a8w8t2")
        return cls(int(m[1]), int(m[2]), m[3] == "c", m[4] == "2")

    def __str__(self) -> str:
        return (f"int{self.act_bits} activations, int{self.w_bits} weights "
                f"{'per channel' if self.per_channel else 'per tensor'}, "
                f"{'power-of-two' if self.pow2 else 'exact'} scales")


def _scale(amax: torch.Tensor, bits: int, pow2: bool) -> torch.Tensor:
    s = amax.clamp_min(1e-30) / (2 ** (bits - 1) - 1)
    return torch.exp2(torch.ceil(torch.log2(s))) if pow2 else s


def _round(x: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    hi = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x / scale), -hi - 1, hi) * scale


def fake_quantized(model: nn.Module, calib: torch.Tensor, fmt: Format) -> nn.Module:
    """A copy of ``model`` (eval) whose conv/linear weights are rounded to ``fmt`` and whose
    conv/linear inputs are rounded to ``fmt``'s activation grid (ranges from ``calib``)."""
    m = copy.deepcopy(model).eval()
    layers = [l for l in m.modules() if isinstance(l, (nn.Conv2d, nn.Linear))]
    amax: dict[nn.Module, torch.Tensor] = {}

    def record(mod, inp):
        amax[mod] = torch.maximum(amax.get(mod, torch.zeros(())), inp[0].detach().abs().max())

    hooks = [l.register_forward_pre_hook(record) for l in layers]
    with torch.no_grad():
        m(calib)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for l in layers:
            w = l.weight
            wmax = (w.abs().flatten(1).max(1).values.view(-1, *[1] * (w.dim() - 1)) if fmt.per_channel
                    else w.abs().max())
            w.copy_(_round(w, fmt.w_bits, _scale(wmax, fmt.w_bits, fmt.pow2)))
            scale = _scale(amax[l], fmt.act_bits, fmt.pow2)
            l.register_forward_pre_hook(lambda mod, inp, s=scale: (_round(inp[0], fmt.act_bits, s),))
    return m


def random_network(name: str, center: bool, inputs: int, calib_n: int, seed: int
                   ) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(model, calibration inputs, test inputs, float logits)``: ``name`` built as
    ``export_check`` builds it (the same random network for a given ``seed``)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    calib = torch.randn(calib_n, 3, 32, 32, generator=gen)
    x = torch.randn(inputs, 3, 32, 32, generator=gen)
    model = MODELS[name]().eval()
    randomize_batchnorm(model, calib, gen)
    if center:
        center_logits(model, calib)
    with torch.no_grad():
        ref = model(x)
    return model, calib, x, ref


def agreement(model: nn.Module, calib: torch.Tensor, x: torch.Tensor, ref: torch.Tensor, fmt: Format
              ) -> tuple[float, float]:
    """(top-1 agreement, relative logit error) of ``model`` rounded to ``fmt`` against ``ref``."""
    with torch.no_grad():
        got = fake_quantized(model, calib, fmt)(x)
    return float((got.argmax(1) == ref.argmax(1)).float().mean()), float((got - ref).norm() / ref.norm())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS))
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        formats = [(text, Format.parse(text)) for text in a.formats]
    except ValueError as exc:
        print(f"format_floor: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    print("| network | format | agreement (offset kept) | rel. err | agreement (centred) | rel. err |")
    print("|---|---|---|---|---|---|")
    for name in a.models:
        nets = [random_network(name, center, a.inputs, a.calib, a.seed) for center in (False, True)]
        for text, fmt in formats:
            kept, centred = (agreement(*net, fmt) for net in nets)
            print(f"| {name} | `{text}`: {fmt} | {100 * kept[0]:.1f}% | {kept[1]:.3f} | {100 * centred[0]:.1f}% | "
                  f"{centred[1]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

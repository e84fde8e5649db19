"""Model zoo: the All-DeBut paper's network families as plain dense PyTorch models.

Every model is built from ``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm*``/``nn.ReLU``/pooling
modules only, so :func:`litefly.convert.convert_model` converts each conv and linear layer to
DeBut, and batch norms fold into the DeBut layer before them at export
(:mod:`litefly.fold`). No model uses a functional op except the residual ``+``.

=================  ======================================  ===========================================
function           input                                   structure
=================  ======================================  ===========================================
``resnet20``,      ``(B, 3, 32, 32)``                      CIFAR ResNet (He et al. 2016, sec. 4.2):
``resnet56``,                                              3x3 conv 16, three stages of ``n`` basic
``resnet_cifar``                                           blocks (16, 32, 64 channels; stride 2 at the
                                                           start of stages 2 and 3), global average
                                                           pool (``AvgPool2d(8)``), one linear layer.
                                                           Depth ``6n + 2``.
``vgg16_bn``       ``(B, 3, 32, 32)``                      VGG-16 with batch norm, CIFAR variant: 13
                                                           3x3 convs (64, 64, M, 128, 128, M, 256 x3,
                                                           M, 512 x3, M, 512 x3, M), each conv -> BN ->
                                                           ReLU, then ``Linear(512, classes)`` (the
                                                           layout of the All-DeBut VGG chains).
``pointnet_cls``   ``(B, 3, P, 1)`` (points as a column)   PointNet classification without T-Nets:
                                                           shared MLP 3-64-64-64-128-1024 as 1x1
                                                           convs (conv -> BN -> ReLU), global max pool
                                                           ``MaxPool2d((P, 1))``, then 1024-512-256-k
                                                           linear layers (BN1d, ReLU, dropout 0.3).
``resnet_digits``  ``(B, 1, 8, 8)`` (scikit-learn digits)  A small ResNet: 3x3 conv 16, a basic block
                                                           at 16 channels (8x8), a block at 32 (4x4,
                                                           stride 2), ``AvgPool2d(4)``, linear 32 -> 10.
=================  ======================================  ===========================================

**Shortcuts.** Identity where the shape is unchanged; where it changes (stride 2 and more
channels) a *projection*, He et al.'s option B: ``1x1 conv (stride 2, no bias) -> BN``. Option
A (subsample and zero-pad channels) has no weights and is not a conv the engine runs, and a
1x1 conv is what the engine's residual path is planned around, so every shortcut here is a
layer that converts to DeBut like the others. The ResNets therefore have slightly more
parameters than option-A counts in the literature (ResNet-20: 272,474 weights and BN affine
parameters for 10 classes here, against 269,722 with option A; ResNet-56: 855,770).

Convolutions that feed a batch norm have no bias (the folded BN provides one).

:func:`vgg16_published_chains` gives the published All-DeBut VGG-CIFAR100 chains
(``examples/rshapes/vgg_cifar100_mono.txt``) per layer name, ready for
``ConvertConfig(overrides=...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .chain import Factor, parse_rshapes_line

__all__ = ["BasicBlock", "ResNetCIFAR", "resnet_cifar", "resnet20", "resnet56", "resnet_digits", "VGG16_CFG",
           "VGG", "vgg16_bn", "PointNetCls", "pointnet_cls", "vgg16_published_chains", "count_weights"]


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity or a
    1x1 projection (conv -> BN) when the stride or the channel count changes (option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(c_out, c_out, 3)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """A CIFAR-style ResNet: stem conv, stages of basic blocks, global average pool, linear.

    ``blocks[i]`` basic blocks at ``widths[i]`` channels; every stage after the first starts
    with stride 2. ``pool`` is the spatial size of the last stage (the global average pool is
    ``AvgPool2d(pool)``, which the host runs like any average pool)."""

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10, in_channels: int = 3,
                 pool: int = 8) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks={list(blocks)} and widths={list(widths)} must have the same, non-zero length")
        self.conv1, self.bn1 = _conv_bn(in_channels, widths[0], 3)
        self.relu = nn.ReLU()
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if i > 0 and j == 0 else 1))
                c = w
            stages.append(nn.Sequential(*layers))
        self.layer1, *rest = stages
        for i, stage in enumerate(rest, start=2):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.pool = nn.AvgPool2d(pool)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet_cifar(depth: int, num_classes: int = 10) -> ResNetCIFAR:
    """ResNet-``depth`` for 32x32 inputs, ``depth = 6n + 2`` (20, 32, 44, 56, 110)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth} must be 6n + 2 (20, 32, 44, 56, 110)")
    n = (depth - 2) // 6
    return ResNetCIFAR((n, n, n), (16, 32, 64), num_classes, 3, 8)


def resnet20(num_classes: int = 10) -> ResNetCIFAR:
    return resnet_cifar(20, num_classes)


def resnet56(num_classes: int = 10) -> ResNetCIFAR:
    return resnet_cifar(56, num_classes)


def resnet_digits(num_classes: int = 10, widths: Sequence[int] = (16, 32), blocks: Sequence[int] = (1, 1)
                  ) -> ResNetCIFAR:
    """A small ResNet for scikit-learn's 8x8 digits, ``(B, 1, 8, 8)`` input (pixel values scaled
    as the digits demo scales them). Two stages by default: 8x8 at 16 channels, 4x4 at 32."""
    return ResNetCIFAR(blocks, widths, num_classes, 1, 8 // 2 ** (len(blocks) - 1))


# -- VGG -------------------------------------------------------------------------------------------
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with batch norm for 32x32 inputs: ``features`` (conv -> BN -> ReLU, "M" = 2x2 max pool),
    then ``Flatten`` and one ``Linear(last width, classes)``. ``width`` scales every channel
    count (1.0 is the real network; smaller values are for quick tests)."""

    def __init__(self, cfg: Sequence[int | str] = VGG16_CFG, num_classes: int = 100, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                w = max(1, int(round(int(v) * width)))
                layers += [*_conv_bn(c, w, 3), nn.ReLU()]
                c = w
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def vgg16_bn(num_classes: int = 100, width: float = 1.0) -> VGG:
    """VGG-16-BN, CIFAR variant (13 convs + one linear layer; 14.7 M weights at ``width=1``)."""
    return VGG(VGG16_CFG, num_classes, width)


def vgg16_published_chains(model: VGG, rshapes: str | Path | None = None) -> dict[str, list[list[int]]]:
    """``{layer name: chain}`` for every conv/linear layer of ``model`` whose ``(in, out)`` size
    has a published chain in ``rshapes`` (default: the All-DeBut VGG-CIFAR100 "mono" file shipped
    in ``examples/rshapes``). Pass it as ``ConvertConfig(overrides={name: {"chain": c}})``; layers
    without a published chain (other widths or class counts) get generated chains."""
    path = Path(rshapes) if rshapes else Path(__file__).resolve().parent.parent / "examples" / "rshapes" / \
        "vgg_cifar100_mono.txt"
    published: dict[tuple[int, int], tuple[Factor, ...]] = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            chain = parse_rshapes_line(line, f"{path.name} line {i}")
            published.setdefault((chain[0].q, chain[-1].p), chain)
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            key = (mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1], mod.out_channels)
        elif isinstance(mod, nn.Linear):
            key = (mod.in_features, mod.out_features)
        else:
            continue
        if key in published:
            out[name] = [f.as_list() for f in published[key]]
    return out


# -- PointNet -------------------------------------------------------------------------------------
class PointNetCls(nn.Module):
    """PointNet classification without T-Nets on ``(B, 3, P, 1)`` points.

    Shared per-point MLPs are 1x1 ``Conv2d`` layers (conv -> BN -> ReLU; widths ``mlp``), the
    symmetric function is a global max over the P points (``MaxPool2d((P, 1))``), then the head
    ``Linear`` layers (``head`` widths, each -> BN1d -> ReLU, dropout before the last layer)."""

    def __init__(self, num_classes: int = 40, num_points: int = 1024, mlp: Sequence[int] = (64, 64, 64, 128, 1024),
                 head: Sequence[int] = (512, 256), dropout: float = 0.3) -> None:
        super().__init__()
        self.num_points = num_points
        layers: list[nn.Module] = []
        c = 3
        for w in mlp:
            layers += [*_conv_bn(c, w, 1), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d((num_points, 1))
        self.flatten = nn.Flatten()
        fc: list[nn.Module] = []
        for w in head:
            fc += [nn.Linear(c, w, bias=False), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        fc += [nn.Dropout(dropout), nn.Linear(c, num_classes)]
        self.head = nn.Sequential(*fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


def pointnet_cls(num_classes: int = 40, num_points: int = 1024, **kwargs) -> PointNetCls:
    """PointNet (vanilla, no T-Net): 3-64-64-64-128-1024 shared MLP, max pool, 512-256-classes."""
    return PointNetCls(num_classes, num_points, **kwargs)


def count_weights(model: nn.Module) -> int:
    """All trainable parameters (weights, biases and BN affine parameters)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

"""Export of residual networks (issue 15): ``a + b`` in ResNet basic blocks becomes
``{op: add, from: LAYER}``, a layer reading an earlier layer's output gets
``{op: input, from: LAYER}`` before it (projection shortcuts), batch norms fold, and what the
engine cannot run is refused in one line naming the operation and the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from litefly.config import HostOp
from litefly.convert import ConvertConfig, convert_model
from litefly.errors import ConfigError, LiteflyError
from litefly.export import export_int8, int8_forward, load_int8, save_int8
from litefly.network import check_scales, plan_network
from litefly.nn import DeButConv2d
from litefly.zoo import resnet_digits

torch.set_num_threads(1)

CHAIN8 = [[8, 72, 4, 36, 1], [8, 8, 2, 2, 4]]       # 3x3 conv, 8 -> 8 channels


def items(network) -> list:
    return [s.to_dict() if isinstance(s, HostOp) else s.name for s in network.steps]


def random_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)


def test_resnet_digits_exports_adds_and_a_projection(tmp_path):
    torch.manual_seed(0)
    dense = resnet_digits().eval()
    random_bn(dense, 1)
    debut, _ = convert_model(dense, ConvertConfig(compression=0.8, sweeps=0))
    debut.eval()
    x = torch.rand(64, 1, 8, 8)
    network, params = export_int8(debut, x, name="rd")
    assert items(network) == [
        "conv1", {"op": "relu"},
        "layer1_0_conv1", {"op": "relu"}, "layer1_0_conv2", {"op": "add", "from": "conv1"}, {"op": "relu"},
        "layer2_0_conv1", {"op": "relu"}, "layer2_0_conv2",
        {"op": "input", "from": "layer1_0_conv2"}, "layer2_0_shortcut_0", {"op": "add", "from": "layer2_0_conv2"},
        {"op": "relu"}, {"op": "globalavgpool"}, {"op": "flatten"}, "fc"]
    assert all(layer.format.bias for layer in network.layers[:-1])          # every BN folded into a bias
    steps = plan_network(network, (1, 8, 8))
    assert [(s.name, s.skip, s.src, s.relu) for s in steps if s.skip or s.src] == [
        ("layer1_0_conv2", "conv1", None, True), ("layer2_0_shortcut_0", "layer2_0_conv2", "layer1_0_conv2", True)]
    check_scales(steps, params)
    xt = torch.rand(16, 1, 8, 8)
    ours = int8_forward(network, params, xt.double().numpy())
    ref = debut(xt).detach().double().numpy()
    assert np.linalg.norm(ours - ref) < 0.1 * np.linalg.norm(ref)
    from litefly.host.runtime import NetworkRunner
    got = NetworkRunner(network, params, backend="golden").run(xt.double().numpy())
    np.testing.assert_array_equal(got, ours)
    net2, params2 = load_int8(save_int8(network, params, tmp_path).parent)
    assert net2 == network and np.array_equal(int8_forward(net2, params2, xt.double().numpy()), ours)


class Block(nn.Module):
    """stem -> conv a -> relu -> conv b -> BN -> (+ stem) -> relu, with the add written ``how``."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.stem = DeButConv2d(3, 8, 3, [[8, 27, 8, 27, 1]], padding=1)
        self.a = DeButConv2d(8, 8, 3, CHAIN8, padding=1)
        self.b = DeButConv2d(8, 8, 3, CHAIN8, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        out = self.bn(self.b(torch.relu(self.a(x))))
        if self.how == "+":
            out = out + x
        elif self.how == "r+":
            out = x + out
        elif self.how == "+=":
            out += x
        elif self.how == "torch.add":
            out = torch.add(out, x)
        elif self.how == "add":
            out = out.add(x)
        return F.relu(out)


@pytest.mark.parametrize("how", ["+", "r+", "+=", "torch.add", "add"])
def test_every_spelling_of_the_add_exports_the_same_network(how):
    torch.manual_seed(3)
    model = Block(how).eval()
    random_bn(model, 4)
    x = torch.randn(16, 3, 6, 6)
    network, params = export_int8(model, x)
    assert items(network) == ["stem", {"op": "relu"}, "a", {"op": "relu"}, "b", {"op": "add", "from": "stem"},
                              {"op": "relu"}]
    ref = model(x[:4]).detach().double().numpy()
    ours = int8_forward(network, params, x[:4].double().numpy())
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max()


class Bad(nn.Module):
    def __init__(self, case: str) -> None:
        super().__init__()
        self.case = case
        self.stem = DeButConv2d(3, 8, 3, [[8, 27, 8, 27, 1]], padding=1)
        self.a = DeButConv2d(8, 8, 3, CHAIN8, padding=1)
        self.down = DeButConv2d(8, 8, 3, CHAIN8, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.case
        if c == "input twice":
            return self.a(torch.relu(self.stem(x))) + self.stem(x)
        y = torch.relu(self.stem(x))
        if c == "network input":
            return self.stem(x) + x.repeat(1, 3, 1, 1)[:, :8]
        if c == "constant":
            return self.a(y) + 1.0
        if c == "relu before add":
            return torch.relu(self.a(y)) + y
        if c == "sub":
            return self.a(y) - y
        if c == "option A":
            return torch.relu(self.down(y) + F.pad(y[:, :, ::2, ::2], (0, 0, 0, 0, 0, 0)))
        if c == "used twice":
            z = self.a(y)
            return torch.relu(z) + z
        if c == "scaled":
            return torch.add(self.a(y), y, alpha=0.5)
        raise AssertionError(c)


@pytest.mark.parametrize("case, message", [
    ("constant", r"'add' after layer 'a': the add adds a constant"),
    ("scaled", r"'add' after layer 'a': the add adds a constant or scales an operand"),
    ("relu before add", r"layer 'a' already has a ReLU"),
    ("sub", r"operation 'sub' \(sub\) after layer 'a' takes 2 tensors"),
    ("option A", r"'getitem' after layer 'down': function 'getitem' .* option-A shortcut"),
    ("used twice", r"'relu_1' \(relu\) after layer 'a' changes its output, which 'a' also passes"),
    ("input twice", r"operation 'stem_1' \(stem\) reads the network input, which is neither the result of the "
                    r"operation before it \(after layer 'a'\) nor a layer's output the engine keeps"),
])
def test_what_the_engine_cannot_run_is_refused_in_one_line(case, message):
    with pytest.raises(LiteflyError, match=message) as info:
        export_int8(Bad(case).eval(), torch.randn(4, 3, 6, 6))
    assert "\n" not in str(info.value)


def test_adding_the_network_input_is_refused():
    class AddInput(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = DeButConv2d(8, 8, 3, CHAIN8, padding=1)

        def forward(self, x):
            return self.a(x) + x

    with pytest.raises(ConfigError, match=r"'add' after layer 'a' adds the network input, which is not an "
                                          r"earlier layer's output") as info:
        export_int8(AddInput().eval(), torch.randn(4, 8, 6, 6))
    assert "\n" not in str(info.value)


def _export_check_module(name: str = "export_check"):
    import importlib.util
    import sys
    from pathlib import Path
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))           # format_floor imports export_check
    spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod                         # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_export_check_one_factor_model_and_centred_logits():
    """scripts/export_check.py --dense/--center: the one-factor network computes the dense one, and
    centring zeroes the mean logit over the calibration inputs."""
    import copy
    mod = _export_check_module()
    torch.manual_seed(0)
    dense = resnet_digits(10, widths=(4, 8), blocks=(1, 1)).double().eval()
    one = mod.one_factor_model(copy.deepcopy(dense)).eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in one.modules())
    assert all(len(m.chain) == 1 for m in one.modules() if hasattr(m, "chain"))
    with torch.no_grad():
        torch.testing.assert_close(one(x), dense(x), rtol=1e-10, atol=1e-10)
        mod.center_logits(one, x)
        assert one(x).mean(0).abs().max() < 1e-9


def test_format_floor_rounds_weights_and_activations_to_the_format():
    """scripts/format_floor.py: at 16/16 bits a small network keeps its top-1; fewer bits cost more;
    power-of-two scales are the powers of two at or above the exact ones; bad formats are refused."""
    mod = _export_check_module("format_floor")
    torch.manual_seed(0)
    net = resnet_digits(10, widths=(4, 8), blocks=(1, 1)).eval()
    calib, x = torch.randn(16, 1, 8, 8), torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        ref = net(x)
        errs = {}
        for text in ("a16w16t2", "a8w8cf", "a8w8t2", "a4w4t2", "a4w16t2", "a16w4t2"):
            got = mod.fake_quantized(net, calib, mod.Format.parse(text))(x)
            errs[text] = float((got - ref).norm() / ref.norm())
            if text == "a16w16t2":
                assert torch.equal(got.argmax(1), ref.argmax(1))
        assert errs["a16w16t2"] < 1e-3 < errs["a8w8t2"] < errs["a4w4t2"]
        assert min(errs["a4w16t2"], errs["a16w4t2"]) > 1e-2        # activations and weights are both rounded
        assert torch.equal(net(x), ref)                       # the model itself is left alone
    s = mod._scale(torch.tensor([3.0]), 8, True)
    assert s.item() == 2.0 ** -5 and s.item() >= 3.0 / 127 > s.item() / 2
    for bad in ("a8w8", "a1w8t2", "w8a8t2"):
        with pytest.raises(ValueError, match="is not a<bits>w<bits>"):
            mod.Format.parse(bad)

"""Merging a torch model's DeBut layers (litefly.merge.merge_model, ``litefly convert --merge``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
from torch import nn

from litefly.chain import butterfly_chain, parse_rshapes_line
from litefly.merge import merge_model
from litefly.nn import DeButConv2d, DeButLinear

from published_chains import VGG_MONO

torch.set_num_threads(1)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        DeButConv2d(64, 64, 3, parse_rshapes_line(VGG_MONO[1]), padding=1), nn.ReLU(),
        nn.Flatten(), DeButLinear(64 * 4 * 4, 10, [[1024, 1024, 2, 2, 1], [512, 1024, 1, 2, 2], [10, 512, 5, 256, 1]]),
        nn.ReLU(), DeButLinear(10, 10, [[10, 10, 2, 2, 1], [10, 10, 5, 5, 2]])).eval()


def test_merge_model_replaces_the_layers_that_merge_and_keeps_the_function():
    model = _model().double()
    x = torch.randn(3, 64, 4, 4, dtype=torch.float64)
    before = model(x)
    done = merge_model(model)
    assert [name for name, _ in done] == ["0", "3"]           # "5": its product has more MACs
    assert [f.as_list() for f in model[0].chain] == [[512, 576, 8, 9, 1], [256, 512, 2, 4, 8],
                                                     [128, 256, 2, 4, 16], [64, 128, 2, 4, 32]]
    assert [f.as_list() for f in model[3].chain] == [[512, 1024, 2, 4, 1], [10, 512, 5, 256, 1]]
    assert len(model[5].chain) == 2
    assert model[0].weights[0].dtype == torch.float64 and not model.training
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-12)
    assert merge_model(model) == []                           # merged chains are a fixed point
    assert merge_model(nn.Sequential(DeButLinear(64, 64, butterfly_chain(64))))[0][1].chain[0].r == 4


def test_cli_convert_merge_exports_the_merged_chains(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(1024, 10)).eval()
    torch.save(model, tmp_path / "m.pt")
    chains = {"0": [f.as_list() for f in parse_rshapes_line(VGG_MONO[1])],
              "3": [[1024, 1024, 2, 2, 1], [512, 1024, 1, 2, 2], [10, 512, 5, 256, 1]]}
    (tmp_path / "c.yaml").write_text(json.dumps({"sweeps": 1, "overrides": {k: {"chain": v} for k, v in chains.items()}}))
    x = torch.rand(32, 64, 4, 4)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=model(x).argmax(1).numpy())
    r = subprocess.run([sys.executable, "-m", "litefly", "convert", str(tmp_path / "m.pt"), "-o",
                        str(tmp_path / "out.pt"), "--data", str(tmp_path / "d.npz"), "--epochs", "0", "--merge", "--config", str(tmp_path / "c.yaml"),
                        "--export", str(tmp_path / "int8")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "merged 0: 7 -> 4 factors, 7,296 -> 6,400 MACs per column" in out
    assert "merged 3: 3 -> 2 factors" in out and "merge: 2 layers; largest output change on one input" in out
    assert "engine model == int8 golden" in out
    report = json.loads((tmp_path / "out.json").read_text())
    assert [m["layer"] for m in report["merged"]] == ["0", "3"] and report["merged"][0]["declared"] == chains["0"]
    from litefly.export import load_int8
    network, _ = load_int8(tmp_path / "int8")
    assert [len(layer.chain) for layer in network.layers] == [4, 2]


def test_the_merged_chain_requantises_less_and_errs_less_in_int8():
    import copy
    from litefly.export import export_int8, int8_forward
    torch.manual_seed(0)
    layer = nn.Sequential(DeButConv2d(64, 64, 3, parse_rshapes_line(VGG_MONO[1]), padding=1), nn.ReLU()).eval()
    merged = copy.deepcopy(layer)
    merge_model(merged)
    calib, x = torch.rand(64, 64, 8, 8), torch.rand(16, 64, 8, 8)

    def err(model):
        net, params = export_int8(model, calib, name="layer")
        yq = int8_forward(net, params, x.double().numpy())
        yf = model(x).detach().double().numpy().reshape(yq.shape)
        return float(np.sqrt(((yq - yf) ** 2).mean() / (yf ** 2).mean()))

    published, ours = err(layer), err(merged)
    assert ours < 0.95 * published and published < 0.1, (published, ours)

"""Layer/network YAML: schema, every rule's message, hashing, and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from litefly.config import LayerConfig, NetworkConfig, load_config, load_layer, load_network
from litefly.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONV1 = {"name": "c1", "kind": "conv2d", "in_channels": 3, "out_channels": 64, "kernel": 3, "padding": 1,
         "rshapes": "36 27 4 3 1 72 36 2 1 4 64 72 8 9 8"}


def test_examples_load():
    net = load_network(EXAMPLES / "vgg_net.yaml")
    assert [l.name for l in net.layers] == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    assert [s.op for s in net.steps if not isinstance(s, LayerConfig)] == ["relu", "relu", "maxpool2d", "relu"]
    for f in (EXAMPLES / "layers").glob("*.yaml"):
        assert isinstance(load_config(f), LayerConfig)


def test_round_trip_and_hash_stability(tmp_path):
    layer = LayerConfig.from_dict(CONV1)
    p = tmp_path / "c1.yaml"
    p.write_text(layer.to_yaml())
    again = load_layer(p)
    assert again == layer and again.config_hash == layer.config_hash
    assert layer.chain_in == 27 and layer.kernel == (3, 3) and layer.padding == (1, 1)
    # the hash covers what the engine depends on, not the name or the conv geometry
    renamed = LayerConfig.from_dict({**CONV1, "name": "other", "padding": 0})
    assert renamed.config_hash == layer.config_hash
    wider = LayerConfig.from_dict({**CONV1, "engine": {"multipliers": 32}})
    assert wider.config_hash != layer.config_hash
    assert len(layer.config_hash) == 64 and layer.hash32 == int(layer.config_hash[:8], 16)


@pytest.mark.parametrize("change,message", [
    ({"kind": "conv3d"}, "kind='conv3d' must be 'linear' or 'conv2d'"),
    ({"in_channels": 4}, "factor 1: q=27 does not equal the layer's input size 36"),
    ({"out_channels": "64"}, "out_channels='64' is not an integer"),
    ({"kernel": 0}, r"kernel=0 is out of range, expected 1 or more"),
    ({"colour": 1}, "unknown key 'colour'"),
    ({"chain": [[36, 27, 4, 3, 1]]}, "give exactly one of 'chain'"),
    ({"format": {"act_bits": 40}}, r"act_bits=40 is out of range, expected 2..16"),
    ({"format": {"bias": "yes"}}, "bias='yes' is not true or false"),
    ({"format": {"round": 1}}, "format: unknown key 'round'"),
    ({"engine": {"stream_bits": 48}}, "stream_bits=48 must be one of 32, 64, 128"),
    ({"name": "a-b"}, "name='a-b' must be an identifier"),
    ({"in_features": 27}, "key 'in_features' is for linear layers"),
])
def test_layer_rules(change, message):
    with pytest.raises(ConfigError, match=message):
        LayerConfig.from_dict({**CONV1, **change})


def test_linear_rules():
    base = {"name": "l", "kind": "linear", "in_features": 16, "out_features": 16,
            "chain": [[16, 16, 2, 2, 1], [16, 16, 2, 2, 2]]}
    assert LayerConfig.from_dict(base).chain_in == 16
    with pytest.raises(ConfigError, match="key 'kernel' is for conv2d layers"):
        LayerConfig.from_dict({**base, "kernel": 3})
    with pytest.raises(ConfigError, match="factor 2: p=16 does not equal the layer's output size 8"):
        LayerConfig.from_dict({**base, "out_features": 8})


def test_network_rules(tmp_path):
    with pytest.raises(ConfigError, match="layers=None must be a non-empty list"):
        NetworkConfig.from_dict({"name": "n"})
    with pytest.raises(ConfigError, match="op='softmax' must be one of"):
        NetworkConfig.from_dict({"layers": [CONV1, {"op": "softmax"}]})
    with pytest.raises(ConfigError, match="layer name 'c1' is used twice"):
        NetworkConfig.from_dict({"layers": [CONV1, CONV1]})
    # fold_input (docs/engine.md, "Folded kernel rows"): true unless the file says false, kept by to_dict
    assert NetworkConfig.from_dict({"layers": [CONV1]}).fold_input is True
    off = NetworkConfig.from_dict({"layers": [CONV1], "fold_input": False})
    assert off.fold_input is False and NetworkConfig.from_dict(off.to_dict()) == off
    assert "fold_input" not in NetworkConfig.from_dict({"layers": [CONV1]}).to_dict()
    with pytest.raises(ConfigError, match=r"^network: fold_input='no' is not true or false$"):
        NetworkConfig.from_dict({"layers": [CONV1], "fold_input": "no"})


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "litefly", *args], capture_output=True, text=True)


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    ("name: x\nkind: [linear\n", "malformed YAML at line 3"),
    ("- 1\n- 2\n", "expected a mapping at the top level, got list"),
    ("name: x\nkind: linear\nin_features: sixteen\nout_features: 16\nchain: [[16, 16, 2, 2, 1]]\n",
     "in_features='sixteen' is not an integer"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "layer.yaml"
    if content is not None:
        path.write_text(content)
    r = run_cli("chain", "show", str(path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: ") and message in r.stderr


def test_cli_chain_show_network():
    r = run_cli("chain", "show", str(EXAMPLES / "vgg_net.yaml"))
    assert r.returncode == 0
    for name in ("vgg_conv1", "vgg_conv2", "vgg_conv3"):
        assert name in r.stdout
    assert "82.64% compression" in r.stdout and "merged (merge: true) from the declared 7 factors" in r.stdout and "mixing rule: followed" in r.stdout


def test_cli_import_rshapes(tmp_path):
    f = tmp_path / "vgg.txt"
    f.write_text(textwrap.dedent("""\
        36 27 4 3 1 72 36 2 1 4 64 72 8 9 8
        16 16 2 2 1 16 16 2 2 4 32 16 2 1 8 32 32 2 2 16
    """))
    out = tmp_path / "l1.yaml"
    r = run_cli("chain", "import-rshapes", str(f), "--line", "1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    layer = load_layer(out)
    assert layer.kind == "conv2d" and layer.in_channels == 3 and layer.params == 756
    r = run_cli("chain", "import-rshapes", str(f), "--line", "2", "--kind", "linear", "-o", str(tmp_path / "l2.yaml"))
    assert r.returncode == 0 and "warning: layer" in r.stderr and "mixing rule wants" in r.stderr
    r = run_cli("chain", "import-rshapes", str(f), "--line", "9", "-o", str(out))
    assert r.returncode == 2 and "--line 9 is past the end (the file has 2 lines)" in r.stderr

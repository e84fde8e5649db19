"""The bitstream registry of network engines: add, list, show, lookup by envelope hash and each
refusal, on fake Vivado outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from boards_fakes import fake_generate, fake_vivado_outputs
from litefly.bitstreams import registry
from litefly.bitstreams.cli import bitstreams
from litefly.bitstreams.registry import BitstreamError
from litefly.boards.boards import get_board
from litefly.boards.vivado import write_build
from litefly.config import load_network
from litefly.hw.spec import EngineEnvelope

ROOT = Path(__file__).resolve().parents[1]
VGG2 = ROOT / "examples" / "layers" / "vgg_conv2.yaml"      # a layer: a one-layer network
FC3 = ROOT / "examples" / "layers" / "pointnet_fc3.yaml"
VGG_NET = ROOT / "examples" / "vgg_net.yaml"


def finished_build(tmp: Path, config: Path = VGG2, board: str = "pynq-z2", sub: str = "build"):
    """A finished build of ``config``'s network engine; returns its envelope (``.name`` = the .bit's name)."""
    net = load_network(config)
    plan = write_build(net, get_board(board), tmp / sub, generate=fake_generate)
    fake_vivado_outputs(plan.out_dir, plan.name)
    return plan.envelope, plan.out_dir


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def test_add_list_lookup(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    e = registry.add(build, root=reg)
    key = f"vgg_conv2-{layer.config_hash[:8]}"
    assert e.path == reg / "pynq-z2" / key
    assert sorted(p.name for p in e.path.iterdir()) == ["build.json", "manifest.json", "vgg_conv2.bit", "vgg_conv2.hwh"]
    b = e.build
    assert b["board"] == "pynq-z2" and b["config_hash"] == layer.config_hash and b["clock_mhz"] == 100.0
    assert b["hash32"] == f"0x{layer.hash32:08x}" and EngineEnvelope.from_dict(b["envelope"]) == layer
    assert b["vivado_version"] == "2022.1" and b["timing"]["wns_ns"] == 0.412 and b["timing"]["timing_met"]
    assert b["resources"] == {"lut": 9120, "ff": 12011, "bram36": 12.5, "dsp": 64}
    assert b["network"]["name"] == "vgg_conv2" and [l["name"] for l in b["network"]["layers"]] == ["vgg_conv2"]
    assert set(b["files"]) == {"vgg_conv2.bit", "vgg_conv2.hwh", "manifest.json"}
    assert e.bit.read_bytes() == (build / "vgg_conv2.bit").read_bytes()

    layer2, build2 = finished_build(tmp_path, FC3, "zcu104", "b2")
    registry.add(build2, root=reg)
    assert [(x.board, x.name) for x in registry.entries(reg)] == [("pynq-z2", "vgg_conv2"), ("zcu104", "pointnet_fc3")]

    found = registry.lookup(layer, "pynq-z2", root=reg)
    assert found.path == e.path and found.clock_mhz == 100.0
    assert registry.find(f"pynq-z2/{key}", reg).path == e.path
    assert registry.find("pointnet_fc3", reg).board == "zcu104"


def test_add_refuses_duplicates_and_incomplete_builds(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    registry.add(build, root=reg)
    with pytest.raises(BitstreamError, match=r"already registered \(use --force"):
        registry.add(build, root=reg)
    registry.add(build, root=reg, force=True)
    (build / "vgg_conv2.hwh").unlink()
    with pytest.raises(BitstreamError, match=r"vgg_conv2.hwh is missing; run `vivado -mode batch"):
        registry.add(build, root=reg, force=True)
    with pytest.raises(BitstreamError, match="no build_info.json"):
        registry.add(tmp_path, root=reg)


def test_one_engine_for_a_network(tmp_path: Path, reg: Path) -> None:
    """A network's engine is one entry; the registry finds it for the network by the envelope hash."""
    env, build = finished_build(tmp_path, VGG_NET, "zcu104")
    e = registry.add(build, root=reg)
    assert e.name == "vgg_head" and e.layers == ["vgg_conv1", "vgg_conv2", "vgg_conv3"]
    assert registry.lookup(EngineEnvelope.for_network(load_network(VGG_NET), board="zcu104"), "zcu104",
                           root=reg).path == e.path
    # the hash is the engine's, not the name's: the same envelope under another name is the same engine
    renamed = EngineEnvelope.from_dict(dict(env.to_dict(), name="other_net"))
    assert registry.lookup(renamed, "zcu104", root=reg).path == e.path


def test_refuses_wrong_hash(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    registry.add(build, root=reg)
    other = EngineEnvelope.for_network(load_network(VGG2), multipliers=128)
    assert other.config_hash != layer.config_hash
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(other, "pynq-z2", root=reg)
    assert str(exc.value).startswith(
        f"bitstream for engine 'vgg_conv2' on pynq-z2 has engine hash 0x{layer.hash32:08x}, the network's is "
        f"0x{other.hash32:08x} (lanes ")
    assert "rebuild it, or run with the built settings); build it with `litefly build" in str(exc.value)
    # a build.json edited to claim another engine is caught too (its folder name keeps the real hash)
    e = registry.lookup(layer, "pynq-z2", root=reg)
    data = json.loads((e.path / "build.json").read_text())
    data["config_hash"] = other.config_hash
    (e.path / "build.json").write_text(json.dumps(data))
    with pytest.raises(BitstreamError, match=rf"bitstream vgg_conv2-{layer.config_hash[:8]}: build.json says engine "
                                             rf"hash 0x{other.hash32:08x}"):
        registry.lookup(other, "pynq-z2", root=reg)
    with pytest.raises(BitstreamError, match=r"has engine hash"):
        registry.lookup(layer, "pynq-z2", root=reg)


def test_add_refuses_a_build_info_whose_hash_is_not_its_envelopes(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    info = json.loads((build / "build_info.json").read_text())
    info["envelope"]["lanes"] = info["envelope"]["lanes"] * 2
    (build / "build_info.json").write_text(json.dumps(info))
    with pytest.raises(BitstreamError, match=r"build_info.json config_hash [0-9a-f]{8} is not its envelope's hash"):
        registry.add(build, root=reg)
    del info["envelope"]
    (build / "build_info.json").write_text(json.dumps(info))
    with pytest.raises(BitstreamError, match=r"build_info.json has no engine envelope"):
        registry.add(build, root=reg)


def test_refuses_wrong_board(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    registry.add(build, root=reg)
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(layer, "zcu104", root=reg)
    assert str(exc.value).startswith(f"no bitstream for engine 'vgg_conv2' (0x{layer.hash32:08x}) on zcu104: it was "
                                     f"built for pynq-z2; build it with `litefly build NETWORK --board zcu104")
    # a folder moved under another board is refused by its build.json
    src = reg / "pynq-z2" / f"vgg_conv2-{layer.config_hash[:8]}"
    (reg / "zcu104").mkdir()
    src.rename(reg / "zcu104" / src.name)
    with pytest.raises(BitstreamError, match="build.json says board pynq-z2, expected zcu104"):
        registry.lookup(layer, "zcu104", root=reg)


@pytest.mark.parametrize("fname", ["vgg_conv2.bit", "vgg_conv2.hwh", "manifest.json"])
def test_refuses_altered_file(tmp_path: Path, reg: Path, fname: str) -> None:
    layer, build = finished_build(tmp_path)
    e = registry.add(build, root=reg)
    with open(e.path / fname, "ab") as fh:
        fh.write(b" ")
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(layer, "pynq-z2", root=reg)
    assert str(exc.value) == f"bitstream vgg_conv2-{layer.config_hash[:8]}: {fname} sha256 does not match build.json (file altered?)"


def test_refuses_missing_file_and_unknown(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    e = registry.add(build, root=reg)
    (e.path / "vgg_conv2.bit").unlink()
    with pytest.raises(BitstreamError, match=r"vgg_conv2.bit is missing from"):
        registry.lookup(layer, "pynq-z2", root=reg)
    fc3 = EngineEnvelope.for_network(load_network(FC3))
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(fc3, "pynq-z2", root=reg)
    assert str(exc.value).startswith(
        f"no bitstream for engine 'pointnet_fc3' (0x{fc3.hash32:08x}) on pynq-z2 in {reg} (registered for pynq-z2: "
        f"vgg_conv2-{layer.config_hash[:8]} (0x{layer.hash32:08x})); build it with `litefly build NETWORK")


def test_cli(tmp_path: Path, reg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layer, build = finished_build(tmp_path)
    runner = CliRunner()
    res = runner.invoke(bitstreams, ["add", str(build), "--registry", str(reg)])
    assert res.exit_code == 0, res.output
    key = f"vgg_conv2-{layer.config_hash[:8]}"
    assert f"added pynq-z2/{key}" in res.output
    monkeypatch.setenv("LITEFLY_BITSTREAMS", str(reg))       # the env var selects the registry too
    monkeypatch.setenv("COLUMNS", "200")
    res = runner.invoke(bitstreams, ["list"], terminal_width=200)
    assert res.exit_code == 0 and layer.config_hash[:8] in res.output and "2022.1" in res.output
    assert "vgg_conv2 (vgg_conv2)" in res.output
    assert "9120" in res.output and "12.5" in res.output
    res = runner.invoke(bitstreams, ["show", key])
    assert res.exit_code == 0 and json.loads(res.output[:res.output.rindex("}") + 1])["config_hash"] == layer.config_hash
    assert registry.default_root() == reg


def test_cli_errors_are_one_line(tmp_path: Path, reg: Path, capsys) -> None:
    from litefly.cli.main import main
    with pytest.raises(SystemExit) as exc:
        main(["bitstreams", "show", "nope-12345678", "--registry", str(reg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no bitstream 'nope-12345678'") and err.count("\n") == 1

"""The bitstream registry: add, list, show, lookup and each refusal, on fake Vivado outputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from boards_fakes import fake_generate, fake_vivado_outputs
from litefly.bitstreams import registry
from litefly.bitstreams.cli import bitstreams
from litefly.bitstreams.registry import BitstreamError
from litefly.boards.boards import get_board
from litefly.boards.vivado import write_build
from litefly.config import EngineParams, load_layer

ROOT = Path(__file__).resolve().parents[1]
VGG2 = ROOT / "examples" / "layers" / "vgg_conv2.yaml"
FC3 = ROOT / "examples" / "layers" / "pointnet_fc3.yaml"


def finished_build(tmp: Path, config: Path = VGG2, board: str = "pynq-z2", sub: str = "build"):
    layer = load_layer(config)
    plan = write_build(layer, get_board(board), tmp / sub, generate=fake_generate)
    fake_vivado_outputs(plan.out_dir, layer.name)
    return layer, plan.out_dir


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
    assert b["vivado_version"] == "2022.1" and b["timing"]["wns_ns"] == 0.412 and b["timing"]["timing_met"]
    assert b["resources"] == {"lut": 9120, "ff": 12011, "bram36": 12.5, "dsp": 64}
    assert b["chain"]["params"] == layer.params and len(b["chain"]["factors"]) == len(layer.chain)
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


def test_refuses_wrong_hash(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    registry.add(build, root=reg)
    other = replace(layer, engine=EngineParams(multipliers=128, stream_bits=64))
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(other, "pynq-z2", root=reg)
    assert str(exc.value) == (f"bitstream for layer 'vgg_conv2' on pynq-z2 has config hash {layer.config_hash[:8]}, "
                              f"the layer's is {other.config_hash[:8]} (config changed: rebuild it)")
    # a build.json edited to claim another config is caught too
    e = registry.lookup(layer, "pynq-z2", root=reg)
    data = json.loads((e.path / "build.json").read_text())
    data["config_hash"] = other.config_hash
    (e.path / "build.json").write_text(json.dumps(data))
    with pytest.raises(BitstreamError, match=rf"bitstream vgg_conv2-{layer.config_hash[:8]}: build.json config "
                                             rf"hash {other.config_hash[:8]} does not match the layer's"):
        registry.lookup(layer, "pynq-z2", root=reg)


def test_refuses_wrong_board(tmp_path: Path, reg: Path) -> None:
    layer, build = finished_build(tmp_path)
    registry.add(build, root=reg)
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(layer, "zcu104", root=reg)
    assert str(exc.value).startswith(f"bitstream vgg_conv2-{layer.config_hash[:8]}: built for pynq-z2, not zcu104;")
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
    fc3 = load_layer(FC3)
    with pytest.raises(BitstreamError, match=rf"no bitstream pynq-z2/pointnet_fc3-{fc3.config_hash[:8]} in .*litefly build"):
        registry.lookup(fc3, "pynq-z2", root=reg)


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

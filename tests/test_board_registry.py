"""Board-side registry checks: a registered network engine is found by its envelope hash and
verified on numpy/stdlib only, and every mismatch (altered .bit, missing .hwh, another engine,
another board) is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boards_fakes import fake_generate, fake_vivado_outputs
from litefly.bitstreams import registry
from litefly.bitstreams.registry import BitstreamError
from litefly.boards.boards import get_board
from litefly.boards.vivado import write_build
from litefly.config import load_network
from litefly.hw.spec import EngineEnvelope

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[1]
VGG_NET = ROOT / "examples" / "vgg_net.yaml"


@pytest.fixture
def entry(tmp_path):
    net = load_network(VGG_NET)
    plan = write_build(net, get_board("zcu104"), tmp_path / "build", generate=fake_generate)
    fake_vivado_outputs(plan.out_dir, plan.name)
    env = EngineEnvelope.for_network(net, board="zcu104")     # the board's default envelope
    assert plan.envelope == env and env.lanes == 256
    return env, registry.add(plan.out_dir, root=tmp_path / "reg"), tmp_path / "reg"


def test_entry_holds_bit_and_hwh_side_by_side(entry):
    env, e, root = entry
    assert e.bit.exists() and e.hwh.exists() and e.bit.with_suffix(".hwh") == e.hwh
    assert {f"{env.name}.bit", f"{env.name}.hwh", "manifest.json"} <= set(e.build["files"])
    found = registry.lookup(env, "zcu104", root=root)
    assert found.path == e.path and found.config_hash == env.config_hash and found.hash32 == env.hash32
    assert e.layers == ["vgg_conv1", "vgg_conv2", "vgg_conv3"] and e.network["name"] == "vgg_head"
    assert EngineEnvelope.from_dict(e.build["envelope"]) == env


def test_altered_bit_is_refused(entry):
    env, e, root = entry
    e.bit.write_bytes(e.bit.read_bytes()[:-1] + bytes([e.bit.read_bytes()[-1] ^ 1]))
    with pytest.raises(BitstreamError, match=rf"{env.name}\.bit sha256 does not match build\.json \(file altered\?\)"):
        registry.lookup(env, "zcu104", root=root)


def test_missing_hwh_is_refused(entry):
    env, e, root = entry
    e.hwh.unlink()
    with pytest.raises(BitstreamError, match=rf"{env.name}\.hwh is missing from .*PYNQ needs the \.bit and \.hwh"):
        registry.lookup(env, "zcu104", root=root)


def test_hwh_not_recorded_is_refused(entry):
    env, e, root = entry
    build = json.loads((e.path / "build.json").read_text())
    del build["files"][f"{env.name}.hwh"]
    (e.path / "build.json").write_text(json.dumps(build))
    with pytest.raises(BitstreamError, match=f"records no sha256 for {env.name}.hwh"):
        registry.lookup(env, "zcu104", root=root)


def test_other_engine_or_board_is_refused(entry):
    env, e, root = entry
    changed = EngineEnvelope.for_network(load_network(VGG_NET), multipliers=env.lanes // 2)
    assert changed.config_hash != env.config_hash and changed.name == env.name
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(changed, "zcu104", root=root)
    msg = str(exc.value)
    assert msg.startswith(f"bitstream for engine 'vgg_head' on zcu104 has engine hash 0x{env.hash32:08x}, the "
                          f"network's is 0x{changed.hash32:08x} (lanes 256 built, 128 now; ")
    assert "rebuild it, or run with the built settings); build it with `litefly build" in msg and "\n" not in msg
    # the settings that differ are named (here: the board's default has row quads and octets, the run
    # asks for pairs)
    pairs = EngineEnvelope.from_dict(dict(env.to_dict(), row_quads=False, row_octets=False))
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(pairs, "zcu104", root=root)
    assert ("(row_quads true built, false now; row_octets true built, false now: rebuild it, or run with the "
            "built settings)") in str(exc.value)
    # a build.json written before a setting existed: the setting is at its default there
    build = json.loads((e.path / "build.json").read_text())
    del build["envelope"]["row_quads"], build["envelope"]["row_pairs"], build["envelope"]["row_octets"]
    (e.path / "build.json").write_text(json.dumps(build))
    with pytest.raises(BitstreamError) as exc:
        registry.lookup(pairs, "zcu104", root=root)
    assert "(row_pairs false built, true now: rebuild it" in str(exc.value)
    with pytest.raises(BitstreamError, match=rf"^no bitstream for engine 'vgg_head' \(0x{env.hash32:08x}\) on "
                                             rf"pynq-z2: it was built for zcu104"):
        registry.lookup(env, "pynq-z2", root=root)

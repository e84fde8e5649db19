"""Each board's default engine envelope (``Board.engine``) and how a network's ``engine:`` settings,
its ``boards:`` entries and the command's options override it, key by key; the defaults' memories
fit their board."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from litefly.boards.boards import BOARDS, get_board
from litefly.boards.memory_plan import plan_memories
from litefly.config import ENGINE_KEYS, NetworkConfig, NetworkEngine, load_network
from litefly.errors import ConfigError
from litefly.hw.spec import EngineEnvelope

pytestmark = pytest.mark.board       # the runtime on a board sizes its engine this way

ROOT = Path(__file__).resolve().parents[1]
VGG = load_network(ROOT / "examples" / "vgg_net.yaml")


def _net(engine: dict | None, weight_bits: int = 8) -> NetworkConfig:
    layer = {"name": "l0", "kind": "conv2d", "in_channels": 8, "out_channels": 8, "kernel": 1,
             "chain": [[8, 8, 2, 2, 4]], "format": {"weight_bits": weight_bits}}
    return NetworkConfig.from_dict({"name": "n", "input_size": [4, 4], "layers": [layer],
                                    **({"engine": engine} if engine is not None else {})})


def _settings(env: EngineEnvelope) -> dict[str, int]:
    return {"multipliers": env.lanes, "macs_per_dsp": env.macs_per_dsp, "stream_bits": env.stream_bits,
            "window_generators": env.window_generators}


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_a_board_gives_its_default_envelope_and_no_board_the_networks_own(board):
    default = get_board(board).engine
    assert set(default) <= set(ENGINE_KEYS) and default["macs_per_dsp"] == 2
    env = EngineEnvelope.for_network(VGG, board=board)
    assert _settings(env) == {k: default[k] for k in ("multipliers", "macs_per_dsp", "stream_bits",
                                                      "window_generators")}
    if "frame_kib" in default:
        assert env.frame_beats == default["frame_kib"] * 1024 // env.elems_per_beat
    own = EngineEnvelope.for_network(VGG)       # no board: the layers' 64 lanes, unpacked, one generator
    assert (own.lanes, own.macs_per_dsp, own.window_generators) == (64, 1, 1) and own.hash32 != env.hash32


def test_precedence_option_then_board_entry_then_network_then_board_default():
    net = _net({"multipliers": 32, "stream_bits": 32,
                "boards": {"zcu104": {"multipliers": 128}, "pynq-z2": {"window_generators": 2}}})
    z = EngineEnvelope.for_network(net, board="zcu104")
    assert _settings(z) == {"multipliers": 128, "macs_per_dsp": 2, "stream_bits": 32, "window_generators": 4}
    p = EngineEnvelope.for_network(net, board="pynq-z2")
    assert _settings(p) == {"multipliers": 32, "macs_per_dsp": 2, "stream_bits": 32, "window_generators": 2}
    opt = EngineEnvelope.for_network(net, board="zcu104", multipliers=64, window_generators=1)
    assert (opt.lanes, opt.window_generators) == (64, 1)
    assert _settings(EngineEnvelope.for_network(net)) == {"multipliers": 32, "macs_per_dsp": 1, "stream_bits": 32,
                                                          "window_generators": 1}
    assert NetworkEngine.from_dict(net.engine.to_dict()) == net.engine       # the file's form round-trips
    assert NetworkConfig.from_dict(yaml.safe_load(yaml.safe_dump(net.to_dict()))).engine == net.engine


def test_board_default_packing_only_where_the_weights_allow_it():
    """A board's two-MACs-per-DSP default applies to weights of 8 bits or fewer; asked for, it is refused."""
    wide = _net(None, weight_bits=16)
    env = EngineEnvelope.for_network(wide, board="pynq-z2")
    assert env.macs_per_dsp == 1 and not env.row_pairs
    with pytest.raises(ConfigError, match=r"^engine: macs_per_dsp=2 packs two products of 8-bit operands"):
        EngineEnvelope.for_network(_net({"macs_per_dsp": 2}, weight_bits=16), board="pynq-z2")


@pytest.mark.parametrize("engine, message", [
    ({"boards": {"zcu102": {"multipliers": 8}}},
     "network engine boards: unknown key 'zcu102', expected one of pynq-z2, zcu104"),
    ({"boards": {"zcu104": {"multipliers": 0}}},
     "network engine boards zcu104: multipliers=0 is out of range, expected 1..4096"),
    ({"boards": {"zcu104": {"stream_bits": 48}}},
     "network engine boards zcu104: stream_bits=48 must be one of 32, 64, 128"),
    ({"boards": {"zcu104": {"boards": {}}}},
     "network engine boards zcu104: unknown key 'boards', expected one of multipliers"),
    ({"boards": ["zcu104"]}, "network engine boards: expected a mapping, got list"),
])
def test_bad_board_entries_are_one_line_errors(engine, message):
    with pytest.raises(ConfigError) as exc:
        _net(engine)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_default_envelopes_memories_fit_their_board(board):
    """Issue 12: block RAM (and UltraRAM) at most 80% on each board's default envelope for the VGG
    example at 32x32 (the shape estimate equals Yosys on every run recorded in docs/boards.md)."""
    b = get_board(board)
    plan = plan_memories(EngineEnvelope.for_network(VGG, (32, 32), board=board), b)
    assert plan.bram36 <= 0.8 * b.bram36 and plan.uram <= 0.8 * max(b.uram, 1)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_row_pairs_default_and_how_a_network_or_option_turns_them_off(board):
    """Both boards default to row quads (two DSPs per lane, two rows each; the ZCU104 to row octets,
    four); ``row_pairs: false`` keeps two lanes per DSP, ``macs_per_dsp: 1`` turns packing off
    altogether, ``row_pairs`` alone implies two MACs per DSP, ``row_quads: false`` keeps one DSP per lane."""
    env = EngineEnvelope.for_network(VGG, board=board)
    assert env.row_pairs and env.row_quads and env.dsps == env.lane_rows // 2 * env.lanes
    assert env.row_octets == (board == "zcu104") and env.lane_rows == (8 if board == "zcu104" else 4)
    assert get_board(board).engine["row_pairs"] is True and get_board(board).engine["row_quads"] is True
    pairs = EngineEnvelope.for_network(_net({"row_quads": False}), board=board)
    assert (pairs.row_pairs, pairs.row_quads, pairs.dsps) == (True, False, pairs.lanes)
    lanes = EngineEnvelope.for_network(_net({"row_pairs": False}), board=board)
    assert (lanes.macs_per_dsp, lanes.row_pairs, lanes.dsps) == (2, False, lanes.lanes // 2)
    off = EngineEnvelope.for_network(_net(None), board=board, macs_per_dsp=1)
    assert (off.macs_per_dsp, off.row_pairs) == (1, False)
    own = EngineEnvelope.for_network(_net({"row_pairs": True}))
    assert (own.macs_per_dsp, own.row_pairs) == (2, True)
    assert EngineEnvelope.for_network(_net(None), row_pairs=True).row_pairs


def test_row_pairs_setting_is_checked_in_one_line():
    with pytest.raises(ConfigError) as exc:
        _net({"row_pairs": "yes"})
    assert str(exc.value) == "network engine: row_pairs='yes' must be true or false"
    with pytest.raises(ConfigError, match=r"^engine: row_pairs packs a row pair's two weights into one multiplier: "
                                          r"it needs macs_per_dsp=2 \(got 1\)"):
        EngineEnvelope.for_network(_net({"row_pairs": True, "macs_per_dsp": 1}))


@pytest.mark.parametrize("board", [None, *sorted(BOARDS)])
def test_row_octets_imply_row_quads_and_need_eight_weights_a_beat(board):
    """``row_octets: true`` alone implies row quads and pairs: four DSPs per lane; the ZCU104's default
    octets are off where quads are (``row_quads: false``, ``macs_per_dsp: 1``), where the network says
    so, and quietly where a beat holds fewer than eight weights (a 32-bit stream); asked for on such
    a stream, or beside ``row_quads: false``, they are refused in one line."""
    o = EngineEnvelope.for_network(_net({"row_octets": True}), board=board)
    assert (o.macs_per_dsp, o.row_pairs, o.row_quads, o.row_octets, o.dsps, o.lane_rows) == \
        (2, True, True, True, 4 * o.lanes, 8)
    assert EngineEnvelope.for_network(_net(None), board=board, row_octets=True).row_octets
    for off in ({"row_quads": False}, {"row_octets": False}, {"row_pairs": False}, {"macs_per_dsp": 1},
                {"stream_bits": 32}):
        assert not EngineEnvelope.for_network(_net(off), board=board).row_octets, off
    for bad, why in (({"row_octets": True, "row_quads": False}, "row_quads (got False)"),
                     ({"row_octets": True, "stream_bits": 32}, "eight weights per beat (got 4)")):
        with pytest.raises(ConfigError) as exc:
            EngineEnvelope.for_network(_net(bad), board=board)
        assert str(exc.value).startswith("engine: row_octets gives a lane four row-pair multipliers: it needs ")
        assert why in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        _net({"row_octets": "yes"})
    assert str(exc.value) == "network engine: row_octets='yes' must be true or false"


@pytest.mark.parametrize("board", [None, *sorted(BOARDS)])
def test_row_quads_imply_row_pairs_and_need_them(board):
    """``row_quads: true`` alone implies row pairs (and two MACs per DSP): two DSPs per lane;
    ``row_pairs: false`` or ``macs_per_dsp: 1`` turns a board's quads off; asked for beside
    ``row_pairs: false`` they are refused in one line."""
    q = EngineEnvelope.for_network(_net({"row_quads": True}), board=board)
    rows = 8 if board == "zcu104" else 4        # the ZCU104 adds its default octets
    assert (q.macs_per_dsp, q.row_pairs, q.row_quads, q.dsps, q.lane_rows) == (2, True, True, rows // 2 * q.lanes, rows)
    assert EngineEnvelope.for_network(_net(None), board=board, row_quads=True).row_quads
    assert not EngineEnvelope.for_network(_net({"row_pairs": False}), board=board).row_quads
    assert not EngineEnvelope.for_network(_net(None), board=board, macs_per_dsp=1).row_quads
    with pytest.raises(ConfigError) as exc:
        EngineEnvelope.for_network(_net({"row_quads": True, "row_pairs": False}), board=board)
    assert str(exc.value).startswith("engine: row_quads gives a lane two row-pair multipliers: it needs "
                                     "row_pairs (got False)") and "\n" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        _net({"row_quads": 1})
    assert str(exc.value) == "network engine: row_quads=1 must be true or false"

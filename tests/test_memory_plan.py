"""The engine's memory list and the board memory plan (block RAM or UltraRAM)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from litefly.boards.boards import get_board
from litefly.boards.memory_plan import LUTRAM_DEPTH, bram36_blocks, plan_memories, uram_blocks
from litefly.boards.synth import CEILINGS
from litefly.config import load_network
from litefly.errors import ConfigError
from litefly.hw.memories import engine_memories, skewed_bank
from litefly.hw.spec import EngineEnvelope

ROOT = Path(__file__).resolve().parents[1]
VGG = load_network(ROOT / "examples" / "vgg_net.yaml", merge=False)   # the chains the Yosys references were measured on


def vgg(lanes: int, stream_bits: int, generators: int) -> EngineEnvelope:
    return EngineEnvelope.for_network(VGG, (32, 32), multipliers=lanes, stream_bits=stream_bits, macs_per_dsp=2,
                                      window_generators=generators)


@pytest.mark.parametrize("width, depth, granularity, bram, uram", [
    (128, 4096, None, 15, 2),       # the 128-bit frame buffer: 9 x 4096 RAMB36s; two URAM288
    (64, 8192, None, 16, 2),        # 64-bit, 8,192 deep: 4 x 8192 RAMB36s
    (1024, 1024, None, 28.5, 15),   # work memory: 57 RAMB18s of 18 x 1024
    (36, 512, None, 0.5, 1),        # one RAMB18
    (72, 4096, None, 8, 1),         # one URAM288 is eight BRAM36's bits
    (1024, 72, 8, 16, 16),          # an IN memory (byte writes): 64 data bits a 72-bit RAMB36, mostly empty
    (1024, 72, None, 14.5, 15),     # the same without byte writes: 29 RAMB18s of 36 x 512
    (256, 72, 8, 4, 4),
    (64, 1152, 8, 3, 1),            # a skewed IN bank (8 lanes, q = 576): 3 deep RAMB36s, one URAM288
    (48, 1152, 8, 2.5, 1),          # 6 lanes: 1,024 words in 3 RAMB18s of 18 x 1,024, 128 in 2 of 36 x 512
])
def test_block_counts_from_shapes(width: int, depth: int, granularity: int | None, bram: float, uram: int) -> None:
    assert bram36_blocks(width, depth, granularity) == bram
    assert uram_blocks(width, depth, granularity) == uram


# Yosys 0.70 `synth_xilinx -family xc7` of one Amaranth memory of each shape (one write port of byte
# writes, one synchronous read port; session 15): BRAM36 (RAMB18 = 0.5). A memory of byte writes is
# split by width at its write lanes where that is cheaper: 40 x 1,152 is 32 bits (1.5) + 8 bits (0.5),
# not 2.5 whole; 72 x 1,152 is 64 + 8, 3.5 not 4. The shapes of IN banks from 1 to 11 lanes a word.
YOSYS_BYTE_WRITE_SHAPES = [
    (8, 1152, 0.5), (16, 1152, 1), (24, 1152, 1.5), (32, 1152, 1.5), (40, 1152, 2), (48, 1152, 2.5),
    (56, 1152, 3), (64, 1152, 3), (72, 1152, 3.5), (80, 1152, 4), (88, 1152, 4.5), (40, 1024, 1.5),
    (72, 1024, 2.5), (40, 2304, 3.5), (56, 2304, 4.5), (24, 576, 1), (40, 288, 1), (1024, 72, 16), (256, 72, 4),
]


@pytest.mark.parametrize("width, depth, bram", YOSYS_BYTE_WRITE_SHAPES)
def test_byte_write_shapes_as_yosys_maps_them(width: int, depth: int, bram: float) -> None:
    assert bram36_blocks(width, depth, 8) == bram


def test_whole_word_memories_are_not_split_by_width() -> None:
    """Without byte writes Yosys maps a memory whole by width: 128 x 4,096 is 15 RAMB36 of 9 x 4,096
    (measured), not 14 of them and a RAMB18 for the last 2 bits."""
    assert bram36_blocks(128, 4096) == 15


# Yosys 0.70 synth_xilinx, every memory left to Yosys (docs/boards.md): (lanes, stream bits, generators,
# board) -> BRAM36 it mapped, with IN's and OUT's skewed banks. The shape estimate equals each. (With
# element-mod-E banks before, 97.5, 113.5, 175.5, 303.5 and 348.5 BRAM36 for five engines; with only
# IN's skewed, 57.5 and 111.5 for (64, 64, 1) and (128, 64, 2): each equal to its estimate.)
MEASURED_BRAM36 = [((64, 64, 1, "pynq-z2"), 73.5)]


@pytest.mark.parametrize("envelope, measured", MEASURED_BRAM36)
def test_shape_estimate_matches_yosys(envelope: tuple, measured: float) -> None:
    lanes, bits, gens, _board = envelope
    mems = engine_memories(vgg(lanes, bits, gens))
    assert sum(bram36_blocks(m.width, m.depth, m.granularity) * m.read_ports
               for m in mems if m.depth > LUTRAM_DEPTH) == measured


@pytest.mark.parametrize("lanes, gens, words, quads, measured", [(72, 2, 1, False, 98.0), (96, 2, 1, False, 119.5),
                                                                (96, 1, 4, True, 112.0)])
def test_pynq_z2_default_engines_estimate_equals_yosys(lanes: int, gens: int, words: int, quads: bool,
                                                       measured: float) -> None:
    """`litefly synth examples/vgg_net.yaml --board pynq-z2 --multipliers N ...` (merged chains, 64 KiB;
    row pairs on two generators, sessions 14 and 15; row quads on one generator with four-beat frame
    words, session 17, the default; with WORK in two memories for interleaved quads, session 18: 111.5
    before): the plan equals what Yosys mapped. At 72 lanes the IN banks are
    40 bits (5 lanes a word), which the plan counted as 2.5 BRAM36 each (106 in all) until it split
    byte-write memories by width."""
    env = EngineEnvelope.for_network(load_network(ROOT / "examples" / "vgg_net.yaml"), (32, 32),
                                     board="pynq-z2", multipliers=lanes, window_generators=gens,
                                     frame_word_beats=words, row_quads=quads)
    assert plan_memories(env, get_board("pynq-z2")).bram36 == measured


def test_planned_estimate_matches_yosys() -> None:
    """ZCU104, 384 lanes, 128-bit, G4, 256 KiB, as `litefly synth` ran it before OUT's banks were
    skewed (OUT then in LUT-RAM; the plan of then: the frame buffer's four copies and 28 of the 64
    IN banks in UltraRAM): Yosys 0.70 mapped 179.5 BRAM36 (351 RAMB18, 4 RAMB36) and 60 URAM288.
    The same memories' estimate: 36 IN banks of 48 x 1,152 byte writes, the 3,072 x 1,024 work
    memory and the 128 x 528 weights in block RAM."""
    assert 36 * bram36_blocks(48, 1152, 8) + bram36_blocks(3072, 1024) + bram36_blocks(128, 528) == 179.5
    assert 4 * uram_blocks(128, 16384) + 28 * uram_blocks(48, 1152, 8) == 60


def test_memory_list_is_the_engines() -> None:
    """Every memory the engine holds: a frame-buffer copy per window generator, OUT with two read ports
    (output stage and unloader)."""
    env = vgg(128, 128, 4)
    mems = {m.name: m for m in engine_memories(env)}
    frames = [mems[n] for n in ("frame_mem", "frame_mem1", "frame_mem2", "frame_mem3")]
    assert all(f.read_ports == 1 and f.depth == env.frame_beats for f in frames) and "frame_mem4" not in mems
    assert len([n for n in mems if n.startswith("in_mem")]) == env.elems_per_beat * 4
    # IN: E skewed banks a generator, each a byte for each of ceil(lanes / G / E) lanes, 2 x max_q deep
    assert mems["in_mem0_0"].width == 2 * env.act_bits and mems["in_mem0_0"].granularity == env.act_bits
    assert mems["in_mem0_0"].depth == 2 * env.max_q
    assert all(mems[f"out_mem{b}"].read_ports == 2 for b in range(env.elems_per_beat))
    assert "index_mem" not in mems                       # the VGG chains have no sparse factor


@pytest.mark.parametrize("lanes, e", [(64, 8), (96, 16), (4, 8), (20, 8)])
def test_in_banks_take_a_beat_and_an_element_in_one_cycle(lanes: int, e: int) -> None:
    """IN's skew: the E elements of one lane a beat brings (at any element offset) go to E different
    banks, and one element of every lane (what the MAC array reads) is at most one word of each bank,
    each lane in its own slot."""
    for lane in range(lanes):
        for offset in range(3 * e):
            assert len({skewed_bank(lane, offset + j, e)[0] for j in range(e)}) == e
    for element in range(3 * e):
        places = [skewed_bank(lane, element, e) for lane in range(lanes)]
        assert len(set(places)) == lanes and max(slot for _, slot in places) == -(-lanes // e) - 1


def test_zcu104_plan_moves_memories_to_ultraram_until_both_fit() -> None:
    """384 lanes, 128-bit stream, four generators, 256 KiB frame: all in block RAM is 585.5 BRAM36 of
    312; the plan puts the frame buffer's four copies in UltraRAM first (most block RAM saved per
    URAM), then IN banks (2.5 BRAM36 for one URAM each) until the two shares balance."""
    board = get_board("zcu104")
    env = EngineEnvelope.for_network(VGG, (32, 32), multipliers=384, stream_bits=128, macs_per_dsp=2,
                                     window_generators=4, frame_kib=256)
    mems = engine_memories(env)
    assert sum(bram36_blocks(m.width, m.depth, m.granularity) * m.read_ports
               for m in mems if m.depth > LUTRAM_DEPTH) == 585.5
    plan = plan_memories(env, board)
    assert {plan.styles[n] for n in ("frame_mem", "frame_mem1", "frame_mem2", "frame_mem3")} == {"ultra"}
    assert set(plan.styles.values()) == {"ultra"} and "work_mem" not in plan.styles
    assert plan.bram36 <= CEILINGS["bram36"] * board.bram36 and plan.uram <= CEILINGS["uram"] * board.uram
    # balanced: one more IN bank (2.5 BRAM36 or 1 URAM) in UltraRAM would not lower the larger share
    def worst(b: float, u: float) -> float:
        return max(b / board.bram36, u / board.uram)
    assert worst(plan.bram36 - 2.5, plan.uram + 1) >= worst(plan.bram36, plan.uram)
    assert worst(plan.bram36 + 2.5, plan.uram - 1) > worst(plan.bram36, plan.uram)
    assert sum(r["uram"] for r in plan.rows) == plan.uram and sum(r["bram36"] for r in plan.rows) == plan.bram36
    assert sum(r["count"] for r in plan.rows) == len(engine_memories(env))


def test_board_without_ultraram_gets_no_styles() -> None:
    plan = plan_memories(vgg(64, 64, 2), get_board("pynq-z2"))
    assert plan.styles == {} and plan.uram == 0
    assert plan.bram36 == 89.5            # 73.5 with one generator (Yosys, above) + a second frame-buffer copy (16)


def test_ram_styles_reach_the_verilog(tmp_path: Path) -> None:
    """A style becomes the memory's ``ram_style`` attribute (Vivado and Yosys read it); the engine's
    hash does not change."""
    generate = pytest.importorskip("litefly.hw.generate").generate
    env = EngineEnvelope.for_network(load_network(ROOT / "examples" / "layers" / "pointnet_fc3.yaml"), None,
                                     multipliers=8)
    plain = generate(env, tmp_path / "plain")
    placed = generate(env, tmp_path / "placed", ram_styles={"frame_mem": "ultra", "weight_mem": "block"})
    text = placed.verilog.read_text()
    assert re.search(r'\(\* ram_style = "ultra" \*\)\s*reg \[\d+:0\] frame_mem\b', text)
    assert re.search(r'\(\* ram_style = "block" \*\)\s*reg \[\d+:0\] weight_mem\b', text)
    assert "ram_style" not in plain.verilog.read_text()
    assert placed.manifest_data["ram_styles"] == {"frame_mem": "ultra", "weight_mem": "block"}
    assert placed.manifest_data["config_hash"] == plain.manifest_data["config_hash"]


@pytest.mark.parametrize("styles, message", [
    ({"frame": "ultra"}, r"ram_styles: 'frame' is not a memory of engine \w+; expected one of .*frame_mem"),
    ({"frame_mem": "huge"}, r"ram_styles: frame_mem='huge' is not one of block, ultra, distributed"),
])
def test_bad_ram_styles_are_refused(styles: dict, message: str) -> None:
    engine = pytest.importorskip("litefly.hw.engine")
    env = EngineEnvelope.for_network(load_network(ROOT / "examples" / "layers" / "pointnet_fc3.yaml"), None,
                                     multipliers=8)
    with pytest.raises(ConfigError, match=message):
        engine.check_ram_styles(env, styles)      # what NetworkEngine's constructor calls


def test_cli_gen_with_board_writes_the_plan(tmp_path: Path) -> None:
    """``litefly gen --board zcu104`` generates with the board's plan; without ``--board``, no styles."""
    from click.testing import CliRunner

    from litefly.hw.cli import gen

    cfg = tmp_path / "small.yaml"
    cfg.write_text("name: small\nkind: conv2d\nin_channels: 3\nout_channels: 8\nkernel: 2\n"
                   "chain: [[8, 12, 4, 6, 1]]\nengine: {multipliers: 8, stream_bits: 32}\n")
    # the layer's lanes and stream width over the board's defaults (256 lanes, 128 bits, 4 generators,
    # two-beat frame words: a 64-bit frame word of the 32-bit stream)
    res = CliRunner().invoke(gen, [str(cfg), "-o", str(tmp_path / "z"), "--input-size", "4", "4", "--board", "zcu104",
                                   "--multipliers", "8", "--stream-bits", "32", "--window-generators", "1"])
    assert res.exit_code == 0, res.output
    assert "memory plan for zcu104: frame_mem ultra" in res.output
    assert re.search(r'\(\* ram_style = "ultra" \*\)\s*reg \[63:0\] frame_mem\b', (tmp_path / "z" / "small.v").read_text())
    res = CliRunner().invoke(gen, [str(cfg), "-o", str(tmp_path / "p"), "--input-size", "4", "4"])
    assert res.exit_code == 0 and "memory plan" not in res.output
    assert "ram_style" not in (tmp_path / "p" / "small.v").read_text()

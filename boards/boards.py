"""Board definitions: the facts the build flow, resource reports and rooflines use.

The part (device, package, speed grade) and the clocks are described once, as Amaranth platform
classes in ``boards/platforms.py`` (``Board.platform`` names the class); ``Board.part``,
``family``, ``clock_mhz`` and ``max_clock_mhz`` read them. A PYNQ board has no Amaranth, so
:func:`platform_facts` reads the classes' literal attributes from that file's source without
importing it: ``import litefly.boards`` and the Vivado flow stay numpy/stdlib-only.

The rest (board parts, PS port names and PS configuration keys as used in Vivado block designs,
resource counts from the data sheets and ``shared/reference/debut.md``) is here.
``dma_bytes_per_s`` is the sustained one-way AXI DMA rate used for the roofline's DMA bound:
it is an ASSUMPTION (``dma_note`` says where it comes from), not a measurement made here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from litefly.errors import ConfigError, ToolError

__all__ = ["Board", "BOARDS", "get_board", "PYNQ_IMAGE_VIVADO", "platform_facts", "PLATFORMS_FILE"]

PLATFORMS_FILE = Path(__file__).with_name("platforms.py")
# Yosys synth_xilinx family of Amaranth's XilinxPlatform.family
_YOSYS_FAMILY = {"series7": "xc7", "ultrascaleplus": "xcup"}

# The Vivado release each PYNQ image's own overlays were built with (PYNQ release notes and
# docs: v2.7 "Vivado 2020.2 references"; v3.0/v3.0.1 moved to 2022.1; v3.1 docs updated to
# 2024.1; v4.0 "All overlays built with Vivado 2025.2"). A bitstream built with another
# release usually loads (PYNQ reads the .hwh, not the tool version), but that is the
# combination the image was tested with: the Tcl warns on any other release.
PYNQ_IMAGE_VIVADO: dict[str, str] = {"2.7": "2020.2", "3.0": "2022.1", "3.1": "2024.1", "4.0": "2025.2"}


@lru_cache(maxsize=None)
def platform_facts(cls_name: str) -> dict[str, Any]:
    """The literal class attributes (``device``, ``package``, ``speed``, ``pl_clock_mhz``, ...) of
    platform class ``cls_name`` in ``boards/platforms.py``, read from its source (no Amaranth)."""
    tree = ast.parse(PLATFORMS_FILE.read_text(), str(PLATFORMS_FILE))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            facts: dict[str, Any] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    try:
                        facts[stmt.targets[0].id] = ast.literal_eval(stmt.value)
                    except ValueError:       # resources, connectors: Amaranth objects
                        pass
            return facts
    raise ConfigError(f"no platform class {cls_name} in {PLATFORMS_FILE}")


def _xilinx_family(device: str) -> str:
    """Amaranth's ``XilinxPlatform.family`` of ``device``, for the two families litefly targets."""
    d = device.lower().removeprefix("xc")
    if d.startswith("7"):
        return "series7"
    if d.startswith("zu"):
        return "ultrascaleplus"
    raise ConfigError(f"device {device!r}: litefly knows the Zynq-7000 (xc7z...) and Zynq UltraScale+ (xczu...) only")


@dataclass(frozen=True)
class Board:
    name: str
    platform: str                # class in boards/platforms.py: part, package, speed grade, clocks
    ps: str                      # Vivado PS IP: processing_system7 / zynq_ultra_ps_e
    preset: str                  # board preset applied to the PS (Vivado board part)
    board_part: str
    hp_port: str                 # PS slave port the DMA masters use
    hp_width_bits: int
    dma_bytes_per_s: float       # sustained one-way DMA bandwidth
    dsp: int
    bram36: int
    uram: int
    lut: int
    ff: int
    cpu: str
    pynq: str                    # pip requirement for the board's PYNQ
    # -- added for the Vivado flow (boards/vivado.py) --------------------------------
    gp_master: str = "M_AXI_GP0"         # PS master port driving the AXI-Lite slaves
    pl_clock: str = "FCLK_CLK0"          # PS-generated PL clock pin
    pl_resetn: str = "FCLK_RESET0_N"     # PS-generated PL reset pin (active low)
    ps_clock_pins: tuple[str, ...] = ("M_AXI_GP0_ACLK", "S_AXI_HP0_ACLK")  # port clocks to drive
    engine_base: int = 0x43C0_0000      # AXI-Lite address of the engine (in the GP master window)
    dma_base: int = 0x4040_0000         # AXI-Lite address of the AXI DMA
    dma_note: str = ""                   # where dma_bytes_per_s comes from
    # -- the board's PYNQ images (host/board_env.py, boards/vivado.py) ----------------
    pynq_majors: tuple[int, ...] = (3,)  # pynq package major versions that run on this board
    images: tuple[str, ...] = ("3.1",)   # PYNQ image versions the flow targets (PYNQ_IMAGE_VIVADO keys)
    # -- the default engine envelope on this board (a network's ``engine:`` keys; why these:
    # docs/boards.md, "Default envelopes") -----------------------------------------------------
    engine_defaults: tuple[tuple[str, int], ...] = ()

    @property
    def engine(self) -> dict[str, int]:
        """The board's default engine envelope: ``engine:`` keys of a network file
        (``litefly.config.NetworkEngine``). A network's own ``engine:`` settings override it key by key."""
        return dict(self.engine_defaults)

    @property
    def capacity(self) -> dict[str, int]:
        """The resources a fit verdict counts: LUT, FF, DSP, BRAM36 and URAM."""
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram36": self.bram36, "uram": self.uram}

    @property
    def facts(self) -> dict[str, Any]:
        """The platform class's literal attributes (:func:`platform_facts`)."""
        return platform_facts(self.platform)

    @property
    def xilinx_family(self) -> str:
        """Amaranth's family name: ``series7`` or ``ultrascaleplus``."""
        return _xilinx_family(self.facts["device"])

    @property
    def part(self) -> str:
        """The Vivado part, composed as Amaranth's XilinxPlatform does (``xc7z020clg400-1``,
        ``xczu7ev-ffvc1156-2-e``)."""
        f = self.facts
        sep = "-" if self.xilinx_family == "ultrascaleplus" else ""
        return f"{f['device']}{sep}{f['package']}-{f['speed']}"

    @property
    def family(self) -> str:
        """Yosys ``synth_xilinx -family``: ``xc7`` or ``xcup``."""
        return _YOSYS_FAMILY[self.xilinx_family]

    @property
    def clock_mhz(self) -> float:
        """Default PL clock for the engine, one the PS PLL generates exactly (the platform's
        ``pl_clock_mhz``)."""
        return float(self.facts["pl_clock_mhz"])

    @property
    def max_clock_mhz(self) -> float:
        """Highest PL clock the Vivado flow accepts for this part (``max_pl_clock_mhz``)."""
        return float(self.facts["max_pl_clock_mhz"])

    def platform_class(self) -> type:
        """The Amaranth platform class itself (PC only: needs amaranth and amaranth-boards)."""
        try:
            from . import platforms  # noqa: PLC0415
        except ModuleNotFoundError as exc:
            raise ToolError(f"the {self.name} platform class needs the PC extras ({exc}): "
                            f"pip install 'litefly[pc]'") from None
        return platforms.PLATFORMS[self.platform]

    @property
    def pynq_versions(self) -> str:
        """Human-readable PYNQ range, e.g. ``3.x`` or ``3.x and 4.x``."""
        return " and ".join(f"{m}.x" for m in self.pynq_majors)

    @property
    def vivado_releases(self) -> dict[str, str]:
        """``{PYNQ image: Vivado release its overlays were built with}`` for this board's images."""
        return {img: PYNQ_IMAGE_VIVADO[img] for img in self.images}


BOARDS: dict[str, Board] = {
    "pynq-z2": Board(
        name="pynq-z2", platform="PynqZ2Platform", ps="processing_system7",
        preset="tul.com.tw:pynq-z2:part0:1.0", board_part="tul.com.tw:pynq-z2:part0:1.0",
        hp_port="S_AXI_HP0", hp_width_bits=64, dma_bytes_per_s=0.8e9,
        dsp=220, bram36=140, uram=0, lut=53_200, ff=106_400,
        cpu="2x Cortex-A9 650 MHz (armv7)", pynq="pynq>=3.0,<4",
        pynq_majors=(3,), images=("3.1",),       # PYNQ 4 removed Zynq-7000 support
        # row quads (two DSPs per lane, two rows of a block each) and four-beat frame words on one
        # window generator (the window bandwidth of four generators from one frame-buffer copy): the
        # most lanes whose memories stay within 80% of the block RAM for the VGG example (block RAM,
        # not DSPs, binds on this part): 96 lanes, 112 BRAM36 (80.0%) by the memory plan and by
        # Yosys, 192 DSPs (87.3%), 36,710 LUTs (69.0%, session 23); 104 lanes need 113.5 BRAM36
        engine_defaults=(("multipliers", 96), ("macs_per_dsp", 2), ("stream_bits", 64), ("window_generators", 1),
                         ("row_pairs", True), ("row_quads", True), ("frame_word_beats", 4)),
        dma_note="assumption: ~0.8 GB/s sustained one-way AXI DMA over one 64-bit HP port, "
                 "as reported for this board (shared/reference/debut.md); not measured here"),
    "zcu104": Board(
        name="zcu104", platform="ZCU104Platform", ps="zynq_ultra_ps_e",
        preset="xilinx.com:zcu104:part0:1.1", board_part="xilinx.com:zcu104:part0:1.1",
        hp_port="S_AXI_HP0_FPD", hp_width_bits=128, dma_bytes_per_s=2.4e9,
        dsp=1_728, bram36=312, uram=96, lut=230_400, ff=460_800,
        cpu="4x Cortex-A53 1.2 GHz (aarch64)", pynq="pynq>=3.0,<5",
        pynq_majors=(3, 4), images=("3.1", "4.0"),
        gp_master="M_AXI_HPM0_FPD", pl_clock="pl_clk0", pl_resetn="pl_resetn0",
        ps_clock_pins=("maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"),
        engine_base=0xA000_0000, dma_base=0xA001_0000,
        # row quads (two DSPs per lane, two rows of a block each): the VGG example's window generators
        # and unloader pace its batches past about 256 lanes, so 256 lanes run it faster (cycle model)
        # than 384 with quads or with pairs; two-beat frame words halve the window reads of its 4-beat
        # pixels, so the MACs pace vgg_conv2 and the unloader vgg_conv3 (115,901 cycles against 134,428
        # at batch 8; 217 BRAM36 and 66 URAM by the memory plan, within 80% of each). Row octets (four
        # DSPs per lane: 1,024) add no memory (the bias memory's further read ports are LUT-RAM) and
        # issue vgg_conv2's and vgg_conv3's first factors (r = 8, s = 9) in an eighth of their cycles,
        # so the window generators and the DMA pace vgg_conv2 instead of its MACs
        engine_defaults=(("multipliers", 256), ("macs_per_dsp", 2), ("stream_bits", 128), ("window_generators", 4),
                         ("frame_kib", 256), ("row_pairs", True), ("row_quads", True), ("frame_word_beats", 2),
                         ("row_octets", True)),
        dma_note="assumption: 128-bit HP port at the engine clock, derated; ~2.4 GB/s "
                 "sustained one-way is an estimate, not measured here"),
}


def get_board(name: str) -> Board:
    """The board called ``name`` (``pynq-z2`` or ``zcu104``)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board {name!r} is not known; expected one of {', '.join(BOARDS)}") from None

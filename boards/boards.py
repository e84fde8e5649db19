"""Board definitions: the facts the build flow, resource reports and rooflines use.

Figures from the boards' data sheets and ``shared/reference/debut.md``; parts, board parts,
PS port names and PS configuration keys as used in Vivado block designs for these boards.
``dma_bytes_per_s`` is the sustained one-way AXI DMA rate used for the roofline's DMA bound:
it is an ASSUMPTION (``dma_note`` says where it comes from), not a measurement made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from litefly.errors import ConfigError

__all__ = ["Board", "BOARDS", "get_board", "PYNQ_IMAGE_VIVADO"]

# The Vivado release each PYNQ image's own overlays were built with (PYNQ release notes and
# docs: v2.7 "Vivado 2020.2 references"; v3.0/v3.0.1 moved to 2022.1; v3.1 docs updated to
# 2024.1; v4.0 "All overlays built with Vivado 2025.2"). A bitstream built with another
# release usually loads (PYNQ reads the .hwh, not the tool version), but that is the
# combination the image was tested with: the Tcl warns on any other release.
PYNQ_IMAGE_VIVADO: dict[str, str] = {"2.7": "2020.2", "3.0": "2022.1", "3.1": "2024.1", "4.0": "2025.2"}


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    family: str                  # Yosys synth_xilinx family: "xc7" or "xcup"
    ps: str                      # Vivado PS IP: processing_system7 / zynq_ultra_ps_e
    preset: str                  # board preset applied to the PS (Vivado board part)
    board_part: str
    clock_mhz: float             # default PL clock for the engine (one the PS PLL generates exactly:
                                 # PYNQ-Z2 IOPLL 1000 MHz / 10; ZCU104 IOPLL 1500 MHz / 8 = 187.5,
                                 # 200 MHz is not reachable and Vivado would round it to 187.5)
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
    max_clock_mhz: float = 150.0         # highest PL clock the flow accepts for this part
    dma_note: str = ""                   # where dma_bytes_per_s comes from
    # -- the board's PYNQ images (host/board_env.py, boards/vivado.py) ----------------
    pynq_majors: tuple[int, ...] = (3,)  # pynq package major versions that run on this board
    images: tuple[str, ...] = ("3.1",)   # PYNQ image versions the flow targets (PYNQ_IMAGE_VIVADO keys)

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
        name="pynq-z2", part="xc7z020clg400-1", family="xc7", ps="processing_system7",
        preset="tul.com.tw:pynq-z2:part0:1.0", board_part="tul.com.tw:pynq-z2:part0:1.0",
        clock_mhz=100.0, hp_port="S_AXI_HP0", hp_width_bits=64, dma_bytes_per_s=0.8e9,
        dsp=220, bram36=140, uram=0, lut=53_200, ff=106_400,
        cpu="2x Cortex-A9 650 MHz (armv7)", pynq="pynq>=3.0,<4",
        pynq_majors=(3,), images=("3.1",),       # PYNQ 4 removed Zynq-7000 support
        dma_note="assumption: ~0.8 GB/s sustained one-way AXI DMA over one 64-bit HP port, "
                 "as reported for this board (shared/reference/debut.md); not measured here"),
    "zcu104": Board(
        name="zcu104", part="xczu7ev-ffvc1156-2-e", family="xcup", ps="zynq_ultra_ps_e",
        preset="xilinx.com:zcu104:part0:1.1", board_part="xilinx.com:zcu104:part0:1.1",
        clock_mhz=187.5, hp_port="S_AXI_HP0_FPD", hp_width_bits=128, dma_bytes_per_s=2.4e9,
        dsp=1_728, bram36=312, uram=96, lut=230_400, ff=460_800,
        cpu="4x Cortex-A53 1.2 GHz (aarch64)", pynq="pynq>=3.0,<5",
        pynq_majors=(3, 4), images=("3.1", "4.0"),
        gp_master="M_AXI_HPM0_FPD", pl_clock="pl_clk0", pl_resetn="pl_resetn0",
        ps_clock_pins=("maxihpm0_fpd_aclk", "saxihp0_fpd_aclk"),
        engine_base=0xA000_0000, dma_base=0xA001_0000, max_clock_mhz=300.0,
        dma_note="assumption: 128-bit HP port at the engine clock, derated; ~2.4 GB/s "
                 "sustained one-way is an estimate, not measured here"),
}


def get_board(name: str) -> Board:
    """The board called ``name`` (``pynq-z2`` or ``zcu104``)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board {name!r} is not known; expected one of {', '.join(BOARDS)}") from None

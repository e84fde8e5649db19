"""Board definitions: the facts the build flow, resource reports and rooflines use.

Figures from the boards' data sheets and ``shared/reference/debut.md``. ``dma_bytes_per_s``
is the sustained one-way AXI DMA rate used for the roofline's DMA bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from litefly.errors import ConfigError

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    family: str                  # Yosys synth_xilinx family: "xc7" or "xcup"
    ps: str                      # Vivado PS IP: processing_system7 / zynq_ultra_ps_e
    preset: str                  # board preset applied to the PS (Vivado board part)
    board_part: str
    clock_mhz: float             # default PL clock for the engine
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


BOARDS: dict[str, Board] = {
    "pynq-z2": Board(
        name="pynq-z2", part="xc7z020clg400-1", family="xc7", ps="processing_system7",
        preset="tul.com.tw:pynq-z2:part0:1.0", board_part="tul.com.tw:pynq-z2:part0:1.0",
        clock_mhz=100.0, hp_port="S_AXI_HP0", hp_width_bits=64, dma_bytes_per_s=0.8e9,
        dsp=220, bram36=140, uram=0, lut=53_200, ff=106_400,
        cpu="2x Cortex-A9 650 MHz (armv7)", pynq="pynq>=3.0,<4"),
    "zcu104": Board(
        name="zcu104", part="xczu7ev-ffvc1156-2-e", family="xcup", ps="zynq_ultra_ps_e",
        preset="xilinx.com:zcu104:part0:1.1", board_part="xilinx.com:zcu104:part0:1.1",
        clock_mhz=200.0, hp_port="S_AXI_HP0_FPD", hp_width_bits=128, dma_bytes_per_s=2.4e9,
        dsp=1_728, bram36=312, uram=96, lut=230_400, ff=460_800,
        cpu="4x Cortex-A53 1.2 GHz (aarch64)", pynq="pynq>=3.0,<5"),
}


def get_board(name: str) -> Board:
    """The board called ``name`` (``pynq-z2`` or ``zcu104``)."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ConfigError(f"board {name!r} is not known; expected one of {', '.join(BOARDS)}") from None

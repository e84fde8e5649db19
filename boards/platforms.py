"""The boards' facts, once, as Amaranth platform classes in amaranth-boards' style.

Part (device, package, speed grade) and clocks of each board litefly builds for, plus the two
PS-side clock facts the flow needs (``pl_clock_mhz``: the PL clock the Zynq PS generates by
default for the engine; ``max_pl_clock_mhz``: the highest the Vivado flow accepts). The Vivado
flow (``boards/vivado.py``), ``litefly synth`` and the runtime read them through
:class:`litefly.boards.boards.Board`.

- :class:`PynqZ2Platform`: the PYNQ-Z2 is not in amaranth-boards; it has the Arty Z7-20's
  xc7z020-1clg400 and the same PL pins for the 125 MHz clock, LEDs, buttons, switches and the
  two Pmods (``amaranth_boards/arty_z7.py``; the PYNQ-Z2 master XDC), so this class mirrors
  those (audio and HDMI differ between the boards and are left out).
- :class:`ZCU104Platform`: not in amaranth-boards 0.0.21 either (its UltraScale+ boards are the
  RFSoC 4x2, KCU105 and AX7325B), written in the same style.
- :data:`PROXY_PLATFORM`: amaranth-boards' ULX3S 85F (LFE5U-85F, CABGA381, speed 6), the ECP5
  the place-and-route fmax proxy (``boards/fmax.py``) runs on.

This module imports Amaranth. A PYNQ board has none: :func:`litefly.boards.boards.platform_facts`
reads the literal class attributes (``device = "xc7z020"`` ...) from this file's source without
importing it, so the board side and the PC side share one description.
"""

from __future__ import annotations

from amaranth.build import Attrs, Clock, Connector, DiffPairs, Pins, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.resources import ButtonResources, LEDResources, SwitchResources
from amaranth_boards.ulx3s import ULX3S_85F_Platform

__all__ = ["PynqZ2Platform", "ZCU104Platform", "PROXY_PLATFORM", "PLATFORMS"]


class PynqZ2Platform(XilinxPlatform):
    """TUL PYNQ-Z2 (Zynq-7020). The engine's clock is the PS's FCLK_CLK0 (IO PLL 1000 MHz / 10);
    ``clk125`` is the board's PL oscillator (unused by the engine)."""

    device           = "xc7z020"
    package          = "clg400"
    speed            = "1"
    default_clk      = "clk125"
    pl_clock_mhz     = 100.0
    max_pl_clock_mhz = 150.0
    resources        = [
        Resource("clk125", 0, Pins("H16", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVCMOS33")),

        *LEDResources(pins="R14 P14 N16 M14", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *ButtonResources(pins="D19 D20 L20 L19", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *SwitchResources(pins="M20 M19", attrs=Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors       = [
        Connector("pmod", 0, "Y18 Y19 Y16 Y17 - - U18 U19 W18 W19 - -"),  # PMODA
        Connector("pmod", 1, "W14 Y14 T11 T10 - - V16 W16 V12 W13 - -"),  # PMODB
    ]


class ZCU104Platform(XilinxPlatform):
    """Xilinx ZCU104 (Zynq UltraScale+ XCZU7EV). The engine's clock is the PS's pl_clk0 (IO PLL
    1500 MHz / 8 = 187.5 MHz: 200 MHz is not reachable); ``clk125`` and ``clk300`` are the board's
    PL oscillators (unused by the engine)."""

    device           = "xczu7ev"
    package          = "ffvc1156"
    speed            = "2-e"
    default_clk      = "clk125"
    pl_clock_mhz     = 187.5
    max_pl_clock_mhz = 300.0
    resources        = [
        Resource("clk125", 0, DiffPairs("F23", "E23", dir="i"), Clock(125e6), Attrs(IOSTANDARD="LVDS")),
        Resource("clk300", 0, DiffPairs("AH18", "AH17", dir="i"), Clock(300e6),
                 Attrs(IOSTANDARD="DIFF_SSTL12_DCI")),

        *LEDResources(pins="D5 D6 A5 B5", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *ButtonResources(pins="B4 C4 B3 C3", attrs=Attrs(IOSTANDARD="LVCMOS33")),
        *SwitchResources(pins="E4 D4 F5 F4", attrs=Attrs(IOSTANDARD="LVCMOS33")),
    ]
    connectors       = [
        Connector("pmod", 0, "G8 H8 G7 H7 - - G6 H6 J6 J7 - -"),
        Connector("pmod", 1, "J9 K9 K8 L8 - - L10 M10 M8 M9 - -"),
    ]


# The largest ECP5 in amaranth-boards with the package the proxy uses (CABGA381, speed 6).
PROXY_PLATFORM = ULX3S_85F_Platform

PLATFORMS: dict[str, type] = {"PynqZ2Platform": PynqZ2Platform, "ZCU104Platform": ZCU104Platform}

"""Board facts on a board: part, family and clocks come from the Amaranth platform classes in
boards/platforms.py, read from their source, so numpy/stdlib alone gives them (no Amaranth)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from litefly.boards.boards import BOARDS, PLATFORMS_FILE, get_board, platform_facts
from litefly.errors import ConfigError

pytestmark = pytest.mark.board


def test_parts_families_and_clocks_from_the_platform_classes() -> None:
    z2, zcu = get_board("pynq-z2"), get_board("zcu104")
    assert (z2.platform, z2.part, z2.family, z2.xilinx_family) == ("PynqZ2Platform", "xc7z020clg400-1", "xc7", "series7")
    assert (zcu.platform, zcu.part, zcu.family, zcu.xilinx_family) == ("ZCU104Platform", "xczu7ev-ffvc1156-2-e", "xcup",
                                                                       "ultrascaleplus")
    assert (z2.clock_mhz, z2.max_clock_mhz, zcu.clock_mhz, zcu.max_clock_mhz) == (100.0, 150.0, 187.5, 300.0)
    facts = platform_facts("ZCU104Platform")
    assert facts["device"] == "xczu7ev" and facts["default_clk"] == "clk125" and "resources" not in facts


def test_platforms_file_is_installed_with_the_package() -> None:
    assert PLATFORMS_FILE.parent == Path(sys.modules["litefly.boards.boards"].__file__).parent
    assert all(f"class {b.platform}(" in PLATFORMS_FILE.read_text() for b in BOARDS.values())


def test_unknown_platform_class_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^no platform class NoSuchPlatform in .*platforms\.py$"):
        platform_facts("NoSuchPlatform")


def test_board_facts_and_vivado_flow_import_no_amaranth(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from litefly.boards.boards import get_board\n"
            "import litefly.boards.vivado\n"
            "b = get_board('pynq-z2')\n"
            "print(b.part, b.family, b.clock_mhz)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('amaranth', 'amaranth_boards'))\n"
            "assert not bad, bad\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)     # not the source tree: its litefly/ folder would shadow the install
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["xc7z020clg400-1", "xc7", "100.0"]

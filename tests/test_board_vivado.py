"""The Vivado flow (one network engine per build) for the boards' PYNQ images: named Vivado release with a warning (not an error)
on another, the DMA's 26-bit length register, and the .hwh written beside the .bit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from boards_fakes import fake_generate
from litefly.boards.boards import BOARDS, PYNQ_IMAGE_VIVADO, get_board
from litefly.boards.vivado import write_build
from litefly.config import load_network

ROOT = Path(__file__).resolve().parents[1]
NETWORK = load_network(ROOT / "examples" / "vgg_net.yaml")


@pytest.fixture(params=sorted(BOARDS))
def plan(request, tmp_path):
    return write_build(NETWORK, get_board(request.param), tmp_path / request.param, generate=fake_generate)


def test_images_and_releases():
    assert PYNQ_IMAGE_VIVADO["3.1"] == "2024.1" and PYNQ_IMAGE_VIVADO["3.0"] == "2022.1"
    assert PYNQ_IMAGE_VIVADO["2.7"] == "2020.2" and PYNQ_IMAGE_VIVADO["4.0"] == "2025.2"
    z2, zcu = get_board("pynq-z2"), get_board("zcu104")
    assert z2.pynq_majors == (3,) and z2.vivado_releases == {"3.1": "2024.1"} and z2.pynq_versions == "3.x"
    assert zcu.pynq_majors == (3, 4) and zcu.vivado_releases == {"3.1": "2024.1", "4.0": "2025.2"}


def test_tcl_names_the_release_and_warns_on_another(plan):
    tcl = plan.tcl.read_text()
    b = plan.board
    expected = " ".join(sorted(set(b.vivado_releases.values())))
    assert f"set litefly_vivado_expected {{{expected}}}" in tcl
    for img, rel in b.vivado_releases.items():
        assert f"PYNQ v{img}: Vivado {rel}" in tcl
    warn = [ln for ln in tcl.splitlines() if "WARNING: litefly: Vivado $litefly_vivado" in ln]
    assert len(warn) == 1 and warn[0].strip().startswith('puts "WARNING:')
    assert "error" not in warn[0].split("WARNING")[0]
    assert json.loads((plan.out_dir / "build_info.json").read_text())["vivado_expected"] == b.vivado_releases
    assert "2024.1" in plan.readme.read_text()


def test_tcl_dma_length_register_is_26_bits_and_hwh_beside_bit(plan):
    tcl = plan.tcl.read_text()
    assert "CONFIG.c_sg_length_width {26}" in tcl and "CONFIG.c_include_sg {0}" in tcl
    assert "file copy -force $bit [file join $script_dir $name.bit]" in tcl
    assert "file copy -force $hwh [file join $script_dir $name.hwh]" in tcl


def _version_block(tcl: str) -> str:
    lines = tcl.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("set litefly_vivado_expected"))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return "\n".join(lines[start:end + 1])


@pytest.mark.skipif(shutil.which("tclsh") is None, reason="tclsh not installed (apt-get install tcl)")
@pytest.mark.parametrize("release,warns", [("2024.1", False), ("2024.1.2", False), ("2023.2", True),
                                           ("2022.1", True), ("2025.2", None)])
def test_version_check_runs_in_tcl(plan, release, warns):
    if warns is None:
        warns = "2025.2" not in plan.board.vivado_releases.values()
    script = f"proc version {{args}} {{ return {release} }}\n{_version_block(plan.tcl.read_text())}\nputs OK\n"
    r = subprocess.run(["tclsh"], input=script, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("OK")                              # a warning, never an error
    assert ("WARNING: litefly: Vivado " + release in r.stdout) == warns, r.stdout
    if warns:
        assert re.search(r"PYNQ v3\.1: Vivado 2024\.1", r.stdout)

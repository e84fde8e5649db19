"""The board's software environment: which board this is, and whether its pynq can run litefly.

Numpy-free and pynq-free (stdlib only), so it imports on any PC and on every PYNQ image.

* :func:`detect_board` says which board a bitstream is for / the host is: an explicit name,
  the ``build.json`` the registry keeps beside ``<name>.bit``, ``$BOARD`` (PYNQ images set
  it in ``/etc/environment``: ``Pynq-Z2``, ``ZCU104``) or, last, the CPU (``armv7l`` is a
  Zynq-7000 board such as PYNQ-Z2, ``aarch64`` a Zynq UltraScale+ board such as ZCU104).
* :func:`check_pynq_version` refuses, in one line naming the fix, a pynq the board cannot
  run: PYNQ-Z2 needs pynq 3.x (PYNQ 4 removed Zynq-7000 support), ZCU104 3.x or 4.x, and
  litefly needs at least 3.0 anywhere (``pynq.allocate`` and the 3.x overlay loader).
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Mapping

from litefly.boards.boards import BOARDS
from litefly.errors import LiteflyError

__all__ = ["PynqVersionError", "detect_board", "pynq_major", "check_pynq_version", "PYNQ_MAJORS_ANY"]

PYNQ_MAJORS_ANY = (3, 4)          # pynq majors litefly's PYNQ transport supports at all

_ENV_BOARDS = {"pynq-z2": "pynq-z2", "pynqz2": "pynq-z2", "zcu104": "zcu104"}
_MACHINE_BOARDS = {"armv7l": "pynq-z2", "aarch64": "zcu104"}   # by PS family: same pynq rule


class PynqVersionError(LiteflyError):
    """The installed pynq does not run on this board (or is too old for litefly)."""


def detect_board(bitfile: str | Path | None = None, board: str | None = None,
                 environ: Mapping[str, str] | None = None, machine: str | None = None) -> str | None:
    """The board name (a key of ``BOARDS``) or ``None`` when nothing tells (e.g. on a PC)."""
    if board:
        return board
    if bitfile is not None:
        build = Path(bitfile).with_name("build.json")
        try:
            name = json.loads(build.read_text()).get("board")
        except (OSError, ValueError, AttributeError):
            name = None
        if name in BOARDS:
            return name
    env = os.environ if environ is None else environ
    name = _ENV_BOARDS.get(str(env.get("BOARD", "")).strip().lower())
    if name:
        return name
    return _MACHINE_BOARDS.get(platform.machine() if machine is None else machine)


def pynq_major(version: str | None) -> int | None:
    """The major version of a ``pynq.__version__`` string (``"3.1.2"`` -> 3), ``None`` if unreadable."""
    m = re.match(r"\s*v?(\d+)\.", str(version or ""))
    return int(m.group(1)) if m else None


def check_pynq_version(version: str | None, board: str | None = None) -> None:
    """Refuse a pynq that cannot run litefly on ``board`` (one line with the fix).

    An unreadable version passes (nothing to judge); an unknown board is judged only
    against the versions litefly supports at all.
    """
    major = pynq_major(version)
    if major is None:
        return
    b = BOARDS.get(board) if board else None
    if b is not None and major not in b.pynq_majors:
        why = " (PYNQ 4 removed Zynq-7000 support)" if major >= 4 and b.ps == "processing_system7" else ""
        raise PynqVersionError(
            f"pynq {version} is not supported on {b.name}{why}: it needs pynq {b.pynq_versions}; "
            f"flash the PYNQ v{b.images[0]} image or run `pip install \"{b.pynq}\"`")
    if major not in PYNQ_MAJORS_ANY:
        raise PynqVersionError(
            f"pynq {version} is not supported by litefly (needs pynq 3.x or 4.x): flash a PYNQ v3.1 "
            f"(or, on ZCU104, v4) image or run `pip install \"pynq>=3.0,<5\"`")

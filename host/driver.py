"""The register-protocol client of the network engine (numpy only; board-safe).

One client, any transport (:mod:`litefly.host.transport`): the same code runs on a PYNQ
board, against the cocotb/Verilator engine and against the numpy engine model. Registers
are named, never numbered: offsets and fields come from :mod:`litefly.hw.regmap`.

Host time is kept per stage, as FINN's ``driver_base`` does: ``dispatch`` (register writes,
starting DMA transfers, polling STATUS) is host time; ``wait`` (blocking on a DMA channel)
is the engine's time. The runtime adds ``quantize``, ``copy_in``, ``copy_out`` and
``unpack`` (:mod:`litefly.host.runtime`).

Background work (:meth:`NetworkRunner.run_stream <litefly.host.runtime.NetworkRunner.run_stream>`):
``background`` holds slices of host work (callables that time themselves into their own
stages); :meth:`EngineDriver.run_pass` runs them while the pass's DMA is in flight, up to the
pass's modelled engine time, and counts the time they took, up to that, as ``hidden``: host
time the engine's run covers.

Register shadow: the descriptor registers live outside the soft-reset domain and keep what
was last written (``docs/engine.md``), so the driver remembers the last word it wrote to each
one and skips a write that would not change it (consecutive layers share most of their
geometry; a layer's passes share all of it but IMAGES). The shadow assumes this driver is
the only writer: it is dropped by :meth:`EngineDriver.check_identity` (a newly opened
engine), by a soft reset, when ``transport`` is replaced, and by :meth:`forget_registers`
(call it after anything else has touched the engine, e.g. a bitstream reload).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from litefly.errors import LiteflyError
from litefly.hw import regmap
from litefly.hw.spec import EngineEnvelope, LayerDescriptor

from .transport import DMATimeout

__all__ = ["EngineDriver", "STAGES", "host_seconds"]

STAGES = ("quantize", "copy_in", "dispatch", "wait", "copy_out", "unpack")


def host_seconds(stages: Mapping[str, float]) -> float:
    """The host's seconds in ``stages`` (seconds per stage): every stage but ``wait``, the engine's."""
    return sum(v for k, v in stages.items() if k != "wait")


class EngineDriver:
    """Drive one network engine through a transport.

    ``timeout`` (seconds) is the least time any DMA wait may take; a pass's bound also grows
    with its modelled cycles at ``clock_mhz`` (10x margin), so a large layer never times out
    early and a hung one fails within a bound derived from what it should take.
    """

    def __init__(self, transport: Any, envelope: EngineEnvelope, timeout: float = 2.0,
                 clock_mhz: float = 100.0) -> None:
        self._tr = transport
        self.envelope = envelope
        self.timeout = float(timeout)
        self.clock_mhz = float(clock_mhz)
        self.timings: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.transfers = 0
        self.background: deque[Callable[[], None]] = deque()
        self.hidden = 0.0
        self._regs: dict[str, regmap.Register] = {}
        self._descriptor_writes: dict[tuple, list[tuple[int, int]]] = {}
        self._ctrl_words: dict[tuple[str, ...], int] = {}
        self._descriptor_refs: list[LayerDescriptor] = []
        self._shadow: dict[int, int] = {}          # RW register offset -> the word last written to it
        self._ctrl_off = regmap.REG["CTRL"]
        self._status_off = regmap.REG["STATUS"]
        self._counter_offs = tuple((n, regmap.REG[n]) for n in regmap.COUNTERS)
        self._start_word = self._ctrl_word(("START",))
        self._load_word = self._ctrl_word(("LOAD_PARAMS",))

    @property
    def transport(self) -> Any:
        return self._tr

    @transport.setter
    def transport(self, transport: Any) -> None:
        self._tr = transport
        self.forget_registers()         # another engine: nothing is known about its registers

    # -- registers -------------------------------------------------------------------------
    def reg(self, name: str) -> regmap.Register:
        if name not in self._regs:
            self._regs[name] = regmap.by_name(name, self.envelope.max_factors)
        return self._regs[name]

    def read(self, name: str) -> int:
        return int(self._tr.read_reg(self.reg(name).offset))

    def write(self, name: str, value: int | Mapping[str, int]) -> None:
        reg = self.reg(name)
        word = regmap.pack(reg, value) if isinstance(value, Mapping) else int(value)
        self._tr.write_reg(reg.offset, word)
        if reg.access == "RW":
            self._shadow[reg.offset] = word
        elif reg.offset == self._ctrl_off and word & regmap.CTRL_SOFT_RESET:
            self.forget_registers()

    def forget_registers(self) -> None:
        """Drop the register shadow: the next descriptor writes every register again."""
        self._shadow.clear()

    def _write_words(self, writes: Sequence[tuple[int, int]]) -> None:
        """``(offset, word)`` register writes, skipping those the shadow says are already in place."""
        shadow, write_reg = self._shadow, self._tr.write_reg
        for offset, word in writes:
            if shadow.get(offset) != word:
                write_reg(offset, word)
                shadow[offset] = word

    def _ctrl_word(self, bits: tuple[str, ...]) -> int:
        word = self._ctrl_words.get(bits)
        if word is None:            # packed once per combination: a strobe is one register write
            word = self._ctrl_words[bits] = regmap.pack(self.reg("CTRL"), {b: 1 for b in bits})
        return word

    def ctrl(self, *bits: str) -> None:
        word = self._ctrl_word(bits)
        if word & regmap.CTRL_SOFT_RESET:
            self.forget_registers()     # the descriptor survives a soft reset, but a reset is where trust ends
        self._tr.write_reg(self._ctrl_off, word)

    def status(self) -> dict[str, int]:
        return regmap.unpack("STATUS", self.read("STATUS"))

    def check_identity(self) -> dict[str, int]:
        """Refuse (one line) an engine that is not this envelope's; return the identity registers.
        An engine just checked is a newly opened one: the register shadow is dropped."""
        self.forget_registers()
        env = self.envelope
        ident = {n: self.read(n) for n in ("ID", "VERSION", "CONFIG_HASH", "LANES")}
        if ident["ID"] != regmap.ID_MAGIC:
            raise LiteflyError(f"no litefly engine found: ID register reads 0x{ident['ID']:08x}, expected "
                               f"0x{regmap.ID_MAGIC:08x} ('LFLY'): is the right overlay loaded?")
        ver = regmap.unpack("VERSION", ident["VERSION"])
        if ver["MAJOR"] != regmap.VERSION[0]:
            raise LiteflyError(f"bitstream interface version {ver['MAJOR']}.{ver['MINOR']} is not supported by "
                               f"this litefly (needs {regmap.VERSION[0]}.x): rebuild the bitstream")
        if ver["MINOR"] != regmap.VERSION[1]:
            older = ver["MINOR"] < regmap.VERSION[1]
            raise LiteflyError(f"bitstream interface version {ver['MAJOR']}.{ver['MINOR']} is "
                               f"{'older' if older else 'newer'} than this litefly's "
                               f"{regmap.VERSION[0]}.{regmap.VERSION[1]}: "
                               f"{'rebuild the bitstream' if older else 'install the litefly it was built with'}")
        if ident["CONFIG_HASH"] != env.hash32:
            raise LiteflyError(f"bitstream engine hash 0x{ident['CONFIG_HASH']:08x} does not match engine "
                               f"{env.name!r} (0x{env.hash32:08x}): load the bitstream built for this network")
        if ident["LANES"] != env.lanes:
            raise LiteflyError(f"bitstream has {ident['LANES']} lanes, engine {env.name!r} expects {env.lanes}: "
                               f"load the bitstream built for this network")
        return ident

    # -- a layer -----------------------------------------------------------------------------
    def write_descriptor(self, desc: LayerDescriptor, shifts: Sequence[int], images: int,
                         skip_align: tuple[int, int] | None = None) -> None:
        """The layer's descriptor registers, requantisation shifts and (a residual layer) skip alignment."""
        t0 = time.perf_counter()
        key = (id(desc), images, tuple(shifts), skip_align)
        writes = self._descriptor_writes.get(key)
        if writes is None:          # computed once per layer and pass size, then only written
            words = dict(desc.register_words(images))
            for i, s in enumerate(shifts):
                words[f"F{i}_SHIFT"] = regmap.pack(self.reg(f"F{i}_SHIFT"), {"SHIFT": int(s)})
            m, k = skip_align or (0, 0)
            words["SKIP"] = regmap.pack("SKIP", {"M": int(m), "K": int(k)})
            writes = self._descriptor_writes[key] = [(self.reg(n).offset, int(w)) for n, w in words.items()]
            self._descriptor_refs.append(desc)          # keeps id(desc) unique while cached
        self._write_words(writes)
        self.timings["dispatch"] += time.perf_counter() - t0

    def load_params(self, buf: np.ndarray, nbytes: int) -> None:
        """Stream a layer's packed parameters (already in a DMA buffer) into the engine."""
        t0 = time.perf_counter()
        tr = self._tr
        tr.write_reg(self._ctrl_off, self._load_word)
        tr.sendchannel.transfer(buf, nbytes=nbytes)
        self.transfers += 1
        t1 = time.perf_counter()
        self._wait(tr.sendchannel, "parameter DMA send", self.timeout)
        t2 = time.perf_counter()
        deadline = time.monotonic() + self.timeout
        while not tr.read_reg(self._status_off) & regmap.STATUS_PARAMS_VALID:
            if time.monotonic() > deadline:
                raise LiteflyError(f"engine did not report PARAMS_VALID within {self.timeout:.1f} s after a "
                                   f"{nbytes}-byte parameter stream ({self._diagnostics()})")
        self.timings["dispatch"] += (t1 - t0) + (time.perf_counter() - t2)
        self.timings["wait"] += t2 - t1

    def run_pass(self, in_buf: np.ndarray, in_start: int, in_bytes: int, out_buf: np.ndarray, out_start: int,
                 out_bytes: int, expected_cycles: int, skip: tuple[np.ndarray, int, int] | None = None) -> None:
        """One pass: receive armed, START, feature map sent (then, for a residual layer, the skip
        tensor's ``(buffer, start, bytes)`` on the same channel), both directions waited for."""
        t0 = time.perf_counter()
        tr = self._tr
        tr.recvchannel.transfer(out_buf, start=out_start, nbytes=out_bytes)
        tr.write_reg(self._ctrl_off, self._start_word)
        tr.sendchannel.transfer(in_buf, start=in_start, nbytes=in_bytes)
        self.transfers += 2
        t1 = time.perf_counter()
        engine_s = expected_cycles / (self.clock_mhz * 1e6)
        if self.background:
            self._run_background(engine_s)
        t2 = time.perf_counter()
        bound = max(self.timeout, 10 * engine_s)
        if skip is not None:
            self._wait(tr.sendchannel, "feature-map DMA send", bound)
            tr.sendchannel.transfer(skip[0], start=skip[1], nbytes=skip[2])
            self.transfers += 1
        self._wait(tr.sendchannel, "feature-map DMA send", bound)
        self._wait(tr.recvchannel, "output DMA receive", bound)
        self.timings["dispatch"] += t1 - t0
        self.timings["wait"] += time.perf_counter() - t2

    def _run_background(self, engine_s: float) -> None:
        """Slices of :attr:`background` while the pass is in flight: until the receive channel is
        idle (a board) or the pass's modelled engine time ``engine_s`` has gone by; the time they
        took, up to ``engine_s``, is :attr:`hidden` (a slice that overruns shows as host time)."""
        work, rx = self.background, self._tr.recvchannel
        t0 = t1 = time.perf_counter()
        while work and not rx.idle and t1 - t0 < engine_s:
            work.popleft()()
            t1 = time.perf_counter()
        self.hidden += min(t1 - t0, engine_s)

    def _wait(self, channel: Any, what: str, bound: float) -> None:
        try:
            channel.wait(bound)
        except DMATimeout:
            raise DMATimeout(f"{what} did not complete within {bound:.2f} s (the engine sent no TLAST): "
                             f"{self._diagnostics()}; check the bitstream matches the network and reset it "
                             f"(CTRL.SOFT_RESET)") from None

    def _diagnostics(self) -> str:
        try:
            st = self.status()
            cnt = self.counters()
        except Exception:  # noqa: BLE001 - diagnostics only
            return "STATUS unreadable"
        flags = ",".join(k for k, v in st.items() if v) or "idle"
        return f"STATUS={flags} " + " ".join(f"{k}={v}" for k, v in cnt.items())

    # -- counters ----------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """The engine's performance counters (32-bit registers as read)."""
        read_reg = self._tr.read_reg
        return {n: int(read_reg(off)) for n, off in self._counter_offs}

    def clear_counters(self) -> None:
        self.ctrl("CLEAR_COUNTERS")

    def soft_reset(self) -> None:
        self.ctrl("SOFT_RESET")

    def reset_stats(self) -> None:
        self.timings = dict.fromkeys(STAGES, 0.0)
        self.transfers = 0
        self.hidden = 0.0

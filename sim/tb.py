"""A reusable cocotb 2.x testbench of the network engine: clock, reset, cocotbext-axi bus
models, idle and back-pressure patterns.

``EngineTB(dut, envelope)`` drives a generated engine through its flat AXI ports
(``aclk``, ``aresetn``, ``s_axis_*``, ``m_axis_*``, ``s_axil_*``). It is deliberately thin:
register and DMA traffic of every test goes through the host's one register-protocol client,
:class:`litefly.host.driver.EngineDriver`, over :class:`litefly.host.sim_transport.SimTransport`,
which calls into this class. Register offsets come from :mod:`litefly.hw.regmap` only.

The output side models a DMA S2MM channel: ``m_axis_tready`` is low unless a receive is armed
(:meth:`recv` in progress), so an engine whose output is pending keeps it pending, as on a
board, and a soft reset that leaves stale output on ``m_axis`` shows up in the next receive.
"""

from __future__ import annotations

import itertools
import random
from typing import Iterable, Iterator, Sequence

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from litefly.hw import regmap
from litefly.hw.spec import EngineEnvelope

__all__ = ["EngineTB", "stall_generator", "STALL_PATTERNS", "pattern_generator", "pattern_slowdown"]

# Named stall patterns: (source idle pattern, sink back-pressure pattern); 1 = pause that cycle.
# A string "rand:P" is a seeded random pattern with P(pause) = P.
STALL_PATTERNS: dict[str, tuple[object, object]] = {
    "none": (None, None),
    "rand30": ("rand:0.3", "rand:0.3"),
    "slow_sink": (None, (1, 1, 1, 0)),                  # consumer takes one beat in four
    "bursty_source": ((1, 1, 1, 1, 0, 0, 0, 0), None),  # producer: four idle, four valid
    "both_slow": ((0, 1), (1, 1, 0)),
    "rand60_sink": (None, "rand:0.6"),
}


def stall_generator(prob: float, seed: int) -> Iterator[int]:
    """Endless seeded 0/1 sequence with P(1) = ``prob`` (1 = pause this cycle)."""
    rng = random.Random(seed)
    while True:
        yield 1 if rng.random() < prob else 0


def pattern_generator(pattern: object, seed: int = 0) -> Iterator[int] | None:
    """An endless pause sequence from a pattern: None, a 0/1 sequence (cycled) or ``"rand:P"``."""
    if pattern is None:
        return None
    if isinstance(pattern, str):
        if not pattern.startswith("rand:"):
            raise ValueError(f"stall pattern {pattern!r}: expected 'rand:P' or a 0/1 sequence")
        prob = float(pattern[5:])
        return stall_generator(prob, seed) if prob > 0 else None
    seq = [int(bool(v)) for v in pattern]  # type: ignore[union-attr]
    return itertools.cycle(seq) if any(seq) else None


def pattern_slowdown(pattern: object) -> float:
    """How many cycles one beat takes on average under ``pattern`` (1.0 without pauses)."""
    if pattern is None:
        return 1.0
    if isinstance(pattern, str):
        p = float(pattern[5:])
        return 1.0 / max(1e-3, 1.0 - p)
    seq = [int(bool(v)) for v in pattern]  # type: ignore[union-attr]
    free = len(seq) - sum(seq)
    return len(seq) / max(1, free)


def kick_comb_blocks(handle, depth: int = 0) -> int:
    """Write the Verilog backend's ``$auto$...dump_module`` registers once, so that every
    ``always @*`` block reading them runs; returns how many were written.

    Amaranth's Verilog computes combinational outputs in ``always @*`` blocks that read such a
    register only to be run at time 0; Icarus does not run them until an input changes, so an
    output whose inputs keep their initial values (``s_axis_tready`` before the first
    LOAD_PARAMS/START) reads X there and the bus models cannot turn it into a bool. Verilator
    (2-state) does not need this.
    """
    n = 0
    try:
        children = list(handle)
    except TypeError:
        return 0
    for child in children:
        name = getattr(child, "_name", "")
        if "dump_module" in name:
            try:
                child.value = 1
                n += 1
            except Exception:  # noqa: BLE001 - not writable: leave it
                pass
        elif depth < 8 and not isinstance(getattr(child, "value", None), (int,)):
            try:
                iter(child)
            except TypeError:
                continue
            n += kick_comb_blocks(child, depth + 1)
    return n


class EngineTB:
    """Clock, reset, AXI-Stream source/sink and AXI-Lite master around an engine ``dut``."""

    def __init__(self, dut, envelope: EngineEnvelope, clock_ns: float = 10.0, gate_receive: bool = True) -> None:
        self.dut, self.envelope = dut, envelope
        self.clk = dut.aclk
        self.clock_ns = clock_ns
        self.bytes_per_beat = envelope.stream_bits // 8
        cocotb.start_soon(Clock(dut.aclk, clock_ns, unit="ns").start())
        kw = dict(reset=dut.aresetn, reset_active_level=False)
        if "icarus" in cocotb.SIM_NAME.lower():
            kick_comb_blocks(dut)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, **kw)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, **kw)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, **kw)
        for model in (self.source, self.sink, self.axil.write_if, self.axil.read_if):
            model.log.setLevel("WARNING")
        self.gate_receive = gate_receive
        self.rx_armed = False
        self._sink_pattern: Iterator[int] | None = None
        self.slowdown = 1.0
        self.sink.pause = gate_receive           # no receive armed yet

    # -- control -------------------------------------------------------------------------
    async def reset(self, cycles: int = 8) -> None:
        """Hold ``aresetn`` low for ``cycles`` clock cycles (the bus models reset with it)."""
        self.dut.aresetn.value = 0
        await ClockCycles(self.clk, cycles)
        self.dut.aresetn.value = 1
        await ClockCycles(self.clk, 2)

    async def cycles(self, n: int) -> None:
        await ClockCycles(self.clk, max(1, int(n)))

    def _sink_gate(self) -> Iterator[int]:
        while True:
            stall = next(self._sink_pattern) if self._sink_pattern is not None else 0
            yield 1 if stall or (self.gate_receive and not self.rx_armed) else 0

    def set_patterns(self, source: object = None, sink: object = None, seed: int = 0) -> None:
        """Idle cycles on ``s_axis`` and back-pressure on ``m_axis`` (patterns: see :func:`pattern_generator`)."""
        gen = pattern_generator(source, seed)
        if gen is not None:
            self.source.set_pause_generator(gen)
        else:
            self.source.clear_pause_generator()
            self.source.pause = False     # clearing the generator can leave the model paused
        self._sink_pattern = pattern_generator(sink, seed + 1)
        if self._sink_pattern is not None:
            self.sink.set_pause_generator(self._sink_gate())
        else:                                   # no per-cycle coroutine: recv() opens and closes the gate
            self.sink.clear_pause_generator()
            self.sink.pause = self.gate_receive and not self.rx_armed
        self.slowdown = pattern_slowdown(source) * pattern_slowdown(sink)

    def set_stall_pattern(self, name: str, seed: int = 0) -> None:
        """One of :data:`STALL_PATTERNS` by name."""
        if name not in STALL_PATTERNS:
            raise ValueError(f"stall pattern {name!r} is not one of {', '.join(STALL_PATTERNS)}")
        self.set_patterns(*STALL_PATTERNS[name], seed=seed)

    def set_stalls(self, prob: float, seed: int = 0) -> None:
        """Random idle cycles on the input and back-pressure on the output (probability ``prob`` each)."""
        pat = f"rand:{float(prob)}" if prob > 0 else None
        self.set_patterns(pat, pat, seed)

    # -- registers -------------------------------------------------------------------------
    async def write_reg(self, reg: str | int, value: int) -> None:
        offset = regmap.by_name(reg, self.envelope.max_factors).offset if isinstance(reg, str) else reg
        await self.axil.write_dword(offset, int(value) & 0xFFFFFFFF)

    async def read_reg(self, reg: str | int) -> int:
        offset = regmap.by_name(reg, self.envelope.max_factors).offset if isinstance(reg, str) else reg
        return int(await self.axil.read_dword(offset))

    # -- streams -------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Send one packet (TLAST on its last beat) and wait until it has left the source."""
        await self.source.send(AxiStreamFrame(bytes(data)))
        await self.source.wait()

    async def recv(self) -> bytes:
        """Arm the receive side and take one packet (up to TLAST)."""
        self.rx_armed = True
        if self._sink_pattern is None:
            self.sink.pause = False
        try:
            frame = await self.sink.recv()
        finally:
            self.disarm()
        return bytes(frame.tdata)

    def disarm(self) -> None:
        """The receive is over (or abandoned): ``m_axis_tready`` low again."""
        self.rx_armed = False
        if self._sink_pattern is None and self.gate_receive:
            self.sink.pause = True

    def output_pending(self) -> bool:
        """``m_axis_tvalid`` is high now."""
        v = self.dut.m_axis_tvalid.value
        return bool(v) if v.is_resolvable else False

    async def wait_output_pending(self, max_cycles: int) -> bool:
        """Wait until ``m_axis_tvalid`` rises (True) or ``max_cycles`` pass (False)."""
        for _ in range(max(1, int(max_cycles))):
            if self.output_pending():
                return True
            await RisingEdge(self.clk)
        return self.output_pending()

    def stream_idle(self) -> bool:
        return self.source.idle() and not self.output_pending()


def seq_or_none(v: Sequence[int] | Iterable[int] | None) -> object:
    return None if v is None else list(v)

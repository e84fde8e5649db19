"""Conformance scripts: register/stream sequences on an :class:`~litefly.host.driver.EngineDriver`.

The same script runs on the engine model (:class:`~litefly.host.golden_transport.GoldenTransport`)
and on the RTL (:class:`~litefly.host.sim_transport.SimTransport` inside cocotb); each returns
a **trace**, a list of ``[tag, value]`` observations taken at points where the engine is
quiescent (STATUS words, register readback, output bytes, exact counters), so the two traces
must be equal. Observations that depend on timing (CYCLES, STALLED_CYCLES...) are not traced.

Transport extensions used when present (the model has neither, it runs instantly):
``settle(cycles)`` lets the simulated engine run; nothing else is transport-specific.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from litefly.fixed import QuantizedLayer
from litefly.hw import regmap
from litefly.hw.wireformat import pack_tensor
from litefly.network import EngineStep

__all__ = ["SCRIPTS", "run_script", "EXACT_COUNTERS"]

EXACT_COUNTERS = ("BUSY_CYCLES", "COLUMNS_DONE")


class _Ctx:
    def __init__(self, driver: Any, steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer],
                 x: np.ndarray) -> None:
        from litefly.host.runtime import prepare_program
        self.d = driver
        self.tr = driver.transport
        self.env = driver.envelope
        self.prog = prepare_program(self.env, steps, params)
        self.x = np.asarray(x)
        self.trace: list[list[Any]] = []
        self.e = self.env.elems_per_beat
        self.bufs: dict[str, np.ndarray] = {}

    # -- observations -----------------------------------------------------------------------
    def obs(self, tag: str, value: Any) -> None:
        self.trace.append([tag, value])

    def status(self, tag: str) -> None:
        self.obs(f"STATUS {tag}", self.d.read("STATUS"))

    def counters(self, tag: str, names: Sequence[str] = EXACT_COUNTERS) -> None:
        self.obs(f"counters {tag}", {n: self.d.read(n) for n in names})

    def output(self, tag: str, buf: np.ndarray, nbytes: int) -> None:
        data = np.asarray(buf).reshape(-1).view(np.uint8)[:nbytes]
        self.obs(f"output {tag}", {"bytes": int(nbytes), "sha": hashlib.sha256(data.tobytes()).hexdigest()[:16],
                                   "head": data[:16].tolist()})

    def settle(self, cycles: int) -> None:
        fn = getattr(self.tr, "settle", None)
        if fn is not None:
            fn(cycles)

    # -- layer data -----------------------------------------------------------------------------
    def desc(self, k: int):
        return self.prog.descriptors[k]

    def buf(self, name: str, size: int) -> np.ndarray:
        if name not in self.bufs or self.bufs[name].size < size:
            self.bufs[name] = self.tr.allocate((max(64, size),), np.uint8)
        return self.bufs[name]

    def in_bytes(self, k: int, x: np.ndarray) -> np.ndarray:
        data = pack_tensor(x, self.e, packed=self.desc(k).packed_input, fold=self.desc(k).step.fold)
        b = self.buf(f"in{k}", data.size)
        b[:data.size] = data
        return b

    def param_buf(self, k: int) -> tuple[np.ndarray, int]:
        p = self.prog.params[k]
        b = self.buf(f"params{k}", p.size)
        b[:p.size] = p
        return b, int(p.size)

    def descriptor(self, k: int, images: int) -> None:
        self.d.write_descriptor(self.desc(k), self.prog.shifts[k], images)

    def load(self, k: int) -> None:
        b, n = self.param_buf(k)
        self.d.load_params(b, n)

    def run(self, k: int, x: np.ndarray, tag: str) -> None:
        """One full pass of layer ``k`` over ``x`` (its images), output traced."""
        desc = self.desc(k)
        images = x.shape[0]
        ib = self.in_bytes(k, x)
        n_in = images * desc.in_bytes_per_image
        n_out = images * desc.out_beats_per_image * desc.bytes_per_beat
        ob = self.buf(f"out{k}", n_out)
        ob[:] = 0xA5
        self.d.run_pass(ib, 0, n_in, ob, 0, n_out, desc.pass_cycles(images))
        self.output(tag, ob, n_out)


def _identity(c: _Ctx) -> None:
    """Identity and capability registers, STATUS out of reset, descriptor readback."""
    for name in ("ID", "VERSION", "CONFIG_HASH", "LANES", "INFO", "CAP_DEPTHS", "CAP_WORK", "CAP_PARAM_BEATS",
                 "CAP_FRAME_BEATS"):
        c.obs(name, c.d.read(name))
    c.status("after reset")
    c.counters("after reset", regmap.COUNTERS[4:5])
    c.descriptor(0, 1)
    for name in regmap.DESCRIPTOR:
        c.obs(f"readback {name}", c.d.read(name))
    for i in range(len(c.desc(0).layer.chain)):
        for kind, _, _ in regmap.FACTOR_REGS:
            name = f"F{i}_{kind}"
            c.obs(f"readback {name}", c.d.read(name))
    c.status("after descriptor")


def _passes(c: _Ctx) -> None:
    """Descriptor, parameter load, passes, counters, CLEAR_COUNTERS, every layer of the program."""
    n = c.desc(0).pass_images(c.x.shape[0])
    x = c.x[:n]
    for k in range(len(c.prog.steps)):
        c.d.clear_counters()
        c.descriptor(k, n)
        c.status(f"L{k} after descriptor")
        c.load(k)
        c.status(f"L{k} after load")
        c.run(k, x, f"L{k} pass 1")
        c.status(f"L{k} after pass 1")
        c.counters(f"L{k} after pass 1")
        c.run(k, x, f"L{k} pass 2 (same parameters)")
        c.counters(f"L{k} after pass 2")
        c.d.clear_counters()
        c.counters(f"L{k} after CLEAR_COUNTERS", regmap.COUNTERS)
        c.status(f"L{k} after CLEAR_COUNTERS")
        x = _forward(c, k, x)


def _forward(c: _Ctx, k: int, x: np.ndarray) -> np.ndarray:
    from litefly.network import step_forward_int
    step = c.prog.steps[k]
    return step_forward_int(step, c.params[step.name], x)


def _first_layer_ready(c: _Ctx):
    """Layer 0's descriptor for a full pass and its parameters loaded: (descriptor, images, input)."""
    desc = c.desc(0)
    n = desc.pass_images(c.x.shape[0])
    c.descriptor(0, n)
    c.load(0)
    return desc, n, c.x[:n]


def _reset_output_pending(c: _Ctx) -> None:
    """SOFT_RESET with a pass's output pending (no receive armed), then LOAD_PARAMS and a correct pass."""
    desc, n, x = _first_layer_ready(c)
    ib = c.in_bytes(0, -x - 1)                    # another input than the pass after the reset
    n_in = n * desc.in_bytes_per_image
    c.d.ctrl("START")
    c.tr.sendchannel.transfer(ib, start=0, nbytes=n_in)
    c.tr.sendchannel.wait(c.d.timeout)
    c.settle(2 * desc.pass_cycles(n) + 200)       # the engine computes; its output waits for a receive
    c.d.soft_reset()
    c.settle(4)
    c.status("after SOFT_RESET (output was pending)")
    c.counters("after SOFT_RESET", regmap.COUNTERS)
    c.load(0)
    c.status("after LOAD_PARAMS after reset")
    c.run(0, x, "pass after reset")
    c.status("after pass after reset")
    c.counters("after pass after reset")


def _reset_mid_input(c: _Ctx) -> None:
    """SOFT_RESET while the engine is receiving a pass's input (half sent), then a correct pass."""
    desc, n, x = _first_layer_ready(c)
    ib = c.in_bytes(0, x)
    n_in = n * desc.in_bytes_per_image
    half = max(desc.bytes_per_beat, (n_in // 2) // desc.bytes_per_beat * desc.bytes_per_beat)
    c.d.ctrl("START")
    c.tr.sendchannel.transfer(ib, start=0, nbytes=half)
    c.tr.sendchannel.wait(c.d.timeout)
    c.settle(50)
    c.d.soft_reset()
    c.settle(4)
    c.status("after SOFT_RESET (input half sent)")
    c.counters("after SOFT_RESET", regmap.COUNTERS)
    c.load(0)
    c.run(0, x, "pass after reset")
    c.status("after pass after reset")


def _reset_mid_params(c: _Ctx) -> None:
    """SOFT_RESET during a parameter load (half the beats sent), LOAD_PARAMS again, then a pass."""
    desc = c.desc(0)
    n = desc.pass_images(c.x.shape[0])
    c.descriptor(0, n)
    b, nbytes = c.param_buf(0)
    half = max(desc.bytes_per_beat, (nbytes // 2) // desc.bytes_per_beat * desc.bytes_per_beat)
    c.d.ctrl("LOAD_PARAMS")
    if half < nbytes:
        c.tr.sendchannel.transfer(b, start=0, nbytes=half)
        c.tr.sendchannel.wait(c.d.timeout)
    c.settle(20)
    c.status("during parameter load")
    c.d.soft_reset()
    c.settle(4)
    c.status("after SOFT_RESET (parameters half sent)")
    c.load(0)
    c.status("after LOAD_PARAMS")
    c.run(0, c.x[:n], "pass after reset")
    c.status("after pass after reset")


def _reset_idle_keeps_descriptor(c: _Ctx) -> None:
    """After a complete pass: SOFT_RESET keeps the descriptor and the weight memory contents
    (PARAMS_VALID cleared); START is refused until LOAD_PARAMS, then the same output."""
    _, _, x = _first_layer_ready(c)
    c.run(0, x, "pass before reset")
    c.d.soft_reset()
    c.settle(4)
    c.status("after SOFT_RESET (idle)")
    for name in regmap.DESCRIPTOR:
        c.obs(f"readback after reset {name}", c.d.read(name))
    c.load(0)
    c.run(0, x, "pass after reset")
    c.status("after pass")


def _layer_switch(c: _Ctx) -> None:
    """Layer A, layer B, layer A again on one engine: descriptors and parameters swap cleanly."""
    steps = c.prog.steps
    order = [0, len(steps) - 1, 0] if len(steps) > 1 else [0, 0]
    for j, k in enumerate(order):
        desc = c.desc(k)
        x = c.layer_x[k]
        n = desc.pass_images(x.shape[0])
        c.descriptor(k, n)
        c.load(k)
        c.run(k, x[:n], f"layer {k} (#{j})")
        c.status(f"after layer {k} (#{j})")
        c.counters(f"after layer {k} (#{j})")


def _network(c: _Ctx) -> None:
    """The runtime's whole sequence (execute): every layer, several passes, buffer to buffer."""
    from litefly.host.runtime import execute
    y, stats = execute(c.d, c.prog, c.x)
    c.obs("network output", np.asarray(y).astype(int).ravel().tolist())
    c.obs("network passes", [s["passes"] for s in stats])
    c.obs("network columns", [s["counters"]["COLUMNS_DONE"] for s in stats])
    c.status("after network")


SCRIPTS: dict[str, Callable[[_Ctx], None]] = {
    "identity": _identity,
    "passes": _passes,
    "reset_output_pending": _reset_output_pending,
    "reset_mid_input": _reset_mid_input,
    "reset_mid_params": _reset_mid_params,
    "reset_idle_keeps_descriptor": _reset_idle_keeps_descriptor,
    "layer_switch": _layer_switch,
    "network": _network,
}


def run_script(driver: Any, name: str, steps: Sequence[EngineStep], params: Mapping[str, QuantizedLayer],
               x: np.ndarray) -> list[list[Any]]:
    """Run conformance script ``name`` on ``driver``; return its trace."""
    if name not in SCRIPTS:
        raise KeyError(f"no conformance script {name!r} (have {', '.join(SCRIPTS)})")
    c = _Ctx(driver, steps, params, x)
    c.params = dict(params)
    from litefly.network import network_forward_int
    xs = [np.asarray(x)]
    for k, st in enumerate(c.prog.steps[:-1]):
        xs.append(network_forward_int([st], {st.name: params[st.name]}, xs[-1]))
    c.layer_x = xs
    SCRIPTS[name](c)
    return c.trace

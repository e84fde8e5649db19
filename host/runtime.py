"""Run networks on the network engine: ``golden`` (numpy engine model), ``sim`` (cocotb +
Verilator) or ``pynq`` (a board). Board-safe: numpy only at import time.

Per inference the host quantises the input once and packs it NHWC-E into the first
activation buffer, then for each layer writes the descriptor, streams the layer's
pre-packed parameters and runs its passes buffer to buffer (layer k's output buffer is
layer k+1's input buffer; the host touches no element), and finally unpacks the last
layer's output. Buffers are allocated once per network and input shape and reused.

Stable API (``docs/host.md``):

* :class:`NetworkRunner` ``(network, params, backend, input_size=None, **opts)`` with
  ``.run(x_float)``, ``.run_int(x_int)``, ``.stats`` (one dict per layer of the last run)
  and ``.total`` (the run's totals, host stages included);
* :func:`prepare_program` / :func:`execute`: the same on an open :class:`EngineDriver`
  (what the simulated backend runs inside the simulator).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from litefly.config import NetworkConfig
from litefly.errors import LiteflyError, ShapeError
from litefly.fixed import QuantizedLayer, int_range, quantize_tensor
from litefly.hw.spec import EngineEnvelope, LayerDescriptor
from litefly.hw.wireformat import pack_layer_params, pack_tensor, tensor_bytes, unpack_tensor
from litefly.network import EngineStep, check_scales, network_input_shape, plan_network

from .driver import STAGES, EngineDriver

__all__ = ["BACKENDS", "NetworkProgram", "prepare_program", "execute", "NetworkRunner", "open_transport"]

BACKENDS = ("golden", "sim", "pynq")
ALIGN = 64


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class NetworkProgram:
    """Everything prepared once per network, engine and input shape: descriptors, packed
    parameters and the activation buffer size."""

    envelope: EngineEnvelope
    steps: tuple[EngineStep, ...]
    descriptors: tuple[LayerDescriptor, ...]
    shifts: tuple[tuple[int, ...], ...]
    params: tuple[np.ndarray, ...]              # packed parameter bytes per layer
    in_shape: tuple[int, int, int]
    buffers: dict[str, Any] = field(default_factory=dict)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.steps[-1].out_shape

    def act_bytes(self, batch: int) -> int:
        """Bytes of the largest activation tensor at ``batch`` images."""
        e = self.envelope.elems_per_beat
        shapes = [self.in_shape] + [s.out_shape for s in self.steps]
        return max(tensor_bytes((batch,) + tuple(sh), e) for sh in shapes)


def prepare_program(envelope: EngineEnvelope, steps: Sequence[EngineStep],
                    params: Mapping[str, QuantizedLayer]) -> NetworkProgram:
    """Check every layer fits ``envelope`` (one-line error naming the limit) and pack its parameters."""
    descs, shifts, packed = [], [], []
    for step in steps:
        q = params.get(step.name)
        if q is None:
            raise LiteflyError(f"no parameters for layer {step.name!r}")
        if q.layer.config_hash != step.layer.config_hash:
            raise LiteflyError(f"parameters for {step.name!r} are for another config (0x{q.layer.hash32:08x}, "
                               f"expected 0x{step.layer.hash32:08x})")
        descs.append(envelope.describe(step))
        shifts.append(tuple(int(s) for s in q.shifts))
        packed.append(pack_layer_params(q.weights, q.bias, envelope.weight_bits, envelope.stream_bits).reshape(-1))
    return NetworkProgram(envelope, tuple(steps), tuple(descs), tuple(shifts), tuple(packed), steps[0].in_shape)


def _buffers(driver: EngineDriver, program: NetworkProgram, batch: int) -> dict[str, Any]:
    """Two activation buffers (ping-pong) and one parameter buffer per layer, allocated once."""
    key = (id(driver.transport), batch)
    if program.buffers.get("key") != key:
        tr = driver.transport
        size = _align(program.act_bytes(batch))
        acts = [tr.allocate((size,), np.uint8) for _ in range(2)]
        params = []
        for p in program.params:
            buf = tr.allocate((_align(p.size),), np.uint8)
            buf[:p.size] = p
            buf.flush()
            params.append(buf)
        program.buffers = {"key": key, "acts": acts, "params": params}
    return program.buffers


def _layer_plans(program: NetworkProgram, batch: int) -> list[dict[str, Any]]:
    """Per layer at ``batch`` images: images per pass, each pass's offsets, sizes and modelled
    cycles (computed once per batch, so a run does no model arithmetic)."""
    plans = program.buffers.setdefault("plans", {})
    if batch not in plans:
        out = []
        for desc in program.descriptors:
            ipp = min(desc.images_per_pass, batch)
            in_img = desc.in_beats_per_image * desc.bytes_per_beat
            out_img = desc.out_beats_per_image * desc.bytes_per_beat
            passes = []
            for first in range(0, batch, ipp):
                images = min(ipp, batch - first)
                passes.append((images, first * in_img, images * in_img, first * out_img, images * out_img,
                               desc.pass_cycles(images), desc.mac_cycles(images)))
            out.append({"ipp": ipp, "in_img": in_img, "out_img": out_img, "passes": passes,
                        "model_cycles": sum(p[5] for p in passes), "mac_cycles": sum(p[6] for p in passes)})
        plans[batch] = out
    return plans[batch]


def execute(driver: EngineDriver, program: NetworkProgram, x_int: np.ndarray,
            out_scale: float | None = None) -> tuple[np.ndarray, list[dict]]:
    """Integer NCHW input -> integer NCHW output of the last layer, and one stats dict per layer.
    With ``out_scale`` the output is dequantised (float64) straight from the int8 bytes.

    Every host second of the call is in a stage: what the driver does not time itself
    (checks, counters, bookkeeping) is added to ``dispatch``."""
    t_enter = time.perf_counter()
    timings0 = dict(driver.timings)
    env = program.envelope
    e = env.elems_per_beat
    x_int = np.asarray(x_int)
    if x_int.ndim != 4 or tuple(x_int.shape[1:]) != program.in_shape:
        raise ShapeError(f"input has shape {x_int.shape}, expected (N, {', '.join(map(str, program.in_shape))})")
    lo, hi = int_range(env.act_bits)
    if x_int.size and (x_int.min() < lo or x_int.max() > hi):
        raise ShapeError(f"input values {x_int.min()}..{x_int.max()} are outside the {env.act_bits}-bit "
                         f"range {lo}..{hi}")
    batch = int(x_int.shape[0])
    t0 = time.perf_counter()
    bufs = _buffers(driver, program, batch)
    acts = bufs["acts"]
    plans = _layer_plans(program, batch)
    t1 = time.perf_counter()
    pack_tensor(x_int, e, out=acts[0])
    acts[0].flush()
    driver.timings["copy_in"] += time.perf_counter() - t1
    driver.timings["dispatch"] += t1 - t0
    stats: list[dict[str, Any]] = []
    src = 0
    name = getattr(driver.transport, "name", "?")
    for k, (step, desc, plan) in enumerate(zip(program.steps, program.descriptors, plans)):
        before = dict(driver.timings)
        transfers0 = driver.transfers
        driver.clear_counters()
        ipp = plan["ipp"]
        driver.write_descriptor(desc, program.shifts[k], ipp)
        pbytes = program.params[k].size
        driver.load_params(bufs["params"][k], pbytes)
        for images, in_off, in_bytes, out_off, out_bytes, cycles, _ in plan["passes"]:
            if images != ipp:
                driver.set_images(images)
            driver.run_pass(acts[src], in_off, in_bytes, acts[1 - src], out_off, out_bytes, cycles)
        counters = driver.counters()
        stats.append({
            "layer": step.name, "backend": name,
            "cycles": counters["CYCLES"], "counters": counters,
            "model_cycles": plan["model_cycles"], "mac_cycles": plan["mac_cycles"],
            "timings": {s: driver.timings[s] - before[s] for s in STAGES},
            "bytes_in": batch * plan["in_img"], "bytes_out": batch * plan["out_img"], "param_bytes": pbytes,
            "passes": len(plan["passes"]), "images_per_pass": ipp, "transfers": driver.transfers - transfers0,
            "in_shape": list(step.in_shape), "out_shape": list(step.out_shape),
        })
        src = 1 - src
    t2 = time.perf_counter()
    acts[src].invalidate()
    last = program.steps[-1].out_shape
    # read in place: unpacking (or dequantising) below makes the one copy of the output
    raw = np.asarray(acts[src]).reshape(-1)[:tensor_bytes((batch,) + tuple(last), e)]
    t3 = time.perf_counter()
    if out_scale is None:
        y = unpack_tensor(raw, (batch,) + tuple(last), e)
    else:           # one pass int8 -> float64 (no int64 intermediate): the output is read once
        c, h, w = last
        y = np.multiply(raw.view(np.int8).reshape(batch, h, w, -1)[..., :c].transpose(0, 3, 1, 2), out_scale)
    driver.timings["copy_out"] += t3 - t2
    t_exit = time.perf_counter()
    driver.timings["unpack"] += t_exit - t3
    untimed = (t_exit - t_enter) - sum(driver.timings[s] - timings0[s] for s in STAGES)
    driver.timings["dispatch"] += max(0.0, untimed)
    if stats:       # the per-layer loop's share of the bookkeeping goes to the layers' dispatch
        per = max(0.0, untimed) / len(stats)
        for st in stats:
            st["timings"]["dispatch"] += per
    return y, stats


def open_transport(backend: str, envelope: EngineEnvelope, **opts: Any) -> Any:
    """A transport for ``golden`` or ``pynq`` (``sim`` runs inside the simulator: :mod:`.sim_transport`)."""
    if backend == "golden":
        from .golden_transport import GoldenTransport
        return GoldenTransport(envelope, **{k: v for k, v in opts.items()
                                            if k in ("fault", "config_hash", "lanes", "version")})
    if backend == "pynq":
        from .pynq_transport import PynqTransport
        return PynqTransport.for_network(envelope, **opts)
    raise LiteflyError(f"backend {backend!r} is not known; expected one of {', '.join(BACKENDS)}")


class NetworkRunner:
    """Run a :class:`~litefly.config.NetworkConfig` on one network engine.

    ``params`` maps each layer's name to its :class:`~litefly.fixed.QuantizedLayer`, with
    chained scales (each layer's input scale is the previous layer's output scale).
    ``envelope`` defaults to :meth:`EngineEnvelope.for_network` at ``input_size``.
    Options: ``timeout``, ``clock_mhz``, and the backend's own (``fault=``, ``simulator=``, ...).
    """

    def __init__(self, network: NetworkConfig, params: Mapping[str, QuantizedLayer], backend: str = "golden",
                 input_size: tuple[int, int] | None = None, envelope: EngineEnvelope | None = None,
                 **opts: Any) -> None:
        if backend not in BACKENDS:
            raise LiteflyError(f"backend {backend!r} is not known; expected one of {', '.join(BACKENDS)}")
        for lay in network.layers:
            if lay.name not in params:
                raise LiteflyError(f"network {network.name!r}: no parameters for layer {lay.name!r}")
        self.network, self.params, self.backend = network, dict(params), backend
        self.input_size = input_size or network.input_size
        self.envelope = envelope or EngineEnvelope.for_network(network, self.input_size)
        self.timeout = float(opts.pop("timeout", 2.0))
        self.clock_mhz = float(opts.pop("clock_mhz", 100.0))
        self.opts = opts
        self.stats: list[dict[str, Any]] = []
        self.total: dict[str, Any] = {}
        self._programs: dict[tuple[int, int, int], NetworkProgram] = {}
        self._driver: EngineDriver | None = None

    # -- plans --------------------------------------------------------------------------------
    def program(self, in_shape: tuple[int, int, int]) -> NetworkProgram:
        if in_shape not in self._programs:
            steps = plan_network(self.network, in_shape)
            check_scales(steps, self.params)
            self._programs[in_shape] = prepare_program(self.envelope, steps, self.params)
        return self._programs[in_shape]

    def _in_shape(self, x: np.ndarray) -> tuple[int, int, int]:
        first = self.network.layers[0]
        if first.kind == "linear":
            if x.ndim != 2 or x.shape[1] != first.in_features:
                raise ShapeError(f"network {self.network.name!r}: input has shape {x.shape}, expected "
                                 f"(N, {first.in_features})")
            return first.in_features, 1, 1
        if x.ndim != 4 or x.shape[1] != first.in_channels:
            raise ShapeError(f"network {self.network.name!r}: input has shape {x.shape}, expected "
                             f"(N, {first.in_channels}, H, W)")
        return tuple(int(v) for v in x.shape[1:])  # type: ignore[return-value]

    # -- runs ---------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Float input of the first layer -> float output of the last layer."""
        x = np.asarray(x)
        shape = self._in_shape(x)
        first = self.params[self.network.layers[0].name]
        t0 = time.perf_counter()
        x_int = quantize_tensor(x.reshape((x.shape[0],) + shape), first.in_scale, first.layer.format.act_bits)
        t_quant = time.perf_counter() - t0
        scale = self.params[self.network.layers[-1].name].out_scale
        y = self._run(x_int, shape, out_scale=scale)
        self.total["host_stage[s]"]["quantize"] += t_quant
        if self.backend != "sim":
            return y                    # dequantised by execute while unpacking
        t1 = time.perf_counter()
        out = y * scale
        self.total["host_stage[s]"]["unpack"] += time.perf_counter() - t1
        return out

    def run_int(self, x_int: np.ndarray) -> np.ndarray:
        """Integer input at the first layer's input scale -> integer output of the last layer."""
        x_int = np.asarray(x_int)
        if not np.issubdtype(x_int.dtype, np.integer):
            raise ShapeError(f"run_int: input dtype {x_int.dtype} is not an integer type")
        shape = self._in_shape(x_int)
        return self._run(x_int.reshape((x_int.shape[0],) + shape), shape)

    def _run(self, x_int: np.ndarray, shape: tuple[int, int, int], out_scale: float | None = None) -> np.ndarray:
        program = self.program(shape)
        t0 = time.perf_counter()
        if self.backend == "sim":
            from .sim_transport import run_network_sim
            y, stats, timings = run_network_sim(program, x_int, timeout=self.timeout, clock_mhz=self.clock_mhz,
                                                **self.opts)
        else:
            driver = self._open()
            driver.reset_stats()
            y, stats = execute(driver, program, x_int, out_scale=out_scale)
            timings = dict(driver.timings)
        wall = time.perf_counter() - t0
        self.stats = stats
        cycles = sum(s["cycles"] for s in stats)
        self.total = {
            "backend": self.backend, "engine": self.envelope.name, "engine_hash": f"0x{self.envelope.hash32:08x}",
            "batch": int(x_int.shape[0]), "cycles": cycles, "clock_mhz": self.clock_mhz,
            "engine_s": cycles / (self.clock_mhz * 1e6), "host_stage[s]": timings, "wall_s": wall,
            "transfers": sum(s["transfers"] for s in stats),
            "bytes_in": stats[0]["bytes_in"], "bytes_out": stats[-1]["bytes_out"],
        }
        out_shape = (x_int.shape[0],) + tuple(program.out_shape)
        if self.network.layers[-1].kind == "linear" and program.out_shape[1:] == (1, 1):
            return y.reshape(out_shape[0], -1)
        return y

    def _open(self) -> EngineDriver:
        if self._driver is None:
            transport = open_transport(self.backend, self.envelope, **self.opts)
            self._driver = EngineDriver(transport, self.envelope, timeout=self.timeout, clock_mhz=self.clock_mhz)
            self._driver.check_identity()
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            for bufs in (self._programs.values()):
                for b in bufs.buffers.get("acts", []) + bufs.buffers.get("params", []):
                    getattr(b, "freebuffer", lambda: None)()
                bufs.buffers = {}
            getattr(self._driver.transport, "close", lambda: None)()
            self._driver = None

    def __enter__(self) -> "NetworkRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def input_shape_of(network: NetworkConfig, input_size: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the network's input (re-exported for the CLI)."""
    return network_input_shape(network, input_size)

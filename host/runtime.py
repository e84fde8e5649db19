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

import functools
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from litefly.config import NetworkConfig
from litefly.errors import ConfigError, LiteflyError, ShapeError
from litefly.fixed import QuantizedLayer, int_range, quantize_tensor
from litefly.hw.spec import EngineEnvelope, LayerDescriptor
from litefly.hw.wireformat import pack_layer_params, pack_tensor, tensor_bytes, unpack_tensor
from litefly.network import EngineStep, check_scales, global_pool_int, network_input_shape, plan_network

from .driver import STAGES, EngineDriver

__all__ = ["BACKENDS", "NetworkProgram", "prepare_program", "execute", "NetworkRunner", "OutputMemory", "OUT_DTYPES",
           "out_dtype_of", "resolve_out_dtype", "dequantised", "open_transport"]

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
    skip_align: tuple[tuple[int, int] | None, ...] = ()   # a residual layer's (M, K)
    out_bufs: tuple[int, ...] = ()              # the activation buffer each layer writes (the input: 0)
    skip_from: tuple[int | None, ...] = ()      # a residual layer's skip: the layer whose output it adds
    in_from: tuple[int | None, ...] = ()        # a branch: the layer whose output it reads (None: the previous)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.steps[-1].out_shape

    def act_bytes(self, batch: int) -> int:
        """Bytes of the largest activation tensor at ``batch`` images."""
        e = self.envelope.elems_per_beat
        shapes = [self.in_shape] + [s.out_shape for s in self.steps]
        return max([tensor_bytes((batch,) + tuple(sh), e) for sh in shapes]
                   + [batch * self.descriptors[0].in_bytes_per_image])


def prepare_program(envelope: EngineEnvelope, steps: Sequence[EngineStep],
                    params: Mapping[str, QuantizedLayer]) -> NetworkProgram:
    """Check every layer fits ``envelope`` (one-line error naming the limit) and pack its parameters."""
    descs, shifts, packed = envelope.describe_network(steps), [], []
    for step in steps:
        q = params.get(step.name)
        if q is None:
            raise LiteflyError(f"no parameters for layer {step.name!r}")
        if q.layer.config_hash != step.layer.config_hash:
            raise LiteflyError(f"parameters for {step.name!r} are for another config (0x{q.layer.hash32:08x}, "
                               f"expected 0x{step.layer.hash32:08x})")
        shifts.append(tuple(int(s) for s in q.shifts))
        packed.append(pack_layer_params(q.weights, q.bias, envelope.weight_bits, envelope.stream_bits,
                                        step.layer.chain, envelope.lane_rows).reshape(-1))
    names = [st.name for st in steps]
    for st in steps:
        for ref, what in ((st.skip, "adds the output of"), (st.src, "reads the output of")):
            if ref is not None and ref not in names[:names.index(st.name)]:
                raise LiteflyError(f"layer {st.name!r} {what} {ref!r}, which is not an earlier layer of the same "
                                   f"engine program (a residual add or branch cannot span a host op)")
        if st.skip is not None and params[st.name].skip_align is None:
            raise LiteflyError(f"parameters for {st.name!r} lack skip_align (its residual add's scale); quantise the "
                               f"network with litefly.network.quantize_network")
    skip_from = tuple(names.index(st.skip) if st.skip else None for st in steps)
    return NetworkProgram(envelope, tuple(steps), tuple(descs), tuple(shifts), tuple(packed), steps[0].in_shape,
                          skip_align=tuple(params[st.name].skip_align if st.skip else None for st in steps),
                          out_bufs=_assign_buffers(steps), skip_from=skip_from,
                          in_from=tuple(names.index(st.src) if st.src else None for st in steps))


def _assign_buffers(steps: Sequence[EngineStep]) -> tuple[int, ...]:
    """The activation buffer each layer writes: one no later layer still reads (as its input, a
    branch's input or a residual add's skip). Ping-pong (1, 0, 1, ...) for a straight network;
    a kept skip or branch source takes a third buffer."""
    last_read: dict[str, int] = {}
    for k, st in enumerate(steps):
        for name in (st.skip, st.src or (steps[k - 1].name if k else None)):
            if name is not None:
                last_read[name] = max(last_read.get(name, 0), k)
    free_after = {0: 0}                 # buffer -> the last layer that reads it (the input: layer 0)
    out = []
    for k, st in enumerate(steps):
        free = [b for b, until in free_after.items() if until < k]
        b = min(free) if free else len(free_after)
        free_after[b] = last_read.get(st.name, k)
        out.append(b)
    return tuple(out)


def _buffers(driver: EngineDriver, program: NetworkProgram, batch: int, sets: int = 1) -> dict[str, Any]:
    """Activation buffers (ping-pong, a third for a kept skip) and one parameter buffer per layer,
    allocated once. ``sets=2``: a second set of activation buffers, so one batch's input can be
    written and another's output read while the engine runs a third on the other set
    (:meth:`NetworkRunner.run_stream`); ``bufs["sets"]`` holds them, ``bufs["acts"]`` is the first."""
    tr, bufs = driver.transport, program.buffers

    def act_set() -> list[np.ndarray]:
        size = _align(program.act_bytes(batch))
        return [tr.allocate((size,), np.uint8) for _ in range(max(program.out_bufs or (1,)) + 1)]
    if bufs.get("key") != (id(tr), batch):
        params = []
        for p in program.params:
            buf = tr.allocate((_align(p.size),), np.uint8)
            buf[:p.size] = p
            buf.flush()
            params.append(buf)
        acts = act_set()
        bufs = program.buffers = {"key": (id(tr), batch), "acts": acts, "sets": [acts], "params": params}
    while len(bufs["sets"]) < sets:
        bufs["sets"].append(act_set())
    return bufs


def _layer_plans(program: NetworkProgram, batch: int) -> list[dict[str, Any]]:
    """Per layer at ``batch`` images: images per pass, each pass's offsets, sizes and modelled
    cycles, and the run-independent part of the layer's stats (computed once per batch, so a
    run does no model arithmetic)."""
    plans = program.buffers.setdefault("plans", {})
    if batch not in plans:
        out = []
        for step, desc, params in zip(program.steps, program.descriptors, program.params):
            ipp = desc.pass_images(batch)
            in_img = desc.in_bytes_per_image
            out_img = desc.out_beats_per_image * desc.bytes_per_beat
            passes = []
            for first in range(0, batch, ipp):
                images = min(ipp, batch - first)
                passes.append((images, first * in_img, images * in_img, first * out_img, images * out_img,
                               desc.pass_cycles(images), desc.mac_cycles(images)))
            stats = {"layer": step.name, "backend": None, "cycles": None, "counters": None,     # per run
                     "model_cycles": sum(p[5] for p in passes), "mac_cycles": sum(p[6] for p in passes),
                     # the layer's parameter stream, a beat a cycle (a model: CYCLES times passes only)
                     "param_cycles": desc.param_beats,
                     "timings": None, "bytes_in": batch * in_img, "bytes_out": batch * out_img,
                     "param_bytes": params.size, "passes": len(passes), "images_per_pass": ipp,
                     "transfers": None, "in_shape": list(step.in_shape), "out_shape": list(step.out_shape)}
            out.append({"ipp": ipp, "passes": passes, "stats": stats})
        plans[batch] = out
    return plans[batch]


#: The dtypes the runtime dequantises the output into (``NetworkRunner(out_dtype=...)``); ``"auto"``
#: (the default): the input's, as numpy's and torch's float operations keep it (float32 in, float32
#: out), float64 for any other input.
OUT_DTYPES = ("auto", "float64", "float32")


def out_dtype_of(value: Any) -> np.dtype | None:
    """``value`` as one of :data:`OUT_DTYPES` (None for ``"auto"``), or a one-line :class:`ConfigError`."""
    if isinstance(value, str) and value == "auto":
        return None
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in OUT_DTYPES:
        raise ConfigError(f"out_dtype {value!r} is not one of {', '.join(OUT_DTYPES)}")
    return dtype


def resolve_out_dtype(out_dtype: np.dtype | None, x: np.ndarray) -> np.dtype:
    """The dtype a run on input ``x`` returns: ``out_dtype``, or with None (``"auto"``) float32 for a
    float32 input and float64 for any other."""
    if out_dtype is not None:
        return out_dtype
    return np.dtype(np.float32) if np.asarray(x).dtype == np.float32 else np.dtype(np.float64)


def dequantised(y_int: np.ndarray, scale: float, dtype: np.dtype) -> np.ndarray:
    """``y_int * scale`` in ``dtype`` (float64: the int8 golden network's dequantised output; float32:
    ``float32(y_int) * float32(scale)``): what :func:`execute` writes into the output's memory."""
    return np.multiply(y_int, dtype.type(scale), dtype=dtype)


class OutputMemory:
    """Memory for the dequantised output of ``shape`` (``dtype``: float64 or float32), reused from run to run.

    Two blocks, allocated (and their pages mapped) once, like the DMA buffers; a block is
    handed out again only once nothing refers any more to the array it last backed: the
    caller has dropped that output and every view of it (a weak reference to the array all
    views lead back to tells). A loop that keeps at most the previous output writes each
    output into mapped memory; a new array's pages cost more than dequantising into them
    (one page fault per 4 KiB). When both blocks are still referenced, a run gets a new array.
    """

    def __init__(self, shape: tuple[int, ...], blocks: int = 2, dtype: Any = np.float64) -> None:
        self.shape = tuple(int(v) for v in shape)
        self.dtype = np.dtype(dtype)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._blocks = [bytearray(nbytes) for _ in range(blocks)]      # zero-filled: pages mapped now
        self._held: list[weakref.ref | None] = [None] * blocks

    def array(self) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` that nothing else refers to."""
        for i, held in enumerate(self._held):
            if held is None or held() is None:
                # frombuffer's array is the one every view of it keeps alive (its base is not an array)
                root = np.frombuffer(self._blocks[i], self.dtype)
                self._held[i] = weakref.ref(root)
                return root.reshape(self.shape)
        return np.empty(self.shape, self.dtype)


def _output_memory(program: NetworkProgram, batch: int, dtype: Any = np.float64) -> OutputMemory:
    """The :class:`OutputMemory` of the dequantised ``(N, H, W, C)`` output at ``batch`` images."""
    c, h, w = program.out_shape
    mem = program.buffers.get("out")
    if mem is None or mem.shape != (batch, h, w, c) or mem.dtype != np.dtype(dtype):
        mem = program.buffers["out"] = OutputMemory((batch, h, w, c), dtype=dtype)
    return mem


@functools.lru_cache(maxsize=None)
def _holds_only(dtype: np.dtype, lo: int, hi: int) -> bool:
    """Whether every value of ``dtype`` is in ``lo..hi`` (an int8 input needs no range check)."""
    if dtype.kind not in "iu":
        return False
    info = np.iinfo(dtype)
    return lo <= info.min and info.max <= hi


def _check_input(program: NetworkProgram, x_int: np.ndarray) -> None:
    """One-line errors for an input of the wrong shape or outside the activation range."""
    if x_int.ndim != 4 or tuple(x_int.shape[1:]) != program.in_shape:
        raise ShapeError(f"input has shape {x_int.shape}, expected (N, {', '.join(map(str, program.in_shape))})")
    lo, hi = int_range(program.envelope.act_bits)
    if x_int.size and not _holds_only(x_int.dtype, lo, hi) and (x_int.min() < lo or x_int.max() > hi):
        raise ShapeError(f"input values {x_int.min()}..{x_int.max()} are outside the {program.envelope.act_bits}-bit "
                         f"range {lo}..{hi}")


def _write_input(driver: EngineDriver, program: NetworkProgram, buf: np.ndarray, x_int: np.ndarray) -> None:
    """Pack the integer input into the first activation buffer (stage ``copy_in``)."""
    t0 = time.perf_counter()
    first = program.descriptors[0]
    pack_tensor(x_int, program.envelope.elems_per_beat, out=buf, packed=first.packed_input, fold=first.step.fold)
    buf.flush()
    driver.timings["copy_in"] += time.perf_counter() - t0


def _run_layers(driver: EngineDriver, program: NetworkProgram, acts: Sequence[np.ndarray], params: Sequence[Any],
                plans: list[dict[str, Any]]) -> tuple[int, list[tuple[dict[str, int], float, float, int]]]:
    """Every layer, buffer to buffer; the buffer holding the output and, per layer, its counters,
    dispatch and wait seconds and DMA transfers."""
    timings = driver.timings
    layers: list[tuple[dict[str, int], float, float, int]] = []
    src = 0
    try:
        for k, (desc, plan) in enumerate(zip(program.descriptors, plans)):
            d0, w0, n0 = timings["dispatch"], timings["wait"], driver.transfers
            driver.clear_counters()
            ipp = plan["ipp"]
            align = program.skip_align[k] if program.skip_align else None
            driver.write_descriptor(desc, program.shifts[k], ipp, align)
            driver.load_params(params[k], program.params[k].size)
            if program.in_from and program.in_from[k] is not None:     # a branch reads an earlier output
                src = program.out_bufs[program.in_from[k]]
            dst = program.out_bufs[k] if program.out_bufs else 1 - src
            src_buf, dst_buf = acts[src], acts[dst]
            skip_buf = acts[program.out_bufs[program.skip_from[k]]] if align is not None else None
            for images, in_off, in_bytes, out_off, out_bytes, cycles, _ in plan["passes"]:
                if images != ipp:   # IMAGES and what follows it (NPOS, FRAME_BEATS, SKIP_BEATS)
                    driver.write_descriptor(desc, program.shifts[k], images, align)
                driver.run_pass(src_buf, in_off, in_bytes, dst_buf, out_off, out_bytes, cycles,
                                None if skip_buf is None else (skip_buf, out_off, out_bytes))
            layers.append((driver.counters(), timings["dispatch"] - d0, timings["wait"] - w0, driver.transfers - n0))
            src = dst
    except BaseException:
        driver.forget_registers()       # whatever stopped the run may be followed by a reset or a reload
        raise
    return src, layers


def _output_view(driver: EngineDriver, program: NetworkProgram, buf: Any, batch: int) -> np.ndarray:
    """The last layer's output bytes, read in place (stage ``copy_out``)."""
    t0 = time.perf_counter()
    buf.invalidate()
    c, h, w = program.out_shape
    raw = np.asarray(buf).reshape(-1)[:tensor_bytes((batch, c, h, w), program.envelope.elems_per_beat)]
    driver.timings["copy_out"] += time.perf_counter() - t0
    return raw


def _output_array(driver: EngineDriver, program: NetworkProgram, batch: int, dtype: Any = np.float64) -> np.ndarray:
    """The dequantised output's memory (:class:`OutputMemory`; stage ``unpack``)."""
    t0 = time.perf_counter()
    out = _output_memory(program, batch, dtype).array()
    driver.timings["unpack"] += time.perf_counter() - t0
    return out


def _dequantise(driver: EngineDriver, program: NetworkProgram, raw: np.ndarray, out: np.ndarray, out_scale: float,
                images: slice) -> None:
    """``images`` of the int8 output, times ``out_scale`` in ``out``'s dtype, into ``out`` (channels-last;
    stage ``unpack``)."""
    t0 = time.perf_counter()
    c, h, w = program.out_shape
    batch = out.shape[0]
    dst = out[images]           # the exact cast, then the scale in place: about 1.5x faster than one
    dst[...] = raw.view(np.int8).reshape(batch, h, w, -1)[images, ..., :c]     # mixed-type multiply, same values
    dst *= out.dtype.type(out_scale)
    driver.timings["unpack"] += time.perf_counter() - t0


def _layer_stats(driver: EngineDriver, plans: list[dict[str, Any]],
                 layers: list[tuple[dict[str, int], float, float, int]]) -> list[dict]:
    """One stats dict per layer of a run: the plan's, with the run's counters, timings and transfers."""
    name = getattr(driver.transport, "name", "?")
    zero = dict.fromkeys(STAGES, 0.0)
    return [dict(plan["stats"], backend=name, cycles=counters["CYCLES"], counters=counters,
                 timings=dict(zero, dispatch=dispatch, wait=wait), transfers=transfers,
                 in_shape=list(plan["stats"]["in_shape"]), out_shape=list(plan["stats"]["out_shape"]))
            for plan, (counters, dispatch, wait, transfers) in zip(plans, layers)]


def _untimed_to_dispatch(timings: dict[str, float], before: Mapping[str, float], wall: float,
                         stats: list[dict]) -> None:
    """Every host second of a call is in a stage: what no stage timed (checks, counters,
    bookkeeping) goes to ``dispatch``, the layers' share of it to their own dispatch."""
    untimed = max(0.0, wall - sum(timings[s] - before[s] for s in STAGES))
    timings["dispatch"] += untimed
    for st in stats:
        st["timings"]["dispatch"] += untimed / len(stats)


def execute(driver: EngineDriver, program: NetworkProgram, x_int: np.ndarray,
            out_scale: float | None = None, out_dtype: Any = np.float64) -> tuple[np.ndarray, list[dict]]:
    """Integer NCHW input -> integer NCHW output of the last layer, and one stats dict per layer.

    With ``out_scale`` the output is dequantised straight from the int8 bytes into ``out_dtype``
    (float64: ``y_int * out_scale``, exactly the int8 golden network's dequantised output;
    float32: ``float32(y_int) * float32(out_scale)``, rounded to float32), written
    channels-last as the engine sends it and returned as an NCHW-shaped view with
    channels-last strides (torch's ``channels_last``; ``torch.from_numpy`` takes it as is), in
    memory reused across runs (:class:`OutputMemory`). Without it: int64 NCHW (a new array).

    Every host second of the call is in a stage: what the driver does not time itself
    (checks, counters, bookkeeping) is added to ``dispatch``."""
    t_enter = time.perf_counter()
    timings = driver.timings
    timings0 = dict(timings)
    x_int = np.asarray(x_int)
    _check_input(program, x_int)
    batch = int(x_int.shape[0])
    bufs = _buffers(driver, program, batch)
    plans = _layer_plans(program, batch)
    _write_input(driver, program, bufs["acts"][0], x_int)
    src, layers = _run_layers(driver, program, bufs["acts"], bufs["params"], plans)
    raw = _output_view(driver, program, bufs["acts"][src], batch)
    if out_scale is None:
        t0 = time.perf_counter()
        c, h, w = program.out_shape
        y = unpack_tensor(raw, (batch, c, h, w), program.envelope.elems_per_beat)
        timings["unpack"] += time.perf_counter() - t0
    else:           # int8 -> out_dtype over contiguous memory: channels-last in, channels-last out
        out = _output_array(driver, program, batch, out_dtype)
        _dequantise(driver, program, raw, out, out_scale, slice(None))
        y = out.transpose(0, 3, 1, 2)
    stats = _layer_stats(driver, plans, layers)
    _untimed_to_dispatch(timings, timings0, time.perf_counter() - t_enter, stats)
    return y, stats


def open_transport(backend: str, envelope: EngineEnvelope, **opts: Any) -> Any:
    """A transport for ``golden`` or ``pynq`` (``sim`` runs inside the simulator: :mod:`.sim_transport`)."""
    if backend == "golden":
        from .golden_transport import GoldenTransport
        return GoldenTransport(envelope, **{k: v for k, v in opts.items()
                                            if k in ("fault", "config_hash", "lanes", "version", "replay")})
    if backend == "pynq":
        from .pynq_transport import PynqTransport
        return PynqTransport.for_network(envelope, **opts)
    raise LiteflyError(f"backend {backend!r} is not known; expected one of {', '.join(BACKENDS)}")


class NetworkRunner:
    """Run a :class:`~litefly.config.NetworkConfig` on one network engine.

    ``params`` maps each layer's name to its :class:`~litefly.fixed.QuantizedLayer`, with
    chained scales (each layer's input scale is the previous layer's output scale).
    ``envelope`` defaults to :meth:`EngineEnvelope.for_network` at ``input_size``; on ``pynq``, on the
    board it runs on (``board=``, else :func:`~litefly.host.board_env.detect_board`), as ``litefly build
    --board`` sizes it.
    Options: ``timeout``, ``clock_mhz``, ``out_dtype`` (what :meth:`run` returns: ``"auto"``, the
    default, the input's float dtype as numpy and torch keep it (float32 for a float32 input, else
    float64); ``"float64"``, exactly the int8 golden network's dequantised output; ``"float32"``,
    ``float32(y_int) * float32(scale)``, half the memory to write and what torch models take), and
    the backend's own (``fault=``, ``simulator=``, ...).
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
        if envelope is None:
            board = None
            if backend == "pynq":
                from .board_env import detect_board  # noqa: PLC0415
                board = detect_board(opts.get("bitfile"), opts.get("board"))
            envelope = EngineEnvelope.for_network(network, self.input_size, board=board)
        self.envelope = envelope
        self.timeout = float(opts.pop("timeout", 2.0))
        self.out_dtype = out_dtype_of(opts.pop("out_dtype", "auto"))
        self.clock_mhz = float(opts.pop("clock_mhz", 100.0))
        self.opts = opts
        self.stats: list[dict[str, Any]] = []
        self.total: dict[str, Any] = {}
        self._programs: dict[tuple[int, int, int], NetworkProgram] = {}
        self._segments: dict[tuple[int, int, int], list[tuple[str | None, NetworkProgram]]] = {}
        self._driver: EngineDriver | None = None
        self._work: np.ndarray | None = None          # quantize's float array, kept for the next input
        self._engine_hash = f"0x{self.envelope.hash32:08x}"

    # -- plans --------------------------------------------------------------------------------
    def program(self, in_shape: tuple[int, int, int]) -> NetworkProgram:
        """The whole network's program (every layer's descriptor); what runs is :meth:`segments`."""
        if in_shape not in self._programs:
            steps = plan_network(self.network, in_shape)
            check_scales(steps, self.params)
            self._programs[in_shape] = prepare_program(self.envelope, steps, self.params)
        return self._programs[in_shape]

    def segments(self, in_shape: tuple[int, int, int]) -> list[tuple[str | None, NetworkProgram]]:
        """The engine programs run one after another, each with the host op run before it (a
        global pool, ``EngineStep.pre``; ``None`` for the first). One segment, the whole
        :meth:`program`, when the network has no host op."""
        if in_shape not in self._segments:
            full = self.program(in_shape)
            cuts = [k for k, st in enumerate(full.steps) if st.pre is not None]
            if not cuts:
                self._segments[in_shape] = [(None, full)]
            else:
                bounds = [0] + cuts + [len(full.steps)]
                self._segments[in_shape] = [
                    (full.steps[a].pre, prepare_program(self.envelope, full.steps[a:b], self.params))
                    for a, b in zip(bounds, bounds[1:])]
        return self._segments[in_shape]

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

    def prepare(self, x: np.ndarray) -> None:
        """Set up what a first run of inputs shaped like ``x`` sets up, without running the
        engine: the program, the transport (identity checked), DMA buffers, pass plans, the
        output memory and quantize's float array (sim: the program, plans and float array)."""
        x = np.asarray(x)
        shape = self._in_shape(x)
        batch = int(x.shape[0])
        segments = self.segments(shape)
        for _, program in segments:
            if self.backend != "sim":
                _buffers(self._open(), program, batch)
            _layer_plans(program, batch)
        if self.backend != "sim":
            _output_memory(segments[-1][1], batch, resolve_out_dtype(self.out_dtype, x))
        self._quantize_work((batch,) + shape)

    def _quantize_work(self, shape: tuple[int, ...]) -> np.ndarray:
        """quantize's float64 array for inputs of ``shape`` (the last shape's is kept; written
        once when made, so its pages exist before it is used)."""
        if self._work is None or self._work.shape != shape:
            self._work = np.full(shape, 0.0)
        return self._work

    # -- runs ---------------------------------------------------------------------------------
    def _quantize(self, x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """Float input -> the engine's integers at the first layer's input scale (stage ``quantize``
        is the caller's to time)."""
        first = self.params[self.network.layers[0].name]
        bits = first.layer.format.act_bits
        x4 = x.reshape((x.shape[0],) + shape)
        work = self._quantize_work(x4.shape)
        try:                # int8, the engine's width, computed in a kept float array; NaN cannot be quantised
            with np.errstate(invalid="raise"):
                return quantize_tensor(x4, first.in_scale, bits, np.int8 if bits <= 8 else np.int64, work=work)
        except FloatingPointError:
            raise ShapeError(f"network {self.network.name!r}: the input holds NaN, which has no integer "
                             f"value") from None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Float input of the first layer -> float output of the last layer."""
        x = np.asarray(x)
        shape = self._in_shape(x)
        t0 = time.perf_counter()
        x_int = self._quantize(x, shape)
        t_quant = time.perf_counter() - t0
        scale = self.params[self.network.layers[-1].name].out_scale
        dtype = resolve_out_dtype(self.out_dtype, x)
        y = self._run(x_int, shape, out_scale=scale, out_dtype=dtype)
        self.total["host_stage[s]"]["quantize"] += t_quant
        if self.backend != "sim":
            return y                    # dequantised by execute while unpacking
        t1 = time.perf_counter()
        out = dequantised(y, scale, dtype)
        self.total["host_stage[s]"]["unpack"] += time.perf_counter() - t1
        return out

    def run_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Float batches in, their float outputs out, in order, with the host's work on each
        batch's input and output done while the engine runs a neighbouring batch.

        While the engine runs batch k (on one of two sets of activation buffers), the host
        dequantises batch k-1's output and quantises and packs batch k+1's input (on the other
        set), in slices run while each pass's DMA is in flight (:meth:`EngineDriver.run_pass`).
        Each output is yielded once the engine has run the batch after it (or the stream has
        ended), so an output comes one batch later than :meth:`run` would return it; outputs
        equal :meth:`run`'s. A batch of another shape drains the pipeline and starts it again.
        After each engine run its figures are appended to :attr:`stream_totals` (also
        :attr:`total`/:attr:`stats`): the host stages measured during that run, including the
        neighbours' work, and ``hidden[s]``, the host seconds the engine's passes covered (up
        to each pass's modelled time). On ``sim`` and with host ops between engine programs
        (a global pool) the batches run one after another (``hidden[s]`` 0)."""
        it = iter(batches)
        x = next(it, None)
        self.stream_totals: list[dict[str, Any]] = []
        if x is None:
            return
        x = np.asarray(x)
        if self.backend == "sim" or len(self.segments(self._in_shape(x))) > 1:
            while x is not None:
                y = self.run(x)
                self.stream_totals.append(self.total)
                yield y
                x = next(it, None)
            return
        yield from self._stream(x, it)

    def _stream(self, x: Any, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        driver = self._open()
        driver.reset_stats()
        scale = float(self.params[self.network.layers[-1].name].out_scale)
        prev: dict[str, Any] | None = None      # the previous batch's output, still to be dequantised
        ready: dict[str, Any] | None = None     # this batch's input, written during the previous run
        k = 0
        while x is not None:
            t0, before, hidden0 = time.perf_counter(), dict(driver.timings), driver.hidden
            x = np.asarray(x)
            if ready is not None and "error" in ready:      # its quantise failed in the previous run
                if prev is not None:
                    self._drain(prev)
                    yield prev["y"]
                raise ready["error"]
            shape = self._in_shape(x)
            program = self.segments(shape)[0][1]
            batch = int(x.shape[0])
            bufs = _buffers(driver, program, batch, sets=2)
            plans = _layer_plans(program, batch)
            acts = bufs["sets"][k % 2]
            if ready is None:
                state: dict[str, Any] = {}
                for work in self._input_slices(driver, program, x, shape, acts[0], state):
                    work()
                if "error" in state:
                    raise state["error"]
            t_next = time.perf_counter()
            nxt = next(rest, None)          # the caller's time (loading a batch) is not the host's
            t0 += time.perf_counter() - t_next
            nxt = None if nxt is None else np.asarray(nxt)
            # the next batch is written while this one runs when it has the same shape (else the pipeline drains)
            follows = nxt is not None and nxt.shape == x.shape and nxt.dtype.kind in "fiu"
            queue = driver.background
            queue.clear()
            if prev is not None:
                queue.extend(prev.pop("slices"))
            ready = {} if follows else None
            if follows:
                queue.extend(self._input_slices(driver, program, nxt, shape, bufs["sets"][(k + 1) % 2][0], ready))
            try:
                src, layers = _run_layers(driver, program, acts, bufs["params"], plans)
            finally:
                pending = list(queue)
                queue.clear()
            for work in pending:            # what the passes did not cover
                work()
            done, prev = prev, self._output_slices(driver, program, acts[src], batch, scale,
                                                   resolve_out_dtype(self.out_dtype, x))
            if not follows:
                self._drain(prev)
            stats = _layer_stats(driver, plans, layers)
            wall = time.perf_counter() - t0
            timings = {s: driver.timings[s] - before[s] for s in STAGES}
            _untimed_to_dispatch(timings, dict.fromkeys(STAGES, 0.0), wall, stats)
            self.stats = stats
            self.total = self._totals(stats, timings, batch, wall, driver.hidden - hidden0)
            self.stream_totals.append(self.total)
            if done is not None:
                yield done["y"]
            if not follows:
                yield prev["y"]
                prev = None
            x, k = nxt, k + 1

    def _input_slices(self, driver: EngineDriver, program: NetworkProgram, x: np.ndarray,
                      shape: tuple[int, int, int], buf: np.ndarray, state: dict[str, Any]) -> list[Any]:
        """Quantise ``x`` and pack it into ``buf``, as two slices of host work; a slice never
        raises (it runs while a pass is in flight): an error is kept in ``state["error"]``."""
        def quantise() -> None:
            t0 = time.perf_counter()
            try:
                state["x_int"] = self._quantize(x, shape)
            except LiteflyError as err:
                state["error"] = err
            driver.timings["quantize"] += time.perf_counter() - t0

        def pack() -> None:
            if "error" not in state:
                _write_input(driver, program, buf, state.pop("x_int"))
        return [quantise, pack]

    def _output_slices(self, driver: EngineDriver, program: NetworkProgram, buf: Any, batch: int,
                       scale: float, dtype: np.dtype) -> dict[str, Any]:
        """The output in ``buf``, dequantised into :class:`OutputMemory` as slices of host work
        (about 64 KiB of output each); ``["y"]`` holds the output once they have run."""
        c, h, w = program.out_shape
        state: dict[str, Any] = {}

        def read() -> None:
            state["raw"] = _output_view(driver, program, buf, batch)
            state["out"] = _output_array(driver, program, batch, dtype)

        def done() -> None:         # the output once every image is in it (a reshape may copy)
            state["y"] = self._shaped(state.pop("out").transpose(0, 3, 1, 2), program)
            del state["raw"]

        group = max(1, (64 << 10) // (h * w * c * dtype.itemsize))
        parts = [lambda s=slice(i, i + group): _dequantise(driver, program, state["raw"], state["out"], scale, s)
                 for i in range(0, batch, group)]
        state["slices"] = [read, *parts, done]
        return state

    @staticmethod
    def _drain(state: dict[str, Any]) -> None:
        for work in state.pop("slices", ()):
            work()

    def run_int(self, x_int: np.ndarray) -> np.ndarray:
        """Integer input at the first layer's input scale -> integer output of the last layer."""
        x_int = np.asarray(x_int)
        if not np.issubdtype(x_int.dtype, np.integer):
            raise ShapeError(f"run_int: input dtype {x_int.dtype} is not an integer type")
        shape = self._in_shape(x_int)
        return self._run(x_int.reshape((x_int.shape[0],) + shape), shape)

    def _run(self, x_int: np.ndarray, shape: tuple[int, int, int], out_scale: float | None = None,
             out_dtype: np.dtype = np.dtype(np.float64)) -> np.ndarray:
        segments = self.segments(shape)
        program = segments[-1][1]
        t0 = time.perf_counter()
        if len(segments) == 1:
            y, stats, timings = self._run_segment(program, x_int, out_scale, reset=True, out_dtype=out_dtype)
        else:
            y, stats, timings = self._run_segments(segments, x_int, out_scale, out_dtype)
        self.stats = stats
        self.total = self._totals(stats, timings, int(x_int.shape[0]), time.perf_counter() - t0)
        return self._shaped(y, program)

    def _totals(self, stats: list[dict], timings: dict[str, float], batch: int, wall: float,
                hidden: float = 0.0) -> dict[str, Any]:
        """A run's figures: engine cycles and seconds, host stages, and (:meth:`run_stream`) the
        host seconds the engine's run covered (``hidden[s]``)."""
        cycles = sum(s["cycles"] for s in stats)
        pcycles = sum(s["param_cycles"] for s in stats)
        return {
            "backend": self.backend, "engine": self.envelope.name, "engine_hash": self._engine_hash,
            "batch": batch, "cycles": cycles, "param_cycles": pcycles, "clock_mhz": self.clock_mhz,
            "engine_s": (cycles + pcycles) / (self.clock_mhz * 1e6), "host_stage[s]": timings, "wall_s": wall,
            "hidden[s]": hidden, "transfers": sum(s["transfers"] for s in stats),
            "bytes_in": stats[0]["bytes_in"], "bytes_out": stats[-1]["bytes_out"],
        }

    def _shaped(self, y: np.ndarray, program: NetworkProgram) -> np.ndarray:
        """A linear network's ``(N, F, 1, 1)`` output as ``(N, F)``."""
        if self.network.layers[-1].kind == "linear" and program.out_shape[1:] == (1, 1):
            return y.reshape(y.shape[0], -1)
        return y

    def _run_segment(self, program: NetworkProgram, x_int: np.ndarray, out_scale: float | None, reset: bool,
                     out_dtype: np.dtype = np.dtype(np.float64)) -> tuple[np.ndarray, list[dict], dict[str, float]]:
        """One engine program; its stats and the host stages it took."""
        if self.backend == "sim":
            from .sim_transport import run_network_sim
            return run_network_sim(program, x_int, timeout=self.timeout, clock_mhz=self.clock_mhz, **self.opts)
        driver = self._open()
        if reset:
            driver.reset_stats()
        before = dict(driver.timings)
        y, stats = execute(driver, program, x_int, out_scale=out_scale, out_dtype=out_dtype)
        return y, stats, {k: v - before.get(k, 0.0) for k, v in driver.timings.items()}

    def _run_segments(self, segments: list[tuple[str | None, NetworkProgram]], x_int: np.ndarray,
                      out_scale: float | None, out_dtype: np.dtype = np.dtype(np.float64)
                      ) -> tuple[np.ndarray, list[dict], dict[str, float]]:
        """Engine programs with host ops between them. Each host op's measured time is the stage
        ``host_op``: reading the previous program's output (copy_out, unpack), the pool itself and
        writing the next program's input (copy_in), so every second is in one stage only; the
        layer after it carries ``host_op`` (op, seconds, shapes) in its stats."""
        if self.backend != "sim":
            self._open().reset_stats()
        timings: dict[str, float] = {"host_op": 0.0}
        stats: list[dict] = []
        y, carry = x_int, 0.0           # carry: reading out the previous program's output
        for k, (op, program) in enumerate(segments):
            last = k == len(segments) - 1
            t_op, in_shape = carry, list(y.shape[1:])
            if op is not None:
                t1 = time.perf_counter()
                y = global_pool_int(y, op)          # integers at the same scale: exact
                t_op += time.perf_counter() - t1
            y, seg_stats, seg_t = self._run_segment(program, y, out_scale if last else None, reset=False,
                                                    out_dtype=out_dtype)
            if op is not None:
                t_op += seg_t.pop("copy_in", 0.0)
                seg_stats[0]["host_op"] = {"op": op, "host[s]": t_op, "in_shape": in_shape,
                                           "out_shape": list(program.in_shape)}
                timings["host_op"] += t_op
            carry = 0.0 if last else seg_t.pop("copy_out", 0.0) + seg_t.pop("unpack", 0.0)
            for key, v in seg_t.items():
                timings[key] = timings.get(key, 0.0) + v
            stats += seg_stats
        return y, stats, timings

    def _open(self) -> EngineDriver:
        if self._driver is None:
            transport = open_transport(self.backend, self.envelope, **self.opts)
            self._driver = EngineDriver(transport, self.envelope, timeout=self.timeout, clock_mhz=self.clock_mhz)
            self._driver.check_identity()
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            programs = list(self._programs.values()) + [p for segs in self._segments.values() for _, p in segs]
            for bufs in programs:
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

"""The engine model: a pure-numpy network engine behind the transport interface.

It implements the register and stream protocol of ``docs/engine.md`` from the registers
alone (:mod:`litefly.hw.regmap`, :func:`litefly.hw.spec.factors_from_words`): parameters are
kept as the raw beats the engine's weight memory would hold and decoded by the descriptor
in force when a pass runs; windows are gathered directly from the NHWC-E frame, an
implementation independent of :func:`litefly.network.im2col`. The driver runs unchanged
against it: fast tests, the ``golden`` backend, and the reference the RTL's conformance tests
compare with. Counters follow the one cycle model (:func:`litefly.hw.cycles.pass_cycles`),
labelled "model". All engine work happens in ``wait()``, which the driver times as engine
time, never in the calls it times as host time.

A pass is a pure function of the registers, the parameters and the bytes streamed in, so the
model keeps its last passes' outputs and counters (:data:`REPLAY_BYTES` of them) and replays a
pass whose inputs are byte for byte one it has run: a benchmark's repeated runs then time the
host's stages without the model's numpy work (which a board does on no CPU) evicting their
caches in between (``replay=False`` computes every pass).

Faults (for refusal tests): ``fault="never_start"`` ignores ``CTRL.START`` (the receive
never completes); ``"short_output"`` drops the last output beat and TLAST; ``config_hash=`` /
``lanes=`` / ``version=`` impersonate another bitstream.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from litefly.errors import ConfigError, LiteflyError
from litefly.fixed import add_skip, factor_forward, factor_input, requantize
from litefly.hw import regmap
from litefly.hw.cycles import chain_issue, words_pass_cycles
from litefly.hw.spec import DMA_LENGTH_BITS, DMA_MAX_BYTES, EngineEnvelope, ceil_div, factors_from_words, pass_constants
from litefly.hw.wireformat import pack_tensor, unpack_index, unpack_layer_params, unpack_tensor

from .transport import host_buffer, poll_until

__all__ = ["GoldenTransport", "FAULTS", "REPLAY_BYTES"]

FAULTS = ("never_start", "short_output")
#: The most bytes (frames, skips and outputs) of past passes the model keeps to replay.
REPLAY_BYTES = 32 << 20
_R = regmap.REG
_RW = {r.offset: r.name for r in regmap.REGISTERS if r.access == "RW"}
_CTRL, _STATUS, _IMAGES = _R["CTRL"], _R["STATUS"], _R["IMAGES"]
_COUNTER_AT = {_R[n]: n for n in regmap.COUNTERS}


class _Channel:
    def __init__(self, owner: "GoldenTransport", direction: str) -> None:
        self._owner, self._dir = owner, direction
        self._buf: np.ndarray | None = None
        self._start = self._nbytes = 0
        self.idle = True
        self.transferred = 0
        self.transfers = 0

    def transfer(self, buf: np.ndarray, start: int = 0, nbytes: int | None = None) -> None:
        """Check the transfer as the DMA's registers would and arm it; the bytes are read (or
        written) when the model runs, as the DMA engine does, not here."""
        if not self.idle:
            raise LiteflyError(f"DMA {self._dir} channel is busy: wait for the previous transfer first")
        if not isinstance(buf, np.ndarray):
            buf = np.asarray(buf)
        size, start = buf.nbytes, int(start)
        if not 0 <= start <= size:
            raise LiteflyError(f"DMA {self._dir} offset {start} is outside the {size}-byte buffer")
        avail = size - start
        nbytes = avail if nbytes is None else int(nbytes)
        if nbytes > avail:
            raise LiteflyError(f"DMA {self._dir} of {nbytes} bytes from offset {start} overruns the "
                               f"{size}-byte buffer")
        if nbytes <= 0 or nbytes > DMA_MAX_BYTES:
            raise LiteflyError(f"DMA {self._dir} length {nbytes} bytes is outside 1..{DMA_MAX_BYTES} "
                               f"({DMA_LENGTH_BITS}-bit length register)")
        self._buf, self._start, self._nbytes, self.idle = buf, start, nbytes, False
        self.transfers += 1

    def _bytes(self, nbytes: int) -> np.ndarray:
        """The armed buffer's first ``nbytes`` bytes from the transfer's offset (a view)."""
        return self._buf.reshape(-1).view(np.uint8)[self._start:self._start + nbytes]

    def wait(self, timeout: float = 2.0) -> None:
        what = "DMA send" if self._dir == "send" else "DMA receive"
        poll_until(lambda: self._owner._step() or self.idle, timeout, what, interval=0.0005)


class GoldenTransport:
    """The network engine of ``envelope`` as a numpy model behind the transport interface."""

    name = "golden"

    def __init__(self, envelope: EngineEnvelope, fault: str | None = None, config_hash: int | None = None,
                 lanes: int | None = None, version: tuple[int, int] | None = None, replay: bool = True) -> None:
        if fault is not None and fault not in FAULTS:
            raise LiteflyError(f"engine model: fault={fault!r} is not one of {', '.join(FAULTS)}")
        self.envelope, self.fault = envelope, fault
        caps = envelope.capability_words()
        if config_hash is not None:
            caps["CONFIG_HASH"] = config_hash
        if lanes is not None:
            caps["LANES"] = lanes
        if version is not None:
            caps["VERSION"] = regmap.pack("VERSION", {"MAJOR": version[0], "MINOR": version[1]})
        self._ro = {_R[k]: v for k, v in caps.items()}
        self._rw_offsets = frozenset(_RW) | {regmap.factor_reg(i, kind).offset for i in range(envelope.max_factors)
                                               for kind, _, _ in regmap.FACTOR_REGS}
        self._rw: dict[int, int] = {}
        self._sb = envelope.stream_bits // 8
        self.sendchannel = _Channel(self, "send")
        self.recvchannel = _Channel(self, "receive")
        self._params: bytes | None = None    # the weight memory: kept across soft reset
        self._replay: OrderedDict[tuple, tuple[bytes, dict[str, int]]] = OrderedDict()
        self._replay_bytes = 0
        self._replay_on = bool(replay)      # False: every pass computed (scripts/bench_host.py --compute)
        self.replayed = 0                    # passes replayed, not computed
        self._reset_datapath()

    def _reset_datapath(self) -> None:
        self._counters = dict.fromkeys(regmap.COUNTERS, 0)
        self._params_valid = False
        self._loading = self._busy = self._done = False
        self._in = bytearray()          # bytes sent to s_axis, not yet consumed
        self._out: list[bytes] = []     # packets (one per pass, TLAST at the end) waiting for S2MM
        self._pass_images = 0

    # -- registers -------------------------------------------------------------------------
    # They stand in for MMIO, so the host times them: a dict look-up and bit tests each.
    def read_reg(self, offset: int) -> int:
        value = self._ro.get(offset)
        if value is not None:
            return value
        if offset == _STATUS:
            return ((regmap.STATUS_BUSY if self._busy else 0) | (regmap.STATUS_DONE if self._done else 0)
                    | (regmap.STATUS_LOADING if self._loading else 0)
                    | (regmap.STATUS_PARAMS_VALID if self._params_valid else 0))
        name = _COUNTER_AT.get(offset)
        if name is not None:
            return self._counters[name] & 0xFFFFFFFF
        return self._rw.get(offset, 0)          # only RW offsets are ever stored; others read 0

    def write_reg(self, offset: int, value: int) -> None:
        value = int(value) & 0xFFFFFFFF
        if offset == _CTRL:
            if value & regmap.CTRL_SOFT_RESET:
                self._reset_datapath()
            if value & regmap.CTRL_CLEAR_COUNTERS:
                self._counters = dict.fromkeys(self._counters, 0)
            if value & regmap.CTRL_LOAD_PARAMS and not self._busy:
                self._loading, self._params_valid = True, False
            if value & regmap.CTRL_START and self.fault != "never_start" and not self._busy and not self._loading:
                images = self._rw.get(_IMAGES, 0)     # only IMAGES is needed here (keep START cheap)
                if images:
                    self._busy, self._done, self._pass_images = True, False, images
        elif offset in self._rw_offsets:
            self._rw[offset] = value

    def _words(self) -> dict[str, int]:
        words = {_RW[o]: self._rw.get(o, 0) for o in _RW}
        for i in range(self.envelope.max_factors):
            for kind, _, _ in regmap.FACTOR_REGS:
                reg = regmap.factor_reg(i, kind)
                words[reg.name] = self._rw.get(reg.offset, 0)
        return words

    # -- buffers -------------------------------------------------------------------------
    def allocate(self, shape: Any, dtype: Any = np.uint8) -> np.ndarray:
        return host_buffer(shape, dtype)

    def close(self) -> None:
        pass

    # -- the engine -------------------------------------------------------------------------
    def _step(self) -> bool:
        """Advance the model as far as the data present allows. Returns False (for polling)."""
        snd = self.sendchannel
        if not snd.idle:                       # MM2S pushes its whole buffer into the engine's input
            self._in += snd._bytes(snd._nbytes).tobytes()
            snd.idle, snd.transferred = True, snd.transferred + snd._nbytes
        words = self._words()
        if self._loading:
            need = (words["WEIGHT_BEATS"] + words.get("INDEX_BEATS", 0) + words["BIAS_BEATS"]) * self._sb
            if len(self._in) >= need:
                self._params = bytes(self._in[:need])
                del self._in[:need]
                self._loading, self._params_valid = False, True
        if self._busy and self._pass_images:          # a pass started whose frame is still awaited
            c = regmap.unpack("IN_C", words["IN_C"])["C"]
            hw = regmap.unpack("IN_HW", words["IN_HW"])
            packed = regmap.unpack("LAYER", words["LAYER"])["PACKED"]
            pixels = self._pass_images * hw["H"] * hw["W"]
            need = ceil_div(pixels * c, self._sb) * self._sb if packed else pixels * ceil_div(c, self._sb) * self._sb
            lay = regmap.unpack("LAYER", words["LAYER"])
            skip_need = words.get("SKIP_BEATS", 0) * self._sb if lay["RESIDUAL"] else 0
            if len(self._in) >= need + skip_need:       # a residual pass's skip follows its frame
                frame = bytes(self._in[:need])
                skip = bytes(self._in[need:need + skip_need])
                del self._in[:need + skip_need]
                out = self._pass(words, frame, skip)
                if self.fault == "short_output":
                    out = out[:-self._sb]
                self._out.append(out)        # BUSY until the pass's last beat has been taken
                self._pass_images = 0
        rcv = self.recvchannel
        if not rcv.idle and self._out and self.fault != "short_output":   # short: no TLAST, never completes
            packet = self.take_output()
            if len(packet) > rcv._nbytes:
                raise LiteflyError(f"DMA receive buffer of {rcv._nbytes} bytes is smaller than the "
                                   f"{len(packet)}-byte pass")
            rcv._bytes(len(packet))[:] = np.frombuffer(packet, np.uint8)
            rcv.idle, rcv.transferred = True, rcv.transferred + len(packet)
        return False

    def take_output(self) -> bytes:
        """The oldest pass's output packet, as m_axis delivers it; the pass is DONE (and the engine
        no longer BUSY) once its last beat has been taken."""
        packet = self._out.pop(0)
        if not self._out and not self._pass_images:
            self._busy, self._done = False, True
        return packet

    def _pass(self, words: dict[str, int], frame: bytes, skip: bytes) -> bytes:
        """:meth:`_run_pass`, or its output and counters again for inputs it has run (the key
        holds every input: registers, pass size, parameters, frame and skip bytes)."""
        if self._params is None or not self._params_valid or not self._replay_on:
            return self._run_pass(words, frame, skip)          # refused there (or replay off), never replayed
        key = (tuple(sorted(words.items())), self._pass_images, self._params, frame, skip)
        hit = self._replay.get(key)
        if hit is not None:
            self._replay.move_to_end(key)
            self.replayed += 1
            out, counts = hit
            for name, n in counts.items():
                self._counters[name] += n
            return out
        before = dict(self._counters)
        out = self._run_pass(words, frame, skip)
        counts = {name: self._counters[name] - before[name] for name in before}
        size = len(frame) + len(skip) + len(out)
        if size <= REPLAY_BYTES:
            self._replay[key] = (out, counts)
            self._replay_bytes += size
            while self._replay_bytes > REPLAY_BYTES:
                (_, _, _, f, sk), (o, _) = self._replay.popitem(last=False)
                self._replay_bytes -= len(f) + len(sk) + len(o)
        return out

    def _run_pass(self, words: dict[str, int], frame: bytes, skip: bytes = b"") -> bytes:
        env, e = self.envelope, self._sb
        u = {name: regmap.unpack(name, words[name]) for name in
             ("LAYER", "IN_C", "IN_HW", "OUT_C", "CONV_HW", "OUT_HW", "KERNEL", "STRIDE", "PAD", "DILATION", "POOL")}
        lay = u["LAYER"]
        if self._params is None or not self._params_valid:
            raise LiteflyError("engine model: START without a completed parameter load (PARAMS_VALID is 0)")
        params = np.frombuffer(self._params, np.uint8)
        ibeats = words.get("INDEX_BEATS", 0)
        if ibeats > env.index_beats:
            raise LiteflyError(f"engine model: INDEX_BEATS={ibeats} exceeds the index memory's {env.index_beats} beats")
        try:
            chain = factors_from_words(words, unpack_index(params, words["WEIGHT_BEATS"], ibeats, env.stream_bits))
        except ConfigError as exc:
            raise LiteflyError(f"engine model: {exc}") from None
        images = self._pass_images
        # the engine trusts the host's pass constants; a wrong one would give wrong windows there
        for name, want in pass_constants(words, e).items():
            if words.get(name, 0) != want:
                raise LiteflyError(f"engine model: pass constant {name}={words.get(name, 0)} does not match the "
                                   f"descriptor ({want}); write LayerDescriptor.register_words")
        for i, f in enumerate(chain):
            st = regmap.unpack(regmap.factor_reg(i, "STRIDES"), words.get(f"F{i}_STRIDES", 0))
            if f.kind == "debut" and (st["ST"], st["RT"]) != (f.s * f.t, f.r * f.t):
                raise LiteflyError(f"engine model: F{i}_STRIDES={st} does not match factor {f}")
        c, h, w = u["IN_C"]["C"], u["IN_HW"]["H"], u["IN_HW"]["W"]
        p = u["OUT_C"]["P"]
        hp, wp = u["OUT_HW"]["HP"], u["OUT_HW"]["WP"]
        kh, kw = u["KERNEL"]["KH"], u["KERNEL"]["KW"]
        sh, sw = u["STRIDE"]["SH"], u["STRIDE"]["SW"]
        ph, pw = u["PAD"]["PH"], u["PAD"]["PW"]
        dh, dw = u["DILATION"]["DH"], u["DILATION"]["DW"]
        pk, ps = (u["POOL"]["K"], u["POOL"]["S"]) if lay["POOL"] else (1, 1)
        if not chain or chain[0].q != kh * kw * c or chain[-1].p != p:
            raise LiteflyError(f"engine model: descriptor chain {[f.as_list() for f in chain]} does not match "
                               f"{kh}x{kw}x{c} -> {p}")
        if lay["PACKED"]:           # C bytes a pixel, back to back (the repacker's input)
            x = np.frombuffer(frame, np.int8)[:images * h * w * c].reshape(images, h, w, c).astype(np.int64)
        else:
            x = unpack_tensor(np.frombuffer(frame, np.uint8), (images, c, h, w), e).transpose(0, 2, 3, 1)
        weights, bias = unpack_layer_params(params, [f.params for f in chain], words["WEIGHT_BEATS"],
                                            p if lay["BIAS"] else 0, env.weight_bits, env.stream_bits, ibeats,
                                            chain, env.lane_rows)
        shifts = [regmap.unpack(regmap.factor_reg(i, "SHIFT"), words[f"F{i}_SHIFT"])["SHIFT"]
                  for i in range(len(chain))]
        n_idx, y_idx, x_idx = np.meshgrid(np.arange(images), np.arange(hp), np.arange(wp), indexing="ij")
        n_idx, y_idx, x_idx = n_idx.ravel(), y_idx.ravel(), x_idx.ravel()
        best = None
        for dy in range(pk):
            for dx in range(pk):
                cy, cx = (y_idx * ps + dy, x_idx * ps + dx) if lay["POOL"] else (y_idx, x_idx)
                cols = np.zeros((n_idx.size, kh * kw, c), dtype=np.int64)
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = cy * sh - ph + ky * dh, cx * sw - pw + kx * dw
                        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                        cols[ok, ky * kw + kx] = x[n_idx[ok], iy[ok], ix[ok]]
                y = x0 = cols.reshape(n_idx.size, kh * kw * c)
                for i, (f, wf) in enumerate(zip(chain, weights)):
                    acc = factor_forward(f, wf.reshape(f.compact_shape), factor_input(f, x0, y))
                    if i == len(chain) - 1 and bias is not None:
                        acc = acc + bias
                    y = requantize(acc, shifts[i], env.act_bits)
                if lay["RELU"] and not lay["RESIDUAL"]:
                    y = np.maximum(y, 0)
                best = y if best is None else np.maximum(best, y)
        if lay["RESIDUAL"]:     # the unloader: the skip (NHWC-E like the output) aligned and added, then ReLU
            if len(skip) != images * hp * wp * ceil_div(p, e) * e:
                raise LiteflyError(f"engine model: SKIP_BEATS={words.get('SKIP_BEATS', 0)} does not match "
                                   f"the {images}x{p}x{hp}x{wp} output")
            sk = unpack_tensor(np.frombuffer(skip, np.uint8), (images, p, hp, wp), e)
            al = regmap.unpack("SKIP", words.get("SKIP", 0))
            best = add_skip(best, sk.transpose(0, 2, 3, 1).reshape(best.shape), (al["M"], al["K"]), env.act_bits)
            if lay["RELU"]:
                best = np.maximum(best, 0)
        out = best.reshape(images, hp, wp, p).transpose(0, 3, 1, 2)
        pairs = chain_issue(chain, env.lane_rows)
        macs = pairs.issue
        positions = images * hp * wp
        cycles = words_pass_cycles(dict(words, IMAGES=images), env.lanes, e, macs, len(chain), p,
                                   env.window_generators, pairs, env.frame_word_beats)
        issue = ceil_div(positions, env.lanes) * (pk * pk if lay["POOL"] else 1) * macs
        self._counters["CYCLES"] += cycles
        self._counters["BUSY_CYCLES"] += issue
        self._counters["LOAD_CYCLES"] += images * h * w * ceil_div(c, e)
        self._counters["COLUMNS_DONE"] += positions
        return pack_tensor(out, e).tobytes()

"""The network engine's envelope and a layer's run-time descriptor (amaranth-free: the board
imports it). ``docs/engine.md`` describes the design these numbers drive.

* :class:`EngineEnvelope`: what is fixed when the Verilog is generated (lanes, stream width,
  numeric widths, memory depths), derived from every layer the engine must serve. Its hash is
  the ``CONFIG_HASH`` register and the bitstream registry's key.
* :class:`LayerDescriptor`: one :class:`~litefly.network.EngineStep` as register values
  (chain shapes, shifts excluded: they come with the parameters), its stream sizes and its
  cycle model. :meth:`EngineEnvelope.check_fits` refuses a layer that does not fit, naming
  the limit.

Tensors on the streams are int8 in **NHWC-E** order: image, row, column, then
``CW = ceil(C / E)`` beats of ``E = stream_bits / 8`` channels (channel ``k*E + j`` in byte
``j`` of beat ``k``; channels past ``C`` are zero). A layer's output has the same layout,
so it is the next layer's input as it stands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from litefly.chain import AnyFactor, Factor, SparseFactor
from litefly.config import FRAME_WORD_BEATS, STREAM_WIDTHS, WINDOW_GENERATORS, LayerConfig, NetworkConfig
from litefly.errors import ConfigError
from litefly.network import EngineStep, network_input_shape, plan_network

from . import regmap
from .cycles import (DRAIN_CYCLES, LOAD_LAG, WINDOW_SETUP, ChainIssue, PassGeometry, batch_cycles, chain_issue,
                     factor_issue, frame_ready, pass_cycles, pass_schedule, ring_arrival, ring_batches,
                     window_read_beats)

__all__ = ["EngineEnvelope", "LayerDescriptor", "envelope_words", "lane_rows", "weight_order", "weight_slots",
           "layer_weights_flat", "layer_weights_unflat", "DRAIN_CYCLES", "BIAS_CONTAINER_BITS",
           "INDEX_ENTRY_BITS",
           "ROW_END_BIT", "index_entries", "pass_constants", "ceil_div",
           "DEFAULT_FRAME_KIB", "factors_from_words", "batch_cycles", "pass_cycles", "WINDOW_SETUP"]

BIAS_CONTAINER_BITS = 32
INDEX_ENTRY_BITS = 16          # a sparse factor's entry in the index memory: column, row-end flag
ROW_END_BIT = 15               # the entry's last bit: this entry ends its row (columns are 15 bits)
MAX_SPARSE_COLUMNS = 1 << ROW_END_BIT
DEFAULT_FRAME_KIB = 64
MAX_POOL = 4
MAX_PASS_IMAGES = (1 << 16) - 1     # IMAGES is a 16-bit field
DMA_LENGTH_BITS = 26                # the AXI DMA's buffer length register (boards/vivado.py sets it)
DMA_MAX_BYTES = (1 << DMA_LENGTH_BITS) - 1      # one transfer: a pass's input or output


def envelope_words(lanes: int, stream_bits: int, macs_per_dsp: int = 1, window_generators: int = 1,
                   frame_beats: int | None = None, row_pairs: bool = False, row_quads: bool = False,
                   frame_word_beats: int = 1, row_octets: bool = False) -> str:
    """An engine envelope's options in words, as the CLI and the reports print them
    (``128 lanes, two lanes per multiplier, 4 window generators, 128-bit stream, 64 KiB frame buffer``)."""
    words = [f"{lanes} lanes"]
    if row_octets:
        words.append("eight rows per lane on four multipliers")
    elif row_quads:
        words.append("four rows per lane on two multipliers")
    elif row_pairs:
        words.append("two rows per multiplier")
    elif macs_per_dsp == 2:
        words.append("two lanes per multiplier")
    if window_generators > 1:
        words.append(f"{window_generators} window generators")
    words.append(f"{stream_bits}-bit stream")
    if frame_beats:
        words.append(f"{frame_beats * stream_bits // 8 // 1024:g} KiB frame buffer")
    if frame_word_beats > 1:
        words.append(f"{frame_word_beats} beats a frame word")
    return ", ".join(words)


#: The least share of a first layer's modelled cycles that folding its kernel rows on the host
#: must save (:meth:`EngineEnvelope.describe_network`).
FOLD_GAIN = 0.1


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class EngineEnvelope:
    """Generation parameters of one network engine (everything its Verilog depends on)."""

    name: str
    lanes: int
    stream_bits: int
    act_bits: int
    weight_bits: int
    max_factors: int
    max_q: int                 # largest chain input (IN memory depth per half, in elements)
    max_p: int                 # largest chain output (OUT memory)
    max_work: int              # largest intermediate width (WORK memory)
    weight_beats: int          # weight memory depth
    frame_beats: int           # frame buffer depth
    acc_bits: int
    macs_per_dsp: int = 1      # 2: two lanes share one multiplier (one weight, two activations)
    index_beats: int = 0       # index memory depth (sparse factors); 0: DeBut factors only
    residual: bool = False     # residual adds (skip FIFO and the unloader's add)
    window_generators: int = 1  # window generators forming a batch's windows in parallel (1, 2 or 4)
    row_pairs: bool = False    # with macs_per_dsp=2: a multiplier's two MACs are two rows of one lane
    row_quads: bool = False    # with row_pairs: two multipliers per lane, four rows of a block an issue
    frame_word_beats: int = 1  # beats a frame-buffer word holds (1, 2, 4): a window read takes up to that many
    row_octets: bool = False   # with row_quads: four multipliers per lane, eight rows of a block an issue

    def __post_init__(self) -> None:
        if self.stream_bits not in STREAM_WIDTHS:
            raise ConfigError(f"engine: stream_bits={self.stream_bits} must be one of "
                              f"{', '.join(map(str, STREAM_WIDTHS))}")
        if not 2 <= self.act_bits <= 8:
            raise ConfigError(f"engine: act_bits={self.act_bits} must be 2..8 (tensors travel as int8)")
        if self.weight_bits not in (2, 4, 8, 16):
            raise ConfigError(f"engine: weight_bits={self.weight_bits} must be 2, 4, 8 or 16 "
                              f"(a whole number of weights per beat)")
        e = self.elems_per_beat
        if self.lanes < e or self.lanes % e:
            raise ConfigError(f"engine: {self.lanes} lanes is not a positive multiple of {e} "
                              f"(elements per {self.stream_bits}-bit beat)")
        for name in ("max_factors", "max_q", "max_p", "max_work", "weight_beats", "frame_beats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"engine: {name}={getattr(self, name)} must be at least 1")
        if self.index_beats < 0:
            raise ConfigError(f"engine: index_beats={self.index_beats} must be at least 0")
        if self.macs_per_dsp not in (1, 2):
            raise ConfigError(f"engine: macs_per_dsp={self.macs_per_dsp!r} must be 1 or 2")
        if self.window_generators not in WINDOW_GENERATORS:
            raise ConfigError(f"engine: window_generators={self.window_generators!r} must be one of "
                              f"{', '.join(map(str, WINDOW_GENERATORS))}")
        if self.row_pairs and self.macs_per_dsp != 2:
            raise ConfigError(f"engine: row_pairs packs a row pair's two weights into one multiplier: it needs "
                              f"macs_per_dsp=2 (got {self.macs_per_dsp})")
        if self.row_quads and (not self.row_pairs or self.weights_per_beat < 4):
            raise ConfigError(f"engine: row_quads gives a lane two row-pair multipliers: it needs row_pairs "
                              f"(got {self.row_pairs}) and four weights per beat (got {self.weights_per_beat})")
        if self.row_octets and (not self.row_quads or self.weights_per_beat < 8):
            raise ConfigError(f"engine: row_octets gives a lane four row-pair multipliers: it needs row_quads "
                              f"(got {self.row_quads}) and eight weights per beat (got {self.weights_per_beat})")
        if self.frame_word_beats not in FRAME_WORD_BEATS:
            raise ConfigError(f"engine: frame_word_beats={self.frame_word_beats!r} must be one of "
                              f"{', '.join(map(str, FRAME_WORD_BEATS))}")
        if self.frame_beats % self.frame_word_beats:
            raise ConfigError(f"engine: frame_beats={self.frame_beats} must be a multiple of frame_word_beats="
                              f"{self.frame_word_beats} (beats a frame-buffer word)")
        if self.macs_per_dsp == 2 and self.weight_bits > 8:
            raise ConfigError(f"engine: macs_per_dsp=2 packs two products of 8-bit operands into one "
                              f"multiplier; weight_bits={self.weight_bits} is wider")
        if self.max_factors > 255 or max(self.max_q, self.max_p) >= 1 << 16:
            raise ConfigError(f"engine: at most 255 factors and 65,535 elements per column "
                              f"(got {self.max_factors}, {max(self.max_q, self.max_p)})")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def for_layers(cls, name: str, layers: Sequence[LayerConfig], multipliers: int | None = None,
                   stream_bits: int | None = None, frame_beats: int | None = None,
                   macs_per_dsp: int = 1, residual: bool = False,
                   window_generators: int = 1, row_pairs: bool = False,
                   row_quads: bool = False, frame_word_beats: int = 1,
                   row_octets: bool = False) -> "EngineEnvelope":
        """The smallest envelope serving ``layers`` (lanes from ``multipliers``, default the first layer's)."""
        if not layers:
            raise ConfigError(f"engine {name!r}: no layers to serve")
        first = layers[0]
        for lay in layers[1:]:
            if (lay.format.act_bits, lay.format.weight_bits) != (first.format.act_bits, first.format.weight_bits):
                raise ConfigError(f"layer {lay.name!r} has {lay.format.act_bits}/{lay.format.weight_bits}-bit "
                                  f"activations/weights, layer {first.name!r} {first.format.act_bits}/"
                                  f"{first.format.weight_bits}: one engine serves one numeric format")
        sb = stream_bits or first.engine.stream_bits
        mult = multipliers or first.engine.multipliers
        e = sb // 8
        if mult < e:
            raise ConfigError(f"engine: multipliers={mult} is below one {sb}-bit beat of {e} elements")
        wpb = sb // first.format.weight_bits
        acc = max(lay.format.acc_bits(f, last=(i == len(lay.chain) - 1))
                  for lay in layers for i, f in enumerate(lay.chain))
        return cls(
            name=name, lanes=(mult // e) * e, stream_bits=sb, act_bits=first.format.act_bits,
            weight_bits=first.format.weight_bits, max_factors=max(len(l.chain) for l in layers),
            max_q=max(l.chain_in for l in layers), max_p=max(l.chain_out for l in layers),
            max_work=max([f.p for l in layers for f in l.chain[:-1]] or [1]),
            weight_beats=max(ceil_div(weight_slots(l.chain, lane_rows(row_pairs, row_quads, row_octets)), wpb)
                             for l in layers),
            frame_beats=ceil_div(frame_beats or DEFAULT_FRAME_KIB * 1024 // e, frame_word_beats) * frame_word_beats,
            acc_bits=acc, macs_per_dsp=macs_per_dsp,
            index_beats=max(_index_beats(l.chain, sb) for l in layers), residual=bool(residual),
            window_generators=window_generators, row_pairs=bool(row_pairs), row_quads=bool(row_quads),
            frame_word_beats=frame_word_beats, row_octets=bool(row_octets))

    @classmethod
    def for_network(cls, network: NetworkConfig, input_size: tuple[int, int] | None = None,
                    multipliers: int | None = None, stream_bits: int | None = None,
                    frame_kib: int | None = None, macs_per_dsp: int | None = None,
                    window_generators: int | None = None, board: str | None = None,
                    row_pairs: bool | None = None, row_quads: bool | None = None,
                    frame_word_beats: int | None = None, row_octets: bool | None = None) -> "EngineEnvelope":
        """The envelope of ``network`` on ``board`` (a board name, or ``None``: no board).

        Key by key: the argument, else the network's ``engine:`` settings for that board
        (:meth:`~litefly.config.NetworkEngine.for_board`: its ``boards:`` entry, its own value,
        the board's default envelope), else the layers'. The board's default packing (two MACs per
        DSP, row pairs, row quads, row octets) applies to weights of 8 bits or fewer (row octets: where
        a beat holds eight weights); ``row_pairs`` set by the network or the argument implies two MACs
        per DSP, ``row_quads`` implies row pairs, ``row_octets`` row quads, and ``macs_per_dsp=1`` turns
        the board's row pairs, quads and octets off. The frame buffer holds the largest layer input of one image at the network's input
        size (at least ``DEFAULT_FRAME_KIB`` KiB) unless ``frame_kib`` says otherwise.
        """
        if multipliers is not None and multipliers < 1:
            raise ConfigError(f"engine: multipliers={multipliers} must be at least 1")
        eng = network.engine.for_board(board)
        own = network.engine.for_board(board, board_default=False)     # the network's own settings
        layers = network.layers
        if (macs_per_dsp is None and eng.macs_per_dsp == 2 and layers[0].format.weight_bits > 8
                and own.macs_per_dsp is None):
            macs_per_dsp = 1
            row_pairs = False if row_pairs is None else row_pairs
            row_quads = False if row_quads is None else row_quads
            row_octets = False if row_octets is None else row_octets
        if row_octets is None:
            row_octets = own.row_octets
        if row_quads is None:
            row_quads = own.row_quads
        if row_octets and row_quads is None:
            row_quads = True                  # a row octet is two row quads
        if row_pairs is None:
            row_pairs = own.row_pairs
        if row_quads and row_pairs is None:
            row_pairs = True                  # a row quad is two row pairs
        if row_pairs and macs_per_dsp is None and own.macs_per_dsp is None:
            macs_per_dsp = 2                  # a row pair is a multiplier's two MACs
        if row_pairs is None:                 # the board's default, where the packing allows it
            row_pairs = bool(eng.row_pairs) and (macs_per_dsp or eng.macs_per_dsp or 1) == 2
        if row_quads is None:                 # the board's default, where row pairs are on
            row_quads = bool(eng.row_quads) and row_pairs
        multipliers = multipliers or eng.multipliers
        stream_bits = stream_bits or eng.stream_bits
        frame_kib = frame_kib or eng.frame_kib
        sb = stream_bits or layers[0].engine.stream_bits
        if row_octets is None:                # the board's default, where quads are on and a beat holds 8 weights
            row_octets = bool(eng.row_octets) and bool(row_quads) and sb // layers[0].format.weight_bits >= 8
        e = sb // 8
        if frame_kib:
            frame = frame_kib * 1024 // e
        else:
            frame = DEFAULT_FRAME_KIB * 1024 // e
            size = input_size or network.input_size
            if size is not None or layers[0].kind == "linear":
                steps = plan_network(network, network_input_shape(network, size))
                frame = max([frame] + [_in_beats(s, e) for s in steps])
        residual = any(getattr(item, "op", None) == "add" for item in network.steps)
        return cls.for_layers(network.name, layers, multipliers, sb, frame, macs_per_dsp or eng.macs_per_dsp or 1,
                              residual, window_generators or eng.window_generators or 1, row_pairs,
                              bool(row_quads), frame_word_beats or eng.frame_word_beats or 1, bool(row_octets))

    # -- widths and derived sizes -------------------------------------------------------------
    @property
    def elems_per_beat(self) -> int:
        return self.stream_bits // 8

    @property
    def ring(self) -> bool:
        """Whether the frame buffer runs as a ring (its depth a power of two): a pass may then stream
        more input than it holds, each beat overwriting one its windows have read
        (:meth:`LayerDescriptor.ring_fits`)."""
        return self.frame_beats >= 2 and self.frame_beats & (self.frame_beats - 1) == 0

    @property
    def weights_per_beat(self) -> int:
        return self.stream_bits // self.weight_bits

    @property
    def biases_per_beat(self) -> int:
        return self.stream_bits // BIAS_CONTAINER_BITS

    @property
    def bias_beats(self) -> int:
        return ceil_div(self.max_p, self.biases_per_beat)

    @property
    def entries_per_beat(self) -> int:
        """Sparse-factor entries per index-memory beat."""
        return self.stream_bits // INDEX_ENTRY_BITS

    @property
    def multipliers(self) -> int:
        return self.lanes

    def packing(self) -> dict[str, Any]:
        """The settings :meth:`for_network` takes from this engine for another engine of the same
        kind (another network, or another lane count): packing, stream width, window generators and
        frame words; the lanes, the frame buffer and the board are the caller's."""
        return {"macs_per_dsp": self.macs_per_dsp, "stream_bits": self.stream_bits,
                "window_generators": self.window_generators, "row_pairs": self.row_pairs,
                "row_quads": self.row_quads, "frame_word_beats": self.frame_word_beats,
                "row_octets": self.row_octets}

    @property
    def lane_rows(self) -> int:
        """Rows of a block a lane computes an issue: 8 with row octets, 4 with row quads, 2 with row
        pairs, else 1."""
        return lane_rows(self.row_pairs, self.row_quads, self.row_octets)

    @property
    def dsps(self) -> int:
        """Multipliers (DSP slices): one per two rows a lane computes with row pairs/quads, else one per
        ``macs_per_dsp`` lanes."""
        return self.lanes * self.lane_rows // 2 if self.row_pairs else self.lanes // self.macs_per_dsp

    @property
    def macs_per_cycle(self) -> int:
        """The MAC slots of one cycle: a MAC per lane and row (:attr:`lane_rows`)."""
        return self.lanes * self.lane_rows

    @property
    def registers(self) -> list[regmap.Register]:
        return regmap.register_map(self.max_factors)

    @property
    def axil_addr_bits(self) -> int:
        return regmap.address_bits(self.max_factors)

    def capability_words(self) -> dict[str, int]:
        """The read-only identity/capability registers' values."""
        return {
            "ID": regmap.ID_MAGIC,
            "VERSION": regmap.pack("VERSION", {"MAJOR": regmap.VERSION[0], "MINOR": regmap.VERSION[1]}),
            "CONFIG_HASH": self.hash32,
            "LANES": self.lanes,
            "INFO": regmap.pack("INFO", {"STREAM_BYTES": self.stream_bits // 8, "ACT_BITS": self.act_bits,
                                         "WEIGHT_BITS": self.weight_bits, "MAX_FACTORS": self.max_factors}),
            "CAP_DEPTHS": regmap.pack("CAP_DEPTHS", {"MAX_Q": self.max_q, "MAX_P": self.max_p}),
            "CAP_WORK": self.max_work,
            "CAP_PARAM_BEATS": regmap.pack("CAP_PARAM_BEATS", {"WEIGHT_BEATS": self.weight_beats,
                                                               "ACC_BITS": self.acc_bits}),
            "CAP_FRAME_BEATS": self.frame_beats,
            "CAP_INDEX_BEATS": self.index_beats,
            "CAP_FEATURES": regmap.pack("CAP_FEATURES", {"RESIDUAL": int(self.residual),
                                                         "MACS_PER_DSP": self.macs_per_dsp,
                                                         "WINDOWS": self.window_generators,
                                                         "ROW_PAIRS": int(self.row_pairs),
                                                         "ROW_QUADS": int(self.row_quads),
                                                         "FRAME_WORD_BEATS": self.frame_word_beats,
                                                         "INTERLEAVED_QUADS": int(self.row_quads),
                                                         "ROW_OCTETS": int(self.row_octets)}),
        }

    # -- identity ---------------------------------------------------------------------------------
    def hardware_dict(self) -> dict[str, Any]:
        """What the Verilog depends on; parameters at their defaults are left out (``macs_per_dsp``
        1, ``index_beats`` 0, ``residual`` false), so adding a parameter keeps every existing engine's hash."""
        d = asdict(self)
        d.pop("name")
        if d["macs_per_dsp"] == 1:
            d.pop("macs_per_dsp")
        if d["index_beats"] == 0:
            d.pop("index_beats")
        if not d["residual"]:
            d.pop("residual")
        if d["window_generators"] == 1:
            d.pop("window_generators")
        if d["frame_word_beats"] == 1:
            d.pop("frame_word_beats")
        for flag in ("row_pairs", "row_quads", "row_octets"):
            if not d[flag]:
                d.pop(flag)
        if self.row_quads:
            # a row-quad engine issues interleaved quads (cycles.factor_issue) and orders its weights
            # for them: one built before is another engine
            d["interleaved_quads"] = True
        d["interface_version"] = list(regmap.VERSION)
        return d

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.hardware_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def hash32(self) -> int:
        return int(self.config_hash[:8], 16)

    @property
    def words(self) -> str:
        """The envelope's options in words (:func:`envelope_words`)."""
        return envelope_words(self.lanes, self.stream_bits, self.macs_per_dsp, self.window_generators,
                              self.frame_beats, self.row_pairs, self.row_quads, self.frame_word_beats, self.row_octets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineEnvelope":
        names = [f for f in cls.__dataclass_fields__]
        missing = [n for n in names if n not in data and n not in ("macs_per_dsp", "index_beats", "residual",
                                                                           "window_generators", "row_pairs",
                                                                           "row_quads", "frame_word_beats",
                                                                           "row_octets")]
        if missing:
            raise ConfigError(f"engine envelope: missing {', '.join(missing)}")
        return cls(**{n: data[n] for n in names if n in data})

    # -- layers -------------------------------------------------------------------------------------
    def describe(self, step: EngineStep, packed_input: bool = False) -> "LayerDescriptor":
        """The descriptor of ``step`` on this engine; :class:`ConfigError` naming the limit if it does not fit.

        ``packed_input``: the step's input arrives packed (``C`` bytes a pixel, see
        :meth:`can_pack_input`), as the host sends the network's input."""
        self.check_fits(step)
        if packed_input and not self.can_pack_input(step):
            c, h, w = step.in_shape
            raise ConfigError(f"layer {step.name!r}: a packed {c}x{h}x{w} input ({h * w * c} bytes an image) is not "
                              f"a whole number of {self.elems_per_beat}-byte beats")
        return LayerDescriptor(self, step, packed_input)

    def describe_network(self, steps: Sequence[EngineStep]) -> list["LayerDescriptor"]:
        """Every step's descriptor, the first one's input packed where that saves bytes (the one
        tensor the host makes; every later input is the engine's own NHWC-E output)."""
        return [self._host_input(st) if k == 0 else self.describe(st) for k, st in enumerate(steps)]

    def describe_host_input(self, step: EngineStep) -> "LayerDescriptor":
        """The descriptor of ``step`` with its input made by the host as it is (not folded):
        packed where that saves bytes (:meth:`can_pack_input`)."""
        return self.describe(step, packed_input=self.can_pack_input(step))

    def _host_input(self, step: EngineStep) -> "LayerDescriptor":
        """The descriptor of a step whose input the host makes: packed where that saves bytes, and
        with its kernel rows folded into the channels (:meth:`EngineStep.row_folded`) where the
        folded step fits and the cycle model gives it at least :data:`FOLD_GAIN` fewer cycles an
        image (a few input channels: the window generator reads a pixel a cycle, a folded row a
        cycle), over a pass of as many images as the frame buffer holds of both. The host writes
        ``KW`` times the input's bytes when it folds, so a smaller gain is not taken."""
        plain = self.describe_host_input(step)
        folded = step.row_folded()
        if folded is None:
            return plain
        try:
            desc = self.describe_host_input(folded)
        except ConfigError:
            return plain
        n = min(plain.images_per_pass, desc.images_per_pass)
        return desc if desc.pass_cycles(n) <= (1 - FOLD_GAIN) * plain.pass_cycles(n) else plain

    def can_pack_input(self, step: EngineStep) -> bool:
        """Whether sending ``step``'s input packed saves bytes and is allowed: channels not a
        multiple of a beat, and each image a whole number of beats (so passes start on a beat)."""
        c, h, w = step.in_shape
        return c % self.elems_per_beat != 0 and (h * w * c) % self.elems_per_beat == 0

    def check_fits(self, step: EngineStep) -> None:
        lay = step.layer
        where = f"layer {lay.name!r} does not fit engine {self.name!r} (0x{self.hash32:08x})"
        fmt = lay.format
        if (fmt.act_bits, fmt.weight_bits) != (self.act_bits, self.weight_bits):
            raise ConfigError(f"{where}: it has {fmt.act_bits}/{fmt.weight_bits}-bit activations/weights, the "
                              f"engine {self.act_bits}/{self.weight_bits}")
        checks = [
            ("factor count", len(lay.chain), self.max_factors, "MAX_FACTORS"),
            ("chain input q_1", lay.chain_in, self.max_q, "MAX_Q"),
            ("chain output p_N", lay.chain_out, self.max_p, "MAX_P"),
            ("intermediate width", max([f.p for f in lay.chain[:-1]] or [0]), self.max_work, "CAP_WORK"),
            ("sparse index beats", _index_beats(lay.chain, self.stream_bits), self.index_beats, "CAP_INDEX_BEATS"),
            ("weight beats", ceil_div(weight_slots(lay.chain, self.lane_rows), self.weights_per_beat),
             self.weight_beats, "WEIGHT_BEATS"),
            ("accumulator bits", max(fmt.acc_bits(f, i == len(lay.chain) - 1) for i, f in enumerate(lay.chain)),
             self.acc_bits, "ACC_BITS"),
        ]
        for what, need, have, reg in checks:
            if need > have:
                raise ConfigError(f"{where}: its {what} {need} exceeds the engine's {reg} = {have}")
        # an image larger than the frame buffer streams through it where it runs as a ring
        need = _in_beats(step, self.elems_per_beat)
        if need > self.frame_beats and not (self.ring and LayerDescriptor(self, step).ring_fits(1)):
            ring = (" (a ring, but its windows span more than it holds)" if self.ring and step.skip is None
                    else "")
            raise ConfigError(f"{where}: its input feature map of one image (beats) {need} exceeds the engine's "
                              f"CAP_FRAME_BEATS = {self.frame_beats}{ring}")
        if step.skip is not None and not self.residual:
            raise ConfigError(f"{where}: it adds {step.skip!r}'s output (a residual add), and the engine was "
                              f"generated without residual adds (CAP_FEATURES.RESIDUAL = 0)")
        for i, f in enumerate(lay.chain):
            if f.kind == "sparse" and f.q > MAX_SPARSE_COLUMNS:
                raise ConfigError(f"{where}: sparse factor {i + 1} has {f.q} columns; an index entry holds "
                                  f"columns 0..{MAX_SPARSE_COLUMNS - 1}")
        dims = list(step.in_shape) + list(step.kernel) + list(step.conv_shape) + [lay.chain_out]
        if max(dims) >= 1 << 16:
            raise ConfigError(f"{where}: a size of {max(dims)} does not fit the 16-bit descriptor fields")
        if step.pool is not None and not (1 <= step.pool[0] <= MAX_POOL and 1 <= step.pool[1] <= MAX_POOL):
            raise ConfigError(f"{where}: pooling {step.pool} is outside 1..{MAX_POOL}")


def pass_constants(words: Mapping[str, int], elems_per_beat: int) -> dict[str, int]:
    """The pass constants (``regmap.PASS_CONSTANTS``) of the descriptor ``words``: the products the
    window generator and the loader use, computed here so the engine needs no multiplier for them."""
    u = {name: regmap.unpack(name, words.get(name, 0)) for name in
         ("LAYER", "IN_C", "IN_HW", "OUT_HW", "KERNEL", "STRIDE", "PAD", "DILATION", "POOL")}
    cw = ceil_div(u["IN_C"]["C"], elems_per_beat)
    h, w = u["IN_HW"]["H"], u["IN_HW"]["W"]
    ps = u["POOL"]["S"] if u["LAYER"]["POOL"] else 1
    xstep, ystep = ps * u["STRIDE"]["SW"], ps * u["STRIDE"]["SH"]
    hpwp = u["OUT_HW"]["HP"] * u["OUT_HW"]["WP"]
    images = int(words.get("IMAGES", 0))
    wcw = w * cw
    return {
        "CW": cw, "HPWP": hpwp, "XSTEP": xstep, "YSTEP": ystep, "W_CW": wcw,
        "DW_CW": u["DILATION"]["DW"] * cw, "SW_CW": u["STRIDE"]["SW"] * cw, "PW_CW": u["PAD"]["PW"] * cw,
        "NPOS": hpwp * images, "HW_CW": h * wcw, "XSTEP_CW": xstep * cw, "YSTEP_WCW": ystep * wcw,
        "DH_WCW": u["DILATION"]["DH"] * wcw, "SH_WCW": u["STRIDE"]["SH"] * wcw, "PH_WCW": u["PAD"]["PH"] * wcw,
        "FRAME_BEATS": images * h * wcw, "LANE_BEATS": u["KERNEL"]["KH"] * u["KERNEL"]["KW"] * cw,
    }


def index_entries(chain: Sequence[AnyFactor]) -> np.ndarray:
    """The index memory's entries of a chain: each sparse factor's columns in row order, the row's
    last entry flagged by ``ROW_END_BIT`` (DeBut factors have none)."""
    parts = []
    for f in chain:
        if f.kind == "sparse":
            ends = np.zeros(f.params, dtype=np.int64)
            ends[f.indptr[1:] - 1] = 1
            parts.append(f.indices | (ends << ROW_END_BIT))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def lane_rows(row_pairs: bool, row_quads: bool = False, row_octets: bool = False) -> int:
    """Rows a lane computes an issue on an engine with these options (``EngineEnvelope.lane_rows``)."""
    return 8 if row_octets else 4 if row_quads else 2 if row_pairs else 1


def weight_order(chain: Sequence[AnyFactor], lane_rows: int = 1) -> list[tuple[int, int, bool]]:
    """Per factor: where its weights start in the weight memory (in weights), how many rows an
    issue it computes and whether they are an interleaved quad (:func:`~litefly.hw.cycles.factor_issue`).
    Factors follow each other in chain order, each in its compact ``(g, t, r, s)`` order; a factor of
    ``n > 1`` rows an issue is in ``(g, t, r/n, s, n)`` order (an issue's ``n`` weights for one
    column side by side, one read of one word), an interleaved quad in ``(g, t/2, r/2, s, 2, 2)``
    order (block ``u``'s row pair, then block ``u + 1``'s), and starts at an index divisible by
    ``n`` (zero weights pad the factor before it)."""
    out, at = [], 0
    for i, f in enumerate(chain):
        n, inter = factor_issue(f, lane_rows, i == 0)
        at += -at % n
        out.append((at, n, inter))
        at += f.params
    return out


def weight_slots(chain: Sequence[AnyFactor], lane_rows: int = 1) -> int:
    """Weights a layer's weight memory holds, pads included (:func:`weight_order`)."""
    order = weight_order(chain, lane_rows)
    return order[-1][0] + chain[-1].params if order else 0


def layer_weights_flat(chain: Sequence[AnyFactor], weights: Sequence[np.ndarray], lane_rows: int = 1) -> np.ndarray:
    """A layer's weights (each factor's compact array) in weight-memory order (:func:`weight_order`)."""
    flat = np.zeros(weight_slots(chain, lane_rows), dtype=np.int64)
    for f, w, (at, n, inter) in zip(chain, weights, weight_order(chain, lane_rows)):
        w = np.asarray(w, dtype=np.int64)
        if inter:
            g, t, r, s = f.compact_shape
            w = w.reshape(g, t // 2, 2, r // 2, 2, s).transpose(0, 1, 3, 5, 2, 4)
        elif n > 1:
            g, t, r, s = f.compact_shape
            w = w.reshape(g, t, r // n, n, s).transpose(0, 1, 2, 4, 3)
        flat[at:at + f.params] = w.ravel()
    return flat


def layer_weights_unflat(chain: Sequence[AnyFactor], flat: np.ndarray, lane_rows: int = 1) -> list[np.ndarray]:
    """Inverse of :func:`layer_weights_flat`: each factor's flat compact ``(g, t, r, s)`` weights."""
    out = []
    for f, (at, n, inter) in zip(chain, weight_order(chain, lane_rows)):
        w = np.asarray(flat[at:at + f.params], dtype=np.int64)
        if inter:
            g, t, r, s = f.compact_shape
            w = w.reshape(g, t // 2, r // 2, s, 2, 2).transpose(0, 1, 4, 2, 5, 3)
        elif n > 1:
            g, t, r, s = f.compact_shape
            w = w.reshape(g, t, r // n, s, n).transpose(0, 1, 2, 4, 3)
        out.append(w.ravel())
    return out


def _index_beats(chain: Sequence[AnyFactor], stream_bits: int) -> int:
    return ceil_div(sum(f.params for f in chain if f.kind == "sparse"), stream_bits // INDEX_ENTRY_BITS)


def _in_beats(step: EngineStep, e: int) -> int:
    c, h, w = step.in_shape
    return h * w * ceil_div(c, e)


@dataclass(frozen=True)
class LayerDescriptor:
    """One engine step as the engine sees it: register values, stream sizes and cycle model."""

    envelope: EngineEnvelope
    step: EngineStep
    packed_input: bool = False            # input stream packed NHWC (C bytes a pixel), repacked on chip

    @property
    def layer(self) -> LayerConfig:
        return self.step.layer

    # -- stream sizes ------------------------------------------------------------------------------
    @property
    def in_cw(self) -> int:
        """Beats per input pixel."""
        return ceil_div(self.step.in_shape[0], self.envelope.elems_per_beat)

    @property
    def out_cw(self) -> int:
        return ceil_div(self.layer.chain_out, self.envelope.elems_per_beat)

    @property
    def in_beats_per_image(self) -> int:
        _, h, w = self.step.in_shape
        return h * w * self.in_cw

    @property
    def in_bytes_per_image(self) -> int:
        """Input stream bytes of one image: packed ``H*W*C``, or NHWC-E beats."""
        c, h, w = self.step.in_shape
        return h * w * c if self.packed_input else self.in_beats_per_image * self.bytes_per_beat

    @property
    def out_positions_per_image(self) -> int:
        _, hp, wp = self.step.out_shape
        return hp * wp

    @property
    def out_beats_per_image(self) -> int:
        return self.out_positions_per_image * self.out_cw

    @property
    def bytes_per_beat(self) -> int:
        return self.envelope.stream_bits // 8

    @property
    def images_per_pass(self) -> int:
        """Most images whose input feature maps the frame buffer holds at once (capped at 65,535)."""
        return max(1, min(self.envelope.frame_beats // self.in_beats_per_image, MAX_PASS_IMAGES))

    def pass_images(self, batch: int) -> int:
        """Images one pass takes from a batch of ``batch``: the whole batch (at most 65,535, and what
        one DMA transfer carries each way) where the frame buffer, run as a ring, streams it
        (:meth:`ring_fits`), else as many as it holds."""
        n = min(batch, MAX_PASS_IMAGES,
                max(1, DMA_MAX_BYTES // max(self.in_bytes_per_image, self.out_beats_per_image * self.bytes_per_beat)))
        return n if n <= self.images_per_pass or self.ring_fits(n) else min(self.images_per_pass, batch)

    def ring_fits(self, images: int) -> bool:
        """Whether a pass of ``images`` images may stream more input than the frame buffer holds.

        The loader takes a beat only while it is within ``frame_beats`` of the window generators'
        release (their batch's lowest beat), so a beat overwrites only beats they have read. Per
        batch ``b`` (:func:`~litefly.hw.cycles.ring_batches`: release ``R_b``, highest beat read
        ``top_b``), with ``F = frame_beats``:

        * the first two batches read below ``F``, and batch ``b`` below ``R_(b-1) + F``: its beats
          may be taken from the start of the batch before it (no wait for a release, no deadlock);
        * the loader, one beat a cycle, held at each batch's release until the batch before it
          has started its last phase's issue (:func:`~litefly.hw.cycles.ring_arrival`, a bound on
          when the generators publish it), still brings every batch-phase's beats by the issue
          the cycle model gives it without the ring, and the last beat before the pass's end:
          the ring never holds a read back, so the model stays exact (a window that waits, waits
          as long as without the ring). Residual passes keep their whole frame (their skip
          follows it on the stream).
        """
        env = self.envelope
        if not env.ring or self.step.skip is not None:
            return False
        geom = self.geometry(images)
        release, top = ring_batches(geom, env.lanes)
        f = env.frame_beats
        if top[:2].max() >= f or np.any(top[1:] >= release[:-1] + f):
            return False
        issue, total = pass_schedule(**self.model_inputs(images),
                                     ready=frame_ready(geom, env.lanes, env.window_generators))
        arrival = ring_arrival(release, self.phases, issue, f, geom.images * geom.h * geom.w * geom.cw)
        held = frame_ready(geom, env.lanes, env.window_generators, arrival=arrival)
        return bool(np.all(held <= np.asarray(issue)) and arrival[-1] + LOAD_LAG + 4 <= total)

    @property
    def weight_beats(self) -> int:
        return ceil_div(weight_slots(self.layer.chain, self.envelope.lane_rows), self.envelope.weights_per_beat)

    @property
    def issue(self) -> ChainIssue:
        """The chain's issue cycles per batch-phase (row pairs and quads divide a multi-row factor's)."""
        return chain_issue(self.layer.chain, self.envelope.lane_rows)

    @property
    def bias_beats(self) -> int:
        return ceil_div(self.layer.chain_out, self.envelope.biases_per_beat) if self.layer.format.bias else 0

    def skip_beats(self, images: int) -> int:
        """Beats of the skip tensor a residual pass of ``images`` images receives after its frame (0 without)."""
        return images * self.out_beats_per_image if self.step.skip is not None else 0

    @property
    def index_beats(self) -> int:
        return _index_beats(self.layer.chain, self.envelope.stream_bits)

    @property
    def param_beats(self) -> int:
        return self.weight_beats + self.index_beats + self.bias_beats

    @property
    def phases(self) -> int:
        return 1 if self.step.pool is None else self.step.pool[0] ** 2

    # -- registers ---------------------------------------------------------------------------------
    def register_words(self, images: int) -> dict[str, int]:
        """``{register name: word}`` of the descriptor for a pass of ``images`` images (shifts excluded)."""
        st, lay = self.step, self.layer
        c, h, w = st.in_shape
        p, ho, wo = st.conv_shape
        _, hp, wp = st.out_shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = st.kernel, st.stride, st.padding, st.dilation
        pk, ps = st.pool or (1, 1)
        if not 1 <= images <= self.images_per_pass and not (1 <= images <= MAX_PASS_IMAGES and self.ring_fits(images)):
            raise ConfigError(f"layer {lay.name!r}: {images} images per pass, the frame buffer holds 1.."
                              f"{self.images_per_pass} (and cannot stream {images} as a ring)")
        words = {
            "LAYER": regmap.pack("LAYER", {"FACTORS": len(lay.chain), "BIAS": int(lay.format.bias),
                                           "RELU": int(st.relu), "POOL": int(st.pool is not None),
                                           "PACKED": int(self.packed_input), "RESIDUAL": int(st.skip is not None)}),
            "IN_C": regmap.pack("IN_C", c),
            "IN_HW": regmap.pack("IN_HW", {"H": h, "W": w}),
            "OUT_C": regmap.pack("OUT_C", p),
            "CONV_HW": regmap.pack("CONV_HW", {"HO": ho, "WO": wo}),
            "OUT_HW": regmap.pack("OUT_HW", {"HP": hp, "WP": wp}),
            "KERNEL": regmap.pack("KERNEL", {"KH": kh, "KW": kw}),
            "STRIDE": regmap.pack("STRIDE", {"SH": sh, "SW": sw}),
            "PAD": regmap.pack("PAD", {"PH": ph, "PW": pw}),
            "DILATION": regmap.pack("DILATION", {"DH": dh, "DW": dw}),
            "POOL": regmap.pack("POOL", {"K": pk, "S": ps}),
            "IMAGES": images,
            "WEIGHT_BEATS": self.weight_beats,
            "BIAS_BEATS": self.bias_beats,
            "INDEX_BEATS": self.index_beats,
            "SKIP_BEATS": self.skip_beats(images),
        }
        words.update(pass_constants(words, self.envelope.elems_per_beat))
        for i, f in enumerate(lay.chain):
            words[f"F{i}_STRIDES"] = 0 if f.kind == "sparse" else regmap.pack(
                regmap.factor_reg(i, "STRIDES"), {"ST": f.s * f.t, "RT": f.r * f.t})
            if f.kind == "sparse":
                words[f"F{i}_RS"] = words[f"F{i}_TG"] = 0
                split = lay.chain_in if f.concat else 0
                words[f"F{i}_SPARSE"] = regmap.pack(regmap.factor_reg(i, "SPARSE"), {"ROWS": f.p, "SPLIT": split})
            else:
                words[f"F{i}_RS"] = regmap.pack(regmap.factor_reg(i, "RS"), {"R": f.r, "S": f.s})
                words[f"F{i}_TG"] = regmap.pack(regmap.factor_reg(i, "TG"), {"T": f.t, "G": f.blocks})
                words[f"F{i}_SPARSE"] = 0
        return words

    # -- cycle model ---------------------------------------------------------------------------------
    def model_inputs(self, images: int) -> dict[str, int]:
        """The quantities :func:`pass_cycles` needs, for a pass of ``images`` images."""
        geom, issue = self.geometry(images), self.issue
        return {"lanes": self.envelope.lanes, "windows": self.envelope.window_generators,
                "macs": issue.issue, "factors": len(self.layer.chain),
                "pair_drains": issue.pair_drains, "pair_tail": issue.pair_tail,
                "window_reads": geom.window_reads, "out_cw": self.out_cw,
                "positions": images * self.out_positions_per_image, "phases": self.phases,
                "load_beats": geom.load_beats, "skip_beats": self.skip_beats(images)}

    def batch_cycles(self) -> dict[str, int]:
        """Per batch (and phase): MAC issue, window and unload cycles."""
        return batch_cycles(**{k: v for k, v in self.model_inputs(1).items()
                               if k in ("lanes", "windows", "macs", "factors", "window_reads", "out_cw",
                                        "pair_drains")})

    def geometry(self, images: int) -> PassGeometry:
        st = self.step
        return PassGeometry(images, self.in_cw, st.in_shape[1], st.in_shape[2], st.kernel, st.stride, st.padding,
                            st.dilation, st.out_shape[1:], st.pool or (1, 1), self.packed_input,
                            window_read_beats(self.in_cw, self.envelope.frame_word_beats))

    def pass_cycles(self, images: int) -> int:
        """Cycle model of one pass (the engine's CYCLES for it, to within a few cycles per batch)."""
        return pass_cycles(**self.model_inputs(images), ready=frame_ready(self.geometry(images), self.envelope.lanes,
                                                                          self.envelope.window_generators))

    def mac_cycles(self, images: int) -> int:
        """Issue cycles of a pass: the MAC count over the lanes, halved on paired factors (utilisation
        = this / CYCLES)."""
        batches = ceil_div(images * self.out_positions_per_image, self.envelope.lanes)
        return batches * self.phases * self.issue.issue


def factors_from_words(words: Mapping[str, int], entries: np.ndarray | None = None) -> list[AnyFactor]:
    """The chain the descriptor registers describe (the engine model's view); sparse factors take
    their patterns from the index memory's ``entries`` (:func:`index_entries` order), reading each
    one's entries up to its ``ROWS``-th row end. :class:`ConfigError` if they run out."""
    n = regmap.unpack("LAYER", words["LAYER"])["FACTORS"]
    chain: list[AnyFactor] = []
    at = 0
    entries = np.zeros(0, dtype=np.int64) if entries is None else np.asarray(entries, dtype=np.int64)
    ends = np.flatnonzero(entries >> ROW_END_BIT & 1)
    k, c = regmap.unpack("KERNEL", words.get("KERNEL", 0)), regmap.unpack("IN_C", words.get("IN_C", 0))
    q0 = k["KH"] * k["KW"] * c["C"]
    for i in range(n):
        sp = regmap.unpack(regmap.factor_reg(i, "SPARSE"), words.get(f"F{i}_SPARSE", 0))
        if sp["ROWS"]:
            mine = ends[np.searchsorted(ends, at):][:sp["ROWS"]]
            if mine.size < sp["ROWS"]:
                raise ConfigError(f"factor {i + 1}: {sp['ROWS']} sparse rows, the index memory holds {mine.size} "
                                  f"more row ends")
            cols = entries[at:mine[-1] + 1] & (MAX_SPARSE_COLUMNS - 1)
            indptr = np.concatenate([[0], mine + 1 - at])
            q = (sp["SPLIT"] + chain[-1].p if sp["SPLIT"] else chain[-1].p) if chain else q0
            if cols.max() >= q:
                raise ConfigError(f"factor {i + 1}: sparse column {int(cols.max())} is outside its {q} inputs")
            chain.append(SparseFactor(sp["ROWS"], q, indptr, cols, concat=bool(sp["SPLIT"])))
            at = int(mine[-1]) + 1
            continue
        rs = regmap.unpack(regmap.factor_reg(i, "RS"), words.get(f"F{i}_RS", 0))
        tg = regmap.unpack(regmap.factor_reg(i, "TG"), words.get(f"F{i}_TG", 0))
        r, s, t, g = rs["R"], rs["S"], tg["T"], tg["G"]
        chain.append(Factor(g * r * t, g * s * t, r, s, t))
    return chain

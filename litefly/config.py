"""Layer and network configurations: typed, immutable, loaded from YAML, hashed.

One :class:`LayerConfig` drives the golden models, the generated engine, its register
map, the host packing and the reports. The YAML schema is documented in ``docs/config.md``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .chain import (ChainCounts, Factor, chain_is_dense, chain_params, log2_ceil,
                    mixing_violations, parse_rshapes_line, validate_chain)
from .errors import ConfigError
from . import limits
from .safeio import load_yaml, one_line, short

__all__ = ["NumericFormat", "EngineParams", "LayerConfig", "HostOp", "NetworkConfig", "NetworkEngine",
           "load_config", "load_layer", "load_network", "MixingWarning", "check_int", "check_keys", "read_yaml"]

STREAM_WIDTHS = (32, 64, 128)
MAX_FRAME_KIB = 1 << 16         # a network engine's frame buffer, at most (engine.frame_kib, --frame-kib)
WINDOW_GENERATORS = (1, 2, 4)   # a power of two dividing every lane count (lanes are multiples of 4)
FRAME_WORD_BEATS = (1, 2, 4)    # beats a frame-buffer word holds (a window read takes up to as many)
HOST_OPS = ("relu", "maxpool2d", "avgpool2d", "flatten", "globalavgpool", "globalmaxpool", "add", "input")


class MixingWarning(UserWarning):
    """A shape-valid chain that breaks the mixing rule."""


def check_int(where: str, name: str, value: Any, minimum: int = 0, maximum: int | None = None,
              limit_name: str | None = None) -> int:
    """``value`` if it is an int in range; ``limit_name`` names a documented limit (``litefly.limits``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: {name}={short(value)} is not an integer")
    if limit_name is not None and maximum is not None:
        if value > maximum:
            raise limits.limit_error(where, name, value, maximum, limit_name)
        maximum = None   # the limit is reported as such, not as a range
    if value < minimum or (maximum is not None and value > maximum):
        hi = f"..{maximum}" if maximum is not None else " or more"
        raise ConfigError(f"{where}: {name}={value} is out of range, expected {minimum}{hi}")
    return value


def _bool(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name}={short(value, 40)} is not true or false")
    return value


def check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {short(data)}")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {short(key, 40)}, expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class NumericFormat:
    """Signed fixed-point format of the engine (see ``docs/arithmetic.md``)."""

    act_bits: int = 8
    weight_bits: int = 8
    bias: bool = False
    relu: bool = False

    def __post_init__(self) -> None:
        check_int("format", "act_bits", self.act_bits, 2, 16)
        check_int("format", "weight_bits", self.weight_bits, 2, 16)
        _bool("format", "bias", self.bias)
        _bool("format", "relu", self.relu)

    @property
    def bias_bits(self) -> int:
        """Width of a bias value (at the last factor's accumulator scale)."""
        return self.act_bits + self.weight_bits

    def acc_bits(self, factor: Factor, last: bool = False) -> int:
        """Accumulator width proven sufficient for one factor.

        Each product fits ``act_bits + weight_bits`` signed bits; a sum of ``s`` of them
        needs ``ceil(log2 s)`` more. The last factor with a bias adds two more terms' worth
        (the bias is at most twice a product in magnitude): ``ceil(log2(s + 2))``.
        """
        terms = factor.s + (2 if (last and self.bias) else 0)
        return self.act_bits + self.weight_bits + log2_ceil(terms)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "NumericFormat":
        data = {} if data is None else data
        check_keys("format", data, ("act_bits", "weight_bits", "bias", "relu"))
        return cls(**data)


@dataclass(frozen=True)
class EngineParams:
    """Generation parameters of the engine: multiplier budget and AXI-Stream width."""

    multipliers: int = 64
    stream_bits: int = 64

    def __post_init__(self) -> None:
        check_int("engine", "multipliers", self.multipliers, 1, 4096)
        if self.stream_bits not in STREAM_WIDTHS:
            raise ConfigError(f"engine: stream_bits={self.stream_bits!r} must be one of 32, 64, 128")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "EngineParams":
        data = {} if data is None else data
        check_keys("engine", data, ("multipliers", "stream_bits"))
        return cls(**data)


@dataclass(frozen=True)
class LayerConfig(ChainCounts):
    """One DeBut layer: geometry, chain, numeric format and engine parameters."""

    name: str
    kind: str
    in_features: int           # linear: in features; conv2d: in channels
    out_features: int          # linear: out features; conv2d: out channels
    chain: tuple[Factor, ...]
    format: NumericFormat = field(default_factory=NumericFormat)
    engine: EngineParams = field(default_factory=EngineParams)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    # with ``merge: true``: the chain as declared, before litefly.merge.merge_chain (else empty)
    merged_from: tuple[Factor, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "conv2d"):
            raise ConfigError(f"layer {self.name!r}: kind={self.kind!r} must be 'linear' or 'conv2d'")
        validate_chain(self.chain, self.chain_in, self.out_features)

    # -- geometry -------------------------------------------------------------
    @property
    def chain_in(self) -> int:
        """Input size of the chain: in features, or ``kh*kw*c_in`` for a convolution."""
        return self.kernel[0] * self.kernel[1] * self.in_features

    @property
    def chain_out(self) -> int:
        return self.out_features

    @property
    def in_channels(self) -> int:
        return self.in_features

    @property
    def out_channels(self) -> int:
        return self.out_features

    # -- counts ----------------------------------------------------------------
    @property
    def macs_per_column(self) -> int:
        return chain_params(self.chain)

    @property
    def declared_chain(self) -> tuple[Factor, ...]:
        """The chain as the file declares it: before ``merge: true`` merged it (else the chain)."""
        return self.merged_from or self.chain

    def mixing_violations(self) -> list[str]:
        return mixing_violations(self.chain)

    def is_dense_product(self) -> bool:
        return chain_is_dense(self.chain)

    def warn_mixing(self) -> None:
        """Emit a :class:`MixingWarning` per broken mixing rule, saying whether the product is dense."""
        broken = self.mixing_violations()
        if broken:
            dense = "dense" if self.is_dense_product() else "NOT dense"
            for msg in broken:
                warnings.warn(f"layer {self.name!r}: {msg} (the product is {dense})", MixingWarning,
                              stacklevel=2)

    # -- serialisation ---------------------------------------------------------
    def hardware_dict(self) -> dict[str, Any]:
        """What determines the engine (and so a bitstream): chain, format, engine parameters."""
        return {
            "chain": [f.as_list() for f in self.chain],
            "format": asdict(self.format),
            "engine": asdict(self.engine),
        }

    @property
    def config_hash(self) -> str:
        """Stable SHA-256 (hex) of :meth:`hardware_dict`; the engine holds its first 32 bits."""
        blob = json.dumps(self.hardware_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def hash32(self) -> int:
        return int(self.config_hash[:8], 16)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "linear":
            d.update(in_features=self.in_features, out_features=self.out_features)
        else:
            d.update(in_channels=self.in_features, out_channels=self.out_features,
                     kernel=list(self.kernel), stride=list(self.stride),
                     padding=list(self.padding), dilation=list(self.dilation))
        d["chain"] = [f.as_list() for f in self.chain]
        d["format"] = asdict(self.format)
        d["engine"] = asdict(self.engine)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def with_chain(self, chain: Sequence[Factor], name: str | None = None) -> "LayerConfig":
        from dataclasses import replace
        return replace(self, chain=tuple(chain), name=name or self.name, merged_from=())

    def dense_baseline(self) -> "LayerConfig":
        """The same layer as a dense one-factor chain ``[p, q, p, q, 1]`` (the speedup baseline)."""
        p, q = self.chain_out, self.chain_in
        return self.with_chain([Factor(p, q, p, q, 1)], name=f"{self.name}_dense")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default_name: str = "layer", merge: bool = False,
                  override: bool | None = None) -> "LayerConfig":
        """A layer from its file's mapping; ``merge`` is the network's ``merge`` (the layer's own wins),
        ``override`` (True/False) wins over both."""
        where = f"layer {short(data.get('name', default_name), 40)}" if isinstance(data, Mapping) else "layer"
        check_keys(where, data, ("name", "kind", "in_features", "out_features", "in_channels",
                                  "out_channels", "kernel", "stride", "padding", "dilation",
                                  "chain", "rshapes", "format", "engine", "merge"))
        merge = override if override is not None else _bool(where, "merge", data.get("merge", merge))
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}: name={short(name, 40)} must be an identifier (letters, digits, _)")
        check_int(where, "name length", len(name), 1, limits.MAX_NAME_CHARS, "MAX_NAME_CHARS")
        kind = data.get("kind")
        if kind not in ("linear", "conv2d"):
            raise ConfigError(f"{where}: kind={short(kind, 40)} must be 'linear' or 'conv2d'")
        if kind == "linear":
            for bad in ("in_channels", "out_channels", "kernel", "stride", "padding", "dilation"):
                if bad in data:
                    raise ConfigError(f"{where}: key {bad!r} is for conv2d layers, not linear")
            fin = check_int(where, "in_features", data.get("in_features"), 1, limits.MAX_FEATURES, "MAX_FEATURES")
            fout = check_int(where, "out_features", data.get("out_features"), 1, limits.MAX_FEATURES, "MAX_FEATURES")
            geometry: dict[str, Any] = {}
        else:
            for bad in ("in_features", "out_features"):
                if bad in data:
                    raise ConfigError(f"{where}: key {bad!r} is for linear layers; use in_channels/out_channels")
            fin = check_int(where, "in_channels", data.get("in_channels"), 1, limits.MAX_CHANNELS, "MAX_CHANNELS")
            fout = check_int(where, "out_channels", data.get("out_channels"), 1, limits.MAX_CHANNELS, "MAX_CHANNELS")
            geometry = {
                "kernel": _pair(where, "kernel", data.get("kernel"), 1, limits.MAX_KERNEL, "MAX_KERNEL"),
                "stride": _pair(where, "stride", data.get("stride", 1), 1, limits.MAX_STRIDE, "MAX_STRIDE"),
                "padding": _pair(where, "padding", data.get("padding", 0), 0, limits.MAX_PADDING, "MAX_PADDING"),
                "dilation": _pair(where, "dilation", data.get("dilation", 1), 1, limits.MAX_DILATION,
                                  "MAX_DILATION"),
            }
        if ("chain" in data) == ("rshapes" in data):
            raise ConfigError(f"{where}: give exactly one of 'chain' (list of [p, q, r, s, t]) or 'rshapes' (a line)")
        if "rshapes" in data:
            if not isinstance(data["rshapes"], str):
                raise ConfigError(f"{where}: rshapes={short(data['rshapes'])} must be a string of integers")
            chain = parse_rshapes_line(data["rshapes"], where=f"{where}: rshapes")
        else:
            raw = data["chain"]
            if not isinstance(raw, list):
                raise ConfigError(f"{where}: chain={short(raw)} must be a list of [p, q, r, s, t]")
            chain = validate_chain(raw)
        declared: tuple[Factor, ...] = ()
        if merge:
            from .merge import merge_chain
            plan = merge_chain(chain)
            if plan.merged:
                declared, chain = plan.declared, plan.chain
        try:
            return cls(name=name, kind=kind, in_features=fin, out_features=fout, chain=tuple(chain),
                       merged_from=declared,
                       format=NumericFormat.from_dict(data.get("format")),
                       engine=EngineParams.from_dict(data.get("engine")), **geometry)
        except TypeError as exc:  # e.g. a format value of the wrong kind
            raise ConfigError(one_line(f"{where}: {exc}")) from None


def _pair(where: str, name: str, value: Any, minimum: int, maximum: int | None = None,
          limit_name: str | None = None) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        return (check_int(where, name, value[0], minimum, maximum, limit_name),
                check_int(where, name, value[1], minimum, maximum, limit_name))
    if value is None:
        raise ConfigError(f"{where}: {name} is required for a conv2d layer")
    v = check_int(where, name, value, minimum, maximum, limit_name)
    return (v, v)


@dataclass(frozen=True)
class HostOp:
    """An operation between layers: relu, maxpool2d/avgpool2d (kernel, stride), flatten (the engine
    fuses relu, max pooling and the flatten), or a global pool to ``C x 1 x 1``, globalavgpool /
    globalmaxpool, which the host runs between two layers (kernel and stride unused), or
    ``add`` (``from``: an earlier layer's name): a residual add of that layer's output to the
    previous layer's, before any ReLU after it, fused into the previous layer on the engine; or
    ``input`` (``from``): the next layer reads that earlier layer's output instead of the
    previous one's (a branch, e.g. a projection shortcut)."""

    op: str
    kernel: int = 2
    stride: int = 0   # 0: same as kernel
    source: str = ""  # add: the layer whose output is added; input: the layer the next one reads

    def to_dict(self) -> dict[str, Any]:
        """The network file's form (inverse of :meth:`from_dict`)."""
        if self.op in ("maxpool2d", "avgpool2d"):
            return {"op": self.op, "kernel": self.kernel, "stride": self.stride}
        if self.op in ("add", "input"):
            return {"op": self.op, "from": self.source}
        return {"op": self.op}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HostOp":
        check_keys("network op", data, ("op", "kernel", "stride", "from"))
        if data["op"] not in HOST_OPS:
            raise ConfigError(f"network op: op={short(data['op'], 40)} must be one of {', '.join(HOST_OPS)}")
        if data["op"] in ("add", "input"):
            src = data.get("from")
            if not isinstance(src, str) or not src.isidentifier():
                raise ConfigError(f"network op {data['op']}: from={short(src, 40)} must name an earlier layer")
            if "kernel" in data or "stride" in data:
                raise ConfigError(f"network op {data['op']}: takes only 'from'")
            return cls(op=data["op"], source=src)
        if "from" in data:
            raise ConfigError(f"network op {short(data['op'], 40)}: key 'from' is for ops add and input")
        return cls(op=data["op"],
                   kernel=check_int("network op", "kernel", data.get("kernel", 2), 1, limits.MAX_POOL, "MAX_POOL"),
                   stride=check_int("network op", "stride", data.get("stride", 0), 0, limits.MAX_POOL, "MAX_POOL"))


ENGINE_KEYS = ("multipliers", "stream_bits", "frame_kib", "macs_per_dsp", "window_generators", "row_pairs",
               "row_quads", "frame_word_beats", "row_octets")


def _check_engine_settings(where: str, d: Mapping[str, Any]) -> None:
    """Refuse an out-of-range ``engine:`` value, naming it and ``where`` it is."""
    if d.get("multipliers") is not None:
        check_int(where, "multipliers", d["multipliers"], 1, 4096)
    if d.get("macs_per_dsp") is not None:
        check_int(where, "macs_per_dsp", d["macs_per_dsp"], 1, 2)
    if d.get("window_generators") is not None and d["window_generators"] not in WINDOW_GENERATORS:
        raise ConfigError(f"{where}: window_generators={short(d['window_generators'], 40)} must be 1, 2 or 4")
    if d.get("stream_bits") is not None and d["stream_bits"] not in STREAM_WIDTHS:
        raise ConfigError(f"{where}: stream_bits={short(d['stream_bits'], 40)} must be one of 32, 64, 128")
    if d.get("frame_kib") is not None:
        check_int(where, "frame_kib", d["frame_kib"], 1, MAX_FRAME_KIB)
    if d.get("frame_word_beats") is not None and d["frame_word_beats"] not in FRAME_WORD_BEATS:
        raise ConfigError(f"{where}: frame_word_beats={short(d['frame_word_beats'], 40)} must be 1, 2 or 4")
    for flag in ("row_pairs", "row_quads", "row_octets"):
        if d.get(flag) is not None and not isinstance(d[flag], bool):
            raise ConfigError(f"{where}: {flag}={short(d[flag], 40)} must be true or false")


@dataclass(frozen=True)
class NetworkEngine:
    """A network's ``engine:`` settings (all optional): the envelope's lanes, stream width,
    frame buffer size, MACs per DSP multiply (two lanes, or with ``row_pairs`` two rows of one lane;
    ``row_quads``: two such DSPs per lane; ``row_octets``: four), window generators and ``frame_word_beats`` (beats a
    frame-buffer word holds: a window read takes up to that many of a pixel), and under ``boards:`` the
    settings on a named board. Unset values come from the board's default envelope, then from the
    layers (:meth:`for_board`, ``hw.spec.EngineEnvelope.for_network``)."""

    multipliers: int | None = None
    stream_bits: int | None = None
    frame_kib: int | None = None
    macs_per_dsp: int | None = None       # 2: two lanes share a DSP multiply (int8 packing)
    window_generators: int | None = None  # 2, 4: window generators forming a batch's windows in parallel
    row_pairs: bool | None = None         # with macs_per_dsp 2: a DSP's two MACs are two rows of one lane
    row_quads: bool | None = None         # with row pairs: two DSPs per lane, four rows of a block an issue
    frame_word_beats: int | None = None   # 2, 4: beats a frame-buffer word holds and a window read takes
    row_octets: bool | None = None        # with row quads: four DSPs per lane, eight rows of a block an issue
    boards: tuple[tuple[str, "NetworkEngine"], ...] = ()   # (board name, its settings), from ``boards:``

    def __post_init__(self) -> None:
        _check_engine_settings("network engine", self.settings())

    def settings(self) -> dict[str, int]:
        """The envelope keys this sets (``boards:`` excluded)."""
        return {k: getattr(self, k) for k in ENGINE_KEYS if getattr(self, k) is not None}

    def for_board(self, board: str | None, board_default: bool = True) -> "NetworkEngine":
        """The settings on ``board`` (a board name; ``None``: no board): key by key, the network's
        ``boards: {board: ...}`` entry, else its own ``engine:`` value, else (with ``board_default``)
        the board's default envelope (``litefly.boards.boards.Board.engine``)."""
        if board is None:
            return NetworkEngine(**self.settings())
        from litefly.boards.boards import get_board  # noqa: PLC0415 (stdlib-only, no cycle at import)
        default = get_board(board).engine if board_default else {}
        own = dict(self.boards).get(board)
        return NetworkEngine(**{**default, **self.settings(), **(own.settings() if own else {})})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.settings()
        if self.boards:
            d["boards"] = {name: eng.to_dict() for name, eng in self.boards}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "NetworkEngine":
        data = {} if data is None else data
        check_keys("network engine", data, ENGINE_KEYS + ("boards",))
        boards: list[tuple[str, NetworkEngine]] = []
        if data.get("boards") is not None:
            from litefly.boards.boards import BOARDS  # noqa: PLC0415
            check_keys("network engine boards", data["boards"], tuple(BOARDS))
            for name, sub in data["boards"].items():
                where = f"network engine boards {name}"
                check_keys(where, sub, ENGINE_KEYS)
                _check_engine_settings(where, sub)
                boards.append((str(name), cls(**sub)))
        settings = {k: v for k, v in data.items() if k != "boards"}
        return cls(**settings, boards=tuple(sorted(boards, key=lambda b: b[0])))


@dataclass(frozen=True)
class NetworkConfig:
    """A list of layers and host ops, run in order, with the input size and engine settings
    the network engine is generated for (``docs/config.md``)."""

    name: str
    steps: tuple[LayerConfig | HostOp, ...]
    input_size: tuple[int, int] | None = None
    engine: NetworkEngine = field(default_factory=NetworkEngine)
    # the host may fold the first layer's kernel rows into its channels where the cycle model says
    # that pays (docs/engine.md, "Folded kernel rows"); false: always send the input as it is
    fold_input: bool = True

    @property
    def layers(self) -> tuple[LayerConfig, ...]:
        return tuple(s for s in self.steps if isinstance(s, LayerConfig))

    def to_dict(self) -> dict[str, Any]:
        """The network file's form, layers inline (inverse of :meth:`from_dict`)."""
        d: dict[str, Any] = {"name": self.name}
        if self.input_size is not None:
            d["input_size"] = list(self.input_size)
        if self.engine.to_dict():
            d["engine"] = self.engine.to_dict()
        if not self.fold_input:
            d["fold_input"] = False
        d["layers"] = [step.to_dict() for step in self.steps]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Path | None = None, merge: bool | None = None
                  ) -> "NetworkConfig":
        """A network from its file's mapping; ``merge`` (True/False) overrides the file's and every
        layer's ``merge`` setting (None: as the files say)."""
        check_keys("network", data, ("name", "layers", "input_size", "engine", "merge", "fold_input"))
        net_merge = _bool("network", "merge", data.get("merge", False))
        fold_input = _bool("network", "fold_input", data.get("fold_input", True))
        items = data.get("layers")
        if not isinstance(items, list) or not items:
            raise ConfigError(f"network: layers={short(items)} must be a non-empty list")
        check_int("network", "number of layers and ops", len(items), 1, limits.MAX_NETWORK_STEPS,
                  "MAX_NETWORK_STEPS")
        if len(str(data.get("name", "network"))) > limits.MAX_NAME_CHARS:
            raise ConfigError(f"network: name={short(data.get('name'), 40)} is longer than the limit "
                              f"MAX_NAME_CHARS={limits.MAX_NAME_CHARS} (docs/limits.md)")
        steps: list[LayerConfig | HostOp] = []
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and "op" in item:
                steps.append(HostOp.from_dict(item))
            elif isinstance(item, Mapping) and "file" in item:
                path = (base or Path(".")) / str(item["file"])
                steps.append(load_layer(path, merge=net_merge, override=merge))
            else:
                steps.append(LayerConfig.from_dict(item, default_name=f"layer{i}", merge=net_merge, override=merge))
        names = [l.name for l in steps if isinstance(l, LayerConfig)]
        if not names:
            raise ConfigError("network: layers has no layer, only ops")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"network: layer name {sorted(dup)[0]!r} is used twice")
        size = data.get("input_size")
        if size is not None:
            size = _pair("network", "input_size", size, 1, limits.MAX_IMAGE, "MAX_IMAGE")
        return cls(name=str(data.get("name", "network")), steps=tuple(steps), input_size=size,
                   engine=NetworkEngine.from_dict(data.get("engine")), fold_input=fold_input)

    @classmethod
    def single(cls, layer: LayerConfig) -> "NetworkConfig":
        return cls(name=layer.name, steps=(layer,))


def read_yaml(path: str | Path, allow_empty: bool = False) -> Mapping[str, Any]:
    """A YAML file's top-level mapping (an empty file is ``{}`` if ``allow_empty``), or a one-line error."""
    path = Path(path)
    data = load_yaml(path)  # size, UTF-8, no aliases, capped depth and integers (litefly.safeio)
    if data is None and allow_empty:
        return {}
    if not isinstance(data, Mapping):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(one_line(f"{path}: expected a mapping at the top level, got {got}"))
    return data


def load_layer(path: str | Path, merge: bool = False, override: bool | None = None) -> LayerConfig:
    """Load a single-layer YAML file (``merge``: the network's ``merge`` setting, which the file's
    own wins over; ``override`` (True/False) wins over both)."""
    path = Path(path)
    data = read_yaml(path)
    if "layers" in data:
        raise ConfigError(f"{path}: is a network file (has 'layers'), expected one layer")
    try:
        return LayerConfig.from_dict(data, default_name=path.stem.replace("-", "_"), merge=merge, override=override)
    except ConfigError as exc:
        raise ConfigError(one_line(f"{path}: {exc}")) from None


def load_network(path: str | Path, merge: bool | None = None) -> NetworkConfig:
    """Load a network YAML file, or wrap a single-layer file as a one-layer network; ``merge``
    (True/False) overrides every ``merge`` setting in the files (e.g. ``merge=False``: the chains
    as declared)."""
    path = Path(path)
    data = read_yaml(path)
    try:
        if "layers" in data:
            return NetworkConfig.from_dict(data, base=path.parent, merge=merge)
        return NetworkConfig.single(LayerConfig.from_dict(data, default_name=path.stem.replace("-", "_"),
                                                          override=merge))
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(one_line(msg if msg.startswith(str(path)) else f"{path}: {msg}")) from None


def load_config(path: str | Path) -> LayerConfig | NetworkConfig:
    """Load either kind of file."""
    data = read_yaml(Path(path))
    return load_network(path) if "layers" in data else load_layer(path)

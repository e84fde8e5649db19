"""Property-based fuzzing of every loader (issue 16): the call returns, or raises litefly's own
error type with a message of one line under 300 characters. Never another exception, never a
hang (Hypothesis deadline 5 s per case).

The default run keeps it short (``DEFAULT_EXAMPLES`` cases per loader, derandomized); the
sweep (``python -m pytest -m sweep tests/test_hostile_fuzz.py``) runs ``SWEEP_EXAMPLES``
(>= 1,000, or ``$LITEFLY_FUZZ_EXAMPLES``) random cases per loader.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from litefly.chain import parse_rshapes_line
from litefly.config import load_config, load_layer, load_network
from litefly.errors import LiteflyError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEFAULT_EXAMPLES = 60
SWEEP_EXAMPLES = int(os.environ.get("LITEFLY_FUZZ_EXAMPLES", "1000"))
WORK = Path(tempfile.mkdtemp(prefix="litefly_fuzz_"))
shutil.copytree(EXAMPLES / "layers", WORK / "layers")
LAYER_FILES = sorted((EXAMPLES / "layers").glob("*.yaml"))
NETWORK_BYTES = (EXAMPLES / "vgg_net.yaml").read_bytes()
RSHAPES_BYTES = (EXAMPLES / "rshapes" / "vgg_cifar100_mono.txt").read_bytes()
LAYER_KEYS = ["name", "kind", "in_features", "out_features", "in_channels", "out_channels", "kernel", "stride",
              "padding", "dilation", "chain", "rshapes", "format", "engine", "merge"]


def check_one_line(fn: Callable[[], Any]) -> None:
    """The property: ``fn()`` returns, or raises a LiteflyError of one line under 300 characters."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
    except LiteflyError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, repr(msg[:400])
        assert 0 < len(msg) < 300, (len(msg), msg[:400])


def run_property(strategy: st.SearchStrategy, check: Callable[[Any], None], examples: int,
                 derandomize: bool) -> None:
    @settings(max_examples=examples, deadline=5000, derandomize=derandomize, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(strategy)
    def prop(value: Any) -> None:
        check(value)
    prop()


# -- strategies ------------------------------------------------------------------------------------
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-5, 70) | st.floats(allow_nan=True)
           | st.text(max_size=20) | st.sampled_from(["linear", "conv2d", "relu", "maxpool2d", "layers/vgg_conv1.yaml"]))
trees = st.recursive(scalars, lambda c: st.lists(c, max_size=5)
                     | st.dictionaries(st.sampled_from(LAYER_KEYS) | st.text(max_size=8), c, max_size=6),
                     max_leaves=30)
sizes = st.sampled_from([1, 2, 3, 4, 8, 16, 27, 36, 64, 72, 256, 4096, 65536, 2 ** 20, 2 ** 21, 2 ** 62, 0, -1])
factor = st.lists(st.sampled_from([1, 2, 3, 4, 8, 9, 16, 27, 36, 64, 72, 256, 0, -2]) | sizes, min_size=0,
                  max_size=6)
layer_dicts = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b_1", "x" * 200, "a-b", 3]), "kind": st.sampled_from(["linear", "conv2d", "x"])},
    optional={"in_features": sizes, "out_features": sizes, "in_channels": sizes, "out_channels": sizes,
              "kernel": st.sampled_from([1, 3, [3, 3], [1, 2, 3], 33, 0]), "stride": st.sampled_from([1, 2, 64]),
              "padding": st.sampled_from([0, 1, 2000]), "chain": st.lists(factor, max_size=5) | trees,
              "rshapes": st.text(alphabet="0123456789 ,[]-x", max_size=60),
              "merge": st.booleans() | scalars,
              "format": st.fixed_dictionaries({}, optional={"act_bits": st.integers(0, 20),
                                                            "weight_bits": st.integers(0, 20),
                                                            "bias": st.booleans() | st.integers(0, 1),
                                                            "relu": st.booleans()}) | trees,
              "engine": st.fixed_dictionaries({}, optional={"multipliers": st.integers(-1, 5000),
                                                            "stream_bits": st.sampled_from([32, 48, 64, 128])})})


@st.composite
def mutated(draw, sources: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"&a ", b"*a", b"[", b"{", b": ", b"\n  - ", b"9" * 30, b"\xff", b"\x00", b"!!python/name:os.system "]))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 200)))
            data[end:end] = data[pos:end] * draw(st.integers(1, 5))
    return bytes(data)


def _analyse(cfg: Any) -> None:
    """What `litefly chain show` computes on a loaded config."""
    for layer in getattr(cfg, "layers", (cfg,)):
        _ = (layer.params, layer.dense_params, layer.compression, layer.mac_reduction, layer.config_hash,
             layer.mixing_violations(), layer.to_yaml())
        layer.is_dense_product()   # may refuse beyond DENSITY_CHECK_CELLS: a LiteflyError
        for i, f in enumerate(layer.chain):
            layer.format.acc_bits(f, last=i == len(layer.chain) - 1)


# -- checks ----------------------------------------------------------------------------------------
def _write(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


def check_config_bytes(data: bytes) -> None:
    path = _write("layer.yaml", data)
    check_one_line(lambda: _analyse(load_config(path)))


def check_config_tree(tree: Any) -> None:
    try:
        text = yaml.safe_dump(tree)
    except (ValueError, yaml.YAMLError):   # e.g. an int above Python's str() digit limit
        return
    path = _write("tree.yaml", text.encode())
    check_one_line(lambda: _analyse(load_config(path)))
    check_one_line(lambda: _analyse(load_layer(path)))


def check_network_bytes(data: bytes) -> None:
    path = _write("net.yaml", data)
    check_one_line(lambda: _analyse(load_network(path)))


def check_network_tree(layers: Any) -> None:
    check_config_tree({"name": "n", "layers": layers})


def check_rshapes(data: bytes) -> None:
    from litefly.safeio import read_lines
    path = _write("r.txt", data)

    def go() -> None:
        for i, line in enumerate(read_lines(path)[:20]):
            parse_rshapes_line(line, where=f"line {i + 1}")
    check_one_line(go)


def check_rshapes_text(text: str) -> None:
    check_one_line(lambda: parse_rshapes_line(text))


def check_registry(payload: bytes) -> None:
    from litefly.bitstreams.registry import entries, find, verify
    root = WORK / "reg"
    shutil.rmtree(root, ignore_errors=True)
    d = root / "pynq-z2" / "x-aaaaaaaa"
    d.mkdir(parents=True)
    (d / "build.json").write_bytes(payload)
    (d / "manifest.json").write_bytes(payload)

    def go() -> None:
        for e in entries(root):
            _ = (e.key, e.bit, e.clock_mhz)
            verify(e)
        find("x", root)
    check_one_line(go)


def _good_build() -> dict:
    return {"name": "x", "board": "pynq-z2", "config_hash": "a" * 64, "clock_mhz": 100.0,
            "files": {"x.bit": "0" * 64, "x.hwh": "0" * 64, "manifest.json": "0" * 64}}


json_trees = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                          max_leaves=20)
build_dicts = st.builds(lambda upd: {**_good_build(), **upd},
                        st.dictionaries(st.sampled_from(list(_good_build()) + ["clock_mhz_actual"]), json_trees,
                                        max_size=3))
registry_payloads = (st.binary(max_size=300) | mutated([json.dumps(_good_build()).encode()])
                     | json_trees.map(lambda t: json.dumps(t).encode())
                     | build_dicts.map(lambda t: json.dumps(t).encode()))

LOADERS: dict[str, tuple[st.SearchStrategy, Callable[[Any], None]]] = {
    "config_bytes": (st.binary(max_size=400), check_config_bytes),
    "config_tree": (trees, check_config_tree),
    "config_fields": (layer_dicts, check_config_tree),
    "config_mutated": (mutated([p.read_bytes() for p in LAYER_FILES]), check_config_bytes),
    "network_mutated": (mutated([NETWORK_BYTES]), check_network_bytes),
    "network_tree": (st.lists(layer_dicts | trees | st.fixed_dictionaries(
        {"op": st.sampled_from(["relu", "maxpool2d", "softmax"])}, optional={"kernel": sizes, "stride": sizes})
        | st.fixed_dictionaries({"file": st.sampled_from(["layers/vgg_conv1.yaml", "/dev/zero", "nope.yaml", "",
                                                          "/", "net.yaml"]) | st.text(max_size=12)}), max_size=5),
        check_network_tree),
    "rshapes_file": (mutated([RSHAPES_BYTES]) | st.binary(max_size=300), check_rshapes),
    "rshapes_line": (st.text(alphabet="0123456789 ,[]-+x\u0663\n", max_size=80), check_rshapes_text),
    "registry": (registry_payloads, check_registry),
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_loaders_return_or_raise_one_line(loader):
    strategy, check = LOADERS[loader]
    run_property(strategy, check, DEFAULT_EXAMPLES, derandomize=True)


@pytest.mark.sweep
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_loaders_fuzz_sweep(loader):
    strategy, check = LOADERS[loader]
    run_property(strategy, check, SWEEP_EXAMPLES, derandomize=False)


# -- wire format -----------------------------------------------------------------------------------
@st.composite
def wire_cases(draw):
    stream_bits = draw(st.sampled_from([32, 64, 128]))
    bits = draw(st.integers(2, min(62, stream_bits)))
    per_beat = draw(st.integers(1, stream_bits // bits))
    signed = draw(st.booleans())
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << (bits - 1)) - 1)
    values = draw(st.lists(st.integers(lo, hi) | st.sampled_from([lo, hi, 0]), min_size=1, max_size=40))
    return stream_bits, bits, per_beat, np.array(values, dtype=np.int64)


def _wire_roundtrip(case) -> None:
    wire = pytest.importorskip("litefly.hw.wireformat")
    stream_bits, bits, per_beat, values = case
    beats = wire.pack_elements(values, bits, per_beat, stream_bits)
    assert beats.dtype == np.uint8 and beats.shape == (-(-values.size // per_beat), stream_bits // 8)
    back = wire.unpack_elements(beats, bits, per_beat, values.size)
    assert back.tolist() == values.tolist()


def test_wireformat_round_trip_every_width_and_sign():
    wire = pytest.importorskip("litefly.hw.wireformat")
    for stream_bits in (32, 64, 128):          # every width once, both ends of the signed range
        for bits in range(2, min(62, stream_bits) + 1):
            for per_beat in sorted({1, stream_bits // bits}):
                lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
                v = np.array([lo, hi, 0, -1, 1, lo + 1][: max(1, per_beat * 2)], dtype=np.int64)
                out = wire.unpack_elements(wire.pack_elements(v, bits, per_beat, stream_bits), bits, per_beat, v.size)
                assert out.tolist() == v.tolist(), (stream_bits, bits, per_beat)
    run_property(wire_cases(), _wire_roundtrip, DEFAULT_EXAMPLES * 2, derandomize=True)


@pytest.mark.sweep
def test_wireformat_round_trip_sweep():
    run_property(wire_cases(), _wire_roundtrip, SWEEP_EXAMPLES, derandomize=False)

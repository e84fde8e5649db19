"""The regression corpus of hostile input (issue 16): each file gives one error line naming the
problem, within seconds, never a traceback, a hang or code execution.

The files are in ``tests/corpus/hostile/`` (``make_corpus.py`` rewrites them).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from litefly.config import load_config
from litefly.errors import ConfigError, LiteflyError

CORPUS = Path(__file__).resolve().parent / "corpus" / "hostile"
sys.path.insert(0, str(CORPUS))
from make_corpus import CASES, big_name  # noqa: E402
from cli_inprocess import run_cli

#: file -> fragment of the one-line error of `litefly chain show FILE`
YAML_CASES = {
    "latin1.yaml": "is not UTF-8: byte 0xe9 at byte offset 9 (line 1, column 10)",
    "gzip.yaml": "is gzip-compressed",
    "flipped_byte.yaml": "is not UTF-8: byte 0xa0 at byte offset 20",
    "utf16.yaml": "is UTF-16",
    "nul_byte.yaml": "NUL byte at byte offset 7",
    "control_char.yaml": "control characters are not allowed",
    "deep_list.yaml": "nested deeper than the limit MAX_DEPTH=32",
    "deep_keys.yaml": "nested deeper than the limit MAX_DEPTH=32",
    "deep_keys_block.yaml": "nested deeper than the limit MAX_DEPTH=32",
    "int_5000_digits.yaml": "above the limit MAX_INT_DIGITS=20",
    "int_above_2_62.yaml": "above the limit MAX_INT=2**62",
    "alias_bomb.yaml": "does not accept YAML aliases or anchors",
    "anchor_only.yaml": "does not accept YAML aliases or anchors",
    "python_tag.yaml": "could not determine a constructor",
    "bad_date.yaml": "at line 2, column 10: bad value",
    "unhashable_key.yaml": "found unhashable key",
    "unclosed.yaml": "malformed YAML at line 3",
    "top_level_list.yaml": "expected a mapping at the top level, got list",
    "empty.yaml": "got an empty file",
    "features_2_40.yaml": "above the limit MAX_FEATURES=1,048,576",
    "factors_5000.yaml": "number of factors=5000 is above the limit MAX_FACTORS=64",
    "kernel_huge.yaml": "kernel=100000 is above the limit MAX_KERNEL=32",
    "long_key.yaml": "malformed YAML at line 2",
    "network_many_steps.yaml": "above the limit MAX_NETWORK_STEPS=1,024",
    "network_dev_zero.yaml": "is not a regular file",
}


def assert_one_line_error(err: str, fragment: str = "") -> None:
    assert err.startswith("error: "), err[:500]
    assert err.count("\n") == 1 and len(err.rstrip("\n")) <= 300, err[:500]
    assert "Traceback" not in err
    assert fragment in err, (fragment, err)


def test_corpus_files_are_current():
    for name, data in CASES.items():
        assert (CORPUS / name).read_bytes() == data, f"{name}: run tests/corpus/hostile/make_corpus.py"


@pytest.mark.parametrize("name", sorted(YAML_CASES))
def test_chain_show_refuses_in_one_line(capsys, name):
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "chain", "show", str(CORPUS / name))
    assert time.perf_counter() - t0 < 5
    assert code == 2 and out == ""
    assert_one_line_error(err, YAML_CASES[name])


@pytest.mark.parametrize("name", sorted(YAML_CASES))
def test_loader_raises_config_error(name):
    with pytest.raises(ConfigError) as exc:
        load_config(CORPUS / name)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300


def test_two_megabyte_name_is_not_echoed(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text(big_name())
    code, _, err = run_cli(capsys, "chain", "show", str(path))
    assert code == 2
    assert_one_line_error(err, "above the limit MAX_NAME_CHARS=128")
    assert "(2,000,000 chars)" in err


def test_fifo_and_directory_do_not_hang(tmp_path, capsys):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "chain", "show", str(fifo))
    assert code == 2
    assert_one_line_error(err, "is not a regular file")
    code, _, err = run_cli(capsys, "chain", "show", str(tmp_path))
    assert code == 2
    assert_one_line_error(err, "is a directory")


def test_too_big_yaml_is_refused_before_reading(tmp_path, capsys):
    from litefly import limits
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as fh:
        fh.truncate(limits.MAX_YAML_BYTES + 1)   # sparse: no 16 MiB written
    code, _, err = run_cli(capsys, "chain", "show", str(path))
    assert code == 2
    assert_one_line_error(err, "above the limit MAX_YAML_BYTES=16,777,216 bytes")


@pytest.mark.parametrize("name", ["butterfly4096.yaml", "butterfly65536.yaml"])
def test_big_butterflies_show_quickly(capsys, name):
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "chain", "show", str(CORPUS / name))
    elapsed = time.perf_counter() - t0
    assert code == 0, err
    assert "mixing rule: followed" in out and "product of the patterns: dense" in out
    assert elapsed < 2.0, f"{name}: chain show took {elapsed:.2f} s"


RSHAPES_CASES = {
    "rshapes_latin1.txt": "is not UTF-8: byte 0xe9",
    "rshapes_bigint.txt": "an integer of 5,000 digits is above the limit MAX_INT_DIGITS=20",
    "rshapes_many_factors.txt": "is above the limit MAX_FACTORS=64",
    "rshapes_word.txt": "'four' is not an integer",
    "rshapes_double_sign.txt": "'--0' is not an integer",
    "gzip.yaml": "is gzip-compressed",
}


@pytest.mark.parametrize("name", sorted(RSHAPES_CASES))
def test_rshapes_import_refuses_in_one_line(tmp_path, capsys, name):
    code, _, err = run_cli(capsys, "chain", "import-rshapes", str(CORPUS / name), "--line", "1",
                           "-o", str(tmp_path / "o.yaml"))
    assert code == 2
    assert_one_line_error(err, RSHAPES_CASES[name])
    code, _, err = run_cli(capsys, "chain", "generate", "--rshapes", str(CORPUS / name))
    assert code == 2
    assert_one_line_error(err, RSHAPES_CASES[name])


BUILD_CASES = {
    "build_not_json.json": "malformed JSON at line 1, column 2",
    "build_deep.json": "nested deeper than the limit MAX_DEPTH=32",
    "build_bigint.json": "MAX_INT_DIGITS=20",
    "build_missing_keys.json": "board=None is missing or not a string",
    "build_escape.json": "outside its folder",
    "build_list.json": "expected an object at the top level",
    "latin1.yaml": "is not UTF-8",
}


@pytest.mark.parametrize("name", sorted(BUILD_CASES))
def test_registry_refuses_bad_build_json(tmp_path, name):
    from litefly.bitstreams.registry import entries, verify
    entry_dir = tmp_path / "pynq-z2" / "x-aaaaaaaa"
    entry_dir.mkdir(parents=True)
    (entry_dir / "build.json").write_bytes((CORPUS / name).read_bytes())
    with pytest.raises(LiteflyError) as exc:
        for e in entries(tmp_path):
            verify(e)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300 and BUILD_CASES[name] in msg, msg


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_reader_refuses_pickles_forgeries_and_non_zips(tmp_path):
    from litefly.safeio import load_npz
    good = _npz(tmp_path / "good.npz", x=np.arange(4))
    assert load_npz(good)["x"].tolist() == [0, 1, 2, 3]
    cases = {}
    cases["object array"] = _npz(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    gz = tmp_path / "gz.npz"
    gz.write_bytes(gzip.compress(good.read_bytes()))
    cases["gzip"] = gz
    text = tmp_path / "text.npz"
    text.write_text("hello")
    cases["not a zip"] = text
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:60])
    cases["truncated"] = trunc
    forged = tmp_path / "forged.npz"   # header claims 10^12 elements, holds 32 bytes
    header = np.lib.format.header_data_from_array_1_0(np.arange(4))
    header["shape"] = (10 ** 12,)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(np.arange(4).tobytes())
    with zipfile.ZipFile(forged, "w") as zf:
        zf.writestr("x.npy", buf.getvalue())
    cases["forged"] = forged
    expected = {"object array": "holds Python objects", "gzip": "is gzip-compressed", "not a zip": "is not a",
                "truncated": "cannot read", "forged": "truncated or forged"}
    for what, path in cases.items():
        with pytest.raises(ConfigError) as exc:
            load_npz(path)
        msg = str(exc.value)
        assert "\n" not in msg and len(msg) < 300 and expected[what] in msg, (what, msg)


def test_vectors_reader_uses_the_npz_checks(tmp_path):
    from litefly.errors import ShapeError
    from litefly.vectors import load_vectors
    path = _npz(tmp_path / "v.npz", x=np.array([object()], dtype=object))
    with pytest.raises(ShapeError, match="holds Python objects"):
        load_vectors(path)


def test_json_reader_caps(tmp_path):
    from litefly.safeio import read_json
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"a": [1, 2, {"b": 18446744073709551615}]}))
    assert read_json(p)["a"][2]["b"] == 2 ** 64 - 1
    p.write_text('{"a": 1,\n "b": }')
    with pytest.raises(ConfigError, match="malformed JSON at line 2, column 7"):
        read_json(p)

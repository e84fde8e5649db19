"""Regenerate the hostile-input regression corpus (``python tests/corpus/hostile/make_corpus.py``).

Each file is one case from issue 16 or found by the Hypothesis tests; ``expected.yaml`` maps a
file to a fragment of its one-line error (``tests/test_hostile_corpus.py`` checks them all).
The 2 MB name is not stored: the test writes it (``BIG_NAME`` below) into a temporary folder.
"""

from __future__ import annotations

import gzip
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = (HERE.parents[2] / "examples" / "layers" / "butterfly16.yaml").read_bytes()
LAYER = "name: {name}\nkind: linear\nin_features: {n}\nout_features: {n}\nchain: {chain}\n"


def butterfly(n: int) -> str:
    m = n.bit_length() - 1
    return LAYER.format(name=f"bf{n}", n=n, chain=[[n, n, 2, 2, 2 ** i] for i in range(m)])


def big_name(chars: int = 2_000_000) -> str:
    return LAYER.format(name="x" * chars, n=16, chain=[[16, 16, 16, 16, 1]])


CASES: dict[str, bytes] = {
    "latin1.yaml": "name: caf\u00e9\nkind: linear\n".encode("latin-1"),
    "gzip.yaml": gzip.compress(EXAMPLE, mtime=0),
    "flipped_byte.yaml": EXAMPLE[:20] + bytes([EXAMPLE[20] ^ 0x80]) + EXAMPLE[21:],
    "utf16.yaml": "name: x\n".encode("utf-16"),
    "nul_byte.yaml": b"name: x\x00\nkind: linear\n",
    "control_char.yaml": b"name: x\x07\n",
    "deep_list.yaml": b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "deep_keys.yaml": b"a: " + b"{k: " * 3000 + b"1" + b"}" * 3000 + b"\n",
    "deep_keys_block.yaml": "".join(f"{' ' * i}k{i}:\n" for i in range(200)).encode(),
    "int_5000_digits.yaml": b"name: x\nkind: linear\nin_features: " + b"9" * 5000 + b"\n",
    "int_above_2_62.yaml": b"name: x\nkind: linear\nin_features: 9223372036854775807\n",
    "alias_bomb.yaml": (b"a: &a [x, x, x, x, x, x, x, x, x]\n"
                        + b"".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n".encode()
                                   for p, c in zip("abcdefgh", "bcdefghi"))),
    "anchor_only.yaml": b"name: &n x\nkind: linear\n",
    "python_tag.yaml": b"!!python/object/apply:os.system ['echo pwned']\n",
    "bad_date.yaml": b"name: x\ncreated: 2001-02-30\n",
    "unhashable_key.yaml": b"? [1, 2]\n: x\n",
    "unclosed.yaml": b"name: x\nkind: [linear\n",
    "top_level_list.yaml": b"- 1\n- 2\n",
    "empty.yaml": b"",
    "features_2_40.yaml": LAYER.format(name="x", n=2 ** 40, chain=[[2 ** 40, 2 ** 40, 2, 2, 2 ** 39]]).encode(),
    "factors_5000.yaml": LAYER.format(name="x", n=4, chain=[[4, 4, 2, 2, 1]] * 5000).encode(),
    "kernel_huge.yaml": (b"name: x\nkind: conv2d\nin_channels: 1\nout_channels: 1\nkernel: 100000\n"
                         b"chain: [[1, 1, 1, 1, 1]]\n"),
    "long_key.yaml": b"name: x\n" + b"k" * 100_000 + b": 1\n",
    "network_many_steps.yaml": b"name: n\nlayers:\n" + b"  - op: relu\n" * 2000,
    "network_dev_zero.yaml": b"name: n\nlayers:\n  - file: /dev/zero\n",
    "butterfly4096.yaml": butterfly(4096).encode(),
    "butterfly65536.yaml": butterfly(65536).encode(),
    "rshapes_latin1.txt": "36 27 4 3 1 \u00e9\n".encode("latin-1"),
    "rshapes_bigint.txt": b"9" * 5000 + b" 27 4 3 1\n",
    "rshapes_many_factors.txt": b"4 4 2 2 1 " * 5000 + b"\n",
    "rshapes_word.txt": b"36 27 four 3 1\n",
    "rshapes_double_sign.txt": b"--0\n",   # found by the fuzz sweep: a ValueError traceback
    "build_not_json.json": b"{name: x}",
    "build_deep.json": b"[" * 5000 + b"]" * 5000,
    "build_bigint.json": b'{"name": "x", "clock_mhz": ' + b"9" * 5000 + b"}",
    "build_missing_keys.json": b'{"name": "x"}',
    "build_escape.json": (b'{"name": "x", "board": "pynq-z2", "config_hash": "' + b"a" * 64
                          + b'", "clock_mhz": 100, "files": {"../../etc/passwd": "0"}}'),
    "build_list.json": b"[1, 2, 3]",
}


def main() -> None:
    for name, data in CASES.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(CASES)} files to {HERE}")


if __name__ == "__main__":
    main()

"""The one reader for every file litefly takes: YAML, rshapes text, JSON and ``.npz``.

Every reader checks, in this order, before any parser sees the data:

* the path: it exists, is a regular file (not a directory, FIFO or device);
* the size: at most the limit of its kind (``litefly.limits``: 16 MiB for YAML and text,
  64 MiB for JSON, 1 GiB for ``.npz``);
* the encoding (text kinds): UTF-8, with the byte offset of the first bad byte; gzip and zip
  files and NUL bytes are named as such.

Then it parses with hard caps: YAML aliases and anchors are refused (no alias bombs), nesting
is capped at ``MAX_DEPTH`` and the number of values at ``MAX_YAML_NODES``, an integer with
more than ``MAX_INT_DIGITS`` digits is refused before it is converted and one above
``MAX_INT`` after. Every failure is a :class:`~litefly.errors.ConfigError` of one line,
at most ``MAX_MESSAGE_CHARS`` characters, naming the file and the line/column or byte
offset, and never echoing a huge value (see :func:`short`).
"""

from __future__ import annotations

import json
import math
import stat
import zipfile
from pathlib import Path
from typing import Any, Callable

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from . import limits
from .errors import ConfigError, LiteflyError

__all__ = ["short", "short_text", "one_line", "where", "read_bytes", "read_text", "read_lines",
           "check_file", "parse_yaml", "load_yaml", "parse_json", "read_json", "load_npz", "check_int_token",
           "MAX_YAML_NODES"]

#: At most this many YAML values (scalars, lists, mappings) in one file.
MAX_YAML_NODES = 100_000

_ELLIPSIS = "\u2026"


# -- messages ----------------------------------------------------------------------------------
def short_text(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (and no line breaks)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:max(1, limit - 1)] + _ELLIPSIS


def short(value: Any, limit: int = 60) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters, safe for any value.

    Huge integers, deeply nested containers and long strings are summarised, never
    expanded: ``short(10**5000)`` is ``<integer of 5,001 digits>``.
    """
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 200:
            digits = math.floor(value.bit_length() * math.log10(2)) + 1
            return f"<integer of about {digits:,} digits>"
        return short_text(repr(value), limit)
    if isinstance(value, str):
        if len(value) > limit:
            return short_text(repr(value[:limit]), limit - 1) + f" ({len(value):,} chars)"
        return short_text(repr(value), limit)
    if isinstance(value, (list, tuple, dict, set)):
        return short_text(_small_repr(value, 2), limit)
    try:
        return short_text(repr(value), limit)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        return f"<{type(value).__name__}>"


def _small_repr(value: Any, level: int) -> str:
    if isinstance(value, (list, tuple, set)):
        if level <= 0:
            return "[...]" if value else "[]"
        items = list(value)[:4] if not isinstance(value, set) else sorted(map(str, value))[:4]
        body = ", ".join(_small_repr(v, level - 1) for v in items)
        more = ", ..." if len(value) > 4 else ""
        return f"[{body}{more}]"
    if isinstance(value, dict):
        if level <= 0:
            return "{...}" if value else "{}"
        items = list(value.items())[:3]
        body = ", ".join(f"{_small_repr(k, 0)}: {_small_repr(v, level - 1)}" for k, v in items)
        more = ", ..." if len(value) > 3 else ""
        return "{" + body + more + "}"
    return short(value, 30)


def one_line(message: str, limit: int = limits.MAX_MESSAGE_CHARS) -> str:
    """A message on one line of at most ``limit`` characters."""
    return short_text(" ".join(str(message).split()), limit)


def where(path: str | Path) -> str:
    """A file name for a message (long paths are cut)."""
    text = str(path)
    return text if len(text) <= 100 else text[:40] + _ELLIPSIS + text[-59:]


def _error(path: str | Path, text: str) -> ConfigError:
    return ConfigError(one_line(f"{where(path)}: {text}"))


# -- bytes and text ------------------------------------------------------------------------------
def _check_path(path: Path, kind: str, max_bytes: int, limit_name: str) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except (OSError, ValueError) as exc:
        raise _error(path, f"cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _error(path, f"is a directory, expected a {kind}")
    if not stat.S_ISREG(st.st_mode):
        raise _error(path, f"is not a regular file (a device or pipe?), expected a {kind}")
    if st.st_size > max_bytes:
        raise _error(path, f"is {st.st_size:,} bytes, above the limit {limit_name}={max_bytes:,} bytes "
                           f"for a {kind} (docs/limits.md)")
    return st.st_size


def check_file(path: str | Path, kind: str = "file", max_bytes: int = limits.MAX_TEXT_BYTES,
               limit_name: str = "MAX_TEXT_BYTES") -> int:
    """Check that ``path`` is a regular file of at most ``max_bytes`` bytes; return its size."""
    return _check_path(Path(path), kind, max_bytes, limit_name)


def read_bytes(path: str | Path, kind: str = "file", max_bytes: int = limits.MAX_TEXT_BYTES,
               limit_name: str = "MAX_TEXT_BYTES") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` bytes, or a one-line error."""
    path = Path(path)
    _check_path(path, kind, max_bytes, limit_name)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise _error(path, f"cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > max_bytes:  # grew since stat
        raise _error(path, f"is above the limit {limit_name}={max_bytes:,} bytes for a {kind} (docs/limits.md)")
    return data


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return line, col


def decode_utf8(data: bytes, path: str | Path, kind: str = "file") -> str:
    """``data`` as text, or a one-line error naming the byte offset of the first non-UTF-8 byte."""
    if data.startswith(b"\x1f\x8b"):
        raise _error(path, f"is gzip-compressed (bytes 0-1 are 1f 8b), expected a UTF-8 {kind}; decompress it first")
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise _error(path, f"is a zip archive (byte 0 is 'PK'), expected a UTF-8 {kind}")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _error(path, f"is UTF-16 (byte-order mark at byte 0), expected a UTF-8 {kind}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise _error(path, f"is not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start:,} "
                           f"(line {line:,}, column {col:,}); save the {kind} as UTF-8") from None
    nul = text.find("\x00")
    if nul >= 0:
        off = len(text[:nul].encode())
        raise _error(path, f"contains a NUL byte at byte offset {off:,}; a binary file, expected a UTF-8 {kind}")
    return text


def read_text(path: str | Path, kind: str = "text file", max_bytes: int = limits.MAX_TEXT_BYTES,
              limit_name: str = "MAX_TEXT_BYTES") -> str:
    """A UTF-8 text file (size and encoding checked first)."""
    return decode_utf8(read_bytes(path, kind, max_bytes, limit_name), path, kind)


def read_lines(path: str | Path, kind: str = "rshapes file", max_lines: int = limits.MAX_RSHAPES_LINES) -> list[str]:
    """The lines of a UTF-8 text file of at most ``max_lines`` lines."""
    lines = read_text(path, kind).splitlines()
    if len(lines) > max_lines:
        raise _error(path, f"has {len(lines):,} lines, above the limit MAX_RSHAPES_LINES={max_lines:,} (docs/limits.md)")
    return lines


def check_int_token(token: str, where_: str) -> int:
    """A decimal integer token (optional sign) converted only if it has at most ``MAX_INT_DIGITS`` digits."""
    digits = token[1:] if token[:1] in ("+", "-") else token
    if not digits.isdigit() or not digits.isascii():
        raise ConfigError(one_line(f"{where_}: {short(token, 30)} is not an integer"))
    if len(digits) > limits.MAX_INT_DIGITS:
        raise ConfigError(one_line(f"{where_}: an integer of {len(digits):,} digits is above the limit "
                                   f"MAX_INT_DIGITS={limits.MAX_INT_DIGITS} (docs/limits.md)"))
    value = int(token)
    if abs(value) > limits.MAX_INT:
        raise ConfigError(one_line(f"{where_}: {value} is above the limit MAX_INT=2**62 (docs/limits.md)"))
    return value


# -- YAML ------------------------------------------------------------------------------------------
class _Refused(Exception):
    """A structural cap hit while composing (carries the YAML mark)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _CappedComposer(Composer):
    """A composer that refuses aliases and anchors and caps depth and node count."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused(f"alias *{short_text(str(event.anchor), 30)} refused: litefly does not accept YAML "
                           f"aliases or anchors (write the value out)", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"anchor &{short_text(str(event.anchor), 30)} refused: litefly does not accept YAML "
                           f"aliases or anchors (write the value out)", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _Refused(f"more than MAX_YAML_NODES={MAX_YAML_NODES:,} values (docs/limits.md)", event.start_mark)
        self._depth += 1
        if self._depth > limits.MAX_DEPTH:
            raise _Refused(f"nested deeper than the limit MAX_DEPTH={limits.MAX_DEPTH} (docs/limits.md)",
                           event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _CappedConstructor(SafeConstructor):
    """SafeConstructor with integers capped before conversion and every value error given a mark."""

    def construct_yaml_int(self, node):  # noqa: ANN001
        text = str(node.value).replace("_", "").lstrip("+-")
        if len(text) > limits.MAX_INT_DIGITS + 2 and not (text.startswith("0b") and len(text) <= 66):
            raise _Refused(f"an integer of {len(text):,} characters is above the limit "
                           f"MAX_INT_DIGITS={limits.MAX_INT_DIGITS} (docs/limits.md)", node.start_mark)
        value = super().construct_yaml_int(node)
        if abs(value) > limits.MAX_INT:
            raise _Refused(f"integer {short(value, 30)} is above the limit MAX_INT=2**62 (docs/limits.md)",
                           node.start_mark)
        return value

    def construct_object(self, node, deep=False):  # noqa: ANN001
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
            raise _Refused(f"bad value ({short_text(str(exc), 80)})", node.start_mark) from None


_CappedConstructor.add_constructor("tag:yaml.org,2002:int", _CappedConstructor.construct_yaml_int)


try:  # libyaml's event parser (fast, not recursive); the nodes are composed here, with the caps
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - a board without libyaml
    _CParser = None

if _CParser is not None:
    class _Loader(_CappedComposer, _CParser, _CappedConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            _CappedComposer.__init__(self)
            _CappedConstructor.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _CappedComposer, _CappedConstructor, Resolver):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _CappedComposer.__init__(self)
            _CappedConstructor.__init__(self)
            Resolver.__init__(self)


def _mark(exc: BaseException) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        pos = getattr(exc, "position", None)
        return f" at character {int(pos) + 1:,}" if isinstance(pos, int) else ""
    try:
        return f" at line {int(mark.line) + 1:,}, column {int(mark.column) + 1:,}"
    except (TypeError, ValueError, AttributeError):
        return ""


def parse_yaml(text: str, path: str | Path = "<yaml>") -> Any:
    """Parse one YAML document with the caps above; any failure is one ConfigError line."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise _error(path, f"refused YAML{_mark(exc)}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["parse error"])[0]
        raise _error(path, f"malformed YAML{_mark(exc)}: {short_text(str(problem), 120)}") from None
    except RecursionError:
        raise _error(path, f"nested deeper than the limit MAX_DEPTH={limits.MAX_DEPTH} (docs/limits.md)") from None
    except MemoryError:
        raise _error(path, "too large to parse in memory") from None
    except Exception as exc:  # noqa: BLE001 - the reader must not leak parser internals
        raise _error(path, f"malformed YAML: {type(exc).__name__}: {short_text(str(exc), 100)}") from None
    finally:
        try:
            loader.dispose()
        except Exception:  # noqa: BLE001
            pass


def load_yaml(path: str | Path, kind: str = "YAML file") -> Any:
    """Read (size, UTF-8) and parse a YAML file; any failure is one ConfigError line."""
    text = read_text(path, kind, limits.MAX_YAML_BYTES, "MAX_YAML_BYTES")
    return parse_yaml(text, path)


# -- JSON ------------------------------------------------------------------------------------------
class _BigInt(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(token[:40])
        self.token = token


def _json_int(token: str) -> int:
    if len(token.lstrip("-")) > limits.MAX_INT_DIGITS:
        raise _BigInt(token)
    return int(token)


def _depth_ok(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            if d > limits.MAX_DEPTH:
                return False
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return True


def parse_json(text: str, path: str | Path = "<json>") -> Any:
    """Parse JSON with capped integers and depth; any failure is one ConfigError line."""
    try:
        value = json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as exc:
        raise _error(path, f"malformed JSON at line {exc.lineno:,}, column {exc.colno:,}: "
                           f"{short_text(exc.msg, 80)}") from None
    except _BigInt as exc:
        off = text.find(exc.token)
        at = ""
        if off >= 0:
            line = text.count("\n", 0, off) + 1
            at = f" at line {line:,}, column {off - (text.rfind(chr(10), 0, off) + 1) + 1:,}"
        raise _error(path, f"refused JSON{at}: an integer of {len(exc.token.lstrip('-')):,} digits is above the "
                           f"limit MAX_INT_DIGITS={limits.MAX_INT_DIGITS} (docs/limits.md)") from None
    except RecursionError:
        raise _error(path, f"refused JSON: nested deeper than the limit MAX_DEPTH={limits.MAX_DEPTH} "
                           f"(docs/limits.md)") from None
    except (ValueError, TypeError, MemoryError) as exc:
        raise _error(path, f"malformed JSON: {short_text(str(exc), 100)}") from None
    if not _depth_ok(value):
        raise _error(path, f"refused JSON: nested deeper than the limit MAX_DEPTH={limits.MAX_DEPTH} (docs/limits.md)")
    return value


def read_json(path: str | Path, kind: str = "JSON file", expect: type | None = dict) -> Any:
    """Read (size, UTF-8) and parse a JSON file; ``expect`` checks the top-level type."""
    value = parse_json(read_text(path, kind, limits.MAX_JSON_BYTES, "MAX_JSON_BYTES"), path)
    if expect is not None and not isinstance(value, expect):
        want = "an object" if expect is dict else ("a list" if expect is list else expect.__name__)
        raise _error(path, f"expected {want} at the top level of the {kind}, got {type(value).__name__}")
    return value


# -- .npz --------------------------------------------------------------------------------------------
def load_npz(path: str | Path, kind: str = ".npz file", max_bytes: int = limits.MAX_NPZ_BYTES,
             error: Callable[[str], Exception] | None = None) -> dict[str, Any]:
    """Every array of an ``.npz`` file, loaded with ``allow_pickle=False`` after its headers are checked.

    Refused in one line: not a zip, a member that is not ``.npy``, an object (pickled) array,
    a header whose shape needs more bytes than the member holds, more than
    ``MAX_NPZ_UNCOMPRESSED_BYTES`` in total, or any read failure.
    """
    import numpy as np  # noqa: PLC0415

    path = Path(path)
    make = error or (lambda text: _error(path, text))
    try:
        _check_path(path, kind, max_bytes, "MAX_NPZ_BYTES")
    except ConfigError as exc:
        raise make(str(exc).split(": ", 1)[-1]) from None
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise make(f"cannot read ({exc.strerror})") from None
    if magic[:2] == b"\x1f\x8b":
        raise make(f"is gzip-compressed, expected a {kind} (a zip of .npy arrays)")
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise make(f"is not a {kind}: bytes 0-3 are {magic.hex(' ') or 'empty'}, expected a zip ('PK')")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > limits.MAX_NPZ_UNCOMPRESSED_BYTES:
                raise make(f"holds {total:,} bytes uncompressed, above the limit MAX_NPZ_UNCOMPRESSED_BYTES="
                           f"{limits.MAX_NPZ_UNCOMPRESSED_BYTES:,} (docs/limits.md)")
            for info in infos:
                name = info.filename
                if not name.endswith(".npy"):
                    raise make(f"member {short(name, 40)} is not a .npy array")
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
                if dtype.hasobject:
                    raise make(f"array {short(name[:-4], 40)} holds Python objects (pickle); "
                               f"litefly never loads pickled data")
                need = math.prod(shape) * dtype.itemsize
                if need > info.file_size:
                    raise make(f"array {short(name[:-4], 40)} declares shape {short(tuple(shape), 40)} "
                               f"({need:,} bytes) but holds {info.file_size:,} bytes (truncated or forged)")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except LiteflyError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many kinds
        raise make(f"cannot read as a {kind} ({type(exc).__name__}: {short_text(str(exc), 80)})") from None

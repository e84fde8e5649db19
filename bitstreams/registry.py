"""Registry of built bitstreams, each matched to the network engine and board it was built for.

One bitstream is one network engine: it serves every layer of the network it was built for
(and any other network whose envelope is the same). Entries are keyed by the engine
envelope's hash (:attr:`litefly.hw.spec.EngineEnvelope.config_hash`, whose first 32 bits are
the engine's ``CONFIG_HASH`` register).

Layout (root: the repo's ``bitstreams/`` folder, ``$LITEFLY_BITSTREAMS`` or ``--registry``)::

    <root>/<board>/<name>-<hash8>/
        <name>.bit       bitstream (PYNQ loads it with the .hwh of the same name)
        <name>.hwh       hardware handoff
        manifest.json    engine manifest (litefly.hw.generate)
        build.json       board, engine hash and envelope, the network it was built for,
                         clock, Vivado version, resources, timing, sha256 of each file above

``lookup(envelope, board)`` is what the host runtime calls; it refuses, in one line, a
missing bitstream (naming what the registry has for that board), a hash mismatch and a
bitstream whose files (``.bit``, ``.hwh``, manifest) are missing or altered.
Board-safe: stdlib + litefly's numpy-only modules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litefly import __version__
from litefly.errors import ConfigError, LiteflyError
from litefly.hw.spec import EngineEnvelope
from litefly.safeio import read_json, short

__all__ = ["BitstreamEntry", "BitstreamError", "default_root", "add", "entries", "find", "lookup", "verify"]


class BitstreamError(LiteflyError):
    """A missing or mismatched bitstream."""


def default_root() -> Path:
    """``$LITEFLY_BITSTREAMS`` or the ``bitstreams/`` folder of the litefly source tree."""
    env = os.environ.get("LITEFLY_BITSTREAMS")
    return Path(env) if env else Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BitstreamEntry:
    """One registered bitstream."""

    path: Path
    build: dict[str, Any]

    @property
    def name(self) -> str:
        return self.build["name"]

    @property
    def board(self) -> str:
        return self.build["board"]

    @property
    def config_hash(self) -> str:
        return self.build["config_hash"]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.config_hash[:8]}"

    @property
    def hash32(self) -> int:
        """The engine's ``CONFIG_HASH`` register value."""
        return int(self.config_hash[:8], 16)

    @property
    def network(self) -> dict[str, Any]:
        """The network the bitstream was built for (``{}`` if build.json does not say)."""
        net = self.build.get("network")
        return net if isinstance(net, dict) else {}

    @property
    def layers(self) -> list[str]:
        layers = self.network.get("layers")
        if not isinstance(layers, list):
            return []
        return [str(l.get("name")) for l in layers if isinstance(l, dict)]

    @property
    def bit(self) -> Path:
        return self.path / f"{self.name}.bit"

    @property
    def hwh(self) -> Path:
        return self.path / f"{self.name}.hwh"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def manifest_data(self) -> dict[str, Any]:
        return _read_json(self.manifest, f"bitstream {self.key}: manifest.json")

    @property
    def clock_mhz(self) -> float:
        return self.build.get("clock_mhz_actual") or self.build["clock_mhz"]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object through litefly.safeio (size, UTF-8, depth, integers), errors as one BitstreamError line."""
    try:
        return read_json(path, "JSON file")
    except ConfigError as exc:
        text = str(exc)
        raise BitstreamError(f"{what} is unreadable: {text.split(': ', 1)[-1]}") from None


#: build.json keys every entry needs, with their types (checked on load).
_BUILD_KEYS: dict[str, type | tuple[type, ...]] = {"name": str, "board": str, "config_hash": str,
                                                   "clock_mhz": (int, float)}


def _load(dirpath: Path) -> BitstreamEntry:
    what = f"bitstream {short(dirpath.name, 60)}: build.json"
    data = _read_json(dirpath / "build.json", what)
    for key, kind in _BUILD_KEYS.items():
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BitstreamError(f"{what}: {key}={short(value, 40)} is missing or not a "
                                 f"{'number' if key == 'clock_mhz' else 'string'}")
    if not data["name"].isidentifier() or len(data["name"]) > 128:
        raise BitstreamError(f"{what}: name={short(data['name'], 40)} is not an engine name")
    if len(data["config_hash"]) != 64 or any(c not in "0123456789abcdef" for c in data["config_hash"]):
        raise BitstreamError(f"{what}: config_hash={short(data['config_hash'], 40)} is not a SHA-256 hex digest")
    if len(data["board"]) > 64 or "/" in data["board"]:
        raise BitstreamError(f"{what}: board={short(data['board'], 40)} is not a board name")
    files = data.get("files", {})
    if not isinstance(files, dict):
        raise BitstreamError(f"{what}: files={short(files, 40)} is not a mapping")
    for fname, digest in files.items():
        if "/" in fname or "\\" in fname or fname in ("", ".", ".."):
            raise BitstreamError(f"{what}: names a file {short(fname, 40)} outside its folder")
        if not isinstance(digest, str):
            raise BitstreamError(f"{what}: sha256 of {short(fname, 40)} is {short(digest, 40)}, not a string")
    actual = data.get("clock_mhz_actual")
    if actual is not None and (isinstance(actual, bool) or not isinstance(actual, (int, float))):
        raise BitstreamError(f"{what}: clock_mhz_actual={short(actual, 40)} is not a number")
    return BitstreamEntry(path=dirpath, build=data)


def entries(root: Path | None = None) -> list[BitstreamEntry]:
    """Every registered bitstream, sorted by board and key."""
    root = Path(root or default_root())
    out = [_load(p.parent) for p in sorted(root.glob("*/*/build.json"))]
    return sorted(out, key=lambda e: (e.board, e.key))


def find(key: str, root: Path | None = None) -> BitstreamEntry:
    """An entry by ``<board>/<name>-<hash8>`` or ``<name>-<hash8>`` (or a unique name)."""
    matches = [e for e in entries(root)
               if key in (f"{e.board}/{e.key}", e.key, e.name, f"{e.board}/{e.name}")]
    if not matches:
        raise BitstreamError(f"no bitstream {key!r} in {root or default_root()}; see `litefly bitstreams list`")
    if len(matches) > 1:
        raise BitstreamError(f"{key!r} matches {len(matches)} bitstreams ("
                             + ", ".join(f"{e.board}/{e.key}" for e in matches) + "); give <board>/<name>-<hash8>")
    return matches[0]


def verify(entry: BitstreamEntry) -> None:
    """Check every file against the sha256 recorded in build.json, and the manifest's hash."""
    files = entry.build.get("files", {})
    for fname in (f"{entry.name}.bit", f"{entry.name}.hwh", "manifest.json"):
        if fname not in files:
            raise BitstreamError(f"bitstream {entry.key}: build.json records no sha256 for {fname}")
    for fname, digest in files.items():
        p = entry.path / fname
        if not p.exists():
            raise BitstreamError(f"bitstream {entry.key}: {fname} is missing from {entry.path} (copy the whole "
                                 f"registry folder: PYNQ needs the .bit and .hwh side by side)")
        if sha256(p) != digest:
            raise BitstreamError(f"bitstream {entry.key}: {fname} sha256 does not match build.json (file altered?)")
    mh = entry.manifest_data.get("config_hash")
    if mh != entry.config_hash:
        raise BitstreamError(f"bitstream {entry.key}: manifest.json config hash {str(mh)[:8]} does not match "
                             f"build.json {entry.config_hash[:8]}")


def _describe(e: BitstreamEntry) -> str:
    return f"{e.key} (0x{e.hash32:08x})"


def _changed(entry: BitstreamEntry, envelope: EngineEnvelope) -> str:
    """What differs between the envelope ``entry`` was built for and ``envelope``: ``row_quads false
    built, true now`` for at most three settings (a setting an older build.json lacks is at its
    default), else that the settings changed."""
    built = entry.build.get("envelope")
    if not isinstance(built, dict):
        return "network or engine settings changed"
    fields = {f.name: built.get(f.name, f.default) for f in dataclasses.fields(EngineEnvelope) if f.name != "name"}
    now = envelope.to_dict()

    def word(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else short(v, 20)

    diffs = [f"{k} {word(v)} built, {word(now[k])} now" for k, v in fields.items()
             if v is not dataclasses.MISSING and v != now[k]]
    if not diffs:
        return "network or engine settings changed"
    return "; ".join(diffs[:3]) + (f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else "")


def lookup(envelope: EngineEnvelope, board: str, root: Path | None = None) -> BitstreamEntry:
    """The verified bitstream built for exactly this engine envelope (by its hash) on ``board``.

    One-line refusals: nothing for this engine on this board (listing what the board has, or
    naming the board it was built for), an entry whose build.json, folder name or manifest
    disagrees with the hash, and missing or altered files (``.hwh`` included)."""
    root = Path(root or default_root())
    want = envelope.config_hash
    name = envelope.name
    where = f"engine {name!r} (0x{envelope.hash32:08x})"
    on_board = [_load(p.parent) for p in sorted((root / board).glob("*/build.json"))] if (root / board).is_dir() \
        else []
    hits = [e for e in on_board if e.config_hash == want]
    if not hits:
        how = (f"build it with `litefly build NETWORK --board {board} -o DIR`, run Vivado there and "
               f"`litefly bitstreams add DIR`")
        other_board = sorted({e.board for e in entries(root) if e.config_hash == want})
        if other_board:
            raise BitstreamError(f"no bitstream for {where} on {board}: it was built for {', '.join(other_board)}; "
                                 f"{how}")
        same_name = [e for e in on_board if e.name == name]
        if same_name:
            have = ", ".join(f"0x{e.hash32:08x}" for e in same_name)
            raise BitstreamError(f"bitstream for engine {name!r} on {board} has engine hash {have}, the network's "
                                 f"is 0x{envelope.hash32:08x} ({_changed(same_name[0], envelope)}: rebuild it, or "
                                 f"run with the built settings); {how}")
        have = ", ".join(_describe(e) for e in on_board) or "none"
        raise BitstreamError(f"no bitstream for {where} on {board} in {root} (registered for {board}: {have}); {how}")
    hits.sort(key=lambda e: (e.name != name, e.key))
    entry = hits[0]
    if entry.board != board:
        raise BitstreamError(f"bitstream {entry.key}: build.json says board {entry.board}, "
                             f"expected {board}")
    if entry.path.name != entry.key:
        raise BitstreamError(f"bitstream {entry.path.name[:60]}: build.json says engine hash "
                             f"0x{entry.hash32:08x} ({entry.key}), its folder name another (build.json edited or "
                             f"folder renamed): register the build again")
    verify(entry)
    return entry


def add(build_dir: str | Path, root: Path | None = None, force: bool = False) -> BitstreamEntry:
    """Copy a finished Vivado build (``litefly build`` + ``vivado``) into the registry."""
    from litefly.boards.boards import get_board  # noqa: PLC0415
    from litefly.boards.vivado import read_results  # noqa: PLC0415

    src = Path(build_dir)
    info_path = src / "build_info.json"
    if not info_path.exists():
        raise BitstreamError(f"{src}: no build_info.json; expected a directory written by `litefly build`")
    info = _read_json(info_path, f"{short(str(src), 80)}: build_info.json")
    for key in ("name", "board", "config_hash", "clock_mhz"):
        if key not in info:
            raise BitstreamError(f"{short(str(src), 80)}: build_info.json has no {key!r}")
    name, board = info["name"], info["board"]
    if not isinstance(name, str) or not name.isidentifier() or not isinstance(info["config_hash"], str):
        raise BitstreamError(f"{short(str(src), 80)}: build_info.json name={short(name, 40)} or config_hash "
                             f"is not valid")
    get_board(board)
    env_data = info.get("envelope")
    if not isinstance(env_data, dict):
        raise BitstreamError(f"{short(str(src), 80)}: build_info.json has no engine envelope (a build from an "
                             f"older litefly: run `litefly build NETWORK --board {short(board, 20)}` again)")
    try:
        env = EngineEnvelope.from_dict(env_data)
    except (ConfigError, TypeError, ValueError) as exc:
        raise BitstreamError(f"{short(str(src), 80)}: build_info.json envelope is not valid ({short(str(exc), 80)})") \
            from None
    if env.config_hash != info["config_hash"]:
        raise BitstreamError(f"{short(str(src), 80)}: build_info.json config_hash {str(info['config_hash'])[:8]} is "
                             f"not its envelope's hash {env.config_hash[:8]} (file edited?)")
    key = f"{name}-{info['config_hash'][:8]}"
    need = [f"{name}.bit", f"{name}.hwh", "manifest.json"]
    for fname in need:
        if not (src / fname).exists():
            raise BitstreamError(f"{src}: {fname} is missing; run `vivado -mode batch -source build.tcl` there first")
    manifest = _read_json(src / "manifest.json", f"{short(str(src), 80)}: manifest.json")
    if manifest.get("config_hash") != info["config_hash"]:
        raise BitstreamError(f"{src}: manifest.json config hash {str(manifest.get('config_hash'))[:8]} does not "
                             f"match build_info.json {info['config_hash'][:8]}")
    results = read_results(src)
    dest = Path(root or default_root()) / board / key
    if dest.exists():
        if not force:
            raise BitstreamError(f"bitstream {board}/{key} is already registered (use --force to replace it)")
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for fname in need:
        shutil.copyfile(src / fname, dest / fname)
    build = {
        "name": name, "board": board, "part": info.get("part"), "config_hash": info["config_hash"],
        "hash32": f"0x{env.hash32:08x}", "envelope": env.to_dict(), "network": info.get("network"),
        "module": info.get("module"), "clock_mhz": info["clock_mhz"],
        "clock_mhz_actual": results.get("clock_mhz_actual"), "vivado_version": results.get("vivado_version"),
        "resources": results.get("utilization", {}),
        "timing": {k: results.get(k) for k in ("wns_ns", "tns_ns", "whs_ns", "timing_met")},
        "ip": info.get("ip"), "litefly_version": __version__,
        "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {fname: sha256(dest / fname) for fname in need},
    }
    (dest / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    return _load(dest)

"""Registry of built bitstreams, each matched to the layer config and board it was built for.

Layout (root: the repo's ``bitstreams/`` folder, ``$LITEFLY_BITSTREAMS`` or ``--registry``)::

    <root>/<board>/<name>-<hash8>/
        <name>.bit       bitstream (PYNQ loads it with the .hwh of the same name)
        <name>.hwh       hardware handoff
        manifest.json    engine manifest (litefly.hw.generate)
        build.json       board, config hash, chain summary, clock, Vivado version,
                         resources, timing, sha256 of each file above

``lookup(layer, board)`` is what the host runtime calls; it refuses, in one line, a
bitstream whose board, config hash or file checksums do not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from litefly import __version__
from litefly.config import LayerConfig
from litefly.errors import LiteflyError

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
        return json.loads(self.manifest.read_text())

    @property
    def clock_mhz(self) -> float:
        return self.build.get("clock_mhz_actual") or self.build["clock_mhz"]


def _load(dirpath: Path) -> BitstreamEntry:
    build = dirpath / "build.json"
    try:
        data = json.loads(build.read_text())
    except (OSError, ValueError) as exc:
        raise BitstreamError(f"bitstream {dirpath.name}: build.json is unreadable ({exc})") from None
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
            raise BitstreamError(f"bitstream {entry.key}: {fname} is missing from {entry.path}")
        if sha256(p) != digest:
            raise BitstreamError(f"bitstream {entry.key}: {fname} sha256 does not match build.json (file altered?)")
    mh = entry.manifest_data.get("config_hash")
    if mh != entry.config_hash:
        raise BitstreamError(f"bitstream {entry.key}: manifest.json config hash {str(mh)[:8]} does not match "
                             f"build.json {entry.config_hash[:8]}")


def lookup(layer: LayerConfig, board: str, root: Path | None = None) -> BitstreamEntry:
    """The verified bitstream built for exactly this layer config on ``board``."""
    root = Path(root or default_root())
    want = f"{layer.name}-{layer.config_hash[:8]}"
    path = root / board / want
    if not (path / "build.json").exists():
        all_ = entries(root)
        other_board = [e for e in all_ if e.config_hash == layer.config_hash]
        if other_board:
            boards = ", ".join(sorted({e.board for e in other_board}))
            raise BitstreamError(f"bitstream {want}: built for {boards}, not {board}; "
                                 f"run `litefly build CONFIG --board {board}` and `litefly bitstreams add`")
        same_name = [e for e in all_ if e.name == layer.name and e.board == board]
        if same_name:
            have = ", ".join(e.config_hash[:8] for e in same_name)
            raise BitstreamError(f"bitstream for layer {layer.name!r} on {board} has config hash {have}, "
                                 f"the layer's is {layer.config_hash[:8]} (config changed: rebuild it)")
        raise BitstreamError(f"no bitstream {board}/{want} in {root}; build one with "
                             f"`litefly build CONFIG --board {board}` and `litefly bitstreams add DIR`")
    entry = _load(path)
    if entry.board != board:
        raise BitstreamError(f"bitstream {want}: build.json says board {entry.board}, expected {board}")
    if entry.config_hash != layer.config_hash:
        raise BitstreamError(f"bitstream {want}: build.json config hash {entry.config_hash[:8]} does not match "
                             f"the layer's {layer.config_hash[:8]}")
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
    info = json.loads(info_path.read_text())
    name, board = info["name"], info["board"]
    get_board(board)
    key = f"{name}-{info['config_hash'][:8]}"
    need = [f"{name}.bit", f"{name}.hwh", "manifest.json"]
    for fname in need:
        if not (src / fname).exists():
            raise BitstreamError(f"{src}: {fname} is missing; run `vivado -mode batch -source build.tcl` there first")
    manifest = json.loads((src / "manifest.json").read_text())
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
        "chain": info.get("chain"), "clock_mhz": info["clock_mhz"],
        "clock_mhz_actual": results.get("clock_mhz_actual"), "vivado_version": results.get("vivado_version"),
        "resources": results.get("utilization", {}),
        "timing": {k: results.get(k) for k in ("wns_ns", "tns_ns", "whs_ns", "timing_met")},
        "ip": info.get("ip"), "litefly_version": __version__,
        "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": {fname: sha256(dest / fname) for fname in need},
    }
    (dest / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    return _load(dest)

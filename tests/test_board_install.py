"""Board-side install: what a PYNQ image (Python 3.10, numpy 1.x, no torch/amaranth/cocotb) runs.

Runs in the default suite and, in ``.ci/run``, in a separate Python 3.10 venv with numpy 1.26
and pynq 3.1.2 where litefly is installed with ``pip install .`` (not editable).
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import litefly

pytestmark = pytest.mark.board

ROOT = Path(__file__).resolve().parents[1]
PC_ONLY = ("torch", "amaranth", "cocotb", "cocotbext", "matplotlib", "scipy", "sklearn", "tqdm")

# Every module a board imports (README "Boards", issue 13): the runtime, the CLI entry point,
# the registry and the board definitions, and what they import.
BOARD_MODULES = [
    "litefly", "litefly.config", "litefly.chain", "litefly.fixed", "litefly.errors", "litefly.cli.main",
    "litefly.hw.regmap", "litefly.hw.spec", "litefly.hw.wireformat",
    "litefly.host.transport", "litefly.host.driver", "litefly.host.runtime", "litefly.host.golden_transport",
    "litefly.host.pynq_transport", "litefly.host.board_env", "litefly.network",
    "litefly.host.accuracy", "litefly.host.bench", "litefly.host.cli",
    "litefly.bitstreams.registry", "litefly.bitstreams.cli", "litefly.boards.boards",
]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT / "tests")


def test_installed_distribution_matches_the_package():
    dist = importlib.metadata.distribution("litefly")
    assert dist.version == litefly.__version__
    assert dist.metadata["Requires-Python"] == ">=3.10", "stale install metadata: rerun pip install -e ."
    direct = dist.read_text("direct_url.json")
    editable = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
    # a develop-mode install (setup.py develop / a .pth, no direct_url.json) imports the source tree too
    in_tree = Path(litefly.__file__).resolve() == (ROOT / "litefly" / "__init__.py").resolve()
    editable = editable or (direct is None and in_tree)
    if not editable:
        # `pip install .`: the tests must exercise the installed copy, not the source tree.
        pkg = Path(litefly.__file__).resolve().parent
        assert pkg == Path(dist.locate_file("litefly")).resolve(), f"litefly imported from {pkg}, not the install"
        assert (pkg / "host" / "runtime.py").exists() and (pkg / "bitstreams" / "registry.py").exists()
    reqs = " ".join(dist.requires or [])
    assert "pynq" in reqs and 'extra == "board"' in reqs


def test_board_imports_pull_in_no_pc_tools():
    code = ("import sys\n"
            f"mods = {BOARD_MODULES!r}\n"
            "import importlib\n"
            "for m in mods: importlib.import_module(m)\n"
            f"bad = [m for m in {PC_ONLY!r} if m in sys.modules]\n"
            "assert not bad, bad\n"
            "import numpy; print(numpy.__version__)\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr


def test_board_imports_work_with_pc_tools_blocked():
    code = ("import sys\n"
            f"for m in {PC_ONLY!r} + ('pynq',): sys.modules[m] = None\n"
            "import importlib\n"
            f"for m in {BOARD_MODULES!r}: importlib.import_module(m)\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr


def test_cli_help_runs():
    r = subprocess.run([sys.executable, "-m", "litefly", "--help"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT / "tests")
    assert r.returncode == 0, r.stderr
    assert "bench" in r.stdout and "bitstreams" in r.stdout and "board" in r.stdout
    r = subprocess.run([sys.executable, "-m", "litefly", "board", "check", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT / "tests")
    assert r.returncode == 0, r.stderr
    assert "--backend" in r.stdout and "--report" in r.stdout


def test_missing_module_advice_fits_a_board(tmp_path):
    """A command whose module needs a PC tool says it runs on a PC (and what runs on a board); a missing
    pynq names the board extras; each in one line with exit 2."""
    (tmp_path / "litefly_pc_cmd.py").write_text("import amaranth\ncmd = None\n")
    (tmp_path / "litefly_board_cmd.py").write_text("import pynq\ncmd = None\n")
    for module, expect in (("litefly_pc_cmd", "needs the Python module 'amaranth' (PC tools): run it on a PC with "
                                              "pip install 'litefly[pc]'; on a PYNQ board use the board commands"),
                           ("litefly_board_cmd", "needs the Python module 'pynq', which comes with the board's PYNQ "
                                                 "image: on the board, pip install 'litefly[board]'")):
        code = ("import sys\n"
                f"sys.path.insert(0, {str(tmp_path)!r})\n"
                "sys.modules['amaranth'] = None; sys.modules['pynq'] = None\n"
                "from litefly.cli import main as m\n"
                f"m.COMMANDS['x'] = ('{module}:cmd', 'test')\n"
                "m.main(['x'])\n")
        r = _run(code)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: litefly x {expect}"), r.stderr


# -- nothing newer than Python 3.10 / numpy 1.21 in what the board imports -----------------

_NEW_MODULES = {"tomllib": "3.11"}
_NEW_NAMES = {  # module -> {name: first version}
    "typing": {"Self": "3.11", "LiteralString": "3.11", "Never": "3.11", "assert_never": "3.11",
               "assert_type": "3.11", "reveal_type": "3.11", "Required": "3.11", "NotRequired": "3.11",
               "TypeVarTuple": "3.11", "Unpack": "3.11", "dataclass_transform": "3.11", "override": "3.12",
               "TypeAliasType": "3.12", "get_overloads": "3.11"},
    "enum": {"StrEnum": "3.11", "verify": "3.11", "ReprEnum": "3.11", "global_enum": "3.11"},
    "datetime": {"UTC": "3.11"},
    "itertools": {"batched": "3.12"},
    "asyncio": {"TaskGroup": "3.11", "timeout": "3.11", "Runner": "3.11"},
    "hashlib": {"file_digest": "3.11"},
    "contextlib": {"chdir": "3.11"},
    "operator": {"call": "3.11"},
}
_NUMPY2_ONLY = {"unstack", "bitwise_count", "astype", "isdtype", "concat", "permute_dims", "matrix_transpose",
                "vecdot", "vecmat", "matvec", "trapezoid", "long", "ulong", "cumulative_sum", "cumulative_prod"}


def _module_file(name: str) -> Path:
    import importlib.util
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin, name
    return Path(spec.origin)


def _newer_than_310(path: Path) -> list[str]:
    src = path.read_text()
    tree = ast.parse(src, str(path))     # under Python 3.10 this alone rejects 3.11+ syntax
    found: list[str] = []
    np_names = {"numpy"}
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in _NEW_MODULES:
                    found.append(f"{where}: import {a.name} (Python {_NEW_MODULES[a.name]})")
                if a.name == "numpy":
                    np_names.add(a.asname or "numpy")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module in _NEW_MODULES:
                found.append(f"{where}: from {node.module} (Python {_NEW_MODULES[node.module]})")
            for a in node.names:
                v = _NEW_NAMES.get(node.module, {}).get(a.name)
                if v:
                    found.append(f"{where}: from {node.module} import {a.name} (Python {v})")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            v = _NEW_NAMES.get(node.value.id, {}).get(node.attr)
            if v:
                found.append(f"{where}: {node.value.id}.{node.attr} (Python {v})")
            if node.value.id in np_names and node.attr in _NUMPY2_ONLY:
                found.append(f"{where}: numpy.{node.attr} (numpy 2 only)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id in np_names \
                and node.func.attr == "asarray" and any(k.arg == "copy" for k in node.keywords):
            found.append(f"{where}: numpy.asarray(copy=...) (numpy 2 only)")
        elif type(node).__name__ in ("TryStar", "TypeAlias", "TypeVar", "ParamSpec", "TypeVarTuple"):
            found.append(f"{where}: {type(node).__name__} syntax (Python 3.11+)")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and getattr(node, "type_params", None):
            found.append(f"{where}: PEP 695 type parameters (Python 3.12)")
    return found


@pytest.mark.parametrize("module", BOARD_MODULES)
def test_board_module_uses_nothing_newer_than_python310_or_numpy121(module):
    assert _newer_than_310(_module_file(module)) == []


def test_the_310_check_has_teeth(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\nfrom typing import Self\nimport tomllib\nfrom enum import StrEnum\n"
                   "import datetime\nx = datetime.UTC\ny = np.unstack(np.zeros(2))\n"
                   "z = np.asarray([1], copy=False)\n")
    found = " ".join(_newer_than_310(bad))
    for what in ("typing import Self", "import tomllib", "StrEnum", "datetime.UTC", "numpy.unstack", "copy="):
        assert what in found, what

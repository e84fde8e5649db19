"""Mutation testing (``scripts/mutation.py``): the mutant machinery in the default run (cheap), the
mutation run itself behind the ``mutation`` marker (``pytest -m mutation``, tens of minutes)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "mutation.py"


def _module():
    spec = importlib.util.spec_from_file_location("litefly_mutation", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["litefly_mutation"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mutants_are_enumerated_and_apply_cleanly(tmp_path):
    mut = _module()
    total = 0
    for f in ("litefly/fixed.py", "litefly/network.py", "hw/wireformat.py", "hw/spec.py"):
        ms = mut.enumerate_mutants(f)
        assert len(ms) >= 10, f
        total += len(ms)
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        for m in ms[:: max(1, len(ms) // 5)]:
            (tmp_path / f).write_text((ROOT / f).read_text())
            mut.apply(m, tmp_path)
            text = (tmp_path / f).read_text()
            assert text != (ROOT / f).read_text()
            compile(text, f, "exec")                     # every mutant is valid Python
    assert total >= 40
    # never inside an error message
    for m in mut.enumerate_mutants("litefly/network.py"):
        line = (ROOT / m.file).read_text().splitlines()[m.line - 1]
        assert "raise" not in line and 'f"' not in line[:m.col], m.ident


@pytest.mark.mutation
def test_mutation_score_at_least_90_percent(tmp_path):
    """The default tests kill >= 90% of the non-equivalent mutants of a seeded sample of >= 40
    (golden model, host maths; the RTL generator with LITEFLY_MUTATION_RTL=1). Equivalent survivors
    are listed, with their reasons, in scripts/mutation.py's EQUIVALENT."""
    report = tmp_path / "mutation.json"
    args = [sys.executable, str(SCRIPT), "--sample", os.environ.get("LITEFLY_MUTANTS", "44"), "--seed", "1",
            "--json", str(report)]
    if os.environ.get("LITEFLY_MUTATION_RTL") != "1":
        args.append("--no-rtl")
    r = subprocess.run(args, capture_output=True, text=True, timeout=4 * 3600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    data = json.loads(report.read_text())
    assert data["total"] - data["errors"] >= 40
    assert data["score"] >= 0.9, r.stdout[-3000:]

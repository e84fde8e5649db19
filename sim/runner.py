"""Build the engine for a layer (cached) and run a cocotb test module on it, in a child process.

The child process builds with ``cocotb_tools.runner`` and runs the simulator; the test
module reads its parameters with :func:`load_params` and writes a results JSON file with
:func:`save_results`. A failing simulation therefore never takes the caller down: the
caller gets a dict with ``passed`` and whatever the test recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
import xml.etree.ElementTree as ET

from litefly.config import LayerConfig
from litefly.errors import ToolError

from .tools import check_simulator, simulator_env

__all__ = ["cache_dir", "prepare", "run_cocotb", "load_params", "save_results", "PARAMS_ENV"]

PARAMS_ENV = "LITEFLY_SIM_PARAMS"
TIMESCALE = ("1ns", "1ps")


def cache_dir() -> Path:
    """``$LITEFLY_CACHE`` or ``~/.cache/litefly``."""
    return Path(os.environ.get("LITEFLY_CACHE") or Path.home() / ".cache" / "litefly")


def prepare(layer: LayerConfig, simulator: str = "verilator", fault: str | None = None) -> dict[str, Any]:
    """Generate the Verilog and choose the build directory: ``<cache>/sim/<module>-<sim>-<sha of the Verilog>``."""
    from litefly.hw.generate import generate

    check_simulator(simulator)
    rtl = cache_dir() / "rtl" / f"{layer.name}-{layer.config_hash[:12]}-{fault or 'ok'}"
    gen = generate(layer, rtl, fault=fault)
    digest = hashlib.sha256(gen.verilog.read_bytes()).hexdigest()[:16]
    build = cache_dir() / "sim" / f"{gen.module}-{simulator}-{digest}"
    return {"verilog": str(gen.verilog), "module": gen.module, "build_dir": str(build),
            "manifest": gen.manifest_data, "simulator": simulator}


def run_cocotb(layer: LayerConfig, test_module: str, params: dict[str, Any], simulator: str = "verilator",
               fault: str | None = None, timeout_s: float = 3600.0, testcase: str | None = None,
               quiet: bool = True) -> dict[str, Any]:
    """Run ``test_module`` (importable, e.g. ``litefly.sim.tb_engine``) against the engine of ``layer``.

    ``params`` (JSON-able) reach the test through :func:`load_params`. Returns the dict the
    test saved with :func:`save_results`, plus ``passed`` (all cocotb tests passed),
    ``build_seconds``-free bookkeeping: ``log`` (path of the simulator's output) and ``module``.
    """
    job = prepare(layer, simulator, fault)
    with tempfile.TemporaryDirectory(prefix="litefly_sim_") as tmp:
        tmp = Path(tmp)
        results = tmp / "results.json"
        pfile = tmp / "params.json"
        full = dict(params)
        full.update(layer=layer.to_dict(), results=str(results), module=job["module"])
        pfile.write_text(json.dumps(full))
        jfile = tmp / "job.json"
        job.update(test_module=test_module, testcase=testcase, params_file=str(pfile),
                   results_xml=str(tmp / "results.xml"))
        jfile.write_text(json.dumps(job, default=str))
        log = Path(job["build_dir"]).parent / f"{job['module']}-{simulator}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = simulator_env(simulator)
        env[PARAMS_ENV] = str(pfile)
        with open(log, "w") as out:
            try:
                proc = subprocess.run([sys.executable, "-m", "litefly.sim.runner", str(jfile)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise ToolError(f"simulation of {layer.name!r} did not finish within {timeout_s:.0f} s "
                                f"(log: {log})") from None
        data: dict[str, Any] = json.loads(results.read_text()) if results.exists() else {}
        xml = Path(job["results_xml"])
        passed, failures = _read_results(xml)
        if proc.returncode != 0 and not xml.exists():
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-5:]).strip()
            raise ToolError(f"simulator build/run failed for {layer.name!r} (log: {log}): {tail.splitlines()[-1] if tail else ''}")
        data.update(passed=passed and proc.returncode == 0, failures=failures, log=str(log), module=job["module"])
        return data


def _read_results(xml: Path) -> tuple[bool, list[str]]:
    if not xml.exists():
        return False, ["no results.xml"]
    root = ET.parse(xml).getroot()
    failures = []
    for case in root.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            failures.append(f"{case.get('name')}: {(bad.get('message') or bad.text or '').strip()[:300]}")
    return not failures and any(True for _ in root.iter("testcase")), failures


def load_params() -> dict[str, Any]:
    """In a cocotb test: the parameters given to :func:`run_cocotb`."""
    path = os.environ.get(PARAMS_ENV)
    if not path:
        raise RuntimeError(f"{PARAMS_ENV} is not set: run this test module through litefly.sim.runner.run_cocotb")
    return json.loads(Path(path).read_text())


def save_results(data: dict[str, Any]) -> None:
    """In a cocotb test: record results for the caller of :func:`run_cocotb` (merged on repeated calls)."""
    path = Path(load_params()["results"])
    old = json.loads(path.read_text()) if path.exists() else {}
    old.update(data)
    path.write_text(json.dumps(old, default=_jsonable))


def _jsonable(v: Any) -> Any:
    try:
        import numpy as np
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:
        pass
    return str(v)


def _child(job_file: str) -> int:
    """Child process: build (unless cached) and run the cocotb tests."""
    from cocotb_tools.runner import get_runner

    job = json.loads(Path(job_file).read_text())
    sim = job["simulator"]
    build = Path(job["build_dir"])
    runner = get_runner(sim)
    marker = build / ".litefly-built"
    args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] if sim == "verilator" else []
    # Verilator rewrites only changed files, so a repeated build of cached sources is a no-op make.
    runner.build(sources=[job["verilog"]], hdl_toplevel=job["module"], build_dir=build, timescale=TIMESCALE,
                 build_args=args, always=not marker.exists())
    marker.write_text("ok\n")
    runner.test(hdl_toplevel=job["module"], test_module=job["test_module"], testcase=job.get("testcase"),
                build_dir=build, test_dir=build, results_xml=job["results_xml"], timescale=TIMESCALE)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))

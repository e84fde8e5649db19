"""Build the network engine of an envelope (cached) and run a cocotb test module on it, in a
child process.

The child process builds with ``cocotb_tools.runner`` (unless a build of the same Verilog is
cached) and runs the simulator; the test module reads its parameters with
:func:`load_params` and writes a results JSON file with :func:`save_results`. A failing or
hanging simulation therefore never takes the caller down: the caller gets a dict with
``passed``, ``failures`` and whatever the test recorded, or a one-line :class:`ToolError`
(simulator missing, build failed, wall-clock timeout).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from litefly.errors import ToolError
from litefly.hw.spec import EngineEnvelope

from litefly.progress import status

from .tools import check_simulator, simulator_env

__all__ = ["cache_dir", "prepare", "run_cocotb", "load_params", "save_results", "PARAMS_ENV", "TIMESCALE"]

PARAMS_ENV = "LITEFLY_SIM_PARAMS"
TIMESCALE = ("1ns", "1ps")
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
# The network engine's wide datapath makes the model's C++ the simulation's bottleneck: -O1
# with only the top level public (cocotb drives ports only) runs the VGG engine at about 40k
# cycles/s, against 1.7k with cocotb's default --public-flat-rw at -O0, and builds in about
# 2 minutes (override with LITEFLY_VERILATOR_OPT).
VERILATOR_OPT = os.environ.get("LITEFLY_VERILATOR_OPT", "-O1")
VERILATOR_PUBLIC = ("--public-depth", "1")     # instead of cocotb's --public-flat-rw
BUILD_FLAVOUR = f"{VERILATOR_OPT.lstrip('-')}p1"


def cache_dir() -> Path:
    """``$LITEFLY_CACHE`` or ``~/.cache/litefly``."""
    return Path(os.environ.get("LITEFLY_CACHE") or Path.home() / ".cache" / "litefly")


def prepare(envelope: EngineEnvelope, simulator: str = "verilator", fault: str | None = None) -> dict[str, Any]:
    """Generate the engine's Verilog and choose its build directory
    ``<cache>/sim/<module>-<simulator>-<sha256 of the Verilog>``: a changed generator rebuilds,
    an unchanged one reuses the build."""
    try:
        from litefly.hw.generate import generate
    except ImportError as exc:
        raise ToolError(f"the network engine generator is not available (litefly.hw.generate): {exc}") from None

    check_simulator(simulator)
    key = _generator_key(envelope, fault)
    gen_dir = cache_dir() / "rtl" / key
    meta = gen_dir / "generated.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        text = (gen_dir / info["verilog"]).read_bytes()
        module, manifest, vname = info["module"], info["manifest"], info["verilog"]
    else:
        with tempfile.TemporaryDirectory(prefix="litefly_rtl_") as rtl:
            gen = generate(envelope, Path(rtl), fault=fault)
            verilog = Path(gen.verilog)
            text = verilog.read_bytes()
            module, manifest, vname = gen.module, getattr(gen, "manifest_data", {}), verilog.name
        gen_dir.mkdir(parents=True, exist_ok=True)
        (gen_dir / vname).write_bytes(text)
        tmp = meta.with_name(f"generated.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps({"verilog": vname, "module": module, "manifest": manifest}, default=str))
        tmp.replace(meta)
    digest = hashlib.sha256(text).hexdigest()[:16]
    flavour = f"-{BUILD_FLAVOUR}" if simulator == "verilator" else ""
    build = cache_dir() / "sim" / f"{module}-{simulator}-{digest}{flavour}"
    build.mkdir(parents=True, exist_ok=True)
    kept = build / vname                     # the Verilog the build is made from, kept beside it
    if not kept.exists():
        tmp = kept.with_name(f"{kept.name}.tmp{os.getpid()}")
        tmp.write_bytes(text)
        tmp.replace(kept)
    return {"verilog": str(kept), "module": module, "build_dir": str(build), "manifest": manifest,
            "simulator": simulator, "digest": digest}


def _generator_key(envelope: EngineEnvelope, fault: str | None) -> str:
    """Hash of what the generated Verilog depends on: the generator's sources, the envelope, the fault."""
    import amaranth

    import litefly.hw as hw_pkg
    h = hashlib.sha256()
    for f in sorted(Path(hw_pkg.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(json.dumps(envelope.to_dict(), sort_keys=True).encode())
    h.update(f"{fault}|{amaranth.__version__}".encode())
    return f"{envelope.name}-{fault or 'ok'}-{h.hexdigest()[:16]}"


def run_cocotb(envelope: EngineEnvelope, test_module: str, params: dict[str, Any], simulator: str = "verilator",
               fault: str | None = None, timeout_s: float = 1800.0, testcase: str | None = None,
               extra_path: list[str] | None = None) -> dict[str, Any]:
    """Run ``test_module`` (importable, e.g. ``litefly.host.sim_session``) against the engine of
    ``envelope``.

    ``params`` (JSON-able) reach the test through :func:`load_params` (with ``envelope``,
    ``results`` and ``module`` added). Returns the dict the test saved with
    :func:`save_results`, plus ``passed`` (every cocotb test passed), ``failures`` (one line per
    failed test), ``log`` and ``module``. A simulation still running after ``timeout_s`` wall
    seconds is killed and raises a one-line :class:`ToolError`.
    """
    job = prepare(envelope, simulator, fault)
    with tempfile.TemporaryDirectory(prefix="litefly_sim_") as tmp:
        tmp = Path(tmp)
        results = tmp / "results.json"
        pfile = tmp / "params.json"
        full = dict(params)
        full.update(envelope=envelope.to_dict(), results=str(results), module=job["module"], fault=fault)
        pfile.write_text(json.dumps(full, default=_jsonable))
        jfile = tmp / "job.json"
        job.update(test_module=test_module, testcase=testcase, params_file=str(pfile),
                   results_xml=str(tmp / "results.xml"), test_dir=str(tmp))
        jfile.write_text(json.dumps(job, default=str))
        log = tmp / "sim.log"
        env = simulator_env(simulator)
        env[PARAMS_ENV] = str(pfile)
        if simulator == "verilator":
            opt = f"OPT_FAST={VERILATOR_OPT} OPT_SLOW={VERILATOR_OPT} OPT_GLOBAL={VERILATOR_OPT}"
            env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} {opt}".strip()
        if extra_path:
            env["PYTHONPATH"] = os.pathsep.join(list(extra_path) + [env.get("PYTHONPATH", "")])
        built = (Path(job["build_dir"]) / ".litefly-built").exists()
        what = (f"simulating engine {envelope.name!r}" if built else
                f"building the {simulator} model of engine {envelope.name!r} (a few minutes), then simulating")
        with open(log, "w") as out, status(what):
            proc = subprocess.Popen([sys.executable, *_child_argv(jfile)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                kept = _keep_log(log, job)
                raise ToolError(f"simulation of engine {envelope.name!r} ({test_module}) did not finish within "
                                f"{timeout_s:.0f} s and was stopped (log: {kept})") from None
        kept = _keep_log(log, job)
        data: dict[str, Any] = {}
        if results.exists():
            try:
                data = json.loads(results.read_text())
            except json.JSONDecodeError:
                data = {}
        xml = Path(job["results_xml"])
        passed, failures = _read_results(xml)
        if rc != 0 and not xml.exists():
            raise ToolError(f"simulator build/run failed for engine {envelope.name!r} (exit {rc}): "
                            f"{_last_line(kept)} (log: {kept})")
        data.update(passed=passed and rc == 0, failures=failures, log=str(kept), module=job["module"],
                    build_dir=job["build_dir"])
        return data


def _child_argv(job_file: Path) -> list[str]:
    return ["-m", "litefly.sim.runner", str(job_file)]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _keep_log(log: Path, job: dict[str, Any]) -> Path:
    """Copy the simulator's output next to the build (the temporary directory goes away)."""
    dst = Path(job["build_dir"]).parent / f"{job['module']}-{job['simulator']}-{os.getpid()}.log"
    try:
        dst.write_bytes(log.read_bytes() if log.exists() else b"")
    except OSError:
        return log
    return dst


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if "error" in ln.lower()]
    return (errs[-1] if errs else (lines[-1] if lines else "no output"))[:300]


def _read_results(xml: Path) -> tuple[bool, list[str]]:
    if not xml.exists():
        return False, ["no results.xml (the simulator stopped before the tests ended)"]
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        return False, [f"unreadable results.xml: {exc}"]
    failures = []
    for case in root.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            msg = (bad.get("message") or bad.text or "").strip().splitlines()
            failures.append(f"{case.get('name')}: {(msg[0] if msg else '')[:300]}")
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(old, default=_jsonable))
    tmp.replace(path)


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


def _top_public_only(build_command):
    """cocotb's Verilator build with ``--public-flat-rw`` replaced by ``--public-depth 1``."""
    def command():
        cmds = build_command()
        first = [a for a in cmds[0] if a != "--public-flat-rw"]
        i = first.index("--vpi") + 1
        cmds[0] = first[:i] + list(VERILATOR_PUBLIC) + first[i:]
        return cmds
    return command


def _child(job_file: str) -> int:
    """Child process: build (unless cached; one builder at a time per build directory) and run."""
    from cocotb_tools.runner import get_runner

    job = json.loads(Path(job_file).read_text())
    sim = job["simulator"]
    build = Path(job["build_dir"])
    runner = get_runner(sim)
    marker = build / ".litefly-built"
    args = list(VERILATOR_ARGS) if sim == "verilator" else []
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = marker.exists()
        if cached and sim == "verilator":
            # the build of this exact Verilog is there: set the runner up without running Verilator
            runner._build_command = lambda: []  # type: ignore[method-assign]
        elif sim == "verilator":
            runner._build_command = _top_public_only(runner._build_command)  # type: ignore[method-assign]
        runner.build(sources=[job["verilog"]], hdl_toplevel=job["module"], build_dir=build, timescale=TIMESCALE,
                     build_args=args, always=not cached)
        marker.write_text("ok\n")
    runner.test(hdl_toplevel=job["module"], test_module=job["test_module"], testcase=job.get("testcase"),
                build_dir=build, test_dir=job["test_dir"], results_xml=job["results_xml"], timescale=TIMESCALE)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))

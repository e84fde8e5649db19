#!/usr/bin/env python
"""Mutation testing of litefly's maths and RTL generator against the fast default tests.

Each mutant is ONE small change to one file: an operator swap (``+``/``-``, ``*``/``//``,
``<``/``<=``, ``>>``/``<<``, ``&``/``|``, ``==``/``!=``), an integer constant off by one, or a
dropped term (``a + b`` -> ``a``, ``-x`` -> ``x``). Mutants are enumerated from the AST of the
*maths* functions of each target file (error messages, f-strings, docstrings and ``raise``
statements are never mutated) and sampled with a seed. Every mutant runs in a private copy of
the tree (the working tree is never touched: other people work in it), with the test files
that the mapping :data:`TESTS` names for the mutated file; a mutant is **killed** when a test
fails (or the run times out), **survived** otherwise. The pristine copy must pass first.

Usage::

    python scripts/mutation.py --sample 48 --seed 1            # python targets + RTL, 48 mutants
    python scripts/mutation.py --files litefly/fixed.py --sample 10
    python scripts/mutation.py --list                          # the candidate mutants, not run
    python scripts/mutation.py --sample 48 --json report.json

RTL mutants (``hw/*.py`` generator files) run the tiny engine on Icarus and the engine's
Amaranth simulations, about a minute each; ``--no-rtl`` leaves them out. ``--summarize A.json
B.json`` merges saved reports. ``docs/verification.md`` lists the last measured score and the
equivalent survivors with their reasons.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"hw": "hw", "host": "host", "sim": "sim", "boards": "boards", "bitstreams": "bitstreams"}

# file -> (functions/methods whose bodies are mutated (None: all), weight in the sample)
TARGETS: dict[str, tuple[tuple[str, ...] | None, int]] = {
    "litefly/fixed.py": (("requantize", "factor_forward", "forward", "int_range", "quantize_tensor",
                          "quantize_layer", "acc_bits"), 9),
    "litefly/network.py": (("output_size", "im2col", "col2im", "maxpool_int", "out_shape", "conv_shape", "kernel",
                            "stride", "padding", "dilation", "plan_network", "step_forward_int",
                            "network_forward_int"), 12),
    "litefly/config.py": (("acc_bits", "bias_bits", "chain_in"), 3),
    "hw/wireformat.py": (("pack_elements", "unpack_elements", "pack_tensor", "unpack_tensor", "tensor_bytes",
                          "pack_layer_params", "unpack_layer_params"), 8),
    "hw/spec.py": (("ceil_div", "register_words", "in_cw", "out_cw", "in_beats_per_image", "in_bytes_per_image",
                    "out_beats_per_image", "images_per_pass", "weight_beats", "bias_beats", "check_fits",
                    "can_pack_input", "_in_beats", "factors_from_words", "elems_per_beat", "weights_per_beat",
                    "biases_per_beat"), 5),
    "hw/cycles.py": (("_last_valid", "frame_ready", "batch_cycles", "pass_cycles", "window_reads", "positions",
                      "load_beats"), 4),
    "hw/regmap.py": (("pack", "unpack", "factor_reg", "address_bits"), 2),
    # the RTL generator (each mutant: one Verilator build)
    "hw/window.py": (None, 3),
    "hw/sequencer.py": (None, 2),
    "hw/output_stage.py": (None, 3),
    "hw/unloader.py": (None, 2),
    "hw/loader.py": (None, 2),
    "hw/repack.py": (None, 1),
    "hw/mac_array.py": (None, 1),
}
RTL_FILES = {f for f in TARGETS
             if f.startswith("hw/") and f not in ("hw/wireformat.py", "hw/spec.py", "hw/cycles.py", "hw/regmap.py")}

# The fast default tests, by what they exercise. A mutant of the Python maths is run against
# the model-side tests (the RTL tests would also notice, at one simulation per mutant); a mutant
# of the RTL generator against the RTL simulations below (about a minute per mutant).
_MODEL_TESTS = ["tests/test_golden_reference.py", "tests/test_random_networks.py", "tests/test_conformance.py",
                "tests/test_core_plan.py", "tests/test_core_models.py", "tests/test_sim_host.py",
                "tests/test_sim_limits.py", "tests/test_sim_wireformat.py", "-k", "not rtl"]
# the tiny engine's 8 networks (Icarus) and the engine's Amaranth simulations (tests/test_hw_engine.py)
_RTL_TESTS = ["tests/test_sim_engine.py::test_unfaulted_tiny_engine_is_bit_exact", "tests/test_hw_engine.py"]
# mutated file -> the pytest arguments (test files and selection) that should notice
TESTS: dict[str, list[str]] = {f: list(_MODEL_TESTS) for f in TARGETS if f not in RTL_FILES}
TESTS.update({f: list(_RTL_TESTS) for f in RTL_FILES})

# Survivors examined and found equivalent (no input the code accepts tells them apart):
# (file, function, original, replacement[, text of the mutated line]) -> reason. The score excludes
# them. The fifth element, where given, must occur in the mutated source line (a bare constant such
# as "16" -> "15" occurs in many places of one function, and only some are equivalent).
EQUIVALENT: dict[tuple[str, ...], str] = {
    ("hw/wireformat.py", "pack_elements", "bits % 8", "bits // 8"):
        "only chooses the vectorised path or the general bit loop, which give the same bytes",
    ("hw/wireformat.py", "pack_elements", "bits // 8", "bits * 8"):
        "only chooses the vectorised path or the general bit loop, which give the same bytes",
    ("hw/wireformat.py", "pack_elements", "4", "3"):
        "only chooses the vectorised path or the general bit loop, which give the same bytes",
    ("hw/wireformat.py", "unpack_elements", "nbytes * 8", "nbytes // 8"):
        "only chooses the vectorised path or the general bit loop, which give the same values",
    ("hw/wireformat.py", "pack_elements", "8 - off", "8 + off"):
        "the spill into the next byte is only reached by widths that do not divide 8 (3, 5, 6, 7 bits); "
        "the engine takes 2, 4, 8, 16-bit weights and 8/32-bit containers, whose fields never straddle a byte",
    ("litefly/network.py", "network_forward_int", "Callable[[EngineStep, np.ndarray], None] | None",
     "Callable[[EngineStep, np.ndarray], None] & None"): "a type annotation, never evaluated",
    ("hw/loader.py", "elaborate", "accept & (cnt >= wbeats)", "accept | (cnt >= wbeats)"):
        "extra bias-memory writes while no beat is accepted (same address, rewritten by the accepted beat) or "
        "during the weight beats (addresses the layer's bias beats rewrite, or unused ones); the memory holds "
        "the same biases when PARAMS_VALID rises",
    ("hw/sequencer.py", "ctl_layout", "1", "2"): "a 1-bit flag stored in a 2-bit field",
    ("hw/sequencer.py", "elaborate", "16", "17"): "a 16-bit register one bit wider; its values fit 16 bits",
    ("hw/unloader.py", "elaborate", "1", "0", "lane = Signal(range(L + 1))"):
        "lane counter Signal(range(L+1)) -> range(L): it counts 0..L-1 only",
    ("hw/window.py", "elaborate", "L + 1", "L"): "lane counter Signal(range(L+1)) -> range(L): it counts 0..L-1 only",
    ("hw/loader.py", "elaborate", "32", "33", "= Signal(32)"):
        "a 32-bit register one bit wider; its values fit 32 bits",
    ("hw/output_stage.py", "elaborate", "shifted > hi", "shifted >= hi"): "at shifted == hi both select hi",
    ("hw/output_stage.py", "elaborate", "p4.valid & ~p4.fi_last", "p4.valid | ~p4.fi_last"):
        "extra WORK writes while no row completes land on the row being accumulated (its own completion "
        "rewrites it) or, between factors, on row 0 of the half the next factor writes; a factor reads only "
        "the other half",
    ("hw/repack.py", "elaborate", "16", "17", "Signal(16"):
        "a buffer (or byte count) one byte per element wider: a beat is taken only while at most E bytes are "
        "held, so bytes past 2E are never written, and a pixel's byte count fits 16 bits",
    ("hw/window.py", "elaborate", "16", "15", "ky, kx, k = Signal(16), Signal(16), Signal(16)"):
        "kernel counters one bit narrower: kernels are at most MAX_KERNEL = 32 (litefly/limits.py) and a "
        "pixel has at most 2^15 channel beats (C < 2^16, E >= 2), so they count below 2^15",
}

_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.LShift: ast.RShift,
          ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.Mod: ast.FloorDiv,
          ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


@dataclass
class Mutant:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    original: str
    replacement: str
    kind: str
    function: str

    @property
    def ident(self) -> str:
        return f"{self.file}:{self.line}:{self.col} {self.kind}"


def _skip_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: f-strings, raise/assert statements, docstrings, logging."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        ann = []                      # annotations are not evaluated (from __future__ import annotations)
        if isinstance(node, ast.arg) and node.annotation is not None:
            ann.append(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            ann.append(node.returns)
        if isinstance(node, ast.AnnAssign):
            ann.append(node.annotation)
        for a in ann:
            for sub in ast.walk(a):
                skip.add(id(sub))
        if isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            for sub in ast.walk(node):
                skip.add(id(sub))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "ConfigError", "ShapeError", "LiteflyError", "ValueError", "KeyError"):
            for sub in ast.walk(node):
                skip.add(id(sub))
    return skip


def _functions(tree: ast.AST, names: tuple[str, ...] | None):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (names is None or node.name in names):
            yield node


def enumerate_mutants(rel: str, root: Path = ROOT) -> list[Mutant]:
    path = root / rel
    src = path.read_text()
    tree = ast.parse(src)
    names, _ = TARGETS[rel]
    skip = _skip_nodes(tree)
    out: list[Mutant] = []
    seen: set[tuple] = set()

    def seg(node) -> str | None:
        return ast.get_source_segment(src, node)

    def add(node, new_node_src: str, kind: str, fn: str) -> None:
        orig = seg(node)
        if orig is None or orig == new_node_src or "\n" in orig:
            return
        key = (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, new_node_src)
        if key in seen:
            return
        seen.add(key)
        out.append(Mutant(rel, node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, orig,
                          new_node_src, kind, fn))

    for fn in _functions(tree, names):
        for node in ast.walk(fn):
            if id(node) in skip:
                continue
            if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
                new = ast.BinOp(left=node.left, op=_SWAPS[type(node.op)](), right=node.right)
                add(node, ast.unparse(new), f"{type(node.op).__name__}->{_SWAPS[type(node.op)].__name__}", fn.name)
                if isinstance(node.op, (ast.Add, ast.Sub)):
                    add(node, ast.unparse(node.left), "drop right term", fn.name)
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
                new = ast.Compare(left=node.left, ops=[_SWAPS[type(node.ops[0])]()], comparators=node.comparators)
                add(node, ast.unparse(new), f"{type(node.ops[0]).__name__}->{_SWAPS[type(node.ops[0])].__name__}",
                    fn.name)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
                add(node, ast.unparse(node.operand), "drop unary minus", fn.name)
            elif (isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool)
                  and 0 <= node.value <= 64):
                add(node, str(node.value + 1), "constant +1", fn.name)
                if node.value > 0:
                    add(node, str(node.value - 1), "constant -1", fn.name)
    return out


def apply(mutant: Mutant, tree_root: Path) -> None:
    path = tree_root / mutant.file
    lines = path.read_text().splitlines(keepends=True)
    assert mutant.line == mutant.end_line
    ln = lines[mutant.line - 1]
    # AST columns are UTF-8 byte offsets
    b = ln.encode()
    got = b[mutant.col:mutant.end_col].decode()
    if got != mutant.original:
        raise RuntimeError(f"{mutant.ident}: source changed ({got!r} != {mutant.original!r})")
    lines[mutant.line - 1] = (b[:mutant.col] + mutant.replacement.encode() + b[mutant.end_col:]).decode()
    path.write_text("".join(lines))


def make_copy(dst: Path) -> Path:
    """A private copy of the tree importable as ``litefly`` (PYTHONPATH=dst)."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", "bitstreams")
    for name in ("litefly", "hw", "host", "sim", "boards", "tests", "examples", "docs", "scripts"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dst / name, ignore=ignore, symlinks=True)
    (dst / "bitstreams").mkdir(exist_ok=True)
    if (ROOT / "bitstreams").exists():
        for f in (ROOT / "bitstreams").glob("*.py"):
            shutil.copy2(f, dst / "bitstreams" / f.name)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    for sub, target in PACKAGES.items():
        link = dst / "litefly" / sub
        if not link.exists():
            link.symlink_to(Path("..") / target)
    return dst


def _kill(proc: subprocess.Popen) -> None:
    """Stop a test run and everything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_tests(tree_root: Path, tests: list[str], timeout: float) -> tuple[str, float, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree_root), str(tree_root / "tests")])
    env.setdefault("LITEFLY_CACHE", str(Path.home() / ".cache" / "litefly-mutation"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "-m", "not sweep and not slow and not mutation", *tests]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=tree_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        return "killed (timeout)", time.time() - t0, ""
    except BaseException:
        _kill(proc)
        raise
    tail = [ln for ln in out.splitlines() if ln.strip()][-3:]
    status = ("survived" if proc.returncode == 0 else "killed" if proc.returncode == 1
              else "killed (signal)" if proc.returncode < 0 else f"error rc={proc.returncode}")
    return status, time.time() - t0, " | ".join(tail)[-400:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=48, help="mutants to run (spread over the files by weight)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", nargs="*", default=None, help="only these target files")
    ap.add_argument("--no-rtl", action="store_true", help="leave out the RTL generator files")
    ap.add_argument("--list", action="store_true", help="list the candidate mutants and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant run")
    ap.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the private copy")
    ap.add_argument("--rtl-tests", default=None,
                    help="pytest arguments for RTL mutants instead of the default RTL tests (e.g. \"tests/"
                         "test_conformance.py tests/test_random_networks.py -k 'rtl and rand64 and not cycles'\")")
    ap.add_argument("--summarize", type=Path, nargs="+", default=None,
                    help="print the summary of these --json reports' results (merged) without running anything")
    ap.add_argument("--rerun", type=Path, default=None,
                    help="run again the mutants a previous --json report lists as survived (after adding tests)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # cleanup (finally) on kill

    if args.rtl_tests:
        import shlex
        for f in RTL_FILES:
            TESTS[f] = shlex.split(args.rtl_tests)
    files = [f for f in (args.files or TARGETS) if not (args.no_rtl and f in RTL_FILES)]
    for f in files:
        if f not in TARGETS:
            ap.error(f"{f} is not a target (targets: {', '.join(TARGETS)})")
    if args.summarize is not None:
        results = [r for rep in args.summarize for r in json.loads(rep.read_text())["results"]]
        return _summary(results, args)
    if args.list:
        for f in (f for f in files if (ROOT / f).exists()):
            ms = enumerate_mutants(f)
            print(f"{f}: {len(ms)} candidate mutants")
            for m in ms:
                print(f"  {m.ident} in {m.function}(): {m.original!r} -> {m.replacement!r}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="litefly_mut_"))
    try:     # the tree as it is now: mutants, runs and restores all use this copy
        results = _run(args, files, make_copy(work / "tree"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if results is None:
        return 2
    if args.rerun is not None:             # the earlier kills stand (tests were only added)
        again = {(r["file"], r["line"], r["col"], r["replacement"]): r for r in results}
        results = [again.get((r["file"], r["line"], r["col"], r["replacement"]), r)
                   for r in json.loads(args.rerun.read_text())["results"]]
    return _summary(results, args)


def _run(args, files: list[str], tree_root: Path) -> list[dict] | None:
    """Sample (or take the --rerun survivors), run each mutant in ``tree_root``; None if the
    unmutated tree fails its tests."""
    pools = {f: enumerate_mutants(f, tree_root) for f in files if (tree_root / f).exists()}
    rng = random.Random(args.seed)
    weights = {f: TARGETS[f][1] for f in pools}
    total_w = sum(weights.values())
    chosen: list[Mutant] = []
    for f, ms in pools.items():
        k = min(len(ms), max(1, round(args.sample * weights[f] / total_w)))
        chosen += rng.sample(ms, k)
    if args.rerun is not None:
        prev = json.loads(args.rerun.read_text())["results"]
        fields = Mutant.__dataclass_fields__
        chosen = [Mutant(**{k: r[k] for k in fields}) for r in prev if r["status"] == "survived"]
    chosen.sort(key=lambda m: (m.file in RTL_FILES, m.file, m.line))
    pristine = {m.file: (tree_root / m.file).read_bytes() for m in chosen}
    print(f"private copy: {tree_root}; {len(chosen)} mutants", flush=True)
    results = []
    baseline: dict[tuple[str, ...], str] = {}
    base_secs: dict[tuple[str, ...], float] = {}
    for m in chosen:
        tests = tuple(TESTS[m.file])
        if tests not in baseline:
            status, secs, tail = run_tests(tree_root, list(tests), args.timeout)
            baseline[tests] = status
            base_secs[tests] = secs
            print(f"baseline {' '.join(tests)}: {status} ({secs:.0f} s) {tail}", flush=True)
            if status != "survived":
                print("the unmutated tree fails these tests; fix that first", file=sys.stderr)
                return None
        source = (tree_root / m.file).read_text().splitlines()[m.line - 1].strip()
        try:     # a --rerun mutant of a file edited since its report no longer applies
            apply(m, tree_root)
        except RuntimeError as e:
            results.append({**asdict(m), "status": "error (source changed)", "seconds": 0, "tail": str(e)})
            print(f"error (source changed)  {m.ident}: {e}", flush=True)
            continue
        try:     # a mutant may loop forever: allow 3x the unmutated run, at most --timeout
            status, secs, tail = run_tests(tree_root, list(tests), min(args.timeout, 3 * base_secs[tests] + 60))
        finally:
            (tree_root / m.file).write_bytes(pristine[m.file])
        results.append({**asdict(m), "status": status, "seconds": round(secs, 1), "tail": tail, "source": source})
        print(f"{status:18s} {secs:6.0f} s  {m.ident} in {m.function}(): {m.original!r} -> {m.replacement!r}",
              flush=True)
    return results


def _source_line(r: dict) -> str | None:
    """The mutated line's text: recorded by the run, else read from the tree if it still matches."""
    if r.get("source"):
        return r["source"]
    try:
        line = (ROOT / r["file"]).read_text().splitlines()[r["line"] - 1]
    except (OSError, IndexError):
        return None
    return line.strip() if line.encode()[r["col"]:r["end_col"]].decode(errors="replace") == r["original"] else None


def equivalent_reason(r: dict) -> str | None:
    for key, why in EQUIVALENT.items():
        if key[:4] == (r["file"], r["function"], r["original"], r["replacement"]):
            if len(key) == 4 or key[4] in (_source_line(r) or ""):
                return why
    return None


def _summary(results: list[dict], args) -> int:
    for r in results:
        why = equivalent_reason(r)
        if r["status"].startswith("survived") and why:
            r["status"], r["equivalent"] = "survived (equivalent)", why
    killed = sum(r["status"].startswith("killed") for r in results)
    equivalent = [r for r in results if r["status"] == "survived (equivalent)"]
    survived = [r for r in results if r["status"] == "survived"]
    errors = [r for r in results if r["status"].startswith("error")]
    ran = len(results) - len(errors)
    score = killed / max(1, ran - len(equivalent))
    print(f"\nmutation score: {killed}/{ran - len(equivalent)} non-equivalent mutants killed = {100 * score:.1f}% "
          f"(raw {killed}/{ran} = {100 * killed / max(1, ran):.1f}%; {len(equivalent)} equivalent, "
          f"{len(errors)} runs errored)")
    for r in equivalent:
        print(f"  equivalent: {r['file']}:{r['line']} in {r['function']}(): {r['original']!r} -> "
              f"{r['replacement']!r}: {r['equivalent']}")
    for r in survived:
        print(f"  SURVIVED: {r['file']}:{r['line']} in {r['function']}(): {r['original']!r} -> {r['replacement']!r}")
    if args.json:
        args.json.write_text(json.dumps({"score": score, "raw_score": killed / max(1, ran), "killed": killed,
                                         "total": len(results), "equivalent": len(equivalent),
                                         "errors": len(errors), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Count the fuzz cases per loader and their outcomes (issue 16 figures).

    python tests/corpus/hostile/fuzz_report.py [EXAMPLES]

Runs every loader property of ``tests/test_hostile_fuzz.py`` with EXAMPLES random cases
(default 1000) and prints, per loader: cases run, cases that returned, cases refused with a
one-line LiteflyError, the slowest case, and any other outcome (a traceback) -- which stops
the run with Hypothesis' minimal failing example.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import test_hostile_fuzz as fuzz  # noqa: E402
from litefly.errors import LiteflyError  # noqa: E402


def main(examples: int) -> None:
    stats: Counter = Counter()
    check_one_line = fuzz.check_one_line

    def counting(fn):
        t0 = time.perf_counter()
        try:
            fn()
            stats["returned"] += 1
        except LiteflyError as exc:
            stats["refused"] += 1
            err = exc
            check_one_line(lambda: (_ for _ in ()).throw(err))   # the one-line property
        finally:
            stats["calls"] += 1
            stats["slowest_ms"] = max(stats["slowest_ms"], int(1000 * (time.perf_counter() - t0)))

    fuzz.check_one_line = counting
    total_t0 = time.perf_counter()
    print(f"{'loader':18} {'cases':>6} {'calls':>6} {'returned':>8} {'refused':>8} {'tracebacks':>10} "
          f"{'slowest call':>12} {'time':>7}")
    for name, (strategy, check) in sorted(fuzz.LOADERS.items()):
        stats.clear()
        cases = Counter()

        def counted(value, check=check):
            cases["n"] += 1
            check(value)
        t0 = time.perf_counter()
        fuzz.run_property(strategy, counted, examples, derandomize=False)
        print(f"{name:18} {cases['n']:6d} {stats['calls']:6d} {stats['returned']:8d} {stats['refused']:8d} "
              f"{0:10d} {stats['slowest_ms']:9d} ms {time.perf_counter() - t0:6.1f}s", flush=True)
    cases = Counter()

    def wire(case):
        cases["n"] += 1
        fuzz._wire_roundtrip(case)
    t0 = time.perf_counter()
    fuzz.run_property(fuzz.wire_cases(), wire, examples, derandomize=False)
    print(f"{'wireformat':18} {cases['n']:6d}   round trips equal {'':25} {time.perf_counter() - t0:6.1f}s")
    print(f"total {time.perf_counter() - total_t0:.1f} s; a traceback would have stopped the run")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

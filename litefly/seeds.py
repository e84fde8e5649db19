"""Accuracy tables over several seeds: mean and spread per model, and the gap to dense.

A demo run gives one row per model (``{"model", "accuracy", "params", "macs"}``, the first row
the dense baseline). :func:`summarize_seeds` combines the rows of several runs (one per seed,
same models in the same order) into one row per model with the mean, the standard deviation
(``ddof=1``), the minimum and maximum accuracy, and the gap to the dense model of the *same*
seed: its mean and its worst (most negative) value, which is what "at most k points below
dense on the mean and on the worst seed" is checked against.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import LiteflyError

__all__ = ["summarize_seeds", "render_seeds_table"]


def summarize_seeds(rows_per_seed: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One dict per model: ``model``, ``accuracies`` (per seed), ``mean``, ``std``, ``min``, ``max``,
    ``gap_mean``, ``gap_worst`` (accuracy minus the same seed's dense accuracy; ``None`` for the
    dense row), ``params``, ``macs``. A model not run (accuracy ``None``) has ``None`` figures."""
    if not rows_per_seed:
        raise LiteflyError("summarize_seeds: no runs")
    names = [[r["model"] for r in rows] for rows in rows_per_seed]
    if any(n != names[0] for n in names):
        raise LiteflyError("summarize_seeds: the runs do not have the same models in the same order")
    dense = np.array([rows[0]["accuracy"] for rows in rows_per_seed], float)
    out = []
    for i, name in enumerate(names[0]):
        accs = [rows[i]["accuracy"] for rows in rows_per_seed]
        row: dict[str, Any] = {"model": name, "accuracies": accs, "params": rows_per_seed[0][i]["params"],
                               "macs": rows_per_seed[0][i]["macs"]}
        if any(a is None for a in accs):
            row.update(mean=None, std=None, min=None, max=None, gap_mean=None, gap_worst=None)
        else:
            a = np.array(accs, float)
            gap = a - dense
            row.update(mean=float(a.mean()), std=float(a.std(ddof=1)) if len(a) > 1 else 0.0, min=float(a.min()),
                       max=float(a.max()), gap_mean=None if i == 0 else float(gap.mean()),
                       gap_worst=None if i == 0 else float(gap.min()))
        out.append(row)
    return out


def render_seeds_table(summary: Sequence[dict[str, Any]], seeds: Sequence[int], title: str):
    """A rich Table of :func:`summarize_seeds` (accuracies in percent, gaps in points)."""
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "not run" if v is None else f"{100 * v:.2f}%"

    def pts(v: float | None) -> str:
        return "" if v is None else f"{100 * v:+.2f}"

    dense = summary[0]
    t = Table(title=f"{title}: {len(seeds)} seeds ({', '.join(map(str, seeds))})")
    for col in ("model", "mean", "std", "min", "max", "vs dense, mean", "vs dense, worst seed", "params",
                "param reduction", "MACs/sample"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in summary:
        t.add_row(r["model"], pct(r["mean"]), "" if r["std"] is None else f"{100 * r['std']:.2f}", pct(r["min"]),
                  pct(r["max"]), pts(r["gap_mean"]), pts(r["gap_worst"]), f"{r['params']:,}",
                  "" if r is dense else f"{100 * (1 - r['params'] / dense['params']):.1f}%", f"{r['macs']:,}")
    t.caption = ("std: sample standard deviation over the seeds (points); vs dense: accuracy minus the dense "
                 "model's of the same seed (points), its mean and its worst seed")
    return t

"""Prune dense and DeBut layers into sparse factors whose zeros cost no engine cycles.

:func:`prune_model` returns a copy of a model in which every selected layer is pruned to a
target weight sparsity:

* a dense ``nn.Conv2d``/``nn.Linear`` becomes a :class:`~litefly.nn.DeButConv2d` /
  :class:`~litefly.nn.DeButLinear` holding ONE :class:`~litefly.chain.SparseFactor` (the kept
  entries of its ``p x kh*kw*c_in`` matrix, kernel position outer as in :mod:`litefly.convert`);
* every factor of a DeBut layer (DeBut or already sparse) becomes a sparse factor with the kept
  part of its pattern (``concat`` is kept).

Scores (which entries to keep): ``magnitude`` ``|w|``; ``snip`` (Lee et al. 2019) the connection
saliency ``|w * dL/dw|`` of the cross-entropy on a batch of data; ``synflow`` (Tanaka et al.
2020) the data-free synaptic flow ``|w * dR/dw|`` with ``R = sum(f_|w|(1))``, pruned iteratively
on an exponential schedule. Allocation: each layer to the target (``1 - kept / weights``, every
stored entry counted); within a chain every factor to the same density, except that every row
keeps its best entry (on the engine a row costs one cycle per entry and has at least one, so a
forced row entry is a weight, not an explicit zero) and the factors with room take up the rest.
A layer whose rows alone exceed the budget keeps one entry per row and says so in its notes.
Fine-tuning is :func:`litefly.convert.distill`; the sparse pattern is fixed by the chain, so it
stays pruned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .chain import AnyFactor, SparseFactor
from .convert import _dense_matrix, _set_module, channels_last_flatten, convertible_layers, select_layers
from .errors import ConfigError
from .nn import DeButConv2d, DeButLinear, debut_like

__all__ = ["METHODS", "PruneConfig", "PruneReport", "prune_model", "allocate", "select_entries", "format_prune_report",
           "parse_sparsity", "parse_method"]

METHODS = ("magnitude", "snip", "synflow")
SCOPES = ("layer", "global")
_DEBUT = (DeButConv2d, DeButLinear)


def parse_method(value: object) -> str:
    """A pruning method name, or a one-line :class:`ConfigError`."""
    if not isinstance(value, str) or value not in METHODS:
        raise ConfigError(f"--prune {str(value)[:40]!r} must be one of {', '.join(METHODS)}")
    return value


def parse_sparsity(value: object, name: str = "--sparsity") -> float:
    """A target sparsity in (0, 1) from a number or its text, or a one-line :class:`ConfigError`."""
    try:
        s = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        s = float("nan")
    if not 0.0 < s < 1.0:
        raise ConfigError(f"{name} {str(value)[:40]!r} must be a number between 0 and 1 (exclusive), e.g. 0.8 "
                          f"for 80% of the weights removed")
    return s


@dataclass(frozen=True)
class PruneConfig:
    """What to prune and how: ``method`` (magnitude, snip, synflow), target ``sparsity`` (fraction
    of each layer's weights removed), ``layers`` (names or globs; None: every DeBut layer and every
    Conv2d/Linear), SNIP's sample count ``batch`` and SynFlow's ``iterations``."""

    method: str = "magnitude"
    sparsity: float = 0.5
    layers: tuple[str, ...] | None = None
    batch: int = 256
    iterations: int = 20
    scope: str = "layer"          # "layer": each layer to the target; "global": one ranking over all layers

    def __post_init__(self) -> None:
        parse_method(self.method)
        parse_sparsity(self.sparsity, "prune: sparsity")
        if self.scope not in SCOPES:
            raise ConfigError(f"prune: scope {str(self.scope)[:40]!r} must be one of {', '.join(SCOPES)}")
        for name in ("batch", "iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"prune: {name}={v!r} must be a positive integer")


@dataclass
class PruneReport:
    """One pruned layer: weights before, entries kept per factor, and notes."""

    name: str
    source: str                                  # "dense" (one sparse factor) or "debut" (factor by factor)
    before: tuple[int, ...]                      # weights per factor before (dense: one)
    after: tuple[int, ...]                       # stored entries per sparse factor after
    target: float
    notes: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        return 1.0 - sum(self.after) / sum(self.before)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "before": list(self.before), "after": list(self.after),
                "target": self.target, "sparsity": self.sparsity, "notes": list(self.notes)}


@dataclass
class _Unit:
    """One prunable weight array: the compact entries' rows and columns in its ``p x q`` matrix."""

    p: int
    q: int
    rows: np.ndarray
    cols: np.ndarray
    concat: bool = False
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


# -- allocation and selection ---------------------------------------------------------------------
def allocate(sizes: Sequence[int], rows: Sequence[int], keep: int) -> list[int]:
    """Entries to keep per unit: ``keep`` in all, each unit ``clip(d * size, rows, size)`` for one
    common density ``d`` (largest remainders first), never fewer than its ``rows``."""
    sizes, rows = np.asarray(sizes, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    keep = int(min(max(keep, rows.sum()), sizes.sum()))

    def total(d: float) -> np.ndarray:
        return np.clip(d * sizes, rows, sizes)

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid).sum() < keep else (lo, mid)
    want = total(hi)
    out = np.floor(want).astype(np.int64)
    out = np.clip(out, rows, sizes)
    short = keep - int(out.sum())
    for i in np.argsort(-(want - np.floor(want)), kind="stable"):
        if short <= 0:
            break
        if out[i] < sizes[i]:
            out[i] += 1
            short -= 1
    while short < 0:                            # floors above the common density: take from the roomiest
        i = int(np.argmax(out - rows))
        out[i] -= 1
        short += 1
    return out.tolist()


def select_entries(rows: np.ndarray, scores: np.ndarray, keep: int) -> np.ndarray:
    """Boolean keep-mask over entries: each row's best score, then the best of the rest up to ``keep``."""
    n = scores.size
    order = np.lexsort((-scores, rows))                   # by row, best first within a row
    first = np.ones(n, dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    mask = np.zeros(n, dtype=bool)
    mask[order[first]] = True
    rest = np.flatnonzero(~mask)
    extra = max(0, keep - int(mask.sum()))
    if extra:
        mask[rest[np.argsort(-scores[rest], kind="stable")[:extra]]] = True
    return mask


# -- the layers -----------------------------------------------------------------------------------
def _selected(model: nn.Module, patterns: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _DEBUT)]
    names = {n for n, _ in layers}
    layers += [(n, m) for n, m in convertible_layers(model) if n not in names]
    return select_layers(layers, patterns, "prune", "DeBut, Conv2d or Linear")


def _weights(mod: nn.Module) -> list[torch.Tensor]:
    """The prunable parameters of a layer, in unit order."""
    return list(mod.weights) if isinstance(mod, _DEBUT) else [mod.weight]


def _units(mod: nn.Module) -> list[_Unit]:
    if isinstance(mod, _DEBUT):
        return [_Unit(f.p, f.q, *f.nonzero_indices(), concat=f.concat) for f in mod.chain]
    p, q = _dense_matrix(mod).shape
    rows, cols = np.divmod(np.arange(p * q), q)
    return [_Unit(p, q, rows, cols)]


def _flat(mod: nn.Module, t: torch.Tensor) -> np.ndarray:
    """A weight-shaped tensor (value, gradient or score) in its unit's compact order."""
    t = t.detach().double().cpu()
    if isinstance(mod, nn.Conv2d):                  # (c_out, c_in, kh, kw) -> kernel position outer
        t = t.permute(0, 2, 3, 1)
    return t.reshape(-1).numpy()


def _magnitude(model: nn.Module, layers: list[tuple[str, nn.Module]]) -> dict[str, list[np.ndarray]]:
    return {n: [np.abs(_flat(m, w)) for w in _weights(m)] for n, m in layers}


def _snip(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor
          ) -> dict[str, list[np.ndarray]]:
    """``|w * dL/dw|`` of the cross-entropy on ``(x, y)`` (the model in eval mode, a copy)."""
    work = copy.deepcopy(model).eval()
    mods = {n: work.get_submodule(n) for n, _ in layers}
    work.zero_grad()
    for i in range(0, len(x), 256):
        loss = F.cross_entropy(work(x[i:i + 256]), y[i:i + 256], reduction="sum") / len(x)
        loss.backward()
    out = {}
    for n, m in mods.items():
        out[n] = []
        for w in _weights(m):
            if w.grad is None:
                raise ConfigError(f"prune: snip: layer {n!r} gets no gradient from the loss (is it used?)")
            out[n].append(np.abs(_flat(m, w * w.grad)))
    return out


def _synflow(model: nn.Module, layers: list[tuple[str, nn.Module]], example: torch.Tensor, sparsity: float,
             iterations: int, units: dict[str, list[_Unit]], scope: str) -> dict[str, list[np.ndarray]]:
    """Iterative SynFlow: on ``|w|`` (every parameter and buffer made non-negative, eval mode, float64)
    and an all-ones input, score ``|w * dR/dw|`` with ``R = sum(output)``; prune to density
    ``(1 - sparsity)^(k/iterations)`` at step k; the last step's scores (pruned entries 0)."""
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in list(work.parameters()) + list(work.buffers()):
            if t.is_floating_point():
                t.abs_()
    mods = {n: work.get_submodule(n) for n, _ in layers}
    base = {n: [w.detach().clone() for w in _weights(m)] for n, m in mods.items()}
    masks = {n: [torch.ones_like(w) for w in ws] for n, ws in base.items()}
    ones = torch.ones((1, *example.shape[1:]), dtype=torch.float64)
    scores: dict[str, list[np.ndarray]] = {}
    for k in range(1, iterations + 1):
        with torch.no_grad():
            for n, m in mods.items():
                for w, b, mk in zip(_weights(m), base[n], masks[n]):
                    w.copy_(b * mk)
        work.zero_grad()
        work(ones).sum().backward()
        density = (1.0 - sparsity) ** (k / iterations)
        scores = {n: [np.abs(_flat(m, w * w.grad)) for w in _weights(m)] for n, m in mods.items()}
        keeps_all = _keeps(units, scores, density, scope)
        for n, m in mods.items():
            for i, (w, keep) in enumerate(zip(_weights(m), keeps_all[n])):
                flat = torch.as_tensor(keep, dtype=torch.float64)
                if isinstance(m, nn.Conv2d):
                    c_out, c_in, kh, kw = w.shape
                    flat = flat.reshape(c_out, kh, kw, c_in).permute(0, 3, 1, 2)
                masks[n][i] = flat.reshape(w.shape)
    return scores


def _layer_keeps(units: list[_Unit], scores: list[np.ndarray], density: float) -> list[np.ndarray]:
    sizes = [u.rows.size for u in units]
    ks = allocate(sizes, [u.p for u in units], round(density * sum(sizes)))
    return [select_entries(u.rows, s, k) for u, s, k in zip(units, scores, ks)]


def _global_keeps(units: list[_Unit], scores: list[np.ndarray], density: float) -> list[np.ndarray]:
    """One ranking over all units: every row's best entry, then the best of the rest network-wide."""
    keep = round(density * sum(u.rows.size for u in units))
    rows = np.concatenate([u.rows + off for u, off in zip(units, np.cumsum([0] + [u.p for u in units[:-1]]))])
    mask = select_entries(rows, np.concatenate(scores), keep)
    return np.split(mask, np.cumsum([u.rows.size for u in units])[:-1])


def _keeps(units: dict[str, list[_Unit]], scores: dict[str, list[np.ndarray]], density: float, scope: str
           ) -> dict[str, list[np.ndarray]]:
    """Keep-masks per layer and unit at ``density``: per layer, or one ranking over the network."""
    if scope == "layer":
        return {n: _layer_keeps(units[n], scores[n], density) for n in units}
    names = list(units)
    flat_u = [u for n in names for u in units[n]]
    masks = _global_keeps(flat_u, [s for n in names for s in scores[n]], density)
    out, i = {}, 0
    for n in names:
        out[n] = masks[i:i + len(units[n])]
        i += len(units[n])
    return out


def _rebuild(mod: nn.Module, units: list[_Unit], keeps: list[np.ndarray]) -> nn.Module:
    """The layer with each unit replaced by the sparse factor of its kept entries (weights copied)."""
    chain: list[AnyFactor] = []
    new_ws = []
    for u, keep, w in zip(units, keeps, _weights(mod)):
        mask = np.zeros((u.p, u.q), dtype=bool)
        mask[u.rows[keep], u.cols[keep]] = True
        f = SparseFactor.from_mask(mask, concat=u.concat)
        dense = np.zeros((u.p, u.q))
        dense[u.rows, u.cols] = _flat(mod, w)
        r, c = f.nonzero_indices()
        chain.append(f)
        new_ws.append(dense[r, c])
    new = debut_like(mod, chain, new_ws, dtype=_weights(mod)[0].dtype)
    if isinstance(mod, _DEBUT):
        new.mode = mod.mode
    return new


def prune_model(model: nn.Module, config: PruneConfig | None = None, data: tuple[torch.Tensor, torch.Tensor] | None = None,
                example_input: torch.Tensor | None = None) -> tuple[nn.Module, list[PruneReport]]:
    """A copy of ``model`` with the selected layers pruned into sparse factors, and the report.

    ``data`` ``(x, y)``: SNIP's batch (its first ``config.batch`` samples). ``example_input``: one
    sample's shape for SynFlow (default ``data``'s) and the channels-last flatten of a dense
    ``nn.Flatten -> nn.Linear`` (:func:`litefly.convert.channels_last_flatten`), as ``litefly convert`` does.
    """
    cfg = config or PruneConfig()
    if example_input is None and data is not None:
        example_input = data[0][:1]
    if cfg.method == "snip" and data is None:
        raise ConfigError("prune: snip needs data (inputs and labels) for the saliencies; give --data")
    if cfg.method == "synflow" and example_input is None:
        raise ConfigError("prune: synflow needs one input's shape; give --input-shape or --data")
    model = copy.deepcopy(model).cpu()
    channels_last_flatten(model, example_input.float() if example_input is not None else None)
    layers = _selected(model, cfg.layers)
    if not layers:
        raise ConfigError("prune: the model has no DeBut, Conv2d or Linear layer to prune")
    units = {n: _units(m) for n, m in layers}
    if cfg.method == "magnitude":
        scores = _magnitude(model, layers)
        if cfg.scope == "global":       # one ranking: each factor's magnitudes over their mean (scale-free)
            scores = {n: [s / (s.mean() or 1.0) for s in ss] for n, ss in scores.items()}
    elif cfg.method == "snip":
        x, y = data
        scores = _snip(model, layers, x[:cfg.batch].float(), y[:cfg.batch])
    else:
        scores = _synflow(model, layers, example_input, cfg.sparsity, cfg.iterations, units, cfg.scope)
    all_keeps = _keeps(units, scores, 1.0 - cfg.sparsity, cfg.scope)
    reports = []
    for name, mod in layers:
        us = units[name]
        keeps = all_keeps[name]
        _set_module(model, name, _rebuild(mod, us, keeps))
        before = tuple(u.rows.size for u in us)
        after = tuple(int(k.sum()) for k in keeps)
        notes = ()
        reached = 1.0 - sum(after) / sum(before)
        if cfg.scope == "layer" and reached < cfg.sparsity - 0.5 / sum(before) - 1e-9:
            notes = (f"{100 * reached:.1f}% reached, not {100 * cfg.sparsity:.1f}%: every one of its "
                     f"{sum(u.p for u in us):,} rows keeps one entry",)
        reports.append(PruneReport(name, "debut" if isinstance(mod, _DEBUT) else "dense", before, after,
                                   cfg.sparsity, notes))
    return model, reports


def format_prune_report(reports: Sequence[PruneReport], method: str = ""):
    """A rich table of the pruned layers."""
    from rich.table import Table
    table = Table(title=f"pruning ({method})" if method else "pruning")
    for col in ("layer", "from", "factors", "weights before", "entries after", "sparsity"):
        table.add_column(col, justify="right")
    for r in reports:
        table.add_row(r.name, r.source, str(len(r.after)), f"{sum(r.before):,}", f"{sum(r.after):,}",
                      f"{100 * r.sparsity:.1f}%")
    b, a = sum(sum(r.before) for r in reports), sum(sum(r.after) for r in reports)
    if reports:
        table.add_row("total", "", "", f"{b:,}", f"{a:,}", f"{100 * (1 - a / b):.1f}%")
    return table

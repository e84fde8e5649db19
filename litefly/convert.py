"""Convert a PyTorch model's ``Conv2d``/``Linear`` layers to DeBut, fit and fine-tune them.

* :func:`convert_model` replaces every selected layer by a :class:`~litefly.nn.DeButConv2d`
  or :class:`~litefly.nn.DeButLinear` whose chain comes from :mod:`litefly.autochain`, and
  initialises the factors from the dense weights by alternating least squares
  (:func:`fit_factors`); it returns a per-layer report (parameters, MACs, compression,
  relative approximation error ``||W - R_N...R_1||_F / ||W||_F``).
* :func:`distill` fine-tunes the converted model with knowledge distillation from the dense
  one: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

The conversion options are a :class:`ConvertConfig` (YAML schema in ``docs/models.md``).
"""

from __future__ import annotations

import copy
import fnmatch
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .autochain import SHAPES, generate_chain
from .chain import Factor, validate_chain
from .config import check_keys, read_yaml
from .errors import ConfigError
from .fixed import factor_forward
from .nn import DeButConv2d, DeButLinear, debut_like

__all__ = ["ConvertConfig", "LayerReport", "load_convert_config", "convertible_layers", "fit_factors",
           "channels_last_flatten", "convert_model", "train_epochs", "distill", "count_params", "model_macs", "format_report"]

_CHAIN_KEYS = ("compression", "shrinking_level", "shape", "max_block", "max_factors", "chain")


@dataclass(frozen=True)
class ConvertConfig:
    """What to convert and how. ``overrides`` maps a layer name (or glob) to chain options."""

    compression: float | None = 0.9
    shrinking_level: int | None = None
    shape: str = "auto"
    max_block: int = 16
    max_factors: int = 8
    layers: tuple[str, ...] | None = None        # names or globs; None: every Conv2d and Linear
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sweeps: int = 10                              # ALS sweeps (each: first->last->first)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"convert: shape={self.shape!r} must be one of {', '.join(SHAPES)}")
        if not isinstance(self.sweeps, int) or self.sweeps < 0:
            raise ConfigError(f"convert: sweeps={self.sweeps!r} must be an integer >= 0")
        for name, opts in self.overrides.items():
            if not isinstance(opts, Mapping):
                raise ConfigError(f"convert: overrides.{name}={opts!r} must be a mapping")
            check_keys(f"convert: overrides.{name}", opts, _CHAIN_KEYS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ConvertConfig":
        data = dict(data or {})
        check_keys("convert", data, sorted(f.name for f in fields(cls)))
        if "shrinking_level" in data and "compression" not in data:
            data["compression"] = None
        if data.get("layers") is not None:
            if not isinstance(data["layers"], list) or not all(isinstance(x, str) for x in data["layers"]):
                raise ConfigError(f"convert: layers={data['layers']!r} must be a list of layer names")
            data["layers"] = tuple(data["layers"])
        return cls(**data)

    def chain_options(self, name: str) -> dict[str, Any]:
        opts: dict[str, Any] = {"compression": self.compression, "shrinking_level": self.shrinking_level,
                                "shape": self.shape, "max_block": self.max_block, "max_factors": self.max_factors}
        for pattern, over in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                if "shrinking_level" in over and "compression" not in over:
                    opts["compression"] = None
                if "compression" in over and "shrinking_level" not in over:
                    opts["shrinking_level"] = None
                opts.update(over)
        return opts


def load_convert_config(path: str | Path) -> ConvertConfig:
    """A conversion config YAML (an empty file gives the defaults)."""
    data = read_yaml(path, allow_empty=True)
    try:
        return ConvertConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


@dataclass
class LayerReport:
    name: str
    kind: str
    in_size: int
    out_size: int
    chain: tuple[Factor, ...]
    dense_params: int
    params: int
    dense_macs: int          # per sample (needs an example input; 0 if unknown)
    macs: int
    rel_error: float         # after fitting, before fine-tuning
    notes: tuple[str, ...] = ()

    @property
    def compression(self) -> float:
        return 1.0 - self.params / self.dense_params

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: sizes as ``q``/``p``, the chain as ``[p, q, r, s, t]`` lists."""
        return {"name": self.name, "kind": self.kind, "q": self.in_size, "p": self.out_size,
                "chain": [f.as_list() for f in self.chain], "dense_params": self.dense_params,
                "params": self.params, "compression": self.compression, "dense_macs": self.dense_macs,
                "macs": self.macs, "rel_error": self.rel_error, "notes": list(self.notes)}


# -- selection -----------------------------------------------------------------------------------
def convertible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every ``nn.Linear`` and ``nn.Conv2d`` (groups=1, zero padding) by qualified name."""
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            out.append((name, mod))
        elif isinstance(mod, nn.Conv2d):
            if mod.groups == 1 and mod.padding_mode == "zeros" and not isinstance(mod.padding, str):
                out.append((name, mod))
    return out


def select_layers(layers: list[tuple[str, nn.Module]], patterns: Sequence[str] | None, where: str,
                  kinds: str) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs whose name matches one of the glob ``patterns`` (all for None);
    :class:`ConfigError` naming a pattern that matches none of them (``kinds``: what they are)."""
    if patterns is None:
        return layers
    names = [n for n, _ in layers]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ConfigError(f"{where}: layer {pat!r} matches no {kinds} layer; the model has "
                              f"{', '.join(names) or 'none'}")
    return [(n, m) for n, m in layers if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _select(model: nn.Module, patterns: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    return select_layers(convertible_layers(model), patterns, "convert", "Conv2d/Linear")


# -- fitting -------------------------------------------------------------------------------------
def _solve_factor(f: Factor, A: np.ndarray, B: np.ndarray, W: np.ndarray, x0: np.ndarray,
                  cg_iters: int = 30) -> np.ndarray:
    """Least squares for the nonzeros of one factor X: min ||W - A X B||_F (tiny ridge)."""
    rows, cols = f.nonzero_indices()
    AtA, BBt = A.T @ A, B @ B.T
    rhs = (A.T @ W @ B.T)[rows, cols]
    ridge = 1e-10 * (np.trace(AtA) / len(AtA)) * (np.trace(BBt) / len(BBt)) + 1e-30
    n = rows.size
    if n <= 400:       # the normal matrix, gathered at the nonzeros: H = AtA[rows,rows] * BBt[cols,cols]
        H = AtA[np.ix_(rows, rows)] * BBt[np.ix_(cols, cols)]
        H[np.diag_indices(n)] += ridge
        try:
            return np.linalg.solve(H, rhs)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(H, rhs, rcond=None)[0]

    from scipy.sparse import csr_matrix
    # every row of X belongs to one r x s block (super-block j, lane u), every column too:
    # (AtA X BBt) at the nonzeros is, per block, (AtA X)[block rows] @ BBt[:, block cols]
    g, t, r, s = f.compact_shape
    block_rows = rows.reshape(g * t, r, s)[:, :, 0]
    block_cols = cols.reshape(g * t, r, s)[:, 0, :]
    BBt_blocks = np.ascontiguousarray(BBt[block_cols].transpose(0, 2, 1))     # (blocks, q_k, s); symmetric

    def op(x: np.ndarray) -> np.ndarray:          # conjugate gradients on the same normal equations
        Xt = csr_matrix((x, (cols, rows)), shape=(f.q, f.p))
        Y = np.ascontiguousarray((Xt @ AtA).T)           # AtA @ X (AtA is symmetric), rows contiguous
        return np.matmul(Y[block_rows], BBt_blocks).ravel() + ridge * x

    x = x0.copy()
    r = rhs - op(x)
    d = r.copy()
    rr = r @ r
    for _ in range(cg_iters):
        if rr <= 1e-24 * (rhs @ rhs + 1e-300):
            break
        Hd = op(d)
        alpha = rr / (d @ Hd)
        x += alpha * d
        r -= alpha * Hd
        rr_new = r @ r
        d = r + (rr_new / rr) * d
        rr = rr_new
    return x


def fit_factors(chain: Sequence[Factor], W: np.ndarray, sweeps: int = 10, seed: int = 0,
                tol: float = 5e-3) -> tuple[list[np.ndarray], float]:
    """Fit the chain's factors to a dense ``p x q`` matrix by alternating least squares.

    Each step fixes all factors but one and solves for that one's nonzeros exactly (normal
    equations at the structural nonzeros; conjugate gradients for large factors); a sweep
    goes first -> last -> first; it stops after ``sweeps`` sweeps or when a sweep lowers the
    error by less than ``tol`` of itself. Returns compact weights and ``||W - R_N...R_1||_F / ||W||_F``.
    The factor norms are balanced at the end (the product is unchanged).
    """
    chain = validate_chain(chain)
    W = np.asarray(W, dtype=np.float64)
    if W.shape != (chain[-1].p, chain[0].q):
        raise ConfigError(f"dense matrix has shape {W.shape}, the chain maps {chain[0].q} -> {chain[-1].p}")
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(f.compact_shape) / math.sqrt(f.s) for f in chain]
    norm = np.linalg.norm(W) or 1.0

    def product(lo: int, hi: int, size: int) -> np.ndarray:      # R_(hi-1)...R_lo, applied factor by factor
        m = np.eye(size)                                          # rows: m = (R_(hi-1)...R_lo)^T
        for i in range(lo, hi):
            m = factor_forward(chain[i], ws[i], m)
        return m.T

    def error() -> float:
        return float(np.linalg.norm(W - product(0, len(chain), chain[0].q)) / norm)

    n = len(chain)
    ws, err = _als(chain, W, ws, sweeps, tol, error, product)
    # balance the factor norms (geometric mean), which keeps the product
    rms = [float(np.sqrt(np.mean(w ** 2))) or 1.0 for w in ws]
    g = math.exp(sum(math.log(r) for r in rms) / n)
    ws[:] = [w * (g / r) for w, r in zip(ws, rms)]
    return ws, error()


def _als(chain, W, ws, sweeps, tol, error, product):
    n = len(chain)
    order = list(range(n)) + list(range(n - 2, 0, -1)) if n > 1 else [0]
    err = error()
    for _ in range(sweeps):
        for k in order:
            A = product(k + 1, n, chain[k].p)
            B = product(0, k, chain[0].q)
            ws[k] = _solve_factor(chain[k], A, B, W, ws[k].ravel()).reshape(chain[k].compact_shape)
        new = error()
        done = err - new < tol * err
        err = new
        if done:
            break
    return ws, err


# -- conversion ----------------------------------------------------------------------------------
def _dense_matrix(mod: nn.Module) -> np.ndarray:
    w = mod.weight.detach().double().cpu()
    if isinstance(mod, nn.Conv2d):   # (c_out, c_in, kh, kw) -> (c_out, kh*kw*c_in): kernel position outer
        w = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w.numpy()


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _output_positions(model: nn.Module, names: Sequence[str], example: torch.Tensor | None) -> dict[str, int]:
    """Output positions per sample of each named layer (pixels for conv, 1 for linear), summed over
    its calls in one forward pass of one sample of ``example``."""
    if example is None:
        return {}
    out: dict[str, int] = dict.fromkeys(names, 0)
    hooks = []
    for name in names:
        def hook(m, inp, o, name=name):
            out[name] += int(o[0].numel() // (o.shape[1] if o.ndim == 4 else o.shape[-1]))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    _forward_once(model, example, hooks)
    return out


def _forward_once(model: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """One sample through ``model`` without gradients, then the forward ``hooks`` removed."""
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()


def channels_last_flatten(model: nn.Module, example: torch.Tensor | None) -> dict[str, str]:
    """Replace (in place) each ``nn.Flatten`` that flattens a ``C x H x W`` map (``H*W > 1``)
    straight into an ``nn.Linear`` by the engine's channels-last flatten
    (:class:`litefly.export.FlattenHWC`), and permute that Linear's input columns to match, so
    the model computes the same function. Returns ``{linear name: note}``.

    Needs ``example`` (one sample is enough) for the map's shape; without it, or when the
    model does not trace, nothing changes (``litefly.export`` then refuses the flatten in
    one line, saying how to fix it)."""
    if example is None:
        return {}
    from .export import FlattenHWC
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - fx raises many kinds; the export names the problem
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda m, inp, o, n=n: shapes.__setitem__(n, tuple(inp[0].shape)))
             for n, m in model.named_modules() if isinstance(m, nn.Flatten)]
    _forward_once(model, example, hooks)
    notes: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.Flatten):
            continue
        flat = model.get_submodule(node.target)
        shape = shapes.get(node.target, ())
        if flat.start_dim != 1 or flat.end_dim != -1 or len(shape) != 4 or shape[2] * shape[3] == 1:
            continue
        user = node
        while len(user.users) == 1:
            user = next(iter(user.users))
            mod = model.get_submodule(user.target) if user.op == "call_module" else None
            if not isinstance(mod, (nn.Dropout, nn.Identity)):
                break
        lin = model.get_submodule(user.target) if user.op == "call_module" else None
        if not isinstance(lin, nn.Linear) or len(node.users) != 1:
            continue
        _, c, h, w = shape
        with torch.no_grad():
            lin.weight.copy_(lin.weight.reshape(lin.out_features, c, h, w).permute(0, 2, 3, 1)
                             .reshape(lin.out_features, -1).clone())
        _set_module(model, node.target, FlattenHWC())
        notes[str(user.target)] = (f"nn.Flatten {node.target!r} of the {c}x{h}x{w} map replaced by the engine's "
                                   f"channels-last flatten (FlattenHWC); input columns permuted to match")
    return notes


def convert_model(model: nn.Module, config: ConvertConfig | None = None,
                  example_input: torch.Tensor | None = None, progress: bool = False
                  ) -> tuple[nn.Module, list[LayerReport]]:
    """A copy of ``model`` with the selected layers replaced by fitted DeBut layers, and the report.

    ``example_input`` (one or more samples) is only used to count MACs per sample.
    """
    cfg = config or ConvertConfig()
    model = copy.deepcopy(model).cpu().float()
    flatten_notes = channels_last_flatten(model, example_input)
    selected = _select(model, cfg.layers)
    if not selected:
        raise ConfigError("convert: the model has no Conv2d or Linear layer to convert")
    pixels = _output_positions(model, [n for n, _ in selected], example_input)
    reports = []
    from .progress import progress as progress_lines
    for i, (name, mod) in enumerate(progress_lines(selected, "convert (ALS)") if progress else selected):
        opts = cfg.chain_options(name)
        W = _dense_matrix(mod)
        p, q = W.shape
        notes: tuple[str, ...] = ()
        if opts.get("chain") is not None:
            chain = validate_chain(opts["chain"], q, p)
        else:
            if isinstance(mod, nn.Conv2d) and mod.kernel_size[0] == mod.kernel_size[1]:
                kernel, in_features = mod.kernel_size[0], mod.in_channels
            else:           # linear, or a non-square kernel: the generator sees the chain input size
                kernel, in_features = 1, q
            try:
                gen = generate_chain(in_features, p, kernel, compression=opts["compression"],
                                     shrinking_level=opts["shrinking_level"], shape=opts["shape"],
                                     max_block=opts["max_block"], max_factors=opts["max_factors"])
            except ConfigError as exc:
                raise ConfigError(f"convert: layer {name!r}: {exc}") from None
            chain, notes = gen.chain, gen.notes
        if name in flatten_notes:
            notes = tuple(notes) + (flatten_notes[name],)
        ws, err = fit_factors(chain, W, sweeps=cfg.sweeps, seed=cfg.seed + i)
        kind = "conv2d" if isinstance(mod, nn.Conv2d) else "linear"
        _set_module(model, name, debut_like(mod, chain, ws))
        pix = pixels.get(name, 0)
        params = sum(f.params for f in chain)
        reports.append(LayerReport(name, kind, q, p, tuple(chain), p * q, params, p * q * pix, params * pix,
                                   err, notes))
    return model, reports


# -- counting ------------------------------------------------------------------------------------
_LAYERS = (DeButConv2d, DeButLinear, nn.Conv2d, nn.Linear)


def _weights(mod: nn.Module) -> int:
    """Weights of a Conv2d/Linear/DeBut layer, which are also its MACs per output position."""
    return mod.num_params if isinstance(mod, (DeButConv2d, DeButLinear)) else mod.weight.numel()


def count_params(model: nn.Module, include_bias: bool = False) -> int:
    """Weights of every Conv2d/Linear/DeBut layer (biases only if asked)."""
    return sum(_weights(m) + (m.bias.numel() if include_bias and m.bias is not None else 0)
               for m in model.modules() if isinstance(m, _LAYERS))


def model_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates per sample of every Conv2d/Linear/DeBut layer."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, _LAYERS)}
    positions = _output_positions(model, list(layers), example_input)
    return sum(_weights(m) * positions[n] for n, m in layers.items())


# -- training and knowledge distillation ----------------------------------------------------------
def train_epochs(model: nn.Module, x: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 epochs: int, batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 0.0, seed: int = 0,
                 log: Callable[[str], None] | None = None, progress: bool = False, desc: str = "train",
                 on_epoch: Callable[[int], None] | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """Minibatch training: Adam, a cosine learning-rate schedule, shuffled batches from ``seed``.

    ``loss_fn(output, batch_indices)`` gives the loss of a batch; ``on_epoch(epoch)``, when given,
    runs before each epoch (e.g. to recalibrate quantisation, :mod:`litefly.qat`); ``augment``,
    when given, transforms every batch before the model sees it (e.g.
    :class:`litefly.datasets.CloudAugment`). Returns the mean loss of every epoch and leaves the
    model in eval mode.
    """
    from .progress import progress as progress_lines
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * math.ceil(len(x) / batch_size)))
    history = []
    for epoch in (progress_lines(range(epochs), desc) if progress else range(epochs)):
        if on_epoch is not None:
            on_epoch(epoch)
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx] if augment is None else augment(x[idx])
            loss = loss_fn(model(xb), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(x))
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.4f}")
    model.eval()
    return history


def distill(student: nn.Module, teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 10,
            batch_size: int = 64, lr: float = 2e-3, temperature: float = 4.0, alpha: float = 0.7,
            weight_decay: float = 0.0, seed: int = 0, log=None, progress: bool = False,
            on_epoch: Callable[[int], None] | None = None, desc: str = "distill",
            augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """Fine-tune ``student`` on ``(x, y)`` with knowledge distillation from ``teacher``.

    Loss: ``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``,
    trained by :func:`train_epochs` (``on_epoch``, ``desc``, ``augment``: passed on); with
    ``augment`` the teacher's targets come from the same augmented batch the student sees.
    Returns the mean loss of every epoch.
    """
    if not 0.0 <= alpha <= 1.0 or temperature <= 0:
        raise ConfigError(f"distill: alpha={alpha} must be in [0, 1] and temperature={temperature} positive")
    teacher.eval()

    def targets(xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(torch.cat([teacher(xb[i:i + 512]) for i in range(0, len(xb), 512)]) / temperature, 1)

    soft = None if augment is not None else targets(x)
    batch: dict[str, torch.Tensor] = {}

    def augment_with_targets(xb: torch.Tensor) -> torch.Tensor:
        xb = augment(xb)
        batch["soft"] = targets(xb)
        return xb

    def loss(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        target = soft[idx] if soft is not None else batch["soft"]
        kd = F.kl_div(F.log_softmax(out / temperature, dim=1), target, reduction="batchmean") * temperature ** 2
        return alpha * kd + (1 - alpha) * F.cross_entropy(out, y[idx])

    return train_epochs(student, x, loss, epochs, batch_size, lr, weight_decay, seed, log, progress, desc, on_epoch,
                        None if augment is None else augment_with_targets)


def format_report(reports: Sequence[LayerReport]):
    """A rich table of the per-layer report."""
    from rich.table import Table
    table = Table(title="DeBut conversion")
    for col in ("layer", "kind", "q -> p", "factors", "dense params", "DeBut params", "compression",
                "dense MACs", "DeBut MACs", "rel. error"):
        table.add_column(col, justify="right")
    for r in reports:
        table.add_row(r.name, r.kind, f"{r.in_size} -> {r.out_size}", str(len(r.chain)), f"{r.dense_params:,}",
                      f"{r.params:,}", f"{100 * r.compression:.1f}%", f"{r.dense_macs:,}" if r.dense_macs else "-",
                      f"{r.macs:,}" if r.macs else "-", f"{r.rel_error:.3f}")
    dense = sum(r.dense_params for r in reports)
    ours = sum(r.params for r in reports)
    table.add_row("total", "", "", "", f"{dense:,}", f"{ours:,}", f"{100 * (1 - ours / dense):.1f}%",
                  f"{sum(r.dense_macs for r in reports):,}", f"{sum(r.macs for r in reports):,}", "")
    return table

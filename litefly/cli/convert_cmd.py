"""``litefly convert``: replace a saved PyTorch model's Conv2d/Linear layers by fitted DeBut layers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from litefly.errors import ConfigError, LiteflyError
from litefly.safeio import load_npz, one_line, short, short_text, where


_ARCH_RE = re.compile(r"^(?P<mod>[A-Za-z_][\w.]*|[^:]+\.py):(?P<attr>[A-Za-z_][\w.]*)$")


def _safe_module_globals(path: Path) -> list:
    """The torch.nn layer classes a whole-model file needs, if it needs nothing else (else [])."""
    import importlib  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: plain weights_only loading decides
        return []
    classes = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if not module.startswith("torch.nn.modules."):
            return []
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return []
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            return []
        classes.append(obj)
    return classes


def _build_arch(arch: str):
    """Import ``module:callable`` (or ``file.py:callable``) and call it with no arguments."""
    import importlib  # noqa: PLC0415
    import importlib.util  # noqa: PLC0415

    from torch import nn  # noqa: PLC0415
    m = _ARCH_RE.match(arch)
    if not m:
        raise ConfigError(f"--arch {short(arch, 60)} must be module:callable or file.py:callable, e.g. mynet:build")
    mod_name, attr = m.group("mod"), m.group("attr")
    try:
        if mod_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(mod_name).stem, mod_name)
            if spec is None or spec.loader is None or not Path(mod_name).is_file():
                raise ImportError(f"no file {mod_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
        target = module
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, OSError, SyntaxError) as exc:
        raise ConfigError(one_line(f"--arch {short(arch, 60)}: cannot import it ({type(exc).__name__}: {exc})")) from None
    if not callable(target):
        raise ConfigError(f"--arch {short(arch, 60)}: {attr} is not callable")
    try:
        model = target()
    except Exception as exc:  # noqa: BLE001 - user code
        raise ConfigError(one_line(f"--arch {short(arch, 60)}: calling {attr}() failed "
                                   f"({type(exc).__name__}: {exc})")) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--arch {short(arch, 60)}: {attr}() returned {type(model).__name__}, expected an nn.Module")
    return model


def _load_model(path: Path, arch: str | None = None, unsafe_pickle: bool = False):
    """The model in ``path``: a whole nn.Module or a state_dict (with ``--arch``).

    By default ``torch.load(weights_only=True)``: tensors, containers and torch.nn layer classes
    only, never arbitrary code. ``unsafe_pickle`` loads full pickle (runs any code in the file).
    """
    import pickle  # noqa: PLC0415

    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415
    from litefly.limits import MAX_MODEL_BYTES  # noqa: PLC0415
    from litefly.safeio import check_file  # noqa: PLC0415

    check_file(path, "PyTorch model file", MAX_MODEL_BYTES, "MAX_MODEL_BYTES")
    name = where(path)
    if unsafe_pickle:
        click.echo(f"warning: --unsafe-pickle: loading {name} with full pickle, which runs any code the file "
                   f"holds", err=True)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds
            raise LiteflyError(one_line(f"{name}: cannot load a PyTorch model ({type(exc).__name__}: "
                                        f"{short_text(str(exc), 100)})")) from None
    else:
        try:
            with torch.serialization.safe_globals(_safe_module_globals(path)):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            what = f"a pickled {short_text(found.group(1), 60)}" if found else "pickled Python objects"
            raise ConfigError(f"{name}: refused: it holds {what}, which safe loading (torch.load weights_only=True) "
                              f"does not run; save model.state_dict() and pass --arch module:callable, or pass "
                              f"--unsafe-pickle if you trust the file (it runs any code the file holds)") from None
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds
            raise LiteflyError(one_line(f"{name}: cannot load a PyTorch model ({type(exc).__name__}: "
                                        f"{short_text(str(exc), 100)})")) from None
    if isinstance(obj, nn.Module) and not isinstance(obj, torch.jit.ScriptModule):
        if arch is not None:
            raise ConfigError(f"{name}: holds a whole model ({type(obj).__name__}); --arch is only for a state_dict")
        return obj.eval()
    if isinstance(obj, dict):
        state = obj
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
        if arch is None:
            raise ConfigError(f"{name}: holds a state_dict (weights only); give the architecture with "
                              f"--arch module:callable (a function or class returning the nn.Module)")
        model = _build_arch(arch)
        try:
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - RuntimeError/TypeError/KeyError from torch
            raise ConfigError(one_line(f"{name}: the state_dict does not fit --arch {short(arch, 40)} "
                                       f"({short_text(str(exc), 150)})")) from None
        return model.eval()
    raise ConfigError(f"{name}: holds {short_text(type(obj).__name__, 40)}, expected an nn.Module or a state_dict")


def _load_data(path: Path):
    import torch  # noqa: PLC0415
    d = load_npz(path, "data .npz file")
    if "x" not in d or "y" not in d:
        raise ConfigError(f"{where(path)}: expected arrays 'x' (inputs) and 'y' (integer labels), "
                          f"got {short(sorted(d), 60)}")
    try:
        return torch.as_tensor(d["x"], dtype=torch.float32), torch.as_tensor(d["y"], dtype=torch.long)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(one_line(f"{where(path)}: x/y are not numeric arrays ({exc})")) from None


def _prune_options(method: str | None, sparsity: str | None, dense: bool, scope: str | None = None):
    """The :class:`litefly.prune.PruneConfig` of ``--prune/--sparsity/--prune-scope/--prune-dense``
    (None without them), or a one-line error."""
    if method is None:
        given = [n for n, v in (("--sparsity", sparsity), ("--prune-scope", scope), ("--prune-dense", dense or None))
                 if v is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --prune METHOD (magnitude, snip or synflow)")
        return None
    from litefly.prune import SCOPES, PruneConfig, parse_method, parse_sparsity  # noqa: PLC0415
    method = parse_method(method)
    if sparsity is None:
        raise ConfigError("--prune needs --sparsity S, the fraction of each layer's weights removed (0 < S < 1)")
    if scope is not None and scope not in SCOPES:
        raise ConfigError(f"--prune-scope {scope[:40]!r} must be one of {', '.join(SCOPES)}")
    return PruneConfig(method, parse_sparsity(sparsity), scope=scope or "layer")


@click.command("convert")
@click.argument("model_path", metavar="MODEL.pt", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Conversion YAML (docs/models.md); default: every layer at 90% compression.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Converted model (torch.save); the report goes to OUTPUT with suffix .json.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=".npz with x (inputs) and y (labels): fine-tuning and calibration data.")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=0),
              help="Knowledge-distillation epochs (needs --data).")
@click.option("--lr", default=2e-3, show_default=True, type=float)
@click.option("--input-shape", default=None, help="One sample's shape for MAC counts, e.g. 1,8,8 (default: from --data).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also quantise to int8 (calibrated on --data) and export network.yaml + weights here.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--arch", default=None, metavar="MODULE:CALLABLE",
              help="Builds the model when MODEL.pt holds a state_dict: an importable module (or file.py) and a "
                   "function or class returning the nn.Module, e.g. mynet:build.")
@click.option("--unsafe-pickle", is_flag=True,
              help="Load MODEL.pt with full pickle (torch.load weights_only=False). This RUNS ARBITRARY CODE "
                   "stored in the file: use it only for files you made or trust. By default only tensors, "
                   "containers and torch.nn layers are loaded.")
@click.option("--prune", "prune_method", default=None, metavar="METHOD",
              help="After converting, prune every converted layer's factors into sparse factors (zeros cost no "
                   "engine cycles): magnitude, snip (needs --data) or synflow; then fine-tune (--epochs).")
@click.option("--sparsity", default=None, metavar="S",
              help="With --prune: the fraction of each layer's weights removed, 0 < S < 1 (e.g. 0.8).")
@click.option("--prune-scope", default=None, metavar="SCOPE",
              help="With --prune: layer (default: each layer to the sparsity) or global (one ranking over all "
                   "pruned layers; magnitudes are taken relative to each factor's mean).")
@click.option("--prune-dense", is_flag=True,
              help="With --prune: prune the dense Conv2d/Linear layers directly (each becomes one sparse factor) "
                   "instead of converting them to DeBut first.")
@click.option("--merge", "merge", is_flag=True,
              help="After fine-tuning, run each DeBut layer's adjacent factors whose product is one DeBut factor "
                   "with no more MACs as that factor (litefly.merge; exact in floating point): fewer MACs and "
                   "factors on the engine.")
def convert(model_path: Path, config_path: Path | None, output: Path, data_path: Path | None, epochs: int,
            lr: float, input_shape: str | None, export_dir: Path | None, threads: int, arch: str | None,
            unsafe_pickle: bool, prune_method: str | None, sparsity: str | None, prune_scope: str | None,
            prune_dense: bool, merge: bool) -> None:
    """Convert MODEL.pt's Conv2d and Linear layers to DeBut, fine-tune and report per layer.

    MODEL.pt is a whole model built from torch.nn layers, or a state_dict with --arch.
    """
    import torch

    from litefly.cli.output import console as make_console
    from litefly.convert import ConvertConfig, convert_model, distill, format_report, load_convert_config

    prune_cfg = _prune_options(prune_method, sparsity, prune_dense, prune_scope)
    torch.set_num_threads(threads)
    console = make_console(min_width=130)
    model = _load_model(model_path, arch=arch, unsafe_pickle=unsafe_pickle)
    cfg = load_convert_config(config_path) if config_path else ConvertConfig()
    data = _load_data(data_path) if data_path else None
    if export_dir is not None and data is None:
        raise ConfigError("--export needs --data (calibration inputs)")
    example = None
    if input_shape:
        toks = input_shape.split(",")
        if len(toks) > 4 or not all(t.strip().isdigit() and t.strip().isascii() and len(t.strip()) <= 6 for t in toks):
            raise ConfigError(f"--input-shape {short(input_shape, 40)} must be up to 4 comma-separated integers "
                              f"below 10^6, e.g. 1,8,8")
        shape = tuple(int(v) for v in toks)
        if len(shape) == 3:
            from litefly.limits import check_image_size  # noqa: PLC0415
            check_image_size(shape[1], shape[2], "--input-shape")
        example = torch.zeros((1, *shape))
    elif data is not None:
        example = data[0][:1]
    if prune_cfg is not None and prune_cfg.method == "snip" and data is None:
        raise ConfigError("--prune snip needs --data (inputs and labels for the saliencies)")
    if prune_cfg is not None and prune_cfg.method == "synflow" and example is None:
        raise ConfigError("--prune synflow needs one input's shape: give --input-shape or --data")
    torch.manual_seed(cfg.seed)
    if prune_dense:
        new, reports = model, []
    else:
        new, reports = convert_model(model, cfg, example_input=example, progress=True)
        console.print(format_report(reports))
        for r in reports:
            for note in r.notes:
                console.print(f"[yellow]note[/] {r.name}: {note}")
    pruned = []
    if prune_cfg is not None:
        from dataclasses import replace  # noqa: PLC0415

        from litefly.prune import format_prune_report, prune_model  # noqa: PLC0415
        layers = cfg.layers if prune_dense else tuple(r.name for r in reports)
        new, pruned = prune_model(new, replace(prune_cfg, layers=layers), data=data, example_input=example)
        console.print(format_prune_report(pruned, prune_cfg.method))
        for r in pruned:
            for note in r.notes:
                console.print(f"[yellow]note[/] {r.name}: {note}")
    history = []
    if data is not None and epochs:
        history = distill(new, model, data[0], data[1], epochs=epochs, lr=lr, seed=cfg.seed, progress=True,
                          log=lambda m: console.print(m))
    merged = []
    if merge:
        from litefly.chain import chain_params  # noqa: PLC0415
        from litefly.merge import merge_model  # noqa: PLC0415
        probe = None if example is None else example.to(next(new.parameters()).dtype)
        before = None if probe is None else new.eval()(probe).detach()
        merged = merge_model(new)
        for name, plan in merged:
            console.print(f"merged {name}: {len(plan.declared)} -> {len(plan.chain)} factors, "
                          f"{chain_params(plan.declared):,} -> {chain_params(plan.chain):,} MACs "
                          f"per column")
        if before is not None:
            after = new(probe).detach()
            err = float((after - before).abs().max() / before.abs().max().clamp_min(1e-30))
            console.print(f"merge: {len(merged)} layers; largest output change on one input {err:.1e} "
                          f"(relative; floating-point rounding)")
            if err > 1e-4:
                raise LiteflyError(f"--merge changed the model's output by {err:.1e} (relative), expected "
                                   f"floating-point rounding only")
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(new, output)
    report = {"layers": [r.to_dict() for r in reports], "kd_loss": history}
    if merge:
        report["merged"] = [{"layer": name, "declared": [f.as_list() for f in plan.declared],
                             "chain": [f.as_list() for f in plan.chain]} for name, plan in merged]
    if prune_cfg is not None:
        report["prune"] = {"method": prune_cfg.method, "sparsity": prune_cfg.sparsity, "dense": prune_dense,
                           "layers": [r.to_dict() for r in pruned]}
    output.with_suffix(".json").write_text(json.dumps(report, indent=2))
    console.print(f"wrote {output} and {output.with_suffix('.json')}")
    if export_dir is not None:
        import numpy as np  # noqa: PLC0415

        from litefly.export import export_int8, int8_forward, save_int8  # noqa: PLC0415
        from litefly.host.runtime import NetworkRunner  # noqa: PLC0415
        network, params = export_int8(new, data[0], name=output.stem.replace("-", "_") or "network")
        path = save_int8(network, params, export_dir)
        # the exported network on its one network engine (the engine model), as the board runs it
        sample = data[0][:16].double().numpy()
        with NetworkRunner(network, params, "golden", input_size=tuple(sample.shape[2:]) or None) as runner:
            same = np.array_equal(runner.run(sample), int8_forward(network, params, sample))
            env = runner.envelope
        if not same:
            raise LiteflyError("--export: the engine model's output differs from the int8 golden network")
        console.print(f"int8 export: {path} (+ {len(params)} weight files, chained scales); one engine "
                      f"0x{env.hash32:08x} serves its {len(network.layers)} layers, engine model == int8 golden on "
                      f"{len(sample)} samples; run: litefly bench {path} --params {export_dir}")

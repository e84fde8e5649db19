"""``litefly convert``: replace a saved PyTorch model's Conv2d/Linear layers by fitted DeBut layers."""

from __future__ import annotations

import json
from pathlib import Path

import click

from litefly.errors import ConfigError, LiteflyError


def _load_model(path: Path):
    import torch
    from torch import nn
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds
        raise LiteflyError(f"{path}: cannot load a PyTorch model ({str(exc).splitlines()[0]})") from None
    if isinstance(obj, torch.jit.ScriptModule) or not isinstance(obj, nn.Module):
        kind = "a state_dict" if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"{path}: holds {kind}, expected a whole nn.Module saved with torch.save(model, path)")
    return obj.eval()


def _load_data(path: Path):
    import numpy as np
    import torch
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    with np.load(path, allow_pickle=False) as d:
        if "x" not in d.files or "y" not in d.files:
            raise ConfigError(f"{path}: expected arrays 'x' (inputs) and 'y' (integer labels), got {d.files}")
        return torch.as_tensor(d["x"], dtype=torch.float32), torch.as_tensor(d["y"], dtype=torch.long)


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
def convert(model_path: Path, config_path: Path | None, output: Path, data_path: Path | None, epochs: int,
            lr: float, input_shape: str | None, export_dir: Path | None, threads: int) -> None:
    """Convert MODEL.pt's Conv2d and Linear layers to DeBut, fine-tune and report per layer."""
    import torch
    from rich.console import Console

    from litefly.convert import ConvertConfig, convert_model, distill, format_report, load_convert_config

    torch.set_num_threads(threads)
    console = Console(width=max(Console().width, 130))
    model = _load_model(model_path)
    cfg = load_convert_config(config_path) if config_path else ConvertConfig()
    data = _load_data(data_path) if data_path else None
    if export_dir is not None and data is None:
        raise ConfigError("--export needs --data (calibration inputs)")
    example = None
    if input_shape:
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape {input_shape!r} must be comma-separated integers, e.g. 1,8,8") from None
        example = torch.zeros((1, *shape))
    elif data is not None:
        example = data[0][:1]
    torch.manual_seed(cfg.seed)
    new, reports = convert_model(model, cfg, example_input=example, progress=True)
    console.print(format_report(reports))
    for r in reports:
        for note in r.notes:
            console.print(f"[yellow]note[/] {r.name}: {note}")
    history = []
    if data is not None and epochs:
        history = distill(new, model, data[0], data[1], epochs=epochs, lr=lr, seed=cfg.seed, progress=True,
                          log=lambda m: console.print(m))
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(new, output)
    report = {"layers": [r.to_dict() for r in reports], "kd_loss": history}
    output.with_suffix(".json").write_text(json.dumps(report, indent=2))
    console.print(f"wrote {output} and {output.with_suffix('.json')}")
    if export_dir is not None:
        from litefly.export import export_int8, save_int8
        network, params = export_int8(new, data[0], name=output.stem.replace("-", "_") or "network")
        path = save_int8(network, params, export_dir)
        console.print(f"int8 export: {path} (+ {len(params)} weight files); run: litefly bench {path} "
                      f"--params {export_dir}")

"""Safe model loading in ``litefly convert`` (issue 16): a pickle that would run code is refused
in one line by default; state_dicts need --arch; full pickle only behind --unsafe-pickle."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from cli_inprocess import run_cli


class Hostile:
    """Unpickling this calls os.system (it would create the marker file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrap", ["dict", "bare"])
def test_hostile_pickle_is_refused_in_one_line(tmp_path, capsys, wrap):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = Hostile(str(marker))
    torch.save({"weight": torch.zeros(2), "x": payload} if wrap == "dict" else payload, path)
    code, out, err = run_cli(capsys, "convert", str(path), "-o", str(tmp_path / "out.pt"))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) <= 301, err
    assert "refused" in err and "--unsafe-pickle" in err and "Traceback" not in err
    assert not marker.exists(), "the hostile pickle ran code"


def test_unsafe_pickle_flag_warns_about_code_execution(capsys):
    code, out, _ = run_cli(capsys, "convert", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--unsafe-pickle" in text and "ARBITRARY CODE" in text and "--arch" in text


def test_whole_torch_nn_model_loads_safely_and_state_dict_needs_arch(tmp_path):
    from litefly.cli.convert_cmd import _load_model
    from litefly.errors import ConfigError
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    torch.save(model, tmp_path / "m.pt")
    loaded = _load_model(tmp_path / "m.pt")
    assert isinstance(loaded, nn.Sequential) and torch.equal(loaded[0].weight, model[0].weight)

    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(ConfigError, match="holds a state_dict"):
        _load_model(tmp_path / "sd.pt")
    arch = tmp_path / "arch_mod.py"
    arch.write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), "
                    "nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))\n\ndef wrong():\n    return nn.Linear(2, 2)\n")
    built = _load_model(tmp_path / "sd.pt", arch=f"{arch}:build")
    assert torch.equal(built[3].weight, model[3].weight)
    with pytest.raises(ConfigError, match="does not fit --arch"):
        _load_model(tmp_path / "sd.pt", arch=f"{arch}:wrong")
    with pytest.raises(ConfigError, match="must be module:callable"):
        _load_model(tmp_path / "sd.pt", arch="not an arch")


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


def test_custom_class_needs_arch_or_unsafe_pickle(tmp_path, capsys):
    from litefly.cli.convert_cmd import _load_model
    from litefly.errors import ConfigError
    torch.save(Custom(), tmp_path / "c.pt")
    with pytest.raises(ConfigError, match="refused: it holds a pickled .*Custom"):
        _load_model(tmp_path / "c.pt")
    model = _load_model(tmp_path / "c.pt", unsafe_pickle=True)
    assert isinstance(model, Custom)
    assert "--unsafe-pickle" in capsys.readouterr().err

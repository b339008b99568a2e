"""ipguard export --opset beyond what torch's ONNX exporter writes: bad input naming --opset,
refused before the model loads (it was exit 1, 'cannot export ...: Unsupported onnx_opset_version')."""
import pytest
import torch
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.io import save_torchscript
from ipguard_fast.io.formats.onnx import export_onnx


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.mark.parametrize("opset", ["99", "100000"])
def test_export_refuses_an_opset_torch_cannot_write(opset, tmp_path, capsys, monkeypatch):
    model = save_torchscript(tiny_model(), torch.rand(2, 1, 8, 8), tmp_path / "model.pt")
    monkeypatch.setattr("ipguard_fast.io.load_model", lambda *a, **k: pytest.fail("loaded before --opset was checked"))
    code = main(["export", "--model", str(model), "--input-shape", "1,8,8", "--out", str(tmp_path / "m.onnx"),
                 "--opset", opset])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("ipguard export: error: --opset: must be at most"), err
    assert not (tmp_path / "m.onnx").exists()


def test_export_onnx_refuses_an_opset_above_torchs_highest(tmp_path):
    with pytest.raises(ValueError, match="^opset: must be at most"):
        export_onnx(tiny_model(), (1, 8, 8), tmp_path / "x.onnx", opset=99)
    assert not (tmp_path / "x.onnx").exists()

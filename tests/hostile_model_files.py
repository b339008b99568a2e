"""Helpers shared by the tests that feed hostile model files to every entry point."""
import torch
from conftest import half_matching_fingerprints
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.io import save_exported, save_torchscript

SHAPE = (1, 8, 8)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def tiny_archives(folder):
    """(model, .pt2 path, TorchScript path) of one small honest model."""
    model = tiny_model()
    example = torch.rand(2, *SHAPE)
    return model, save_exported(model, example, folder / "honest.pt2"), save_torchscript(model, example,
                                                                                       folder / "honest.pt")


def snapshot(folder):
    """Every file below ``folder`` with its bytes: equal snapshots mean nothing was created or changed."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def every_command_refuses(path, tmp_path, capsys):
    """Each command given the hostile model ``path`` exits 2 with one line, creating or changing no file."""
    fp_path = half_matching_fingerprints(tiny_model(), 10).save(tmp_path / "fp.safetensors")
    before = snapshot(tmp_path)
    commands = [
        ["verify", "--fingerprints", str(fp_path), "--model", str(path)],
        ["extract", "--model", str(path), "--input-shape", "1,8,8", "-n", "2", "--k", "1", "--no-progress",
         "--out", str(tmp_path / "out.safetensors")],
        ["serve", "--model", str(path), "--port", "0"],
        ["export", "--model", str(path), "--input-shape", "1,8,8", "--format", "torchscript",
         "--out", str(tmp_path / "o.pt")],
        # refused as formats protect and evaluate cannot train, before anything is read
        ["protect", "--model", str(path), "--data", "digits", "--no-progress", "--out", str(tmp_path / "protect")],
        ["evaluate", "--model", str(path), "--data", "digits", "--out", str(tmp_path / "evaluate")],
    ]
    errors = []
    for argv in commands:
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv[0], err)
        errors.append(err)
    assert snapshot(tmp_path) == before
    return errors

"""One error contract: every bad input from the command line is one line and exit 2 (a
traceback only with --debug), every bad API input a ValueError naming the argument."""
import subprocess
import sys
import time

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

import ipguard_fast as ig
from ipguard_fast.cli import main
from ipguard_fast.io import save_torchscript
from ipguard_fast.remote import serve as remote_serve

SHAPE = (1, 8, 8)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    model = save_torchscript(tiny_model(), torch.rand(2, *SHAPE), folder / "model.pt")
    torch.manual_seed(1)
    wide = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval(),
                            torch.rand(2, 3, 32, 32), folder / "wide.pt")
    fps = half_matching_fingerprints(tiny_model(), 10).save(folder / "fp.safetensors")
    return {"model": str(model), "wide": str(wide), "fp": str(fps), "dir": folder}


def one_line_exit_2(argv, capsys):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case", ["verify wrong shape", "extract wrong shape", "serve port", "demo nan k",
                                  "demo zero threads", "evaluate nan k", "extract bad device"])
def test_bad_command_lines_are_one_line_and_exit_2(case, files, capsys):
    argv = {
        "verify wrong shape": ["verify", "--fingerprints", files["fp"], "--model", files["wide"]],
        "extract wrong shape": ["extract", "--model", files["model"], "--input-shape", "1,8", "--k", "1",
                                "--no-progress", "--out", str(files["dir"] / "o.safetensors")],
        "serve port": ["serve", "--model", files["model"], "--port", "70000"],
        "demo nan k": ["demo", "--k", "1,nan", "--out", str(files["dir"] / "demo")],
        "demo zero threads": ["demo", "--threads", "0", "--out", str(files["dir"] / "demo")],
        "evaluate nan k": ["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--k", "nan",
                           "--out", str(files["dir"] / "eval")],
        "extract bad device": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1",
                               "--device", "tpu:9", "--no-progress", "--out", str(files["dir"] / "o.safetensors")],
    }[case]
    start = time.monotonic()
    one_line_exit_2(argv, capsys)
    assert time.monotonic() - start < 20, "refused only after work started"


def test_debug_shows_the_traceback(files):
    proc = subprocess.run([sys.executable, "-m", "ipguard_fast", "--debug", "verify", "--fingerprints", files["fp"],
                           "--model", files["wide"]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" in proc.stderr


@pytest.mark.parametrize("kwargs, name", [
    (dict(input_shape=8), "input_shape"),
    (dict(input_shape=(1.9, 8, 8)), "input_shape"),
    (dict(k=True), "k"),
    (dict(seed=1.5), "seed"),
    (dict(batch_size=True), "batch_size"),
    (dict(device="tpu:9"), "device"),
    (dict(init=torch.full((4, *SHAPE), float("nan"))), "init"),
    (dict(init=torch.full((4, *SHAPE), 3.0)), "init"),
])
def test_bad_api_input_is_a_value_error_naming_the_argument(kwargs, name):
    args = dict(k=1.0, input_shape=SHAPE, progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name}:"):
        ig.extract_fingerprints(tiny_model(), 2, **args)


def test_a_suspect_that_cannot_take_the_images_is_a_value_error():
    fps = half_matching_fingerprints(tiny_model(), 10)
    wide = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(ValueError, match="^suspect: fails on images of shape"):
        ig.verify(wide, fps)
    with pytest.raises(ValueError, match="^batch_size:"):
        ig.verify(tiny_model(), fps, batch_size=True)


FACTORY = "ipguard_fast.models:DigitsCNN"


@pytest.mark.parametrize("case, option", [
    ("demo out is a file", "--out"), ("evaluate out is a file", "--out"), ("extract out is a folder", "--out"),
    ("protect out is a folder", "--out"), ("extract out in a missing folder", "--out"),
    ("extract out is a device", "--out"), ("export opset 3", "--opset"), ("export pt2 name", "--out"),
    ("export out is a folder", "--out"), ("export wrong shape", "--input-shape"),
    ("protect held-out data unknown", "--held-out-data"), ("protect held-out data missing", "--held-out-data"),
])
def test_outputs_and_export_settings_are_checked_before_any_work(case, option, files, capsys):
    folder = files["dir"]
    (folder / "afile").write_text("x")
    (folder / "adir").mkdir(exist_ok=True)
    export = ["export", "--model", FACTORY, "--input-shape", "1,8,8"]
    argv = {
        "demo out is a file": ["demo", "--out", str(folder / "afile")],
        "evaluate out is a file": ["evaluate", "--model", FACTORY, "--out", str(folder / "afile")],
        "extract out is a folder": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1",
                                    "--out", str(folder / "adir")],
        "protect out is a folder": ["protect", "--model", FACTORY, "--data", "digits", "--out", str(folder / "adir")],
        "protect held-out data unknown": ["protect", "--model", FACTORY, "--data", "digits", "--held-out-data", "x",
                                          "--out", str(folder / "p.safetensors")],
        "protect held-out data missing": ["protect", "--model", FACTORY, "--data", "digits", "--held-out-data",
                                          f"mnist:{folder / 'missing'}", "--out", str(folder / "p.safetensors")],
        "extract out in a missing folder": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k",
                                            "1", "--out", str(folder / "missing" / "x.safetensors")],
        "extract out is a device": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1",
                                    "--out", "/dev/null"],
        "export opset 3": export + ["--opset", "3", "--out", str(folder / "m.onnx")],
        "export pt2 name": export + ["--format", "pt2", "--out", str(folder / "m.notpt2")],
        "export out is a folder": export + ["--out", str(folder / "adir")],
        "export wrong shape": ["export", "--model", FACTORY, "--input-shape", "3,8,8", "--out", str(folder / "m.onnx")],
    }[case]
    start = time.monotonic()
    err = one_line_exit_2(argv, capsys)
    assert f"error: {option}: " in err, err
    assert time.monotonic() - start < 20, "refused only after work started"


class OutOfMemory(nn.Module):
    """A model whose forward fails to allocate (as one too large for the machine does)."""

    errors = {"memory": lambda: MemoryError(), "cuda": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried "
                                                                                      "to allocate 2.00 GiB"),
              "cpu": lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")}
    kind = "memory"

    def forward(self, x):
        raise self.errors[self.kind]()


@pytest.mark.parametrize("kind", sorted(OutOfMemory.errors))
def test_a_model_that_runs_out_of_memory_is_a_resource_failure_not_bad_input(kind, monkeypatch):
    monkeypatch.setattr(OutOfMemory, "kind", kind)
    fps = half_matching_fingerprints(tiny_model(), 10)
    expected = MemoryError if kind == "memory" else RuntimeError
    with pytest.raises(expected) as caught:
        ig.verify(OutOfMemory(), fps)
    assert not isinstance(caught.value, ValueError)
    with pytest.raises(expected):
        ig.extract_fingerprints(OutOfMemory(), 2, k=1.0, input_shape=SHAPE, progress=False)
    with pytest.raises(expected):
        remote_serve(OutOfMemory(), port=0, input_shape=SHAPE)


@pytest.mark.parametrize("command", ["verify", "extract", "serve"])
def test_the_cli_reports_a_model_out_of_memory_as_exit_1(command, files, capsys):
    model = ["--model", "test_error_contract:OutOfMemory", "--no-isolate"]
    argv = {"verify": ["verify", "--fingerprints", files["fp"]] + model,
            "extract": ["extract", *model, "--input-shape", "1,8,8", "--k", "1", "--no-progress",
                        "--out", str(files["dir"] / "oom.safetensors")],
            "serve": ["serve", *model, "--input-shape", "1,8,8", "--port", "0"]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"ipguard {command}: failed: ran out of memory"), err


def test_serve_with_a_wrong_input_shape_names_the_option(files, capsys):
    for extra in ([], ["--no-isolate"]):
        err = one_line_exit_2(["serve", "--model", files["model"], "--input-shape", "3,32,32", "--port", "0", *extra],
                              capsys)
        assert err.startswith("ipguard serve: error: --input-shape: the model fails"), err


@pytest.mark.parametrize("case", ["missing", "junk", "folder"])
def test_evaluate_checks_its_negatives_before_any_training(case, files, capsys):
    (files["dir"] / "junk.pt").write_bytes(b"not a model")
    path = {"missing": files["dir"] / "missing.pt", "junk": files["dir"] / "junk.pt", "folder": files["dir"]}[case]
    start = time.monotonic()
    err = one_line_exit_2(["evaluate", "--model", FACTORY, "--negatives", files["model"], str(path),
                           "--out", str(files["dir"] / f"eval-{case}")], capsys)
    assert err.startswith(f"ipguard evaluate: error: --negatives: {path}"), err
    assert time.monotonic() - start < 20, "refused only after work started"

"""Bad command lines found by an audit of the CLI's error contract: each is refused with exit
2 and one line naming the option, before any work, leaving nothing behind."""
import os
import time

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.io import save_torchscript

FACTORY = "ipguard_fast.models:DigitsCNN"


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit_cli")
    model = save_torchscript(tiny_model(), torch.rand(2, 1, 8, 8), folder / "model.pt")
    fps = half_matching_fingerprints(tiny_model(), 10).save(folder / "fp.safetensors")
    os.symlink(folder / "loop_b", folder / "loop_a")
    os.symlink(folder / "loop_a", folder / "loop_b")
    return {"model": str(model), "fp": str(fps), "loop": str(folder / "loop_a"), "dir": folder}


def refused(argv, capsys, option, tmp_path, monkeypatch):
    """Exit 2, one line naming `option`, within seconds, nothing written in the working folder."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    assert f"error: {option}" in err, err
    assert time.monotonic() - start < 30, "refused only after work started"
    assert list(tmp_path.iterdir()) == []
    return err


@pytest.mark.parametrize("command", ["extract", "export", "protect", "evaluate", "demo"])
def test_an_output_that_is_a_symlink_loop_is_bad_input(command, files, capsys, tmp_path, monkeypatch):
    loop = files["loop"]
    argv = {"extract": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1", "--out", loop],
            "export": ["export", "--model", files["model"], "--input-shape", "1,8,8", "--out", loop],
            "protect": ["protect", "--model", FACTORY, "--data", "digits", "--out", loop],
            "evaluate": ["evaluate", "--model", FACTORY, "--out", loop],
            "demo": ["demo", "--out", loop]}[command]
    err = refused(argv, capsys, "--out: ", tmp_path, monkeypatch)
    assert "loop of symbolic links" in err


@pytest.mark.parametrize("command", ["extract", "export"])
def test_a_model_that_is_a_symlink_loop_is_bad_input(command, files, capsys, tmp_path, monkeypatch):
    out = str(tmp_path / "o.out")
    argv = {"extract": ["extract", "--model", files["loop"], "--input-shape", "1,8,8", "--k", "1", "--out", out],
            "export": ["export", "--model", files["loop"], "--input-shape", "1,8,8", "--out", out]}[command]
    refused(argv, capsys, "", tmp_path, monkeypatch)


@pytest.mark.parametrize("command, extra, option", [
    ("evaluate", ["--methods", "bogus"], "--methods: "),
    ("evaluate", ["--methods", ""], "--methods: "),
    ("evaluate", ["--methods", "ipguard,mistakes", "--data", "mnist:/nonexistent"], "--methods: "),
    ("evaluate", ["--methods", "ipguard,selected", "--pool-factor", "0"], "--pool-factor: "),
    ("evaluate", ["--methods", "ipguard,selected", "--replicas", "0"], "--replicas: "),
    ("evaluate", ["--methods", "selected", "--cache", "FILE"], "--cache: "),
    ("demo", ["--pool-factor", "0"], "--pool-factor: "),
    ("demo", ["--replicas", "0"], "--replicas: "),
])
def test_evaluate_and_demo_check_the_selection_settings_before_training(command, extra, option, files, capsys,
                                                                         tmp_path, monkeypatch):
    extra = [files["model"] if part == "FILE" else part for part in extra]
    argv = {"evaluate": ["evaluate", "--model", FACTORY, "--out", "e"], "demo": ["demo", "--out", "d"]}[command]
    refused(argv + extra, capsys, option, tmp_path, monkeypatch)


def test_protect_refuses_an_out_that_is_its_cache_key(capsys, tmp_path, monkeypatch):
    # the key file would be made at OUT, then replaced by the fingerprints: the cache's key lost
    refused(["protect", "--model", FACTORY, "--data", "digits", "--cache-key", "f.safetensors",
             "--out", "f.safetensors"], capsys, "--out: ", tmp_path, monkeypatch)


def test_verify_refuses_a_progress_key_that_is_the_progress_file(files, capsys, tmp_path, monkeypatch):
    refused(["verify", "--fingerprints", files["fp"], "--endpoint", "http://127.0.0.1:1/", "--retries", "0",
             "--progress", "p", "--progress-key", "p"], capsys, "--progress-key: ", tmp_path, monkeypatch)


@pytest.mark.parametrize("command", ["verify", "serve", "extract"])
@pytest.mark.parametrize("extra, option", [(["--timeout", "1e10"], "--timeout: "),
                                           (["--memory-limit", "1e300"], "--memory-limit: "),
                                           (["--memory-limit", "1e10"], "--memory-limit: ")])
def test_worker_limits_too_large_to_keep_are_bad_input(command, extra, option, files, capsys, tmp_path, monkeypatch):
    # were an OverflowError (exit 1), or blamed on the model file ("SuspectFailed ... cannot confine")
    argv = {"verify": ["verify", "--fingerprints", files["fp"], "--model", files["model"]],
            "serve": ["serve", "--model", files["model"], "--input-shape", "1,8,8", "--port", "0"],
            "extract": ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1", "-n", "2",
                        "--no-progress", "--out", str(files["dir"] / "limits.safetensors")]}[command]
    refused(argv + extra, capsys, option, tmp_path, monkeypatch)
    assert not (files["dir"] / "limits.safetensors").exists()


def test_isolation_refuses_limits_it_cannot_keep():
    from ipguard_fast.io import Isolation

    for kwargs, name in ((dict(timeout=1e10), "timeout"), (dict(memory_limit=2**63), "memory_limit"),
                         (dict(cpu_time=2**63), "cpu_time")):
        with pytest.raises(ValueError, match=f"^{name}: must be at most"):
            Isolation(**kwargs)


HUGE = "99999999999999999999999"


@pytest.mark.parametrize("extra, option", [(["-n", HUGE], "-n: "), (["--max-steps", HUGE], "--max-steps: "),
                                           (["--max-candidates", HUGE], "--max-candidates: "),
                                           (["--input-shape", "1,8," + HUGE], "--input-shape: "),
                                           (["--input-shape", "100000x100000x100000"], "--input-shape: ")])
@pytest.mark.parametrize("isolate", [True, False])
def test_extract_refuses_sizes_beyond_64_bits(extra, option, isolate, files, capsys, tmp_path, monkeypatch):
    # were an OverflowError in the search (exit 1, blamed on the suspect model) or a C++ trace
    argv = ["extract", "--model", files["model"], "--input-shape", "1,8,8", "--k", "1", "--no-progress",
            "--out", str(files["dir"] / "sizes.safetensors"), *extra] + ([] if isolate else ["--no-isolate"])
    err = refused(argv, capsys, option, tmp_path, monkeypatch)
    assert len(err) < 400 and "frame #" not in err, err
    assert not (files["dir"] / "sizes.safetensors").exists()


@pytest.mark.parametrize("command", ["export", "serve"])
def test_export_and_serve_refuse_an_input_shape_beyond_64_bits(command, files, capsys, tmp_path, monkeypatch):
    argv = {"export": ["export", "--model", files["model"], "--out", str(tmp_path / "m.onnx")],
            "serve": ["serve", "--model", files["model"], "--port", "0"]}[command]
    err = refused(argv + ["--input-shape", "1,8," + HUGE], capsys, "--input-shape: ", tmp_path, monkeypatch)
    assert len(err) < 400 and "frame #" not in err, err


def test_extract_config_refuses_counts_beyond_64_bits():
    from ipguard_fast.search import ExtractConfig

    for name in ("n", "max_steps", "max_candidates"):
        with pytest.raises(ValueError, match=f"^{name}: must be at most 2\\*\\*62"):
            ExtractConfig(k=1.0, input_shape=(1, 8, 8), **{"n": 1, name: 2**63})
    assert ExtractConfig(n=2**62, k=1.0, input_shape=(1, 8, 8)).max_candidates == 2**62


@pytest.mark.parametrize("extra, option", [
    (["--progress", "p.json"], "--progress: "), (["--token", "secret"], "--token: "),
    (["--token-env", "HOME"], "--token-env: "), (["--retries", "-3"], "--retries: "), (["--deadline", "nan"], "--deadline: "),
    (["--device", "tpu", "--no-isolate"], "--device: "), (["--device", "cuda:99", "--no-isolate"], "--device: "),
    (["--threshold", "2"], "--threshold: "), (["--batch-size", "0"], "--batch-size: "),
    (["--threshold", "nan", "--no-isolate"], "--threshold: "),
])
def test_verify_names_the_option_and_refuses_endpoint_options_with_a_model(extra, option, files, capsys, tmp_path,
                                                                          monkeypatch):
    # the endpoint's options were ignored with --model (a --progress never written); a bad --device with
    # --no-isolate was reported as the model file's fault; --threshold and --batch-size by their API names
    refused(["verify", "--fingerprints", files["fp"], "--model", files["model"], *extra], capsys, option, tmp_path,
            monkeypatch)


def test_load_suspect_blames_a_missing_device_not_the_model_file(files):
    from ipguard_fast.io import load_suspect

    with pytest.raises(ValueError, match="^device: "):
        load_suspect(files["model"], device="cuda:99")


@pytest.mark.parametrize("command, extra, option", [
    ("protect", ["--data", "nope"], "--data: "), ("protect", ["--data", "mnist:/nonexistent"], "--data: "),
    ("protect", ["--negative-epochs", "0"], "--negative-epochs: "),
    ("evaluate", ["--data", "nope"], "--data: "), ("evaluate", ["--test-data", "nope"], "--test-data: "),
    ("evaluate", ["--attacker-data", "nope"], "--attacker-data: "), ("evaluate", ["--negative-arch", "nope"],
                                                                     "--negative-arch: "),
])
def test_protect_and_evaluate_name_the_data_options(command, extra, option, capsys, tmp_path, monkeypatch):
    # were "data: ..." for any of --data, --test-data and --attacker-data, "epochs: ...", "name: ..."
    argv = {"protect": ["protect", "--model", FACTORY, "--data", "digits", "--no-cache", "--out", "f.safetensors"],
            "evaluate": ["evaluate", "--model", FACTORY, "--out", "e"]}[command]
    refused(argv + extra, capsys, option, tmp_path, monkeypatch)


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("kind", ["folder", "device", "pipe"])
def test_a_model_that_is_no_regular_file_is_not_called_missing(kind, isolate, files, capsys, tmp_path, monkeypatch):
    """A folder, /dev/zero or a FIFO as --model: exit 2 saying what it is, never "not found"
    (nor a hang reading the pipe or the endless device)."""
    path = {"folder": str(files["dir"]) + os.sep, "device": "/dev/zero", "pipe": str(tmp_path.parent / "pipe")}[kind]
    if kind == "pipe" and not os.path.exists(path):
        os.mkfifo(path)
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "--model", path, "--fingerprints", files["fp"]] + ([] if isolate else ["--no-isolate"])) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a regular file" in err and "not found" not in err and "\n" not in err, err


@pytest.mark.parametrize("command", [["protect", "--model", FACTORY, "--data", "digits"], ["demo"], ["bench", "--quick"]])
@pytest.mark.parametrize("threads", ["0", "99999999999999999999", "5000"])
def test_threads_beyond_what_torch_can_set_are_bad_input(command, threads, capsys, tmp_path, monkeypatch):
    """--threads is a thread count torch.set_num_threads can take (a C int; 99999999999999999999
    overflowed with a message naming nothing)."""
    monkeypatch.chdir(tmp_path)
    assert main(command + ["--out", str(tmp_path / "o"), "--threads", threads]) == 2
    err = capsys.readouterr().err.strip()
    assert "--threads: " in err and "\n" not in err, err
    assert list(tmp_path.iterdir()) == []

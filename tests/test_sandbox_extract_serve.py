"""Extraction and serving of a model file in the confined worker: the same fingerprints and
labels as in-process, a checkpoint the parent writes and the worker resumes from, and a model
that loops, allocates without bound or fails ending in one line and exit 1 (never a hang)."""
import socket
import threading
import time

import pytest
import torch
from remote_helpers import make_model, no_proxies  # noqa: F401 - a fixture
from test_sandbox import Hog, Loops, script
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.io import load_model, run_isolated_extraction, save_torchscript
from ipguard_fast.io.sandbox import wire
from ipguard_fast.io.sandbox.extraction import _fingerprints, _payload_size
from ipguard_fast.remote import RemoteLabelModel
from ipguard_fast.search import ExtractConfig, run_extraction

SHAPE = (1, 8, 8)
CONFIG = ExtractConfig(n=12, k=1.0, input_shape=SHAPE, max_steps=300, batch_size=8)


class Picky(nn.Module):
    """Labels for 1x8x8 images; any other shape fails (as a model does on a wrong request)."""

    def __init__(self):
        super().__init__()
        self.inner = make_model()

    def forward(self, x):
        return self.inner(x.reshape(x.shape[0], 64))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("extract_serve")
    return {"folder": folder, "honest": str(save_torchscript(make_model(), torch.rand(2, *SHAPE), folder / "m.pt")),
            "picky": str(save_torchscript(Picky().eval(), torch.rand(2, *SHAPE), folder / "picky.pt")),
            "loops": script(Loops(), folder, "loops.pt"), "hog": script(Hog(), folder, "hog.pt")}


def same(a, b):
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in
               ("images", "labels", "source_labels", "margins", "steps")) and len(a) == CONFIG.n


# ---------------------------------------------------------------------- extraction


def test_isolated_extraction_finds_the_in_process_fingerprints(files, one_thread):
    here = run_extraction(load_model(files["honest"]), CONFIG, progress=False).fingerprints
    there = run_isolated_extraction(files["honest"], CONFIG, progress=False)
    assert same(here, there)
    assert {k: v for k, v in here.meta.items() if k != "created"} == \
           {k: v for k, v in there.meta.items() if k != "created"}


def test_the_parent_writes_the_checkpoint_and_the_worker_resumes_from_it(files, tmp_path, one_thread):
    checkpoint = tmp_path / "run.checkpoint"
    config = ExtractConfig(**{**CONFIG.__dict__, "checkpoint_every": 0.0})
    first = run_isolated_extraction(files["honest"], config, checkpoint=checkpoint, progress=False)
    assert checkpoint.is_file()
    resumed = run_isolated_extraction(files["honest"], config, checkpoint=checkpoint, progress=False)
    assert same(first, resumed)


@pytest.mark.parametrize("model, options, message", [
    ("loops", ["--timeout", "2"], "did not answer within 2 s while extracting fingerprints"),
    ("hog", ["--memory-limit", "0.25"], "ran out of memory while extracting fingerprints"),
])
def test_extract_of_a_hostile_model_is_one_line_and_exit_1(files, model, options, message, capsys):
    out = files["folder"] / f"{model}.safetensors"
    start = time.monotonic()
    assert main(["extract", "--model", files[model], "--input-shape", "1,8,8", "--k", "1", "--no-progress",
                 "--out", str(out), *options]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err and f"{model}.pt" in err, err
    assert time.monotonic() - start < 30 and not out.exists()


def test_extract_cli_isolated_and_not(files, capsys):
    outs = [files["folder"] / name for name in ("iso.safetensors", "here.safetensors")]
    base = ["extract", "--model", files["honest"], "--input-shape", "1,8,8", "-n", "4", "--k", "1", "--no-progress"]
    assert main(base + ["--out", str(outs[0])]) == 0
    assert main(base + ["--out", str(outs[1]), "--no-isolate"]) == 0
    for bad, option in ((["--timeout", "0"], "--timeout"), (["--no-isolate", "--memory-limit", "1"], "--memory-limit")):
        capsys.readouterr()
        assert main(base + ["--out", str(outs[0])] + bad) == 2
        assert capsys.readouterr().err.startswith(f"ipguard extract: error: {option}:")
    capsys.readouterr()   # a shape the model cannot take: bad input, named, from the worker too
    assert main(["extract", "--model", files["honest"], "--input-shape", "3,8,8", "--k", "1", "--no-progress",
                 "--out", str(outs[0])]) == 2
    assert capsys.readouterr().err.startswith("ipguard extract: error: --input-shape: the model fails")


def test_what_a_worker_sends_while_extracting_is_checked():
    image = 64 * 4
    assert _payload_size({"progress": 3}, CONFIG, None) == 0
    for header, checkpoint in (({"progress": "3"}, None), ({"progress": -1}, None),
                               ({"checkpoint": True, "dtype": "uint8", "shape": [10]}, None),
                               ({"checkpoint": True, "dtype": "float32", "shape": [10]}, "c"),
                               ({"checkpoint": True, "dtype": "uint8", "shape": [1 << 30]}, "c"),
                               ({"tensors": []}, None)):
        with pytest.raises(wire.ChannelError):
            _payload_size(header, CONFIG, checkpoint)
    good = run_extraction(make_model(), CONFIG, progress=False).fingerprints
    fields = {name: getattr(good, name) for name in ("images", "labels", "source_labels", "margins", "steps")}
    header, payload = wire.tensors_message(fields)
    assert _payload_size(header, CONFIG, None) == len(payload) <= CONFIG.n * (image + 64)
    assert same(_fingerprints({**header, "meta": good.meta}, bytearray(payload), CONFIG), good)
    for meta in ({**good.meta, "requested": 1}, {**good.meta, "k": 9.0}, {**good.meta, "num_classes": "x"}, None,
                 {**good.meta, "requested": [CONFIG.n]}, {**good.meta, "requested": "twelve"}):
        with pytest.raises(wire.ChannelError):
            _fingerprints({**header, "meta": meta}, bytearray(payload), CONFIG)
    fields["labels"] = fields["labels"] + 100   # outside the owner's classes
    header, payload = wire.tensors_message(fields)
    with pytest.raises(wire.ChannelError):
        _fingerprints({**header, "meta": good.meta}, bytearray(payload), CONFIG)


# ---------------------------------------------------------------------- serving


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serving(argv):
    """`ipguard serve ARGV` in a thread; -> (its URL, a function returning the exit code once it ended)."""
    port, result = free_port(), {}
    thread = threading.Thread(target=lambda: result.update(code=main(argv + ["--port", str(port)])), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            RemoteLabelModel(url, timeout=1, retries=0).health()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
    return url, lambda timeout: (thread.join(timeout), result.get("code"))[1]


def test_serve_answers_from_the_worker_and_survives_a_bad_request(files, no_proxies, capsys):  # noqa: F811
    images = torch.rand(5, *SHAPE)
    url, ended = serving(["serve", "--model", files["picky"]])
    client = RemoteLabelModel(url, timeout=10, retries=0)
    assert torch.equal(client(images), make_model()(images).argmax(1))
    with pytest.raises(Exception):   # noqa: B017 - the model cannot take it: this request's error only
        client(torch.rand(2, 3, 4, 4))
    assert torch.equal(client(images), make_model()(images).argmax(1))
    client.close()
    assert ended(0.1) is None   # still serving


def test_serve_ends_with_one_line_when_the_model_fails_mid_request(files, no_proxies, capsys):  # noqa: F811
    url, ended = serving(["serve", "--model", files["loops"], "--timeout", "2"])
    client = RemoteLabelModel(url, timeout=10, retries=0)
    with pytest.raises(Exception):   # noqa: B017 - the server's error answer
        client(torch.rand(2, *SHAPE))
    client.close()
    assert ended(15) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ipguard serve: failed: SuspectResourceError: suspect ") and "did not answer within 2 s" in err


@pytest.mark.parametrize("model, options, message", [
    ("loops", ["--timeout", "2"], "did not answer within 2 s"),
    ("hog", ["--memory-limit", "0.25"], "ran out of memory"),
])
def test_serve_of_a_hostile_model_is_one_line_and_exit_1(files, model, options, message, capsys):
    assert main(["serve", "--model", files[model], "--input-shape", "1,8,8", "--port", "0", *options]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err


def test_relative_model_paths_are_the_callers_not_the_workers(tmp_path, monkeypatch, capsys):
    """The worker runs in a temporary folder of its own; `--model m.pt` still means ./m.pt."""
    torch.manual_seed(0)
    save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.rand(2, 1, 8, 8), tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    # 8 points: 4 can show no copy (shuffled, a copy's own answers match all 4 once in 24 at best)
    assert main(["extract", "--model", "m.pt", "--input-shape", "1,8,8", "-n", "8", "--k", "1", "--no-progress",
                 "--out", "fp.safetensors"]) == 0
    assert main(["verify", "--fingerprints", "fp.safetensors", "--model", "m.pt", "--threshold", "0.5"]) == 0
    assert "PIRATED" in capsys.readouterr().out


def test_a_device_this_machine_lacks_is_the_options_fault_not_the_files(tmp_path, capsys):
    model = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.rand(2, 1, 8, 8),
                             tmp_path / "m.pt")
    missing = f"cuda:{torch.cuda.device_count() + 3}"
    assert main(["extract", "--model", str(model), "--input-shape", "1,8,8", "-n", "2", "--k", "1",
                 "--out", str(tmp_path / "fp.safetensors")]) == 0
    capsys.readouterr()
    assert main(["verify", "--fingerprints", str(tmp_path / "fp.safetensors"), "--model", str(model),
                 "--device", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipguard verify: error: --device:") and "\n" not in err, err


def test_an_extraction_that_finds_nothing_comes_back_from_the_worker(tmp_path, capsys):
    """Zero accepted fingerprints are empty tensors, which the channel carries too."""
    model = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.rand(2, 1, 8, 8),
                             tmp_path / "m.pt")
    out = tmp_path / "none.safetensors"
    assert main(["extract", "--model", str(model), "--input-shape", "1,8,8", "-n", "4", "--k", "1000",
                 "--max-steps", "2", "--no-progress", "--out", str(out)]) == 1   # incomplete: exit 1, as in-process
    assert "wrote 0 fingerprints" in capsys.readouterr().out and out.exists()

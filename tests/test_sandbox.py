"""Hostile suspects run apart: a suspect's model file is loaded and run by a confined worker
process; a model that loops, allocates without bound, crashes, writes files or answers
garbage ends in one clear exception (exit 1 at the CLI), and the verifier lives on."""
import ctypes
import itertools
import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

import ipguard_fast as ig
from ipguard_fast.cli import main
from ipguard_fast.io import (IsolatedSuspect, Isolation, ModelLoadError, SuspectFailed, SuspectResourceError,
                             save_exported, save_torchscript)
from ipguard_fast.io.sandbox import landlock, wire
from ipguard_fast.io.sandbox.suspect import _answer_size
from ipguard_fast.io.sandbox.worker import describe_failure
from ipguard_fast.verdicts import as_output_fn

SHAPE = (1, 8, 8)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


class Loops(nn.Module):
    def forward(self, x):
        i = 0
        while i >= 0:
            i = (i + 1) % 7
        return x.flatten(1)[:, :10]


class Hog(nn.Module):
    """Asks for gigabytes, a copy of its input repeated 65536 times per step, with allowlisted
    operators only (a constant-size torch.zeros would be folded away by TorchScript): only the
    worker's memory limit stops it (the tests run it isolated, under 0.25 GiB)."""

    def forward(self, x):
        chunks: list[torch.Tensor] = []
        for _ in range(64):
            chunks.append(x.flatten().repeat(1 << 16))
        return x.flatten(1)[:, :10] + float(len(chunks)) * 0


class Writer(nn.Module):
    """Changes one file in place and creates another through a writable shared mapping."""

    def __init__(self, existing: str, new: str):
        super().__init__()
        self.existing, self.new = existing, new

    def forward(self, x):
        old = torch.from_file(self.existing, shared=True, size=16, dtype=torch.uint8)
        old.fill_(65)
        created = torch.from_file(self.new, shared=True, size=16, dtype=torch.uint8)
        created.fill_(66)
        return x.flatten(1)[:, :10] + (old.sum() + created.sum()).float() * 0


def script(module, folder, name):
    torch.jit.save(torch.jit.script(module), str(folder / name))
    return str(folder / name)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox")
    model = tiny_model()
    return {"model": model, "folder": folder,
            "honest": str(save_torchscript(model, torch.rand(2, *SHAPE), folder / "honest.pt")),
            "loops": script(Loops(), folder, "loops.pt"), "hog": script(Hog(), folder, "hog.pt"),
            "fps": half_matching_fingerprints(model, 40)}


def gone(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


# ---------------------------------------------------------------------- honest models


def test_an_isolated_suspect_answers_bit_for_bit_as_in_process(files):
    images = files["fps"].images
    expected_labels, expected_logits = as_output_fn(files["model"])(images)
    with IsolatedSuspect(files["honest"]) as suspect:
        labels, logits = as_output_fn(suspect)(images)
    assert torch.equal(labels, expected_labels) and torch.equal(logits, expected_logits)
    path, fps = files["honest"], files["fps"]
    assert ig.verify(path, fps, batch_size=7) == ig.verify(path, fps, batch_size=7, isolate=False)
    assert ig.matching_rate(path, fps) == ig.matching_rate(files["model"], fps) == 0.5
    assert ig.calibrate_threshold([path, path], fps) == ig.calibrate_threshold([path, path], fps, isolate=False)


def test_a_pt2_file_and_a_fresh_interpreter(files, tmp_path):
    pt2 = save_exported(files["model"], torch.rand(2, *SHAPE), tmp_path / "m.pt2")
    fps = files["fps"]
    assert ig.verify(pt2, fps) == ig.verify(pt2, fps, isolate=False)
    assert ig.verify(files["honest"], fps, isolate=Isolation(start="exec")) == ig.verify(files["model"], fps)


def test_an_onnx_file(files, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = ig.io.export_onnx(files["model"], SHAPE, tmp_path / "m.onnx")
    assert ig.verify(path, files["fps"]) == ig.verify(path, files["fps"], isolate=False)


def test_a_module_the_caller_holds_runs_in_the_callers_process(files, monkeypatch):
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked for an object"))
    monkeypatch.setattr(os, "posix_spawn", lambda *a, **k: pytest.fail("spawned for an object"))
    assert ig.verify(files["model"], files["fps"]).matching_rate == 0.5


def test_two_threads_share_one_worker_and_ctrl_c_is_the_verifiers(files):
    images = files["fps"].images
    expected = files["model"](images).detach()
    with IsolatedSuspect(files["honest"]) as suspect:
        os.kill(suspect._process.pid, signal.SIGINT)   # as a Ctrl-C reaches the whole process group
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: suspect(images), range(8)))
    assert all(torch.equal(answer, expected) for answer in answers)
    with pytest.raises(SuspectFailed, match="not running"):
        suspect(images)


def test_bad_input_keeps_its_in_process_class_and_message(files, tmp_path):
    torch.manual_seed(1)
    wide = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval(),
                            torch.rand(2, 3, 32, 32), tmp_path / "wide.pt")
    with pytest.raises(ValueError, match=r"^suspect: fails on images of shape \[40, 1, 8, 8\]"):
        ig.verify(wide, files["fps"], batch_size=40)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a TorchScript archive"):
        ig.verify(junk, files["fps"])
    with pytest.raises(FileNotFoundError):
        ig.verify(tmp_path / "missing.pt", files["fps"])
    with pytest.raises(ValueError, match="^isolate:"):
        ig.verify(files["honest"], files["fps"], isolate="yes")
    with pytest.raises(ValueError, match="^timeout:"):
        Isolation(timeout=float("nan"))
    with pytest.raises(ValueError, match="^isolation:"):
        IsolatedSuspect(files["honest"], isolation={"timeout": 5})


class ExtraClasses(nn.Module):
    """The owner's logits and five classes more, in float64 too large for float32: the worker
    answers with labels (float32 logits would change them), and the class count went unchecked."""

    def __init__(self, owner: nn.Module):
        super().__init__()
        self.owner = owner

    def forward(self, x):
        logits = self.owner(x)
        return torch.cat([logits, logits[:, :5] * 0.0 - 1000.0], 1).double() * 1e300


def test_a_class_count_unlike_the_fingerprints_is_refused_when_labels_stand_for_logits(files, tmp_path, capsys):
    path = script(ExtraClasses(torch.jit.load(files["honest"])), tmp_path, "extra.pt")
    for isolate in (True, False):
        with pytest.raises(ValueError, match="^suspect: returns 15 classes, the fingerprints have 10"):
            ig.verify(path, files["fps"], threshold=0.5, isolate=isolate)
    fps_path = files["fps"].save(tmp_path / "fp.safetensors")
    assert main(["verify", "--fingerprints", str(fps_path), "--model", path, "--threshold", "0.5"]) == 2
    assert "returns 15 classes" in capsys.readouterr().err
    assert ig.verify(files["honest"], files["fps"], threshold=0.5).matching_rate == 0.5   # a right count passes


# ---------------------------------------------------------------------- hostile models


def test_a_model_that_loops_is_stopped_at_the_deadline(files):
    start = time.monotonic()
    with pytest.raises(SuspectResourceError, match=r"^suspect .*loops\.pt: did not answer within 2 s on a batch"):
        ig.verify(files["loops"], files["fps"], isolate=Isolation(timeout=2, cpu_time=60))
    assert time.monotonic() - start < 6
    assert ig.verify(files["honest"], files["fps"]).matching_rate == 0.5   # the verifier goes on


def test_a_model_that_loops_runs_out_of_cpu_time(files):
    with pytest.raises(SuspectResourceError, match=r"used up its 1 s of CPU time"):
        ig.verify(files["loops"], files["fps"], isolate=Isolation(timeout=30, cpu_time=1))


def test_a_model_that_allocates_without_bound_runs_out_of_memory(files):
    with pytest.raises(SuspectResourceError, match=r"hog\.pt: ran out of memory on a batch .*limit: 0\.25 GiB"):
        ig.verify(files["hog"], files["fps"], isolate=Isolation(memory_limit=256 << 20))


def test_a_memory_error_under_the_in_process_wrapping_is_a_resource_failure():
    try:
        try:
            raise MemoryError()
        except MemoryError as inner:
            raise ValueError("suspect: fails on images of shape [4]: MemoryError") from inner
    except ValueError as exc:
        assert describe_failure(exc)["kind"] == "memory"
    assert describe_failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))["kind"] == "memory"
    assert describe_failure(ValueError("suspect: bad"))["kind"] == "input"


@pytest.mark.skipif(landlock.abi_version() < 3, reason="needs Landlock (Linux 6.2+) to refuse in-place writes")
def test_a_model_cannot_change_or_create_files(tmp_path):
    existing, new = tmp_path / "victim.bin", tmp_path / "created.bin"
    existing.write_bytes(b"ABCDEFGHIJKLMNOP")
    path = script(Writer(str(existing), str(new)), tmp_path, "writer.pt")
    images = torch.rand(2, *SHAPE)
    # refused at load (the operator check) or when it runs
    with pytest.raises((SuspectFailed, ValueError)), IsolatedSuspect(path) as suspect:
        suspect(images)
    assert existing.read_bytes() == b"ABCDEFGHIJKLMNOP" and not new.exists()


# ---------------------------------------------------------------------- hostile workers (stand-ins)


def exits(sock, job):
    os._exit(7)


def segfaults(sock, job):
    ctypes.string_at(0)


def probes_writes(outside):
    """A stand-in worker that reports which writes it could make, once confined."""
    def entry(sock, job):
        outcomes = []
        for target in ("here.txt", outside):
            try:
                with open(target, "w") as handle:
                    handle.write("x")
                outcomes.append("written")
            except OSError as exc:
                outcomes.append(type(exc).__name__)
        wire.send(sock, {"ok": False, "kind": "input", "class": "ValueError", "message": ",".join(outcomes)})
        return 0
    return entry


@pytest.mark.parametrize("entry, message", [
    (exits, r"its worker exited \(code 7\) while loading it without answering"),
    (segfaults, r"its worker crashed \(SIGSEGV\) while loading it"),
])
def test_a_worker_that_dies_is_one_line(files, entry, message):
    suspect = IsolatedSuspect(files["honest"], entry=entry)
    with pytest.raises(SuspectFailed, match=rf"^suspect .*honest\.pt: {message}$"):
        suspect.start()
    assert suspect._process is None


def test_the_worker_writes_no_file(files):
    outside = str(files["folder"] / "outside.txt")
    with pytest.raises(ValueError) as caught:
        IsolatedSuspect(files["honest"], entry=probes_writes(outside)).start()
    here, there = str(caught.value).split(",")
    assert here == "OSError" and there in ("PermissionError", "OSError")   # too big (RLIMIT_FSIZE 0); refused
    if landlock.abi_version():
        assert there == "PermissionError" and not os.path.exists(outside)


def ready_then(reply):
    def entry(sock, job):
        wire.send(sock, {"ok": True, "ready": True})
        wire.receive(sock, None, lambda h: wire.tensor_size(h, limit=wire.REQUEST_LIMIT))
        sock.sendall(reply)
        time.sleep(30)   # holds the channel open: the verifier must stop it
        return 0
    return entry


def framed(header: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(header)) + header + payload


@pytest.mark.parametrize("reply, problem", [
    (b"\xff\xff\xff\xff" + b"x" * 100, "a header of 4294967295 bytes"),
    (framed(b"{not json"), "a header that is not JSON"),
    (framed(b"[1, 2]"), "a header that is not a JSON object"),
    (framed(b'{"ok": true, "dtype": "float32", "shape": [40, 100000000]}'), "an answer of 16000000000 bytes"),
    (framed(b'{"ok": true, "dtype": "float32", "shape": [39, 10]}'), "an answer of shape"),
    (framed(b'{"ok": true, "dtype": "object", "shape": [40]}'), "an unknown dtype"),
    (framed(b'{"ok": false, "kind": "owned", "message": "x"}'), "an error of unknown kind"),
    (framed(b'{"ok": "yes"}'), "neither a result nor an error"),
])
def test_a_worker_that_answers_garbage_is_refused_and_stopped(files, reply, problem):
    suspect = IsolatedSuspect(files["honest"], entry=ready_then(reply)).start()
    pid = suspect._process.pid
    start = time.monotonic()
    with pytest.raises(SuspectFailed, match=f"answered malformed data on a batch of 40 images.*{problem}"):
        suspect(files["fps"].images)
    assert time.monotonic() - start < 10 and gone(pid)


def test_every_header_a_worker_can_send_is_read_or_refused_cleanly(files):
    """Every combination of JSON values in the answer's fields: a size, or ChannelError; an error
    answer becomes an exception of the contract's classes, never a TypeError or KeyError."""
    values = [None, True, False, 0, -1, 40, 1.5, 2 ** 70, "", "float32", "input", "ValueError", [], [40], [40, 10],
              [40, -1], ["40"], {}, {"a": 1}]
    suspect = IsolatedSuspect(files["honest"])
    for ok, dtype, shape, kind, name, message in itertools.product([True, False, None, 1], values, values,
                                                                   ["memory", "input", "failed", 3, None],
                                                                   values[::3], [None, 7, "x", ["x"]]):
        header = {"ok": ok, "dtype": dtype, "shape": shape, "kind": kind, "class": name, "message": message}
        try:
            size = _answer_size(header, 40)
            assert isinstance(size, int) and 0 <= size <= wire.REPLY_LIMIT
        except wire.ChannelError:
            continue
        if ok is True:
            assert len(wire.decode_tensor(header, bytearray(size))) == 40
        else:
            assert isinstance(suspect._refusal(header, "on a batch"), (SuspectFailed, ValueError, ImportError,
                                                                       FileNotFoundError))


def test_a_worker_that_goes_quiet_mid_answer_is_stopped(files):
    half = framed(b'{"ok": true, "dtype": "int64", "shape": [40]}', b"\0" * 100)
    suspect = IsolatedSuspect(files["honest"], isolation=Isolation(timeout=1), entry=ready_then(half)).start()
    with pytest.raises(SuspectResourceError, match="did not answer within 1 s"):
        suspect(files["fps"].images)


def test_the_workers_own_words_come_back_as_one_short_line(files):
    noisy = framed(('{"ok": false, "kind": "failed", "message": "line one\\nline two\\u001b[31m' + "x" * 5000
                    + '"}').encode())
    suspect = IsolatedSuspect(files["honest"], entry=ready_then(noisy)).start()
    with pytest.raises(SuspectFailed) as caught:
        suspect(files["fps"].images)
    text = str(caught.value)
    assert "\n" not in text and "\x1b" not in text and len(text) < 1200 and "line one line two" in text


def test_a_dropped_suspect_leaves_no_worker(files):
    suspect = IsolatedSuspect(files["honest"]).start()
    pid = suspect._process.pid
    del suspect
    assert gone(pid)


def test_the_channel_refuses_a_socket_that_closes():
    a, b = socket.socketpair()
    b.close()
    with pytest.raises(wire.ChannelClosed):
        wire.receive(a, time.monotonic() + 1, lambda h: 0)


# ---------------------------------------------------------------------- the command line


def test_cli_exit_codes(files, tmp_path, capsys):
    fp = str(files["fps"].save(tmp_path / "fp.safetensors"))
    base = ["verify", "--fingerprints", fp]
    assert main(base + ["--model", files["loops"], "--timeout", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "loops.pt" in err and "did not answer within 2 s" in err
    assert main(base + ["--model", files["hog"], "--memory-limit", "0.25"]) == 1
    assert "ran out of memory" in capsys.readouterr().err
    assert main(base + ["--model", files["honest"], "--json"]) == 0
    assert main(base + ["--model", files["honest"], "--no-isolate", "--json"]) == 0
    for bad, option in ((["--timeout", "nan"], "--timeout"), (["--memory-limit", "-1"], "--memory-limit"),
                        (["--no-isolate", "--timeout", "5"], "--timeout")):
        capsys.readouterr()
        assert main(base + ["--model", files["honest"]] + bad) == 2, bad
        assert capsys.readouterr().err.startswith(f"ipguard verify: error: {option}:")
    assert main(base + ["--endpoint", "http://127.0.0.1:9", "--memory-limit", "1"]) == 2
    capsys.readouterr()
    assert main(base + ["--model", files["honest"], "--device", "tpu:9"]) == 2
    assert capsys.readouterr().err.startswith("ipguard verify: error: --device:")

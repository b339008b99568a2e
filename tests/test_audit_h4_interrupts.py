"""Interrupted long jobs lose nothing they finished: Ctrl-C during an isolated extraction saves
the worker's checkpoint, and SIGTERM stops a command as Ctrl-C does (one line, exit 143, what
Ctrl-C saves saved)."""
import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from remote_helpers import make_model
from safetensors import safe_open

import ipguard_fast.io.sandbox.extraction as isolated_extraction
from ipguard_fast.cli import main
from ipguard_fast.io import run_isolated_extraction, save_torchscript
from ipguard_fast.search import ExtractConfig

SHAPE = (1, 8, 8)
CONFIG = ExtractConfig(n=60, k=1.0, input_shape=SHAPE, max_steps=300, batch_size=8)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupts")
    return str(save_torchscript(make_model(), torch.rand(2, *SHAPE), folder / "m.pt"))


class CtrlCAt:
    """A progress bar that raises KeyboardInterrupt (Ctrl-C) once `count` fingerprints are shown."""

    def __init__(self, count):
        self.count, self.shown = count, 0

    def update(self, n=1):
        self.shown += n
        if self.shown >= self.count:
            raise KeyboardInterrupt


def accepted_in(checkpoint) -> int:
    with safe_open(str(checkpoint), framework="pt") as f:
        return sum(ok for _, ok in json.loads(f.metadata()["finished"]))


def test_ctrl_c_during_an_isolated_extraction_saves_what_finished(model_file, tmp_path, monkeypatch, one_thread):
    whole = run_isolated_extraction(model_file, CONFIG, progress=False)
    checkpoint = tmp_path / "run.checkpoint"
    monkeypatch.setattr(isolated_extraction, "progress_bar",
                        lambda *args, **kwargs: contextlib.nullcontext(CtrlCAt(5)))
    with pytest.raises(KeyboardInterrupt):
        run_isolated_extraction(model_file, CONFIG, checkpoint=checkpoint)
    # checkpoint_every is 30 s: only the save on Ctrl-C can have written it, with what finished.
    assert checkpoint.is_file() and accepted_in(checkpoint) >= 5
    assert not [name for name in os.listdir(tmp_path) if name != "run.checkpoint"]   # no temp file left
    monkeypatch.undo()
    resumed = run_isolated_extraction(model_file, CONFIG, checkpoint=checkpoint, progress=False)
    for name in ("labels", "source_labels", "steps"):
        assert torch.equal(getattr(resumed, name), getattr(whole, name)), name
    # As tests/test_search.py's resume: a batch of other candidates may round a point's last bit otherwise.
    torch.testing.assert_close(resumed.images, whole.images, rtol=0, atol=1e-4)
    torch.testing.assert_close(resumed.margins, whole.margins, rtol=0, atol=1e-4)


SELF_TERMINATE = """
import os, signal, sys
from ipguard_fast.cli import main
from ipguard_fast.search.engine import SearchEngine

harvest = SearchEngine._harvest
def _harvest(self):
    harvest(self)
    if self.stats.harvests == 3:
        os.kill(os.getpid(), signal.SIGTERM)   # as `kill PID`, a scheduler or `docker stop` does
SearchEngine._harvest = _harvest
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_stops_a_command_as_ctrl_c_does(model_file, tmp_path):
    out = tmp_path / "fp.safetensors"
    argv = ["extract", "--model", model_file, "--input-shape", "1,8,8", "--n", "60", "--k", "1",
            "--max-steps", "300", "--batch-size", "8", "--no-progress", "--no-isolate", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SELF_TERMINATE, *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert (done.returncode, done.stderr) == (143, "ipguard: terminated\n")
    checkpoint = tmp_path / "fp.safetensors.checkpoint"
    assert checkpoint.is_file() and not out.exists()   # what finished is kept, no partial output
    assert sorted(os.listdir(tmp_path)) == ["fp.safetensors.checkpoint"]


def test_the_sigterm_handler_is_the_commands_alone(capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert main(["extract", "--model", "missing.pt", "--input-shape", "1,8,8", "--k", "1", "--out", "x"]) == 2
    assert signal.getsignal(signal.SIGTERM) is before


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_finished_run_removes_the_temp_files_of_killed_checkpoint_writers(model_file, tmp_path, capsys):
    out = tmp_path / "fp.safetensors"
    # What a writer killed (kill -9) while saving the checkpoint leaves: atomic_save's temp file.
    orphan = tmp_path / f".fp.safetensors.{dead_pid()}-x1y2z3.tmp.checkpoint"
    orphan.write_bytes(b"half a checkpoint")
    other = tmp_path / f".fp.safetensors.{os.getpid()}-x1y2z3.tmp.checkpoint"   # a live writer's: kept
    other.write_bytes(b"")
    assert main(["extract", "--model", model_file, "--input-shape", "1,8,8", "--n", "4", "--k", "1",
                 "--no-progress", "--no-isolate", "--out", str(out)]) == 0
    assert sorted(os.listdir(tmp_path)) == sorted(["fp.safetensors", other.name])


def test_an_interrupted_report_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    import ipguard_fast.evaluation.plots as plots
    from ipguard_fast.evaluation.report import write_report

    def suspect(name, family, role, rate):
        return {"name": name, "family": family, "role": role, "accuracy": 0.9, "matching_rate": rate}

    def result(owner):
        return {"owner": {"name": owner, "accuracy": 0.9}, "settings": {"seed": 0, "threshold": 0.5},
                "runs": [{"k": 1.0, "n_fingerprints": 10, "extract_seconds": 1.0, "aruc": 0.6, "roc_auc": 1.0,
                          "suspects": [suspect("FTAL", "FTAL", "positive", 0.9),
                                       suspect("indep", "Independent", "negative", 0.1)]}]}

    paths = write_report(result("first run"), tmp_path)
    before = {name: path.read_bytes() for name, path in paths.items()}

    def ctrl_c(result):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "matching_rates_png", ctrl_c)   # the last thing made
    with pytest.raises(KeyboardInterrupt):
        write_report(result("second run"), tmp_path)
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    assert sorted(os.listdir(tmp_path)) == sorted(path.name for path in paths.values())


def term_then_serve(sock, job):
    """The worker, sent SIGTERM once confined (as `kill` to a process group or a service's cgroup does)."""
    from ipguard_fast.io.sandbox.worker import serve

    os.kill(os.getpid(), signal.SIGTERM)
    return serve(sock, job)


def test_the_worker_leaves_sigterm_to_the_verifier(model_file):
    # The verifier stops its worker itself (after asking an extraction for its checkpoint): a
    # worker killed by the SIGTERM its group got lost everything since the last checkpoint.
    from ipguard_fast.io import IsolatedSuspect, Isolation

    with IsolatedSuspect(model_file, isolation=Isolation(start="fork"), entry=term_then_serve) as suspect:
        assert suspect(torch.rand(2, *SHAPE)).shape == (2, 10)


@pytest.mark.parametrize("isolate", [False, True])
def test_a_damaged_checkpoint_is_refused_naming_the_option(model_file, tmp_path, capsys, isolate):
    out, checkpoint = tmp_path / "fp.safetensors", tmp_path / "run.checkpoint"
    argv = ["extract", "--model", model_file, "--input-shape", "1,8,8", "--n", "4", "--k", "1", "--no-progress",
            "--out", str(out), "--checkpoint", str(checkpoint)] + ([] if isolate else ["--no-isolate"])
    whole = b"".join([(8).to_bytes(8, "little"), b"{}" + b" " * 6])   # an empty safetensors file
    for cut in (b"", whole[:5], whole[:12], b"\x10" + whole[1:]):     # cut mid-write, or a header past the end
        checkpoint.write_bytes(cut)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ipguard extract: error: --checkpoint: {checkpoint} ") and err.count("\n") == 1, err
        assert checkpoint.read_bytes() == cut and not out.exists()


def test_a_relative_checkpoint_is_the_callers_in_the_worker_too(model_file, tmp_path, capsys, monkeypatch):
    """The worker runs in a folder of its own: a relative --checkpoint was looked for there,
    never found, the run started afresh and the caller's file (here a text file given by
    mistake) was replaced, then deleted. It is the caller's file, read and refused as above."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("my own notes")
    argv = ["extract", "--model", model_file, "--input-shape", "1,8,8", "--n", "4", "--k", "1", "--no-progress",
            "--out", "fp.safetensors", "--checkpoint", "notes.txt"]
    assert main(argv) == 2
    assert "--checkpoint: " in capsys.readouterr().err and not (tmp_path / "fp.safetensors").exists()
    assert (tmp_path / "notes.txt").read_text() == "my own notes"


def test_a_callers_sigterm_handler_is_left_alone(capsys):
    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert main(["extract", "--model", "missing.pt", "--input-shape", "1,8,8", "--k", "1", "--out", "x"]) == 2
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)

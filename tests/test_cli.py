"""`ipguard` command line: extract -> verify round trip, demo smoke, errors and exit codes."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.models import train_digits_model


@pytest.fixture(scope="module")
def owner_file(tmp_path_factory):
    model = train_digits_model("cnn", seed=0, epochs=3)
    path = tmp_path_factory.mktemp("models") / "owner.pt"
    save_torchscript(model, torch.rand(2, 1, 8, 8), path)
    return path


def test_extract_then_verify(owner_file, tmp_path, capsys):
    out = tmp_path / "fp.safetensors"
    code = main(["extract", "--model", str(owner_file), "--input-shape", "1,8,8", "--n", "10", "--k", "2",
                 "--seed", "3", "--max-steps", "300", "--no-progress", "--out", str(out)])
    assert code == 0
    fps = FingerprintSet.load(out)
    assert len(fps) == 10 and fps.meta["k"] == 2.0 and fps.meta["seed"] == 3
    assert not (tmp_path / "fp.safetensors.checkpoint").exists()  # the resume file goes on success
    capsys.readouterr()
    # A plain file carries no threshold: no verdict, the rate reported, until one is given.
    assert main(["verify", "--fingerprints", str(out), "--model", str(owner_file), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["matching_rate"] == 1.0 and verdict["total"] == 10
    assert verdict["pirated"] is False and verdict["conclusive"] is False and verdict["reason"] == "no_threshold"
    assert verdict["threshold"] is None
    assert main(["verify", "--fingerprints", str(out), "--model", str(owner_file)]) == 0
    printed = capsys.readouterr().out
    assert "no threshold: inconclusive" in printed and "ipguard calibrate" in printed and "PIRATED" not in printed
    assert main(["verify", "--fingerprints", str(out), "--model", str(owner_file), "--threshold", "0.5",
                 "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["pirated"] is True and verdict["conclusive"] is True and verdict["threshold"] == 0.5
    # A file whose own threshold can show no copy (protect's threshold_shown False): even the
    # owner, which matches every point, gets an inconclusive verdict, said in words.
    fps.meta.update(threshold=1.0, threshold_shown=False)
    fps.save(tmp_path / "weak.safetensors")
    assert main(["verify", "--fingerprints", str(tmp_path / "weak.safetensors"), "--model", str(owner_file)]) == 0
    printed = capsys.readouterr().out
    assert "(10/10)" in printed and "inconclusive" in printed and "PIRATED" not in printed


def test_factory_model_with_weights(tmp_path, capsys):
    from safetensors.torch import save_file
    model = train_digits_model("mlp", seed=1, epochs=2)
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), weights)
    out = tmp_path / "fp.safetensors"
    assert main(["extract", "--model", "ipguard_fast.models:DigitsMLP", "--weights", str(weights),
                 "--input-shape", "1,8,8", "--n", "4", "--k", "1", "--no-progress", "--out", str(out)]) == 0
    assert len(FingerprintSet.load(out)) == 4


@pytest.mark.parametrize("argv,needle", [
    (["extract", "--model", "missing.pt", "--input-shape", "1,8,8", "--k", "1", "--out", "x"], "missing.pt"),
    (["verify", "--fingerprints", "nope.safetensors", "--model", "m.pt"], "nope.safetensors"),
])
def test_errors_are_one_line_with_exit_code_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_input_shape_is_a_usage_error(owner_file, capsys):
    assert main(["extract", "--model", str(owner_file), "--input-shape", "1,x", "--k", "1", "--out", "o"]) == 2


def test_wrong_input_shape_for_the_model(owner_file, tmp_path, capsys):
    code = main(["extract", "--model", str(owner_file), "--input-shape", "3,32,32", "--k", "1",
                 "--no-progress", "--out", str(tmp_path / "o.safetensors")])
    assert code == 2 and "--input-shape: the model fails" in capsys.readouterr().err   # the option, not the API name


def test_tampered_file_is_refused(owner_file, tmp_path, capsys):
    out = tmp_path / "fp.safetensors"
    main(["extract", "--model", str(owner_file), "--input-shape", "1,8,8", "--n", "3", "--k", "1",
          "--no-progress", "--out", str(out)])
    data = bytearray(out.read_bytes())
    data[-5] ^= 0xFF
    out.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", "--fingerprints", str(out), "--model", str(owner_file)]) == 2
    err = capsys.readouterr().err.lower()
    assert "tamper" in err or "corrupt" in err


def test_demo_smoke(tmp_path):
    # The real entry point, in a subprocess, on tiny settings.
    # One thread: on a 2-core machine shared with other jobs, two threads contend (measured 10x slower).
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --epoch-cap 2: the negatives train at most 2 epochs (references 124 -> 30 s alone on the EPYC);
    # --families FTAL,prune: two families of copies, every independent (the demo 107 -> 80 s).
    proc = subprocess.run([sys.executable, "-m", "ipguard_fast", "demo", "--out", str(tmp_path), "--n", "20",
                           "--k", "1,5", "--replicas", "1", "--pool-factor", "3", "--threads", "1", "--epoch-cap", "2",
                           "--families", "FTAL,prune", "--students", "10"],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ARUC" in proc.stdout and "| FTAL | positive |" in proc.stdout
    assert "plain IPGuard ARUC" in proc.stdout and "selected ARUC" in proc.stdout
    for name in ("results.json", "results.md", "ru_curves.png", "matching_rates.png", "owner.pt",
                 "fingerprints_selected.safetensors"):
        assert (tmp_path / name).stat().st_size > 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert [r["k"] for r in result["runs"]] == [1.0, 5.0, None, None, None]
    assert [r["method"] for r in result["runs"]] == ["ipguard", "ipguard", "selected", "students", "mistakes"]
    assert "selected set and student part together" in proc.stdout and "combined_verdicts" in result
    assert FingerprintSet.load(tmp_path / "fingerprints_selected.students.safetensors").meta["part"] == "students"
    assert "mistakes baseline ARUC" in proc.stdout and "wrong verdicts" in proc.stdout
    assert "mistakes of the owner on 360 held-out inputs" in proc.stdout   # protect's pool took them too
    assert "negatives at most 2 epochs" in proc.stdout
    assert {r["family"] for r in result["runs"][0]["suspects"] if r["role"] == "positive"} == {"FTAL", "prune"}
    assert all(0.0 <= r["aruc"] <= 1.0 for r in result["runs"])
    selected = FingerprintSet.load(tmp_path / "fingerprints_selected.safetensors")
    assert selected.meta["selection"]["selected"] and len(selected) == 20
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "references").rglob("*"))


def test_bench_passes_its_flags_through(tmp_path, capsys):
    code = main(["bench", "--quick", "--models", "digits_cnn", "--methods", "engine", "eager_batched",
                 "--out", str(tmp_path), "--name", "smoke", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0 and (tmp_path / "smoke.json").exists()


def test_protect_writes_a_selected_file(tmp_path, monkeypatch, capsys):
    """`ipguard protect` end to end on 160 digits (the library's load_data swapped for a slice)."""
    from safetensors.torch import save_file
    from torch.utils.data import TensorDataset

    import ipguard_fast.data as data

    full = data.load_digits("train")
    monkeypatch.setattr(data, "load_data", lambda spec, split: TensorDataset(full.tensors[0][:160],
                                                                            full.tensors[1][:160]))
    weights = tmp_path / "owner.safetensors"
    save_file(train_digits_model("cnn", seed=0, epochs=2).state_dict(), weights)
    out = tmp_path / "fp.safetensors"
    argv = ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
            "-n", "6", "--pool-factor", "2", "--replicas", "1", "--no-progress", "--threads", "1", "--epoch-cap", "2",
            "--students", "6", "--out", str(out)]
    assert main(argv) == 0
    fps = FingerprintSet.load(out)
    part = FingerprintSet.load(tmp_path / "fp.students.safetensors")   # the student part, beside --out
    assert len(part) == 6 and part.meta["part"] == "students" and 0 < part.meta["threshold"] <= 1
    assert fps.meta["student_part"] == {"points": 6, "threshold": part.meta["threshold"]}
    assert len(fps) == 6 and fps.meta["selection"]["selected"] and 0 < fps.meta["threshold"] <= 1
    printed = capsys.readouterr().out
    assert "threshold" in printed and "refined from the top 18" in printed   # 3n candidates refined
    assert "6 student-part fingerprints" in printed
    assert fps.meta["selection"]["refined"]["candidates"] == 18
    assert any((tmp_path / "ipguard-references").rglob("*.safetensors"))
    assert main(argv[:-2] + ["--k", "big", "--out", str(out)]) == 2
    assert "--k:" in capsys.readouterr().err
    assert main(argv[:5] + ["--data", "digits", "-n", "0", "--out", str(out)]) == 2
    assert "-n: must be a positive int" in capsys.readouterr().err


def test_evaluate_rejects_an_unknown_bed(capsys):
    assert main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--bed", "nope", "--out", "x"]) == 2
    assert "--bed:" in capsys.readouterr().err


def test_a_warning_is_one_line_naming_the_command_and_debug_keeps_pythons(monkeypatch, capsys):
    """A library warning during a command (protect's inconclusive threshold, say) is printed as
    errors are, "ipguard COMMAND: warning: ..." on one line, not with Python's file:line and
    source listing; --debug keeps Python's form. The caller's showwarning is put back."""
    import warnings

    from ipguard_fast import cli

    def run(args):
        warnings.warn("the level is 1.000:\n  inconclusive", UserWarning)
        return 0

    monkeypatch.setattr(cli.verify, "run", run)
    before = warnings.showwarning
    for debug in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            assert main((["--debug"] if debug else []) + ["verify", "--model", "m", "--fingerprints", "f"]) == 0
        err = capsys.readouterr().err
        if debug:   # Python's (here pytest's) own showwarning is left to print it
            assert "ipguard verify: warning" not in err, err
        else:
            assert err == "ipguard verify: warning: the level is 1.000: inconclusive\n", err
    assert warnings.showwarning is before

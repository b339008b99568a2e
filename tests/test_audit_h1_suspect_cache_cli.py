"""ipguard evaluate keeps its suspects in --suspect-cache (default OUT/suspects): checked with
its key before any training, and an interrupted run, rerun, trains only the missing suspects."""
import json

import pytest

from ipguard_fast.cli import main


@pytest.mark.parametrize("extra, message", [(["--suspect-cache", "S", "--no-suspect-cache"], "--no-suspect-cache: "),
                                            (["--suspect-cache", "FILE"], "--suspect-cache: ")])
def test_the_cli_checks_the_suspect_cache_before_any_work(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("x")
    code = main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--out", "out", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "S").exists()


def test_the_cli_names_the_suspect_cache_when_its_key_is_unsafe(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IPGUARD_FAST_PROGRESS_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key = tmp_path / "config" / "ipguard_fast" / "progress.key"
    key.parent.mkdir(parents=True)
    key.write_text("k" * 64)
    key.chmod(0o644)
    code = main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--out", "out"])
    err = capsys.readouterr().err
    assert code == 2 and "--suspect-cache: " in err and "--no-suspect-cache" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    # without a suspect cache the key is not read: the run goes on to its next check
    assert main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--negatives", "missing.pt",
                 "--no-suspect-cache", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert "--negatives" in err and "key" not in err, err


def test_an_interrupted_cli_evaluate_resumes_from_out_suspects(builds, tmp_path, monkeypatch, capsys):
    """The command's default cache, OUT/suspects: the rerun trains only what the first run had not."""
    from safetensors.torch import save_file

    from ipguard_fast.models import train_digits_model

    monkeypatch.delenv("IPGUARD_FAST_PROGRESS_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    weights = tmp_path / "owner.safetensors"
    save_file(train_digits_model("cnn", seed=0, epochs=2).state_dict(), weights)
    args = ["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(weights), "--data", "digits",
            "--negative-arch", "digits_mlp", "--negative-epochs", "1", "--k", "2", "-n", "8",
            "--families", "FTLL,prune,extract-labels",
            "--out", str(tmp_path / "out")]
    builds["stop_after"] = 3
    assert main(args) != 0
    assert len(list((tmp_path / "out" / "suspects").rglob("*.safetensors"))) == 3
    builds.update(count=0, stop_after=None)
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    total = len(json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]["suspects"])
    assert builds["count"] == total - 3 and "(3 of them from the cache)" in out

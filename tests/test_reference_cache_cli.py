"""`ipguard protect`'s cache options: --cache and --cache-key checked before any work,
--cache-readonly refusing a tampered file in one line (exit 2), and a rebuilt file
reported as one warning line. protect's recipe is swapped for the 4-kind test recipe."""
import importlib
import os
import time

import pytest
from safetensors.torch import save_file
from test_reference_cache import CONFIG, VALIDATION_NEGATIVE

import ipguard_fast.data as data
from ipguard_fast.cli import main
from ipguard_fast.selection import ProtectConfig


@pytest.fixture
def argv(owner, small, tmp_path, monkeypatch):
    """protect's command line for the test owner on 160 digits, with the small recipe."""
    monkeypatch.setattr(data, "load_data", lambda spec, split: small)
    # `ipguard protect` builds its ProtectConfig from the package (ipguard_fast.selection)
    selection = importlib.import_module("ipguard_fast.selection")
    monkeypatch.setattr(selection, "ProtectConfig",
                        lambda **kw: ProtectConfig(**{**kw, "recipe": CONFIG.recipe, "k": CONFIG.k}))
    save_file(owner.state_dict(), tmp_path / "owner.safetensors")
    return ["protect", "--model", "ipguard_fast.models:DigitsCNN", "--weights", str(tmp_path / "owner.safetensors"),
            "--data", "digits", "-n", "4", "--pool-factor", "2", "--replicas", "1", "--no-refine", "--no-progress",
            "--threads", "1", "--cache-key", str(tmp_path / "cache.key"), "--out", str(tmp_path / "fp.safetensors")]


def error_line(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_readonly_refuses_a_tampered_file_and_a_rebuild_warns_in_one_line(argv, owner, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(argv + ["--cache", str(cache)]) == 0
    # Only the warning that 4 points cannot show a copy (this tiny setting), on one line.
    assert [line.startswith("ipguard protect: warning: protect: 4 fingerprints cannot show")
            for line in capsys.readouterr().err.splitlines()] == [True]
    (folder,) = cache.iterdir()
    path = folder / (VALIDATION_NEGATIVE.replace("/", "_") + ".safetensors")
    save_file(owner.state_dict(), path)
    tampered = path.read_bytes()
    err = error_line(argv + ["--cache", str(cache), "--cache-readonly"], capsys)
    assert err.startswith(f"ipguard protect: error: --cache: {path} ") and "read-only" in err, err
    assert path.read_bytes() == tampered
    assert main(argv + ["--cache", str(cache)]) == 0
    err, _inconclusive = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"ipguard protect: warning: reference cache: {path} ") and err.endswith("rebuilt"), err
    assert path.read_bytes() != tampered


def test_cache_options_are_checked_before_any_work(argv, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    start = time.monotonic()
    assert "error: --cache: " in error_line(argv + ["--cache", str(tmp_path / "file")], capsys)
    key_at = argv.index("--cache-key") + 1
    folder_as_key = argv[:key_at] + [str(tmp_path)] + argv[key_at + 1:]
    assert "error: --cache-key: " in error_line(folder_as_key, capsys)
    assert time.monotonic() - start < 5, "refused only after work started"
    assert not (tmp_path / "ipguard-references").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_needs_cache_readonly(argv, tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert "error: --cache: " in error_line(argv + ["--cache", str(tmp_path / "ro" / "cache")], capsys)

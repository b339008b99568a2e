"""The progress files' key store: an explicit location, atomic creation, unsafe keys refused."""
from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from ipguard_fast._validate import ArgumentError
from ipguard_fast.remote.keystore import KEY_ENV, default_key_path, load_or_create_key, progress_key


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def _create_in_turn(barrier, paths, results) -> None:
    for path in paths:
        barrier.wait()
        try:
            results.put((path, load_or_create_key(path).decode("ascii")))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
            results.put((path, f"error: {exc}"))


def test_eight_processes_creating_the_key_at_once_share_one_key(tmp_path):
    """Every process starts each round together (a barrier); each round is a fresh key file."""
    context = multiprocessing.get_context("fork")
    rounds, workers = 25, 8
    paths = [str(tmp_path / f"round{r}" / "progress.key") for r in range(rounds)]
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=_create_in_turn, args=(barrier, paths, results)) for _ in range(workers)]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in range(rounds * workers)]
    for process in processes:
        process.join(10)
    keys: dict[str, set] = {}
    for path, key in answers:
        keys.setdefault(path, set()).add(key)
    assert all(len(found) == 1 for found in keys.values()), [found for found in keys.values() if len(found) > 1]
    for path, (key,) in keys.items():
        assert len(key) == 64 and int(key, 16) >= 0, key
        assert Path(path).read_text() == key
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.listdir(Path(path).parent) == ["progress.key"]  # no temporary file left


def test_a_new_key_is_32_random_bytes_kept_private(tmp_path):
    path = tmp_path / "new" / "k.key"
    key = load_or_create_key(path)
    assert len(bytes.fromhex(key.decode())) == 32
    assert load_or_create_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "other.key") != key


@pytest.mark.parametrize("content, match", [
    (b"", "holds 0 bytes"),
    (b"   \n\t ", "holds 0 bytes"),
    (b"short-key", "holds 9 bytes"),
    (b"x" * 5000, "longer than 4096"),
])
def test_an_empty_short_or_huge_key_is_refused(tmp_path, content, match):
    path = tmp_path / "k.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ArgumentError, match=match) as info:
        load_or_create_key(path)
    assert info.value.argument == "key_file"


def test_a_key_open_to_others_is_refused(tmp_path):
    path = tmp_path / "k.key"
    path.write_bytes(b"a" * 64)
    for mode in (0o644, 0o640, 0o602):
        path.chmod(mode)
        with pytest.raises(ArgumentError, match="chmod 600"):
            load_or_create_key(path)


@pytest.mark.parametrize("kind", ["fifo", "dev-null", "link-to-dev-null", "directory", "dangling-link"])
def test_a_key_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "k.key"
    if kind == "fifo":
        os.mkfifo(path, 0o600)  # opening it for reading would wait for a writer
    elif kind == "dev-null":
        path = Path(os.devnull)
    elif kind == "link-to-dev-null":
        path.symlink_to(os.devnull)
    elif kind == "directory":
        path.mkdir(mode=0o700)
    else:
        path.symlink_to(tmp_path / "nowhere" / "k.key")
    with pytest.raises(ArgumentError, match="not a regular file|cannot|broken link") as info:
        load_or_create_key(path)
    assert info.value.argument == "key_file"


def test_a_read_only_or_missing_home_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HOME", str(blocker / "home"))  # no folder can be made under a file
    with pytest.raises(ArgumentError, match=r"key_file: cannot (read|create) the key file .*--progress-key"):
        progress_key()
    if os.geteuid() != 0:  # root writes into read-only folders; the case above covers it then
        home = tmp_path / "ro-home"
        home.mkdir(mode=0o500)
        monkeypatch.setenv("HOME", str(home))
        with pytest.raises(ArgumentError, match="key_file: cannot create"):
            progress_key()
    # ...and an explicit key file (or the environment variable) works without any home.
    assert len(progress_key(tmp_path / "explicit.key").secret) == 64
    monkeypatch.setenv(KEY_ENV, "k" * 40)
    assert progress_key().secret == b"k" * 40


def test_the_default_location_is_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert default_key_path() == tmp_path / "cfg" / "ipguard_fast" / "progress.key"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_key_path() == tmp_path / "home" / ".config" / "ipguard_fast" / "progress.key"
    key = progress_key()
    assert key.source == str(default_key_path()) and default_key_path().is_file()


def test_the_environment_variable_still_works_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv(KEY_ENV, "  " + "s" * 32 + "\n")
    assert progress_key() == (b"s" * 32, KEY_ENV)
    assert not (tmp_path / "home").exists()  # nothing written when the key comes from the environment
    explicit = tmp_path / "explicit.key"
    assert progress_key(explicit).secret == explicit.read_bytes()  # an explicit file wins
    for short in ("   ", "too-short"):
        monkeypatch.setenv(KEY_ENV, short)
        with pytest.raises(ArgumentError, match=f"{KEY_ENV}: holds"):
            progress_key()


def test_verify_remote_and_the_cli_take_the_key_file(tmp_path, capsys):
    import torch
    from conftest import half_matching_fingerprints
    from torch import nn

    from ipguard_fast.cli import main
    from ipguard_fast.remote import ProgressFileError, serve, verify_remote

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    fps = half_matching_fingerprints(model, 20)
    fp_path = fps.save(tmp_path / "fp.safetensors")
    progress, key_a, key_b = tmp_path / "p.json", tmp_path / "a.key", tmp_path / "b.key"
    with serve(model, input_shape=(1, 8, 8)) as running:
        verdict = verify_remote(running.url, fps, batch_size=8, progress_file=progress, key_file=key_a)
        assert verdict.matching_rate == 0.5 and key_a.is_file()
        with pytest.raises(ProgressFileError, match=f"another key than {key_b}"):
            verify_remote(running.url, fps, batch_size=8, progress_file=progress, key_file=key_b)
        with pytest.raises(ArgumentError, match="key_file: .*give progress_file too"):
            verify_remote(running.url, fps, key_file=key_a)
        argv = ["verify", "--fingerprints", str(fp_path), "--endpoint", running.url, "--batch-size", "8"]
        assert main([*argv, "--progress", str(progress), "--progress-key", str(key_a)]) == 0
        key_b.chmod(0o644)
        assert main([*argv, "--progress", str(tmp_path / "q.json"), "--progress-key", str(key_b)]) == 2
        assert "--progress-key: " in capsys.readouterr().err
        assert main([*argv, "--progress-key", str(key_a)]) == 2
        assert "--progress-key: " in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a file away needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path):
    """Its owner knows the key, so could forge the progress files and caches it authenticates
    (mode 600 says nothing about that: an audit's key file of uid 12345 was taken)."""
    path = tmp_path / "k.key"
    path.write_bytes(b"k" * 64)
    path.chmod(0o600)
    os.chown(path, 12345, 12345)
    with pytest.raises(ArgumentError, match="belongs to another user") as info:
        load_or_create_key(path)
    assert info.value.argument == "key_file"

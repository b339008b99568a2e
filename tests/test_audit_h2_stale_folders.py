"""A verifier killed outright (SIGKILL, no code of ours runs) left its worker's empty
ipguard-suspect-* folder behind for good. The verifier now holds a flock on the folder, which
the kernel drops when it dies; a later start removes such folders -- only this user's, empty,
unlocked, no link, a minute old -- and nothing else."""
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ipguard_fast.io import IsolatedSuspect, save_torchscript
from ipguard_fast.io.sandbox import process

ROOT = Path(__file__).resolve().parents[1]
VERIFIER = """import sys, time
from ipguard_fast.io import IsolatedSuspect
suspect = IsolatedSuspect(sys.argv[1]).start()
print("started", flush=True)
time.sleep(120)
"""


def folders(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith("ipguard-suspect-"))


def age(path, seconds=600):
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_later_start_removes_the_folder_of_a_verifier_killed_outright(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    model = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.rand(2, 1, 8, 8),
                             tmp_path / "m.pt")
    env = dict(os.environ, TMPDIR=str(temp), PYTHONPATH=str(ROOT))
    verifier = subprocess.Popen([sys.executable, "-c", VERIFIER, str(model)], env=env, stdout=subprocess.PIPE,
                                text=True)
    try:
        assert verifier.stdout.readline().strip() == "started"
        (left,) = folders(temp)
        age(temp / left)
        process._remove_stale_folders(str(temp))
        assert folders(temp) == [left], "the folder of a live verifier was removed"
    finally:
        verifier.send_signal(signal.SIGKILL)
        verifier.wait(timeout=30)
    time.sleep(0.5)   # the worker dies with its verifier (PDEATHSIG)
    assert folders(temp) == [left]
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with IsolatedSuspect(model) as suspect:
        assert suspect(torch.rand(2, 1, 8, 8)).shape == (2, 10)
        assert left not in folders(temp) and len(folders(temp)) == 1
    assert folders(temp) == []


def test_only_provably_stale_folders_of_this_user_are_removed(tmp_path):
    def made(name, stale=True):
        path = tmp_path / name
        path.mkdir()
        if stale:
            age(path)
        return path

    made("ipguard-suspect-dead-flock")                                  # removed
    made("ipguard-suspect-young-flock", stale=False)                    # maybe just made, not yet locked
    made("ipguard-suspect-oldversion")                                  # an earlier version's: never locked
    (made("ipguard-suspect-full-flock") / "x").touch()
    age(tmp_path / "ipguard-suspect-full-flock")
    os.chown(made("ipguard-suspect-theirs-flock"), 12345, 12345)        # another user's
    held = os.open(made("ipguard-suspect-live-flock"), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)                                    # a live verifier's
    target = made("target")
    os.symlink(target, tmp_path / "ipguard-suspect-link-flock")
    age(tmp_path / "ipguard-suspect-link-flock")
    (tmp_path / "ipguard-suspect-file-flock").touch()
    try:
        process._remove_stale_folders(str(tmp_path))
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ipguard-suspect-file-flock", "ipguard-suspect-full-flock", "ipguard-suspect-link-flock",
        "ipguard-suspect-live-flock", "ipguard-suspect-oldversion", "ipguard-suspect-theirs-flock",
        "ipguard-suspect-young-flock", "target"]

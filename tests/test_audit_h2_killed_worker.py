"""A worker killed from outside (SIGKILL by a user, a service manager or the kernel's OOM
killer) was reported as "ran out of memory", a guess: the command now says what is known,
killed by signal 9 (SIGKILL), not by the verifier, the OOM killer only a possibility."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import half_matching_fingerprints
from torch import nn

from ipguard_fast._errors import ran_out_of_memory
from ipguard_fast.cli import _outcome
from ipguard_fast.io import IsolatedSuspect, SuspectFailed, SuspectResourceError, save_torchscript

ROOT = Path(__file__).resolve().parents[1]


class Loops(nn.Module):
    def forward(self, x):
        i = 0
        while i >= 0:
            i = (i + 1) % 7
        return x.flatten(1)[:, :10]


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    return str(save_torchscript(tiny_model(), torch.rand(2, 1, 8, 8), tmp_path_factory.mktemp("kill") / "m.pt"))


def killed_from_outside(sock, job):
    os.kill(os.getpid(), signal.SIGKILL)


def closes_and_stays(sock, job):
    sock.close()
    time.sleep(30)
    return 0


def test_a_worker_killed_from_outside_is_not_said_to_have_run_out_of_memory(honest, capsys):
    with pytest.raises(SuspectFailed) as caught:
        IsolatedSuspect(honest, entry=killed_from_outside).start()
    exc = caught.value
    assert not isinstance(exc, SuspectResourceError) and not ran_out_of_memory(exc)
    assert "killed by signal 9 (SIGKILL) from outside while loading it" in str(exc)
    assert "possibly the system's out-of-memory killer" in str(exc)

    def fails():
        raise exc
    assert _outcome("verify", fails, False) == 1
    err = capsys.readouterr().err
    assert err.startswith("ipguard verify: failed: SuspectFailed: ") and "ran out of memory" not in err, err


def test_a_worker_the_verifier_killed_after_its_grace_is_said_so(honest):
    with pytest.raises(SuspectFailed, match=r"its worker closed its channel while loading it and was killed when "
                                            r"it had not exited 2 s later$") as caught:
        IsolatedSuspect(honest, entry=closes_and_stays).start()
    assert "out-of-memory" not in str(caught.value)


def test_the_command_reports_a_worker_killed_from_outside(tmp_path):
    torch.jit.save(torch.jit.script(Loops()), str(tmp_path / "loops.pt"))
    fps = half_matching_fingerprints(tiny_model(), 10).save(tmp_path / "fp.safetensors")
    verifier = subprocess.Popen([sys.executable, "-m", "ipguard_fast", "verify", "--fingerprints", str(fps),
                                 "--model", str(tmp_path / "loops.pt"), "--timeout", "60"],
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), stderr=subprocess.PIPE, text=True)
    worker = _python_child(verifier.pid, deadline=time.monotonic() + 60)
    time.sleep(1)   # loaded, looping on the batch
    os.kill(worker, signal.SIGKILL)
    err = verifier.communicate(timeout=60)[1].strip()
    assert verifier.returncode == 1 and "\n" not in err, err
    assert "killed by signal 9 (SIGKILL) from outside" in err and "ran out of memory" not in err, err


def _python_child(pid: int, deadline: float) -> int:
    """The verifier's worker: its first child process that runs Python. A short-lived helper
    it may start first (ctypes' find_library runs ldconfig, say) is passed over: CI once took
    one for the worker and found it gone a second later."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        for child in children.read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:   # already gone
                continue
            if b"python" in cmdline:
                return int(child)
        time.sleep(0.05)
    raise AssertionError(f"no worker process of {pid} appeared")

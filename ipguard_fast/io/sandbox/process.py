"""One worker process: started by fork or as a fresh interpreter, its channel and temporary folder, stopped.

``WorkerProcess.start`` makes the folder and a socket pair and starts the worker (fork: the
verifier's interpreter copied, torch already imported; exec: a fresh one, the one way once CUDA
is initialised here); ``stop`` closes the channel, waits a grace period, kills, reaps and
removes the folder -- at the latest when the object is collected (a finaliser).
"""
from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from . import worker

__all__ = ["WorkerProcess", "autograd_survives_fork", "signal_name"]

_ROOT = str(Path(__file__).resolve().parents[3])  # where `import ipguard_fast` finds this copy
_EXEC_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from ipguard_fast.io.sandbox.worker import exec_main; exec_main()")


class WorkerProcess:
    """One worker process, its channel and its temporary folder; stopped at the latest when collected."""

    def __init__(self, pid: int, sock: socket.socket, workdir: str):
        self.pid, self.sock, self.workdir = pid, sock, workdir
        self._finalizer = weakref.finalize(self, _stop_process, pid, sock, workdir, 0.0)

    @classmethod
    def start(cls, job_for: Callable[[str], worker.Job], method: str, entry) -> WorkerProcess:
        workdir = tempfile.mkdtemp(prefix="ipguard-suspect-")
        mine, theirs = socket.socketpair()
        try:
            job = job_for(workdir)
            pid = _fork(theirs, job, entry) if method == "fork" else _spawn(theirs, job)
        except BaseException:
            mine.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        return cls(pid, mine, workdir)

    def stop(self, grace: float) -> int | None:
        """Close the channel, wait up to ``grace`` s, kill; returns the wait status (None if unknown)."""
        self._finalizer.detach()
        return _stop_process(self.pid, self.sock, self.workdir, grace)


def _stop_process(pid: int, sock: socket.socket, workdir: str, grace: float) -> int | None:
    sock.close()
    status = None
    try:
        end = time.monotonic() + grace
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() >= end:
                os.kill(pid, signal.SIGKILL)
                status = os.waitpid(pid, 0)[1]
                break
            time.sleep(0.002)
    except ChildProcessError:  # someone else reaped it
        status = None
    shutil.rmtree(workdir, ignore_errors=True)
    return status


def _fork(sock: socket.socket, job: worker.Job, entry) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        gc.freeze()  # the verifier's objects are never collected here: their finalisers would close reused fds
        code = worker.run(sock, job, entry)
    finally:
        os._exit(code)


def _spawn(sock: socket.socket, job: worker.Job) -> int:
    os.set_inheritable(sock.fileno(), True)
    actions = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    actions.append((os.POSIX_SPAWN_DUP2, sock.fileno(), 3))
    argv = [sys.executable, "-c", _EXEC_CODE, _ROOT, job.to_json()]
    return os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def autograd_survives_fork() -> bool:
    """Whether a forked worker could take gradients: torch refuses autograd in a child forked after
    the parent's autograd engine started its threads (any backward here), so an extraction's
    worker is then started as a fresh interpreter instead. Costs one fork of a child that runs a
    one-element backward and exits."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import torch

            torch.ones(1, requires_grad=True).sum().backward()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

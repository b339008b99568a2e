"""One worker process: started by fork or as a fresh interpreter, its channel and temporary folder, stopped.

``WorkerProcess.start`` makes the folder and a socket pair and starts the worker (fork: the
verifier's interpreter copied, torch already imported; exec: a fresh one, the one way once CUDA
is initialised here); ``stop`` closes the channel, waits a grace period, kills, reaps and
removes the folder -- at the latest when the object is collected (a finaliser). The verifier
holds an exclusive flock on the folder while it lives; the kernel drops it when the verifier
dies, also by SIGKILL, which no code of ours sees, so a later start removes the folders such a
verifier left (`_remove_stale_folders`: this user's, empty, unlocked, not a link, a minute old).
"""
from __future__ import annotations

import fcntl
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
_PREFIX, _SUFFIX = "ipguard-suspect-", "-flock"   # the suffix: a folder locked while its verifier lives
_STALE_AFTER = 60.0   # seconds: a younger folder may be one whose verifier has made it and not yet locked it
_EXEC_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from ipguard_fast.io.sandbox.worker import exec_main; exec_main()")


class WorkerProcess:
    """One worker process, its channel and its temporary folder; stopped at the latest when collected."""

    def __init__(self, pid: int, sock: socket.socket, workdir: str, lock: int):
        self.pid, self.sock, self.workdir, self._folder = pid, sock, workdir, (workdir, lock)
        self.killed = False   # by stop(), once the grace period ran out
        self._finalizer = weakref.finalize(self, _stop_process, pid, sock, self._folder, 0.0)

    @classmethod
    def start(cls, job_for: Callable[[str], worker.Job], method: str, entry) -> WorkerProcess:
        _remove_stale_folders(tempfile.gettempdir())
        workdir = tempfile.mkdtemp(prefix=_PREFIX, suffix=_SUFFIX)
        lock = _locked(workdir)
        mine, theirs = socket.socketpair()
        try:
            job = job_for(workdir)
            pid = _fork(theirs, job, entry) if method == "fork" else _spawn(theirs, job)
        except BaseException:
            mine.close()
            _remove_folder((workdir, lock))
            raise
        finally:
            theirs.close()
        return cls(pid, mine, workdir, lock)

    def stop(self, grace: float) -> int | None:
        """Close the channel, wait up to ``grace`` s, kill; returns the wait status (None if unknown)."""
        if self._finalizer.detach() is None:   # stopped already: the lock's number may be another file's now
            return None
        status, self.killed = _stop_process(self.pid, self.sock, self._folder, grace)
        return status


def _locked(workdir: str) -> int:
    """A descriptor of ``workdir`` holding an exclusive flock on it while this process lives."""
    try:
        lock = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except BaseException:
        os.rmdir(workdir)
        raise
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)   # a fresh folder: ours alone
    except OSError:   # a file system without flock: no later start can lock it either, so none removes it
        pass
    return lock


def _remove_folder(folder: tuple[str, int]) -> None:
    shutil.rmtree(folder[0], ignore_errors=True)
    os.close(folder[1])   # the lock goes with the folder, never before it


def _remove_stale_folders(parent: str) -> None:
    """Remove the worker folders in ``parent`` that a verifier killed outright left: only this
    user's, a folder and no link, unlocked (its verifier is dead, in whatever pid namespace),
    a minute old and empty. Best effort: anything else is left as it is."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(_PREFIX) and n.endswith(_SUFFIX)]
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if names else None
    except OSError:
        return
    for name in names:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if info.st_uid == os.geteuid() and time.time() - info.st_mtime > _STALE_AFTER:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # held by a live verifier: BlockingIOError
                os.rmdir(name, dir_fd=parent_fd)                  # a folder with anything in it: OSError
        except OSError:
            pass
        finally:
            os.close(fd)
    if parent_fd is not None:
        os.close(parent_fd)


def _stop_process(pid: int, sock: socket.socket, folder: tuple[str, int], grace: float) -> tuple[int | None, bool]:
    """The wait status (None if unknown), and whether the worker was killed here."""
    sock.close()
    status, killed = None, False
    try:
        end = time.monotonic() + grace
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() >= end:
                os.kill(pid, signal.SIGKILL)
                killed = True
                status = os.waitpid(pid, 0)[1]
                break
            time.sleep(0.002)
    except ChildProcessError:  # someone else reaped it
        status = None
    _remove_folder(folder)
    return status, killed


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

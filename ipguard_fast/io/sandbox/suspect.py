"""A suspect's model file run in a worker process: to the verifier, a function from images to outputs.

``IsolatedSuspect(path)`` starts a confined worker (worker.py, limits.py) that loads the file
itself, and is then called like any suspect callable: images in, logits or labels out,
ready for ipguard_fast.verdicts, which checks them as it checks any suspect's. The verifier
reads only sized plain bytes from the worker (wire.py) and stops it when it is late; a
worker that hangs, crashes, exhausts a limit or answers nonsense becomes one exception
naming the file -- SuspectResourceError when a limit ran out, SuspectFailed otherwise --
and what the in-process path reports as bad input (a model that cannot take the images,
a file that is no model) keeps its class (ValueError, ModelLoadError, FileNotFoundError,
ImportError).
"""
from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..._files import short_error
from ..._validate import ArgumentError
from ..formats import format_of
from ..weights import ModelLoadError
from . import wire, worker
from .limits import GiB, Isolation

__all__ = ["IsolatedSuspect", "SuspectFailed", "SuspectResourceError"]

_INPUT_ERRORS = {cls.__name__: cls for cls in (ModelLoadError, FileNotFoundError, ImportError, ValueError)}
_ROOT = str(Path(__file__).resolve().parents[3])  # where `import ipguard_fast` finds this copy
_EXEC_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from ipguard_fast.io.sandbox.worker import exec_main; exec_main()")
_GRACE = 2.0  # seconds a worker that closed its channel has to exit before it is killed


class SuspectFailed(RuntimeError):
    """The suspect's worker failed: it crashed, exited, or answered malformed data."""


class SuspectResourceError(SuspectFailed):
    """The suspect's worker ran out of a resource: memory, wall-clock time or CPU time."""


class IsolatedSuspect:
    """The model in ``spec`` (any file or spec io.load_suspect takes), loaded and run by a confined
    worker process. Use it as a context manager (the worker starts on entry, loading the file, and
    stops on exit) and call it with float image batches."""

    def __init__(self, spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
                 device: str | torch.device = "cpu", isolation: Isolation | None = None,
                 entry: Callable[[socket.socket, worker.Job], int] | None = None):
        """``entry``: what the worker runs once confined, instead of loading and serving (tests)."""
        self.spec = os.fspath(spec)
        self.weights = None if weights is None else os.fspath(weights)
        try:
            self.device = str(torch.device(device))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ArgumentError("device", short_error(exc)) from None
        self.isolation = isolation if isolation is not None else Isolation()
        if not isinstance(self.isolation, Isolation):
            raise ArgumentError("isolation", f"must be an Isolation, got {type(isolation).__name__}")
        self._entry = entry
        self._process: _Process | None = None
        self._lock = threading.Lock()  # one exchange at a time on the channel

    def __enter__(self) -> IsolatedSuspect:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> IsolatedSuspect:
        """Start the worker and wait until it has loaded the model (within ``isolation.timeout``)."""
        if self._process is None:
            format_of(self.spec)  # a missing file is the caller's mistake, told without a worker
            self._process = _Process.start(self._job_for, self._method(), self._entry)
            self._exchange(None, "while loading it", batch=None)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The suspect's logits ``[B, C]`` (float32) or labels ``[B]`` (int64) for ``images``."""
        if images.dtype not in (torch.float32, torch.float64):
            images = images.float()
        header, payload = self._exchange(wire.tensor_message(images), f"on a batch of {len(images)} images",
                                         batch=len(images))
        return wire.decode_tensor(header, payload)

    def close(self, grace: float = _GRACE) -> int | None:
        """Stop the worker: it exits when its channel closes, and is killed if it has not after
        ``grace`` seconds. Returns its wait status (None: not running, or not known)."""
        process, self._process = self._process, None
        return None if process is None else process.stop(grace)

    def _job_for(self, workdir: str) -> worker.Job:
        return worker.Job(self.spec, self.weights, self.device, self.isolation, workdir, os.getpid())

    def _method(self) -> str:
        if self.isolation.start != "auto":
            return self.isolation.start
        return "exec" if torch.cuda.is_initialized() else "fork"  # a forked worker cannot use CUDA then

    def _exchange(self, message, doing: str, batch: int | None) -> tuple[dict[str, Any], bytearray]:
        with self._lock:
            return self._exchange_locked(message, doing, batch)

    def _exchange_locked(self, message, doing: str, batch: int | None) -> tuple[dict[str, Any], bytearray]:
        process = self._process
        if process is None:
            raise SuspectFailed(f"suspect {self.spec}: its worker is not running (use it in a `with` block)")
        deadline = time.monotonic() + self.isolation.timeout
        try:
            if message is not None:
                wire.send(process.sock, {"op": "run", **message[0]}, message[1], deadline)
            header, payload = wire.receive(process.sock, deadline, lambda h: _answer_size(h, batch))
        except wire.ChannelTimeout:
            raise self._stop(SuspectResourceError(f"did not answer within {self.isolation.timeout:g} s {doing} "
                                                  "(the wall-clock limit); the worker was stopped")) from None
        except wire.ChannelClosed:
            raise self._named(self._ended(self.close(), doing)) from None
        except wire.ChannelError as exc:
            raise self._stop(SuspectFailed(f"answered malformed data {doing}: {exc}; the worker was stopped")) from None
        if header["ok"] is not True:
            raise self._stop(self._refusal(header, doing))
        return header, payload

    def _refusal(self, header: dict[str, Any], doing: str) -> Exception:
        """The exception for the worker's error answer (every field of it checked)."""
        kind, message = header.get("kind"), header.get("message")
        if not isinstance(message, str):
            return SuspectFailed(f"answered malformed data {doing}: an error without a message")
        message = _clean(message)
        if kind == "memory":
            limit = self.isolation.memory_limit / GiB
            return SuspectResourceError(f"ran out of memory {doing} (its limit: {limit:g} GiB more than the "
                                        f"worker started with): {message}")
        name = header.get("class")
        if kind == "input" and isinstance(name, str) and name in _INPUT_ERRORS:
            return _INPUT_ERRORS[name](message)  # the in-process path's own error, unchanged
        if kind == "failed":
            return SuspectFailed(f"failed {doing}: {message}")
        return SuspectFailed(f"answered malformed data {doing}: an error of unknown kind")

    def _ended(self, status: int | None, doing: str) -> SuspectFailed:
        """The exception for a worker that closed its channel; ``status``: its wait status."""
        code = None if status is None else os.waitstatus_to_exitcode(status)
        if code is None or code >= 0:
            return SuspectFailed(f"its worker exited (code {code}) {doing} without answering")
        name = _signal_name(-code)
        if -code == signal.SIGXCPU:
            return SuspectResourceError(f"used up its {self.isolation.cpu_time} s of CPU time {doing}")
        if -code == signal.SIGKILL:
            return SuspectFailed(f"its worker was killed (SIGKILL) {doing}; the system may have run out of memory")
        return SuspectFailed(f"its worker crashed ({name}) {doing}")

    def _stop(self, exc: Exception) -> Exception:
        """Kill the worker; ``exc`` to raise (see _named)."""
        self.close(grace=0.0)
        return self._named(exc)

    def _named(self, exc: Exception) -> Exception:
        """A failure of the worker with the suspect's file named first; bad input keeps the in-process
        message ("suspect: fails on images of shape ...")."""
        return type(exc)(f"suspect {self.spec}: {exc}") if isinstance(exc, SuspectFailed) else exc


class _Process:
    """One worker process, its channel and its temporary folder; stopped at the latest when collected."""

    def __init__(self, pid: int, sock: socket.socket, workdir: str):
        self.pid, self.sock, self.workdir = pid, sock, workdir
        self._finalizer = weakref.finalize(self, _stop_process, pid, sock, workdir, 0.0)

    @classmethod
    def start(cls, job_for: Callable[[str], worker.Job], method: str, entry) -> _Process:
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


def _answer_size(header: dict[str, Any], batch: int | None) -> int:
    """The payload size of the worker's answer: none for an error or the "ready" after loading."""
    if header.get("ok") is False:
        return 0
    if header.get("ok") is not True:
        raise wire.ChannelError("an answer that is neither a result nor an error")
    if batch is None:
        if header.get("ready") is not True:
            raise wire.ChannelError("an answer where the worker was to say it had loaded the model")
        return 0
    return wire.tensor_size(header, batch=batch)


def _clean(text: str, limit: int = worker.MESSAGE_LIMIT) -> str:
    """One printable line of at most ``limit`` characters of the worker's (hostile) text."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text[: 4 * limit]).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"

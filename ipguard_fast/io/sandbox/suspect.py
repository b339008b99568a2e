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

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..._validate import ArgumentError
from ..formats import available_device, format_of
from ..weights import ModelLoadError
from . import wire, worker
from .limits import GiB, Isolation
from .process import WorkerProcess, autograd_survives_fork, signal_name

__all__ = ["Conversation", "IsolatedSuspect", "SuspectFailed", "SuspectResourceError"]

_INPUT_ERRORS = {cls.__name__: cls for cls in (ModelLoadError, FileNotFoundError, ImportError, ValueError)}
_GRACE = 2.0  # seconds a worker that closed its channel has to exit before it is killed
_EXEC_START = 30.0  # seconds a fresh interpreter may take to start (import torch) before the load's timeout runs


class SuspectFailed(RuntimeError):
    """The suspect's worker failed: it crashed, exited, or answered malformed data."""


class SuspectResourceError(SuspectFailed):
    """The suspect's worker ran out of a resource: memory, wall-clock time or CPU time."""


class IsolatedSuspect:
    """The model in ``spec`` (any file or spec io.load_suspect takes), loaded and run by a confined
    worker process. Use it as a context manager (the worker starts on entry, loading the file, and
    stops on exit) and call it with float image batches. A batch the model cannot take raises the
    in-process path's ValueError and the worker goes on; any other failure stops it, and ``failure``
    keeps the exception (a server stops serving then: every later call would fail)."""

    def __init__(self, spec: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None,
                 device: str | torch.device = "cpu", isolation: Isolation | None = None,
                 entry: Callable[[socket.socket, worker.Job], int] | None = None, load: str = "suspect",
                 num_classes: int | None = None):
        """``load``: "suspect" (io.load_suspect: any format, ONNX included) or "model" (io.load_model: a
        module the worker can take gradients through, for an extraction). ``entry``: what the worker runs
        once confined, instead of loading and serving (tests). ``num_classes``: the class count the
        fingerprints have; an answer sent as labels (its logits did not fit, or float32 would change
        them) whose logits had another count is refused as the in-process path refuses such logits."""
        if load not in worker.LOADERS:
            raise ArgumentError("load", f"must be one of {tuple(worker.LOADERS)}, got {load!r}")
        # The worker runs in a temporary folder of its own: relative paths are the caller's.
        self.spec, self.load = _absolute_if_file(os.fspath(spec)), load
        self.weights = None if weights is None else os.path.abspath(os.fspath(weights))
        self.device = available_device(device)
        self.isolation = isolation if isolation is not None else Isolation()
        if not isinstance(self.isolation, Isolation):
            raise ArgumentError("isolation", f"must be an Isolation, got {type(isolation).__name__}")
        self._entry = entry
        self.num_classes = num_classes
        self._process: WorkerProcess | None = None
        self._lock = threading.Lock()  # one exchange at a time on the channel
        self.failure: Exception | None = None  # what stopped the worker, once something has (a server checks)

    def __enter__(self) -> IsolatedSuspect:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> IsolatedSuspect:
        """Start the worker and wait until it has loaded the model (within ``isolation.timeout``)."""
        if self._process is None:
            format_of(self.spec)  # a missing file is the caller's mistake, told without a worker
            method = self._method()
            self._process = WorkerProcess.start(self._job_for, method, self._entry)
            with self.conversation("while loading it") as channel:   # a fresh interpreter first imports torch
                channel.receive(lambda header: _answer_size(header, None), extra=_EXEC_START if method == "exec" else 0)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The suspect's logits ``[B, C]`` (float32) or labels ``[B]`` (int64) for ``images``."""
        if images.dtype not in (torch.float32, torch.float64):
            images = images.float()
        header, payload = self._exchange(wire.tensor_message(images), f"on a batch of {len(images)} images",
                                         batch=len(images))
        classes = header.get("classes")   # set where labels stand for logits: their class count
        if self.num_classes is not None and classes is not None and classes != self.num_classes:
            raise ValueError(f"suspect: returns {classes} classes, the fingerprints have {self.num_classes}")
        return wire.decode_tensor(header, payload)

    def close(self, grace: float = _GRACE) -> int | None:
        """Stop the worker: it exits when its channel closes, and is killed if it has not after
        ``grace`` seconds. Returns its wait status (None: not running, or not known)."""
        process, self._process = self._process, None
        return None if process is None else process.stop(grace)

    def _job_for(self, workdir: str) -> worker.Job:
        return worker.Job(self.spec, self.weights, self.device, self.isolation, workdir, os.getpid(), self.load)

    def _method(self) -> str:
        if self.isolation.start != "auto":
            return self.isolation.start
        if torch.cuda.is_initialized():
            return "exec"  # a forked worker cannot use CUDA then
        return "fork" if self.load != "model" or autograd_survives_fork() else "exec"  # nor autograd, for extraction

    def _exchange(self, message, doing: str, batch: int | None) -> tuple[dict[str, Any], bytearray]:
        """One request (None: none, the answer to loading) and its answer."""
        with self.conversation(doing) as channel:
            if message is not None:
                channel.send({"op": "run", **message[0]}, message[1])
            return channel.receive(lambda header: _answer_size(header, batch))

    @contextlib.contextmanager
    def conversation(self, doing: str) -> Iterator[Conversation]:
        """The channel to the worker for one exchange of any number of messages (a batch; an
        extraction, whose worker reports progress as it goes), held by this caller alone. Each
        message has ``isolation.timeout`` seconds; the worker's failures, and a ChannelError the
        caller raises about what it read, become this class's exceptions (``doing``: "on ...")."""
        with self._lock:
            process = self._process
            if process is None:
                raise SuspectFailed(f"suspect {self.spec}: its worker is not running (use it in a `with` block)")
            try:
                yield Conversation(self, process.sock, doing)
            except wire.ChannelTimeout:
                raise self._stop(SuspectResourceError(f"did not answer within {self.isolation.timeout:g} s {doing} "
                                                      "(the wall-clock limit); the worker was stopped")) from None
            except wire.ChannelClosed:
                raise self._failed(self._named(self._ended(self.close(), doing, process.killed))) from None
            except wire.ChannelError as exc:
                raise self._stop(SuspectFailed(f"answered malformed data {doing}: {exc}; the worker was "
                                               "stopped")) from None

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
        name, argument = header.get("class"), header.get("argument")
        if kind == "input" and name == "ValueError" and isinstance(argument, str) \
                and message.startswith(f"{argument}: "):   # an ArgumentError: its argument named for the caller
            return ArgumentError(argument, message[len(argument) + 2:])
        if kind == "input" and isinstance(name, str) and name in _INPUT_ERRORS:
            return _INPUT_ERRORS[name](message)  # the in-process path's own error, unchanged
        if kind == "failed":
            return SuspectFailed(f"failed {doing}: {message}")
        return SuspectFailed(f"answered malformed data {doing}: an error of unknown kind")

    def _ended(self, status: int | None, doing: str, killed_here: bool) -> SuspectFailed:
        """The exception for a worker that closed its channel; ``status``: its wait status;
        ``killed_here``: the verifier killed it, as it had not exited in the grace period."""
        code = None if status is None else os.waitstatus_to_exitcode(status)
        if code is None or code >= 0:
            return SuspectFailed(f"its worker exited (code {code}) {doing} without answering")
        name = signal_name(-code)
        if -code == signal.SIGXCPU:
            return SuspectResourceError(f"used up its {self.isolation.cpu_time} s of CPU time {doing}")
        if -code == signal.SIGKILL and killed_here:
            return SuspectFailed(f"its worker closed its channel {doing} and was killed when it had not exited "
                                 f"{_GRACE:g} s later")
        if -code == signal.SIGKILL:   # not by us: a user, a service manager or the kernel's out-of-memory killer
            return SuspectFailed(f"its worker was killed by signal {-code} (SIGKILL) from outside {doing} "
                                 "(by a user or a service manager, or possibly the system's out-of-memory killer)")
        return SuspectFailed(f"its worker crashed ({name}) {doing}")

    def _stop(self, exc: Exception) -> Exception:
        """Kill the worker; ``exc`` to raise (see _named)."""
        self.close(grace=0.0)
        return self._failed(self._named(exc))

    def _failed(self, exc: Exception) -> Exception:
        """``exc``, kept as ``failure`` when it is the first that stopped the worker."""
        if self.failure is None:
            self.failure = exc
        return exc

    def _named(self, exc: Exception) -> Exception:
        """A failure of the worker with the suspect's file named first; bad input keeps the in-process
        message ("suspect: fails on images of shape ...")."""
        return type(exc)(f"suspect {self.spec}: {exc}") if isinstance(exc, SuspectFailed) else exc


def _answer_size(header: dict[str, Any], batch: int | None) -> int:
    """The payload size of the worker's answer: none for an error or the "ready" after loading."""
    if not _is_result(header):
        return 0
    if batch is None:
        if header.get("ready") is not True:
            raise wire.ChannelError("an answer where the worker was to say it had loaded the model")
        return 0
    return wire.tensor_size(header, batch=batch)


def _is_result(header: dict[str, Any]) -> bool:
    """True for a result, False for an error answer (no payload); a ChannelError for anything else."""
    if header.get("ok") is False:
        return False
    if header.get("ok") is not True:
        raise wire.ChannelError("an answer that is neither a result nor an error")
    return True


def _clean(text: str, limit: int = worker.MESSAGE_LIMIT) -> str:
    """One printable line of at most ``limit`` characters of the worker's (hostile) text."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in text[: 4 * limit]).split())
    return text if len(text) <= limit else text[:limit] + "..."


class Conversation:
    """The verifier's side of the channel while IsolatedSuspect.conversation holds it."""

    def __init__(self, suspect: IsolatedSuspect, sock: socket.socket, doing: str):
        self._suspect, self._sock, self._doing = suspect, sock, doing

    def send(self, header: dict[str, Any], payload: Any = b"") -> None:
        wire.send(self._sock, header, payload, time.monotonic() + self._suspect.isolation.timeout)

    def receive(self, payload_size: Callable[[dict[str, Any]], int],
                extra: float = 0.0) -> tuple[dict[str, Any], bytearray]:
        """The worker's next answer (within the timeout and ``extra`` seconds), its payload sized by
        ``payload_size(header)``; an error answer is raised."""
        header, payload = wire.receive(self._sock, time.monotonic() + self._suspect.isolation.timeout + extra,
                                       lambda header: payload_size(header) if _is_result(header) else 0)
        if header["ok"] is not True:
            refusal = self._suspect._refusal(header, self._doing)
            if header.get("alive") is True and header.get("kind") == "input":
                raise refusal   # bad input that the worker survives: it awaits the next request
            raise self._suspect._stop(refusal)
        return header, payload


def _absolute_if_file(spec: str) -> str:
    """A path that names something here, made absolute; a `package.module:factory` spec as it is."""
    return os.path.abspath(spec) if os.path.lexists(spec) else spec

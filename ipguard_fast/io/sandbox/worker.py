"""The worker process: confine itself, load the model file, answer requests until the verifier hangs up.

It runs the package's own code on a hostile file, so it is the one place a parser bug or an
operator that touches files can act, and limits.confine has bounded it before the file is
opened. It answers each batch of images with the suspect's logits (float32), or its labels
(int64) where the suspect gives labels or where float32 logits would not give the same
labels, computed exactly as ipguard_fast.verdicts computes them in-process; an "extract"
request runs a whole fingerprint extraction here (worker_extraction.py). A failure is
answered with its kind: "input" (what the in-process path reports as bad input, with its
class), "memory" (the suspect ran out of memory), or "failed"; then the worker ends.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..._errors import ran_out_of_memory
from ..._files import short_error
from ..._validate import ArgumentError
from ...suspect_calls import as_output_fn
from ..formats import load_model, load_suspect
from ..weights import ModelLoadError
from . import wire, worker_extraction
from .limits import Isolation, confine

__all__ = ["LOADERS", "Job", "exec_main", "run", "serve"]

# The exception classes the in-process path reports as bad input, sent by name.
INPUT_ERRORS = (ModelLoadError, FileNotFoundError, ImportError, ValueError)
MESSAGE_LIMIT = 1000
LOADERS = {"suspect": load_suspect, "model": load_model}


@dataclass(frozen=True)
class Job:
    """What the worker is to load, and under which limits."""

    spec: str
    weights: str | None
    device: str
    isolation: Isolation
    workdir: str
    parent: int  # the verifier's process id
    load: str = "suspect"  # which loader reads the file (LOADERS)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        fields = json.loads(text)
        return cls(**{**fields, "isolation": Isolation(**fields["isolation"])})


def run(sock: socket.socket, job: Job, entry: Callable[[socket.socket, Job], int] | None = None) -> int:
    """The worker's life after start: confine, then ``entry`` (``serve``, or a test's stand-in).
    Returns the exit code."""
    try:
        confine(job.isolation, job.workdir, sock.fileno(), job.parent,
                address_space=torch.device(job.device).type != "cuda")
        torch.set_num_threads(1)  # a forked copy of torch's thread pools would hang its next parallel region
    except Exception as exc:  # noqa: BLE001 - told to the verifier, which refuses to go on
        wire.send(sock, {"ok": False, "kind": "failed", "message": f"cannot confine the worker: {short_error(exc)}"})
        return 1
    return (entry or serve)(sock, job)


def serve(sock: socket.socket, job: Job) -> int:
    """Load the model, say so, then answer every request until the channel closes; a failure ends
    the worker, but a batch the model cannot take (bad input) is answered and the next one awaited."""
    try:
        model = LOADERS[job.load](job.spec, weights=job.weights, device=job.device)
        wire.send(sock, {"ok": True, "ready": True})
        outputs = as_output_fn(model)
        while True:
            header, payload = wire.receive(sock, None, _request_size)
            if header.get("op") == worker_extraction.OP:
                worker_extraction.extract(sock, model, header)
                continue
            try:
                answer = _answer(*outputs(wire.decode_tensor(header, payload)))
            except INPUT_ERRORS as exc:
                if ran_out_of_memory(exc):
                    raise
                answer = ({**describe_failure(exc), "alive": True}, b"")   # e.g. a server's client sent bad images
            wire.send(sock, *answer)
    except wire.ChannelClosed:
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure is the verifier's to report
        wire.send(sock, describe_failure(exc))
        return 0


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The error answer for ``exc``: its kind, the class for bad input, a one-line message."""
    message = short_error(exc, limit=MESSAGE_LIMIT)
    if ran_out_of_memory(exc):
        return {"ok": False, "kind": "memory", "message": message}
    for cls in INPUT_ERRORS:
        if isinstance(exc, cls):
            named = {"argument": exc.argument} if isinstance(exc, ArgumentError) else {}
            return {"ok": False, "kind": "input", "class": cls.__name__, "message": message, **named}
    return {"ok": False, "kind": "failed", "message": f"{type(exc).__name__}: {message}"}


def _request_size(header: dict[str, Any]) -> int:
    if header.get("op") == worker_extraction.OP:
        return 0
    return wire.tensor_size(header, limit=wire.REQUEST_LIMIT)


def _answer(labels: torch.Tensor, logits: torch.Tensor | None) -> tuple[dict[str, Any], memoryview]:
    """Logits where they give the same labels and fit an answer; else the labels, with the
    logits' class count (the verifier checks it against the fingerprints', as it checks logits)."""
    if logits is not None and logits.numel() * 4 <= wire.REPLY_LIMIT and torch.equal(logits.argmax(dim=1), labels):
        header, payload = wire.tensor_message(logits)
    else:
        header, payload = wire.tensor_message(labels)
        if logits is not None:
            header["classes"] = int(logits.shape[1])
    return {"ok": True, **header}, payload


def exec_main() -> None:
    """The worker started as a fresh interpreter ("exec"): its job in argv[2], the channel on fd 3."""
    sock = socket.socket(fileno=3)
    code = 1
    try:
        code = run(sock, Job.from_json(sys.argv[2]))
    finally:
        os._exit(code)

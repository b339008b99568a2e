"""The worker process: confine itself, load the suspect's file, answer batches until the verifier hangs up.

It runs the package's own code on a hostile file, so it is the one place a parser bug or an
operator that touches files can act, and limits.confine has bounded it before the file is
opened. It answers each batch of images with the suspect's logits (float32), or its labels
(int64) where the suspect gives labels or where float32 logits would not give the same
labels, computed exactly as ipguard_fast.verdicts computes them in-process. A failure is
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
from ...verdicts import as_output_fn
from ..formats import load_suspect
from ..weights import ModelLoadError
from . import wire
from .limits import Isolation, confine

__all__ = ["Job", "exec_main", "run", "serve"]

# The exception classes the in-process path reports as bad input, sent by name.
INPUT_ERRORS = (ModelLoadError, FileNotFoundError, ImportError, ValueError)
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class Job:
    """What the worker is to load, and under which limits."""

    spec: str
    weights: str | None
    device: str
    isolation: Isolation
    workdir: str
    parent: int  # the verifier's process id

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
    """Load the suspect, say so, then answer every batch until the channel closes."""
    try:
        suspect = load_suspect(job.spec, weights=job.weights, device=job.device)
        wire.send(sock, {"ok": True, "ready": True})
        outputs = as_output_fn(suspect)
        while True:
            header, payload = wire.receive(sock, None, _request_size)
            labels, logits = outputs(wire.decode_tensor(header, payload))
            wire.send(sock, *_answer(labels, logits))
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
            return {"ok": False, "kind": "input", "class": cls.__name__, "message": message}
    return {"ok": False, "kind": "failed", "message": f"{type(exc).__name__}: {message}"}


def _request_size(header: dict[str, Any]) -> int:
    return wire.tensor_size(header, limit=wire.REQUEST_LIMIT)


def _answer(labels: torch.Tensor, logits: torch.Tensor | None) -> tuple[dict[str, Any], memoryview]:
    """Logits where they give the same labels and fit an answer; else the labels."""
    if logits is not None and logits.numel() * 4 <= wire.REPLY_LIMIT and torch.equal(logits.argmax(dim=1), labels):
        header, payload = wire.tensor_message(logits)
    else:
        header, payload = wire.tensor_message(labels)
    return {"ok": True, **header}, payload


def exec_main() -> None:
    """The worker started as a fresh interpreter ("exec"): its job in argv[2], the channel on fd 3."""
    sock = socket.socket(fileno=3)
    code = 1
    try:
        code = run(sock, Job.from_json(sys.argv[2]))
    finally:
        os._exit(code)

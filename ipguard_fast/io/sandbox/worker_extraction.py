"""Fingerprint extraction inside the worker: the search runs where the model does.

The search takes gradients with respect to the input through the model, step after step, so
the worker runs the whole extraction (ipguard_fast.search.run_extraction, the in-process code
itself) and the verifier receives, in plain sized messages (wire.py, never pickle):

* ``{"ok": true, "progress": accepted}`` after the engine's harvests (at most every
  HEARTBEAT seconds) and at each accepted fingerprint: the verifier's wall-clock deadline
  runs from one message to the next, so a model that loops inside a step is stopped while
  a long honest search is not;
* ``{"ok": true, "checkpoint": true}`` with the checkpoint file's bytes (uint8), every
  ``checkpoint_every`` seconds, for the verifier to write (the worker writes no file);
* the fingerprint set's tensors (``tensors``) and its ``meta``: the end of the extraction.

The verifier may send one message meanwhile, ``{"op": "stop"}`` (it was interrupted: Ctrl-C,
which the worker ignores): read after a harvest, it stops the search as Ctrl-C stops it
in-process, so its last checkpoint, of everything finished, goes to the verifier first.
"""
from __future__ import annotations

import dataclasses
import select
import socket
import time
import warnings
from typing import Any

import torch

from ...fingerprints import FingerprintSet
from ...search import ExtractConfig, IncompleteFingerprintsWarning, run_extraction
from . import wire

__all__ = ["FIELDS", "HEARTBEAT", "OP", "STOP", "extract"]

OP = "extract"
STOP = "stop"   # the verifier's one message during an extraction
FIELDS = tuple(field.name for field in dataclasses.fields(FingerprintSet) if field.name != "meta")
HEARTBEAT = 0.5  # seconds between progress messages at most (while the search steps)


class _Heartbeat:
    """The engine's progress bar, turned into progress messages to the verifier."""

    def __init__(self, sock: socket.socket):
        self.sock, self.accepted, self.sent = sock, 0, 0.0

    def update(self, count: int = 1) -> None:
        self.accepted += count
        self._beat(force=True)

    def set_postfix(self, *args: Any, **fields: Any) -> None:
        """After each harvest (the engine's state whole): a beat, and the verifier's stop read."""
        self._beat()
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if poller.poll(0):   # a message, or the verifier gone (then receive raises ChannelClosed)
            header, _ = wire.receive(self.sock, time.monotonic() + HEARTBEAT, lambda header: 0)
            if header.get("op") != STOP:
                raise wire.ChannelError("a request other than stop during an extraction")
            raise KeyboardInterrupt   # the engine saves its checkpoint, as on Ctrl-C in-process

    def _beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.sent >= HEARTBEAT:
            wire.send(self.sock, {"ok": True, "progress": self.accepted})
            self.sent = now


def extract(sock: socket.socket, model: torch.nn.Module, request: dict[str, Any]) -> None:
    """Run the extraction ``request`` asks for on ``model`` and send its messages; an exception is
    the worker's to report (worker.serve)."""
    config = ExtractConfig(**request["config"])

    def send_checkpoint(data: bytes) -> None:
        header, payload = wire.tensor_message(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        wire.send(sock, {"ok": True, "checkpoint": True, **header}, payload)

    with warnings.catch_warnings():   # the verifier warns, from the set it has checked
        warnings.simplefilter("ignore", IncompleteFingerprintsWarning)
        fingerprints = run_extraction(model, config, device=request.get("device"), progress=_Heartbeat(sock),
                                      checkpoint=request.get("checkpoint"),
                                      checkpoint_writer=send_checkpoint).fingerprints
    header, payload = wire.tensors_message({name: getattr(fingerprints, name) for name in FIELDS})
    wire.send(sock, {"ok": True, "meta": fingerprints.meta, **header}, payload)

"""Fingerprint extraction from a model file run by a confined worker: ``run_isolated_extraction``.

The verifier's side of worker_extraction.py. It starts a worker that loads the file as a
trainable module (io.load_model), sends the ExtractConfig, and reads the worker's messages
until the fingerprints come: progress (the bar; each one restarts the wall-clock deadline),
checkpoint bytes (written here, atomically, to the checkpoint file -- the worker writes no
file; a later run's worker reads it back and re-checks every point in it, as the
in-process path does), and the set. Everything the worker sends is sized before it is read
(from the config: n, the image shape, max_candidates) and the set is rebuilt and checked
here (FingerprintSet's own checks, then the config's n, shape and margin), so a worker that
was taken over can at worst hand back fingerprints of its own model, never run code here.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch

from ..._progress import progress_bar
from ..._validate import ArgumentError
from ...fingerprints import FingerprintSet
from ...search import ExtractConfig
from ...search.api import warn_if_incomplete
from ...search.checkpoint import write_checkpoint
from . import wire
from .limits import Isolation
from .suspect import IsolatedSuspect, SuspectFailed
from .worker_extraction import FIELDS, OP, STOP

__all__ = ["run_isolated_extraction"]

_PER_POINT = 64  # bytes per fingerprint besides its image: labels, margin, steps, index, the finished list


def run_isolated_extraction(spec: str | os.PathLike[str], config: ExtractConfig, *,
                            weights: str | os.PathLike[str] | None = None, device: str | torch.device | None = None,
                            isolation: Isolation | None = None, checkpoint: str | os.PathLike[str] | None = None,
                            progress: bool = True) -> FingerprintSet:
    """ipguard_fast.search.run_extraction's fingerprints for the model in the file ``spec`` (any
    io.load_model spec), found by a confined worker under ``isolation`` (its timeout: for loading
    the model, then between two progress messages, which come at least after every search step).

    device: where the worker computes (default: the model's, i.e. the CPU). checkpoint: resumable
    as in-process (the worker reads it; this process writes it)."""
    if not isinstance(config, ExtractConfig):
        raise ArgumentError("config", f"expected an ExtractConfig, got {type(config).__name__}")
    # The worker runs in a folder of its own: a relative checkpoint is the caller's, so it goes
    # absolute (relative, the worker found none, started afresh, and the file was replaced).
    checkpoint = None if checkpoint is None else os.path.abspath(os.fspath(checkpoint))
    request = {"op": OP, "config": dataclasses.asdict(config), "device": None if device is None else str(device),
               "checkpoint": checkpoint}
    worker = IsolatedSuspect(spec, weights=weights, device="cpu" if device is None else device, isolation=isolation,
                             load="model")
    with worker, progress_bar(config.n, "fingerprints", "fp", progress) as bar, \
            worker.conversation("while extracting fingerprints") as channel:
        channel.send(request)
        shown = 0
        try:
            while True:
                header, payload = channel.receive(lambda header: _payload_size(header, config, checkpoint))
                if "progress" in header:
                    shown = _advance(bar, shown, min(header["progress"], config.n))
                elif "checkpoint" in header:
                    write_checkpoint(checkpoint, bytes(payload))
                else:
                    fingerprints = _fingerprints(header, payload, config)
                    break
        except KeyboardInterrupt:
            if checkpoint is not None:
                _save_on_interrupt(channel, config, checkpoint)
            raise
    warn_if_incomplete(fingerprints, config, stacklevel=2)
    return fingerprints


def _save_on_interrupt(channel, config: ExtractConfig, checkpoint) -> None:
    """Ctrl-C (or SIGTERM) here: the worker, which ignores it, is asked to stop; it ends its step and
    sends the checkpoint of what has finished, written as the in-process path writes it on Ctrl-C.
    A worker that answers otherwise, fails or does not answer in time leaves the last checkpoint
    as it was (a second Ctrl-C stops waiting)."""
    try:
        channel.send({"op": STOP})
        while True:
            header, payload = channel.receive(lambda header: _payload_size(header, config, checkpoint))
            if "checkpoint" in header:
                write_checkpoint(checkpoint, bytes(payload))
                return
            if "progress" not in header:
                return   # the set came first: nothing finished is left unsaved by the last checkpoint
    except (wire.ChannelError, SuspectFailed, ValueError):
        return


def _payload_size(header: dict[str, Any], config: ExtractConfig, checkpoint) -> int:
    """The size of one of the worker's messages, bounded by what this extraction can produce."""
    image = math.prod(config.input_shape) * 4
    if "progress" in header:
        if type(header["progress"]) is not int or header["progress"] < 0:
            raise wire.ChannelError("a progress message without a count")
        return 0
    if "checkpoint" in header:
        if checkpoint is None or header.get("dtype") != "uint8" or not isinstance(header.get("shape"), list) \
                or len(header["shape"]) != 1:
            raise wire.ChannelError("a checkpoint that was not asked for or is not bytes")
        return wire.tensor_size(header, limit=config.max_candidates * (image + _PER_POINT) + wire.HEADER_LIMIT)
    return wire.tensors_size(header, FIELDS, limit=config.n * (image + _PER_POINT))


def _advance(bar, shown: int, accepted: int) -> int:
    if bar is not None and accepted > shown:
        bar.update(accepted - shown)
    return max(shown, accepted)


def _fingerprints(header: dict[str, Any], payload: bytearray, config: ExtractConfig) -> FingerprintSet:
    """The worker's set, rebuilt and checked; a ChannelError when it is not one this extraction could make."""
    meta = header.get("meta")
    try:
        fingerprints = FingerprintSet(**wire.decode_tensors(header, payload), meta=meta)
    except (ValueError, TypeError, RecursionError) as exc:
        raise wire.ChannelError(f"an invalid fingerprint set ({str(exc)[:200]})") from None
    if fingerprints.input_shape != tuple(config.input_shape) or len(fingerprints) > config.n \
            or fingerprints.requested != config.n or fingerprints.meta.get("k") != config.k:
        raise wire.ChannelError("a fingerprint set that does not fit the extraction's settings")
    return fingerprints

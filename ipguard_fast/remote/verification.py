"""verify_remote: IPGuard verification of a model reachable only through the label-only HTTP API.

``run_remote_verification(url, fingerprints, RemoteVerifyConfig(...))`` does the work;
``verify_remote(url, fingerprints, batch_size=..., ...)`` is its keyword front end.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import torch

from .._validate import ArgumentError
from ..fingerprints import FingerprintSet
from ..verdicts import Verdict, conclusive_threshold, resolve_threshold, verify
from ..verdict_threshold import above_chance, chance_rate
from .client import RemoteError, RemoteLabelModel
from .config import RemoteVerifyConfig
from .progress import ProgressFile, check_progress_path

__all__ = ["run_remote_verification", "verify_remote"]

_DEFAULTS = RemoteVerifyConfig()


def verify_remote(url: str | RemoteLabelModel, fingerprints: FingerprintSet, *,
                  batch_size: int = _DEFAULTS.batch_size, token: str | None = None,
                  progress_file: str | os.PathLike[str] | None = None,
                  key_file: str | os.PathLike[str] | None = None, threshold: float | None = None,
                  timeout: float = _DEFAULTS.timeout, retries: int = _DEFAULTS.retries,
                  backoff: float = _DEFAULTS.backoff, deadline: float | None = None,
                  on_batch: Callable[[int, int, int], None] | None = None) -> Verdict:
    """Verify the model behind ``url`` against ``fingerprints`` over the label-only HTTP API.

    A keyword front end over :class:`~ipguard_fast.remote.config.RemoteVerifyConfig`
    (``batch_size``, ``timeout``, ``retries``, ``backoff``, ``deadline``, documented there);
    the rest is passed to :func:`run_remote_verification`, which documents it. The verdict
    equals ``verdicts.verify(model, fingerprints, threshold)`` for the served model.
    """
    config = RemoteVerifyConfig(batch_size=batch_size, timeout=timeout, retries=retries, backoff=backoff,
                                deadline=deadline)
    return run_remote_verification(url, fingerprints, config, token=token, progress_file=progress_file,
                                   key_file=key_file, threshold=threshold, on_batch=on_batch)


def run_remote_verification(url: str | RemoteLabelModel, fingerprints: FingerprintSet,
                            config: RemoteVerifyConfig = _DEFAULTS, *, token: str | None = None,
                            progress_file: str | os.PathLike[str] | None = None,
                            key_file: str | os.PathLike[str] | None = None, threshold: float | None = None,
                            on_batch: Callable[[int, int, int], None] | None = None) -> Verdict:
    """Verify the model behind ``url`` as ``config`` says; the fingerprints go in batches of
    ``config.batch_size`` (batch b holds fingerprints ``[b * batch_size, (b + 1) * batch_size)``).

    Args:
        url: the server's base URL, or a configured :class:`RemoteLabelModel` (then ``token``
            and the config's ``timeout``, ``retries`` and ``backoff`` are ignored). Requests
            are split further when the server's ``/v1/health`` advertises smaller limits.
        token: the bearer token (see :class:`RemoteLabelModel`).
        progress_file: JSON file recording every answered batch, rewritten atomically after
            each one. When it exists, its batches are reused and only the missing ones are
            queried. It is tied to the fingerprints (content hash), the batch size and the
            endpoint; a file for another run, or one that is not a regular file (a FIFO, a
            device), raises :class:`ProgressFileError` before any request. Kept when the run
            completes (a rerun then queries nothing). A run cut by the deadline raises
            RemoteError with the answered batches saved here.
        key_file: the file holding the secret key that authenticates ``progress_file``
            (see :mod:`ipguard_fast.remote.keystore`). None: ``$IPGUARD_FAST_PROGRESS_KEY``,
            else ``~/.config/ipguard_fast/progress.key`` (``$XDG_CONFIG_HOME`` respected),
            created on first use. A missing key file is created atomically (mode 0600); an
            unsafe one (empty, short, not a regular file, open to others) is refused.
        threshold: as in :func:`verdicts.verify` (default: ``fingerprints.meta["threshold"]``; one at
            or below the chance rate is refused before any query;
            a file with none gives an inconclusive verdict).
        on_batch: called as ``on_batch(batch_index, batches_done, batches_total)`` after each
            batch is answered (and saved).

    Raises:
        RemoteError: the server failed (after retries) or answered something malformed; the
            batches answered so far are in ``progress_file``.
        ProgressFileError: ``progress_file`` does not belong to this run.
        ValueError: invalid arguments (an ArgumentError naming ``key_file`` for a key file that
            cannot be made or is unsafe).
    """
    if not isinstance(config, RemoteVerifyConfig):
        raise ArgumentError("config", f"must be a RemoteVerifyConfig, got {type(config).__name__}")
    if not isinstance(fingerprints, FingerprintSet):
        raise ArgumentError("fingerprints", f"must be a FingerprintSet, got {type(fingerprints).__name__}")
    if len(fingerprints) == 0:
        raise ArgumentError("fingerprints", "is empty; a matching rate needs at least one fingerprint")
    resolved = resolve_threshold(threshold, fingerprints)   # a bad threshold is refused before any query
    if threshold is None:
        conclusive_threshold(fingerprints)
    if resolved is not None and not above_chance(resolved, fingerprints):
        # verify would call it inconclusive whatever the server answers: no query is spent on it.
        name = "threshold" if threshold is not None else "fingerprints.meta['threshold']"
        raise ArgumentError(name, f"{resolved!r} is at or below the rate a model that guesses reaches "
                                  f"({chance_rate(fingerprints):.4g}, 1 / the number of classes), so no "
                                  "answer could show a copy; nothing was sent to the server")
    end = None if config.deadline is None else time.monotonic() + config.deadline
    if progress_file is not None:   # checked before any query: the first batch's answer would be lost
        check_progress_path(progress_file)
    if key_file is not None and not progress_file:
        raise ArgumentError("key_file", "authenticates a progress file: give progress_file too")

    own = not isinstance(url, RemoteLabelModel)
    model = RemoteLabelModel(url, token=token, timeout=config.timeout, retries=config.retries,
                             backoff=config.backoff, num_classes=fingerprints.num_classes) if own else url
    try:
        progress = ProgressFile(progress_file, fingerprints, config.batch_size, model.url, key_file) \
            if progress_file else None
        labels = _answers(model, fingerprints, config.batch_size, progress, end, on_batch)
    finally:
        if own:
            model.close()
    return verify(_Replay(labels), fingerprints, threshold=threshold, batch_size=len(fingerprints))


def _answers(model: RemoteLabelModel, fingerprints: FingerprintSet, batch_size: int, progress: ProgressFile | None,
             deadline: float | None, on_batch: Callable[[int, int, int], None] | None) -> torch.Tensor:
    """The server's labels for every fingerprint: saved batches reused, the others queried (and saved)."""
    num_batches = math.ceil(len(fingerprints) / batch_size)
    done = progress.load() if progress is not None else {}
    todo = [b for b in range(num_batches) if b not in done]
    if todo:
        _check_server(model, fingerprints, deadline)
    for index in todo:
        done[index] = _query_batch(model, fingerprints, index, batch_size, progress, len(done), num_batches,
                                   deadline)
        if progress is not None:
            progress.save(done)
        if on_batch is not None:
            on_batch(index, len(done), num_batches)
    return torch.tensor([label for b in range(num_batches) for label in done[b]], dtype=torch.int64)


def _query_batch(model: RemoteLabelModel, fingerprints: FingerprintSet, index: int, batch_size: int,
                 progress: ProgressFile | None, saved: int, num_batches: int, deadline: float | None) -> list[int]:
    """The server's labels for batch `index`; a failure says what is saved for a resume."""
    images = fingerprints.images[index * batch_size:(index + 1) * batch_size]
    try:
        labels = model.labels(images, deadline)
        _check_labels(labels, images.shape[0], fingerprints.num_classes, model.labels_url)
    except RemoteError as exc:
        if progress is None:
            raise
        raise RemoteError(f"{exc}; {saved}/{num_batches} batches are saved in {progress.path}: run again with the "
                          "same progress file to resume", status=exc.status, url=exc.url) from exc
    return labels.tolist()


class _Replay:
    """A suspect that answers the whole fingerprint batch with labels received earlier."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != self.labels.shape[0]:  # pragma: no cover - verify() is called with batch_size=n
            raise RuntimeError("replay called with an unexpected batch")
        return self.labels


def _check_server(model: RemoteLabelModel, fingerprints: FingerprintSet, deadline: float | None) -> None:
    """Read /v1/health: adopt the server's limits, refuse a server for other shapes or class counts."""
    try:
        info = model.configure_from_health(deadline)
    except RemoteError as exc:
        if exc.status in (404, 405):  # a label-only API without the health endpoint still works
            return
        raise
    shape = info.get("input_shape")
    if shape is not None and tuple(shape) != fingerprints.input_shape:
        raise RemoteError(f"the server takes images of shape {shape}, the fingerprints are "
                          f"{list(fingerprints.input_shape)}", url=model.health_url)
    classes = info.get("num_classes")
    if classes is not None and fingerprints.num_classes is not None and classes != fingerprints.num_classes:
        raise RemoteError(f"the server's model has {classes} classes, the fingerprints' owner model has "
                          f"{fingerprints.num_classes}", url=model.health_url)


def _check_labels(labels: Any, batch: int, num_classes: int | None, url: str) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (batch,):
        raise RemoteError(f"suspect returned {labels!r} for a batch of {batch}; expected int64 labels [{batch}]",
                          url=url)
    if batch and (int(labels.min()) < 0 or (num_classes is not None and int(labels.max()) >= num_classes)):
        raise RemoteError(f"suspect returned a label outside [0, {num_classes})", url=url)

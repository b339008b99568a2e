"""The label service behind the HTTP server, free of any HTTP: the model as a label function,
the bearer-token check, the limits, and the counters.

The HTTP side (asgi.py, served by uvicorn from server.py) parses requests and calls
into this; keeping the two apart keeps what the API means (labels only, one batch at a
time, a token compared in constant time) independent of how bytes reach it.
"""
from __future__ import annotations

import hmac
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

from .._errors import ran_out_of_memory
from .._files import short_error
from .._validate import ArgumentError
from ..io import SuspectFailed
from ..modules import device_and_dtype, eval_mode, static_batch_size
from ..suspect_calls import as_label_fn
from .config import ServeConfig
from .protocol import encode_health

__all__ = ["LabelService", "probe_num_classes"]


class LabelService:
    """What the API means, shared by every request: labels only, one batch at a time through
    the model, a bearer token compared in constant time, the counters."""

    def __init__(self, model: Any, config: ServeConfig) -> None:
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        num_classes, input_shape = config.num_classes, config.input_shape
        if num_classes is None and input_shape is not None:
            num_classes = probe_num_classes(model, tuple(input_shape))
        self.label_fn = as_label_fn(model, num_classes=num_classes)
        self.token = config.token.encode("utf-8") if config.token is not None else None
        self.max_request_bytes = config.limits.max_request_bytes
        self.max_batch = config.limits.max_batch
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.num_classes = num_classes
        self.model_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"labels_requests": 0, "labels_ok": 0, "images": 0, "client_errors": 0, "server_errors": 0,
                       "refused": 0}

    def count(self, **increments: int) -> None:
        with self._stats_lock:
            for key, value in increments.items():
                self._stats[key] += value

    def stats_snapshot(self) -> dict[str, int]:
        with self._stats_lock:
            return dict(self._stats)

    def health(self) -> dict[str, Any]:
        return encode_health(self.num_classes, self.input_shape, self.max_batch, self.max_request_bytes)

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header:
            return False
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8", "replace"), self.token)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Labels of one batch; the model runs one batch at a time."""
        with self.model_lock, torch.no_grad():
            return self.label_fn(images)


def probe_num_classes(model: Any, input_shape: tuple[int, ...]) -> int | None:
    """Run ``model`` once on zeros to read its class count (None when it returns labels)."""
    if isinstance(model, nn.Module):
        device, dtype = device_and_dtype(model)

        def forward(x: torch.Tensor) -> Any:
            with eval_mode(model):
                return model(x.to(device=device, dtype=dtype))
    else:
        forward = model
    static = static_batch_size(model)
    sizes = [static] if static is not None else [2, 1]
    error: Exception | None = None
    for size in sizes:
        try:
            with torch.no_grad():
                out = forward(torch.zeros(size, *input_shape))
            break
        except Exception as exc:  # try the next batch size
            if ran_out_of_memory(exc) or isinstance(exc, SuspectFailed):
                raise   # a resource ran out, or the model's worker failed: not a wrong input shape
            error = exc
    else:
        raise ArgumentError("input_shape", f"the model fails on a batch of zeros of shape "
                            f"[B, {', '.join(map(str, input_shape))}]: {short_error(error)}") from error
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    if out.dim() == 2 and out.is_floating_point():
        return int(out.shape[1])
    return None

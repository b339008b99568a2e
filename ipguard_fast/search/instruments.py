"""Handles on the engine for benchmarks and profilers, so they measure exactly what it runs.

- ``candidate_batch``: the engine's own candidates (x0, i, j) for given indices, so a
  peer method can solve the same ones;
- ``FullBatchStep``: one engine step on full slots, repeatable, to time against the bare
  model at the same batch, dtype and layout;
- ``bucket_sizes``: the batch sizes the engine shrinks through at the end of a run.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .candidates import CandidateSource
from .config import ExtractConfig
from .slots import Slots, bucket_sizes
from .step import SearchStep

__all__ = ["FullBatchStep", "bucket_sizes", "candidate_batch"]


def candidate_batch(model, input_shape: Sequence[int], num_classes: int, indices: Sequence[int], *,
                    device: torch.device, seed: int = 0, labels: str = "random", lo: float = 0.0, hi: float = 1.0):
    """(x0 [m, *input_shape], i [m], j [m]) on `device`: candidates `indices` of a run with this seed."""
    source = CandidateSource(model, input_shape, num_classes, "uniform", labels, seed, lo, hi, device)
    return source.make(list(indices))


class FullBatchStep:
    """One engine step on config.batch_size slots holding the candidates (x0, i, j).

    Calling it runs one step; ``reload()`` puts the candidates back at their start,
    every slot active again. The model must be frozen by the caller (modules.frozen),
    as the engine does.
    """

    def __init__(self, model, config: ExtractConfig, device: torch.device, x0, i, j):
        config = config.on_device(device)
        self.batch = config.slots(device)
        cl = config.channels_last and len(config.input_shape) == 3
        self.slots = Slots(self.batch, config.input_shape, device, channels_last=cl)
        self._candidates = (x0[: self.batch], i[: self.batch], j[: self.batch])
        self.reload()
        self.step = SearchStep.from_config(model, self.slots, config)

    def reload(self) -> None:
        positions = list(range(self.batch))
        self.slots.load(positions, positions, *self._candidates)

    def __call__(self) -> None:
        self.step()

    @property
    def active_share(self) -> float:
        return float(self.slots.active.float().mean())

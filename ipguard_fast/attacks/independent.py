"""An independent model: an architecture trained from scratch on the data, sharing nothing
with the owner but the task. What an innocent party has, so the negative of every bed."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError, finite_number, positive_int
from ..nn import seeded
from ..train import train_classifier
from .architectures import Architecture, factory_for
from .registry import Attack, AttackContext

__all__ = ["INDEPENDENT", "Independent", "train_independent"]


@dataclass(frozen=True)
class Independent:
    """`arch` ("owner": the owner's architecture with fresh weights, "generic", or a factory)
    trained from its own seeded initialisation by `optimizer` at `lr`.

    epochs: one int, or several (one run to the largest, a copy kept at each: the same
    models shorter runs with this seed give); the attack returns one model per entry."""

    arch: Architecture
    lr: float
    epochs: int | tuple[int, ...]
    optimizer: str = "adam"
    weight_decay: float = 0.0

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        finite_number("weight_decay", self.weight_decay, minimum=0.0)
        epochs = self.epoch_list()
        if not epochs or len(set(epochs)) != len(epochs):
            raise ArgumentError("epochs", f"must be distinct positive ints, got {self.epochs!r}")

    def epoch_list(self) -> tuple[int, ...]:
        values = self.epochs if isinstance(self.epochs, tuple) else (self.epochs,)
        return tuple(positive_int("epochs", e) for e in values)


def train_independent(factory: Callable[[], nn.Module], train_set: Dataset, *, seed: int, epochs: int,
                      lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
                      device: str | torch.device = "cpu", on_epoch=None) -> nn.Module:
    """A model from ``factory`` with its own seeded initialisation and batch order, trained from scratch."""
    context = AttackContext(nn.Identity(), train_set, seed, batch_size=batch_size, device=device, on_epoch=on_epoch)
    return _build(context, Independent(factory, lr, epochs, optimizer, weight_decay))[0]


def _build(ctx: AttackContext, s: Independent) -> list[nn.Module]:
    epochs = s.epoch_list()
    snapshots = {}

    def keep(epoch, model):
        if epoch in epochs and epoch != max(epochs):
            snapshots[epoch] = copy.deepcopy(model).eval()
        if ctx.on_epoch is not None:
            ctx.on_epoch(epoch, model)

    model = seeded(factory_for(s.arch, ctx), ctx.seed)
    final = train_classifier(model, ctx.data, epochs=max(epochs), lr=s.lr, batch_size=ctx.batch_size,
                             optimizer=s.optimizer, weight_decay=s.weight_decay, seed=ctx.seed, device=ctx.device,
                             on_epoch=keep)
    return [snapshots.get(e, final) for e in epochs]


def _skeleton(ctx: AttackContext, s: Independent) -> nn.Module:
    # A plain copy for the owner's architecture: a skeleton only receives weights, and a
    # fresh draw would consume the caller's RNG.
    return ctx.owner_copy() if s.arch == "owner" else factory_for(s.arch, ctx)()


INDEPENDENT = Attack("independent", Independent, _build, skeleton=_skeleton,
                     outputs=lambda s: tuple(f"-e{e}" for e in s.epoch_list()))

"""An independent model: an architecture trained from scratch on the data, sharing nothing
with the owner but the task. What an innocent party has, so the negative of every bed.

Independent models that decide a verdict are the ones trained as hard as the owner: they
converge to functions close to the owner's and share some of its boundary points. So an
independent reference can train until its held-out accuracy reaches the owner's
(`match_owner`), the epochs then being a cap, rather than for a fixed short budget that
leaves it weaker than any real competitor.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from .._validate import ArgumentError, finite_number, positive_int
from ..nn import seeded
from ..train import TrainRecipe, accuracy, mean_loss, train_model
from .architectures import Architecture, factory_for
from .registry import Attack, AttackContext

__all__ = ["INDEPENDENT", "Independent", "train_independent"]

# match_owner: stop once held-out accuracy is within this of the owner's there...
MATCH_TOLERANCE = 0.005
# ...or once it has not improved for this many epochs (converged: as strong as the recipe gets).
MATCH_PATIENCE = 5
# until_converged: the training loss, on up to FIT_SAMPLE items, has not fallen by this
# fraction for MATCH_PATIENCE epochs.
LOSS_GAIN = 0.01
FIT_SAMPLE = 2000


@dataclass(frozen=True)
class Independent:
    """`arch` ("owner": the owner's architecture with fresh weights, "generic", or a factory)
    trained from its own seeded initialisation by `optimizer` ("adam" or "sgd" with
    `momentum`) at `lr` with `weight_decay`, batches of `batch_size` (None: the context's),
    with random shifts when `augment`.

    epochs: one int, or several (one run to the largest, a copy kept at each: the same
    models shorter runs with this seed give); the attack returns one model per entry.
    match_owner: the largest entry is a cap; the run stops once accuracy on the context's
    holdout reaches the owner's there (or stops improving), and that model is the last one
    returned ("-matched"). until_converged: `epochs` is a cap; the run stops once its
    training loss (on up to FIT_SAMPLE items of its data) has not improved by a relative
    LOSS_GAIN for MATCH_PATIENCE epochs: what a party that trains to the end has."""

    arch: Architecture
    lr: float
    epochs: int | tuple[int, ...]
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    batch_size: int | None = None
    augment: bool = False
    match_owner: bool = False
    until_converged: bool = False

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        finite_number("weight_decay", self.weight_decay, minimum=0.0)
        finite_number("momentum", self.momentum, minimum=0.0)
        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)
        epochs = self.epoch_list()
        if not epochs or len(set(epochs)) != len(epochs):
            raise ArgumentError("epochs", f"must be distinct positive ints, got {self.epochs!r}")
        if self.match_owner and epochs[-1] != max(epochs):
            raise ArgumentError("epochs", f"with match_owner the cap comes last, got {self.epochs!r}")
        if self.until_converged and (self.match_owner or len(epochs) > 1):
            raise ArgumentError("until_converged", "takes one epochs cap and no match_owner (one stopping rule)")

    def epoch_list(self) -> tuple[int, ...]:
        values = self.epochs if isinstance(self.epochs, tuple) else (self.epochs,)
        return tuple(positive_int("epochs", e) for e in values)

    def recipe(self, batch_size: int) -> TrainRecipe:
        return TrainRecipe(epochs=max(self.epoch_list()), lr=self.lr, batch_size=self.batch_size or batch_size,
                           optimizer=self.optimizer, weight_decay=self.weight_decay, momentum=self.momentum,
                           augment=self.augment)

    def labels(self) -> tuple[str, ...]:
        """The name suffix of each returned model."""
        epochs = self.epoch_list()
        if self.match_owner:
            return tuple(f"-e{e}" for e in epochs[:-1]) + ("-matched",)
        return tuple(f"-e{e}" for e in epochs)


def train_independent(factory: Callable[[], nn.Module], train_set: Dataset, *, seed: int, epochs: int,
                      lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
                      device: str | torch.device = "cpu", on_epoch=None) -> nn.Module:
    """A model from ``factory`` with its own seeded initialisation and batch order, trained from scratch."""
    context = AttackContext(nn.Identity(), train_set, seed, batch_size=batch_size, device=device, on_epoch=on_epoch)
    return _build(context, Independent(factory, lr, epochs, optimizer, weight_decay))[0]


class _OwnerMatch:
    """The stopping rule of match_owner: True once held-out accuracy reaches the owner's
    (within MATCH_TOLERANCE) or has not improved for MATCH_PATIENCE epochs."""

    def __init__(self, ctx: AttackContext):
        if ctx.holdout is None or len(ctx.holdout) == 0:
            raise ArgumentError("holdout", "Independent(match_owner=True) measures held-out accuracy: give the "
                                           "context held-out data (AttackContext.holdout)")
        self.holdout = ctx.holdout
        self.target = accuracy(ctx.owner, ctx.holdout) - MATCH_TOLERANCE
        self.best, self.stale = -1.0, 0

    def __call__(self, model: nn.Module) -> bool:
        held = accuracy(model, self.holdout)
        if held >= self.target:
            return True
        self.best, self.stale = (held, 0) if held > self.best else (self.best, self.stale + 1)
        return self.stale >= MATCH_PATIENCE


class _Converged:
    """The stopping rule of until_converged: True once the training loss has not improved
    by a relative LOSS_GAIN for MATCH_PATIENCE epochs."""

    def __init__(self, ctx: AttackContext):
        count = min(FIT_SAMPLE, len(ctx.data))
        # A TensorDataset's first items as one (views): batches sliced, not collated item by
        # item -- the same items in the same batches, so the same losses, at less cost
        # (measured every epoch, this was a sixth of the rule's time on the digits owner).
        self.sample = (TensorDataset(*(t[:count] for t in ctx.data.tensors)) if isinstance(ctx.data, TensorDataset)
                       else Subset(ctx.data, range(count)))
        self.best, self.stale = float("inf"), 0

    def __call__(self, model: nn.Module) -> bool:
        loss = mean_loss(model, self.sample)
        self.best, self.stale = (loss, 0) if loss < self.best * (1 - LOSS_GAIN) else (self.best, self.stale + 1)
        return self.stale >= MATCH_PATIENCE


def _build(ctx: AttackContext, s: Independent) -> list[nn.Module]:
    epochs = s.epoch_list()
    earlier = epochs[:-1] if s.match_owner else tuple(e for e in epochs if e != max(epochs))
    stop = _OwnerMatch(ctx) if s.match_owner else _Converged(ctx) if s.until_converged else None
    snapshots = {}

    def after_epoch(epoch, model):
        if epoch in earlier:
            snapshots[epoch] = copy.deepcopy(model).eval()
        if ctx.on_epoch is not None:
            ctx.on_epoch(epoch, model)
        return stop is not None and stop(model)

    model = seeded(factory_for(s.arch, ctx), ctx.seed)
    final = train_model(model, ctx.data, s.recipe(ctx.batch_size), seed=ctx.seed, device=ctx.device,
                        on_epoch=after_epoch)
    # The cap (match_owner) is never a snapshot; a run stopped before an earlier snapshot's
    # epoch gives its final model there too.
    return [snapshots.get(e, final) for e in epochs]


def _skeleton(ctx: AttackContext, s: Independent) -> nn.Module:
    # A plain copy for the owner's architecture: a skeleton only receives weights, and a
    # fresh draw would consume the caller's RNG.
    return ctx.owner_copy() if s.arch == "owner" else factory_for(s.arch, ctx)()


INDEPENDENT = Attack("independent", Independent, _build, skeleton=_skeleton, outputs=lambda s: s.labels())

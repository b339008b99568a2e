"""Knowledge distillation: a student trained on the owner's soft labels of the attacker's data."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .._validate import finite_number, positive_int
from ..nn import seeded
from ..train import train_classifier
from .architectures import Architecture, factory_for
from .registry import Attack, AttackContext

__all__ = ["DISTILL", "Distill", "distill"]


@dataclass(frozen=True)
class Distill:
    """A `student` ("owner": the owner's architecture re-drawn, "generic", or a factory)
    trained by Adam at `lr` for `epochs` on the owner's logits (T = 4).

    precompute_teacher: run the owner once over a TensorDataset and train on those logits
    instead of on every batch of every epoch: the same targets up to float rounding, a
    fraction of the teacher's cost."""

    lr: float
    epochs: int
    student: Architecture = "owner"
    precompute_teacher: bool = False

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        positive_int("epochs", self.epochs)


def distill(owner: nn.Module, train_set: Dataset, factory: Callable[[], nn.Module], *, epochs: int, lr: float,
            seed: int, batch_size: int = 64, device: str | torch.device = "cpu",
            precompute_teacher: bool = False) -> nn.Module:
    """A student from ``factory`` (initialised under ``seed``) trained on the owner's soft labels."""
    context = AttackContext(owner, train_set, seed, batch_size=batch_size, device=device)
    return _build(context, Distill(lr, epochs, factory, precompute_teacher))[0]


def _build(ctx: AttackContext, s: Distill) -> list[nn.Module]:
    # A private teacher copy: training only reads it, but this way even its train/eval
    # flag and device stay untouched on the caller's owner.
    teacher = copy.deepcopy(ctx.owner).eval().to(ctx.device)
    student = seeded(factory_for(s.student, ctx), ctx.seed)
    common = dict(epochs=s.epochs, lr=s.lr, seed=ctx.seed, batch_size=ctx.batch_size, device=ctx.device)
    if s.precompute_teacher and isinstance(ctx.data, TensorDataset):
        images = ctx.data.tensors[0]
        with torch.no_grad():
            logits = torch.cat([teacher(images[i:i + 512].to(ctx.device)).float().cpu()
                                for i in range(0, len(images), 512)])
        return [train_classifier(student, TensorDataset(images, logits), loss="soft", **common)]
    return [train_classifier(student, ctx.data, loss="kd", teacher=teacher, **common)]


DISTILL = Attack("distill", Distill, _build,
                 skeleton=lambda ctx, s: ctx.owner_copy() if s.student == "owner" else factory_for(s.student, ctx)())

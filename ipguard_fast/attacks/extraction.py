"""Model extraction: a student of the attacker's choice trained on the owner's answers to
the attacker's own data -- its top-1 labels (a label-only API) or its probabilities --
never on the owner's training data. The field's hardest positive for boundary
fingerprints (CAE, SAC, DeepJudge): the student copies the function, not the weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import TensorDataset

from .._validate import ArgumentError, finite_number, positive_int
from ..nn import seeded
from ..train import TrainRecipe, train_model
from .architectures import Architecture, factory_for
from .registry import Attack, AttackContext

__all__ = ["EXTRACTION", "Extraction", "owner_answers"]

ANSWERS = ("labels", "probabilities")


@dataclass(frozen=True)
class Extraction:
    """A `student` ("owner": the owner's architecture re-drawn, "generic", or a factory)
    trained by Adam at `lr` for `epochs` on the owner's `answers` ("labels": top-1, a
    label-only API; "probabilities": its softmax) of the attacker's data (the context's)."""

    lr: float = 1e-3
    epochs: int = 10
    student: Architecture = "generic"
    answers: str = "labels"

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        positive_int("epochs", self.epochs)
        if self.answers not in ANSWERS:
            raise ArgumentError("answers", f"expected one of {ANSWERS}, got {self.answers!r}")


@torch.no_grad()
def owner_answers(owner: nn.Module, images: torch.Tensor, answers: str, device, batch_size: int = 512) -> torch.Tensor:
    """What the owner's API returns for `images`: int64 labels or float probabilities."""
    import copy

    teacher = copy.deepcopy(owner).eval().to(device)   # the caller's owner keeps its device and flags
    logits = torch.cat([teacher(images[i:i + batch_size].to(device)).float().cpu()
                        for i in range(0, len(images), batch_size)])
    return logits.argmax(1) if answers == "labels" else logits.softmax(1)


def _images(data) -> torch.Tensor:
    if isinstance(data, TensorDataset):
        return data.tensors[0]
    return torch.stack([torch.as_tensor(data[i][0]).float() for i in range(len(data))])


def _build(ctx: AttackContext, s: Extraction) -> list[nn.Module]:
    images = _images(ctx.data)
    targets = owner_answers(ctx.owner, images, s.answers, ctx.device)
    student = seeded(factory_for(s.student, ctx), ctx.seed)
    # Probabilities train through the soft loss at T = 1: KL to the owner's softmax.
    recipe = TrainRecipe(epochs=s.epochs, lr=s.lr, batch_size=ctx.batch_size,
                         loss="ce" if s.answers == "labels" else "soft", temperature=1.0)
    soft_targets = targets if s.answers == "labels" else targets.clamp_min(1e-12).log()
    return [train_model(student, TensorDataset(images, soft_targets), recipe, seed=ctx.seed, device=ctx.device,
                        on_epoch=ctx.on_epoch)]


EXTRACTION = Attack("extraction", Extraction, _build,
                    skeleton=lambda ctx, s: ctx.owner_copy() if s.student == "owner" else factory_for(s.student, ctx)())

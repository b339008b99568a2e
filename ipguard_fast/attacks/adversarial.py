"""Adversarial fine-tuning of a copy: a few epochs of PGD adversarial training (Madry et al.),
which moves decision boundaries and so erases boundary fingerprints in published measurements."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import finite_number, positive_int
from ..modules import eval_mode
from ..train import TrainRecipe, train_model
from .registry import Attack, AttackContext

__all__ = ["ADVERSARIAL_FINE_TUNE", "AdversarialFineTune", "pgd"]


@dataclass(frozen=True)
class AdversarialFineTune:
    """Adam at `lr` for `epochs` on PGD examples: L-inf radius `eps`, `steps` steps of
    `step_size`, from a uniform start in the ball, in the [0, 1] pixel box."""

    lr: float = 1e-3
    epochs: int = 2
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 5

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        positive_int("epochs", self.epochs)
        finite_number("eps", self.eps, positive=True)
        finite_number("step_size", self.step_size, positive=True)
        positive_int("steps", self.steps)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: AdversarialFineTune) -> torch.Tensor:
    """The PGD examples of batch (x, y) against `model`, found in eval mode (batch-norm
    statistics untouched); parameter gradients are never computed."""
    with eval_mode(model):
        adv = (x + torch.empty_like(x).uniform_(-s.eps, s.eps)).clamp(0, 1)
        for _ in range(s.steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + s.step_size * grad.sign()
            adv = torch.min(torch.max(adv, x - s.eps), x + s.eps).clamp(0, 1)
    return adv.detach()


def _build(ctx: AttackContext, s: AdversarialFineTune) -> list[nn.Module]:
    recipe = TrainRecipe(epochs=s.epochs, lr=s.lr, batch_size=ctx.batch_size)
    return [train_model(ctx.owner_copy(), ctx.data, recipe, seed=ctx.seed, device=ctx.device,
                        on_epoch=ctx.on_epoch, perturb=lambda model, x, y: pgd(model, x, y, s))]


ADVERSARIAL_FINE_TUNE = Attack("adversarial-fine-tune", AdversarialFineTune, _build)

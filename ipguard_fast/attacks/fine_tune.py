"""Fine-tuning a copy: FTLL / FTAL (the last / all layers) and RTLL / RTAL (the same after
re-drawing the last layer), the paper's four fine-tuning attacks in one."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset

from .._validate import finite_number, positive_int
from ..nn import last_layer, reinitialize
from ..train import train_classifier
from .registry import Attack, AttackContext

__all__ = ["FINE_TUNE", "FineTune", "fine_tune"]


@dataclass(frozen=True)
class FineTune:
    """Adam at `lr` for `epochs`; `last_only`: train only the Linear head; `reinit_last`: re-draw it first."""

    lr: float
    epochs: int
    last_only: bool = False
    reinit_last: bool = False

    def __post_init__(self):
        finite_number("lr", self.lr, positive=True)
        positive_int("epochs", self.epochs)


def fine_tune(owner: nn.Module, train_set: Dataset, *, lr: float, epochs: int, seed: int, reinit_last: bool = False,
              last_only: bool = False, batch_size: int = 64, device="cpu", on_epoch=None) -> nn.Module:
    """One fine-tuned copy of ``owner`` (never modified); the head re-drawn and the batches
    ordered by ``seed``."""
    return _build(AttackContext(owner, train_set, seed, batch_size=batch_size, device=device, on_epoch=on_epoch),
                  FineTune(lr, epochs, last_only, reinit_last))[0]


def _build(ctx: AttackContext, s: FineTune) -> list[nn.Module]:
    model = ctx.owner_copy()
    head = last_layer(model)
    if s.reinit_last:
        reinitialize(head, ctx.seed)
    params = list(head.parameters()) if s.last_only else None
    return [train_classifier(model, ctx.data, epochs=s.epochs, lr=s.lr, seed=ctx.seed, params=params,
                             batch_size=ctx.batch_size, device=ctx.device, on_epoch=ctx.on_epoch)]


FINE_TUNE = Attack("fine-tune", FineTune, _build, needs=("head",))

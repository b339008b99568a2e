"""Test beds: which suspects judge a fingerprint. A bed is the positive grid (short or wide)
plus the independent models (architectures and how they are trained).

* demo: the short attack grid; independents trained briefly (5 epochs, Adam 1e-3).
* hard: the wide grid (RTAL for 10 epochs, 80 % pruning with fine-tuning, 30-epoch
  distillation) and independents trained like the owner, over several architectures: the
  ones that decide a verdict. For the embedded digits the owner's recipe and five
  architectures are known (models.digits); for other data the caller gives the owner's
  epochs and learning rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from .._validate import ArgumentError, finite_number, positive_int
from ..models import DIGITS_ARCHITECTURES, DIGITS_EPOCHS, DIGITS_HARD_ARCHITECTURES, DIGITS_LR, build_model
from .suspects import Suspect, build_suspects

__all__ = ["BEDS", "Bed", "check_bed", "make_bed"]

BEDS = ("demo", "hard")
_DEMO_EPOCHS, _DEMO_LR = 5, 1e-3


@dataclass(frozen=True)
class Bed:
    """wide_grid: the wide positive grid; negatives: architecture name -> factory, each
    trained at negative_lr for negative_epochs with the independents' seeds;
    small_factory: the student of "distill-small" (None: not built)."""

    name: str
    wide_grid: bool
    negatives: Mapping[str, Callable[[], nn.Module]]
    negative_epochs: int
    negative_lr: float
    small_factory: Callable[[], nn.Module] | None = None

    def suspects(self, owner: nn.Module, train_set: Dataset, *, seed: int = 0,
                 negative_seeds: Sequence[int] | None = None, log=print) -> list[Suspect]:
        """The bed's positives (copies of `owner`) and negatives, all seeded from `seed`."""
        return build_suspects(owner, train_set, negative_factories=self.negatives,
                              negative_epochs=self.negative_epochs, negative_seeds=negative_seeds,
                              negative_lr=self.negative_lr, small_factory=self.small_factory, seed=seed,
                              quick=not self.wide_grid, log=log)


def check_bed(name: str) -> str:
    """`name` if it is a bed's."""
    if name not in BEDS:
        raise ArgumentError("bed", f"expected one of {BEDS}, got {name!r}")
    return name


def make_bed(name: str, *, digits: bool, input_shape: Sequence[int], num_classes: int,
             architectures: Sequence[str] | None = None, negative_epochs: int | None = None,
             negative_lr: float | None = None, full: bool = False,
             small_factory: Callable[[], nn.Module] | None = None) -> Bed:
    """The bed `name` for an owner of `input_shape` and `num_classes` (digits: the embedded
    digits data, whose owner recipe and architectures are known). architectures: model
    registry names of the independents (default: the digits CNN and MLP; the hard digits
    bed: its five). full: the wide grid on the demo bed too."""
    hard = check_bed(name) == "hard"
    names = list(architectures) if architectures is not None else None
    if names is None and digits:
        factories = dict(DIGITS_HARD_ARCHITECTURES if hard else DIGITS_ARCHITECTURES)
    else:
        names = names if names is not None else ["digits_cnn", "digits_mlp"]
        factories = {n: (lambda n=n: build_model(n, num_classes, tuple(input_shape))) for n in names}
    if hard and not digits and (negative_epochs is None or negative_lr is None):
        raise ArgumentError("negative_lr" if negative_lr is None else "negative_epochs",
                            "the hard bed trains the independents like the owner: give the owner's epochs and "
                            "learning rate")
    default_epochs, default_lr = (DIGITS_EPOCHS, DIGITS_LR) if hard else (_DEMO_EPOCHS, _DEMO_LR)
    epochs = positive_int("negative_epochs", default_epochs if negative_epochs is None else negative_epochs)
    lr = finite_number("negative_lr", default_lr if negative_lr is None else negative_lr, positive=True)
    return Bed(name, hard or full, factories, epochs, lr, small_factory)

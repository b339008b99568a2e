"""Positive and negative suspect models for evaluating a fingerprint.

Positives are post-processed copies of the owner -- what a model thief would
deploy -- and should still agree with the owner on the fingerprints:
fine-tuning (FTLL, FTAL), retraining a re-initialised last layer (RTLL,
RTAL), magnitude pruning, int8 / float16 quantisation and knowledge
distillation. Negatives are independently trained models and should not.

Every positive is built from a deep copy, so the owner is never modified,
and every training step is seeded, so the whole list is reproducible. The
single-model builders (fine_tune, distill, train_independent) are what
ipguard_fast.selection builds its reference models with, under its own seeds:
every seed the evaluation uses is below EVALUATION_SEED_LIMIT, every seed of the
selection's at or above it, so an evaluated suspect is never a reference.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ..nn import last_layer, reinitialize, seeded
from ..train import train_classifier
from .attacks import HalfPrecision, prune_model, quantize_int8

__all__ = ["EVALUATION_SEED_LIMIT", "FAMILIES", "Suspect", "distill", "fine_tune", "independent_seeds",
           "negative_suspects", "positive_suspects", "train_independent"]

# The evaluation's seeds (per-attack sub-seeds, independents' seeds) all lie below this;
# ipguard_fast.selection draws its references' seeds from [2**62, 2**63).
EVALUATION_SEED_LIMIT = 2**62

FAMILIES = ("FTLL", "FTAL", "RTLL", "RTAL", "prune", "quant-int8", "fp16", "distill", "distill-small")
_ROLES = ("positive", "negative")


@dataclass
class Suspect:
    """A model to test against the owner's fingerprints.

    ``name`` is unique within a list (e.g. ``"FTAL-lr0.001-e3"``), ``family``
    groups variants of one attack (one of :data:`FAMILIES` for positives,
    ``"independent-<arch>"`` for negatives), ``role`` is the ground truth.
    """

    name: str
    family: str
    role: str
    model: nn.Module = field(repr=False)

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ValueError(f"role: must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model: must be an nn.Module, got {type(self.model).__name__}")


@dataclass(frozen=True)
class _Settings:
    """(learning rate, epochs) grids per attack; Adam throughout."""

    ftll: tuple[tuple[float, int], ...]
    ftal: tuple[tuple[float, int], ...]
    rtll: tuple[tuple[float, int], ...]
    rtal: tuple[tuple[float, int], ...]
    prune_rates: tuple[float, ...]
    prune_finetune_epochs: int
    distill_epochs: int
    distill_lr: float


# quick: the whole list takes ~6-8 s for DigitsCNN on 2 CPU cores; still spans
# a gentle and an aggressive setting per fine-tuning attack.
_QUICK = _Settings(
    ftll=((1e-3, 3), (1e-2, 3)),
    ftal=((1e-4, 3), (1e-3, 3)),
    rtll=((1e-2, 5),),
    rtal=((1e-3, 5),),
    prune_rates=(0.2, 0.4, 0.6, 0.8),
    prune_finetune_epochs=0,
    distill_epochs=10,
    distill_lr=1e-3,
)
_FULL = _Settings(
    ftll=((1e-4, 10), (1e-3, 10), (1e-2, 10)),
    ftal=((1e-5, 10), (1e-4, 10), (1e-3, 10)),
    rtll=((1e-3, 10), (1e-2, 10)),
    rtal=((1e-4, 10), (1e-3, 10)),
    prune_rates=(0.2, 0.4, 0.6, 0.8),
    prune_finetune_epochs=2,
    distill_epochs=30,
    distill_lr=1e-3,
)


def positive_suspects(owner: nn.Module, train_set: Dataset, *, seed: int = 0, quick: bool = True,
                      student_factory: Callable[[], nn.Module] | None = None,
                      small_factory: Callable[[], nn.Module] | None = None, families: Iterable[str] | None = None,
                      batch_size: int = 64, device: str | torch.device = "cpu") -> list[Suspect]:
    """Post-processed copies of ``owner`` (never modified), all in eval mode.

    ``train_set`` is the data the attacker fine-tunes/distils on (labels are
    ignored for distillation, which uses the owner's soft labels).
    ``student_factory`` builds the same-architecture distillation student
    (default: a re-initialised deep copy of the owner); ``small_factory`` a
    smaller one for "distill-small" (default None: skipped). ``families``
    restricts which attacks are built (default: all of :data:`FAMILIES`).
    ``quick`` picks a short grid of settings; ``quick=False`` a wider one.
    """
    if not isinstance(owner, nn.Module):
        raise ValueError(f"owner: must be an nn.Module, got {type(owner).__name__}")
    if len(train_set) == 0:
        raise ValueError("train_set: must not be empty")
    wanted = set(FAMILIES if families is None else families)
    unknown = wanted - set(FAMILIES)
    if unknown:
        raise ValueError(f"families: has unknown entries {sorted(unknown)}; choose from {FAMILIES}")
    settings = _QUICK if quick else _FULL
    train_kw = dict(batch_size=batch_size, device=device)
    models = _fine_tuned(owner, train_set, settings, wanted, seed, train_kw)
    models += _compressed(owner, train_set, settings, wanted, seed, train_kw)
    students = []
    if "distill" in wanted:
        students.append(("distill", student_factory or _fresh_copy_factory(owner)))
    if "distill-small" in wanted and small_factory is not None:
        students.append(("distill-small", small_factory))
    models += _distilled(owner, train_set, settings, students, seed, train_kw)
    return [Suspect(name, family, "positive", model.eval()) for name, family, model in models]


def _fine_tuned(owner, train_set, settings: _Settings, wanted, seed, train_kw) -> list[tuple[str, str, nn.Module]]:
    """FTLL / FTAL (fine-tune the last / all layers) and RTLL / RTAL (the same after
    re-initialising the last layer), over each family's (lr, epochs) grid."""
    out = []
    for family, grid, reinit_last, last_only in (
        ("FTLL", settings.ftll, False, True),
        ("FTAL", settings.ftal, False, False),
        ("RTLL", settings.rtll, True, True),
        ("RTAL", settings.rtal, True, False),
    ):
        if family not in wanted:
            continue
        for lr, epochs in grid:
            name = f"{family}-lr{lr:g}-e{epochs}"
            model = fine_tune(owner, train_set, lr=lr, epochs=epochs, seed=_sub_seed(seed, name),
                              reinit_last=reinit_last, last_only=last_only, **train_kw)
            out.append((name, family, model))
    return out


def fine_tune(owner: nn.Module, train_set: Dataset, *, lr: float, epochs: int, seed: int, reinit_last: bool = False,
              last_only: bool = False, batch_size: int = 64, device: str | torch.device = "cpu",
              on_epoch=None) -> nn.Module:
    """One fine-tuned copy of ``owner``: FTLL (last_only), FTAL, RTLL (reinit_last and
    last_only) or RTAL (reinit_last); the head re-drawn and the batches ordered by ``seed``."""
    model = copy.deepcopy(owner)
    head = last_layer(model)
    if reinit_last:
        reinitialize(head, seed)
    params = list(head.parameters()) if last_only else None
    return train_classifier(model, train_set, epochs=epochs, lr=lr, seed=seed, params=params, batch_size=batch_size,
                            device=device, on_epoch=on_epoch)


def _compressed(owner, train_set, settings: _Settings, wanted, seed, train_kw) -> list[tuple[str, str, nn.Module]]:
    """Magnitude pruning at each rate, int8 and float16 quantisation."""
    out = []
    if "prune" in wanted:
        for rate in settings.prune_rates:
            name = f"prune-{round(rate * 100)}"
            model = prune_model(copy.deepcopy(owner), rate,
                                finetune_set=train_set if settings.prune_finetune_epochs else None,
                                finetune_epochs=settings.prune_finetune_epochs, seed=_sub_seed(seed, name),
                                **train_kw)
            out.append((name, "prune", model))
    if "quant-int8" in wanted:
        out.append(("quant-int8", "quant-int8", quantize_int8(copy.deepcopy(owner))))
    if "fp16" in wanted:
        out.append(("fp16", "fp16", HalfPrecision(owner)))
    return out


def _distilled(owner, train_set, settings: _Settings, students, seed, train_kw) -> list[tuple[str, str, nn.Module]]:
    """Students trained on the owner's soft labels, one per (name, factory)."""
    if not students:
        return []
    out = []
    for name, factory in students:
        student = distill(owner, train_set, factory, epochs=settings.distill_epochs, lr=settings.distill_lr,
                          seed=_sub_seed(seed, name), **train_kw)
        out.append((name, name, student))
    return out


def distill(owner: nn.Module, train_set: Dataset, factory: Callable[[], nn.Module], *, epochs: int, lr: float,
            seed: int, batch_size: int = 64, device: str | torch.device = "cpu",
            precompute_teacher: bool = False) -> nn.Module:
    """A student from ``factory`` (initialised under ``seed``) trained on the owner's soft labels.

    precompute_teacher: run the owner once over a TensorDataset and train on those logits
    (loss "soft") instead of on every batch of every epoch: the same targets up to float
    rounding, a fraction of the teacher's cost (the evaluation keeps the per-batch teacher).
    """
    # A private teacher copy: training only reads it, but this way even
    # its train/eval flag and device stay untouched on the caller's owner.
    teacher = copy.deepcopy(owner).eval()
    student = seeded(factory, seed)
    if precompute_teacher and isinstance(train_set, TensorDataset):
        images = train_set.tensors[0]
        with torch.no_grad():
            teacher.to(device)
            logits = torch.cat([teacher(images[i:i + 512].to(device)).float().cpu()
                                for i in range(0, len(images), 512)])
        return train_classifier(student, TensorDataset(images, logits), epochs=epochs, lr=lr, seed=seed, loss="soft",
                                batch_size=batch_size, device=device)
    return train_classifier(student, train_set, epochs=epochs, lr=lr, seed=seed, loss="kd", teacher=teacher,
                            batch_size=batch_size, device=device)


def independent_seeds(owner_seed: int, count: int = 3) -> tuple[int, ...]:
    """The `count` seeds after the owner's, (1, 2, 3) for seed 0: never the owner's own."""
    return tuple((int(owner_seed) + i) % EVALUATION_SEED_LIMIT for i in range(1, count + 1))


def negative_suspects(train_set: Dataset, factories: Mapping[str, Callable[[], nn.Module]], *,
                      seeds: Sequence[int] = independent_seeds(0), epochs: int, lr: float = 1e-3,
                      batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
                      device: str | torch.device = "cpu") -> list[Suspect]:
    """Independently trained models: every architecture in ``factories`` x every seed.

    Each gets its own seeded initialisation and batch order. The owner must
    have been trained with a seed not in ``seeds`` (the default, (1, 2, 3), suits
    an owner of seed 0), otherwise a "negative" of the owner's architecture
    starts from the owner's own weights.
    Family names are ``"independent-<key>"``; names add ``"-seed<s>"``.
    """
    if not factories:
        raise ValueError("factories: must map at least one architecture name to a model factory")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds: must contain at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: must be distinct, got {seeds}")
    if any(not 0 <= int(s) < EVALUATION_SEED_LIMIT for s in seeds):
        raise ValueError(f"seeds: must lie in [0, 2**62) (larger seeds belong to the selection's references), "
                         f"got {seeds}")
    if len(train_set) == 0:
        raise ValueError("train_set: must not be empty")
    out: list[Suspect] = []
    for arch, factory in factories.items():
        if not callable(factory):
            raise ValueError(f"factories[{arch!r}]: must be callable, got {type(factory).__name__}")
        for s in seeds:
            model = train_independent(factory, train_set, seed=s, epochs=epochs, lr=lr, batch_size=batch_size,
                                      optimizer=optimizer, weight_decay=weight_decay, device=device)
            out.append(Suspect(f"independent-{arch}-seed{s}", f"independent-{arch}", "negative", model))
    return out


def train_independent(factory: Callable[[], nn.Module], train_set: Dataset, *, seed: int, epochs: int,
                      lr: float = 1e-3, batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
                      device: str | torch.device = "cpu", on_epoch=None) -> nn.Module:
    """A model from ``factory`` with its own seeded initialisation and batch order, trained from scratch."""
    model = seeded(factory, seed)
    return train_classifier(model, train_set, epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                            weight_decay=weight_decay, seed=seed, device=device, on_epoch=on_epoch)


def _fresh_copy_factory(owner: nn.Module) -> Callable[[], nn.Module]:
    """A factory for an untrained model of the owner's architecture."""

    def make() -> nn.Module:
        student = copy.deepcopy(owner)
        # The RNG is already seeded by `seeded`; draw fresh weights from it.
        reinitialize(student, int(torch.randint(0, 2**31 - 1, ())))
        return student

    return make


def _sub_seed(seed: int, name: str) -> int:
    """A per-variant seed: stable across runs (unlike hash()), distinct per name, and below
    EVALUATION_SEED_LIMIT (the same value as before for every seed below ~4.6e12)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % EVALUATION_SEED_LIMIT

"""Post-processing attacks, one registry: every attack is at once an evaluation suspect
family and a protect() reference kind.

An attack is one small module: a settings dataclass, a build function and an `Attack`
record (registry.py). Add one by writing its module and adding its record to ATTACKS
below; `run_attack(name, settings, context)` then builds it for the evaluation's beds
and for protect()'s recipe alike.
"""
from __future__ import annotations

from torch import nn

from .._validate import ArgumentError
from .adversarial import ADVERSARIAL_FINE_TUNE, AdversarialFineTune, pgd
from .architectures import fresh_copy_factory
from .distill import DISTILL, Distill, distill
from .extraction import EXTRACTION, Extraction, owner_answers
from .fine_tune import FINE_TUNE, FineTune, fine_tune
from .independent import INDEPENDENT, Independent, train_independent
from .preprocess import PREPROCESS, Preprocess, Preprocessed, transform
from .prune import PRUNE, WEIGHT_LAYERS, Prune, prune_model, weight_sparsity
from .quantize import HALF, QUANTIZE, Half, HalfPrecision, Quantize, quantize_int8, quantize_weights
from .registry import Attack, AttackContext, applicable, owner_needs
from .seeds import EVALUATION_SEED_LIMIT, evaluation_seed, independent_seeds, reference_seed

__all__ = ["ATTACKS", "AdversarialFineTune", "Attack", "AttackContext", "Distill", "EVALUATION_SEED_LIMIT",
           "Extraction", "FineTune", "Half", "HalfPrecision", "Independent", "Preprocess", "Preprocessed", "Prune",
           "Quantize", "WEIGHT_LAYERS", "applicable", "distill", "owner_answers", "transform", "evaluation_seed", "fine_tune", "fresh_copy_factory", "get_attack", "independent_seeds",
           "owner_needs", "pgd", "prune_model", "quantize_int8", "quantize_weights", "reference_seed", "run_attack",
           "train_independent", "weight_sparsity"]

ATTACKS: dict[str, Attack] = {attack.name: attack for attack in (
    FINE_TUNE,
    PRUNE,
    QUANTIZE,
    HALF,
    DISTILL,
    INDEPENDENT,
    ADVERSARIAL_FINE_TUNE,
    EXTRACTION,
    PREPROCESS,
)}


def get_attack(name: str) -> Attack:
    """The registered attack `name`."""
    if name not in ATTACKS:
        raise ArgumentError("attack", f"unknown attack {name!r}; registered: {sorted(ATTACKS)}")
    return ATTACKS[name]


def run_attack(name: str, settings, context: AttackContext) -> list[nn.Module]:
    """The models attack `name` builds with `settings` (one per snapshot, most often one)."""
    return get_attack(name).run(context, settings)

"""What each stage of protect() should cost on this machine under a config: a sum of
(work x unit cost), the unit costs measured on the owner (plan_costs.py).

Reference training is epochs x images x the architecture's per-image step (epochs read
from each kind's settings), the pool points x a pilot's per-point cost, scoring
references x points x a forward, refinement candidates x steps x selecting references x
a forward and backward. Under torchrun each rank does 1/W of every stage.

A negative that trains until a rule stops it (it matches the owner, or its loss stops
falling) has no fixed length: the expected estimate counts it at the epochs such runs
took on the measured owners (below), the worst case (`worst=True`) at its cap. The two
differ most for negatives that match the owner: on the digits owner they stopped after
13-20 epochs of a cap of 60, on a 28x28 owner trained on 60,000 images, by negatives on a
subset of 6,700 of them, most ran well past 16 (benchmarks/results/protect-scaling-
2026-12-05). plan.py fits the expected cost to a budget and bounds the worst case.
"""
from __future__ import annotations

from .config import ProtectConfig
from .holdout import HOLDOUT_FRACTION, HOLDOUT_MAX
from .plan_costs import UnitCosts
from .pool import K_FACTORS

__all__ = ["CONVERGED_EPOCHS", "MATCHED_EPOCHS", "estimate_stages"]

# Epochs a negative with a stopping rule trained on the digits owner of seed 0 (recipe
# version 4; the first run of plan.py's estimates): the owner-matched ones stopped after
# 13-20 (cap 60), the converged ones after 45-60. The expected estimate only; the worst
# case counts the caps.
MATCHED_EPOCHS = 16
CONVERGED_EPOCHS = 50
_LAST_ONLY = 0.4        # a step that trains only the head: a forward and a small backward
_FIT_SAMPLE = 2000      # attacks.independent.FIT_SAMPLE: the converged rule's loss sample
_ARCHS = ("owner", "generic")


def estimate_stages(config: ProtectConfig, costs: UnitCosts, n_items: int, world: int = 1,
                    built: bool = True, *, worst: bool = False) -> dict:
    """Estimated seconds of each stage of protect() under `config`; `worst`: every negative
    with a stopping rule trained to its cap."""
    counts = _reference_counts(config)
    pool = config.pool_factor * config.n * (len(K_FACTORS) if config.k == "auto" else len(config.k)) * len(config.inits)
    forward = sum(counts[split, arch] * getattr(costs, f"{arch}_forward") for split, arch in counts)
    out = {"references": _reference_seconds(config, costs, n_items, worst) if built else 0.0,
           "pool": pool * costs.pool_point,
           "reference_outputs": pool * forward}
    if config.refine is not None:
        # the owner itself (it keeps its label) and every selecting reference at every step, or
        # the drawn share of them (RefineConfig.reference_fraction)
        share = config.refine.reference_fraction or 1.0
        per_point = costs.owner_input_grad + share * sum(counts["select", arch] * getattr(costs, f"{arch}_input_grad")
                                                         for arch in _ARCHS)
        out["refine"] = config.refine.factor * config.n * config.refine.steps * per_point
    return {stage: seconds / world for stage, seconds in out.items()}


def _reference_counts(config: ProtectConfig) -> dict:
    """How many reference models of each architecture select, and how many only validate
    or set the threshold: {(split, arch): count}."""
    counts = {(split, arch): 0 for split in ("select", "other") for arch in _ARCHS}
    for kind in config.effective_recipe:
        models, arch = _models_per_run(kind.settings), _model_arch(kind.settings)
        if not kind.per_replica:
            counts["select", arch] += models
        elif kind.threshold_only:
            counts["other", arch] += config.validation_replicas * models
        else:
            counts["select", arch] += config.replicas * models
            counts["other", arch] += config.validation_replicas * models
    return counts


def _reference_seconds(config: ProtectConfig, costs: UnitCosts, n_items: int, worst: bool) -> float:
    held = min(HOLDOUT_MAX, max(1, round(HOLDOUT_FRACTION * n_items)))
    total = 0.0
    for kind in config.effective_recipe:
        runs = (1 if not kind.per_replica else config.validation_replicas if kind.threshold_only
                else config.replicas + config.validation_replicas)
        items = n_items - held if kind.role == "negative" else n_items
        items = min(items, config.reference_images or items)
        epochs, arch, evaluated, evaluator = _work(kind.settings, held, items, worst)
        total += runs * (epochs * items * getattr(costs, f"{arch}_train")
                         + evaluated * getattr(costs, f"{evaluator}_forward"))
    return total


def _work(settings, held: int, items: int, worst: bool = False) -> tuple[float, str, float, str]:
    """(epochs of training steps, the architecture trained, images only evaluated, the
    architecture that evaluates them) of one run of a reference kind, read from its
    settings by field name (a kind of a caller's recipe with none of these fields counts
    as free, like pruning without fine-tuning). `worst`: a stopping rule never stops it."""
    name = type(settings).__name__
    if name == "Independent":
        cap, arch = max(settings.epoch_list()), _arch(settings.arch)
        if settings.match_owner:
            epochs = cap if worst else min(cap, MATCHED_EPOCHS)
            return epochs, arch, epochs * held, arch
        if settings.until_converged:
            epochs = cap if worst else min(cap, CONVERGED_EPOCHS)
            return epochs, arch, epochs * min(items, _FIT_SAMPLE), arch
        return cap, arch, 0.0, arch
    if name in ("Distill", "Extraction"):   # the teacher's outputs computed once
        return settings.epochs, _arch(settings.student), items, "owner"
    if name == "AdversarialFineTune":   # each step's attack: forward and backward per PGD step
        return settings.epochs * (settings.steps + 1), "owner", 0.0, "owner"
    if name == "FineTune":
        return settings.epochs * (_LAST_ONLY if settings.last_only else 1.0), "owner", 0.0, "owner"
    return float(getattr(settings, "finetune_epochs", 0) or 0), "owner", 0.0, "owner"


def _arch(arch) -> str:
    """The measured architecture a kind's cost is read from: the generic MLP's, else the
    owner's (a caller's factory or "generic-cnn" is costed as the owner, never measured)."""
    return "generic" if arch == "generic" else "owner"


def _model_arch(settings) -> str:
    """The architecture of the models a kind yields: the student's or the independent's, else the owner's."""
    arch = getattr(settings, "student", None) or getattr(settings, "arch", None)
    return _arch(arch) if isinstance(arch, str) else "owner"


def _models_per_run(settings) -> int:
    return len(settings.labels()) if type(settings).__name__ == "Independent" else 1

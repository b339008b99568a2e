"""The reference models protect() builds for the owner: each kind of its recipe
(recipe.py) an attack of ipguard_fast.attacks, run with protect's own seeds and cached.

Nothing here assumes an architecture: a kind whose attack needs a Linear head or
conv/linear weights is skipped for owners without them. Seeds come from
attacks.reference_seed, in [2**62, 2**63), above every seed the evaluation uses, so no
reference is ever an evaluated suspect; names start with "protect/", which no evaluation
name does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from torch import nn
from torch.utils.data import Dataset

from .._progress import progress_bar
from .._validate import ArgumentError
from ..attacks import AttackContext, get_attack, owner_needs, reference_seed
from ..data import seeded_split
from ..search.distributed import communicator
from .cache import ReferenceCache
from .config import ProtectConfig
from .holdout import holdout_split
from .recipe import RECIPE, RECIPE_VERSION, ReferenceKind, recipe_meta

__all__ = ["RECIPE", "RECIPE_VERSION", "Reference", "ReferenceKind", "build_references", "protect_seed",
           "recipe_meta"]   # the recipe's names re-exported: where protect's references are described

protect_seed = reference_seed   # the name this seed function had first


@dataclass
class Reference:
    """One reference model. ``split`` is "select" (scores the pool), "validate" (held out
    from selection: the choice of configuration and the threshold) or "threshold" (only
    the threshold: recipe.THRESHOLD_NEGATIVES)."""

    name: str
    role: str
    kind: str
    split: str
    model: nn.Module = field(repr=False)
    seconds: float = 0.0
    cached: bool = False


@dataclass(frozen=True)
class _Job:
    """One attack run and the references it yields (several for snapshots)."""

    names: tuple[str, ...]
    kind: ReferenceKind
    split: str
    context: AttackContext


def build_references(owner: nn.Module, data: Dataset, config: ProtectConfig, shapes: tuple[tuple[int, ...], int], *,
                     cache: ReferenceCache, device, log=None, progress: bool = True) -> list[Reference]:
    """Every reference of the recipe: replicas 0..config.replicas-1 (and the once-built
    positives) select, the next config.validation_replicas validate. Cached ones are loaded.

    Under torchrun each rank first builds its share of the jobs (job j on rank j mod W)
    into the cache, then every rank loads them all from it: the same models as one
    process builds (each depends only on its seed), the training spread over the ranks."""
    base = AttackContext(owner, data, 0, input_shape=tuple(shapes[0]), num_classes=shapes[1], device=device)
    train, holdout = holdout_split(data, reference_seed(config.seed, "holdout"))
    subset = lambda part: _at_most(part, config.reference_images, reference_seed(config.seed, "subset"))  # noqa: E731
    splits = {"all": subset(data), "train": subset(train), "holdout": holdout}
    jobs = _jobs(base, splits, config.effective_recipe, config.replicas, config.validation_replicas, config.seed, log)
    comm = communicator()
    if comm.world > 1:
        if cache.folder is None:
            raise ArgumentError("cache_dir", "under torchrun the ranks share the references through a cache folder "
                                             "that every rank can read; give one")
        with progress_bar(len(jobs[comm.rank::comm.world]), f"references (rank {comm.rank})", "model",
                          progress) as bar:
            for job in jobs[comm.rank::comm.world]:
                _realise(job, cache)
                if bar is not None:
                    bar.update(1)
        comm.exchange(None)   # every rank's share is in the cache
    out: list[Reference] = []
    with progress_bar(len(jobs), "references", "model", progress and comm.world == 1) as bar:
        for job in jobs:
            models, seconds, cached = _realise(job, cache)
            out += [Reference(name, job.kind.role, job.kind.kind, job.split, model.eval(), seconds, cached)
                    for name, model in zip(job.names, models)]
            if bar is not None:
                bar.update(1)
    return out


def _at_most(data: Dataset, count: int | None, seed: int) -> Dataset:
    """A seeded subset of at most `count` items of `data` (all of it when None or enough):
    references of a large owner train by fewer steps on part of its data (plan.py)."""
    if count is None or count >= len(data):
        return data
    return seeded_split(data, seed, count)[0]


def _realise(job: _Job, cache: ReferenceCache) -> tuple[list[nn.Module], float, bool]:
    """The job's models from the cache, or built (and cached): (models, seconds each, cached)."""
    attack = get_attack(job.kind.attack)
    start = time.perf_counter()
    models = [cache.load(name, lambda: attack.skeleton(job.context, job.kind.settings)) for name in job.names]
    cached = all(m is not None for m in models)
    if not cached:
        models = attack.run(job.context, job.kind.settings)
        for name, model in zip(job.names, models):
            cache.save(name, model)
    return models, (time.perf_counter() - start) / len(models), cached


def _jobs(base: AttackContext, splits: dict, recipe: tuple[ReferenceKind, ...], replicas: int,
          validation_replicas: int, seed: int, log) -> list[_Job]:
    offered = owner_needs(base.owner)
    usable = [k for k in recipe if set(get_attack(k.attack).needs) <= offered]
    skipped = [k.kind for k in recipe if k not in usable]
    if skipped and log is not None:
        missing = sorted(set().union(*(get_attack(k.attack).needs for k in recipe)) - offered)
        log(f"references: the owner has no {' or '.join(_NEED_WORDS[m] for m in missing)}; "
            f"skipping {', '.join(skipped)}")
    jobs = []
    for r in range(replicas + validation_replicas):
        split = "select" if r < replicas else "validate"
        jobs += [_job(base, splits, kind, seed, f"/r{r}", "threshold" if kind.threshold_only else split)
                 for kind in usable if kind.per_replica and (split == "validate" or not kind.threshold_only)]
    jobs += [_job(base, splits, kind, seed, "", "select") for kind in usable if not kind.per_replica]
    return jobs


_NEED_WORDS = {"head": "Linear head", "weights": "conv/linear weights"}


def _job(base: AttackContext, splits: dict, kind: ReferenceKind, seed: int, replica: str, split: str) -> _Job:
    """One kind's run. Negatives train without the held-out split, where they measure their
    accuracy against the owner's; copies train on all the owner's data, as a thief would
    (both on a seeded subset of it when the plan caps reference_images)."""
    labels = get_attack(kind.attack).outputs(kind.settings)
    names = tuple(f"protect/{kind.kind}{label}{replica}" for label in labels)
    s = reference_seed(seed, f"{kind.seed_name or kind.kind}{replica}")
    data = splits["train"] if kind.role == "negative" else splits["all"]
    context = AttackContext(base.owner, data, s, input_shape=base.input_shape, num_classes=base.num_classes,
                            device=base.device, holdout=splits["holdout"])
    return _Job(names, kind, split, context)

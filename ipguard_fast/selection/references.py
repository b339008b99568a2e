"""The reference models protect() builds for the owner: copies it makes and independent
models it trains, with the evaluation's own builders and seeds of protect's own.

Recipes (Adam throughout, batch 64; measured in issue 10 on held-out suspects):

* positives, per replica: FTLL (last layer, lr 1e-2, 3 epochs), FTAL (all, lr 1e-3,
  3 epochs), RTLL (last layer re-drawn and trained, lr 1e-2, 5 epochs), RTAL (last layer
  re-drawn, all trained, lr 1e-3, 5 epochs), prune-70ft (70 % global L1, 2 epochs of
  fine-tuning) and distill-small (the generic MLP distilled at T = 4, lr 1e-3, 10 epochs);
* positives, once (deterministic): prune-50 and prune-90 without fine-tuning, int4 weights
  (settings the evaluation never uses: it prunes 20-80 % and rounds to int8);
* negatives, per replica: the owner's architecture re-initialised and trained from
  scratch, and the generic MLP, each at (lr 1e-3, 10 epochs; its 5-epoch snapshot) and
  (lr 3e-3, 5 epochs). The independents that decide a verdict are the ones trained as
  hard as the owner; references must span weak to strong training, or selection keeps
  points that strong independents match.

Nothing here assumes an architecture: kinds that need a Linear head (FTLL, RTLL, RTAL)
or conv/linear weights (pruning, int4) are skipped for owners without them. Seeds come
from protect_seed(): SHA-256 of (seed, name) mapped into [2**62, 2**63), above every
seed the evaluation uses (EVALUATION_SEED_LIMIT), so no reference is ever an evaluated
suspect; names start with "protect/", which no evaluation name does.
"""
from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ..evaluation.attacks import prune_model, quantize_weights
from ..evaluation.suspects import EVALUATION_SEED_LIMIT, distill, fine_tune, train_independent
from .._progress import progress_bar
from ..models.generic import GenericMLP
from ..nn import last_layer, reinitialize
from .cache import ReferenceCache

__all__ = ["RECIPE", "RECIPE_VERSION", "Reference", "build_references", "protect_seed"]

RECIPE_VERSION = 1

# kind -> (role, how): "per replica" kinds are built for every replica, the others once.
RECIPE = {
    "positive_per_replica": {
        "FTLL": dict(lr=1e-2, epochs=3, last_only=True),
        "FTAL": dict(lr=1e-3, epochs=3),
        "RTLL": dict(lr=1e-2, epochs=5, reinit_last=True, last_only=True),
        "RTAL": dict(lr=1e-3, epochs=5, reinit_last=True),
        "prune-70ft": dict(rate=0.7, finetune_epochs=2),
        "distill-small": dict(lr=1e-3, epochs=10),
    },
    "positive_once": {"prune-50": dict(rate=0.5), "prune-90": dict(rate=0.9), "int4": dict(bits=4)},
    # (architecture, lr, epochs, snapshot epochs): one training run gives every listed epoch.
    "negative_per_replica": {
        "owner-lr0.001": dict(arch="owner", lr=1e-3, epochs=(5, 10)),
        "owner-lr0.003": dict(arch="owner", lr=3e-3, epochs=(5,)),
        "generic-lr0.001": dict(arch="generic", lr=1e-3, epochs=(5, 10)),
        "generic-lr0.003": dict(arch="generic", lr=3e-3, epochs=(5,)),
    },
}
_HEAD_KINDS = ("FTLL", "RTLL", "RTAL")


def protect_seed(seed: int, name: str) -> int:
    """A reference's seed: stable, distinct per name, in [2**62, 2**63) -- never an evaluation seed."""
    digest = hashlib.sha256(f"ipguard_fast.protect/{int(seed)}/{name}".encode()).digest()
    return EVALUATION_SEED_LIMIT + int.from_bytes(digest[:8], "little") % EVALUATION_SEED_LIMIT


@dataclass
class Reference:
    """One reference model. ``split`` is "select" (scores the pool) or "validate" (held out
    from selection: k choice and threshold)."""

    name: str
    role: str
    kind: str
    split: str
    model: nn.Module = field(repr=False)
    seconds: float = 0.0
    cached: bool = False


@dataclass
class _Job:
    """One training run (or deterministic attack) and the references it yields."""

    names: list[str]
    role: str
    kind: str
    split: str
    build: Callable[[], list[nn.Module]]
    skeleton: Callable[[], nn.Module]


def build_references(owner: nn.Module, data: Dataset, *, input_shape, num_classes: int, replicas: int,
                     validation_replicas: int, seed: int, cache: ReferenceCache, device, log=None,
                     progress: bool = True) -> list[Reference]:
    """Every reference of the recipe: replicas 0..replicas-1 (and the deterministic
    positives) select, the next validation_replicas validate. Cached ones are loaded."""
    jobs = _jobs(owner, data, input_shape, num_classes, replicas, validation_replicas, seed, device, log)
    out: list[Reference] = []
    with progress_bar(len(jobs), "references", "model", progress) as bar:
        for job in jobs:
            start = time.perf_counter()
            models = [cache.load(name, job.skeleton) for name in job.names]
            cached = all(m is not None for m in models)
            if not cached:
                models = job.build()
                for name, model in zip(job.names, models):
                    cache.save(name, model)
            seconds = (time.perf_counter() - start) / len(models)
            out += [Reference(name, job.role, job.kind, job.split, model.eval(), seconds, cached)
                    for name, model in zip(job.names, models)]
            if bar is not None:
                bar.update(1)
    return out


def _jobs(owner, data, input_shape, num_classes, replicas, validation_replicas, seed, device, log) -> list[_Job]:
    has_head = _has(lambda: last_layer(owner))
    has_weights = any(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in owner.modules())
    skipped = [k for k in _HEAD_KINDS if not has_head] + ([] if has_weights else ["prune-*", "int4"])
    if skipped and log is not None:
        log(f"references: the owner has no {'Linear head' if not has_head else 'conv/linear weights'}; "
            f"skipping {', '.join(skipped)}")
    generic = lambda: GenericMLP(input_shape, num_classes)  # noqa: E731 - a factory
    own_copy = lambda: copy.deepcopy(owner)                 # noqa: E731 - the skeleton of owner-architecture models
    kw = dict(batch_size=64, device=device)
    jobs: list[_Job] = []
    for r in range(replicas + validation_replicas):
        split = "select" if r < replicas else "validate"
        for kind, spec in RECIPE["positive_per_replica"].items():
            if (kind in _HEAD_KINDS and not has_head) or (kind.startswith("prune") and not has_weights):
                continue
            name, s = f"protect/{kind}/r{r}", protect_seed(seed, f"{kind}/r{r}")
            if kind == "prune-70ft":
                build = (lambda s=s, spec=spec: [prune_model(copy.deepcopy(owner), spec["rate"], finetune_set=data,
                                                             finetune_epochs=spec["finetune_epochs"], seed=s, **kw)])
                skeleton = own_copy
            elif kind == "distill-small":
                build = (lambda s=s, spec=spec: [distill(owner, data, generic, epochs=spec["epochs"], lr=spec["lr"],
                                                         seed=s, precompute_teacher=True, **kw)])
                skeleton = generic
            else:
                build = lambda s=s, spec=spec: [fine_tune(owner, data, seed=s, **spec, **kw)]  # noqa: E731
                skeleton = own_copy
            jobs.append(_Job([name], "positive", kind, split, build, skeleton))
        for kind, spec in RECIPE["negative_per_replica"].items():
            names = [f"protect/independent-{kind}-e{e}/r{r}" for e in spec["epochs"]]
            factory = generic if spec["arch"] == "generic" else _fresh_owner_factory(owner)
            build = (lambda s=protect_seed(seed, f"{kind}/r{r}"), spec=spec, factory=factory:
                     _independent_snapshots(factory, data, s, spec["lr"], spec["epochs"], kw))
            jobs.append(_Job(names, "negative", f"independent-{kind}", split, build,
                             generic if spec["arch"] == "generic" else own_copy))
    if has_weights:
        for kind, spec in RECIPE["positive_once"].items():
            if "rate" in spec:
                build = lambda spec=spec: [prune_model(copy.deepcopy(owner), spec["rate"])]  # noqa: E731
            else:
                build = lambda spec=spec: [quantize_weights(copy.deepcopy(owner), spec["bits"])]  # noqa: E731
            jobs.append(_Job([f"protect/{kind}"], "positive", kind, "select", build, own_copy))
    return jobs


def _independent_snapshots(factory, data, seed, lr, epochs, kw) -> list[nn.Module]:
    """One run to the last of `epochs`, with a copy at each earlier one (the same model a
    shorter run with this seed gives)."""
    snapshots = {}

    def keep(epoch, model):
        if epoch in epochs and epoch != max(epochs):
            snapshots[epoch] = copy.deepcopy(model).eval()

    final = train_independent(factory, data, seed=seed, epochs=max(epochs), lr=lr, on_epoch=keep, **kw)
    return [snapshots.get(e, final) for e in epochs]


def _fresh_owner_factory(owner: nn.Module) -> Callable[[], nn.Module]:
    """The owner's architecture with fresh weights: every layer's reset_parameters under the
    seed train_independent sets, and any parameter that no reset touched (a custom module's)
    re-drawn with the same mean and spread, so nothing trained is inherited."""

    def make() -> nn.Module:
        model = copy.deepcopy(owner)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        reinitialize(model, int(torch.randint(0, 2**62, ())))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.numel() > 1 and torch.equal(p, before[name]) and float(p.std()) > 0:
                    p.copy_(torch.randn_like(p) * p.std() + p.mean())
        return model

    return make


def _has(call) -> bool:
    try:
        call()
        return True
    except ValueError:
        return False

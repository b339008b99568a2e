"""protect()'s stages, each a function with typed inputs and outputs, so a researcher can
run them one by one: references -> pool -> reference outputs -> choice -> refinement ->
threshold. protect.py composes them; refinement and its threshold live in refining.py."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from .._progress import progress_bar
from .._validate import ArgumentError
from ..attacks.preprocess import restart_noise
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..modules import frozen, module_device
from ..search.distributed import communicator
from .cache import CacheLocation, ReferenceCache, reference_cache_key
from .cache_key import architecture_sha256, data_digest
from .choice import NEGATIVE_WEIGHTS, Candidate, References, choose
from .config import ProtectConfig
from .inputs import given_references
from .plan import Plan, fit_plan
from .plan_costs import measure_unit_costs
from .mistakes import mistakes_fingerprints
from .pool import extract_pool, k_grid, median_margin, merge_pools, pool_parts, start_images
from .references import Reference, build_references, protect_seed
from .scores import ReferenceOutputs, reference_outputs

__all__ = ["Choice", "Pool", "ReferenceSet", "agree_between_ranks", "choose_configuration", "make_plan", "make_pool",
           "make_references", "rows", "score_pool"]


@dataclass
class ReferenceSet:
    """The reference models, and where they came from (built, cached, or the caller's)."""

    references: list[Reference]
    built_here: bool                  # False: the caller gave them
    cache_key: str | None = None

    def rows(self, role: str, split: str) -> list[int]:
        return rows(self.references, role, split)


@dataclass
class Pool:
    """The pool of candidate fingerprints and the grid it was extracted at."""

    points: FingerprintSet
    ks: list[float]
    median_margin: float | None       # None when the caller gave the k values
    inits: list[str]
    mistakes: int | None = None       # the owner's held-out mistakes in the pool (its last points; None: none given)


@dataclass
class Choice:
    """The configuration the held-out references chose, among every candidate."""

    chosen: Candidate
    candidates: list[Candidate]


def rows(refs: Sequence[Reference], role: str, split: str) -> list[int]:
    """Indices of the references of `role` ("positive"/"negative") in `split` ("select"/"validate")."""
    return [i for i, r in enumerate(refs) if r.role == role and r.split == split]


def agree_between_ranks(owner: nn.Module, data: Dataset, config: ProtectConfig, *, held_out: Dataset | None = None,
                        negatives: Sequence[Reference] = ()) -> None:
    """Under torchrun, before the ranks share any work: refuse ranks given different settings,
    owners or data (each would build, extract and score its share of another run, and rank 0
    would write a mix of them), naming the first that differs."""
    comm = communicator()
    if comm.world == 1:
        return
    comm.agree({**{f.name: _plain(getattr(config, f.name)) for f in fields(config)},
                "owner": f"weights of SHA-256 {_weights(owner)}, architecture {architecture_sha256(owner)[:16]}",
                "train_data": f"data of digest {data_digest(data)[:16]}",
                "held_out_data": None if held_out is None else f"data of digest {data_digest(held_out)[:16]}",
                "negatives": [_weights(r.model) for r in negatives]})


def _plain(value):
    """A setting as itself when plain, else as its repr (compared, and shown in the error)."""
    return value if isinstance(value, (type(None), bool, int, float, str)) else repr(value)


def _weights(model) -> str:
    """A model's weights' SHA-256 (its first 16 digits), or the kind of a label-only callable."""
    return state_dict_sha256(model)[:16] if isinstance(model, nn.Module) else type(model).__name__


# The most of a budget the plan's pilot extraction may take before it asks for fewer points.
PILOT_SHARE = 0.25


def make_plan(owner: nn.Module, data: Dataset, config: ProtectConfig, shapes: tuple, *, built: bool = True) -> Plan:
    """The plan (plan.py) from unit costs measured on the owner: a training step, a forward,
    an input gradient, and a pilot extraction at the middle k of the pool's grid. Under
    torchrun every rank measures (the pilot is shared) and every rank takes rank 0's plan,
    so that all build the same references."""
    start = time.perf_counter()
    images = start_images(data, min(len(data), 2048), protect_seed(config.seed, "margin"))
    ks = config.fixed_ks or k_grid(median_margin(owner, images))
    with torch.no_grad(), frozen(owner):
        labels = torch.cat([owner(part.to(module_device(owner))).argmax(1).cpu() for part in images[:256].split(128)])
    costs = measure_unit_costs(owner, images[:256], labels, input_shape=shapes[0], num_classes=shapes[1],
                               pilot_k=sorted(ks)[len(ks) // 2], search_options=config.search,
                               seed=protect_seed(config.seed, "plan"),
                               pilot_limit=None if config.budget is None else PILOT_SHARE * config.budget)
    comm = communicator()
    costs, spent = comm.exchange((costs, time.perf_counter() - start))[0]
    return fit_plan(config, costs, len(data), config.budget, world=comm.world, built=built, spent=spent)


def make_references(owner: nn.Module, data: Dataset, config: ProtectConfig, shapes: tuple, *, given=None,
                    cache: CacheLocation | None = None, progress: bool = True, log=None) -> ReferenceSet:
    """The caller's references (`given`), or the recipe's, built or loaded from the cache's
    folder (authenticated with its key; read only: refuse, never rebuild, see cache.py)."""
    if given is not None:
        return ReferenceSet(given_references(given), built_here=False)
    where = cache or CacheLocation()
    cache = ReferenceCache(where.folder, key=reference_cache_key(owner, data, config), key_file=where.key_file,
                           readonly=where.readonly)
    refs = build_references(owner, data, config, shapes, cache=cache, device=module_device(owner), log=log,
                            progress=progress)
    return ReferenceSet(refs, built_here=True, cache_key=cache.key)


def make_pool(owner: nn.Module, data: Dataset, config: ProtectConfig, input_shape: tuple, *,
              held_out: Dataset | None = None, progress: bool = True, log=None, store=None) -> Pool:
    """IPGuard fingerprints from each start kind at each k of the grid, merged; with
    `held_out` (data the owner never trained on; inputs.held_out_data checks it) the owner's
    mistakes on it too, which the choice may add to each start kind's points (_candidates).
    store: a pool_cache.PoolStore that keeps each finished part (None: nothing is kept)."""
    ks, margin = config.fixed_ks, None
    if ks is None:
        images = start_images(data, min(len(data), 2048), protect_seed(config.seed, "margin"))
        margin = median_margin(owner, images)
        ks = k_grid(margin)
    inits = config.inits
    if log is not None:
        log(f"pool: {config.pool_factor * config.n} points at each k in {ks} ({' and '.join(inits)} starts, "
            f"{config.labels} labels)")
    # Every start kind uses the same seeds: a pool from data starts is the same whether or
    # not uniform starts are tried beside it.
    settings = dict(input_shape=input_shape, ks=ks, per_k=config.pool_factor * config.n,
                    seed=protect_seed(config.seed, "pool"), labels=config.labels, progress=progress,
                    options=config.search)
    parts = [extract_pool(owner, data, init=start, **settings) if store is None else
             merge_pools([store.part(owner, part) for part in pool_parts(data, init=start, **settings)])
             for start in inits]
    if store is not None and log is not None and (store.counts["cached"] or store.counts["resumed"]):
        log(f"pool: {store.counts['cached']} of {len(ks) * len(inits)} parts from the cache, "
            f"{store.counts['resumed']} resumed from a checkpoint")
    mistakes = (mistakes_fingerprints(owner, held_out, len(held_out), argument="held_out_data")
                if held_out is not None else None)
    if mistakes is not None and log is not None:
        log(f"pool: {len(mistakes)} mistakes of the owner on {len(held_out)} held-out inputs")
    points = merge_pools(parts + ([mistakes] if mistakes is not None and len(mistakes) else []))
    if len(points) < config.n:
        raise ArgumentError("n", f"the pool holds only {len(points)} fingerprints (raise pool_factor or lower k)")
    return Pool(points, ks, margin, inits, mistakes=len(mistakes) if mistakes is not None else None)


def score_pool(refs: ReferenceSet, points: FingerprintSet, batch_size: int, progress: bool = True) -> ReferenceOutputs:
    """Every reference's margin and agreement on every point. Under torchrun each rank runs
    its share of the references (r on rank r mod W) and every rank ends with all rows: each
    row depends only on its reference, so the table is the single process's."""
    models = refs.references
    comm = communicator()
    mine = list(range(comm.rank, len(models), comm.world))
    restart_noise([models[r].model for r in mine], 0)   # the same draws whichever rank scores a noisy one
    with progress_bar(len(mine), "reference outputs", "model", progress and comm.rank == 0) as bar:
        local = reference_outputs([models[r].model for r in mine], points, batch_size=batch_size,
                                  names=[f"references: {models[r].name}" for r in mine],
                                  progress=(lambda: bar.update(1)) if bar is not None else None) if mine else None
    if comm.world == 1:
        return local
    rows = comm.gather_dict({r: (local.margins[i], local.agrees[i]) for i, r in enumerate(mine)})
    return ReferenceOutputs(torch.stack([rows[r][0] for r in range(len(models))]),
                            torch.stack([rows[r][1] for r in range(len(models))]))


def choose_configuration(pool: Pool, refs: ReferenceSet, outputs: ReferenceOutputs, config: ProtectConfig) -> Choice:
    """Each candidate configuration selects n points; the best held-out ARUC wins (choice.py)."""
    candidates = _candidates(pool.points, pool.ks, pool.inits, singles=pool.median_margin is None,
                             mistakes=pool.mistakes or 0)
    kinds = lambda role: [refs.references[i].kind for i in refs.rows(role, "select")]  # noqa: E731
    held = References(outputs.rows(refs.rows("positive", "select")), outputs.rows(refs.rows("negative", "select")),
                      kinds("positive"), kinds("negative"), outputs.rows(refs.rows("positive", "validate")),
                      outputs.rows(refs.rows("negative", "validate")), labels=pool.points.labels,
                      num_classes=pool.points.num_classes, label_share=config.label_share)
    return Choice(choose(candidates, held, config.n, config.score), candidates)


def _candidates(pool: FingerprintSet, ks: list[float], inits: list[str], singles: bool,
                mistakes: int = 0) -> list[Candidate]:
    """The configurations the held-out references choose among: for each start kind, all k
    merged and (`singles`: the caller's own list of k) each k alone, each with every
    negative weight of the score. Pools of different start kinds never mix. The automatic
    grid offers only the merged pool: it can keep any single k's points, and more
    candidates only give the choice more noise to fit. With the owner's `mistakes` (the
    pool's last points) each start kind's widest pool is offered once more with them:
    the mistakes baseline and the boundary points, one selection over both."""
    parts = pool.meta["pool"]["parts"]
    point_k = torch.tensor([float("nan") if k is None else k for k in pool.meta["pool"]["k"]])
    point_start = torch.tensor([inits.index(_start_kind(part["init"])) if part["init"] != "held_out_data" else -1
                                for part in parts for _ in range(part["size"])])
    pools = []
    for s, start in enumerate(inits):
        prefix = f"{start} " if len(inits) > 1 else ""
        mine = point_start == s
        meta_init = next(part["init"] for part in parts if _start_kind(part["init"]) == start)
        for k in ks if singles or len(ks) == 1 else ():
            pools.append((f"{prefix}k={k:g}", torch.nonzero(mine & (point_k == float(k))).flatten(), start, meta_init))
        if len(ks) > 1:
            pools.append((prefix + "k=" + "+".join(f"{k:g}" for k in ks), torch.nonzero(mine).flatten(), start,
                          meta_init))
        if mistakes:
            name, columns = pools[-1][:2]
            pools.append((f"{name} + mistakes", torch.cat([columns, torch.nonzero(point_start == -1).flatten()]),
                          start, meta_init))
    # A k at which the search kept no point offers nothing to select (its rates would be 0/0).
    return [Candidate(name if w == 1.0 else f"{name}, w={w:g}", columns, negative_weight=w, init=start,
                      init_meta=meta_init, mistakes=name.endswith(" + mistakes"))
            for name, columns, start, meta_init in pools if len(columns) for w in NEGATIVE_WEIGHTS]


def _start_kind(recorded: str) -> str:
    """'uniform' for a pool part from noise, 'data' for one from training images."""
    return "uniform" if recorded == "uniform" else "data"

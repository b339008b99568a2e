"""protect(): the owner's whole job in one call -- references, a pool, selection, refinement,
a threshold.

1. References: copies of the owner and independent models (references.py), or the
   caller's own.
2. Pool: IPGuard fingerprints from training images at each k of a grid scaled by the
   owner's margins (pool.py), pool_factor * n per k.
3. Every reference runs once on the pool; each configuration (all k merged, or with the
   caller's list of k each alone too; each negative weight) selects n points, and its
   held-out ARUC -- each kind of reference measured on the selection made without it --
   picks one (choice.py). A single explicit k is taken as given.
4. Refinement (refine.py, default on): the chosen configuration's top 3n candidates
   climb the separation against the selecting module references; the top n of them,
   re-scored, are kept (the owner's label unchanged).
5. Threshold: from the validation references' rates on the refined selection (they
   neither selected nor refined); without validation references, or unrefined, from
   the held-out rates of the chosen selection.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .._progress import progress_bar
from .._validate import finite_number, positive_int
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..modules import eval_mode, module_device
from ..search.candidates import LABEL_MODES
from .cache import ReferenceCache, data_digest
from .choice import NEGATIVE_WEIGHTS, Candidate, References, choose, threshold_between
from .pool import K_FACTORS, POOL_FACTOR, extract_pool, k_grid, median_margin, merge_pools, start_images
from .references import RECIPE, RECIPE_VERSION, Reference, build_references, protect_seed
from .refine import RefineConfig, duplicate_rows, refined_pool
from .scores import SCORES, ReferenceOutputs, reference_outputs, separation_scores
from .select import describe_reference, named_references, selected_set, top_n

__all__ = ["protect"]

_INITS = ("data", "uniform")   # init="auto" tries both and lets the held-out references choose


def protect(owner: nn.Module, train_data, n: int = 100, *, k="auto", pool_factor: int = POOL_FACTOR,
            references=None, score: str = "separation", replicas: int = 3, validation_replicas: int = 1,
            refine: bool | RefineConfig = True,
            init: str = "data", labels: str = "predicted", seed: int = 0, cache_dir=None, batch_size: int = 256,
            progress: bool = True, log=None, extract_options: dict | None = None) -> FingerprintSet:
    """n fingerprints of `owner`, selected from a pool so that copies keep them and
    independent models do not, with a threshold calibrated on held-out references.

    train_data: the owner's training data, a Dataset of (image, label) or a DataLoader
    (its dataset is used); the references train on it and the pool starts from it.
    k: "auto" (the pool spans the grid median-margin x K_FACTORS, (0.2, 0.3, 0.4, 0.55,
    0.7), and selection picks among all its points), a number, or a list of numbers
    (each alone and all merged, chosen by held-out references). pool_factor: pool points
    per k, as a multiple of n (default POOL_FACTOR, 30: 15000 points for n = 100 over
    five k; see pool.py). references: None (build them, `replicas` replicas of each
    recipe, see selection/references.py; `validation_replicas` (default 1) more are only
    measured, never selected or refined with: the threshold comes from them), or the
    caller's own as {"positives":
    [...], "negatives": [...]} of anything matching_rate accepts, at least two of each
    (the k choice and the threshold leave each one out in turn). init: "data" (default; see pool.py for why),
    "uniform" noise starts, or "auto": pools from both, each k alone and all k merged per
    start kind, the held-out references choosing (never a mix of the two kinds; twice the
    pool's extraction time). cache_dir: a folder where built references are kept
    (safetensors, keyed by the owner's weights, the recipe and the data) and reused.
    refine: True (default: RefineConfig()), a RefineConfig, or False (the fingerprints are
    then the pool's own points, unchanged). Only nn.Module references refine; without
    one of each role, or if fewer than n refined candidates keep the owner's label, the
    unrefined selection is kept and meta["selection"]["refined"] says why.

    The result's meta["selection"] says it was selected, from how large a pool, against
    which references (names and weight hashes), each point's score and its pool index,
    and the refinement's settings;
    meta["protect"] the k grid with every configuration's validation ARUC, the choice,
    the threshold and the stage times; meta["threshold"] is what verify() uses.
    `.references` on the result holds the reference objects (not saved).
    """
    say = log or (lambda message: None)
    timings: dict[str, float] = {}
    if not isinstance(owner, nn.Module):
        raise ValueError(f"owner: must be an nn.Module, got {type(owner).__name__}")
    data = _dataset(train_data)
    n = positive_int("n", n)
    pool_factor = positive_int("pool_factor", pool_factor)
    ks = _ks(k)
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    if init not in (*_INITS, "auto"):
        raise ValueError(f"init: expected one of {(*_INITS, 'auto')}, got {init!r}")
    if labels not in LABEL_MODES:
        raise ValueError(f"labels: expected one of {LABEL_MODES}, got {labels!r}")
    replicas = positive_int("replicas", replicas)
    refined = _refine_settings(refine)
    if isinstance(validation_replicas, bool) or not isinstance(validation_replicas, int) or validation_replicas < 0:
        raise ValueError(f"validation_replicas: must be a non-negative int, got {validation_replicas!r}")
    input_shape, num_classes = _shapes(owner, data)

    start = time.perf_counter()
    if references is None:
        # Not the replica counts: a model depends only on its name's seed, so runs with more
        # replicas reuse the fewer's models (which split one lands in is decided per run).
        recipe = {"version": RECIPE_VERSION, "recipe": RECIPE, "seed": seed}
        cache = ReferenceCache(cache_dir, owner_sha256=state_dict_sha256(owner), recipe=recipe,
                               data_sha256=data_digest(data))
        refs = build_references(owner, data, input_shape=input_shape, num_classes=num_classes, replicas=replicas,
                                validation_replicas=validation_replicas, seed=seed, cache=cache,
                                device=module_device(owner), log=say, progress=progress)
        built = sum(not r.cached for r in refs)
        say(f"references: {len(refs)} ({built} built, {len(refs) - built} from the cache) in "
            f"{time.perf_counter() - start:.1f} s")
    else:
        refs, cache = _given(references), None
    timings["references"] = time.perf_counter() - start

    start = time.perf_counter()
    if ks is None:
        images = start_images(data, min(len(data), 2048), protect_seed(seed, "margin"))
        margin = median_margin(owner, images)
        ks = k_grid(margin)
    else:
        margin = None
    inits = list(_INITS) if init == "auto" else [init]
    say(f"pool: {pool_factor * n} points at each k in {ks} ({' and '.join(inits)} starts, {labels} labels)")
    # Every start kind uses the same seeds: a pool from data starts is the same whether or
    # not uniform starts are tried beside it.
    pool = merge_pools([extract_pool(owner, data, input_shape=input_shape, ks=ks, per_k=pool_factor * n,
                                     seed=protect_seed(seed, "pool"), labels=labels, init=start, progress=progress,
                                     options=extract_options) for start in inits])
    timings["pool"] = time.perf_counter() - start
    if len(pool) < n:
        raise ValueError(f"n: the pool holds only {len(pool)} fingerprints (raise pool_factor or lower k)")

    start = time.perf_counter()
    outputs = _outputs(refs, pool, batch_size, progress)
    timings["reference_outputs"] = time.perf_counter() - start

    start = time.perf_counter()
    candidates = _candidates(pool, ks, inits, singles=margin is None)
    pos_rows, neg_rows = _rows(refs, "positive", "select"), _rows(refs, "negative", "select")
    held = References(outputs.rows(pos_rows), outputs.rows(neg_rows), [refs[i].kind for i in pos_rows],
                      [refs[i].kind for i in neg_rows], outputs.rows(_rows(refs, "positive", "validate")),
                      outputs.rows(_rows(refs, "negative", "validate")))
    chosen = choose(candidates, held, n, score)
    held_pos, held_neg = chosen.held_out["positives"], chosen.held_out["negatives"]
    timings["choice"] = time.perf_counter() - start
    say(f"chosen {chosen.name}: held-out ARUC {chosen.validation['aruc']:.3f}")

    final = _Final(pool, outputs, chosen.kept, chosen.scores)
    if refined is not None:
        start = time.perf_counter()
        final = _refined_selection(owner, final, refs, chosen, n, score, batch_size, refined, say)
        timings["refine"] = time.perf_counter() - start
    if final.held is not None:
        held_pos, held_neg = final.held
    threshold = threshold_between(held_pos, held_neg, n)
    say(f"threshold {threshold:.3f}")

    described = {role: [dict(describe_reference(r.name, r.model), split=r.split, kind=r.kind)
                        for r in refs if r.role == role] for role in ("positive", "negative")}
    every = list(range(len(refs)))
    rates = final.outputs.rows(every).columns(final.kept).rates().tolist()
    extra = {"negative_weight": chosen.negative_weight,
             "refined": final.meta if refined is not None else None}
    if final.pool is not pool:
        extra.update(pool_size=len(pool), pool_indices=final.meta["pool_indices"])
    fps = selected_set(final.pool, final.kept, final.scores, score=score,
                       references={"positives": described["positive"], "negatives": described["negative"]},
                       rates={refs[i].name: round(rate, 4) for i, rate in zip(every, rates)}, extra=extra)
    fps.meta["threshold"] = threshold
    fps.meta["init"] = chosen.init_meta
    fps.meta["protect"] = {
        "k": k if isinstance(k, str) else ks, "k_grid": ks, "k_factors": list(K_FACTORS) if margin else None,
        "median_margin": margin, "init": init, "init_chosen": chosen.init, "labels": labels,
        "pool_factor": pool_factor, "seed": seed,
        "chosen": chosen.name, "negative_weight": chosen.negative_weight,
        "candidates": [{"name": c.name, **c.validation} for c in candidates],
        "threshold": threshold, "held_out_rates": {"positives": [round(r, 4) for r in held_pos],
                                                    "negatives": [round(r, 4) for r in held_neg]},
        "references_built": references is None, "reference_cache_key": cache.key if cache else None,
        "reference_seconds": {r.name: round(r.seconds, 3) for r in refs},
        "timings": {name: round(value, 3) for name, value in timings.items()},
    }
    fps.references = refs
    return fps


def _candidates(pool: FingerprintSet, ks: list[float], inits: list[str], singles: bool) -> list[Candidate]:
    """The configurations the held-out references choose among: for each start kind, all k
    merged and (`singles`: the caller's own list of k) each k alone, each with every
    negative weight of the score. Pools of different start kinds never mix.

    The automatic grid offers only the merged pool: it can keep any single k's points, and
    in issue 10's runs it won every held-out comparison but one, where a 3000-point single-k
    pool edged it by 0.014 on the references and lost 0.008 on held-out suspects (0.882
    against 0.890) -- more candidates only give the choice more noise to fit."""
    parts = pool.meta["pool"]["parts"]
    point_k = torch.tensor(pool.meta["pool"]["k"])
    point_start = torch.tensor([inits.index(_start_kind(part["init"])) for part in parts
                                for _ in range(part["size"])])
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
    return [Candidate(name if w == 1.0 else f"{name}, w={w:g}", columns, negative_weight=w, init=start,
                      init_meta=meta_init)
            for name, columns, start, meta_init in pools for w in NEGATIVE_WEIGHTS]


@dataclass
class _Final:
    """The selection protect returns: from the pool, or from the refined candidates (then
    `held` holds the validation references' rates on it, when there are any)."""

    pool: FingerprintSet
    outputs: ReferenceOutputs
    kept: torch.Tensor
    scores: torch.Tensor
    meta: dict = field(default_factory=dict)
    held: tuple[list[float], list[float]] | None = None


def _refined_selection(owner, unrefined: _Final, refs, chosen, n, score, batch_size, config, say) -> _Final:
    """Refine the chosen configuration's top config.factor * n candidates and keep the top
    n of them; the unrefined selection, with the reason in meta, when refinement cannot be used."""
    pool = unrefined.pool
    # Modules with logits only: a module returning labels has NaN margins on the pool.
    has_logits = lambda i: bool(torch.isfinite(unrefined.outputs.margins[i]).any())  # noqa: E731
    modules = {role: [refs[i].model for i in _rows(refs, role, "select") if isinstance(refs[i].model, nn.Module)
                      and has_logits(i)] for role in ("positive", "negative")}
    if not (modules["positive"] and modules["negative"]):
        say("refine: skipped (it needs module references of both roles)")
        unrefined.meta = {"skipped": "refinement needs module references of both roles (gradients)"}
        return unrefined
    top = top_n(torch.nan_to_num(chosen.scores, nan=float("-inf")), min(len(chosen.columns), config.factor * n))
    say(f"refine: {len(top)} candidates, {config.steps} steps against {len(modules['positive'])} + "
        f"{len(modules['negative'])} references")
    weight = chosen.negative_weight if config.negative_weight is None else config.negative_weight
    moved = refined_pool(owner, pool, top, modules["positive"], modules["negative"], negative_weight=weight,
                         config=config)
    outputs = _outputs(refs, moved, batch_size, progress=False)
    scores = separation_scores(outputs.rows(_rows(refs, "positive", "select")),
                               outputs.rows(_rows(refs, "negative", "select")), score, chosen.negative_weight)
    # The owner must still give label j, and two candidates never become one fingerprint.
    usable = (moved.margins > 0) & ~duplicate_rows(moved.images)
    if int(usable.sum()) < n:
        unrefined.meta = {"skipped": f"only {int(usable.sum())} of {len(top)} refined candidates kept the owner's "
                                     f"label; the unrefined selection is kept"}
        say(f"refine: skipped ({unrefined.meta['skipped']})")
        return unrefined
    scores[~usable] = float("-inf")
    kept = top_n(scores, n)
    meta = {**config.as_meta(), "candidates": len(top), "pool_indices": top[kept].tolist()}
    validation = [_rows(refs, "positive", "validate"), _rows(refs, "negative", "validate")]
    held = None
    if validation[0] and validation[1]:   # the unrefined selection's held-out rates describe another set
        held = tuple(outputs.rows(v).columns(kept).rates().tolist() for v in validation)
        meta["threshold_rates"] = "validation references on the refined selection"
    else:
        meta["threshold_rates"] = "held-out rates of the unrefined selection (no validation references)"
    return _Final(moved, outputs, kept, scores, meta, held)


def _rows(refs: Sequence[Reference], role: str, split: str) -> list[int]:
    """Indices of the references of `role` ("positive"/"negative") in `split` ("select"/"validate")."""
    return [i for i, r in enumerate(refs) if r.role == role and r.split == split]


def _refine_settings(refine) -> RefineConfig | None:
    if isinstance(refine, RefineConfig):
        return refine if refine.steps > 0 else None
    if not isinstance(refine, bool):
        raise ValueError(f"refine: expected True, False or a RefineConfig, got {type(refine).__name__}")
    return RefineConfig() if refine else None


def _start_kind(recorded: str) -> str:
    """'uniform' for a pool part from noise, 'data' for one from training images."""
    return "uniform" if recorded == "uniform" else "data"


# ---------------------------------------------------------------------- arguments


# Data sets up to this many bytes of float32 images are gathered into one TensorDataset:
# every reference trains for several epochs on them, and sliced tensors are much faster
# than a DataLoader's per-item collate (it also lets distillation precompute the teacher).
_MATERIALISE_BYTES = 1 << 30


def _dataset(train_data) -> Dataset:
    data = train_data.dataset if isinstance(train_data, DataLoader) else train_data
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise ValueError(f"train_data: must be a torch Dataset of (image, label) or a DataLoader, got "
                         f"{type(train_data).__name__}")
    if len(data) == 0:
        raise ValueError("train_data: is empty")
    item = data[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2 or not isinstance(item[0], torch.Tensor):
        raise ValueError("train_data: items must be (image tensor, label) pairs")
    if isinstance(data, TensorDataset) or len(data) * item[0].numel() * 4 > _MATERIALISE_BYTES:
        return data
    images = torch.stack([torch.as_tensor(data[i][0]).float() for i in range(len(data))])
    labels = torch.tensor([int(data[i][1]) for i in range(len(data))], dtype=torch.int64)
    return TensorDataset(images, labels)


def _ks(k) -> list[float] | None:
    if isinstance(k, str):
        if k != "auto":
            raise ValueError(f"k: expected 'auto', a number or a list of numbers, got {k!r}")
        return None
    values = list(k) if isinstance(k, (list, tuple)) else [k]
    if not values:
        raise ValueError("k: the list is empty")
    if any(not isinstance(v, numbers.Real) or isinstance(v, bool) for v in values):
        raise ValueError(f"k: expected 'auto', a number or a list of numbers, got {k!r}")
    out = [finite_number("k", v, minimum=0.0) for v in values]
    if len(set(out)) != len(out):
        raise ValueError(f"k: has repeated values {out}")
    return out


def _shapes(owner: nn.Module, data: Dataset) -> tuple[tuple[int, ...], int]:
    image = torch.as_tensor(data[0][0]).float()
    with torch.no_grad(), eval_mode(owner):
        try:
            out = owner(image[None].to(module_device(owner)))
        except Exception as exc:   # the owner's own error, reported against the data it was given
            raise ValueError(f"train_data: the owner fails on an image of shape {list(image.shape)}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        raise ValueError(f"owner: expected logits [B, C] with C >= 2, got "
                         f"{list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return tuple(image.shape), int(out.shape[1])


def _given(references) -> list[Reference]:
    """The caller's references, each its own kind (left out alone for the held-out rates)."""
    if isinstance(references, dict):
        unknown = set(references) - {"positives", "negatives"}
        if unknown:
            raise ValueError(f"references: unknown keys {sorted(unknown)}; expected 'positives' and 'negatives'")
        positives, negatives = references.get("positives"), references.get("negatives")
    elif isinstance(references, (tuple, list)) and len(references) == 2:
        positives, negatives = references
    else:
        raise ValueError("references: expected {'positives': [...], 'negatives': [...]} or (positives, negatives)")
    out = []
    for role, key, entries in (("positive", "positives", positives), ("negative", "negatives", negatives)):
        try:
            named = named_references(f"references['{key}']", entries if entries is not None else [])
        except ValueError as exc:
            raise ValueError(str(exc) if str(exc).startswith("references") else f"references: {exc}") from exc
        if len(named) < 2:
            raise ValueError(f"references: need at least 2 {key} (each is left out in turn to judge the k choice "
                             f"and the threshold), got {len(named)}")
        out += [Reference(name, role, f"given/{i}", "select", model) for i, (name, model) in enumerate(named)]
    return out


def _outputs(refs: Sequence[Reference], pool: FingerprintSet, batch_size: int, progress: bool) -> ReferenceOutputs:
    with progress_bar(len(refs), "reference outputs", "model", progress) as bar:
        return reference_outputs([r.model for r in refs], pool, batch_size=batch_size,
                                 names=[f"references: {r.name}" for r in refs],
                                 progress=(lambda: bar.update(1)) if bar is not None else None)

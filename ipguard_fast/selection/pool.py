"""The candidate pool selection chooses from: IPGuard fingerprints at a few k, from
training images, merged into one FingerprintSet.

* Starts: training images, shuffled by the pool's seed, each used once (the search
  jitters copies past them, see search/candidates.py). Points that start on real data
  sit on boundaries copies inherit, so protect starts from data when it has training
  data; noise starts remain a choice (init="uniform" / "auto").
* Labels: "predicted" (i = the owner's label of the start image, j random): the point
  moves from a region the owner really labels i.
* k grid: the owner's median top-1 minus top-2 logit margin on its training data times
  K_FACTORS. k is in logit units, so it scales with how confident the owner is; the
  scaling alone does not make owners alike (independent models share more of some
  owners' boundary points than others'), so the grid reaches low, where points are
  unique for those owners too.
* Size: POOL_FACTOR * n points per k.

The measurements behind these choices: benchmarks/results/README.md (selection rows).
"""
from __future__ import annotations

import copy
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from ..fingerprints import FingerprintSet
from ..modules import eval_mode, module_device
from ..search import extract_fingerprints

__all__ = ["K_FACTORS", "POOL_FACTOR", "extract_pool", "k_grid", "median_margin", "merge_pools", "pool_parts",
           "start_images"]

K_FACTORS = (0.2, 0.3, 0.4, 0.55, 0.7)
POOL_FACTOR = 30   # pool points per k, as a multiple of n


def start_images(data: Dataset, count: int, seed: int) -> torch.Tensor:
    """Up to `count` training images, in an order shuffled by `seed`: [m, *input_shape] float32."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    tensors = getattr(data, "tensors", None)
    if tensors is not None:   # a TensorDataset: one gather, not a Python loop
        return tensors[0][order].float().clone()
    return torch.stack([torch.as_tensor(data[int(i)][0]) for i in order]).float()


@torch.no_grad()
def median_margin(owner: nn.Module, images: torch.Tensor, batch_size: int = 512) -> float:
    """The owner's median top-1 minus top-2 logit on `images`."""
    device = module_device(owner)
    gaps = []
    with eval_mode(owner):
        for start in range(0, len(images), batch_size):
            top = owner(images[start:start + batch_size].to(device)).float().topk(2, dim=1).values
            gaps.append((top[:, 0] - top[:, 1]).cpu())
    return float(torch.cat(gaps).median())


def k_grid(margin: float, factors: Sequence[float] = K_FACTORS) -> list[float]:
    """k values from the owner's median margin (rounded to 2 decimals, at least 0.1)."""
    return [max(0.1, round(f * margin, 2)) for f in factors]


def extract_pool(owner: nn.Module, data: Dataset, *, input_shape, ks: Sequence[float], per_k: int, seed: int,
                 labels: str = "predicted", init: str = "data", progress: bool = True,
                 options: dict | None = None) -> FingerprintSet:
    """per_k fingerprints at every k (data or uniform starts), merged."""
    return merge_pools([extract_fingerprints(owner, **settings) for settings in pool_parts(
        data, input_shape=input_shape, ks=ks, per_k=per_k, seed=seed, labels=labels, init=init, progress=progress,
        options=options)])


def pool_parts(data: Dataset, *, input_shape, ks: Sequence[float], per_k: int, seed: int, labels: str = "predicted",
               init: str = "data", progress: bool = True, options: dict | None = None) -> Iterator[dict]:
    """extract_pool's parts, one per k: each its extract_fingerprints keywords (the model aside),
    its start images drawn as it is reached (one part's in memory at a time; protect's
    pool_cache.PoolStore extracts or loads each)."""
    for index, k in enumerate(ks):
        part_seed = seed + index
        start = start_images(data, per_k, part_seed) if init == "data" else "uniform"
        yield dict(n=per_k, k=float(k), input_shape=input_shape, init=start, labels=labels, seed=part_seed,
                   progress=progress, **(options or {}))


def merge_pools(parts: Sequence[FingerprintSet]) -> FingerprintSet:
    """One pool from several fingerprint sets of one owner: tensors concatenated; meta["pool"]
    records each point's k and each part's k, seed, size and start (and meta["k"] the list of k).
    A part found without a margin (the owner's mistakes, mistakes.py) has k None."""
    if not parts:
        raise ValueError("parts: need at least one fingerprint set")
    owners = {p.meta.get("model_sha256") for p in parts}
    if len(owners) > 1:
        raise ValueError("parts: come from different models (their model_sha256 differ)")
    meta = copy.deepcopy(parts[0].meta)
    point_k = [k for p in parts for k in _point_ks(p)]
    meta["k"] = sorted({k for k in point_k if k is not None})
    meta["requested"] = sum(p.requested for p in parts)
    meta["candidates_tried"] = sum(int(p.meta.get("candidates_tried", len(p))) for p in parts)
    meta["pool"] = {"k": point_k, "parts": [entry for p in parts for entry in (p.meta["pool"]["parts"] if "pool" in p.meta else [
        {"k": p.meta.get("k"), "seed": p.meta.get("seed"), "size": len(p), "init": p.meta.get("init"),
         "labels": p.meta.get("labels"), "seed_images": p.meta.get("seed_images"),
         "candidates_tried": p.meta.get("candidates_tried")}])]}
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return FingerprintSet(images=cat("images"), labels=cat("labels"), source_labels=cat("source_labels"),
                          margins=cat("margins"), steps=cat("steps"), meta=meta)


def _point_ks(part: FingerprintSet) -> list:
    """Each point's k: a merged part keeps its own list; a set without a k (mistakes) gives None."""
    if "pool" in part.meta:
        return list(part.meta["pool"]["k"])
    k = part.meta.get("k")
    return [None if k is None else float(k)] * len(part)

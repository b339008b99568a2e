"""evaluate(): robustness and uniqueness of IPGuard fingerprints against suspect models.

For each k: extract fingerprints from the owner, compute every suspect's matching
rate, then robustness R(t) (share of positives with rate >= t), uniqueness U(t)
(share of negatives with rate < t), ROC AUC and ARUC = integral over t in [0, 1]
of min(R(t), U(t)). The result is the plain dict that report.write_report takes.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from ..search import extract_fingerprints
from ..search.distributed import communicator
from ..train import accuracy
from ..verify import matching_rate
from . import metrics
from .suspects import Suspect, negative_suspects, positive_suspects


def build_suspects(owner: nn.Module, train_set: Dataset, *,
                   negative_factories: Mapping[str, Callable[[], nn.Module]], negative_epochs: int,
                   negative_seeds: Sequence[int] = (1, 2, 3), small_factory=None, seed: int = 0,
                   quick: bool = True, log=print) -> list[Suspect]:
    """The paper's positives (post-processed copies) and negatives (independent models)."""
    start = time.perf_counter()
    positives = positive_suspects(owner, train_set, seed=seed, quick=quick, small_factory=small_factory)
    log(f"built {len(positives)} positive suspects in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    negatives = negative_suspects(train_set, negative_factories, seeds=negative_seeds, epochs=negative_epochs)
    log(f"trained {len(negatives)} negative suspects in {time.perf_counter() - start:.1f} s")
    return positives + negatives


def evaluate(owner: nn.Module, train_set: Dataset | None = None, *, input_shape: Sequence[int],
             suspects: Sequence[Suspect] | None = None,
             negative_factories: Mapping[str, Callable[[], nn.Module]] | None = None,
             negative_epochs: int = 5, negative_seeds: Sequence[int] | None = None,
             small_factory=None, quick: bool = True,
             ks: Sequence[float] = (1.0, 3.0, 10.0), n: int = 100, test_set: Dataset | None = None,
             owner_name: str = "owner", seed: int = 0, extract_options: Mapping[str, Any] | None = None,
             log=print) -> dict:
    """Matching rates of every suspect on fingerprints extracted at each k, and ARUC / ROC AUC.

    Either pass `suspects`, or the owner's `train_set` and `negative_factories`
    (architecture name -> fresh model) to build the paper's suspects with
    build_suspects(). Returns the dict that write_report() renders.
    """
    if suspects is None:
        if train_set is None or not negative_factories:
            raise ValueError("suspects: pass suspects, or train_set and negative_factories to build them")
        suspects = build_suspects(owner, train_set, negative_factories=negative_factories,
                                  negative_epochs=negative_epochs, small_factory=small_factory,
                                  negative_seeds=negative_seeds or (1, 2, 3),
                                  seed=seed, quick=quick, log=log)
    if not suspects:
        raise ValueError("suspects: need at least one positive and one negative suspect")
    roles = {s.role for s in suspects}
    if roles != {"positive", "negative"}:
        raise ValueError(f"suspects: need both positive and negative suspects, got roles {sorted(roles)}")
    if not ks:
        raise ValueError("ks: need at least one k")
    options = dict(progress=False)
    options.update(extract_options or {})
    # Under torchrun each rank scores its share of the suspects (extraction is shared
    # by extract_fingerprints itself); every rank ends with the whole table.
    comm = communicator()
    this_rank = list(suspects)[comm.rank::comm.world]
    accuracies = _merge(comm.exchange({s.name: (accuracy(s.model, test_set) if test_set is not None else None)
                                       for s in this_rank}))
    runs = []
    for k in ks:
        start = time.perf_counter()
        fps = extract_fingerprints(owner, n, k=float(k), input_shape=input_shape, seed=seed, **options)
        seconds = time.perf_counter() - start
        rates = _merge(comm.exchange({s.name: matching_rate(s.model, fps) for s in this_rank}))
        rows = [{"name": s.name, "family": s.family, "role": s.role, "accuracy": accuracies[s.name],
                 "matching_rate": rates[s.name]} for s in suspects]
        pos = [r["matching_rate"] for r in rows if r["role"] == "positive"]
        neg = [r["matching_rate"] for r in rows if r["role"] == "negative"]
        run = {"k": float(k), "n_fingerprints": len(fps), "extract_seconds": seconds,
               "candidates_tried": fps.meta["candidates_tried"], "suspects": rows,
               "aruc": metrics.aruc(pos, neg), "roc_auc": metrics.roc_auc(pos, neg)}
        runs.append(run)
        log(f"k={k:g}: {len(fps)} fingerprints in {seconds:.1f} s, ARUC {run['aruc']:.3f}, "
            f"ROC AUC {run['roc_auc']:.3f}")
    owner_acc = accuracy(owner, test_set) if test_set is not None else None
    return {"owner": {"name": owner_name, "accuracy": owner_acc},
            "settings": {"ks": [float(k) for k in ks], "n": n, "seed": seed,
                         "extract_options": {k: str(v) for k, v in (extract_options or {}).items()}},
            "runs": runs}


def _merge(parts: list[dict]) -> dict:
    merged = {}
    for part in parts:
        merged.update(part)
    return merged

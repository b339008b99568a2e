"""evaluate(): robustness and uniqueness of IPGuard fingerprints against suspect models.

For each k: extract fingerprints from the owner, compute every suspect's matching
rate, then robustness R(t) (share of positives with rate >= t), uniqueness U(t)
(share of negatives with rate < t), ROC AUC and ARUC = integral over t in [0, 1]
of min(R(t), U(t)). With methods=("ipguard", "selected") the same suspects also judge
the fingerprints ipguard_fast.selection.protect selects (one more run, side by side);
its reference models are checked to be none of the suspects. The result is the plain
dict that report.write_report takes.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from ..fingerprints import FingerprintSet, state_dict_sha256
from ..search import extract_fingerprints
from ..search.distributed import communicator
from ..train import accuracy
from ..verdicts import matching_rate
from . import metrics
from .suspects import Suspect, independent_seeds, negative_suspects, positive_suspects


METHODS = ("ipguard", "selected")


def build_suspects(owner: nn.Module, train_set: Dataset, *,
                   negative_factories: Mapping[str, Callable[[], nn.Module]], negative_epochs: int,
                   negative_seeds: Sequence[int] | None = None, negative_lr: float = 1e-3, small_factory=None,
                   seed: int = 0, quick: bool = True, log=print) -> list[Suspect]:
    """The paper's positives (post-processed copies) and negatives (independent models).

    The demo bed: quick=True (the short attack grid) and negatives at lr 1e-3. The hard
    bed: quick=False (RTAL for 10 epochs, 80 % pruning with fine-tuning, 30-epoch
    distillation...) and negatives trained like the owner (its epochs and lr) over several
    architectures (for digits: models.DIGITS_HARD_ARCHITECTURES).

    negative_seeds: default independent_seeds(seed), three seeds after `seed`. An owner
    trained with `seed` (the demo's) then never has an "independent" twin: a negative
    trained with the owner's own seed starts from the owner's initial weights and matches
    it like a copy (0.94 of a pool with seed 1, when the seeds were fixed at 1, 2, 3).
    """
    start = time.perf_counter()
    positives = positive_suspects(owner, train_set, seed=seed, quick=quick, small_factory=small_factory)
    log(f"built {len(positives)} positive suspects in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    seeds = independent_seeds(seed) if negative_seeds is None else negative_seeds
    negatives = negative_suspects(train_set, negative_factories, seeds=seeds, epochs=negative_epochs,
                                  lr=negative_lr)
    log(f"trained {len(negatives)} negative suspects in {time.perf_counter() - start:.1f} s")
    return positives + negatives


def evaluate(owner: nn.Module, train_set: Dataset | None = None, *, input_shape: Sequence[int],
             suspects: Sequence[Suspect] | None = None,
             negative_factories: Mapping[str, Callable[[], nn.Module]] | None = None,
             negative_epochs: int = 5, negative_seeds: Sequence[int] | None = None,
             small_factory=None, quick: bool = True,
             ks: Sequence[float] = (1.0, 3.0, 10.0), n: int = 100, test_set: Dataset | None = None,
             owner_name: str = "owner", seed: int = 0, extract_options: Mapping[str, Any] | None = None,
             methods: Sequence[str] = ("ipguard",), selected: FingerprintSet | None = None,
             selection_options: Mapping[str, Any] | None = None, log=print) -> dict:
    """Matching rates of every suspect on fingerprints extracted at each k, and ARUC / ROC AUC.

    Either pass `suspects`, or the owner's `train_set` and `negative_factories`
    (architecture name -> fresh model) to build the paper's suspects with
    build_suspects(). Returns the dict that write_report() renders.

    methods: "ipguard" (plain IPGuard at each k) and/or "selected": fingerprints from
    ipguard_fast.selection.protect(owner, train_set, n, **selection_options), or the
    `selected` set given, judged by the same suspects in one more run. No suspect may be
    one of protect's reference models (same weights or shared tensors): that would
    test the selection on its own references, and raises ValueError.
    """
    if suspects is None:
        if train_set is None or not negative_factories:
            raise ValueError("suspects: pass suspects, or train_set and negative_factories to build them")
        suspects = build_suspects(owner, train_set, negative_factories=negative_factories,
                                  negative_epochs=negative_epochs, small_factory=small_factory,
                                  negative_seeds=negative_seeds,
                                  seed=seed, quick=quick, log=log)
    if not suspects:
        raise ValueError("suspects: need at least one positive and one negative suspect")
    roles = {s.role for s in suspects}
    if roles != {"positive", "negative"}:
        raise ValueError(f"suspects: need both positive and negative suspects, got roles {sorted(roles)}")
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods):
        raise ValueError(f"methods: expected distinct entries of {METHODS}, got {list(methods)}")
    if "ipguard" in methods and not ks:
        raise ValueError("ks: need at least one k")
    if "selected" in methods and selected is None and train_set is None:
        raise ValueError("train_set: the selected method builds its references from the owner's training data")
    options = dict(progress=False)
    options.update(extract_options or {})
    # Under torchrun each rank scores its share of the suspects (extraction is shared
    # by extract_fingerprints itself); every rank ends with the whole table.
    comm = communicator()
    this_rank = list(suspects)[comm.rank::comm.world]
    accuracies = _merge(comm.exchange({s.name: (accuracy(s.model, test_set) if test_set is not None else None)
                                       for s in this_rank}))
    def judge(fps: FingerprintSet, seconds: float, **fields) -> dict:
        rates = _merge(comm.exchange({s.name: matching_rate(s.model, fps) for s in this_rank}))
        rows = [{"name": s.name, "family": s.family, "role": s.role, "accuracy": accuracies[s.name],
                 "matching_rate": rates[s.name]} for s in suspects]
        pos = [r["matching_rate"] for r in rows if r["role"] == "positive"]
        neg = [r["matching_rate"] for r in rows if r["role"] == "negative"]
        return {**fields, "n_fingerprints": len(fps), "extract_seconds": seconds,
                "candidates_tried": fps.meta["candidates_tried"], "suspects": rows,
                "aruc": metrics.aruc(pos, neg), "roc_auc": metrics.roc_auc(pos, neg)}

    runs = []
    for k in (ks if "ipguard" in methods else ()):
        start = time.perf_counter()
        fps = extract_fingerprints(owner, n, k=float(k), input_shape=input_shape, seed=seed, **options)
        run = judge(fps, time.perf_counter() - start, method="ipguard", k=float(k))
        runs.append(run)
        log(f"k={k:g}: {len(fps)} fingerprints in {run['extract_seconds']:.1f} s, ARUC {run['aruc']:.3f}, "
            f"ROC AUC {run['roc_auc']:.3f}")
    if "selected" in methods:
        start = time.perf_counter()
        if selected is None:
            from ..selection.protect import protect  # same layer; loaded only when asked for

            selected = protect(owner, train_set, n, **{"progress": False, "log": log, **(selection_options or {})})
        check_disjoint(suspects, selected)
        runs.append(judge(selected, time.perf_counter() - start, **selected_fields(selected)))
        log(f"{runs[-1]['label']}: ARUC {runs[-1]['aruc']:.3f}, ROC AUC {runs[-1]['roc_auc']:.3f}")
    owner_acc = accuracy(owner, test_set) if test_set is not None else None
    return {"owner": {"name": owner_name, "accuracy": owner_acc},
            "settings": {"ks": [float(k) for k in ks], "n": n, "seed": seed, "methods": list(methods),
                         "extract_options": {k: str(v) for k, v in (extract_options or {}).items()}},
            "runs": runs}


def selected_fields(fps: FingerprintSet) -> dict:
    """How a selected set's run is labelled in a report: its k and what selection chose."""
    protect = fps.meta.get("protect", {})
    chosen = protect.get("chosen") or f"k={fps.meta.get('k')}"
    selection = fps.meta.get("selection", {})
    return {"method": "selected", "k": None, "label": f"selected ({chosen})", "threshold": fps.meta.get("threshold"),
            "selection": {"pool_size": selection.get("pool_size"), "score": selection.get("score"),
                          "chosen": chosen, "candidates": protect.get("candidates"),
                          "timings": protect.get("timings")}}


def check_disjoint(suspects: Sequence[Suspect], selected: FingerprintSet) -> None:
    """No evaluated suspect is a reference of the selection: same weights (by the hashes
    the selected set records) or any shared tensor (when the reference objects are at hand)."""
    recorded = selected.meta.get("selection", {}).get("references", {})
    hashes = {entry.get("sha256") for role in recorded.values() for entry in role} - {None}
    storages = {t.untyped_storage().data_ptr() for ref in getattr(selected, "references", ())
                for t in list(ref.model.parameters()) + list(ref.model.buffers()) if t.numel()}
    for suspect in suspects:
        try:
            same = state_dict_sha256(suspect.model) in hashes
        except ValueError:   # non-tensor state: compared by storage only
            same = False
        tensors = [t for t in list(suspect.model.parameters()) + list(suspect.model.buffers()) if t.numel()]
        if same or any(t.untyped_storage().data_ptr() in storages for t in tensors):
            raise ValueError(f"suspects: {suspect.name} is one of the selection's reference models (or shares "
                             "weights with one); the selected fingerprints would be judged on their own references")


def _merge(parts: list[dict]) -> dict:
    merged = {}
    for part in parts:
        merged.update(part)
    return merged

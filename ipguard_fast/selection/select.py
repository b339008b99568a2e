"""select_fingerprints(): keep the pool points that copies keep and independent models do not.

The kept fingerprints are the pool's own (images, labels and every other field
bit-identical, in pool order); what selection adds is the choice, recorded in the
meta under "selection": the pool's size and origin, each kept point's index in the
pool and score, the score's name, and the references by name and weight hash.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from .._validate import positive_int
from ..fingerprints import FingerprintSet, state_dict_sha256
from ..io.suspects import resolve_suspect
from .scores import SCORES, TEMPERATURE, ReferenceOutputs, reference_outputs, separation_scores
from .spread import check_share, spread_top_n, top_n

__all__ = ["check_pool", "describe_reference", "named_references", "select_fingerprints", "selected_set", "top_n"]


def select_fingerprints(pool: FingerprintSet, n: int, *, positives: Sequence[Any], negatives: Sequence[Any],
                        score: str = "separation", batch_size: int = 256,
                        owner: nn.Module | None = None, label_share: float | None = None) -> FingerprintSet:
    """The n pool points with the highest score: positives keep their label, negatives do not.

    pool: a FingerprintSet (e.g. extract_fingerprints with n several times what you keep;
    several sets merged with ipguard_fast.selection.merge_pools). positives / negatives:
    lists of reference suspects the owner made or owns: copies of its model (fine-tuned,
    pruned, distilled...) and independently trained models; anything matching_rate
    accepts (modules, model files, label-only callables), optionally as
    ``evaluation.Suspect`` objects whose names are then recorded.

    score: "separation" (default) ranks by mean_pos sigmoid(m / T) - mean_neg sigmoid(m / T),
    m the reference's logit margin for the owner's label and T = 1; a label-only reference
    counts as 1 or 0. "agreement" uses 1 / 0 for every reference (the plain agreement
    difference; 0.02-0.05 ARUC worse on held-out suspects). Ties go to the lower pool index,
    so the result is deterministic. owner: when given, the pool must have been extracted
    from it (its recorded weight hash). label_share: at most this multiple of an even
    share of the n points per label (spread.py; spread.LABEL_SHARE is the share measured);
    None, the default: at most half of them on one label (spread.MOST_ONE_LABEL).
    """
    n = check_pool(pool, n, owner)
    pos_refs = named_references("positives", positives)
    neg_refs = named_references("negatives", negatives)
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    positive_int("batch_size", batch_size)
    pos = reference_outputs([r for _, r in pos_refs], pool, batch_size=batch_size,
                            names=[f"positives[{i}]" for i in range(len(pos_refs))])
    neg = reference_outputs([r for _, r in neg_refs], pool, batch_size=batch_size,
                            names=[f"negatives[{i}]" for i in range(len(neg_refs))])
    scores = separation_scores(pos, neg, score)
    kept = spread_top_n(scores, n, pool.labels, pool.num_classes, check_share(label_share))
    references = {"positives": [describe_reference(name, ref) for name, ref in pos_refs],
                  "negatives": [describe_reference(name, ref) for name, ref in neg_refs]}
    return selected_set(pool, kept, scores, score=score, references=references, rates=_rates(pos, neg, kept))


def check_pool(pool: Any, n: Any, owner: nn.Module | None) -> int:
    """The checks select_fingerprints and protect share: a non-empty pool of at least n
    points, from `owner` when one is given. Returns n."""
    if not isinstance(pool, FingerprintSet):
        raise ValueError(f"pool: must be a FingerprintSet, got {type(pool).__name__}")
    if len(pool) == 0:
        raise ValueError("pool: is empty")
    n = positive_int("n", n)
    if n > len(pool):
        raise ValueError(f"n: {n} fingerprints asked for, but the pool holds only {len(pool)}")
    if owner is not None:
        if not isinstance(owner, nn.Module):
            raise ValueError(f"owner: must be an nn.Module, got {type(owner).__name__}")
        recorded = pool.meta.get("model_sha256")
        if recorded is not None and recorded != state_dict_sha256(owner):
            raise ValueError(f"pool: was extracted from another model (weights {recorded[:12]}..., the owner's "
                             f"are {state_dict_sha256(owner)[:12]}...)")
    return n


def selected_set(pool: FingerprintSet, kept: torch.Tensor, scores: torch.Tensor, *, score: str,
                 references: dict, rates: dict | None = None, extra: dict | None = None) -> FingerprintSet:
    """The pool's points at `kept` with the selection recorded in meta["selection"]."""
    meta = {key: value for key, value in pool.meta.items() if key not in ("pool", "selection")}
    pool_k = pool.meta.get("pool", {}).get("k")
    if pool_k is not None:   # a merged pool: each kept point's own k
        meta["k"] = sorted({pool_k[i] for i in kept.tolist()} - {None})   # None: a mistake, found without a k
        meta["k_per_fingerprint"] = [pool_k[i] for i in kept.tolist()]
    meta["requested"] = int(len(kept))
    meta["selection"] = {
        "selected": True,
        "pool_size": len(pool),
        "pool_parts": pool.meta.get("pool", {}).get("parts"),
        "score": score,
        "temperature": TEMPERATURE if score == "separation" else None,
        "pool_indices": kept.tolist(),
        "scores": [round(float(s), 6) for s in scores[kept]],
        "references": references,
        "reference_rates_on_selection": rates,
        **(extra or {}),
    }
    return FingerprintSet(images=pool.images[kept].clone(), labels=pool.labels[kept].clone(),
                          source_labels=pool.source_labels[kept].clone(), margins=pool.margins[kept].clone(),
                          steps=pool.steps[kept].clone(), meta=meta)


def describe_reference(name: str, reference: Any) -> dict:
    """A reference as the meta records it: its name, and its weights' SHA-256 when it is a module."""
    entry: dict[str, Any] = {"name": name}
    if isinstance(reference, nn.Module):
        try:
            entry["sha256"] = state_dict_sha256(reference)
        except ValueError:   # non-tensor state: named only
            pass
    return entry


def named_references(name: str, value: Any) -> list[tuple[str, Any]]:
    """(name, suspect object) for each entry; paths are loaded, Suspect objects unwrapped."""
    if isinstance(value, (str, os.PathLike)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name}: must be a list of reference models (modules, model files or callables)")
    entries = list(value)
    if not entries:
        raise ValueError(f"{name}: is empty; selection needs at least one reference model")
    out = []
    for i, entry in enumerate(entries):
        label = f"{name}[{i}]"
        if hasattr(entry, "model") and hasattr(entry, "name") and hasattr(entry, "role"):   # evaluation.Suspect
            label, entry = entry.name, entry.model
        elif isinstance(entry, (str, os.PathLike)):
            label = os.fspath(entry)
            try:
                entry = resolve_suspect(entry)
            except (ValueError, FileNotFoundError) as exc:
                raise ValueError(f"{name}[{i}]: {exc}") from exc
        elif isinstance(entry, nn.Module):
            label = f"{name}[{i}]:{type(entry).__name__}"
        elif not callable(entry):
            raise ValueError(f"{name}[{i}]: must be a module, a model file or a callable, got {type(entry).__name__}")
        out.append((label, entry))
    return out


def _rates(pos: ReferenceOutputs, neg: ReferenceOutputs, kept: torch.Tensor) -> dict:
    """The references' own matching rates on the kept points (what selection optimised)."""
    return {"positives": [round(float(r), 4) for r in pos.columns(kept).rates()],
            "negatives": [round(float(r), 4) for r in neg.columns(kept).rates()]}

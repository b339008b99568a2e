"""Automatic choices judged on references that the selection being judged did not use.

protect() makes two choices around selection: which configuration to select with (the
negatives' weight, and with a list of k given, each k alone or all merged) and the
verdict threshold. Judging either on the references
that did the selecting would reward the selection for fitting them, so both use
*held-out rates*: each reference's matching rate on a selection made without it.

* Leave one kind out: for every recipe kind (RTAL, distill-small, the owner's
  architecture trained at lr 3e-3...), the selection is redone without all replicas of
  that kind, and those replicas are measured on it. That is how an attack or an
  independent recipe the owner never simulated meets the fingerprints -- stricter than
  holding out one seed of a recipe whose siblings still select. The score is a mean
  over references, so each redo is one subtraction and a sort: no model runs again.
* Validation references (protect's validation_replicas, default one replica) are
  measured on the full selection and join the held-out rates; after refinement the
  threshold comes from their rates on the refined set and those of the threshold's own
  negatives (split "threshold", recipe.THRESHOLD_NEGATIVES), which no choice sees.

A configuration is a pool (a k, or all k merged; with held-out data given, also with the
owner's mistakes on it) and the negatives' weight in the score
(mean_pos - w * mean_neg, w in NEGATIVE_WEIGHTS): the easy copies (pruned, quantised)
keep nearly every point, so the ranking is a trade between the hard copies (RTAL,
distillation) and the independents, and which trade holds out best depends on the
owner. The configuration with the highest held-out ARUC wins (then ROC AUC, then the pool
without mistakes, then the larger pool: a merged multi-k pool can keep any of its single-k
parts' points).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .. import metrics
from .scores import ReferenceOutputs, soft_agreement
from .spread import spread_top_n

__all__ = ["NEGATIVE_WEIGHTS", "Candidate", "References", "choose", "threshold_between"]

NEGATIVE_WEIGHTS = (0.5, 1.0, 2.0)


@dataclass
class References:
    """The references' outputs on the whole pool, by role, with each row's kind (the group
    left out together), and the validation references' outputs."""

    positives: ReferenceOutputs
    negatives: ReferenceOutputs
    positive_kinds: Sequence[str]
    negative_kinds: Sequence[str]
    validation_positives: ReferenceOutputs | None = None
    validation_negatives: ReferenceOutputs | None = None
    labels: torch.Tensor | None = None       # the owner's label of each pool point (spread.py)
    num_classes: int | None = None
    label_share: float | None = None         # None: at most half on one label

    def top(self, scores: torch.Tensor, count: int, columns: torch.Tensor) -> torch.Tensor:
        """Positions in `columns` of the `count` points a selection keeps by `scores` (over
        those columns), spread over labels as protect keeps them."""
        labels = self.labels[columns] if self.labels is not None else None
        return spread_top_n(scores, count, labels, self.num_classes, self.label_share)


@dataclass
class Candidate:
    """One configuration: a name, the pool columns it may select from, and its outcome."""

    name: str
    columns: torch.Tensor
    kept: torch.Tensor | None = None                     # pool indices of its selection
    scores: torch.Tensor | None = None                   # its scores over the pool (NaN off its columns)
    held_out: dict = field(default_factory=dict)         # {"positives": [...], "negatives": [...]} rates,
    #                                                      "negative_sources": where each negative rate came from
    validation: dict | None = None
    negative_weight: float = 1.0                         # score = mean_pos - weight * mean_neg
    init: str = "data"                                   # the start kind of its pool points
    init_meta: str | None = None                         # how the pool records that start
    mistakes: bool = False                               # its columns include the owner's held-out mistakes


def choose(candidates: list[Candidate], refs: References, n: int, score: str) -> Candidate:
    """Select n points for each candidate; judge each by its held-out ARUC; return the winner."""
    pos_soft, neg_soft = soft_agreement(refs.positives, score), soft_agreement(refs.negatives, score)
    for candidate in candidates:
        c = candidate.columns
        count = min(n, len(c))
        sp, sn = pos_soft[:, c], neg_soft[:, c]
        w = candidate.negative_weight
        local = sp.mean(0) - w * sn.mean(0)
        candidate.kept = c[refs.top(local, count, c)]
        candidate.scores = torch.full((pos_soft.shape[1],), float("nan"), dtype=local.dtype).index_put_((c,), local)
        pos_rates, neg_rates = [], []
        for outputs, v in ((refs.validation_positives, pos_rates), (refs.validation_negatives, neg_rates)):
            if outputs is not None and outputs.agrees.shape[0]:
                v += outputs.columns(candidate.kept).rates().tolist()
        keep = lambda scores: refs.top(scores, count, c)  # noqa: E731
        pos_rates += [rate for _, rate in _left_out_rates(sp, sn, refs.positives.agrees[:, c], refs.positive_kinds,
                                                          keep, positive=True, weight=w)]
        left_out = _left_out_rates(sn, sp, refs.negatives.agrees[:, c], refs.negative_kinds, keep, positive=False,
                                   weight=w)
        sources = (["validation replica"] * len(neg_rates)
                   + [f"{kind} (held out of the selection)" for kind, _ in left_out])
        neg_rates += [rate for _, rate in left_out]
        candidate.held_out = {"positives": pos_rates, "negatives": neg_rates, "negative_sources": sources}
        candidate.validation = {"aruc": metrics.aruc(pos_rates, neg_rates),
                                "roc_auc": metrics.roc_auc(pos_rates, neg_rates),
                                "min_positive": min(pos_rates), "max_negative": max(neg_rates),
                                "pool_size": int(len(c))}
    # Ties go to the boundary points alone (what the mistakes add did not help), then to the
    # larger pool, then to the plain weight.
    return max(candidates, key=lambda c: (round(c.validation["aruc"], 6), round(c.validation["roc_auc"], 6),
                                          not c.mistakes, len(c.columns), c.negative_weight == 1.0))


def _left_out_rates(own: torch.Tensor, other: torch.Tensor, agrees: torch.Tensor, kinds: Sequence[str],
                    keep: Callable[[torch.Tensor], torch.Tensor], *, positive: bool,
                    weight: float = 1.0) -> list[tuple[str, float]]:
    """For each kind: its rows' (kind, matching rate) on the points selected without that
    kind (own: this role's soft agreements [R, P], other: the other role's; keep: the kept
    positions for a score over the columns; weight: the negatives' weight in the score)."""
    rates: list[tuple[str, float]] = []
    kinds = list(kinds)
    for kind in dict.fromkeys(kinds):
        out = torch.tensor([k == kind for k in kinds])
        if bool(out.all()):   # the only kind of its role: nothing would be left to select with
            continue
        rest = own[~out].mean(0)
        scores = rest - weight * other.mean(0) if positive else other.mean(0) - weight * rest
        kept = keep(scores)
        rates += [(kind, rate) for rate in agrees[out][:, kept].double().mean(1).tolist()]
    return rates


def threshold_between(positive_rates: list[float], negative_rates: list[float], n: int) -> float:
    """The verdict threshold from held-out reference rates: midway between the highest
    negative and the median positive, and always above the highest negative.

    Why not just above the highest negative: independents the owner did not simulate can
    match more than its references (on the hard bed, independents trained exactly like
    the owner reach 0.37-0.44 where the held-out references reached 0.2), and accusing an
    independent model is the error a verdict must avoid. Why the median positive and not
    the lowest: the lowest is a heavily changed copy (distillation into another
    architecture, left out of the selection, keeps a few percent), and a threshold below
    the negatives would accuse independents to catch it. ARUC and ROC AUC report the
    separation at every threshold; this one is the operating point.
    """
    top_negative = max(negative_rates)
    ordered = sorted(positive_rates)
    median_positive = ordered[len(ordered) // 2]
    threshold = (top_negative + median_positive) / 2 if median_positive > top_negative else top_negative + 1.0 / n
    return float(min(1.0, max(threshold, top_negative + 1.0 / n)))

"""Suspects' matching rates turned into what a user reads: which positives count (a copy
that lost its usefulness is no theft to catch), the rates ARUC is computed on, and the
verdicts at the fingerprint set's threshold -- false accusations first."""
from __future__ import annotations

from typing import Sequence

from .. import metrics
from ..verdict_threshold import DEFAULT_THRESHOLD

__all__ = ["judged"]


def judged(rows: Sequence[dict], threshold: float | None, owner_accuracy: float | None,
           useful_drop: float | None, conclusive: bool = True) -> tuple[float, float, dict]:
    """(ARUC, ROC AUC, verdicts) of suspect `rows` (name, role, accuracy, matching_rate);
    each row gains "counted". A positive whose accuracy is more than `useful_drop` below
    the owner's is reported in verdicts["not_useful"] and left out of the rest (ARUC and
    ROC AUC are NaN when no counted suspect of a role is left).
    conclusive False (verdicts.conclusive_threshold, or a threshold at chance): verify calls no suspect a copy at this
    set's threshold, so nobody is accused and every counted copy is missed.
    A row whose matches its label frequencies explain (row["beyond_label_bias"] False) is
    called no copy at any rate, as verify calls it (listed in verdicts["label_bias"]).
    threshold None: the set carries no calibrated threshold, to which verify gives no verdict;
    the verdicts are those at DEFAULT_THRESHOLD, what a caller who typed --threshold 0.5 gets,
    marked verdicts["calibrated"] False (what an uncalibrated rate would do is worth seeing)."""
    calibrated = threshold is not None
    threshold = threshold if calibrated else DEFAULT_THRESHOLD
    for row in rows:
        useless = (row["role"] == "positive" and useful_drop is not None and owner_accuracy is not None
                   and row["accuracy"] is not None and row["accuracy"] < owner_accuracy - useful_drop)
        row["counted"] = not useless
    pos = [r for r in rows if r["role"] == "positive" and r["counted"]]
    neg = [r for r in rows if r["role"] == "negative"]
    accused = [r["name"] for r in neg if conclusive and _called_a_copy(r, threshold)]
    missed = [r["name"] for r in pos if not conclusive or not _called_a_copy(r, threshold)]
    verdicts = {"threshold": threshold, "calibrated": calibrated, "conclusive": conclusive,
                "positives": len(pos), "negatives": len(neg),
                "tpr": (len(pos) - len(missed)) / len(pos) if pos else None,
                "false_accusations": accused, "missed": missed,
                "not_useful": [r["name"] for r in rows if not r["counted"]],
                "label_bias": [r["name"] for r in rows if r["matching_rate"] >= threshold
                               and not r.get("beyond_label_bias", True)]}
    pos_rates, neg_rates = [r["matching_rate"] for r in pos], [r["matching_rate"] for r in neg]
    if not pos_rates or not neg_rates:   # e.g. every copy no longer useful: no curve, the verdicts stand
        return float("nan"), float("nan"), verdicts
    return metrics.aruc(pos_rates, neg_rates), metrics.roc_auc(pos_rates, neg_rates), verdicts


def _called_a_copy(row: dict, threshold: float) -> bool:
    """As verify: at or above the threshold, and more matches than the suspect's own label
    frequencies explain (label_bias.py; a row from before that test carries no flag)."""
    return row["matching_rate"] >= threshold and row.get("beyond_label_bias", True)

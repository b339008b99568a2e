"""Robustness/uniqueness metrics of a fingerprinting method, from matching rates.

Given the matching rates of *positive* suspects (copies of the owner model: fine-tuned,
pruned, ...) and *negative* suspects (independently trained models), and a threshold t:

* robustness R(t)  = share of positives with rate >= t (copies correctly flagged);
* uniqueness U(t)  = share of negatives with rate <  t (independent models correctly cleared).

R falls and U rises as t grows. IPGuard summarises the trade-off with ARUC, the area under
min(R(t), U(t)) over t in [0, 1]: 1.0 means some threshold separates copies from independent
models perfectly over the whole range, 0 means no threshold does anything useful.
ROC AUC is the threshold-free companion: the probability a random positive out-scores a
random negative.

All functions are pure and take lists or 1-D arrays of rates in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["aruc", "robustness", "roc_auc", "ru_curve", "uniqueness"]


def robustness(positive_rates: Any, t: Any) -> float | np.ndarray:
    """Share of positive rates >= t; a float for scalar ``t``, an array for an array of thresholds."""
    rates = _check_rates(positive_rates, "positive_rates")
    thresholds, scalar = _check_thresholds(t)
    below = np.searchsorted(rates, thresholds, side="left")  # count of rates < t
    share = 1.0 - below / rates.size
    return float(share) if scalar else share


def uniqueness(negative_rates: Any, t: Any) -> float | np.ndarray:
    """Share of negative rates < t; a float for scalar ``t``, an array for an array of thresholds."""
    rates = _check_rates(negative_rates, "negative_rates")
    thresholds, scalar = _check_thresholds(t)
    share = np.searchsorted(rates, thresholds, side="left") / rates.size
    return float(share) if scalar else share


def ru_curve(positive_rates: Any, negative_rates: Any, num: int = 1001) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, R(t), U(t)) on ``num`` uniformly spaced thresholds from 0 to 1 inclusive, for plotting."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
        raise ValueError(f"num: must be an int >= 2, got {num!r}")
    t = np.linspace(0.0, 1.0, int(num))
    return t, robustness(positive_rates, t), uniqueness(negative_rates, t)


def aruc(positive_rates: Any, negative_rates: Any) -> float:
    """Area under min(R(t), U(t)) for t in [0, 1], computed exactly.

    R and U only change at the observed rates, so between consecutive breakpoints (the
    sorted distinct rates plus 0 and 1) both are constant: evaluating them at each gap's
    midpoint and weighting by the gap's width integrates exactly, with no sampling error.
    """
    pos = _check_rates(positive_rates, "positive_rates")
    neg = _check_rates(negative_rates, "negative_rates")
    breakpoints = np.unique(np.concatenate([pos, neg, [0.0, 1.0]]))
    widths = np.diff(breakpoints)
    midpoints = breakpoints[:-1] + widths / 2
    heights = np.minimum(robustness(pos, midpoints), uniqueness(neg, midpoints))
    return float(np.sum(heights * widths))


def roc_auc(positive_rates: Any, negative_rates: Any) -> float:
    """P(random positive rate > random negative rate), ties counting 1/2 (Mann-Whitney U / (P*N))."""
    pos = _check_rates(positive_rates, "positive_rates")
    neg = _check_rates(negative_rates, "negative_rates")
    lower = np.searchsorted(neg, pos, side="left")    # negatives strictly below each positive
    not_higher = np.searchsorted(neg, pos, side="right")  # negatives below or tied
    wins = lower.sum() + 0.5 * (not_higher - lower).sum()
    return float(wins / (pos.size * neg.size))


def _check_rates(values: Any, name: str) -> np.ndarray:
    """Validate matching rates and return them as a sorted float64 array."""
    try:
        rates = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: must be a list or 1-D array of numbers in [0, 1]: {exc}") from exc
    if rates.ndim != 1:
        raise ValueError(f"{name}: must be a list or 1-D array, got shape {rates.shape}")
    if rates.size == 0:
        raise ValueError(f"{name}: is empty; need at least one matching rate")
    if np.isnan(rates).any():
        raise ValueError(f"{name}: contains NaN")
    if (rates < 0).any() or (rates > 1).any():
        raise ValueError(f"{name}: must lie in [0, 1], got values from {rates.min()} to {rates.max()}")
    return np.sort(rates)


def _check_thresholds(t: Any) -> tuple[np.ndarray, bool]:
    """Thresholds as a float array plus whether the input was a scalar. Any non-NaN real is allowed."""
    try:
        thresholds = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"t: must be a number or an array of numbers: {exc}") from exc
    if np.isnan(thresholds).any():
        raise ValueError("t: contains NaN")
    return thresholds, thresholds.ndim == 0

"""The verdict threshold with the fingerprints' own sampling noise added.

protect() calibrates a level between its held-out negatives and positives (choice.
threshold_between). A suspect's matching rate on n fingerprints is a count out of n, and
a count a little above the level is what n points give by chance to a model whose
agreement on such points is at the level: on the foreign and hard beds the two innocent
models protect accused kept 0.90 and 0.64 of 100 points against levels of 0.865 and 0.58
(benchmarks/results/three-beds-final-layout-2026-12-05), 1.0 and 1.2 standard deviations
above. So the stored threshold is the smallest count k/n that a model agreeing at the
level reaches with probability at most SIGNIFICANCE (a one-sided exact binomial test):
verify's "rate >= threshold" then accuses only agreement shown above the level, and a
copy that keeps nearly every point is caught as before.
"""
from __future__ import annotations

from ..binomial import binomial_pmf, binomial_tail

__all__ = ["SIGNIFICANCE", "binomial_tail", "significant_threshold"]

SIGNIFICANCE = 0.05


def significant_threshold(level: float, n: int, significance: float = SIGNIFICANCE) -> tuple[float, bool]:
    """(k / n for the smallest count k with P(Binomial(n, level) >= k) <= `significance`,
    True), or (1.0, False) when not even n of n is that unlikely at `level` (too few
    fingerprints to show agreement above it). k / n is one division, the very float
    verify's rate has for k matches of n, so "rate >= threshold" is "at least k matches"."""
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    if not 0.0 < significance < 0.5:   # from 0.5 up, k / n could fall to the level or below it
        raise ValueError(f"significance: must be in (0, 0.5), got {significance}")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level: must be in [0, 1], got {level}")
    if level == 0.0:
        return 1 / n, True            # a model that never agrees cannot reach one match by chance
    count, tail = n, 0.0
    while count >= 0:                 # P(X = count) from the top (small terms first) until the tail passes
        tail += binomial_pmf(n, count, level)
        if tail > significance:
            break
        count -= 1
    if count + 1 > n:
        return 1.0, False
    return (count + 1) / n, True


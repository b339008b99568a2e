"""The upper tail of a binomial distribution, exactly, at any n: what the verdicts' tests of
"more matches than this rate of agreement gives by chance" rest on (selection/significance.py
for protect's stored threshold, label_bias.py for a suspect's own label frequencies)."""
from __future__ import annotations

import math

__all__ = ["binomial_pmf", "binomial_tail"]


def binomial_tail(n: int, p: float, k: int) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0 or p >= 1.0:
        return 1.0 if k <= n else 0.0
    if k > n or p <= 0.0:
        return 0.0
    return min(1.0, sum(binomial_pmf(n, count, p) for count in range(n, k - 1, -1)))


def binomial_pmf(n: int, count: int, p: float) -> float:
    """P(X = count), in log space so that no binomial coefficient overflows at any n."""
    if p >= 1.0:
        return 1.0 if count == n else 0.0
    if p <= 0.0:
        return 1.0 if count == 0 else 0.0
    log_choose = math.lgamma(n + 1) - math.lgamma(count + 1) - math.lgamma(n - count + 1)
    return math.exp(log_choose + count * math.log(p) + (n - count) * math.log1p(-p))

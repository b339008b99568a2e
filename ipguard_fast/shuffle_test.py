"""How often a suspect whose answers ignore the points matches the owner at least so often:
the exact null of label_bias.py's test.

A suspect's answers shuffled over the fingerprints keep its label frequencies and lose any
tie to the points. Its matches then follow the hit distribution of a random permutation on
a board of blocks -- one block of (owner's count) x (suspect's count) per label -- which
rook theory gives exactly: with r_k the board's rook numbers (the product of the blocks'
C(a, k) C(b, k) k!), the permutations with at least t hits number

    sum over k >= t of (-1)^(k - t) C(k - 1, t - 1) r_k (n - k)!

Exact in Python integers up to EXACT_UP_TO points (a fraction of a second at the worst,
two labels); beyond, the alternating sum costs seconds to minutes, and a Monte Carlo
permutation test takes over: p = (1 + shuffles at least as good) / (1 + SHUFFLES), a test
whose false-positive rate never exceeds its level (a seeded generator, so a verdict
repeats). Its cost is SHUFFLES x n (about 6 s at 10,000 points on 2 cores), so past
SAMPLED_UP_TO points -- a fingerprint file comes from anyone, and verify must not spend
hours on one that is merely large -- a concentration bound replaces it: for the hits S of a
random permutation on a 0/1 board with mean mu, P(|S - mu| >= t) <= 2 exp(-t^2 / (4 mu + 2t))
(Chatterjee, "Stein's method for concentration inequalities", PTRF 2007, Prop. 1.1). It is
never below the exact tail, so past that size the test can only be more reluctant to call a
copy, never less; on spread labels a copy is still shown by a wide margin (mu is about n /
the number of classes), on labels crowded onto one class the bound is loose and a copy
whose matches stay near mu is not shown. The binomial at the same mean rate, used before, was looser in some cases near
the boundary (20 points, two labels: 0.85 % where the shuffles give 1.24 %).
"""
from __future__ import annotations

import math

import torch

__all__ = ["EXACT_UP_TO", "SAMPLED_UP_TO", "SHUFFLES", "shared_label_counts", "shuffled_matches_tail"]

EXACT_UP_TO = 500
SAMPLED_UP_TO = 20_000
SHUFFLES = 9_999
_SHUFFLE_SEED = 0
_ELEMENTS_PER_CHUNK = 1 << 22   # shuffled answers held at once: 32 MiB of int64


def shuffled_matches_tail(owner_labels: torch.Tensor, answers: torch.Tensor, matches: int) -> float:
    """P(at least `matches` of the points match) when `answers` are shuffled over the points:
    exact up to EXACT_UP_TO points, a Monte Carlo permutation p-value up to SAMPLED_UP_TO,
    a concentration bound (never below the exact tail) beyond. Both label
    vectors are 1-D, of one length, of non-negative integers (label_bias checks them)."""
    owner_labels, answers = owner_labels.reshape(-1).long().cpu(), answers.reshape(-1).long().cpu()
    n = len(owner_labels)
    if matches <= 0:
        return 1.0
    if matches > n:
        return 0.0
    if n <= EXACT_UP_TO:
        return _exact_tail(owner_labels, answers, matches)
    if n <= SAMPLED_UP_TO:
        return _sampled_tail(owner_labels, answers, matches)
    return _bounded_tail(owner_labels, answers, matches)


def shared_label_counts(owner_labels: torch.Tensor, answers: torch.Tensor) -> list[tuple[int, int]]:
    """(owner's count, suspect's count) of every label both give, counted over the labels
    present (a suspect may answer 10**15 when a set records no class count: no tensor is
    sized by a label)."""
    n = len(owner_labels)
    _, index = torch.unique(torch.cat([owner_labels, answers]), return_inverse=True)
    size = int(index.max()) + 1
    owner = torch.bincount(index[:n], minlength=size).tolist()
    suspect = torch.bincount(index[n:], minlength=size).tolist()
    return [(a, b) for a, b in zip(owner, suspect) if a and b]


def _exact_tail(owner_labels: torch.Tensor, answers: torch.Tensor, matches: int) -> float:
    rooks = [1]   # rook numbers of the board so far: rooks[k] ways to place k non-attacking rooks
    for a, b in shared_label_counts(owner_labels, answers):
        block = [math.comb(a, k) * math.comb(b, k) * math.factorial(k) for k in range(min(a, b) + 1)]
        product = [0] * (len(rooks) + len(block) - 1)
        for i, r in enumerate(rooks):
            for j, s in enumerate(block):
                product[i + j] += r * s
        rooks = product
    n = len(owner_labels)
    at_least = 0
    for k in range(matches, len(rooks)):
        term = math.comb(k - 1, matches - 1) * rooks[k] * math.factorial(n - k)
        at_least += -term if (k - matches) % 2 else term
    return at_least / math.factorial(n)   # int / int: correctly rounded at any size


def _sampled_tail(owner_labels: torch.Tensor, answers: torch.Tensor, matches: int) -> float:
    n = len(owner_labels)
    generator = torch.Generator().manual_seed(_SHUFFLE_SEED)
    chunk = max(1, _ELEMENTS_PER_CHUNK // n)
    as_good, done = 0, 0
    while done < SHUFFLES:
        count = min(chunk, SHUFFLES - done)
        order = torch.rand(count, n, generator=generator).argsort(dim=1)
        as_good += int(((answers[order] == owner_labels).sum(dim=1) >= matches).sum())
        done += count
    return (1 + as_good) / (1 + SHUFFLES)


def _bounded_tail(owner_labels: torch.Tensor, answers: torch.Tensor, matches: int) -> float:
    """Chatterjee's two-sided bound at the exact mean: O(n), and never below the exact tail."""
    mean = sum(a * b for a, b in shared_label_counts(owner_labels, answers)) / len(owner_labels)
    excess = matches - mean
    if excess <= 0:
        return 1.0
    return min(1.0, 2.0 * math.exp(-excess * excess / (4.0 * mean + 2.0 * excess)))

"""Whether a suspect's agreement with the owner's labels is more than its own label
frequencies explain.

A matching rate counts the points on which a suspect answers the owner's label. A suspect
whose answers do not depend on the point at all -- one label for every image, or labels
drawn at its own frequencies -- still agrees on a share of them: the sum over labels of
(the share of the points the owner gives that label) x (the share the suspect answers with
it). On a set whose labels are spread over the classes that is about 1 / the number of
classes, far below any calibrated threshold. On a set crowded onto one label it is not:
protect's selected points on the demo owner carried label 4 on 97 of 100, and a model that
answers 4 for every image matched 0.97 of them against a stored threshold of 0.73, so it was
called pirated (measured, ipguard demo at e13acd9). The same holds for an innocent model
that falls back to one class on unusual inputs.

So verify calls a suspect a copy only when its matches are also unlikely for a suspect
whose answers ignore the points: the exact test of its answers shuffled over the points
(shuffle_test.py), one-sided, at LABEL_BIAS_SIGNIFICANCE. (Until 2026-12-07 a binomial at
label_bias_rate stood in for the shuffles; it was looser in some cases near the boundary:
20 points, owner 13/7 and suspect 11/9 over two labels, 16 matches -- 0.85 % by the
binomial, 1.24 % exactly.) On spread sets it never binds for a copy; on a crowded set it
says that the set cannot tell a copy from a biased model, which is the truth.
"""
from __future__ import annotations

import torch

from .shuffle_test import shared_label_counts, shuffled_matches_tail

__all__ = ["LABEL_BIAS_SIGNIFICANCE", "beyond_label_bias", "copy_can_be_shown", "label_bias_chance", "label_bias_rate"]

# One in a hundred: a suspect whose answers ignore the points reaches its matches this
# seldom. Stricter than protect's threshold margin (0.05) because this test stands alone:
# it is what stops a model that answers one label everywhere.
LABEL_BIAS_SIGNIFICANCE = 0.01


def label_bias_rate(owner_labels: torch.Tensor, answers: torch.Tensor) -> float:
    """The matching rate a suspect giving `answers` reaches, on average, if its answers are
    shuffled over the points: sum over labels of the owner's share times the suspect's."""
    owner_labels, answers = _checked(owner_labels, answers)
    n = len(owner_labels)
    return sum(a * b for a, b in shared_label_counts(owner_labels, answers)) / (n * n)


def label_bias_chance(owner_labels: torch.Tensor, answers: torch.Tensor) -> float:
    """How often `answers` shuffled over the points match `owner_labels` at least as often as
    they do: the p-value of "its label frequencies explain its matches"."""
    owner_labels, answers = _checked(owner_labels, answers)
    return shuffled_matches_tail(owner_labels, answers, int((owner_labels == answers).sum()))


def beyond_label_bias(owner_labels: torch.Tensor, answers: torch.Tensor,
                      significance: float = LABEL_BIAS_SIGNIFICANCE) -> bool:
    """True when the suspect's answers shuffled over the points match `owner_labels` as often
    as `answers` do in at most a share `significance` of the shufflings (label_bias_chance)."""
    return label_bias_chance(owner_labels, answers) <= significance


def copy_can_be_shown(owner_labels: torch.Tensor, significance: float = LABEL_BIAS_SIGNIFICANCE) -> bool:
    """Whether a suspect that matches every point passes this test: False when the labels are
    too few or too crowded for any copy to be told from a model that ignores the points (4
    points on 4 labels: shuffled answers match all four once in 24), so no verdict on a file
    with these labels can accuse anyone, whatever its threshold."""
    return beyond_label_bias(owner_labels, owner_labels, significance)


def _checked(owner_labels: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both label vectors flat, int64 and on the CPU: one length, at least one point, no label below 0."""
    owner_labels, answers = owner_labels.reshape(-1).long().cpu(), answers.reshape(-1).long().cpu()
    if len(owner_labels) != len(answers):
        raise ValueError(f"answers: {len(answers)} labels for {len(owner_labels)} fingerprints")
    if len(owner_labels) == 0:
        raise ValueError("answers: no fingerprints, no rate")
    if int(min(owner_labels.min(), answers.min())) < 0:
        raise ValueError("answers: labels must be 0 or more")
    return owner_labels, answers

"""How many fingerprints may carry the same label: the top of a ranking, spread over labels.

The idea: a suspect's matching rate is a mean over the fingerprints, and it only measures
"copy or not" when the points fail or survive in an independent model more or less
independently of each other. Ranked by score alone, the kept points crowd onto the one or
two labels whose boundary the references separate best (measured: 98 of 100 points
labelled "4" on the digits owner of seed 0; 54 "7" and 33 "1" on the foreign owner of
seed 1). An independent model either shares that class's region with the owner or does
not, so its rate is then one coin flip rather than a hundred, and innocent models trained
like the owner land anywhere from 0.1 to 0.9 (benchmarks/results/three-beds-2026-12-04b):
no threshold calibrated on a few held-out independents is safe against that spread.
Capping each label at a multiple of an even share keeps the rate an average over many
class boundaries.

Measured (benchmarks/results/three-beds-label-spread-2026-12-04, share 2, three beds x
three owner seeds): at seed 0 it did what it says (the highest independent on the hard
bed 0.65 -> 0.32, on the foreign bed 0.90 -> 0.67), but over all nine cells selected ARUC
fell by 0.00-0.07 and 5 independents were accused against 4: the innocents that keep
most points keep them on every label. So protect does not spread to a share by default;
label_share stays an option for owners with many classes, where the top of a ranking can
crowd onto a few of them.

But with no share (ProtectConfig.label_share=None) one label holds at most half the points
(MOST_ONE_LABEL), since 2026-12-07: on a set
crowded onto one label a model answering that label for every image matches as many points
as it holds (the demo's 97 of 100 against a threshold of 0.73: called pirated), and verify
now refuses to call a suspect a copy when its label frequencies explain its matches
(label_bias.py), so such a set could no longer show a copy either. Half keeps both away:
a model answering one label reaches at most 0.5, and a copy's matches stay far beyond
what its frequencies give (measured on the three beds:
benchmarks/results/three-beds-half-cap-2026-12-07).
"""
from __future__ import annotations

import math

import torch

from .._validate import finite_number

__all__ = ["LABEL_SHARE", "MOST_ONE_LABEL", "check_share", "label_cap", "spread_top_n", "top_n"]

# The share measured: at most twice an even share per label (20 of 100 on 10 classes, so
# at least 5 labels; 1 per label on 1,000 classes).
LABEL_SHARE = 2.0

# The most of the n points one label may carry when no share is given (the module's
# docstring says why). A share gives its own cap: label_share = the number of classes lifts it.
MOST_ONE_LABEL = 0.5


def label_cap(n: int, num_classes: int, share: float | None) -> int:
    """The most points of n that may carry one label: `share` times an even share, or
    MOST_ONE_LABEL of them when `share` is None."""
    if share is None:
        return max(1, math.ceil(MOST_ONE_LABEL * n))
    return max(1, math.ceil(share * n / max(1, num_classes)))


def check_share(share) -> float | None:
    """share: None (no cap) or a number >= 1 (an even share or more per label)."""
    if share is None:
        return None
    return finite_number("label_share", share, minimum=1.0)


def top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n highest scores in ascending index order; ties go to the lower index."""
    order = torch.argsort(-scores, stable=True)   # stable: equal scores keep index order
    return torch.sort(order[:n]).values


def spread_top_n(scores: torch.Tensor, n: int, labels: torch.Tensor | None, num_classes: int | None,
                 share: float | None) -> torch.Tensor:
    """Indices (ascending) of the n highest scores with at most label_cap(n, ...) per label
    (share None: at most half); when the capped labels cannot fill n, the best of the
    remaining points fill it. Points with non-finite scores come last, as in a plain
    ranking. No labels: the plain top n. Ties go to the lower index."""
    if labels is None or not num_classes or len(scores) <= n:
        return top_n(scores, n)
    order = torch.argsort(-scores, stable=True)
    cap = label_cap(n, num_classes, share)
    ranked_labels = labels.to(order.device)[order]
    by_label = torch.argsort(ranked_labels, stable=True)   # score order kept within each label
    grouped = ranked_labels[by_label]
    rank_in_label = torch.empty_like(by_label)
    rank_in_label[by_label] = torch.arange(len(grouped), device=grouped.device) - torch.searchsorted(grouped, grouped)
    eligible = (rank_in_label < cap) & torch.isfinite(scores[order])
    kept = torch.cat([order[eligible], order[~eligible]])[:n]
    return torch.sort(kept).values

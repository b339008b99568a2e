"""The held-out split of the owner's training data: independent references never train on
it, and there compare their accuracy with the owner's (attacks.Independent(match_owner=True)),
so protect's negatives are trained as hard as the owner, not for a fixed short budget."""
from __future__ import annotations

from torch.utils.data import Dataset

from .._validate import ArgumentError
from ..data import seeded_split

__all__ = ["HOLDOUT_FRACTION", "HOLDOUT_MAX", "holdout_split"]

# The held-out share, at most HOLDOUT_MAX items so that measuring it stays cheap beside an epoch.
HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 2000


def holdout_split(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """(the part independent references train on, the held-out part), a seeded split."""
    if len(data) < 2:
        raise ArgumentError("train_data", "needs at least 2 items (some are held out to measure accuracy)")
    held = min(HOLDOUT_MAX, max(1, round(HOLDOUT_FRACTION * len(data))))
    holdout, train = seeded_split(data, seed, held)
    return train, holdout

"""evaluate under torchrun: which rank scores which suspect, when ranks build their share."""
from types import SimpleNamespace

import pytest
from torch import nn

from ipguard_fast.evaluation.pipeline import _scored_here
from ipguard_fast.evaluation.suspects import Suspect


def _suspects(rank: int):
    built = [Suspect(f"b{i}", "FTLL", "positive", nn.Linear(1, 1) if i % 2 == rank else None, rank=i % 2)
             for i in range(3)]
    given = [Suspect(f"g{i}", "independent-given", "negative", nn.Linear(1, 1)) for i in range(3)]
    return built + given


def test_each_rank_scores_what_it_built_and_a_share_of_what_all_hold():
    scored = [{s.name for s in _scored_here(_suspects(r), SimpleNamespace(rank=r, world=2))} for r in (0, 1)]
    assert scored == [{"b0", "b2", "g0", "g2"}, {"b1", "g1"}]


@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2), (0, 3)])
def test_suspects_built_for_other_ranks_are_refused_naming_one(rank, world):
    suspects = _suspects(0)
    if (rank, world) == (0, 3):   # the right rank, but a model missing on it
        suspects[0] = Suspect("b0", "FTLL", "positive", None, rank=0)
    with pytest.raises(ValueError, match=r"^suspects: b[01] was built for rank [01] of a torchrun run"):
        _scored_here(suspects, SimpleNamespace(rank=rank, world=world))

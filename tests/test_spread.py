"""Selection spread over labels (selection/spread.py): the cap, the fill when labels run
out, non-finite scores last, and the plain top n without a share."""
import pytest
import torch
from conftest import requires_cuda

from ipguard_fast.selection import top_n
from ipguard_fast.selection.choice import Candidate, References, choose
from ipguard_fast.selection.config import ProtectConfig
from ipguard_fast.selection.scores import ReferenceOutputs
from ipguard_fast.selection.spread import LABEL_SHARE, label_cap, spread_top_n


def test_at_most_the_cap_per_label_best_first():
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(500, generator=g), torch.randint(0, 10, (500,), generator=g)
    labels[torch.argsort(-scores)[:60]] = 3   # the 60 best points all carry one label
    kept = spread_top_n(scores, 50, labels, 10, 2.0)
    assert len(kept) == 50 and len(set(kept.tolist())) == 50 and torch.equal(kept, kept.sort().values)
    cap = label_cap(50, 10, 2.0)
    assert cap == 10 and int(torch.bincount(labels[kept], minlength=10).max()) <= cap
    for label in range(10):   # within a label, the best points are the ones kept
        mine = (labels == label).nonzero().squeeze(1)
        chosen = set(kept.tolist()) & set(mine.tolist())
        best = mine[torch.argsort(-scores[mine], stable=True)[:len(chosen)]]
        assert chosen == set(best.tolist())


def test_labels_that_run_out_are_filled_with_the_best_of_the_rest():
    scores = torch.tensor([9., 8, 7, 6, 5, 4, 3, 2, 1, 0])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    assert spread_top_n(scores, 4, labels, 4, 1.0).tolist() == [0, 4, 6, 8]
    assert spread_top_n(scores, 8, labels, 10, 1.0).tolist() == [0, 1, 2, 3, 4, 5, 6, 8]


def test_non_finite_scores_come_last_and_no_share_caps_one_label_at_half():
    scores = torch.tensor([9., 8, 7, 6, float("-inf"), 4, 3, 2])
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    assert spread_top_n(scores, 3, labels, 3, 1.0).tolist() == [0, 5, 6]
    # No share: at most half of the 3 (rounded up, 2) on label 0; the best other fills.
    assert spread_top_n(scores, 3, labels, 3, None).tolist() == [0, 1, 5]
    assert spread_top_n(scores, 4, labels, 3, None).tolist() == [0, 1, 5, 6]
    # A share of the number of classes lifts every cap: the plain top n.
    assert spread_top_n(scores, 3, labels, 3, 3.0).tolist() == top_n(scores, 3).tolist() == [0, 1, 2]
    assert spread_top_n(scores, 3, None, 3, 1.0).tolist() == [0, 1, 2]


def test_the_choice_selects_with_the_spread():
    p = 40
    labels = torch.arange(p) % 4
    agree = torch.zeros(3, p, dtype=torch.bool)
    agree[:, labels == 0] = True   # label 0: every positive keeps it, the best points by far
    margins = torch.where(agree, 2.0, -2.0)
    positives = ReferenceOutputs(margins, agree)
    negatives = ReferenceOutputs(torch.full((3, p), -2.0), torch.zeros(3, p, dtype=torch.bool))
    for share, most in ((None, 4), (4.0, 8), (1.0, 2)):
        refs = References(positives, negatives, ["a", "b", "c"], ["x", "y", "z"], labels=labels, num_classes=4,
                          label_share=share)
        chosen = choose([Candidate("all", torch.arange(p))], refs, 8, "separation")
        assert int(torch.bincount(labels[chosen.kept], minlength=4).max()) == most


def test_protect_takes_a_share_and_checks_it():
    assert ProtectConfig().label_share is None and ProtectConfig(label_share=LABEL_SHARE).label_share == LABEL_SHARE
    for bad in (0.5, float("nan"), "2", True):
        with pytest.raises(ValueError, match="^label_share: "):
            ProtectConfig(label_share=bad)


@requires_cuda
def test_a_cuda_ranking_keeps_what_the_cpu_ranking_keeps():
    g = torch.Generator().manual_seed(1)
    scores, labels = torch.rand(400, generator=g), torch.randint(0, 10, (400,), generator=g)
    scores[::37] = float("nan")
    for share in (None, 1.0, 2.0):
        on_cpu = spread_top_n(scores, 60, labels, 10, share)
        on_cuda = spread_top_n(scores.cuda(), 60, labels.cuda(), 10, share)
        assert torch.equal(on_cuda.cpu(), on_cpu), share

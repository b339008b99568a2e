"""The label-bias test's null (shuffle_test.py): the exact tail of a suspect's matches when its
answers are shuffled over the points, proved against every permutation of small sets, the
two-label closed form, and the Monte Carlo permutation test that takes over past EXACT_UP_TO."""
import itertools
import math

import pytest
import torch

from ipguard_fast import shuffle_test
from ipguard_fast.binomial import binomial_tail
from ipguard_fast.label_bias import LABEL_BIAS_SIGNIFICANCE, beyond_label_bias, label_bias_rate
from ipguard_fast.shuffle_test import EXACT_UP_TO, SAMPLED_UP_TO, SHUFFLES, shuffled_matches_tail


def by_every_permutation(owner, answers, matches):
    hits = [sum(o == a for o, a in zip(owner, perm)) >= matches for perm in itertools.permutations(answers)]
    return sum(hits) / len(hits)


@pytest.mark.parametrize("seed", range(6))
def test_the_exact_tail_counts_every_permutation(seed):
    g = torch.Generator().manual_seed(seed)
    n, labels = 7, 2 + seed % 3
    owner, answers = torch.randint(0, labels, (n,), generator=g), torch.randint(0, labels, (n,), generator=g)
    for matches in range(0, n + 2):
        expected = by_every_permutation(owner.tolist(), answers.tolist(), matches) if matches <= n else 0.0
        assert shuffled_matches_tail(owner, answers, matches) == pytest.approx(expected, abs=1e-12)


def test_two_labels_follow_the_hypergeometric():
    # With two labels the matches are 2 X + a1 - b0, X the suspect's 0s among the owner's
    # a0 points of label 0: hypergeometric. 300 points, well past what permutations reach.
    a0, b0, n = 170, 140, 300
    owner = torch.tensor([0] * a0 + [1] * (n - a0))
    answers = torch.tensor([0] * b0 + [1] * (n - b0))[torch.randperm(n, generator=torch.Generator().manual_seed(1))]
    pmf = {x: math.comb(b0, x) * math.comb(n - b0, a0 - x) / math.comb(n, a0) for x in range(max(0, a0 + b0 - n), b0 + 1)}
    for matches in (150, 170, 180, 190, 200):
        expected = sum(p for x, p in pmf.items() if 2 * x + (n - a0) - b0 >= matches)
        assert shuffled_matches_tail(owner, answers, matches) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_where_the_binomial_was_too_loose_the_shuffles_decide():
    # 20 points, the owner 13/7 over two labels, the suspect 11/9, 16 matches: the binomial at
    # the label-bias rate said 0.85 % (beyond the frequencies at 1 %); the shuffles say 1.24 %.
    owner = torch.tensor([0] * 13 + [1] * 7)
    answers = torch.tensor([0] * 10 + [1] * 3 + [0] + [1] * 6)   # 10 of the owner's 0s and 6 of its 1s
    assert int((owner == answers).sum()) == 16 and int((answers == 0).sum()) == 11
    assert binomial_tail(20, label_bias_rate(owner, answers), 16) < LABEL_BIAS_SIGNIFICANCE
    assert shuffled_matches_tail(owner, answers, 16) == pytest.approx(by_every_multiset(owner, answers, 16))
    assert shuffled_matches_tail(owner, answers, 16) > LABEL_BIAS_SIGNIFICANCE
    assert not beyond_label_bias(owner, answers)


def by_every_multiset(owner, answers, matches):
    """The same tail by the suspect's 0s placed on every subset of the points (two labels)."""
    n, zeros = len(owner), int((answers == 0).sum())
    owner = owner.tolist()
    hits = total = 0
    for where in itertools.combinations(range(n), zeros):
        placed = [1] * n
        for i in where:
            placed[i] = 0
        hits += sum(o == p for o, p in zip(owner, placed)) >= matches
        total += 1
    return hits / total


def test_past_the_exact_size_a_permutation_test_that_keeps_its_level():
    n = EXACT_UP_TO + 100
    owner = torch.arange(n) % 2
    answers = owner[torch.randperm(n, generator=torch.Generator().manual_seed(2))]
    a0 = b0 = n // 2
    pmf = {x: math.comb(b0, x) * math.comb(n - b0, a0 - x) / math.comb(n, a0) for x in range(0, b0 + 1)}
    for matches in (n // 2, n // 2 + 20, n // 2 + 40):
        exact = sum(p for x, p in pmf.items() if 2 * x + (n - a0) - b0 >= matches)
        sampled = shuffled_matches_tail(owner, answers, matches)
        assert sampled >= 1 / (1 + SHUFFLES)                            # never 0: the observed order counts
        assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / SHUFFLES) + 2 / SHUFFLES)
    assert shuffled_matches_tail(owner, answers, n // 2 + 20) == shuffled_matches_tail(owner, answers, n // 2 + 20)


def test_the_sampled_test_works_in_bounded_chunks(monkeypatch):
    monkeypatch.setattr(shuffle_test, "_ELEMENTS_PER_CHUNK", 1000)   # many chunks, one answer
    n = EXACT_UP_TO + 1
    owner = torch.arange(n) % 3
    answers = owner.roll(1)
    whole = shuffle_test._sampled_tail(owner, answers, 180)
    monkeypatch.undo()
    assert whole == shuffle_test._sampled_tail(owner, answers, 180)


@pytest.mark.parametrize("seed", range(4))
def test_the_bound_for_large_files_is_never_below_the_exact_tail(seed):
    # The bound that replaces the shuffles past SAMPLED_UP_TO, checked where the exact tail is
    # known: random label sets of 60-400 points over 2-10 labels, every match count.
    g = torch.Generator().manual_seed(seed)
    n, labels = int(torch.randint(60, 401, (1,), generator=g)), 2 + seed * 2
    owner = torch.randint(0, labels, (n,), generator=g)
    answers = torch.where(torch.rand(n, generator=g) < 0.5, owner, torch.randint(0, labels, (n,), generator=g))
    for matches in range(0, n + 1, max(1, n // 40)):
        exact = shuffle_test._exact_tail(owner, answers, matches) if matches > 0 else 1.0
        assert shuffle_test._bounded_tail(owner, answers, matches) >= exact - 1e-12


def test_a_huge_file_is_judged_in_linear_time_and_still_shows_a_copy():
    # A fingerprint file comes from anyone: 2 million points must not cost 9,999 shuffles of
    # each (hours), and a copy on spread labels is still shown; answers that ignore the points
    # are not.
    n = 2_000_000
    assert n > SAMPLED_UP_TO
    owner = torch.arange(n) % 10
    copy = owner.clone()
    copy[: n // 2] = (copy[: n // 2] + 1) % 10                       # half the points lost
    assert shuffled_matches_tail(owner, copy, int((copy == owner).sum())) < 1e-300
    shuffled = owner[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    assert shuffled_matches_tail(owner, shuffled, int((shuffled == owner).sum())) > LABEL_BIAS_SIGNIFICANCE


def test_edges():
    owner = torch.tensor([1, 2, 3])
    assert shuffled_matches_tail(owner, owner, 0) == 1.0
    assert shuffled_matches_tail(owner, owner, 4) == 0.0
    assert shuffled_matches_tail(owner, owner, 3) == pytest.approx(1 / 6)
    assert shuffled_matches_tail(owner, torch.tensor([5, 5, 5]), 1) == 0.0   # no shared label, no match

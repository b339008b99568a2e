"""The engine's bookkeeping: the result rules, and spare candidates launched before they are needed."""
import math

import pytest
import torch

import ipguard_fast as ig
from ipguard_fast.search.ledger import CandidateLedger, Outcome


def finish(ledger, outcomes):
    """Record (index, accepted) outcomes as one harvest and merge them (one process)."""
    for index, ok in outcomes:
        ledger.record(index, Outcome(ok))
    running = [c for c in ledger.pending if c not in {i for i, _ in outcomes}]
    ledger.merge([ledger.share(running)])


def test_spares_follow_the_prior_then_the_observed_failure_rate():
    ledger = CandidateLedger(n=20, max_candidates=1000)
    first = ledger.launch_count(free=64)
    assert first == math.ceil(20 / (1 - 1 / 20)) + 1  # a 5 % prior failure rate, plus one
    ledger.merge([ledger.share(ledger.take(first))])
    # Half of the first ten fail: the observed rate takes over and more spares go out.
    finish(ledger, [(c, c % 2 == 0) for c in range(10)])
    rate = (5 + 1) / (10 + 20)
    assert ledger.launch_count(free=64) == math.ceil(15 / (1 - rate)) + 1 - len(ledger.pending)
    # Nothing more once n are accepted.
    finish(ledger, [(c, True) for c in range(10, 25)])
    assert ledger.accepted_count >= 20 and ledger.launch_count(free=64) == 0


def test_cpu_spares_wait_for_a_failure_rate_that_pays_for_them():
    ledger = CandidateLedger(n=20, max_candidates=1000, spare_break_even=0.25)
    first = ledger.launch_count(free=64)
    assert first == 20  # the 5 % prior is below break-even: what is needed, no spares
    ledger.merge([ledger.share(ledger.take(first))])
    # One failure in ten: still below, so the policy without spares: the 11 still needed,
    # plus the failures expected among the 10 running at the observed 1 in 10, less those.
    finish(ledger, [(c, c != 0) for c in range(10)])
    assert ledger.failure_rate() < 0.25 and ledger.launch_count(free=64) == 11 + 1 - 10
    # Most of the next ten fail: the observed rate passes break-even and spares go out.
    finish(ledger, [(c, c == 10) for c in range(10, 20)])
    rate = ledger.failure_rate()
    assert rate >= 0.25
    needed = 20 - ledger.accepted_count
    assert ledger.launch_count(free=64) == math.ceil(needed / (1 - rate)) + 1 - len(ledger.pending)


def test_without_spares_only_what_is_needed_plus_the_failures_seen():
    ledger = CandidateLedger(n=20, max_candidates=1000, spares=False)
    assert ledger.launch_count(free=64) == 20  # no prior: nothing has failed yet
    ledger.merge([ledger.share(ledger.take(20))])
    finish(ledger, [(c, c % 2 == 0) for c in range(10)])  # half fail
    # 15 still needed, plus half of the 10 running expected to fail, less those 10.
    assert ledger.launch_count(free=64) == 15 + 5 - 10


def test_the_index_rule_waits_for_lower_indices_the_completion_rule_does_not():
    index, completion = CandidateLedger(3, 100), CandidateLedger(3, 100, rule="completion")
    for ledger in (index, completion):
        ledger.merge([ledger.share(ledger.take(6))])
        finish(ledger, [(5, True), (3, True), (4, True)])  # candidates 0-2 still run
    assert completion.determined() and completion.result() == [3, 4, 5]
    assert not index.determined()
    finish(index, [(0, True), (1, False), (2, True)])
    assert index.determined() and index.result() == [0, 2, 3]


def test_bad_rule():
    with pytest.raises(ValueError, match="^result_rule:"):
        CandidateLedger(3, 10, rule="fastest")
    with pytest.raises(ValueError, match="^result_rule:"):
        ig.ExtractConfig(n=3, k=1.0, input_shape=(1, 8, 8), result_rule="fastest")


def test_completion_rule_end_to_end():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    fps = ig.extract_fingerprints(model, 6, k=1.0, input_shape=(1, 8, 8), progress=False, batch_size=4,
                                  result_rule="completion")
    again = ig.extract_fingerprints(model, 6, k=1.0, input_shape=(1, 8, 8), progress=False, batch_size=4,
                                    result_rule="completion")
    assert len(fps) == 6 and fps.meta["result_rule"] == "completion"
    assert torch.equal(fps.labels, again.labels) and torch.equal(fps.images, again.images)  # same schedule
    assert ig.matching_rate(model, fps) == 1.0


def _reference_determined(ledger) -> bool:
    """determined() as first written: from the whole wins() list."""
    wins = ledger.wins()
    if ledger.rule == "completion":
        return len(wins) >= ledger.n or (not ledger.pending and ledger.streams_done)
    if len(wins) >= ledger.n:
        return all(c > wins[ledger.n - 1] for c in ledger.pending)
    return not ledger.pending and ledger.streams_done


@pytest.mark.parametrize("rule", ["index", "completion"])
@pytest.mark.parametrize("seed", range(6))
def test_the_running_result_rule_equals_wins_after_every_harvest(rule, seed):
    """The ledger keeps the accepted count, the duplicates and the stop decision up to date
    as outcomes arrive; they must equal what wins() says from scratch, whatever the order
    of arrival, with repeated images (also a lower index arriving after a higher one with
    the same image) and outcomes without an image."""
    g = torch.Generator().manual_seed(seed)
    n, total = 12, 80
    ledger = CandidateLedger(n, total, rule=rule)
    images = [torch.tensor([float(int(v))]) for v in torch.randint(0, 30, (total,), generator=g)]
    order = torch.randperm(total, generator=g).tolist()
    running = list(range(total))
    while order:
        size = int(torch.randint(1, 9, (1,), generator=g))
        batch, order = order[:size], order[size:]
        for c in batch:
            ok = bool(torch.rand(1, generator=g) < 0.7)
            ledger.record(c, Outcome(ok, images[c] if c % 7 else None))
        running = [c for c in running if c not in batch]
        ledger.merge([(ledger.share(running)[0], running, not order)])
        wins = ledger.wins()
        assert ledger.accepted_count == len(wins)
        assert ledger.duplicates() == sum(ledger.finished.values()) - len(wins)
        assert ledger.determined() == _reference_determined(ledger)
        if rule == "index":   # the stop decision's n-th win, at every position
            assert [ledger._nth_win(k) for k in range(len(wins))] == wins
    resumed = CandidateLedger(n, total, rule="index", resume=(ledger.finished, ledger.outcomes))
    assert resumed.accepted_count == len(resumed.wins()) and resumed.result() == resumed.wins()[:n]

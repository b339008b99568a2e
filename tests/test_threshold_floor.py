"""protect's level never sits below what an independent kind held out of the selection kept
(refining.calibrate_threshold): the validation and threshold negatives are siblings of the
kinds that refined the points and can keep far less than an innocent of an unseen recipe."""
import dataclasses

import pytest
import torch

from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.selection.choice import Candidate, threshold_between
from ipguard_fast.selection.refining import Selection, calibrate_threshold
from ipguard_fast.selection.scores import ReferenceOutputs
from ipguard_fast.selection.significance import significant_threshold
from ipguard_fast.selection.stages import Choice

N = 100


def _case(held_out_negatives, refined_negatives, labels=None):
    zeros = torch.zeros(N, dtype=torch.int64)
    labels = torch.arange(N) % 10 if labels is None else labels   # chance rate 0.1 by default
    points = FingerprintSet(images=torch.zeros(N, 1, 2, 2), labels=labels, source_labels=zeros.clone(),
                            margins=torch.ones(N), steps=zeros.clone())
    outputs = ReferenceOutputs(torch.zeros(0, N), torch.zeros(0, N, dtype=torch.bool))
    sources = ["validation replica"] + [f"kind{i} (held out of the selection)"
                                        for i in range(1, len(held_out_negatives))]
    chosen = Candidate("k=1", torch.arange(N), held_out={"positives": [0.9, 1.0, 1.0],
                                                         "negatives": list(held_out_negatives),
                                                         "negative_sources": sources})
    selection = Selection(points, outputs, torch.arange(N), torch.zeros(N),
                          held=([0.95, 1.0, 1.0], list(refined_negatives)))
    return selection, Choice(chosen, [chosen])


def test_a_held_out_kind_above_the_calibrated_level_raises_it():
    selection, choice = _case(held_out_negatives=[0.1, 0.82], refined_negatives=[0.0, 0.17])
    calibrated = threshold_between([0.95, 1.0, 1.0], [0.0, 0.17], N)     # 0.585: below what the unseen kind kept
    result = calibrate_threshold(selection, choice, significance=0.05)
    assert result.floor == 0.82 and result.level == 0.82 > calibrated
    assert result.floor_source == "kind1 (held out of the selection)"   # the file says which kind set it
    assert result.threshold == significant_threshold(0.82, N)[0] > 0.82
    assert result.negatives == [0.0, 0.17]   # the rates the level was calibrated on, as recorded


def test_a_floor_below_the_calibrated_level_changes_nothing():
    selection, choice = _case(held_out_negatives=[0.1, 0.3], refined_negatives=[0.0, 0.5])
    result = calibrate_threshold(selection, choice, significance=None)
    assert result.floor == 0.3
    assert result.level == result.threshold == pytest.approx(threshold_between([0.95, 1.0, 1.0], [0.0, 0.5], N))


def test_a_level_no_count_can_exceed_makes_the_threshold_inconclusive():
    """A held-out kind that kept 0.99: not even 100 of 100 matches is unlikely (p > 0.05) for
    a model at that level, so the calibration says so and verify will call no copy."""
    selection, choice = _case(held_out_negatives=[0.1, 0.99], refined_negatives=[0.0, 0.2])
    with pytest.warns(UserWarning, match="inconclusive"):
        result = calibrate_threshold(selection, choice, significance=0.05)
    assert (result.level, result.threshold, result.shown) == (0.99, 1.0, False)
    selection, choice = _case(held_out_negatives=[0.1, 0.9], refined_negatives=[0.0, 0.2])
    assert calibrate_threshold(selection, choice, significance=0.05).shown


def test_without_held_out_negatives_there_is_no_floor():
    selection, choice = _case(held_out_negatives=[], refined_negatives=[0.0, 0.2])
    result = calibrate_threshold(selection, choice, significance=None)
    assert (result.floor, result.floor_source) == (0.0, None)
    assert result.level == pytest.approx(threshold_between([0.95, 1.0, 1.0], [0.0, 0.2], N))


def test_the_level_is_never_below_the_chance_rate():
    """Copies that keep little (here 0.2-0.3) and negatives that keep nothing put the level low;
    a model that guesses keeps 1 / the number of classes, so the level is floored there (verify
    calls a threshold at or below it inconclusive)."""
    selection, choice = _case(held_out_negatives=[0.0, 0.02], refined_negatives=[0.0, 0.01])
    selection = dataclasses.replace(selection, held=([0.2, 0.25, 0.3], [0.0, 0.01]))
    assert threshold_between([0.2, 0.25, 0.3], [0.0, 0.01], N) < 0.25
    selection.points.meta["num_classes"] = 4
    result = calibrate_threshold(selection, choice, significance=0.05)
    assert result.level == 0.25 and result.threshold == significant_threshold(0.25, N)[0]
    selection.points.meta["num_classes"] = 10   # a tenth: below the references' level, which stands
    assert calibrate_threshold(selection, choice, significance=None).level == threshold_between(
        [0.2, 0.25, 0.3], [0.0, 0.01], N)


@pytest.mark.parametrize("significance", [0.05, None])
def test_labels_no_copy_can_be_told_by_make_the_threshold_inconclusive(significance):
    """All 100 kept points on one label: an exact copy's matches are what a model answering
    that label everywhere gets, so verify's label-bias test would explain every suspect. The
    file says so (threshold_shown False) instead of storing a threshold that can accuse nobody."""
    selection, choice = _case(held_out_negatives=[0.1, 0.3], refined_negatives=[0.0, 0.2],
                              labels=torch.full((N,), 4))
    with pytest.warns(UserWarning, match="too few or too crowded"):
        assert not calibrate_threshold(selection, choice, significance=significance).shown
    spread = _case(held_out_negatives=[0.1, 0.3], refined_negatives=[0.0, 0.2])
    assert calibrate_threshold(*spread, significance=significance).shown

"""The evaluation reports verdicts as a user reads them, and runs the mistakes baseline."""
import pytest
import torch

import ipguard_fast as ig
from ipguard_fast.data import load_digits
from ipguard_fast.evaluation import Suspect
from ipguard_fast.evaluation.judging import judged
from ipguard_fast.evaluation.report import summary_table, verdict_summary
from ipguard_fast.models import DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.selection.mistakes import mistakes_fingerprints
from ipguard_fast.train import train_classifier


def _row(name, role, rate, accuracy=0.9):
    return {"name": name, "role": role, "matching_rate": rate, "accuracy": accuracy}


def test_verdicts_name_false_accusations_misses_and_useless_copies():
    rows = [_row("copy", "positive", 0.9), _row("weak copy", "positive", 0.3), _row("broken copy", "positive", 0.1, 0.5),
            _row("innocent", "negative", 0.7), _row("clean", "negative", 0.1)]
    aruc, roc, verdicts = judged(rows, 0.6, owner_accuracy=0.95, useful_drop=0.10)
    assert verdicts["false_accusations"] == ["innocent"] and verdicts["missed"] == ["weak copy"]
    assert verdicts["not_useful"] == ["broken copy"] and verdicts["tpr"] == 0.5
    assert verdicts["positives"] == 2 and verdicts["negatives"] == 2
    assert [r["counted"] for r in rows] == [True, True, False, True, True]
    _, _, everyone = judged([dict(r) for r in rows], 0.6, owner_accuracy=0.95, useful_drop=None)
    assert everyone["not_useful"] == [] and everyone["positives"] == 3
    _, _, unknown = judged([dict(r) for r in rows], 0.6, owner_accuracy=None, useful_drop=0.1)
    assert unknown["not_useful"] == []   # without accuracies every copy counts
    # A set whose threshold can show no copy (verdicts.conclusive_threshold): nobody is
    # accused, every counted copy is missed, and the summary says why.
    aruc_again, _, inconclusive = judged([dict(r) for r in rows], 0.6, owner_accuracy=0.95, useful_drop=0.10,
                                         conclusive=False)
    assert inconclusive["false_accusations"] == [] and inconclusive["missed"] == ["copy", "weak copy"]
    assert inconclusive["conclusive"] is False and verdicts["conclusive"] is True and aruc_again == aruc
    assert "inconclusive" in verdict_summary(inconclusive) and "inconclusive" not in verdict_summary(verdicts)
    # A set with no calibrated threshold (plain, mistakes): verify gives it no verdict; the
    # report shows what a typed 0.5 would do, and says that it is uncalibrated.
    _, _, typed = judged([dict(r) for r in rows], None, owner_accuracy=0.95, useful_drop=0.10)
    assert typed["threshold"] == 0.5 and typed["calibrated"] is False and verdicts["calibrated"] is True
    assert typed["false_accusations"] == ["innocent"] and typed["missed"] == ["weak copy"]
    assert "uncalibrated" in verdict_summary(typed) and "uncalibrated" not in verdict_summary(verdicts)


def test_mistakes_are_the_owners_wrong_answers_on_held_out_data(owner):
    test = load_digits("test")
    fps = mistakes_fingerprints(owner, test, 30)
    with torch.no_grad():
        predicted = owner(fps.images).argmax(1)
    assert 0 < len(fps) <= 30 and torch.equal(predicted, fps.labels)
    assert not bool((fps.labels == fps.source_labels).any())   # each is a mistake
    assert bool((fps.margins > 0).all()) and fps.meta["method"] == "mistakes"
    assert ig.matching_rate(owner, fps) == 1.0
    with pytest.raises(ValueError, match="^n: "):
        mistakes_fingerprints(owner, test, 0)


def test_evaluate_runs_the_baseline_and_reports_verdicts(owner, small):
    test = load_digits("test")
    suspects = [Suspect("copy", "FTAL", "positive", owner),
                Suspect("indep", "independent-mlp", "negative",
                        train_classifier(seeded(DigitsMLP, 7), small, epochs=2, seed=7))]
    result = ig.evaluate(owner, small, input_shape=(1, 8, 8), suspects=suspects, ks=(2.0,), n=10, test_set=test,
                         methods=("ipguard", "mistakes"), log=lambda *a: None)
    assert [r.method for r in result.runs] == ["ipguard", "mistakes"]
    mistakes = result.run("mistakes")
    assert mistakes.label == "mistakes" and mistakes.verdicts["threshold"] == 0.5
    assert mistakes.verdicts["calibrated"] is False and result.run("ipguard").verdicts["calibrated"] is False
    assert "copy" not in mistakes.verdicts["missed"]           # the owner itself matches all its mistakes
    assert "wrong verdicts" in summary_table(result)
    with pytest.raises(ValueError, match="^test_set: "):
        ig.evaluate(owner, small, input_shape=(1, 8, 8), suspects=suspects, methods=("mistakes",))

"""Audit h4: the numbers that decide verdicts (evaluation rows, thresholds, calibration)."""
import pytest
import torch

import ipguard_fast as ig
from ipguard_fast.evaluation import Suspect
from ipguard_fast.models import DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.train import train_classifier


def test_evaluate_refuses_two_suspects_of_one_name_before_any_work(owner, small, monkeypatch):
    """Rates are looked up by name: an independent model named like a copy got the copy's
    rate and was reported falsely accused. Refused before any extraction."""
    indep = train_classifier(seeded(DigitsMLP, 7), small, epochs=1, seed=7)
    suspects = [Suspect("model-a", "independent-mlp", "negative", indep), Suspect("model-a", "FTAL", "positive", owner)]
    import ipguard_fast.evaluation.pipeline as pipeline

    monkeypatch.setattr(pipeline, "extract_fingerprints", lambda *a, **k: pytest.fail("extracted"))
    with pytest.raises(ValueError, match="^suspects: names must be unique .*'model-a'"):
        ig.evaluate(owner, small, input_shape=(1, 8, 8), suspects=suspects, ks=(2.0,), n=10, log=lambda *a: None)


def test_a_run_whose_copies_all_lost_their_usefulness_is_reported_not_a_crash(tmp_path):
    """judged() raised "positive_rates: is empty" once useful_drop had left out every copy,
    after every fingerprint set had been extracted and judged: the whole evaluation lost."""
    from ipguard_fast.evaluation.judging import judged
    from ipguard_fast.evaluation.report import summary_table

    rows = [{"name": "pruned-90", "family": "prune", "role": "positive", "accuracy": 0.3, "matching_rate": 0.9},
            {"name": "indep", "family": "independent", "role": "negative", "accuracy": 0.9, "matching_rate": 0.1}]
    aruc, roc, verdicts = judged(rows, 0.5, owner_accuracy=0.95, useful_drop=0.10)
    assert aruc != aruc and roc != roc   # NaN: no counted copy to measure
    assert verdicts["not_useful"] == ["pruned-90"] and verdicts["positives"] == 0 and verdicts["tpr"] is None
    assert verdicts["false_accusations"] == []
    run = {"k": 1.0, "n_fingerprints": 10, "extract_seconds": 0.1, "suspects": rows, "aruc": aruc, "roc_auc": roc,
           "verdicts": verdicts}
    assert "n/a / n/a" in summary_table({"owner": {"name": "o"}, "runs": [run]})


def test_the_ru_curves_plot_draws_the_curve_its_aruc_label_measures(monkeypatch):
    """ru_curves.png labels each R(t) with the run's ARUC, which leaves out the copies no longer
    useful; the curve drawn took them in, so it was not the curve whose area the label gave."""
    pytest.importorskip("matplotlib")
    from ipguard_fast.evaluation import plots
    from ipguard_fast.evaluation.judging import judged

    rows = [{"name": "copy", "family": "FTAL", "role": "positive", "accuracy": 0.9, "matching_rate": 0.9},
            {"name": "broken", "family": "prune", "role": "positive", "accuracy": 0.2, "matching_rate": 0.05},
            {"name": "indep", "family": "independent", "role": "negative", "accuracy": 0.9, "matching_rate": 0.1}]
    aruc, roc, verdicts = judged(rows, 0.5, owner_accuracy=0.95, useful_drop=0.10)
    drawn = []
    real = plots.ru_curve
    monkeypatch.setattr(plots, "ru_curve", lambda p, n: drawn.append((list(p), list(n))) or real(p, n))
    run = {"k": 1.0, "n_fingerprints": 10, "extract_seconds": 0.1, "suspects": rows, "aruc": aruc, "roc_auc": roc,
           "verdicts": verdicts}
    plots._ru_curves_figure({"owner": {"name": "o"}, "runs": [run]})
    assert drawn == [([0.9], [0.1])]
    assert ig.metrics.aruc(*drawn[0]) == aruc


@pytest.mark.parametrize("significance", [0.5, 0.6, 0.9, 0.99, 0.9999999999999999])
def test_a_significance_that_would_lower_the_threshold_below_the_level_is_refused(significance):
    """The margin is added on top of the calibrated level. From 0.5 up the smallest count k
    with P(X >= k) <= significance lies at or below n * level: at 0.99 a level of 0.75 was
    stored as 0.66, below the held-out rates it was set above (a false accusation), and
    near 1 as 0.0, a threshold verify refuses in the file protect wrote."""
    from ipguard_fast._validate import ArgumentError
    from ipguard_fast.selection import ProtectConfig
    from ipguard_fast.selection.significance import significant_threshold

    with pytest.raises(ValueError, match="^significance: must be in \\(0, 0.5\\)"):
        significant_threshold(0.75, 100, significance)
    with pytest.raises(ArgumentError, match="^threshold_significance: must be in \\(0, 0.5\\) or None"):
        ProtectConfig(threshold_significance=significance)


def test_below_one_half_the_threshold_is_always_above_the_level():
    from ipguard_fast.selection.significance import significant_threshold

    for n in (1, 2, 3, 10, 37, 100):
        for level in [i / 40 for i in range(41)]:
            threshold, shown = significant_threshold(level, n, 0.4999)
            assert threshold > level or (threshold == 1.0 and not shown), (n, level, threshold)


def test_the_command_line_refuses_such_a_significance():
    from types import SimpleNamespace

    from ipguard_fast.cli.common import significance_arg

    with pytest.raises(ValueError, match="^--threshold-significance: expected a probability in \\(0, 0.5\\)"):
        significance_arg(SimpleNamespace(threshold_significance="0.9"))
    assert significance_arg(SimpleNamespace(threshold_significance="0.2")) == 0.2


def test_calibration_at_a_false_positive_rate_just_below_one_stays_in_range():
    """floor(fpr * N + 1e-9), the tolerance for 0.29 * 100, reached N for fpr = 1 - 1e-12 and
    N = 1000: counts[N] raised IndexError. Every negative but the lowest may pass."""
    from ipguard_fast.fingerprints import FingerprintSet
    from ipguard_fast.verdicts import calibrate_threshold

    labels = torch.tensor([0, 1, 0, 1])
    fps = FingerprintSet(images=torch.rand(4, 1, 2, 2), labels=labels, source_labels=1 - labels,
                         margins=torch.ones(4), steps=torch.ones(4, dtype=torch.int64), meta={"num_classes": 2})
    zeros = lambda x: torch.zeros(x.shape[0], dtype=torch.int64)   # noqa: E731 - matches 2 of 4
    ones = lambda x: torch.ones(x.shape[0], dtype=torch.int64)     # noqa: E731
    negatives = [zeros] * 999 + [lambda x: 1 - labels]   # the last matches 0 of 4
    assert calibrate_threshold(negatives, fps, false_positive_rate=1 - 1e-12) == 0.25
    assert calibrate_threshold([ones] * 1000, fps, false_positive_rate=1 - 1e-12) == 0.75


@pytest.mark.parametrize("held_out,refined", [([0.1, 0.2], [0.0, 1.0]), ([0.1, 1.0], [0.0, 0.2])])
def test_without_a_margin_a_negative_that_kept_every_point_makes_the_threshold_inconclusive(held_out, refined):
    """threshold_significance=None stores the level; when a held-out independent (a threshold
    negative, or the floor's kind) matched all n points the level is 1.0, no rate can lie
    above it, and the file said shown=True: verify then called a model that answers like
    protect's own independent PIRATED. With the margin the same case was inconclusive."""
    from test_threshold_floor import _case

    from ipguard_fast.selection.refining import calibrate_threshold
    from ipguard_fast.verdicts import verify

    labels = torch.zeros(100, dtype=torch.int64)   # the zeros model below matches every point
    selection, choice = _case(held_out_negatives=held_out, refined_negatives=refined, labels=labels)
    with pytest.warns(UserWarning, match="inconclusive"):
        margin = calibrate_threshold(selection, choice, significance=0.05)
    with pytest.warns(UserWarning, match="inconclusive"):
        plain = calibrate_threshold(selection, choice, significance=None)
    assert (margin.threshold, margin.shown) == (plain.threshold, plain.shown) == (1.0, False)
    fps = selection.points
    fps.meta.update(threshold=plain.threshold, threshold_shown=plain.shown)
    verdict = verify(lambda x: torch.zeros(x.shape[0], dtype=torch.int64), fps)   # matches all of them
    assert verdict.matching_rate == 1.0 and not verdict.pirated and not verdict.conclusive


def test_without_a_margin_a_negative_below_every_point_keeps_the_level_conclusive():
    from test_threshold_floor import _case

    from ipguard_fast.selection.refining import calibrate_threshold

    selection, choice = _case(held_out_negatives=[0.1, 0.99], refined_negatives=[0.0, 0.2])
    result = calibrate_threshold(selection, choice, significance=None)
    assert (result.level, result.threshold, result.shown) == (0.99, 0.99, True)


def test_the_command_line_refuses_a_negative_given_twice_before_any_work(tmp_path, capsys, monkeypatch):
    """Its two rows share a name; evaluate would refuse them only after the bed's suspects are trained."""
    from cli_refusals import assert_refused_before_any_work

    assert_refused_before_any_work("evaluate", ["--negatives", "m.pt", "m.pt"],
                                   "--negatives: m.pt is given more than once", tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("meta", [{"threshold": 0}, {"threshold": 1.5}, {"threshold_shown": "no"}])
def test_a_given_selected_set_with_a_bad_threshold_is_refused_before_the_plain_runs(owner, small, monkeypatch, meta):
    """Its threshold was read only when it was judged, after every k's extraction."""
    import ipguard_fast.evaluation.pipeline as pipeline
    from ipguard_fast.fingerprints import FingerprintSet

    fps = ig.extract_fingerprints(owner, 4, k=2.0, input_shape=(1, 8, 8), progress=False)
    bad = FingerprintSet(images=fps.images, labels=fps.labels, source_labels=fps.source_labels, margins=fps.margins,
                         steps=fps.steps, meta={**fps.meta, **meta})
    monkeypatch.setattr(pipeline, "extract_fingerprints", lambda *a, **k: pytest.fail("extracted"))
    suspects = [Suspect("indep", "independent-mlp", "negative", seeded(DigitsMLP, 7)),
                Suspect("copy", "FTAL", "positive", owner)]
    with pytest.raises(ValueError, match="^selected: fingerprints.meta\\['threshold"):
        ig.evaluate(owner, small, input_shape=(1, 8, 8), suspects=suspects, ks=(2.0,), n=4,
                    methods=("ipguard", "selected"), selected=bad, log=lambda *a: None)


def test_evaluate_refuses_a_repeated_k_before_any_work():
    # Each plain run is named by its k ("plain k=1"): a repeat ran the same search twice and
    # reported two rows of one name.
    from ipguard_fast.evaluation import EvaluationConfig

    with pytest.raises(ValueError, match=r"^ks: has repeated values \[1.0, 1.0\]"):
        EvaluationConfig(ks=(1.0, 1.0), n=10)
    assert EvaluationConfig(ks=(1.0, 3.0), n=10).ks == (1.0, 3.0)


def test_the_command_line_refuses_a_repeated_k_naming_the_option(tmp_path, capsys):
    from ipguard_fast.cli import main

    code = main(["evaluate", "--model", "ipguard_fast.models:DigitsCNN", "--k", "1,1", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--k: has repeated values" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

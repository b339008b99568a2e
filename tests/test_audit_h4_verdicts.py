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

"""Suspect adapters, matching rate, verdicts and threshold calibration."""

import numpy as np
import pytest
import torch
from torch import nn

import ipguard_fast
from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.verdicts import (
    AT_CHANCE,
    DEFAULT_THRESHOLD,
    LABEL_BIAS,
    NO_THRESHOLD,
    NOT_SHOWN,
    Verdict,
    as_label_fn,
    calibrate_threshold,
    matching_rate,
    verify,
)

N = 10


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def fingerprints_for(labels, **meta):
    """A set of len(labels) random images whose owner labels are `labels`."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = len(labels)
    return FingerprintSet(
        images=torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)),  # pixels in [0, 1]
        labels=labels,
        source_labels=torch.zeros(n, dtype=torch.int64),
        margins=torch.zeros(n),
        steps=torch.zeros(n, dtype=torch.int64),
        meta={"num_classes": 10, **meta},
    )


@pytest.fixture
def owner():
    return tiny_model().eval()


@pytest.fixture
def owner_fps(owner):
    """Fingerprints labelled with the owner's own predictions: the owner matches all of them."""
    images = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(2))  # as fingerprints_for
    with torch.no_grad():
        labels = owner(images).argmax(1)
    return fingerprints_for(labels)


def copier(n_matching, labels):
    """A suspect callable that agrees with `labels` on exactly the first `n_matching` images."""
    def suspect(images):
        assert len(images) == len(labels), "tests use one batch"
        out = labels.clone()
        out[n_matching:] = (out[n_matching:] + 1) % 10
        return out
    return suspect


# ---------------------------------------------------------------- suspects


def test_owner_matches_everything_and_an_independent_model_does_not(owner, owner_fps):
    assert matching_rate(owner, owner_fps) == 1.0
    assert matching_rate(tiny_model(seed=123), owner_fps) < 1.0


def test_batches_cover_every_fingerprint(owner_fps):
    sizes = []

    def suspect(images):
        sizes.append(len(images))
        return torch.zeros(len(images), dtype=torch.int64)

    rate = matching_rate(suspect, owner_fps, batch_size=4)
    assert sizes == [4, 4, 2]
    assert rate == pytest.approx(float((owner_fps.labels == 0).float().mean()))


def test_module_runs_in_eval_mode_and_mode_is_restored(owner, owner_fps):
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(64, 10))
    model[2].load_state_dict(owner[1].state_dict())
    model.train()
    assert matching_rate(model, owner_fps) == 1.0  # dropout off, else rate would drop
    assert model.training


def test_module_dtype_is_used(owner, owner_fps):
    assert matching_rate(owner.double(), owner_fps) == 1.0


def test_torchscript_path_and_module(owner, owner_fps, tmp_path):
    path = save_torchscript(owner, owner_fps.images[:2], tmp_path / "owner.pt")
    # The package's entry points take files; the verify layer itself takes objects only.
    assert ipguard_fast.matching_rate(str(path), owner_fps) == 1.0
    assert ipguard_fast.matching_rate(path, owner_fps) == 1.0
    assert ipguard_fast.verify(path, owner_fps).matches == N
    assert ipguard_fast.calibrate_threshold([path], owner_fps) == 1.0
    with pytest.raises(ValueError, match="load_suspect"):
        matching_rate(path, owner_fps)


def test_exported_program_with_fixed_batch(owner, owner_fps):
    program = torch.export.export(owner, (owner_fps.images[:3],))  # batch fixed to 3
    assert verify(program, owner_fps, batch_size=4).matches == N


@pytest.mark.parametrize("kind", ["numpy", "list", "int32"])
def test_callables_returning_labels(owner_fps, kind):
    def suspect(images):
        labels = owner_fps.labels[: len(images)]
        return {"numpy": labels.numpy(), "list": labels.tolist(), "int32": labels.int()}[kind]

    assert matching_rate(suspect, owner_fps, batch_size=N) == 1.0


def test_callable_returning_numpy_logits(owner, owner_fps):
    assert matching_rate(lambda x: owner(x).detach().numpy(), owner_fps) == 1.0


@pytest.mark.parametrize(
    "output, message",
    [
        (torch.zeros(3, 10), "suspect: returned 3 outputs for a batch of 4 images"),
        (torch.zeros(4, 10, 1), "got shape \\(4, 10, 1\\)"),
        (torch.zeros(4, 7), "suspect: returns 7 classes, the fingerprints have 10"),
        (torch.tensor([0, 1, 2, 10]), "suspect: returned label 10, labels must be \\[0, 10\\)"),
        (torch.tensor([0, -1, 2, 3]), "suspect: returned label -1"),
        (torch.tensor([[0.0] * 10, [float("nan")] * 10, [0.0] * 10, [0.0] * 10]), "non-finite logits"),
        (torch.zeros(4), "suspect: 1-D output must be integer labels"),
        (torch.zeros(4, 10, dtype=torch.int64), "suspect: 2-D output must be floating logits"),
        ("not an array", "suspect: output must be a tensor, numpy array or list"),
        (7, "got shape \\(\\)"),
    ],
)
def test_bad_outputs(output, message):
    label_fn = as_label_fn(lambda images: output, num_classes=10)
    with pytest.raises(ValueError, match=message):
        label_fn(torch.zeros(4, 1, 8, 8))


def test_unknown_num_classes_accepts_any_width():
    label_fn = as_label_fn(lambda images: torch.eye(4, 7)[:, [6, 1, 2, 3, 4, 5, 0]])
    assert label_fn(torch.zeros(4, 1, 8, 8)).tolist() == [6, 1, 2, 3]


def test_not_a_suspect():
    with pytest.raises(ValueError, match="suspect: must be"):
        as_label_fn(42)


# ---------------------------------------------------------------- matching rate / verify


def test_matching_rate_argument_checks(owner, owner_fps):
    with pytest.raises(ValueError, match="batch_size: must be a positive int"):
        matching_rate(owner, owner_fps, batch_size=0)
    empty = FingerprintSet(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64),
                           torch.zeros(0, dtype=torch.int64), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="fingerprints: is empty"):
        matching_rate(owner, empty)


def test_verdict_at_and_below_threshold():
    fps = fingerprints_for(torch.arange(N) % 10)
    at = verify(copier(5, fps.labels), fps, threshold=0.5, batch_size=N)
    # One point per label, answered one per label: its frequencies explain a tenth (0.1).
    assert at == Verdict(matching_rate=0.5, pirated=True, threshold=0.5, matches=5, total=N, label_bias_rate=0.1)
    below = verify(copier(4, fps.labels), fps, threshold=0.5, batch_size=N)
    assert not below.pirated and below.matches == 4
    assert below.to_dict() == {"matching_rate": 0.4, "pirated": False, "threshold": 0.5, "matches": 4, "total": N,
                               "conclusive": True, "reason": None, "label_bias_rate": 0.1}


def test_threshold_defaults():
    labels = torch.arange(N) % 10       # one point per label: chance rate 0.1, below 0.25
    fps = fingerprints_for(labels)
    suspect = copier(5, fps.labels)
    calibrated = fingerprints_for(labels, threshold=0.25)
    verdict = verify(suspect, calibrated, batch_size=N)
    assert verdict.threshold == 0.25 and verdict.pirated and verdict.conclusive and verdict.reason is None
    assert verify(suspect, fps, threshold=DEFAULT_THRESHOLD, batch_size=N).conclusive
    # 3 of 10 reaches 0.25, but a model answering at its own label frequencies (a tenth
    # here) matches 3 or more of 10 points 7 % of the time: no copy shown (label_bias.py).
    weak = verify(copier(3, fps.labels), calibrated, batch_size=N)
    assert weak.matching_rate >= weak.threshold and not weak.pirated and weak.reason == LABEL_BIAS


def test_a_threshold_a_guessing_model_reaches_gives_no_verdict(tmp_path, capsys):
    """A threshold above 0 can still be one a model that guesses reaches: 1e-300 (typed, or in a
    file) is reached by one match, which a model answering 3 everywhere has on these points.
    At or below 1 / the number of classes (10 here: 0.1) the verdict is inconclusive, whatever
    the rate; above it the threshold decides."""
    labels = torch.tensor([3, 3, 3, 3, 0, 1, 2, 4, 5, 6])
    constant = lambda images: torch.full((len(images),), 3)   # noqa: E731
    for fps, typed in ((fingerprints_for(labels), 1e-300), (fingerprints_for(labels), 0.1),
                       (fingerprints_for(labels, threshold=1e-300), None),
                       (fingerprints_for(labels, threshold=0.1), None)):
        verdict = verify(constant, fps, threshold=typed, batch_size=N)
        assert verdict.matches == 4 and not verdict.pirated and not verdict.conclusive
        assert verdict.reason == AT_CHANCE
        assert not verify(copier(N, labels), fps, threshold=typed, batch_size=N).pirated   # even n of n
    decided = verify(copier(7, labels), fingerprints_for(labels), threshold=0.5, batch_size=N)
    assert decided.conclusive and decided.pirated
    # Above chance the threshold decides, but the constant model's 4 of 10 are what answering 3
    # everywhere gives on a set 4 of whose 10 labels are 3: no copy (it was PIRATED at 0.2).
    above = verify(constant, fingerprints_for(labels), threshold=0.2, batch_size=N)
    assert above.matching_rate == 0.4 and not above.pirated and above.reason == LABEL_BIAS
    # The command prints the threshold in full (0.0000 would hide it) and the reason.
    fps_path, model_path = tmp_path / "fp.safetensors", tmp_path / "constant.pt"
    fingerprints_for(labels, threshold=1e-300).save(fps_path)
    constant_module = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        constant_module[1].weight.zero_()
        constant_module[1].bias.copy_(torch.arange(10.0) == 3)
    save_torchscript(constant_module, torch.rand(2, 1, 8, 8), model_path)
    assert main(["verify", "--fingerprints", str(fps_path), "--model", str(model_path)]) == 0
    printed = capsys.readouterr().out
    assert "vs threshold 1e-300: inconclusive" in printed and "PIRATED" not in printed


def test_a_file_without_threshold_gives_no_verdict():
    """A plain file records no threshold. It used to be judged at 0.5, at which independent
    digits CNNs kept 0.51-0.77 of the points (k = 5) and were called pirated; now the verdict
    is inconclusive at every rate, the rate still reported, until a threshold is given."""
    fps = fingerprints_for(torch.arange(N) % 10)
    assert "threshold" not in fps.meta
    for matches in (0, 6, N):
        verdict = verify(copier(matches, fps.labels), fps, batch_size=N)
        assert verdict.matching_rate == matches / N and verdict.matches == matches
        assert not verdict.pirated and not verdict.conclusive
        assert verdict.threshold is None and verdict.reason == NO_THRESHOLD
    assert verify(copier(6, fps.labels), fps, threshold=0.5, batch_size=N).pirated
    shown = fingerprints_for(torch.arange(N) % 10, threshold=1.0, threshold_shown=False)
    assert verify(copier(N, fps.labels), shown, batch_size=N).reason == NOT_SHOWN


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_threshold_must_be_in_unit_interval(owner, owner_fps, threshold):
    with pytest.raises(ValueError, match="threshold: must be a number in \\[0, 1\\]"):
        verify(owner, owner_fps, threshold=threshold)


def test_a_threshold_that_can_show_no_copy_gives_inconclusive_verdicts():
    """protect records threshold_shown False when independents held out of its selection
    agree so often that even n of n matches is no evidence: its own threshold then calls no
    suspect a copy, not even one that matches every point; a threshold the caller gives
    decides as usual."""
    fps = fingerprints_for(torch.arange(N) % 10, threshold=1.0, threshold_shown=False)
    every = verify(copier(N, fps.labels), fps, batch_size=N)
    assert every.matching_rate == 1.0 and not every.pirated and not every.conclusive
    assert every.to_dict()["conclusive"] is False
    given = verify(copier(N, fps.labels), fps, threshold=1.0, batch_size=N)
    assert given.pirated and given.conclusive
    shown = fingerprints_for(torch.arange(N) % 10, threshold=1.0, threshold_shown=True)
    assert verify(copier(N, fps.labels), shown, batch_size=N).pirated
    with pytest.raises(ValueError, match="threshold_shown"):
        verify(copier(N, fps.labels), fingerprints_for(torch.arange(N) % 10, threshold_shown="no"), batch_size=N)


def test_bad_threshold_in_meta_is_named(owner, owner_fps):
    fps = fingerprints_for(owner_fps.labels, threshold=2)
    with pytest.raises(ValueError, match="fingerprints.meta\\['threshold'\\]"):
        verify(owner, fps)


# ---------------------------------------------------------------- calibration


@pytest.fixture
def calibration_fps():
    return fingerprints_for(torch.arange(N) % 10)


def test_calibrate_few_negatives_is_one_step_above_the_largest(calibration_fps):
    negatives = [copier(c, calibration_fps.labels) for c in (1, 3, 2)]
    threshold = calibrate_threshold(negatives, calibration_fps, batch_size=N)
    assert threshold == pytest.approx(0.4)
    # No negative passes the threshold, and it is the smallest one with that property.
    assert not any(verify(s, calibration_fps, threshold, batch_size=N).pirated for s in negatives)
    at = verify(negatives[1], calibration_fps, 0.3, batch_size=N)   # 3 of 10 reach 0.3 (too few to accuse: label_bias)
    assert at.matching_rate >= at.threshold and at.reason == LABEL_BIAS


def test_calibrate_allows_the_requested_share_of_false_positives(calibration_fps):
    negatives = [copier(c, calibration_fps.labels) for c in (1, 3, 2)]
    # fpr * 3 = 1.02: one negative may pass, so t sits just above the second largest (0.2).
    assert calibrate_threshold(negatives, calibration_fps, 0.34, batch_size=N) == pytest.approx(0.3)


def test_calibrate_caps_at_one_and_warns(calibration_fps):
    negatives = [copier(N, calibration_fps.labels)]
    with pytest.warns(UserWarning, match="matches every fingerprint"):
        assert calibrate_threshold(negatives, calibration_fps, batch_size=N) == 1.0


@pytest.mark.parametrize("fpr", [-0.1, 1.0, float("nan")])
def test_calibrate_rejects_bad_fpr(calibration_fps, fpr):
    with pytest.raises(ValueError, match="false_positive_rate: must be in \\[0, 1\\)"):
        calibrate_threshold([copier(1, calibration_fps.labels)], calibration_fps, fpr)


def test_calibrate_rejects_empty_negatives(calibration_fps):
    with pytest.raises(ValueError, match="negative_suspects: is empty"):
        calibrate_threshold([], calibration_fps)
    with pytest.raises(ValueError, match="negative_suspects: must be a list"):
        calibrate_threshold("model.pt", calibration_fps)


def test_calibrated_threshold_is_exact_in_binary(calibration_fps):
    """(c+1)/n must compare equal to a rate of c+1 matches even where floats round (e.g. 0.7)."""
    negatives = [copier(6, calibration_fps.labels)]
    threshold = calibrate_threshold(negatives, calibration_fps, batch_size=N)
    assert verify(copier(7, calibration_fps.labels), calibration_fps, threshold, batch_size=N).pirated
    assert np.float64(threshold) == 7 / 10


def test_the_package_name_verify_is_the_function_only():
    """The verdicts module is ipguard_fast.verdicts: ipguard_fast.verify is one thing, the function."""
    from pathlib import Path

    assert ipguard_fast.verify.__module__ == "ipguard_fast.io.suspects"
    package = Path(ipguard_fast.__file__).parent
    assert not (package / "verify.py").exists() and not (package / "verify").exists()

"""`ipguard calibrate` / calibrate_fingerprints: a plain file's threshold from independent models.

A plain file (extract) has no threshold and verify gives it no verdict (test_verify); these
tests pin how a threshold gets into it: the highest independent rate plus the sampling
noise of n points, never lowered, recorded with what was measured, the given file unchanged.
"""
import hashlib
import os
import warnings

import pytest
import torch
from torch import nn

from conftest import half_matching_fingerprints
from ipguard_fast.cli import main
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.selection.calibration import calibrate_fingerprints
from ipguard_fast.selection.significance import significant_threshold
from ipguard_fast.verdict_threshold import chance_rate
from ipguard_fast.verdicts import NOT_SHOWN, matching_rate, verify

N = 40


def linear(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """A plain file of N points (the owner matches half) and three independent model files."""
    folder = tmp_path_factory.mktemp("calibrate")
    owner = linear(0)
    fps = half_matching_fingerprints(owner, n=N)
    fps.save(folder / "fp.safetensors")
    negatives = [linear(seed) for seed in (1, 2, 3)]
    paths = []
    for index, model in enumerate(negatives):
        paths.append(folder / f"independent{index}.pt")
        save_torchscript(model, torch.rand(2, 1, 8, 8), paths[-1])
    return folder, owner, fps, negatives, paths


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_command_stores_the_highest_rate_plus_sampling_noise(bed, capsys):
    folder, owner, fps, negatives, paths = bed
    before = digest(folder / "fp.safetensors")
    out = folder / "calibrated.safetensors"
    assert main(["calibrate", "--fingerprints", str(folder / "fp.safetensors"), "--negatives", *map(str, paths),
                 "--out", str(out)]) == 0
    assert digest(folder / "fp.safetensors") == before   # the given file is never changed
    rates = [matching_rate(model, fps) for model in negatives]   # in-process: the worker's labels are the same
    level = max(chance_rate(fps), *rates)   # these random linear models keep fewer points than one label's share
    expected, shown = significant_threshold(level, N)
    calibrated = FingerprintSet.load(out)
    assert calibrated.meta["threshold"] == expected and calibrated.meta["threshold_shown"] is shown is True
    record = calibrated.meta["calibration"]
    assert [entry["matching_rate"] for entry in record["negatives"]] == rates
    assert [entry["model"] for entry in record["negatives"]] == [p.name for p in paths]
    assert [entry["sha256"] for entry in record["negatives"]] == [digest(p) for p in paths]
    assert record["level"] == level and record["chance_rate"] == chance_rate(fps)
    assert record["previous_threshold"] is None
    assert torch.equal(calibrated.images, fps.images) and torch.equal(calibrated.labels, fps.labels)
    printed = capsys.readouterr().out
    assert f"threshold {expected:.4f}" in printed
    # The owner (0.5 of the points) is judged at the stored threshold, conclusively.
    verdict = verify(owner, calibrated)
    assert verdict.conclusive and verdict.threshold == expected and verdict.pirated == (0.5 >= expected)


def test_a_threshold_is_never_lowered(bed):
    _, _, fps, negatives, _ = bed
    level = max(chance_rate(fps), *(matching_rate(model, fps) for model in negatives))
    fresh, _ = significant_threshold(level, N)
    high = FingerprintSet(fps.images, fps.labels, fps.source_labels, fps.margins, fps.steps,
                          dict(fps.meta, threshold=0.975, threshold_shown=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = calibrate_fingerprints(high, negatives, isolate=False)
        low = calibrate_fingerprints(FingerprintSet(fps.images, fps.labels, fps.source_labels, fps.margins, fps.steps,
                                                    dict(fps.meta, threshold=0.025)), negatives)
    assert kept.meta["threshold"] == 0.975 and kept.meta["calibration"]["previous_threshold"] == 0.975
    assert low.meta["threshold"] == fresh > 0.025
    assert high.meta["threshold"] == 0.975 and "calibration" not in high.meta   # the caller's set unchanged


def test_negatives_that_keep_nothing_leave_the_threshold_above_chance():
    """Independents that keep none of the points would put the threshold at one match of n,
    which a model that guesses passes (4 of 40 on average for ten classes). The level is
    floored at 1 / the number of classes."""
    labels = torch.tensor(list(range(10)) * 4)
    fps = FingerprintSet(torch.rand(N, 1, 8, 8), labels, (labels + 1) % 10, torch.ones(N),
                         torch.zeros(N, dtype=torch.int64), {"num_classes": 10})
    never = lambda images: (fps.labels[:len(images)] + 5) % 10      # noqa: E731 - agrees with no point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibrated = calibrate_fingerprints(fps, [never, never, never])
    assert chance_rate(fps) == 0.1 == calibrated.meta["calibration"]["chance_rate"]
    assert calibrated.meta["threshold"] == significant_threshold(0.1, N)[0] > 1 / N
    guessing = lambda images: torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(0))  # noqa: E731
    verdict = verify(guessing, calibrated, batch_size=N)
    assert verdict.conclusive and not verdict.pirated and verdict.matching_rate < calibrated.meta["threshold"]


def test_an_independent_that_keeps_every_point_leaves_no_conclusive_verdict(bed):
    """A 'negative' that agrees on every point (here the labels' own model): not even n of n
    matches is evidence, so the file says so and verify calls nothing a copy."""
    _, owner, fps, _, _ = bed
    agrees = FingerprintSet(fps.images, owner(fps.images).argmax(1), fps.source_labels, fps.margins, fps.steps,
                            dict(fps.meta))
    with pytest.warns(UserWarning, match="not even 40 of 40"):
        calibrated = calibrate_fingerprints(agrees, [owner, owner, owner])
    assert calibrated.meta["threshold"] == 1.0 and calibrated.meta["threshold_shown"] is False
    verdict = verify(owner, calibrated)
    assert verdict.matching_rate == 1.0 and not verdict.pirated and verdict.reason == NOT_SHOWN


def test_labels_too_few_for_any_copy_to_show_leave_no_conclusive_verdict():
    """Four points on four labels: an exact copy's answers, shuffled, match all four once in 24,
    so verify's label-bias test explains any suspect; the file says so whatever the negatives keep."""
    labels = torch.arange(4)
    fps = FingerprintSet(torch.rand(4, 1, 8, 8), labels, (labels + 1) % 4, torch.ones(4),
                         torch.zeros(4, dtype=torch.int64), {"num_classes": 10})
    never = lambda images: (fps.labels[:len(images)] + 1) % 10      # noqa: E731 - agrees with no point
    with pytest.warns(UserWarning, match="too few or too crowded"):
        calibrated = calibrate_fingerprints(fps, [never, never, never])
    assert calibrated.meta["threshold_shown"] is False
    copy = lambda images: fps.labels[:len(images)]                   # noqa: E731 - the owner's every label
    verdict = verify(copy, calibrated)
    assert verdict.matching_rate == 1.0 and not verdict.pirated and verdict.reason == NOT_SHOWN


@pytest.mark.parametrize("meta,needle", [({"threshold": "0.9"}, "fingerprints.meta\\['threshold'\\]"),
                                         ({"threshold": 2}, "fingerprints.meta\\['threshold'\\]"),
                                         ({"threshold": 0.5, "threshold_shown": "no"}, "threshold_shown")])
def test_a_bad_threshold_already_in_the_file_is_named_before_any_model_runs(bed, meta, needle):
    _, _, fps, _, _ = bed
    edited = FingerprintSet(fps.images, fps.labels, fps.source_labels, fps.margins, fps.steps, dict(fps.meta, **meta))
    never = [lambda images: pytest.fail("a model ran before the file was checked")]
    with pytest.raises(ValueError, match=needle):
        calibrate_fingerprints(edited, never)


def test_few_independents_are_warned_about(bed):
    _, _, fps, negatives, _ = bed
    with pytest.warns(UserWarning, match="low estimate"):
        calibrate_fingerprints(fps, negatives[:2])


@pytest.mark.parametrize("negatives,significance,needle", [
    ([], 0.05, "negatives: must be a non-empty list"),
    ("model.pt", 0.05, "negatives: must be a non-empty list"),
    (None, 0.5, "significance: must be in"),
    (None, True, "significance: must be in"),
])
def test_bad_arguments_are_named(bed, negatives, significance, needle):
    _, _, fps, models, _ = bed
    with pytest.raises(ValueError, match=needle):
        calibrate_fingerprints(fps, models if negatives is None else negatives, significance=significance)


def test_refusals_are_one_line_and_change_nothing(bed, tmp_path, capsys):
    folder, _, _, _, paths = bed
    given = folder / "fp.safetensors"
    before = digest(given)
    base = ["calibrate", "--fingerprints", str(given), "--negatives", *map(str, paths)]
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    for argv, needle in [
        (base + ["--out", str(given)], "--out"),                               # would destroy the input
        (base + ["--out", str(paths[0])], "--out"),                            # or a negative
        (base + ["--out", str(tmp_path / "o.safetensors"), "--significance", "0.6"], "--significance"),
        (base + ["--out", str(tmp_path / "o.safetensors"), "--batch-size", "0"], "--batch-size"),
        (["calibrate", "--fingerprints", str(given), "--negatives", str(tmp_path / "missing.pt"),
          "--out", str(tmp_path / "o.safetensors")], "missing.pt"),
        (["calibrate", "--fingerprints", str(given), "--negatives", str(fifo),   # never waited on
          "--out", str(tmp_path / "o.safetensors")], "pipe.pt"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert digest(given) == before and not (tmp_path / "o.safetensors").exists()
    assert all(p.is_file() for p in paths)

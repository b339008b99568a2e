"""A suspect is called a copy only when its matches go beyond what its own label
frequencies give (label_bias.py): a model answering one label for every image, on a set
crowded onto that label, is no copy, in verify, the CLI, remote verification and the
evaluation's verdicts alike."""
import pytest
import torch
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.evaluation.judging import judged
from ipguard_fast.fingerprints import FingerprintSet
from ipguard_fast.io import save_torchscript
from ipguard_fast.label_bias import LABEL_BIAS_SIGNIFICANCE, beyond_label_bias, label_bias_chance, label_bias_rate
from ipguard_fast.shuffle_test import shuffled_matches_tail
from ipguard_fast.remote import run_remote_verification
from ipguard_fast.verdicts import LABEL_BIAS, verify


def crowded(n=100, on=4, others=(7, 6, 2), threshold=0.73):
    """The demo's selected set as protect wrote it before the half cap: 97 of 100 points on label 4."""
    labels = torch.full((n,), on)
    labels[:len(others)] = torch.tensor(others)
    return FingerprintSet(images=torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)), labels=labels,
                          source_labels=(labels + 1) % 10, margins=torch.ones(n), steps=torch.zeros(n, dtype=torch.int64),
                          meta={"num_classes": 10, "threshold": threshold})


class Constant(nn.Module):
    """A model that answers `label` whatever the image."""

    def __init__(self, label):
        super().__init__()
        self.register_buffer("logits", torch.nn.functional.one_hot(torch.tensor(label), 10).float())

    def forward(self, x):
        return self.logits.expand(x.shape[0], 10) + 0 * x.flatten(1)[:, :1]


def answering(answers):
    return lambda images: answers[:len(images)]


def test_the_rate_a_suspects_label_frequencies_give():
    owner = torch.tensor([4, 4, 4, 1])
    assert label_bias_rate(owner, torch.tensor([4, 4, 4, 4])) == 0.75            # 3/4 x 4/4
    assert label_bias_rate(owner, torch.tensor([1, 1, 0, 0])) == pytest.approx(0.125)   # 1/4 x 2/4
    assert label_bias_rate(torch.arange(10), torch.arange(10).flip(0)) == pytest.approx(0.1)
    # A label far past the classes (a set with no class count lets a suspect answer any) is
    # counted, not used as a size: 10**15 allocated nothing.
    assert label_bias_rate(owner, torch.tensor([4, 10**15, 4, 10**15])) == pytest.approx(0.375)
    for bad in (torch.tensor([4, 4]), torch.tensor([4, 4, 4, -1])):
        with pytest.raises(ValueError, match="^answers: "):
            label_bias_rate(owner, bad)


def test_the_test_is_the_shuffled_answers_tail():
    owner = torch.arange(100) % 10                    # spread: the frequencies give a tenth
    for matches in range(0, 101, 5):
        answers = owner.clone()
        answers[matches:] = (answers[matches:] + 1) % 10
        chance = shuffled_matches_tail(owner, answers, matches)
        assert label_bias_chance(owner, answers) == chance
        assert beyond_label_bias(owner, answers) is (chance <= LABEL_BIAS_SIGNIFICANCE)
        # shuffles average 10 matches of a spread 100; 19 is the first they reach under 1 % of the time
        assert beyond_label_bias(owner, answers) is (matches >= 19)
    assert not beyond_label_bias(owner, (owner + 1) % 10)
    assert beyond_label_bias(owner, owner)


def test_a_model_answering_one_label_is_no_copy_on_a_set_crowded_onto_it():
    fps = crowded()
    verdict = verify(Constant(4), fps)      # 97 of 100 against the file's 0.73: was PIRATED
    assert verdict.matching_rate == 0.97 and not verdict.pirated and not verdict.conclusive
    assert verdict.reason == LABEL_BIAS and verdict.label_bias_rate == pytest.approx(0.97)
    assert verify(Constant(7), fps).reason is None and not verify(Constant(7), fps).pirated   # 0.01: plainly not
    # An exact copy still shows on it: its 7, 6 and 2 land on the owner's, which shuffled
    # answers do once in 970,200 ...
    assert verify(answering(fps.labels), fps).pirated
    # ... and so does a copy that loses 3 of the points of label 4 (the binomial at the rate
    # 0.91, the test before, called it explained; the shuffles put it at the same 1e-6) ...
    near = fps.labels.clone()
    near[-3:] = 0
    assert verify(answering(near), fps).pirated
    # ... but a copy that loses the three points of the other labels answers 4 everywhere:
    # the set cannot tell it from a biased model.
    lost = fps.labels.clone()
    lost[:3] = 4
    assert verify(answering(lost), fps).reason == LABEL_BIAS


def test_on_a_spread_set_the_test_does_not_bind_for_a_copy():
    labels = torch.arange(100) % 10
    fps = FingerprintSet(images=torch.rand(100, 1, 8, 8), labels=labels, source_labels=(labels + 1) % 10,
                         margins=torch.ones(100), steps=torch.zeros(100, dtype=torch.int64),
                         meta={"num_classes": 10, "threshold": 0.5})
    half = labels.clone()
    half[50:] = (half[50:] + 1) % 10
    verdict = verify(answering(half), fps)
    assert verdict.pirated and verdict.conclusive and verdict.label_bias_rate == pytest.approx(0.1)


def test_the_command_says_why(tmp_path, capsys):
    fps_path, model_path = tmp_path / "fp.safetensors", tmp_path / "constant.pt"
    crowded().save(fps_path)
    save_torchscript(Constant(4), torch.rand(2, 1, 8, 8), model_path)
    assert main(["verify", "--model", str(model_path), "--fingerprints", str(fps_path), "--no-isolate"]) == 0
    printed = capsys.readouterr().out
    assert "0.9700 (97/100)" in printed and "inconclusive" in printed and "label frequencies" in printed
    assert "PIRATED" not in printed


def test_remote_verification_refuses_a_threshold_at_chance_before_any_query():
    fps = crowded(threshold=0.5)
    # Port 9 (discard) is never contacted: the refusal comes first.
    for typed in (0.1, 1e-300):
        with pytest.raises(ValueError, match="^threshold: .*nothing was sent"):
            run_remote_verification("http://127.0.0.1:9", fps, threshold=typed)
    at_chance = crowded(threshold=0.05)
    with pytest.raises(ValueError, match=r"^fingerprints.meta\['threshold'\]: .*nothing was sent"):
        run_remote_verification("http://127.0.0.1:9", at_chance)


def test_the_evaluation_calls_no_copy_what_verify_calls_none():
    rows = [{"name": "copy", "role": "positive", "accuracy": 0.9, "matching_rate": 0.97, "beyond_label_bias": False},
            {"name": "shown", "role": "positive", "accuracy": 0.9, "matching_rate": 0.8, "beyond_label_bias": True},
            {"name": "fallback-4", "role": "negative", "accuracy": 0.9, "matching_rate": 0.97,
             "beyond_label_bias": False},
            {"name": "old-row", "role": "negative", "accuracy": 0.9, "matching_rate": 0.75}]   # no flag: rate decides
    _, _, verdicts = judged(rows, 0.73, 0.9, 0.1)
    assert verdicts["false_accusations"] == ["old-row"] and verdicts["missed"] == ["copy"]
    assert verdicts["label_bias"] == ["copy", "fallback-4"] and verdicts["tpr"] == 0.5

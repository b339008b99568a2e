"""The owner's held-out mistakes as pool points: read a batch at a time, merged into the pool
without a k, offered to the choice beside the boundary points (ties to the boundary points
alone), and protect's held_out_data checked before any work."""
import copy
import importlib

import pytest
import torch
from torch.utils.data import TensorDataset

import ipguard_fast as ig
from ipguard_fast.attacks import prune_model, quantize_int8
from ipguard_fast.data import load_digits
from ipguard_fast.evaluation.suspects import Suspect
from ipguard_fast.models import DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.selection import merge_pools
from ipguard_fast.selection.choice import Candidate, References, choose
from ipguard_fast.selection.mistakes import mistakes_fingerprints
from ipguard_fast.selection.scores import ReferenceOutputs
from ipguard_fast.selection.select import selected_set
from ipguard_fast.train import train_classifier

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def held_out():
    return load_digits("test")


@pytest.fixture(scope="module")
def given(owner, small):
    positives = [prune_model(copy.deepcopy(owner), p) for p in (0.3, 0.5)] + [quantize_int8(copy.deepcopy(owner))]
    negatives = [train_classifier(seeded(DigitsMLP, s), small, epochs=2, seed=s) for s in (7, 8, 9, 10)]
    return {"positives": positives, "negatives": negatives}


def test_mistakes_are_read_a_batch_at_a_time_and_stop_at_n(owner, held_out):
    whole = mistakes_fingerprints(owner, held_out, len(held_out))
    batched = mistakes_fingerprints(owner, held_out, len(held_out), batch_size=7)
    assert len(whole) > 3   # a 2-epoch owner errs on the test split
    for name in ("images", "labels", "source_labels"):
        assert torch.equal(getattr(whole, name), getattr(batched, name))
    torch.testing.assert_close(whole.margins, batched.margins)   # another batch size, other float rounding
    assert bool((whole.labels != whole.source_labels).all()) and bool((whole.margins > 0).all())
    first = mistakes_fingerprints(owner, held_out, 3, batch_size=7)
    assert torch.equal(first.images, whole.images[:3]) and first.meta["candidates_tried"] < len(held_out)


def test_a_merged_pool_records_no_k_for_a_mistake(owner, small, held_out):
    boundary = ig.extract_fingerprints(owner, 4, k=1.0, input_shape=SHAPE, init=small.tensors[0][:8], seed=1,
                                       labels="predicted", max_steps=300, progress=False)
    mistakes = mistakes_fingerprints(owner, held_out, 3)
    merged = merge_pools([boundary, mistakes])
    assert merged.meta["k"] == [1.0] and merged.meta["pool"]["k"] == [1.0] * 4 + [None] * 3
    assert [p["init"] for p in merged.meta["pool"]["parts"]][-1] == "held_out_data"
    kept = selected_set(merged, torch.tensor([0, 5]), torch.zeros(7), score="separation", references={})
    assert kept.meta["k"] == [1.0] and kept.meta["k_per_fingerprint"] == [1.0, None]


def _references(pos_margins, neg_margins, labels):
    outputs = lambda m: ReferenceOutputs(torch.tensor(m), torch.tensor(m) > 0)  # noqa: E731
    return References(outputs(pos_margins), outputs(neg_margins), ["a", "b"], ["c", "d"], labels=labels,
                      num_classes=10)


def test_the_choice_takes_the_mistakes_only_when_they_hold_out_better():
    boundary, mistakes = torch.arange(4), torch.arange(6)
    candidates = lambda: [Candidate("k=1", boundary), Candidate("k=1 + mistakes", mistakes, mistakes=True)]  # noqa: E731
    labels = torch.zeros(6, dtype=torch.int64)
    # Points 4 and 5 (the mistakes) are kept by every positive and no negative; the boundary
    # points by the positives and the negatives alike.
    sharp = _references([[5.0] * 6, [5.0] * 6], [[5, 5, 5, 5, -5, -5], [5, 5, 5, 5, -5, -5]], labels)
    chosen = choose(candidates(), sharp, 2, "separation")
    assert chosen.name == "k=1 + mistakes" and chosen.mistakes and sorted(chosen.kept.tolist()) == [4, 5]
    # Mistakes no better than the boundary points: a tie, which goes to the boundary points alone.
    flat = _references([[5.0] * 6, [5.0] * 6], [[-5.0] * 6, [-5.0] * 6], labels)
    assert choose(candidates(), flat, 2, "separation").name == "k=1"


def test_protect_offers_the_held_out_mistakes_beside_the_boundary_points(owner, small, held_out, given):
    plain = ig.protect(owner, small, n=6, k=[1.0, 2.0], pool_factor=2, progress=False, references=given, refine=False)
    both = ig.protect(owner, small, n=6, k=[1.0, 2.0], pool_factor=2, progress=False, references=given, refine=False,
                      held_out_data=held_out)
    info, count = both.meta["protect"], len(mistakes_fingerprints(owner, held_out, len(held_out)))
    names = [c["name"] for c in info["candidates"] if ", w=" not in c["name"]]
    assert names == ["k=1", "k=2", "k=1+2", "k=1+2 + mistakes"] and len(info["candidates"]) == 12
    assert info["pool_mistakes"] == count and both.meta["selection"]["pool_size"] == 24 + count
    assert "pool_mistakes" not in plain.meta["protect"]
    # The boundary points are the same pool either way; a kept point past them is a mistake,
    # with the owner's (wrong) label and the true one as its source label.
    indices = torch.tensor(both.meta["selection"]["pool_indices"])
    from_mistakes = indices >= 24
    assert bool(from_mistakes.any()) == info["chosen"].startswith("k=1+2 + mistakes")
    assert bool((both.labels[from_mistakes] != both.source_labels[from_mistakes]).all())
    if not from_mistakes.any() and info["chosen"] == plain.meta["protect"]["chosen"]:
        assert torch.equal(both.images, plain.images)


def test_a_k_the_search_found_nothing_at_is_not_offered(owner, small, held_out, given):
    """At k = 50 no boundary point is kept; the mistakes alone fill the selection (it used to
    fail with "positive_rates: contains NaN", the 0/0 rates of an empty configuration)."""
    result = ig.protect(owner, small, n=6, k=[50.0], pool_factor=2, progress=False, references=given, refine=False,
                        held_out_data=held_out, extract_options={"max_steps": 20})
    names = [c["name"] for c in result.meta["protect"]["candidates"] if ", w=" not in c["name"]]
    assert names == ["k=50 + mistakes"] and len(result) == 6
    assert bool((result.labels != result.source_labels).all())


def test_held_out_data_is_checked_before_any_work(owner, small, given, monkeypatch):
    protect_module = importlib.import_module("ipguard_fast.selection.protect")   # the package names the function so

    def no_plan(*args, **kwargs):
        raise AssertionError("planned before held_out_data was checked")

    monkeypatch.setattr(protect_module, "make_plan", no_plan)
    cases = [(TensorDataset(torch.zeros(4, 1, 9, 9), torch.zeros(4, dtype=torch.int64)), "shape"),
             (TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64)), "is empty"),
             ([1, 2, 3], "must be a torch Dataset")]
    for value, needle in cases:
        with pytest.raises(ValueError, match=f"^held_out_data: .*{needle}"):
            ig.protect(owner, small, n=4, pool_factor=2, references=given, progress=False, held_out_data=value)


def test_pixels_outside_the_box_are_refused_before_any_work(owner, small, given, monkeypatch):
    # uint8 images (torchvision's read_image, PILToTensor) or unnormalised floats: train_data's
    # were refused by the plan's pilot under the name `init`, held_out_data's only after the
    # references were built, as "FingerprintSet.images: pixels span [1, 255]".
    protect_module = importlib.import_module("ipguard_fast.selection.protect")

    def no_plan(*args, **kwargs):
        raise AssertionError("planned before the pixels were checked")

    monkeypatch.setattr(protect_module, "make_plan", no_plan)
    images, labels = small.tensors
    uint8 = TensorDataset((images * 255).round().to(torch.uint8), labels)
    scaled = TensorDataset(images * 255, labels)
    for argument in ("train_data", "held_out_data"):
        for value, needle in ((uint8, "torch.uint8 images"), (scaled, r"pixels span \[0, 255\], outside")):
            data, extra = (value, {}) if argument == "train_data" else (small, {"held_out_data": value})
            with pytest.raises(ValueError, match=f"^{argument}: .*{needle}"):
                ig.protect(owner, data, n=4, pool_factor=2, references=given, progress=False, **extra)
    with pytest.raises(AssertionError, match="planned before"):   # a box of the caller's own is honoured
        ig.protect(owner, scaled, n=4, pool_factor=2, references=given, progress=False, held_out_data=scaled,
                   extract_options={"lo": 0.0, "hi": 255.0})


def test_evaluate_gives_protect_its_test_set_as_held_out_data(owner, small, held_out, monkeypatch):
    pipeline = importlib.import_module("ipguard_fast.evaluation.pipeline")
    seen = {}

    def stop(owner, train_set, config, **options):
        seen.update(options)
        raise RuntimeError("stopped after the call")

    monkeypatch.setattr(pipeline, "run_protect", stop)
    suspects = [Suspect("copy", "FTLL", "positive", copy.deepcopy(owner)),
                Suspect("mlp", "independent-mlp", "negative", DigitsMLP())]
    with pytest.raises(RuntimeError, match="stopped"):
        ig.evaluate(owner, small, input_shape=SHAPE, suspects=suspects, methods=("selected",), test_set=held_out,
                    log=lambda *a: None)
    assert seen["held_out"] is held_out

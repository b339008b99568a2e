"""Owner-matched negatives: independents trained until their held-out accuracy reaches the
owner's, augmentation in the training recipe, the held-out split, the owner's own recipe."""
import dataclasses

import pytest
import torch

from ipguard_fast.attacks import AttackContext, Independent, run_attack
from ipguard_fast.attacks import independent as independent_module
from ipguard_fast.augment import default_shift, random_shift
from ipguard_fast.selection import ProtectConfig
from ipguard_fast.selection.holdout import holdout_split
from ipguard_fast.selection.recipe import NEGATIVES, RECIPE, THRESHOLD_NEGATIVES, negative_kind, with_owner_recipe
from ipguard_fast import train as train_module
from ipguard_fast.train import TrainRecipe, accuracy, train_model


def test_random_shift_moves_each_image_by_at_most_the_bound_and_is_seeded():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    a = random_shift(x, torch.Generator().manual_seed(0))
    b = random_shift(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)                       # some images moved
    assert torch.equal(a.sum((1, 2, 3)), x.sum((1, 2, 3)))   # a one-pixel shift keeps the central blob
    moved = [(a[i] != x[i]).any() for i in range(64)]
    assert 0 < sum(moved) < 64
    assert default_shift(8, 8) == 1 and default_shift(32, 32) == 4
    flat = torch.rand(4, 10)
    assert random_shift(flat, torch.Generator()) is flat


# the last shape is above augment._GATHER_MAX: the slice path
@pytest.mark.parametrize("shape", [(64, 1, 8, 8), (33, 3, 32, 32), (6, 3, 7, 9), (4, 3, 160, 160)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_random_shift_is_pad_and_crop_at_each_images_own_offset(shape, channels_last):
    """Both ways of shifting (one gather for small images, a slice per distinct offset for
    large ones) against the definition, one image at a time, with the offsets drawn the same way."""
    x = torch.randn(*shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    s = default_shift(shape[2], shape[3])
    out = random_shift(x, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 2 * s + 1, (shape[0], 2), generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (s, s, s, s))
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy:dy + shape[2], dx:dx + shape[3]])
    assert out.stride() == x.stride()   # the caller's memory format
    from ipguard_fast import augment
    assert (shape[1] * shape[2] * shape[3] > augment._GATHER_MAX) == (shape[2] == 160)


def test_augmentation_changes_training_but_not_the_batch_order(small):
    from ipguard_fast.models import DigitsMLP
    from ipguard_fast.nn import seeded

    plain = train_model(seeded(DigitsMLP, 1), small, TrainRecipe(epochs=1), seed=1)
    again = train_model(seeded(DigitsMLP, 1), small, TrainRecipe(epochs=1), seed=1)
    shifted = train_model(seeded(DigitsMLP, 1), small, TrainRecipe(epochs=1, augment=True), seed=1)
    assert torch.equal(plain.fc.weight, again.fc.weight)
    assert not torch.equal(plain.fc.weight, shifted.fc.weight)
    with pytest.raises(ValueError, match="^augment: must be True or False"):
        TrainRecipe(epochs=1, augment="yes")


def test_holdout_split_is_disjoint_seeded_and_bounded(small):
    train, held = holdout_split(small, seed=3)
    assert len(train) + len(held) == len(small) and len(held) == round(0.1 * len(small))
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.tensors[0]}  # noqa: E731
    assert not rows(train) & rows(held)
    assert torch.equal(holdout_split(small, seed=3)[1].tensors[0], held.tensors[0])
    with pytest.raises(ValueError, match="^train_data: needs at least 2"):
        holdout_split(torch.utils.data.TensorDataset(torch.zeros(1, 1, 8, 8), torch.zeros(1)), seed=0)


def test_a_matched_independent_stops_once_it_reaches_the_owners_held_out_accuracy(owner, small, monkeypatch):
    train, held = holdout_split(small, seed=0)
    epochs_run = []
    context = AttackContext(owner, train, seed=11, holdout=held, on_epoch=lambda e, m: epochs_run.append(e))
    early, matched = run_attack("independent", Independent("owner", 3e-3, (1, 40), match_owner=True), context)
    target = accuracy(owner, held) - independent_module.MATCH_TOLERANCE
    reached = accuracy(matched, held) >= target
    assert epochs_run[-1] < 40                        # stopped: matched, or converged (no gain for PATIENCE epochs)
    assert reached or epochs_run[-1] >= independent_module.MATCH_PATIENCE
    assert early is not matched
    assert Independent("owner", 1e-3, (5, 60), match_owner=True).labels() == ("-e5", "-matched")
    with pytest.raises(ValueError, match="^holdout: "):
        run_attack("independent", Independent("owner", 3e-3, 2, match_owner=True), AttackContext(owner, train, 1))
    with pytest.raises(ValueError, match="^epochs: with match_owner the cap comes last"):
        Independent("owner", 3e-3, (9, 2), match_owner=True)


def test_an_independent_trained_until_converged_stops_when_its_loss_stops_falling(owner, small, monkeypatch):
    losses = iter([1.0, 0.5, 0.3, 0.299, 0.2985, 0.298, 0.2975, 0.2972, 0.1, 0.1])
    monkeypatch.setattr(independent_module, "mean_loss", lambda m, d: next(losses))
    epochs_run = []
    context = AttackContext(owner, small, seed=11, on_epoch=lambda e, m: epochs_run.append(e))
    (model,) = run_attack("independent", Independent("generic", 1e-3, 30, until_converged=True), context)
    assert epochs_run == list(range(1, 9))            # 0.3 then five epochs without a 1 % gain
    assert Independent("generic", 1e-3, 30, until_converged=True).labels() == ("-e30",)
    with pytest.raises(ValueError, match="^until_converged: "):
        Independent("generic", 1e-3, (5, 30), until_converged=True)
    with pytest.raises(ValueError, match="^until_converged: "):
        Independent("generic", 1e-3, 30, match_owner=True, until_converged=True)


def test_the_convergence_rule_measures_the_same_loss_on_sliced_tensors_as_item_by_item(owner, small, monkeypatch):
    monkeypatch.setattr(independent_module, "FIT_SAMPLE", 50)
    as_items = torch.utils.data.Subset(small, range(len(small)))   # the same data, not a TensorDataset
    rules = [independent_module._Converged(AttackContext(owner, data, seed=1)) for data in (small, as_items)]
    assert isinstance(rules[0].sample, torch.utils.data.TensorDataset) and len(rules[0].sample) == 50
    measured = []
    monkeypatch.setattr(independent_module, "mean_loss",
                        lambda m, d: measured.append(train_module.mean_loss(m, d)) or measured[-1])
    for rule in rules:
        rule(owner)
    assert measured[0] == measured[1]


def test_the_threshold_negatives_are_converged_independents_only_for_the_threshold():
    assert THRESHOLD_NEGATIVES and all(k in RECIPE for k in THRESHOLD_NEGATIVES)
    assert all(k.threshold_only and k.role == "negative" and k.settings.until_converged for k in THRESHOLD_NEGATIVES)
    assert {k.settings.arch for k in THRESHOLD_NEGATIVES} == {"owner", "generic"}
    assert {k.settings.optimizer for k in THRESHOLD_NEGATIVES} == {"adam", "sgd"}
    # the owner's architecture at two seeds (a kind's seed is drawn from its name), the generic one at one
    by_settings = {}
    for k in THRESHOLD_NEGATIVES:
        by_settings.setdefault(k.settings, []).append(k.kind)
    assert sorted(len(kinds) for s, kinds in by_settings.items() if s.arch == "owner") == [2, 2]
    assert all(len(kinds) == 1 for s, kinds in by_settings.items() if s.arch == "generic")
    assert all(k in with_owner_recipe(RECIPE, TrainRecipe(epochs=3)) for k in THRESHOLD_NEGATIVES)
    with pytest.raises(ValueError, match="threshold_only kind is a negative"):
        ProtectConfig(recipe=RECIPE + (dataclasses.replace(RECIPE[0], kind="x", threshold_only=True),))


def test_the_default_negatives_span_optimizers_augmentation_and_architectures():
    settings = [k.settings for k in NEGATIVES]
    assert all(s.match_owner for s in settings)
    assert {s.optimizer for s in settings} == {"adam", "sgd"} and {s.augment for s in settings} == {True, False}
    assert {s.arch for s in settings} == {"owner", "generic"}
    assert all(k in RECIPE for k in NEGATIVES)
    kind = negative_kind("owner", "adam", True)   # a corner the default leaves out, named as the others
    assert kind.kind == "independent-owner-adam-aug" and kind not in RECIPE
    assert (kind.settings.optimizer, kind.settings.augment, kind.settings.match_owner) == ("adam", True, True)
    with pytest.raises(ValueError, match="^optimizer: expected one of"):
        negative_kind("owner", "rmsprop", False)


def test_the_owners_recipe_trains_some_negatives_exactly_so():
    owner_recipe = TrainRecipe(epochs=7, lr=0.02, batch_size=32, optimizer="sgd", augment=True)
    recipe = ProtectConfig(train_recipe=owner_recipe).effective_recipe
    negatives = [k for k in recipe if k.role == "negative"]
    own = [k.settings for k in negatives if k.kind.endswith("owner-recipe")]
    assert {s.arch for s in own} == {"owner", "generic"}
    assert all((s.epochs, s.lr, s.batch_size, s.optimizer, s.augment, s.match_owner)
               == (7, 0.02, 32, "sgd", True, False) for s in own)
    assert {k.settings.optimizer for k in negatives} == {"sgd", "adam"}   # the other optimizer still spans
    assert [k for k in recipe if k.role == "positive"] == [k for k in RECIPE if k.role == "positive"]
    # the threshold is set against independents trained like the owner too
    threshold_own = [k for k in recipe if k.threshold_only and "owner-recipe-threshold" in k.kind]
    assert sorted(k.settings.arch for k in threshold_own) == ["generic", "owner", "owner"]   # two seeds of the owner's
    assert all((k.settings.epochs, k.settings.lr, k.settings.optimizer) == (7, 0.02, "sgd") for k in threshold_own)
    with pytest.raises(ValueError, match="^train_recipe: expected a TrainRecipe"):
        with_owner_recipe(RECIPE, {"epochs": 3})


def test_the_callers_own_independent_models_join_the_negatives(owner, small):
    from ipguard_fast.attacks import FineTune
    from ipguard_fast.models import DigitsMLP
    from ipguard_fast.nn import seeded
    from ipguard_fast.selection import ReferenceKind, run_protect

    recipe = (ReferenceKind("FTAL", "positive", "fine-tune", FineTune(1e-3, 1)),
              ReferenceKind("indep", "negative", "independent", Independent("generic", 3e-3, 1)))
    mine = [train_model(seeded(DigitsMLP, s), small, TrainRecipe(epochs=2)) for s in (21, 22, 23)]
    config = ProtectConfig(n=4, k=2.0, pool_factor=2, replicas=2, validation_replicas=1, refine=False, recipe=recipe)
    result = run_protect(owner, small, config, negatives=mine, progress=False)
    given = [r for r in result.references if r.kind.startswith("given-negative/")]
    assert [r.model for r in given] == mine and [r.split for r in given] == ["select", "validate", "select"]
    assert len({r.kind for r in given}) == 3 and all(r.role == "negative" for r in given)
    recorded = result.fingerprints.meta["selection"]["references"]["negatives"]
    assert sum(entry["name"].startswith("given/") for entry in recorded) == 3
    with pytest.raises(ValueError, match="^negatives"):
        run_protect(owner, small, config, negatives=[42], progress=False)

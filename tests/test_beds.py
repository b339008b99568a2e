"""The evaluation's beds: the foreign bed's recipes are none of protect()'s, every bed holds
the field's hard families on the attacker's data, and the owner/attacker split is disjoint."""
import pytest
import torch
from torch import nn

from ipguard_fast.cli import main
from ipguard_fast.evaluation import BEDS, make_bed
from ipguard_fast.evaluation.beds import attacker_half, owner_half
from ipguard_fast.evaluation.foreign import FOREIGN_OWNER_RECIPE
from ipguard_fast.evaluation.grids import FIELD_FAMILIES
from ipguard_fast.io import save_torchscript
from ipguard_fast.selection.recipe import RECIPE


def _bed(name):
    from ipguard_fast.models import DigitsMLP

    return make_bed(name, digits=True, input_shape=(1, 8, 8), num_classes=10, small_factory=DigitsMLP)


def test_every_bed_has_the_field_families_on_the_attackers_data():
    for name in BEDS:
        variants = _bed(name).variants(seed=0)
        field = [v for v in variants if v.family in FIELD_FAMILIES]
        assert {v.family for v in field} == set(FIELD_FAMILIES), name
        assert all(v.data == "attacker" for v in field)
        assert {v.name for v in field} >= {"noise-0.05", "quantize-4", "extract-labels", "extract-probabilities",
                                           "adversarial-ft"}
        assert len({v.name for v in variants}) == len(variants)


def test_the_foreign_beds_independents_are_trained_by_recipes_protect_never_uses():
    negatives = [v for v in _bed("foreign").variants(seed=0) if v.role == "negative"]
    protect_recipes = {(k.settings.optimizer, k.settings.lr, k.settings.batch_size) for k in RECIPE
                       if k.role == "negative"}
    recipes = {(v.settings.optimizer, v.settings.lr, v.settings.batch_size) for v in negatives}
    assert not recipes & protect_recipes
    assert {v.settings.optimizer for v in negatives} == {"adam", "sgd"}
    assert {v.settings.augment for v in negatives} == {True, False}
    assert not any(v.settings.match_owner for v in negatives)
    like_owner = [v for v in negatives if v.family == "independent-cnn-sgd-aug-e40"]
    assert len(like_owner) == 3 and len({v.name for v in like_owner}) == 3
    s = like_owner[0].settings
    assert (s.optimizer, s.lr, s.batch_size, s.augment, s.epochs) == (
        FOREIGN_OWNER_RECIPE.optimizer, FOREIGN_OWNER_RECIPE.lr, FOREIGN_OWNER_RECIPE.batch_size,
        FOREIGN_OWNER_RECIPE.augment, FOREIGN_OWNER_RECIPE.epochs)


def test_the_demo_beds_independents_are_unchanged():
    negatives = [v for v in _bed("demo").variants(seed=0) if v.role == "negative"]
    assert [v.name for v in negatives] == [f"independent-{a}-seed{s}" for a in ("cnn", "mlp") for s in (1, 2, 3)]
    assert all(v.seed == int(v.name[-1]) and v.settings.epochs == 5 for v in negatives)


def test_owner_and_attacker_halves_are_disjoint_and_cover_the_data(small):
    a, b = owner_half(small, 4), attacker_half(small, 4)
    assert len(a) + len(b) == len(small)
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.tensors[0]}  # noqa: E731
    assert not rows(a) & rows(b)
    assert not torch.equal(attacker_half(small, 5).tensors[0], b.tensors[0])


def test_a_bed_builds_field_suspects_on_the_attackers_data(owner, small):
    from ipguard_fast.evaluation import Variant, build_variants
    from ipguard_fast.attacks import Preprocess

    variant = Variant("noise", "preprocess", "preprocess", Preprocess("noise", 0.05), data="attacker")
    with pytest.raises(ValueError, match="^attacker_data: "):
        build_variants(owner, small, [variant])
    (suspect,) = build_variants(owner, small, [variant], attacker_data=attacker_half(small, 0))
    assert suspect.model(small.tensors[0][:3]).shape == (3, 10)


@pytest.mark.parametrize("extra, option", [(["--negative-lr", "0.1"], "--negative-epochs"),
                                           (["--negative-epochs", "3", "--negative-optimizer", "rmsprop"],
                                            "--negative-optimizer"),
                                           (["--negative-epochs", "0", "--negative-lr", "-1"], "--negative-lr")])
def test_protect_names_a_bad_owner_recipe_option(extra, option, tmp_path, capsys):
    model = save_torchscript(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.rand(2, 1, 8, 8),
                             tmp_path / "m.pt")
    argv = ["protect", "--model", str(model), "--data", "digits", "--no-cache",
            "--out", str(tmp_path / "f.safetensors"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert option in err and "\n" not in err, err
    assert not (tmp_path / "f.safetensors").exists()


def test_wrappers_of_one_model_with_other_transformations_are_other_models(owner):
    """The evaluation's noise-0.05 suspect is not protect's noise-0.1 reference, though both
    wrap the owner's weights: what a wrapper does is part of its state."""
    from ipguard_fast.attacks import Preprocess, Preprocessed
    from ipguard_fast.fingerprints import state_dict_sha256

    hashes = {state_dict_sha256(Preprocessed(owner, Preprocess(kind, strength)))
              for kind, strength in (("noise", 0.05), ("noise", 0.1), ("quantize", 4), ("blur", 0.7))}
    assert len(hashes) == 4
    same = Preprocessed(owner, Preprocess("noise", 0.05))
    assert state_dict_sha256(same) == state_dict_sha256(Preprocessed(owner, Preprocess("noise", 0.05)))


def test_the_foreign_bed_refuses_the_independents_recipe_options():
    for keyword in ("negative_epochs", "negative_lr"):
        with pytest.raises(ValueError, match=f"^{keyword}: the foreign bed trains its independents"):
            make_bed("foreign", digits=True, input_shape=(1, 8, 8), num_classes=10, **{keyword: 3})

"""ProtectConfig keeps the caller's recipe; the recipe protect builds (the owner's own
negatives applied, then the plan's epoch caps) is derived in one place, effective_recipe.
Pinned against recipes written out here and against the reference cache keys the code
gave before the derived recipe moved out of `recipe` (a key that changes orphans every
reference cache). Tiny settings, no training."""
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ipguard_fast.attacks import Independent
from ipguard_fast.search.distributed import Communicator
import ipguard_fast.selection.cache_key as cache_key
from ipguard_fast.selection import ProtectConfig
from ipguard_fast.selection.plan import fit_plan
from ipguard_fast.selection.plan_costs import UnitCosts
from ipguard_fast.selection.recipe import NEGATIVES, RECIPE, THRESHOLD_NEGATIVES, ReferenceKind, with_owner_recipe
from ipguard_fast.train import TrainRecipe

COSTS = UnitCosts(owner_train=1e-3, generic_train=2e-4, owner_forward=2e-4, generic_forward=5e-5,
                  owner_input_grad=5e-4, generic_input_grad=1e-4, pool_point=2e-2, device="test")
OWNER_RECIPE = TrainRecipe(epochs=12, optimizer="sgd", lr=0.03, augment=True)


def _own(name: str, arch: str, *, threshold: bool = False):
    """One of the owner-recipe negatives, as OWNER_RECIPE's settings written out."""
    settings = Independent(arch, lr=0.03, epochs=12, optimizer="sgd", weight_decay=0.0, momentum=0.9, batch_size=64,
                           augment=True)
    return ReferenceKind(name, "negative", "independent", settings, threshold_only=threshold)


def _owner_expected() -> tuple:
    """The default recipe with the owner's recipe: every positive, the owner-recipe negatives,
    the default negatives of the other optimizer (Adam), the threshold negatives, and the
    owner-recipe threshold negatives (the owner's architecture at two seeds)."""
    positives = tuple(k for k in RECIPE if k.role == "positive")
    adam = tuple(k for k in NEGATIVES if k.settings.optimizer == "adam")
    assert [k.kind for k in adam] == ["independent-owner-adam", "independent-generic-adam",
                                      "independent-generic-adam-aug"]
    return (positives + (_own("independent-owner-owner-recipe", "owner"),
                         _own("independent-generic-owner-recipe", "generic")) + adam + THRESHOLD_NEGATIVES
            + (_own("independent-owner-owner-recipe-threshold", "owner", threshold=True),
               _own("independent-generic-owner-recipe-threshold", "generic", threshold=True),
               _own("independent-owner-owner-recipe-threshold-twin1", "owner", threshold=True)))


def _capped(recipe: tuple, cap: int | None, matched: int | None) -> tuple:
    """`recipe` with epochs written by the caps' rule: the negatives that match the owner
    (epochs (5, 60)) at (5, min(60, cap, matched)), the converged ones (60) at min(60, cap),
    the owner-recipe ones (12) at min(12, cap)."""
    cap, matched = cap or 10 ** 9, matched or 10 ** 9

    def epochs(s):
        if s.match_owner:
            assert s.epochs == (5, 60)
            return (5, min(60, cap, matched))
        assert s.epochs in (60, 12)
        return min(s.epochs, cap)
    return tuple(dataclasses.replace(k, settings=dataclasses.replace(k.settings, epochs=epochs(k.settings)))
                 if isinstance(k.settings, Independent) else k for k in recipe)


# (images, budget) -> (rung, epoch cap, matched cap) the plan chose before the refactor, per
# config; "full": 1.001 x the full plan's expected total (only the worst case cuts).
PLANS = {("default", 1437, None): (0, None, None), ("default", 1437, 800.0): (6, 20, None),
         ("default", 1437, 400.0): (9, 10, None), ("default", 5000, "full"): (0, None, 21),
         ("owner", 1437, None): (0, None, None), ("owner", 1437, 800.0): (6, 20, None),
         ("owner", 1437, 400.0): (9, 10, None), ("owner", 5000, "full"): (0, None, 26)}
# reference_cache_key before the refactor, for the configs of PLANS (key()'s owner and data)
KEYS = {("default", 1437, None): "81a12f0a57f22b1accac97adc4cb9794",
        ("default", 1437, 800.0): "5399c7ff59a5af942145cc30622e3df8",
        ("default", 1437, 400.0): "f693d99510803a3ce085527f5db12436",
        ("default", 5000, "full"): "1e5b389c77cc8d7d6a072dd343f1dfe9",
        ("owner", 1437, None): "1af8cddddf3e6aeb7dd35cbba2e70d3e",
        ("owner", 1437, 800.0): "4fdc419d4ec8ea2f7438b1c724af9276",
        ("owner", 1437, 400.0): "44c78187a059bf256dc9eaed8b7f2711",
        ("owner", 5000, "full"): "16f9f459159b1ed17c6d5d702119d0c4"}


def _config(name: str) -> ProtectConfig:
    return ProtectConfig() if name == "default" else ProtectConfig(train_recipe=OWNER_RECIPE)


def _plan(name: str, images: int, budget):
    config = _config(name)
    if budget == "full":
        budget = fit_plan(config, COSTS, images, None).total * 1.001
    return fit_plan(config, COSTS, images, budget)


@pytest.mark.parametrize("case", sorted(PLANS, key=str))
def test_the_derived_recipe_is_the_one_written_out_with_and_without_a_budget(case):
    name, images, budget = case
    plan = _plan(name, images, budget)
    rung, cap, matched = PLANS[case]
    base = RECIPE if name == "default" else _owner_expected()
    assert plan.rung == rung
    assert plan.config.effective_recipe == _capped(base, cap, matched)
    # the caller's recipe stays as given, the caps are fields of their own
    assert plan.config.recipe == RECIPE and plan.config.train_recipe == _config(name).train_recipe
    assert (plan.config.epoch_cap, plan.config.matched_epoch_cap) == (cap, matched)
    meta = plan.to_meta()
    assert (meta["negative_epoch_cap"], meta["matched_epoch_cap"]) == (cap or 60, matched or cap or 60)


def _first_items_digest(data) -> str:
    """The data digest of the time these keys were recorded (length and first 64 items): the
    data's own key has changed since (test_reference_cache), what is pinned here is the rest."""
    import hashlib

    from ipguard_fast._hashing import tensor_bytes, update_framed

    digest = hashlib.sha256(b"ipguard_fast-protect-data-v1")
    update_framed(digest, str(len(data)).encode())
    for index in range(min(len(data), 64)):
        update_framed(digest, tensor_bytes(torch.as_tensor(data[index][0])))
        update_framed(digest, str(int(data[index][1])).encode())
    return digest.hexdigest()


def _key(config: ProtectConfig, monkeypatch) -> str:
    """The cache key of a fixed owner and data, with what changes between installs (torch's
    code in the architecture hash, the versions) and the data's digest held still."""
    monkeypatch.delenv("IPGUARD_FAST_TRAIN_PRECISION", raising=False)
    monkeypatch.setattr(cache_key, "data_digest", _first_items_digest)
    monkeypatch.setattr(cache_key, "architecture_sha256", lambda owner: "arch")
    monkeypatch.setattr(cache_key, "__version__", "test")
    monkeypatch.setattr(torch, "__version__", "test")
    owner = nn.Linear(4, 3)
    with torch.no_grad():
        owner.weight.copy_(torch.arange(12.0).view(3, 4))
        owner.bias.copy_(torch.arange(3.0))
    data = TensorDataset(torch.arange(32.0).view(8, 4), torch.arange(8) % 3)
    return cache_key.reference_cache_key(owner, data, config)


@pytest.mark.parametrize("case", sorted(KEYS, key=str))
def test_the_reference_cache_keys_are_unchanged(case, monkeypatch):
    assert _key(_plan(*case).config, monkeypatch) == KEYS[case]


def test_the_owners_recipe_is_applied_once_however_often_the_config_is_rebuilt():
    config = ProtectConfig(train_recipe=OWNER_RECIPE)
    assert config.recipe == RECIPE and config.effective_recipe == _owner_expected()
    again = config
    for _ in range(3):
        again = dataclasses.replace(again, n=again.n + 1, epoch_cap=20)
    assert again.recipe == RECIPE and again.effective_recipe == _capped(_owner_expected(), 20, None)
    # another owner recipe replaces the first one's negatives, never joins them
    other = dataclasses.replace(config, train_recipe=TrainRecipe(epochs=3))
    assert other.effective_recipe == with_owner_recipe(RECIPE, TrainRecipe(epochs=3))
    kinds = [k.kind for k in other.effective_recipe]
    assert len(kinds) == len(set(kinds)) and sum("-owner-recipe" in kind for kind in kinds) == 5
    assert dataclasses.replace(config, train_recipe=None).effective_recipe == RECIPE
    # a recipe with_owner_recipe made, given with train_recipe, is refused naming it (was
    # passed through as "already applied" when the owner recipes matched)
    with pytest.raises(ValueError, match=r"^train_recipe: the recipe already holds owner-recipe negatives \["):
        ProtectConfig(recipe=config.effective_recipe, train_recipe=OWNER_RECIPE)
    assert ProtectConfig(recipe=config.effective_recipe).effective_recipe == config.effective_recipe


@pytest.mark.parametrize("name", ["epoch_cap", "matched_epoch_cap"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True, "10"])
def test_a_bad_epoch_cap_is_refused_naming_it(name, value):
    with pytest.raises(ValueError, match=f"^{name}: must be a positive int"):
        ProtectConfig(**{name: value})


class _OtherRank(Communicator):
    """Rank 1 of 2, whose peer (rank 0) sent `peer` in the exchange."""

    rank, world = 1, 2

    def __init__(self, peer):
        self.peer = peer

    def exchange(self, payload) -> list:
        return [self.peer, payload]


class _Recorder(Communicator):
    rank, world = 0, 2

    def exchange(self, payload) -> list:
        self.sent = payload
        return [payload, payload]


def test_ranks_given_other_owner_recipes_or_caps_are_refused_naming_them(monkeypatch):
    """The derived recipe is no field: ranks compare the caller's recipe, train_recipe and the caps."""
    import ipguard_fast.selection.stages as stages

    owner, data = nn.Linear(4, 3), TensorDataset(torch.rand(8, 4), torch.arange(8) % 3)
    base = ProtectConfig(n=4, train_recipe=OWNER_RECIPE)
    recorder = _Recorder()
    monkeypatch.setattr(stages, "communicator", lambda: recorder)
    stages.agree_between_ranks(owner, data, base)
    monkeypatch.setattr(stages, "communicator", lambda: _OtherRank(recorder.sent))
    for name, config in (("train_recipe", dataclasses.replace(base, train_recipe=TrainRecipe(epochs=3))),
                         ("train_recipe", dataclasses.replace(base, train_recipe=None)),
                         ("epoch_cap", dataclasses.replace(base, epoch_cap=20)),
                         ("matched_epoch_cap", dataclasses.replace(base, matched_epoch_cap=20))):
        with pytest.raises(ValueError, match=f"^{name}: rank 1 was given "):
            stages.agree_between_ranks(owner, data, config)
    stages.agree_between_ranks(owner, data, dataclasses.replace(base, n=4))   # the same settings: agreed

"""The attack registry: every attack is at once an evaluation suspect family and a protect()
reference kind; settings are checked; the owner is never modified."""
import copy

import pytest
import torch
from torch import nn

from ipguard_fast.attacks import (ATTACKS, AdversarialFineTune, AttackContext, Distill, Extraction, FineTune, Half,
                                  Independent, Preprocess, Prune, Quantize, owner_answers, transform, applicable, fresh_copy_factory, get_attack, pgd, run_attack)
from ipguard_fast.evaluation import Variant, build_variants
from ipguard_fast.nn import seeded
from ipguard_fast.selection import RECIPE, ProtectConfig, ReferenceKind, run_protect

SETTINGS = {"fine-tune": FineTune(1e-3, 1), "prune": Prune(0.5), "quantize": Quantize(4), "half": Half(),
            "distill": Distill(1e-3, 1, "generic"), "independent": Independent("owner", 1e-3, (1, 2)),
            "adversarial-fine-tune": AdversarialFineTune(epochs=1, steps=2),
            "extraction": Extraction(epochs=1), "preprocess": Preprocess("noise", 0.05)}


def test_every_registered_attack_builds_models_and_leaves_the_owner(owner, small):
    assert set(ATTACKS) == set(SETTINGS), "a new attack needs an entry here (and a test of its own)"
    state = copy.deepcopy(owner.state_dict())
    # The owner's own tensors too (storage and strides: Attack.run gives its models canonical
    # strides, which must never reach the owner through a model that shares them).
    first = owner.features[0].weight
    first.data = first.data.clone(memory_format=torch.channels_last)   # 1 channel: non-canonical strides
    tensors = [(t, t.data_ptr(), t.stride()) for t in owner.state_dict().values()]
    for name, settings in SETTINGS.items():
        attack = get_attack(name)
        context = AttackContext(owner, small, seed=5)
        models = attack.run(context, settings)
        assert len(models) == len(attack.outputs(settings))
        skeleton = attack.skeleton(context, settings)
        for model in models:
            assert not model.training
            assert model(small.tensors[0][:4]).shape == (4, 10)
            assert set(model.state_dict()) == set(skeleton.state_dict()), name   # a cached copy loads into it
    assert all(torch.equal(v, owner.state_dict()[k]) for k, v in state.items())
    assert all(t.data_ptr() == ptr and t.stride() == stride for t, ptr, stride in tensors)
    first.data = first.data.clone(memory_format=torch.contiguous_format)   # the shared fixture as it was


def test_attacks_are_seeded(owner, small):
    a = run_attack("fine-tune", FineTune(1e-3, 1), AttackContext(owner, small, seed=3))[0]
    b = run_attack("fine-tune", FineTune(1e-3, 1), AttackContext(owner, small, seed=3))[0]
    c = run_attack("fine-tune", FineTune(1e-3, 1), AttackContext(owner, small, seed=4))[0]
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("make, argument", [
    (lambda: FineTune(0.0, 1), "lr"), (lambda: FineTune(1e-3, 0), "epochs"), (lambda: Prune(1.0), "rate"),
    (lambda: Quantize(1), "bits"), (lambda: Independent("owner", 1e-3, (2, 2)), "epochs"),
    (lambda: AdversarialFineTune(eps=-1.0), "eps"), (lambda: Distill(1e-3, 0), "epochs"),
])
def test_bad_settings_name_the_argument(make, argument):
    with pytest.raises(ValueError) as info:
        make()
    assert info.value.argument == argument and str(info.value).startswith(f"{argument}: ")


def test_unknown_attack_and_wrong_settings_are_refused(owner, small):
    with pytest.raises(ValueError, match="^attack: unknown attack 'nope'"):
        get_attack("nope")
    with pytest.raises(ValueError, match="^settings: attack 'prune' takes Prune, got FineTune"):
        run_attack("prune", FineTune(1e-3, 1), AttackContext(owner, small, seed=0))


def test_attacks_that_need_a_head_or_weights_are_not_applicable_without_them():
    headless = nn.Sequential(nn.Flatten(), nn.Tanh())
    assert not applicable(get_attack("fine-tune"), headless) and not applicable(get_attack("prune"), headless)
    assert applicable(get_attack("independent"), headless)


def test_pgd_stays_in_the_ball_and_the_box_and_raises_the_loss(owner, small):
    x, y = small.tensors[0][:16], small.tensors[1][:16]
    settings = AdversarialFineTune(eps=0.1, step_size=0.03, steps=5)
    torch.manual_seed(0)
    adv = pgd(owner, x, y, settings)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert nn.functional.cross_entropy(owner(adv), y) > nn.functional.cross_entropy(owner(x), y)
    assert not owner.training


class _WithToken(nn.Module):
    """A parameter no reset_parameters touches (like a ViT's class token)."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.randn(8))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(x + self.token)


def test_fresh_copies_share_nothing_trained_with_the_owner():
    owner = _WithToken()
    fresh = seeded(fresh_copy_factory(owner), 1)
    assert not torch.equal(fresh.token, owner.token) and not torch.equal(fresh.fc.weight, owner.fc.weight)


def test_a_registered_attack_is_both_an_evaluation_family_and_a_reference_kind(owner, small):
    """Adversarial fine-tuning, added as one module and one registry line, used by both."""
    settings = AdversarialFineTune(epochs=1, steps=2)
    (suspect,) = build_variants(owner, small, [Variant("advFT", "advFT", "adversarial-fine-tune", settings)])
    assert suspect.role == "positive" and suspect.family == "advFT"
    recipe = tuple(k for k in RECIPE if k.kind in ("FTAL", "int4")) + (
        ReferenceKind("advFT", "positive", "adversarial-fine-tune", settings),
        ReferenceKind("independent-owner-matched", "negative", "independent",
                      Independent("owner", 3e-3, (1, 3), match_owner=True)),
        ReferenceKind("independent-generic-lr0.01", "negative", "independent", Independent("generic", 1e-2, 2)))
    config = ProtectConfig(n=4, k=2.0, pool_factor=2, replicas=2, validation_replicas=0, refine=False, recipe=recipe)
    result = run_protect(owner, small, config, progress=False)
    kinds = {r.kind for r in result.references}
    assert {"advFT", "FTAL", "int4", "independent-generic-lr0.01", "independent-owner-matched"} <= kinds
    assert len(result.fingerprints) == 4


def test_a_recipe_is_checked():
    with pytest.raises(ValueError, match="^recipe: needs kinds of both roles"):
        ProtectConfig(recipe=tuple(k for k in RECIPE if k.role == "positive"))
    with pytest.raises(ValueError, match="^attack: unknown attack"):
        ProtectConfig(recipe=(ReferenceKind("x", "positive", "nope", None),) + RECIPE)


def test_extraction_students_learn_the_owners_answers_on_the_attackers_data(owner, small):
    images = small.tensors[0]
    for answers in ("labels", "probabilities"):
        (student,) = run_attack("extraction", Extraction(lr=3e-3, epochs=15, answers=answers),
                                AttackContext(owner, small, seed=1))
        agreement = float((student(images).argmax(1) == owner(images).argmax(1)).float().mean())
        assert agreement > 0.6, (answers, agreement)
    labels = owner_answers(owner, images[:8], "labels", "cpu")
    probabilities = owner_answers(owner, images[:8], "probabilities", "cpu")
    assert labels.dtype == torch.int64 and torch.allclose(probabilities.sum(1), torch.ones(8))
    assert torch.equal(probabilities.argmax(1), labels)


@pytest.mark.parametrize("settings", [Preprocess("noise", 0.05), Preprocess("quantize", 4), Preprocess("blur", 0.5),
                                      Preprocess("resize", 0.5)])
def test_preprocessing_keeps_pixels_in_the_box_and_mostly_the_labels(owner, small, settings):
    x = small.tensors[0][:64]
    y = transform(x, settings, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1 and not torch.equal(x, y)
    (suspect,) = run_attack("preprocess", settings, AttackContext(owner, small, seed=2))
    agreement = float((suspect(x).argmax(1) == owner(x).argmax(1)).float().mean())
    assert agreement > 0.7, (settings, agreement)


def test_quantized_input_takes_two_to_the_bits_levels():
    x = torch.linspace(0, 1, 1000).reshape(1, 1, 10, 100)
    assert len(torch.unique(transform(x, Preprocess("quantize", 4)))) == 16
    with pytest.raises(ValueError, match="^strength: "):
        Preprocess("quantize", 2.5)
    with pytest.raises(ValueError, match="^kind: "):
        Preprocess("jpeg", 1)


def test_a_noisy_suspects_draws_restart_at_a_stream_whatever_ran_before(owner, small):
    """torchrun ranks run parts of one job; each part restarts the noise at its number, so a
    part's draws are the same on any rank."""
    from ipguard_fast.attacks.preprocess import restart_noise

    (noisy,) = run_attack("preprocess", Preprocess("noise", 0.1), AttackContext(owner, small, seed=2))
    x = small.tensors[0][:16]
    restart_noise([noisy, owner], 3)
    first = noisy(x)
    noisy(x)                                         # what another part drew in between
    restart_noise([noisy], 3)
    assert torch.equal(noisy(x), first)
    restart_noise([noisy], 4)
    assert not torch.equal(noisy(x), first)

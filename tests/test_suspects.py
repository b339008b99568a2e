"""Tests for ipguard_fast.evaluation.suspects and .attacks: positive and negative suspects."""

import copy

import pytest
import torch
from torch import nn

from ipguard_fast.data import load_digits
from ipguard_fast.attacks import HalfPrecision, prune_model, quantize_int8, weight_sparsity
from ipguard_fast.evaluation.suspects import FAMILIES, Suspect, negative_suspects, positive_suspects
from ipguard_fast.models import DIGITS_ARCHITECTURES, DigitsCNN, DigitsMLP
from ipguard_fast.nn import seeded
from ipguard_fast.train import accuracy, predict, train_classifier


@pytest.fixture(scope="module")
def data():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def owner(data):
    # Width 16 rather than the default 32: same architecture, and measured to
    # slow down far less than width 32 when other processes compete for the
    # 2 CPU cores, which keeps this file fast on a busy machine.
    model = seeded(lambda: DigitsCNN(width=16), 0)
    return train_classifier(model, data[0], epochs=4, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def owner_state(owner):
    return {k: v.clone() for k, v in owner.state_dict().items()}


@pytest.fixture(scope="module")
def positives(owner, owner_state, data):
    # owner_state is requested first so it is a snapshot from before the attacks.
    return positive_suspects(owner, data[0], seed=0, quick=True, small_factory=lambda: DigitsMLP(hidden=64))


@pytest.fixture(scope="module")
def by_name(positives):
    return {s.name: s for s in positives}


def _family(positives, family):
    return [s for s in positives if s.family == family]


def test_owner_is_not_modified(owner, owner_state, positives):
    state = owner.state_dict()
    assert state.keys() == owner_state.keys()
    assert all(torch.equal(state[k], owner_state[k]) for k in owner_state)
    assert all(p.requires_grad for p in owner.parameters())
    assert all(s.model is not owner for s in positives)


def test_all_families_present_and_well_formed(positives):
    assert {s.family for s in positives} == set(FAMILIES)
    assert all(s.role == "positive" for s in positives)
    assert len({s.name for s in positives}) == len(positives)
    assert all(not s.model.training for s in positives)
    assert {s.name for s in _family(positives, "prune")} == {"prune-20", "prune-40", "prune-60", "prune-80"}


def test_positives_keep_high_accuracy_and_agree_with_owner(owner, positives, data):
    test = data[1]
    owner_acc = accuracy(owner, test)
    owner_labels = predict(owner, test.tensors[0])
    for s in positives:
        # The small MLP student is allowed to be weaker; the rest stay close to the owner.
        floor = 0.8 if s.family == "distill-small" else owner_acc - 0.06
        assert accuracy(s.model, test) >= floor, s.name
        agreement = float((predict(s.model, test.tensors[0]) == owner_labels).float().mean())
        assert agreement >= floor, s.name


def test_ftll_changes_only_the_last_layer(owner_state, positives):
    for s in _family(positives, "FTLL"):
        state = s.model.state_dict()
        for key, value in owner_state.items():
            same = torch.equal(state[key], value)
            assert same != key.startswith("fc."), (s.name, key)


def test_ftal_changes_inner_layers(owner_state, positives):
    for s in _family(positives, "FTAL"):
        assert not torch.equal(s.model.state_dict()["features.0.weight"], owner_state["features.0.weight"])


def test_retrained_last_layer_differs_from_owner(owner_state, positives):
    rtll = _family(positives, "RTLL")
    assert rtll
    for s in rtll + _family(positives, "RTAL"):
        new = s.model.fc.weight
        # Re-initialised, not fine-tuned: far from the owner's layer.
        assert (new - owner_state["fc.weight"]).norm() > 0.5 * owner_state["fc.weight"].norm(), s.name
    for s in rtll:
        state = s.model.state_dict()
        assert torch.equal(state["hidden.1.weight"], owner_state["hidden.1.weight"])


def test_pruning_reaches_requested_sparsity(by_name):
    for rate in (20, 40, 60, 80):
        model = by_name[f"prune-{rate}"].model
        assert weight_sparsity(model) == pytest.approx(rate / 100, abs=1e-3)
        # A plain module: no pruning masks or hooks left behind.
        names = [name for name, _ in model.named_parameters()] + [name for name, _ in model.named_buffers()]
        assert not any(name.endswith(("_mask", "_orig")) for name in names)


def test_prune_model_with_finetune_keeps_zeros(owner, data):
    model = prune_model(copy.deepcopy(owner), 0.5, finetune_set=data[0], finetune_epochs=1, lr=1e-3)
    assert weight_sparsity(model) == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="amount"):
        prune_model(copy.deepcopy(owner), 1.0)


def test_quantized_model_runs_with_int8_weight_levels(owner, by_name, data):
    model = by_name["quant-int8"].model
    x = data[1].tensors[0][:16]
    assert model(x).shape == (16, 10)
    for layer in (model.features[0], model.hidden[1], model.fc):
        w = layer.weight.detach().flatten(1)
        scale = w.abs().amax(1, keepdim=True) / 127
        levels = w / scale
        assert torch.allclose(levels, levels.round(), atol=1e-3)
    assert not torch.equal(model.fc.weight, owner.fc.weight)
    with pytest.raises(ValueError, match="layer_types"):
        quantize_int8(nn.Sequential(nn.ReLU()))


def test_fp16_wrapper_runs_in_half_and_returns_float(owner, by_name, data):
    model = by_name["fp16"].model
    assert isinstance(model, HalfPrecision)
    assert all(p.dtype == torch.float16 for p in model.parameters())
    assert owner.fc.weight.dtype == torch.float32
    out = model(data[1].tensors[0][:8])
    assert out.dtype == torch.float32
    assert torch.allclose(out, owner(data[1].tensors[0][:8]), atol=0.05)


def test_distill_students(by_name):
    assert type(by_name["distill"].model).__name__ == "DigitsCNN"
    assert isinstance(by_name["distill-small"].model, DigitsMLP)


def test_positive_suspects_is_reproducible_and_filterable(owner, data, by_name):
    again = positive_suspects(owner, data[0], seed=0, families=["RTLL"])
    assert [s.family for s in again] == ["RTLL"]
    original = by_name[again[0].name].model
    assert torch.equal(again[0].model.fc.weight, original.fc.weight)
    other_seed = positive_suspects(owner, data[0], seed=1, families=["RTLL"])
    assert not torch.equal(other_seed[0].model.fc.weight, original.fc.weight)


def test_distill_small_skipped_without_factory(owner, data):
    out = positive_suspects(owner, data[0], families=["distill-small", "fp16"])
    assert [s.family for s in out] == ["fp16"]


def test_positive_suspects_rejects_bad_arguments(owner, data):
    with pytest.raises(ValueError, match="families"):
        positive_suspects(owner, data[0], families=["FTXX"])
    with pytest.raises(ValueError, match="owner"):
        positive_suspects("model", data[0])


def test_negative_suspects_are_independent(owner, data):
    negatives = negative_suspects(data[0], DIGITS_ARCHITECTURES, seeds=(1, 2), epochs=2, lr=3e-3)
    assert [s.name for s in negatives] == [
        "independent-cnn-seed1",
        "independent-cnn-seed2",
        "independent-mlp-seed1",
        "independent-mlp-seed2",
    ]
    assert {s.family for s in negatives} == {"independent-cnn", "independent-mlp"}
    assert all(s.role == "negative" and not s.model.training for s in negatives)
    cnn1, cnn2 = negatives[0].model, negatives[1].model
    assert not torch.equal(cnn1.fc.weight, cnn2.fc.weight)
    assert not torch.equal(cnn1.fc.weight, owner.fc.weight)
    assert all(accuracy(s.model, data[1]) > 0.8 for s in negatives)


def test_negative_suspects_rejects_bad_arguments(data):
    with pytest.raises(ValueError, match="factories"):
        negative_suspects(data[0], {}, epochs=1)
    with pytest.raises(ValueError, match="seeds"):
        negative_suspects(data[0], DIGITS_ARCHITECTURES, seeds=(1, 1), epochs=1)
    with pytest.raises(ValueError, match="seeds"):
        negative_suspects(data[0], DIGITS_ARCHITECTURES, seeds=(), epochs=1)


def test_suspect_validates_role():
    with pytest.raises(ValueError, match="role"):
        Suspect("x", "FTLL", "maybe", nn.Linear(1, 1))


def test_independent_seeds_never_the_owners():
    from ipguard_fast.evaluation.suspects import EVALUATION_SEED_LIMIT, independent_seeds

    assert independent_seeds(0) == (1, 2, 3)   # the seed-0 bed is the one the README reports
    for owner_seed in (0, 1, 2, 7, EVALUATION_SEED_LIMIT - 1):
        seeds = independent_seeds(owner_seed)
        assert owner_seed not in seeds and len(set(seeds)) == 3
        assert all(0 <= s < EVALUATION_SEED_LIMIT for s in seeds)


def test_build_suspects_trains_independents_away_from_the_owners_seed(monkeypatch, owner, data):
    # With fixed seeds (1, 2, 3), `ipguard demo --seed 1` trained an "independent" CNN from
    # the owner's own initial weights, which matched it like a copy.
    from ipguard_fast.evaluation import suspects as pipeline

    seen = {}

    def fake_build(owner, train_set, variants, **kw):   # records the negatives' seeds, trains nothing
        if variants and variants[0].role == "negative":
            seen["seeds"] = tuple(dict.fromkeys(v.seed for v in variants))
        return []

    monkeypatch.setattr(pipeline, "build_variants", fake_build)
    pipeline.build_suspects(owner, data[0], negative_factories=DIGITS_ARCHITECTURES, negative_epochs=1, seed=1,
                            log=lambda message: None)
    assert seen["seeds"] == (2, 3, 4)
    pipeline.build_suspects(owner, data[0], negative_factories=DIGITS_ARCHITECTURES, negative_epochs=1, seed=1,
                            negative_seeds=(5, 6), log=lambda message: None)
    assert seen["seeds"] == (5, 6)


class _AttentionNet(nn.Module):
    """Rows of a 1x4x4 image as 4 tokens through nn.MultiheadAttention, which reads its
    out_proj's weight without calling out_proj (as every transformer, torchvision's ViT too)."""

    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 1, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        tokens = x.flatten(1, 2)
        return self.fc(self.attention(tokens, tokens, tokens)[0].mean(1))


def test_prune_model_with_finetune_on_an_attention_owner():
    # Pruning's forward pre-hook never ran for out_proj: its one pruned weight was
    # backpropagated through at every step, and the second step raised "Trying to backward
    # through the graph a second time" (protect's and evaluate's prune kinds, ViT owners).
    model = seeded(_AttentionNet, 0)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(130, 1, 4, 4, generator=generator),
                                          torch.randint(0, 3, (130,), generator=generator))
    pruned = prune_model(model, 0.5, finetune_set=data, finetune_epochs=2, lr=1e-2, batch_size=32)
    assert weight_sparsity(pruned) == pytest.approx(0.5, abs=0.05)
    names = [name for name, _ in pruned.named_parameters()] + [name for name, _ in pruned.named_buffers()]
    assert not any(name.endswith(("_mask", "_orig")) for name in names)
    assert pruned(data.tensors[0][:5]).shape == (5, 3)


def test_ranks_each_build_their_share_of_the_same_models(owner, data, by_name):
    # Under torchrun every rank used to train every suspect; now rank r trains the i-th with
    # i % world == r, each the very model one process builds (its seed comes from its name).
    from ipguard_fast.evaluation.suspects import _positive_variants, build_variants

    variants = _positive_variants(True, None, None, ["RTLL", "FTAL", "prune", "fp16"])
    whole = build_variants(owner, data[0], variants, seed=0)
    shares = [build_variants(owner, data[0], variants, seed=0, share=(r, 2)) for r in (0, 1)]
    for index, suspect in enumerate(whole):
        holder = index % 2
        for rank, share in enumerate(shares):
            mine = share[index]
            assert (mine.name, mine.family, mine.role, mine.rank) == (suspect.name, suspect.family, suspect.role,
                                                                      holder)
            assert (mine.model is not None) == (rank == holder)
        built = shares[holder][index].model
        for a, b in zip(built.state_dict().values(), suspect.model.state_dict().values()):
            assert torch.equal(a, b)
    for share in ((2, 2), (-1, 2), (0, 0), (0,), "01", (0.5, 2)):
        with pytest.raises(ValueError, match="^share: "):
            build_variants(owner, data[0], variants, share=share)


def test_a_suspect_without_a_model_is_another_ranks():
    Suspect("x", "FTLL", "positive", None, rank=1)
    with pytest.raises(ValueError, match="^model: "):
        Suspect("x", "FTLL", "positive", None)
    with pytest.raises(ValueError, match="^rank: "):
        Suspect("x", "FTLL", "positive", None, rank=-1)

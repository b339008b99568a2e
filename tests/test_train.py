"""Tests for ipguard_fast.train: the training loop, distillation and accuracy."""

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from ipguard_fast.models import train_digits_model
from ipguard_fast.train import accuracy, predict, train_classifier
from ipguard_fast.data import load_digits
from ipguard_fast.models import DigitsMLP
from ipguard_fast.nn import seeded


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def small_train(digits):
    x, y = digits[0].tensors
    return TensorDataset(x[:512], y[:512])


def _mlp(seed=0):
    return seeded(lambda: DigitsMLP(hidden=32), seed)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_digits_model_default_reaches_95_percent(digits):
    model = train_digits_model("cnn", seed=0)
    assert not model.training
    assert accuracy(model, digits[1]) >= 0.95


def test_training_improves_accuracy_and_returns_eval_mode(small_train, digits):
    model = _mlp()
    before = accuracy(model, digits[1])
    out = train_classifier(model, small_train, epochs=5, lr=1e-2)
    assert out is model and not model.training
    assert accuracy(model, digits[1]) > max(0.7, before + 0.3)


def test_training_is_deterministic_per_seed(small_train):
    a = train_classifier(_mlp(), small_train, epochs=2, seed=1)
    b = train_classifier(_mlp(), small_train, epochs=2, seed=1)
    c = train_classifier(_mlp(), small_train, epochs=2, seed=2)  # only the batch order differs
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_training_leaves_global_rng_alone(small_train):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    train_classifier(_mlp(), small_train, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def test_dropout_models_are_reproducible(small_train):
    def make():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))

    a = train_classifier(seeded(make, 0), small_train, epochs=1, seed=3)
    b = train_classifier(seeded(make, 0), small_train, epochs=1, seed=3)
    assert _same_weights(a, b)


def test_params_restricts_updates_and_restores_requires_grad(small_train):
    model = _mlp()
    model.body[1].weight.requires_grad_(False)  # a caller's own freeze must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_classifier(model, small_train, epochs=1, lr=1e-2, params=model.fc.parameters())
    after = model.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == key.startswith("fc."), key
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert flags.pop("body.1.weight") is False
    assert all(flags.values())


def test_frozen_batchnorm_keeps_running_statistics(small_train):
    def make():
        conv = [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()]
        return nn.Sequential(*conv, nn.Flatten(), nn.Linear(144, 10))

    model = seeded(make, 0)
    mean_before = model[1].running_mean.clone()
    train_classifier(model, small_train, epochs=1, params=model[4].parameters())
    assert torch.equal(model[1].running_mean, mean_before)
    # ...whereas full training does update them.
    train_classifier(model, small_train, epochs=1)
    assert not torch.equal(model[1].running_mean, mean_before)


class _ShiftedLabels(nn.Module):
    """Predicts (base prediction + 1) mod 10: a teacher that disagrees with the labels."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x).roll(1, dims=1)


def test_knowledge_distillation_follows_teacher_not_labels(small_train, digits):
    teacher = _ShiftedLabels(train_classifier(_mlp(0), small_train, epochs=5, lr=1e-2))
    teacher.train()  # its mode must be restored after distillation
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = train_classifier(_mlp(1), small_train, epochs=8, lr=1e-2, loss="kd", teacher=teacher)
    assert teacher.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_state.items())
    x = digits[1].tensors[0]
    agreement = float((predict(student, x) == predict(teacher, x)).float().mean())
    assert agreement > 0.8
    assert accuracy(student, digits[1]) < 0.2  # it learnt the shifted labels


def test_sgd_and_weight_decay_run(small_train):
    model = train_classifier(_mlp(), small_train, epochs=5, optimizer="sgd", lr=0.1, weight_decay=1e-4)
    assert accuracy(model, small_train) > 0.5


class _ListDataset(Dataset):
    """A non-TensorDataset, to exercise the DataLoader path."""

    def __init__(self, tensor_dataset):
        self.x, self.y = tensor_dataset.tensors

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_generic_dataset_matches_tensor_dataset_accuracy(small_train):
    model = train_classifier(_mlp(), _ListDataset(small_train), epochs=5, lr=1e-2)
    assert accuracy(model, _ListDataset(small_train)) == accuracy(model, small_train) > 0.5


def test_accuracy_of_constant_model_is_class_frequency(digits):
    class AlwaysThree(nn.Module):
        def forward(self, x):
            return nn.functional.one_hot(torch.full((len(x),), 3), 10).float()

    test = digits[1]
    expected = float((test.tensors[1] == 3).float().mean())
    assert accuracy(AlwaysThree(), test, batch_size=7) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(epochs=-1), "epochs"),
        (dict(epochs=1.5), "epochs"),
        (dict(epochs=1, lr=0), "lr"),
        (dict(epochs=1, batch_size=0), "batch_size"),
        (dict(epochs=1, optimizer="rmsprop"), "optimizer"),
        (dict(epochs=1, weight_decay=-1.0), "weight_decay"),
        (dict(epochs=1, loss="mse"), "loss"),
        (dict(epochs=1, loss="kd"), "teacher"),
        (dict(epochs=1, loss="kd", teacher=nn.Identity(), temperature=0), "temperature"),
        (dict(epochs=1, params=[]), "params"),
        (dict(epochs=1, params=[nn.Parameter(torch.zeros(1))]), "params"),
    ],
)
def test_train_classifier_rejects_bad_arguments(small_train, kwargs, word):
    with pytest.raises(ValueError, match=word):
        train_classifier(_mlp(), small_train, **kwargs)


def test_other_bad_arguments(small_train):
    with pytest.raises(ValueError, match="dataset"):
        empty = TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
        train_classifier(_mlp(), empty, epochs=1)
    with pytest.raises(ValueError, match="arch"):
        train_digits_model("resnet")
    with pytest.raises(ValueError, match="batch_size"):
        accuracy(_mlp(), small_train, batch_size=0)
